-- Security: each role sees and acts on its own jobs only, tables are written
-- only through the API, internal functions are not callable, owners are the
-- session's role, and taskq_admin members see everything.
\i sql/include/helpers.psql
-- Job types of this file have no handler; the superuser session plays the
-- external worker where one is needed.
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'security%';
SET client_min_messages = warning;
DROP ROLE IF EXISTS taskq_regress_worker;
RESET client_min_messages;
CREATE ROLE taskq_regress_worker IN ROLE taskq_worker;
-- a SECURITY DEFINER function of bob's that submits: the job is bob's, whose
-- rights the function runs with (current_user), whoever calls it
CREATE FUNCTION public.regress_sec_bob_submit() RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT taskq.submit('security', queue => 'regress_security_definer') $$;
ALTER FUNCTION public.regress_sec_bob_submit() OWNER TO taskq_bob;
GRANT EXECUTE ON FUNCTION public.regress_sec_bob_submit() TO taskq_alice;

-- Jobs of alice, bob and boss; the owner is the role of the session.
SET ROLE taskq_alice;
SELECT pg_temp.j('a1', taskq.submit('security', '{"secret": "alice"}', queue => 'regress_security',
                 idempotency_key => 'shared-key'));
SELECT pg_temp.j('a2', taskq.submit('security', queue => 'regress_security', depends_on => ARRAY[pg_temp.id('a1')]));
SELECT pg_temp.j('a_dead', taskq.submit('security', queue => 'regress_security_dead', max_attempts => 1));
SELECT pg_temp.j('a_definer', public.regress_sec_bob_submit());
SELECT taskq.submit('security', queue => 'regress_security', idempotency_key => 'shared-key')
       = pg_temp.id('a1') AS same_key_same_job;
SET ROLE taskq_bob;
SELECT pg_temp.j('b1', taskq.submit('security', '{"secret": "bob"}', queue => 'regress_security',
                 idempotency_key => 'shared-key'));
SELECT pg_temp.j('b2', taskq.submit('security', queue => 'regress_security', depends_on => ARRAY[pg_temp.id('b1')]));
SELECT pg_temp.j('b_dead', taskq.submit('security', queue => 'regress_security_dead', max_attempts => 1));
SELECT pg_temp.j('b_run', taskq.submit('security', queue => 'regress_security_run'));
SET ROLE taskq_boss;
SELECT pg_temp.j('boss1', taskq.submit('security', queue => 'regress_security_boss'));
RESET ROLE;
SELECT pg_temp.n(id) AS job, owner::text, idempotency_key FROM taskq.jobs
WHERE id IN (SELECT id FROM lbl) ORDER BY id;
-- dead-letter one job each, and have bob's b_run held by a worker
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_security_dead', 'regress_security_run'], 'wk', 10) ORDER BY id;
SELECT count(taskq.fail(id, 'broken', false)) AS failed FROM taskq.jobs
WHERE queue = 'regress_security_dead';

-- alice sees her own jobs only: jobs, logs, edges, dead letters, queue depth.
SET ROLE taskq_alice;
SELECT pg_temp.n(id) AS job, status, payload FROM taskq.jobs WHERE id IN (SELECT id FROM lbl) ORDER BY id;
SELECT count(*) AS others_jobs FROM taskq.jobs WHERE owner <> 'taskq_alice'::regrole;
SELECT pg_temp.n(job_id) AS job, count(*) > 0 AS logged FROM taskq.job_logs
WHERE job_id IN (SELECT id FROM lbl) GROUP BY job_id ORDER BY job_id;
SELECT count(*) AS others_logs FROM taskq.job_logs l
WHERE NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = l.job_id AND j.owner = 'taskq_alice'::regrole);
SELECT pg_temp.n(job_id) AS job, pg_temp.n(depends_on) AS depends_on FROM taskq.job_dependencies
WHERE job_id IN (SELECT id FROM lbl) OR depends_on IN (SELECT id FROM lbl);
SELECT count(*) AS others_edges FROM taskq.job_dependencies d
WHERE NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = d.job_id AND j.owner = 'taskq_alice'::regrole);
SELECT pg_temp.n(id) AS dead_letter, last_error FROM taskq.dead_letter_queue WHERE id IN (SELECT id FROM lbl);
SELECT count(*) AS others_dead_letters FROM taskq.dead_letter_queue WHERE owner <> 'taskq_alice'::regrole;
SELECT queue, status, jobs FROM taskq.queue_depth WHERE queue LIKE 'regress_security%' ORDER BY 1, 2;
RESET ROLE;

