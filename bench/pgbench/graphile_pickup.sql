WITH mark AS (INSERT INTO pickup_marks DEFAULT VALUES RETURNING id)
SELECT graphile_worker.add_job('pickup', json_build_object('t', extract(epoch FROM now()), 'mark', (SELECT id FROM mark)));
