-- What unprivileged roles can learn from or do to others through
-- notifications, metrics and oversized payloads and results.
\i sql/include/helpers.psql
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'privacy%';

------------------------------------------------------------------------------
-- Channels: each role its own names, none guessable or askable for another
-- (test/t/029_notify_privacy.pl listens on them)
------------------------------------------------------------------------------
SET client_min_messages = warning;
DROP ROLE IF EXISTS taskq_regress_privacy_worker;
RESET client_min_messages;
CREATE ROLE taskq_regress_privacy_worker IN ROLE taskq_worker;
CREATE TEMP TABLE channels (who text, jobs text, work text);
GRANT ALL ON channels TO PUBLIC;
SET ROLE taskq_alice;
INSERT INTO channels SELECT 'alice', taskq.channel(), taskq.work_channel();
SELECT pg_temp.try($$SELECT taskq._channel('jobs', NULL)$$);
SELECT pg_temp.try($$SELECT taskq._channel('jobs', 'taskq_bob')$$);
SELECT pg_temp.try($$SELECT * FROM taskq.channel_secret$$);
SET ROLE taskq_bob;
INSERT INTO channels SELECT 'bob', taskq.channel(), taskq.work_channel();
SET ROLE taskq_boss;
INSERT INTO channels SELECT 'boss', taskq.channel(), taskq.work_channel();
SET ROLE taskq_regress_privacy_worker;
INSERT INTO channels SELECT 'worker', taskq.channel(), taskq.work_channel();
RESET ROLE;
INSERT INTO channels SELECT 'superuser', taskq.channel(), taskq.work_channel();
-- names by role: (a) admins' job channel, (w) workers' work channel
SELECT who, jobs ~ '^taskq_jobs_[0-9a-f]{32}$' AND work ~ '^taskq_work_[0-9a-f]{32}$' AS well_formed,
       CASE WHEN jobs = (SELECT jobs FROM channels WHERE who = 'boss') THEN 'admins'
            ELSE 'own' END AS job_channel,
       CASE WHEN work = (SELECT work FROM channels WHERE who = 'worker') THEN 'workers'
            ELSE 'own' END AS work_channel,
       (SELECT count(*) FROM channels o WHERE o.jobs = c.jobs) AS sharing_jobs,
       (SELECT count(*) FROM channels o WHERE o.work = c.work) AS sharing_work
  FROM channels c ORDER BY who;
SELECT taskq._channel('jobs', 'taskq_alice') = (SELECT jobs FROM channels WHERE who = 'alice') AS alice_jobs,
       taskq._channel('work', NULL) = (SELECT work FROM channels WHERE who = 'worker') AS workers_work;
SELECT pg_temp.try($$SELECT taskq._channel('other', NULL)$$);

------------------------------------------------------------------------------
-- Metrics: label values are escaped, a hostile queue or job type forges no line
------------------------------------------------------------------------------
SET ROLE taskq_alice;
SELECT pg_temp.j('forger', taskq.submit(E'privacy"}\ntaskq_workers{kind="exec\\utor"} 64\n#',
                 queue => E'regress_privacy"}\ntaskq_workers{kind="executor",state="idle"} 64\n#'));
RESET ROLE;
-- every line is a TYPE line or one sample of a known metric, and no sample
-- is a taskq_workers line with the forged value
SELECT count(*) AS bad_lines
  FROM regexp_split_to_table(rtrim(taskq.metrics_prometheus(), E'\n'), E'\n') AS line
 WHERE line !~ '^(# TYPE [a-z_]+ (gauge|counter|histogram)|[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? [-+0-9.e]+|[a-z_]+(\{.*\})? (NaN|Infinity))$'
    OR line ~ '^taskq_workers\{kind="executor",state="idle"\} 64$';
-- the hostile queue's sample, escaped
SELECT line FROM regexp_split_to_table(taskq.metrics_prometheus(), E'\n') AS line
 WHERE line LIKE 'taskq_queue_depth{%regress_privacy%';