-- ... and cannot act on anyone else's: to her they do not exist.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.snap() AS before \gset
SET ROLE taskq_alice;
SELECT n, pg_temp.try_ids(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.cancel(pg_temp.id('b1'))$$),
 (2, $$SELECT taskq.retry(pg_temp.id('b_dead'))$$),
 (3, $$SELECT taskq.add_dependency(pg_temp.id('a2'), pg_temp.id('b1'))$$),
 (4, $$SELECT taskq.add_dependency(pg_temp.id('b2'), pg_temp.id('a1'))$$),
 (5, $$SELECT taskq.submit('security', queue => 'regress_security', depends_on => ARRAY[pg_temp.id('b1')])$$),
 (6, $$SELECT taskq.submit_many(format('[{"job_type": "security", "queue": "regress_security", "depends_on": [%s]}]', pg_temp.id('b1'))::jsonb)$$),
 (7, $$SELECT taskq.complete(pg_temp.id('b_run'), '{}')$$),
 (8, $$SELECT taskq.fail(pg_temp.id('b_run'), 'sabotage', false)$$),
 (9, $$SELECT taskq.heartbeat(pg_temp.id('b_run'))$$),
 (10, $$SELECT taskq.cancel(pg_temp.id('boss1'))$$),
 -- nor write taskq's tables directly, even her own rows
 (11, $$INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status, payload, max_attempts, backoff, cpu_units, memory_mb, run_at, owner) VALUES ('regress_security', 'security', 'normal', 'normal', 'pending', '{}', 1, '1s', 1, 0, now(), 'taskq_alice')$$),
 (12, $$UPDATE taskq.jobs SET priority = 'critical' WHERE id = pg_temp.id('a1')$$),
 (13, $$UPDATE taskq.jobs SET status = 'succeeded' WHERE id = pg_temp.id('a2')$$),
 (14, $$DELETE FROM taskq.jobs WHERE id = pg_temp.id('a1')$$),
 (15, $$TRUNCATE taskq.jobs CASCADE$$),
 (16, $$INSERT INTO taskq.job_logs (job_id, status, attempt, message) VALUES (pg_temp.id('a1'), 'succeeded', 1, 'forged')$$),
 (17, $$DELETE FROM taskq.job_logs$$),
 (18, $$DELETE FROM taskq.job_dependencies WHERE job_id = pg_temp.id('a2')$$),
 (19, $$INSERT INTO taskq.queues (name, paused) VALUES ('regress_security', true)$$),
 (20, $$UPDATE taskq.queues SET paused = false$$),
 (21, $$INSERT INTO taskq.handlers (job_type, handler, registered_by) VALUES ('security', 'pg_catalog.jsonb_pretty(jsonb)', 'taskq_alice')$$),
 (22, $$UPDATE taskq.handlers SET registered_by = 'taskq_alice'$$),
 (23, $$DELETE FROM taskq.schedules$$)
) AS t(n, stmt) ORDER BY n;
-- nor call taskq's internal functions
-- (arguments are (SELECT NULL::type), which the planner cannot fold away)
SELECT p.proname, pg_temp.try(format('SELECT taskq.%I(%s)', p.proname,
           (SELECT string_agg(format('(SELECT NULL::%s)', format_type(t, NULL)), ', ')
            FROM unnest(p.proargtypes) t))) AS error
FROM pg_proc p
WHERE p.pronamespace = 'taskq'::regnamespace AND p.prokind = 'f'
  AND p.proname IN ('_claim', '_insert_job', '_insert_plain_batch', '_record', '_succeeded', '_complete_batch', '_fail',
                    '_emit', '_cancel_job', '_release_dependents', '_lock_job', '_held_job',
                    '_recover', '_purge_finished', '_age_priorities', '_request_cancel',
                    '_wake_on_commit', '_require_admin', '_check_parents')
