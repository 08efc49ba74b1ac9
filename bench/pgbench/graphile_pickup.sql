SELECT graphile_worker.add_job('pickup', json_build_object('t', extract(epoch FROM now())));