SELECT pg_temp.cancel_all('regress_privacy%') AS cancelled;

------------------------------------------------------------------------------
-- Size limits: taskq.max_payload_size and taskq.max_result_size
------------------------------------------------------------------------------
SELECT current_setting('taskq.max_payload_size') AS max_payload_size,
       current_setting('taskq.max_result_size') AS max_result_size;
-- only a superuser sets them
SET ROLE taskq_alice;
SELECT pg_temp.try($$SET taskq.max_payload_size = '1GB'$$);
RESET ROLE;
SET taskq.max_payload_size = '1kB';
SET taskq.max_result_size = '1kB';
CREATE TEMP TABLE big AS
SELECT jsonb_build_object('x', repeat('x', 2000)) AS p, jsonb_build_object('x', repeat('x', 900)) AS ok;
GRANT SELECT ON big TO PUBLIC;
SET ROLE taskq_alice;
SELECT pg_temp.j('parent', taskq.submit('privacy', (SELECT ok FROM big), queue => 'regress_privacy_size'));
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.snap() AS before \gset
-- submit: its direct path, and its SQL paths (parents, idempotency key)
SELECT pg_temp.try($$SELECT taskq.submit('privacy', (SELECT p FROM big), queue => 'regress_privacy_size')$$);
SELECT pg_temp.try($$SELECT taskq.submit('privacy', (SELECT p FROM big), queue => 'regress_privacy_size',
                                         depends_on => ARRAY[pg_temp.id('parent')])$$);
SELECT pg_temp.try($$SELECT taskq.submit('privacy', (SELECT p FROM big), queue => 'regress_privacy_size',
                                         idempotency_key => 'big')$$);
-- submit_many: the C batch of plain jobs, the set-wise SQL path (a run_at),
-- the job by job path (parents); a big job anywhere in the batch
SELECT pg_temp.try($$SELECT taskq.submit_many(jsonb_build_array(
    jsonb_build_object('job_type', 'privacy', 'queue', 'regress_privacy_size'),
    jsonb_build_object('job_type', 'privacy', 'queue', 'regress_privacy_size', 'payload', (SELECT p FROM big))))$$);
SELECT pg_temp.try($$SELECT taskq.submit_many(jsonb_build_array(
    jsonb_build_object('job_type', 'privacy', 'queue', 'regress_privacy_size', 'run_at', now()),
    jsonb_build_object('job_type', 'privacy', 'queue', 'regress_privacy_size', 'payload', (SELECT p FROM big))))$$);
SELECT pg_temp.try($$SELECT taskq.submit_many(jsonb_build_array(
    jsonb_build_object('job_type', 'privacy', 'queue', 'regress_privacy_size',
                       'depends_on', jsonb_build_array(pg_temp.id('parent'))),
    jsonb_build_object('job_type', 'privacy', 'queue', 'regress_privacy_size', 'payload', (SELECT p FROM big))))$$);
SELECT pg_temp.snap() = :'before' AS nothing_written;
COMMIT;
SELECT count(*) AS jobs FROM taskq.jobs WHERE queue = 'regress_privacy_size';
-- payloads at the limit go in, on every path
SELECT count(*) AS submitted FROM (
    SELECT taskq.submit('privacy', (SELECT ok FROM big), queue => 'regress_privacy_size')
    UNION ALL
    SELECT taskq.submit('privacy', (SELECT ok FROM big), queue => 'regress_privacy_size', idempotency_key => 'ok')
    UNION ALL
    SELECT taskq.submit_many(jsonb_build_array(jsonb_build_object(
        'job_type', 'privacy', 'queue', 'regress_privacy_size', 'payload', (SELECT ok FROM big))))
    UNION ALL
    SELECT taskq.submit_many(jsonb_build_array(jsonb_build_object(
        'job_type', 'privacy', 'queue', 'regress_privacy_size', 'payload', (SELECT ok FROM big),
        'run_at', now())))) s;
RESET ROLE;