ORDER BY 1;
RESET ROLE;
SELECT pg_temp.snap() = :'before' AS nothing_written;
COMMIT;
SELECT pg_temp.n(id) AS job, status, priority FROM taskq.jobs WHERE queue = 'regress_security' ORDER BY id;

-- taskq._insert_job runs as its caller: EXECUTE on it alone writes nothing.
BEGIN;
GRANT EXECUTE ON FUNCTION taskq._insert_job(text, jsonb, taskq.priority, text, bigint[],
    timestamptz, integer, interval, integer, integer, text, interval, text, text, regrole) TO taskq_alice;
SET ROLE taskq_alice;
SELECT pg_temp.try($$SELECT taskq._insert_job('security', '{}', 'normal', 'regress_security',
    '{}', now(), NULL, NULL, 1, 0, NULL, NULL, NULL, NULL, 'taskq_boss')$$) AS as_boss;
RESET ROLE;
ROLLBACK;

-- taskq._insert_plain_batch writes only as the tables' owner: EXECUTE on it
-- alone writes nothing (NULL: submit_many would take the SQL path).
BEGIN;
GRANT EXECUTE ON FUNCTION taskq._insert_plain_batch(jsonb, regrole) TO taskq_alice;
SET ROLE taskq_alice;
SELECT taskq._insert_plain_batch('[{"job_type": "security", "queue": "regress_security"}]',
                                 'taskq_boss') AS as_boss;
RESET ROLE;
ROLLBACK;

-- Every SECURITY DEFINER function of taskq pins search_path.
SELECT p.oid::regprocedure AS unpinned FROM pg_proc p
WHERE p.pronamespace = 'taskq'::regnamespace AND p.prosecdef
  AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%');

-- alice's claim gets only her jobs; a taskq_worker member's claim gets anyone's,
-- though it may not read taskq.jobs nor cancel (it is not a taskq_user).
SET ROLE taskq_alice;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_security'], 'alice worker', 10);
SELECT taskq.complete(pg_temp.id('a1'), '{"by": "alice"}');
SET ROLE taskq_regress_worker;
SELECT count(*) AS visible_jobs FROM taskq.jobs WHERE queue LIKE 'regress_security%';
SELECT pg_temp.n(id) AS claimed, owner::text FROM taskq.claim(ARRAY['regress_security'], 'regress worker', 10) ORDER BY id;
SELECT taskq.complete(pg_temp.id('b1'), '{"by": "worker"}', 'regress worker');
SELECT taskq.fail(pg_temp.id('a2'), 'worker failed it', false, 'regress worker');
SELECT pg_temp.try_ids($$SELECT taskq.cancel(pg_temp.id('b2'))$$);
RESET ROLE;
SELECT pg_temp.n(id) AS job, status, result, last_error FROM taskq.jobs
WHERE queue = 'regress_security' ORDER BY id;

-- taskq_boss (taskq_admin) sees and acts on everyone's jobs.
SET ROLE taskq_boss;
SELECT pg_temp.n(id) AS job, owner::text, status FROM taskq.jobs WHERE id IN (SELECT id FROM lbl) ORDER BY id;
SELECT count(*) AS dead_letters FROM taskq.dead_letter_queue WHERE id IN (SELECT id FROM lbl);
SELECT count(DISTINCT job_id) AS logged_jobs FROM taskq.job_logs WHERE job_id IN (SELECT id FROM lbl);
SELECT taskq.retry(pg_temp.id('a_dead'));
SELECT taskq.cancel(pg_temp.id('b2'));
SELECT taskq.cancel(pg_temp.id('a_dead'));
RESET ROLE;
SELECT pg_temp.n(id) AS job, status FROM taskq.jobs WHERE id IN (SELECT id FROM lbl) ORDER BY id;

-- Leave no live jobs or objects behind.
SELECT pg_temp.cancel_all('regress_security%');
SELECT status, count(*) FROM taskq.jobs WHERE queue LIKE 'regress_security%' GROUP BY 1 ORDER BY 1;
DROP FUNCTION public.regress_sec_bob_submit();
DROP ROLE taskq_regress_worker;
