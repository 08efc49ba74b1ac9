-- Recurring jobs on pg_cron: a schedule fires, submits a job as the role
-- that scheduled it, and the executors run it.  pg_cron 1.4 schedules by the
-- minute, so this test waits up to 150 s for the first firing.
CREATE TABLE cron_runs (job_id bigint PRIMARY KEY, who text, payload jsonb);
GRANT SELECT, INSERT ON cron_runs TO taskq_alice;
CREATE FUNCTION record_cron_run(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO public.cron_runs VALUES (taskq.current_job_id(), current_user, payload)
    RETURNING jsonb_build_object('recorded', job_id)
$$;
GRANT EXECUTE ON FUNCTION record_cron_run(jsonb) TO taskq_alice;
SELECT taskq.register_handler('cron_tick', 'record_cron_run(jsonb)');

-- bad schedules are refused before pg_cron sees them
SELECT taskq.schedule(NULL, '* * * * *', 'cron_tick');
SELECT taskq.schedule('tick', '', 'cron_tick');
SELECT taskq.schedule('tick', '* * * * *', 'cron_tick', '[1]');
-- (terse: newer pg_cron versions add a HINT to this error)
\set VERBOSITY terse
SELECT taskq.schedule('tick', 'every tuesday', 'cron_tick');
\set VERBOSITY default

SET ROLE taskq_alice;
SELECT taskq.schedule('alice_tick', '* * * * *', 'cron_tick', '{"from": "cron"}', 'high', 'cron_q') > 0 AS scheduled;
SELECT name, cron, job_type, payload, priority, queue, owner FROM taskq.schedules;
RESET ROLE;
-- the pg_cron job runs the submission as alice
SELECT jobname, schedule, username, command FROM cron.job WHERE jobname = 'taskq:alice_tick';
-- bob cannot see, replace or remove alice's schedule
SET ROLE taskq_bob;
SELECT count(*) FROM taskq.schedules;
SELECT taskq.schedule('alice_tick', '* * * * *', 'cron_tick');
SELECT taskq.unschedule('alice_tick');
RESET ROLE;

-- wait for the first firing and the job it submitted to finish
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '150 seconds';
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM taskq.jobs
                          WHERE job_type = 'cron_tick' AND status IN ('succeeded', 'failed'));
        PERFORM pg_sleep(0.2);
    END LOOP;
END
$$;
SELECT j.job_type, j.queue, j.priority, j.status, j.last_error, j.owner,
       j.result = jsonb_build_object('recorded', j.id) AS has_result, r.who, r.payload
FROM taskq.jobs j LEFT JOIN cron_runs r ON r.job_id = j.id
WHERE j.job_type = 'cron_tick'
ORDER BY j.id LIMIT 1;

SET ROLE taskq_alice;
SELECT taskq.unschedule('alice_tick');
SELECT count(*) FROM taskq.schedules;
SELECT taskq.unschedule('alice_tick');
RESET ROLE;
SELECT count(*) FROM cron.job WHERE jobname = 'taskq:alice_tick';

SELECT taskq.unregister_handler('cron_tick');
DROP TABLE cron_runs;
DROP FUNCTION record_cron_run(jsonb);