-- the direct path checked the payloads of its rows itself (its trigger is not called)
SET track_functions = 'all';
BEGIN;
SELECT pg_temp.try($$SELECT taskq.submit('privacy', (SELECT p FROM big), queue => 'regress_privacy_size')$$);
SELECT count(*) AS submitted FROM taskq.submit_many(jsonb_build_array(jsonb_build_object(
    'job_type', 'privacy', 'queue', 'regress_privacy_size', 'payload', (SELECT ok FROM big))));
SELECT coalesce(pg_stat_get_xact_function_calls('taskq._check_size'::regproc), 0) AS check_size_trigger_calls;
ROLLBACK;
RESET track_functions;

-- schedule: its payload, before pg_cron sees it
SET ROLE taskq_alice;
SELECT pg_temp.try($$SELECT taskq.schedule('privacy_big', '0 0 1 1 *', 'privacy', (SELECT p FROM big))$$);
RESET ROLE;
SELECT count(*) AS schedules FROM taskq.schedules WHERE name = 'privacy_big';
SELECT count(*) AS cron_jobs FROM cron.job WHERE jobname = 'taskq:privacy_big';

-- complete and complete_many, by the job's owner as its external worker
SET ROLE taskq_alice;
SELECT string_agg(pg_temp.j('claimed' || c.n, c.id), ', ' ORDER BY c.n) AS claimed
  FROM (SELECT id, row_number() OVER (ORDER BY id) AS n
          FROM taskq.claim(ARRAY['regress_privacy_size'], 'privacy worker', 3)) c;
SELECT pg_temp.try_ids(format($$SELECT taskq.complete(%s, (SELECT p FROM big))$$, pg_temp.id('parent')));
SELECT pg_temp.try_ids(format($$SELECT taskq.complete_many(ARRAY[%s], ARRAY[(SELECT ok FROM big), (SELECT p FROM big)])$$,
                              (SELECT string_agg(id::text, ',' ORDER BY id) FROM taskq.jobs
                                WHERE queue = 'regress_privacy_size' AND status = 'running'
                                  AND id <> pg_temp.id('parent'))));
SELECT status, count(*), count(result) AS results FROM taskq.jobs
 WHERE queue = 'regress_privacy_size' GROUP BY status ORDER BY status;
-- a result at the limit is stored
SELECT taskq.complete(pg_temp.id('parent'), (SELECT ok FROM big));
SELECT status, length(result->>'x') AS result_length FROM taskq.jobs WHERE id = pg_temp.id('parent');
RESET ROLE;
RESET taskq.max_payload_size;
RESET taskq.max_result_size;

-- a handler's result over the executors' limit (the default, 1MB) fails its
-- job, without a retry, and stores nothing
CREATE FUNCTION public.regress_privacy_big_result(payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('x', repeat('x', (payload->>'n')::integer)) $$;
GRANT EXECUTE ON FUNCTION public.regress_privacy_big_result(jsonb) TO PUBLIC;
SELECT taskq.register_handler('privacy_result', 'public.regress_privacy_big_result(jsonb)');
SET ROLE taskq_alice;
SELECT pg_temp.j('too_big', taskq.submit('privacy_result', '{"n": 1100000}', queue => 'regress_privacy_result'));
SELECT pg_temp.j('fits', taskq.submit('privacy_result', '{"n": 1000}', queue => 'regress_privacy_result'));
RESET ROLE;
SELECT pg_temp.wait_status(pg_temp.id('too_big'), 'failed') AS too_big_failed,
       pg_temp.wait_status(pg_temp.id('fits'), 'succeeded') AS fits_succeeded;
SELECT pg_temp.n(id) AS job, status, attempts, result IS NULL AS no_result, pg_temp.l(last_error) AS last_error
  FROM taskq.jobs WHERE queue = 'regress_privacy_result' ORDER BY id;
SELECT taskq.unregister_handler('privacy_result');
DROP FUNCTION public.regress_privacy_big_result(jsonb);
SELECT pg_temp.cancel_all('regress_privacy%') AS cancelled;
DROP ROLE taskq_regress_privacy_worker;
