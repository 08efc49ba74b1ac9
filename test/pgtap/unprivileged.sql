-- pgTAP: hostile input and privilege, as unprivileged roles.  api.sql calls
-- every public function badly as a superuser; here the same functions are
-- called by taskq_tap_mallory (a plain taskq_user member) and taskq_tap_wrk (a taskq_worker member), with bad values, huge
-- payloads and graphs, odd names and extreme times and intervals, and against
-- the jobs of another plain role, taskq_tap_victim.  Every rejected call is
-- checked twice: its exact SQLSTATE, and that nothing it could have written
-- (the jobs, edges and logs of this transaction, queues, handlers, schedules,
-- pg_cron jobs) changed.  One transaction, rolled back: no executor ever sees
-- these jobs and nothing is left behind.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(419);

------------------------------------------------------------------------------
-- Fixtures (as the superuser running the file)
------------------------------------------------------------------------------
CREATE ROLE taskq_tap_mallory LOGIN IN ROLE taskq_user;   -- (pg_cron runs jobs only for LOGIN roles)
CREATE ROLE taskq_tap_victim LOGIN IN ROLE taskq_user;
CREATE ROLE taskq_tap_wrk IN ROLE taskq_worker, taskq_user;
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS has_cron \gset

-- Everything a call could write, seen by the superuser (no row-level
-- security): the jobs created in this transaction (created_at = now()) or
-- owned by the roles above, their edges and logs, queues, handlers,
-- schedules and pg_cron's jobs.  Jobs of earlier suites are left out: the
-- executors may still be working on them.
CREATE FUNCTION pg_temp.snap() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mine bigint[];
    s text;
    cron text := '';
BEGIN
    SELECT coalesce(array_agg(j.id ORDER BY j.id), '{}') INTO mine FROM taskq.jobs j
    WHERE j.created_at = now()
       OR j.owner::oid IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'taskq\_tap\_%');
    SELECT concat_ws(' | ',
        cardinality(mine),
        -- (payload and result by size: hashing 10 MB payloads on every call is slow)
        (SELECT md5(coalesce(string_agg((to_jsonb(j) - 'payload' - 'result')::text || pg_column_size(j.payload)
                                        || ' ' || coalesce(pg_column_size(j.result), -1), E'\n' ORDER BY j.id), ''))
           FROM taskq.jobs j WHERE j.id = ANY (mine)),
        (SELECT count(*) || ' ' || md5(coalesce(string_agg(d::text, E'\n' ORDER BY d.job_id, d.depends_on), ''))
           FROM taskq.job_dependencies d WHERE d.job_id = ANY (mine) OR d.depends_on = ANY (mine)),
        (SELECT count(*) || ' ' || md5(coalesce(string_agg(l::text, E'\n' ORDER BY l.id), ''))
           FROM taskq.job_logs l WHERE l.job_id = ANY (mine)),
        (SELECT md5(coalesce(string_agg(q::text, E'\n' ORDER BY q.name), '')) FROM taskq.queues q),
        (SELECT md5(coalesce(string_agg(h::text, E'\n' ORDER BY h.job_type), '')) FROM taskq.handlers h),
        (SELECT md5(coalesce(string_agg(sc::text, E'\n' ORDER BY sc.name), '')) FROM taskq.schedules sc))
    INTO s;
    IF to_regclass('cron.job') IS NOT NULL THEN
        EXECUTE 'SELECT md5(coalesce(string_agg(c::text, E''\n'' ORDER BY c.jobid), '''')) FROM cron.job c'
           INTO cron;
    END IF;
    RETURN s || ' | ' || cron;
END
$$;

-- A rejected call: its exact SQLSTATE, and no write left behind.
CREATE FUNCTION pg_temp.rejects(call text, errcode text, description text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    before text := pg_temp.snap();
BEGIN
    RETURN NEXT throws_ok(call, errcode, NULL, description);
    RETURN NEXT is(pg_temp.snap(), before, description || ': nothing written');
END
$$;

CREATE FUNCTION pg_temp.tap_handler(payload jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT payload';
-- a SECURITY DEFINER function owned by the victim that submits a job
CREATE FUNCTION pg_temp.victim_submit() RETURNS bigint LANGUAGE sql SECURITY DEFINER
    AS $$SELECT taskq.submit('tap_definer', queue => 'tap_m')$$;
ALTER FUNCTION pg_temp.victim_submit() OWNER TO taskq_tap_victim;

CREATE TEMP TABLE tap_ids (name text PRIMARY KEY, id bigint NOT NULL);
GRANT SELECT, INSERT ON tap_ids TO PUBLIC;
CREATE FUNCTION pg_temp.job(name text) RETURNS bigint LANGUAGE sql STABLE
    AS 'SELECT id FROM tap_ids WHERE tap_ids.name = $1';

-- The victim's jobs: pending, blocked, running (held by a worker), failed, succeeded.
SET ROLE taskq_tap_victim;
INSERT INTO tap_ids VALUES
    ('v_pending', taskq.submit('tap_v', '{"secret": "victim"}', queue => 'tap_victim')),
    ('v_run', taskq.submit('tap_v', queue => 'tap_victim_run')),
    ('v_fail', taskq.submit('tap_v', queue => 'tap_victim_fail', max_attempts => 1)),
    ('v_done', taskq.submit('tap_v', queue => 'tap_victim_done'));
INSERT INTO tap_ids SELECT 'v_blocked', taskq.submit('tap_v', queue => 'tap_victim', depends_on => ARRAY[pg_temp.job('v_pending')]);
RESET ROLE;
SELECT is(count(*), 3::bigint, 'fixtures: the victim''s jobs to run, fail and finish are claimed')
FROM taskq.claim(ARRAY['tap_victim_run', 'tap_victim_fail', 'tap_victim_done'], 'victim worker', 10);
\o /dev/null
SELECT taskq.fail(pg_temp.job('v_fail'), 'boom', false);
SELECT taskq.complete(pg_temp.job('v_done'));
\if :has_cron
SET ROLE taskq_tap_victim;
SELECT taskq.schedule('tap_v_sched', '0 3 * * *', 'tap_v', queue => 'tap_victim');
RESET ROLE;
\endif
\o

-- Mallory's own jobs: pending, running (claimed by herself), succeeded,
-- and one a worker member holds.
SET ROLE taskq_tap_mallory;
INSERT INTO tap_ids VALUES
    ('m_pending', taskq.submit('tap_m', queue => 'tap_m')),
    ('m_run', taskq.submit('tap_m', queue => 'tap_m_run')),
    ('m_done', taskq.submit('tap_m', queue => 'tap_m_done')),
    ('m_wrk', taskq.submit('tap_m', queue => 'tap_m_wrk'));
SELECT is(count(*), 2::bigint, 'fixtures: mallory claims her own jobs')
FROM taskq.claim(ARRAY['tap_m_run', 'tap_m_done'], 'mallory', 10);
SELECT taskq.complete(pg_temp.job('m_done')) \g /dev/null
RESET ROLE;
SET ROLE taskq_tap_wrk;
SELECT is((SELECT array_agg(id) FROM taskq.claim(ARRAY['tap_m_wrk'], 'wrk', 10)), ARRAY[pg_temp.job('m_wrk')],
          'fixtures: a worker member claims mallory''s job');
RESET ROLE;
-- a job of mallory's with a handler, held by an in-database executor
SELECT taskq.register_handler('tap_inside', 'pg_temp.tap_handler(jsonb)') \g /dev/null
SET ROLE taskq_tap_mallory;
INSERT INTO tap_ids VALUES ('m_exec', taskq.submit('tap_inside', queue => 'tap_m_exec'));
RESET ROLE;
UPDATE taskq.jobs SET status = 'running', attempts = 1, worker = 'executor/0', started_at = now(),
                      lease_expires_at = now() + interval '1 hour'
WHERE id = pg_temp.job('m_exec');

------------------------------------------------------------------------------
-- Bad input, as a plain role
------------------------------------------------------------------------------
SET ROLE taskq_tap_mallory;
SELECT is(current_user::text, 'taskq_tap_mallory', 'the bad input comes from a plain role');
SELECT ok(NOT pg_has_role('taskq_worker', 'MEMBER') AND NOT pg_has_role('taskq_admin', 'MEMBER'),
          'mallory is neither a worker nor an admin');

-- submit: NULL in each argument that must not be NULL
SELECT pg_temp.rejects($$SELECT taskq.submit(NULL)$$, '22004', 'submit: NULL job_type');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', NULL)$$, '22004', 'submit: NULL payload');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', '{}', NULL)$$, '22004', 'submit: NULL priority');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', '{}', 'normal', NULL)$$, '22004', 'submit: NULL queue');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', cpu_units => NULL)$$, '22023', 'submit: NULL cpu_units');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', memory_mb => NULL)$$, '22023', 'submit: NULL memory_mb');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', depends_on => ARRAY[NULL]::bigint[])$$, '22004', 'submit: NULL in depends_on');
-- wrong values
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', priority => 'urgent')$$, '22P02', 'submit: priority ''urgent''');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', priority => 'CRITICAL')$$, '22P02', 'submit: priority in upper case');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', priority => '')$$, '22P02', 'submit: empty priority');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', priority => 'normal; DROP TABLE taskq.jobs')$$, '22P02', 'submit: priority with SQL in it');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', max_attempts => 0)$$, '22023', 'submit: zero max_attempts');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', max_attempts => -1)$$, '22023', 'submit: negative max_attempts');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', max_attempts => -2147483648)$$, '22023', 'submit: max_attempts INT_MIN');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', max_attempts => '2147483648')$$, '22003', 'submit: max_attempts beyond integer');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', cpu_units => 0)$$, '22023', 'submit: zero cpu_units');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', cpu_units => -2147483648)$$, '22023', 'submit: cpu_units INT_MIN');
SELECT pg_temp.rejects(format('SELECT taskq.submit(%L, queue => %L, cpu_units => %s)', 'tap_m', 'tap_m',
                              current_setting('taskq.max_cpu_units')::integer + 1),
                       '22023', 'submit: cpu_units one above taskq.max_cpu_units');
SELECT pg_temp.rejects(format('SELECT taskq.submit(%L, queue => %L, memory_mb => %s)', 'tap_m', 'tap_m',
                              current_setting('taskq.max_memory_mb')::integer + 1),
                       '22023', 'submit: memory_mb one above taskq.max_memory_mb');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', memory_mb => 2147483647)$$, '22023', 'submit: memory_mb INT_MAX');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', memory_mb => -1)$$, '22023', 'submit: negative memory_mb');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', 'null', queue => 'tap_m')$$, '22023', 'submit: payload JSON null');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', '[{}]', queue => 'tap_m')$$, '22023', 'submit: payload an array');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', '42', queue => 'tap_m')$$, '22023', 'submit: payload a number');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', '{"a": ', queue => 'tap_m')$$, '22P02', 'submit: payload not JSON');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', idempotency_key => '')$$, '22023', 'submit: empty idempotency_key');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', depends_on => '{-1}')$$, '23503', 'submit: depends_on a missing job');
-- names: empty, blank, too long (in characters, not bytes)
SELECT pg_temp.rejects($$SELECT taskq.submit('', queue => 'tap_m')$$, '22023', 'submit: empty job_type');
SELECT pg_temp.rejects($$SELECT taskq.submit(E' \t\r\n', queue => 'tap_m')$$, '22023', 'submit: whitespace job_type');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => '')$$, '22023', 'submit: empty queue');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => E'\n')$$, '22023', 'submit: newline queue');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => repeat('🚀', 201))$$, '22023', 'submit: queue of 201 emoji');
SELECT pg_temp.rejects($$SELECT taskq.submit(repeat('й', 201), queue => 'tap_m')$$, '22023', 'submit: job_type of 201 Cyrillic letters');
-- run_at: infinite, out of range
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', run_at => 'infinity')$$, '22023', 'submit: run_at infinity');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', run_at => '-infinity')$$, '22023', 'submit: run_at -infinity');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', run_at => '294277-01-01 00:00:00+00')$$, '22008', 'submit: run_at past the last timestamp');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', run_at => '4714-11-23 00:00:00+00 BC')$$, '22008', 'submit: run_at before the first timestamp');
-- intervals: zero, negative, out of range
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', timeout => '0')$$, '22023', 'submit: zero timeout');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', timeout => '-1 microsecond')$$, '22023', 'submit: negative timeout');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', timeout => '-10 centuries')$$, '22023', 'submit: timeout of minus ten centuries');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', timeout => interval '1 day' - interval '2 days')$$, '22023', 'submit: timeout of mixed sign adding up negative');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', backoff => '-1 century')$$, '22023', 'submit: negative backoff');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', backoff => '200000000 years')$$, '22008', 'submit: backoff past the interval range');

-- submit_many
SELECT pg_temp.rejects($$SELECT taskq.submit_many(NULL)$$, '22004', 'submit_many: NULL');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('null')$$, '22023', 'submit_many: JSON null');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('"[]"')$$, '22023', 'submit_many: a JSON string');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[1]')$$, '22023', 'submit_many: a number in the batch');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "queue": "tap_m", "owner": "taskq_tap_victim"}]')$$,
                       '22023', 'submit_many: an "owner" key cannot choose the owner');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": null}]')$$, '22004', 'submit_many: JSON null job_type');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "payload": null}]')$$, '22023', 'submit_many: JSON null payload');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "priority": "urgent"}]')$$, '22P02', 'submit_many: unknown priority');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "max_attempts": 0}]')$$, '22023', 'submit_many: zero max_attempts');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "max_attempts": 1e10}]')$$, '22003', 'submit_many: max_attempts beyond integer');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "cpu_units": "lots"}]')$$, '22P02', 'submit_many: cpu_units a string');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "cpu_units": 1.5}]')$$, '22P02', 'submit_many: fractional cpu_units');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "memory_mb": 1e9}]')$$, '22023', 'submit_many: memory_mb over the limit');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "run_at": "infinity"}]')$$, '22023', 'submit_many: run_at infinity');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "timeout": "forever"}]')$$, '22007', 'submit_many: timeout not an interval');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m", "backoff": "-1 second"}]')$$, '22023', 'submit_many: negative backoff');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m"}, {"job_type": "tap_m", "after": [-1]}]')$$, '22023', 'submit_many: "after" a negative index');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m"}, {"job_type": "tap_m", "after": ["0; DROP TABLE taskq.jobs"]}]')$$, '22P02', 'submit_many: "after" a string');
SELECT pg_temp.rejects(format('SELECT taskq.submit_many(%L)', jsonb_build_array(
                           jsonb_build_object('job_type', 'tap_m'),
                           jsonb_build_object('job_type', 'tap_m', 'depends_on', jsonb_build_array(pg_temp.job('v_pending'))))),
                       '23503', 'submit_many: depends_on the victim''s job');
-- the first jobs of a batch are valid: a later bad one must undo them, on both paths
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m"}, {"job_type": "tap_m"}, {"job_type": ""}]')$$,
                       '22023', 'submit_many: third job invalid (independent batch)');
SELECT pg_temp.rejects($$SELECT taskq.submit_many('[{"job_type": "tap_m"}, {"job_type": "tap_m", "after": [0]}, {"job_type": "tap_m", "after": [5]}]')$$,
                       '22023', 'submit_many: third job invalid (batch with dependencies)');

-- add_dependency
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(NULL, NULL)$$, '22004', 'add_dependency: NULL, NULL');
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(pg_temp.job('m_pending'), NULL)$$, '22004', 'add_dependency: NULL parent');
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(pg_temp.job('m_pending'), pg_temp.job('m_pending'))$$, '22023', 'add_dependency: on itself');
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(pg_temp.job('m_run'), pg_temp.job('m_pending'))$$, '55000', 'add_dependency: to a running job');
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(-9223372036854775808, pg_temp.job('m_pending'))$$, 'P0002', 'add_dependency: child id INT64_MIN');

-- cancel, retry
SELECT pg_temp.rejects($$SELECT taskq.cancel(NULL)$$, '22004', 'cancel: NULL');
SELECT pg_temp.rejects($$SELECT taskq.cancel(9223372036854775807)$$, 'P0002', 'cancel: id INT64_MAX');
SELECT pg_temp.rejects($$SELECT taskq.cancel(pg_temp.job('m_done'))$$, '55000', 'cancel: her succeeded job');
SELECT pg_temp.rejects($$SELECT taskq.retry(NULL)$$, '22004', 'retry: NULL');
SELECT pg_temp.rejects($$SELECT taskq.retry(pg_temp.job('m_pending'))$$, '55000', 'retry: her pending job');

-- admin functions: refused before any argument is looked at
SELECT pg_temp.rejects($$SELECT taskq.pause(NULL)$$, '42501', 'pause: NULL, by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.pause('tap_victim')$$, '42501', 'pause: by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.resume('tap_victim')$$, '42501', 'resume: by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.configure_queue('tap_victim', -1, '-1 century', 0)$$, '42501', 'configure_queue: bad values, by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.configure_queue(NULL)$$, '42501', 'configure_queue: NULL, by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.register_handler('tap_v', 'pg_temp.tap_handler(jsonb)')$$, '42501', 'register_handler: by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.register_handler(NULL, NULL)$$, '42501', 'register_handler: NULLs, by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.unregister_handler('tap_inside')$$, '42501', 'unregister_handler: by a plain role');
SELECT pg_temp.rejects($$SELECT taskq.unregister_handler(NULL)$$, '42501', 'unregister_handler: NULL, by a plain role');

-- claim
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, NULL)$$, '22004', 'claim: NULL worker');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, ' ')$$, '22023', 'claim: blank worker');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'executor/0')$$, '22023', 'claim: posing as an executor');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'm', NULL)$$, '22023', 'claim: NULL max_jobs');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'm', -2147483648)$$, '22023', 'claim: max_jobs INT_MIN');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'm', 1, NULL)$$, '22023', 'claim: NULL lease');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'm', 1, '0')$$, '22023', 'claim: zero lease');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'm', 1, '-10 centuries')$$, '22023', 'claim: negative lease');
SELECT pg_temp.rejects($$SELECT taskq.claim(ARRAY['tap_m'], 'm', 1, '178000000 years')$$, '22008', 'claim: a lease past the last timestamp');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'm', 1, '1 minute', 0)$$, '22023', 'claim: zero cpu_units');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'm', 1, '1 minute', 1, -1)$$, '22023', 'claim: negative memory_mb');

-- complete, fail, heartbeat
SELECT pg_temp.rejects($$SELECT taskq.complete(NULL)$$, '22004', 'complete: NULL');
SELECT pg_temp.rejects($$SELECT taskq.complete(pg_temp.job('m_pending'))$$, '55000', 'complete: her pending job');
SELECT pg_temp.rejects($$SELECT taskq.complete(pg_temp.job('m_run'), '{}', 'not mallory')$$, '55000', 'complete: her job under another worker name');
SELECT pg_temp.rejects($$SELECT taskq.complete(pg_temp.job('m_exec'))$$, '55000', 'complete: her job an executor runs');
SELECT pg_temp.rejects($$SELECT taskq.fail(NULL, NULL, NULL, NULL)$$, '22004', 'fail: all NULL');
SELECT pg_temp.rejects($$SELECT taskq.fail(pg_temp.job('m_done'), 'e')$$, '55000', 'fail: her succeeded job');
SELECT pg_temp.rejects($$SELECT taskq.fail(pg_temp.job('m_exec'), 'e', false)$$, '55000', 'fail: her job an executor runs');
SELECT pg_temp.rejects($$SELECT taskq.heartbeat(NULL, NULL, NULL)$$, '22004', 'heartbeat: all NULL');
SELECT pg_temp.rejects($$SELECT taskq.heartbeat(pg_temp.job('m_run'), 'mallory', '0')$$, '22023', 'heartbeat: zero extension');
SELECT pg_temp.rejects($$SELECT taskq.heartbeat(pg_temp.job('m_run'), 'mallory', '-10 centuries')$$, '22023', 'heartbeat: negative extension');
SELECT pg_temp.rejects($$SELECT taskq.heartbeat(pg_temp.job('m_run'), 'mallory', '178000000 years')$$, '22008', 'heartbeat: extension past the last timestamp');
SELECT pg_temp.rejects($$SELECT taskq.heartbeat(pg_temp.job('m_exec'))$$, '55000', 'heartbeat: her job an executor runs');

-- wait, dag, retry_failed, purge_failed
SELECT pg_temp.rejects($$SELECT taskq.wait(NULL, '0')$$, '22004', 'wait: NULL ids');
SELECT pg_temp.rejects($$SELECT taskq.dag(NULL)$$, '22004', 'dag: NULL job');
SELECT pg_temp.rejects($$SELECT taskq.dag(pg_temp.job('m_pending'), 'svg')$$, '22023', 'dag: unknown format');
SELECT pg_temp.rejects($$SELECT taskq.dag(pg_temp.job('m_pending'), NULL)$$, '22023', 'dag: NULL format');
SELECT pg_temp.rejects($$SELECT taskq.dag(pg_temp.job('m_pending'), 'mermaid''); DROP TABLE taskq.jobs; --')$$, '22023', 'dag: SQL as the format');
SELECT is(taskq.retry_failed(NULL, NULL, NULL), 0, 'retry_failed: all NULL retries none of another role''s failed jobs');
SELECT is(taskq.retry_failed('tap_victim_fail', 'tap_v', '%'), 0, 'retry_failed: aimed at the victim''s failed job, retries nothing');
SELECT is(taskq.purge_failed(NULL, NULL, NULL), 0, 'purge_failed: all NULL purges none of another role''s jobs');
SELECT is(taskq.purge_failed('-10 centuries', 'tap_victim_fail'), 0, 'purge_failed: negative age, aimed at the victim, purges nothing');

-- schedule, unschedule (pg_cron)
\if :has_cron
SELECT pg_temp.rejects($$SELECT taskq.schedule(NULL, '* * * * *', 'tap_m')$$, '22004', 'schedule: NULL name');
SELECT pg_temp.rejects($$SELECT taskq.schedule('', '* * * * *', 'tap_m')$$, '22023', 'schedule: empty name');
SELECT pg_temp.rejects($$SELECT taskq.schedule('tap_m_s', NULL, 'tap_m')$$, '22023', 'schedule: NULL cron');
SELECT pg_temp.rejects($$SELECT taskq.schedule('tap_m_s', '* * * * *', NULL)$$, '22004', 'schedule: NULL job_type');
SELECT pg_temp.rejects($$SELECT taskq.schedule('tap_m_s', '* * * * *', 'tap_m', NULL)$$, '22023', 'schedule: NULL payload');
SELECT pg_temp.rejects($$SELECT taskq.schedule('tap_m_s', '* * * * *', 'tap_m', '[]')$$, '22023', 'schedule: payload an array');
SELECT pg_temp.rejects($$SELECT taskq.schedule('tap_m_s', '* * * * *', 'tap_m', '{}', 'normal', '')$$, '22023', 'schedule: empty queue');
SELECT pg_temp.rejects($$SELECT taskq.schedule('tap_m_s', '61 25 * * *', 'tap_m')$$, '22023', 'schedule: a cron expression out of range');
SELECT pg_temp.rejects($$SELECT taskq.schedule('tap_v_sched', '* * * * *', 'tap_m')$$, '42501', 'schedule: taking over the victim''s schedule');
SELECT pg_temp.rejects($$SELECT taskq.unschedule('tap_v_sched')$$, '42704', 'unschedule: the victim''s schedule');
SELECT pg_temp.rejects($$SELECT taskq.unschedule(NULL)$$, '42704', 'unschedule: NULL');
\else
SELECT skip('pg_cron is not installed', 22);
\endif
RESET ROLE;

------------------------------------------------------------------------------
-- Accepted extremes, as a plain role: the right result
------------------------------------------------------------------------------
SET ROLE taskq_tap_mallory;
SELECT throws_ok($$SELECT taskq.submit('tap_m', jsonb_build_object('blob', repeat('x', 10 * 1024 * 1024)), queue => 'tap_m_huge')$$,
                 '54000', NULL, 'submit: a 10 MB payload is over the default taskq.max_payload_size');
-- with the limits off (a superuser's choice), 10 MB go through whole
RESET ROLE;
SET taskq.max_payload_size = -1;
SET taskq.max_result_size = -1;
SET ROLE taskq_tap_mallory;
SELECT lives_ok($$INSERT INTO tap_ids SELECT 'm_huge', taskq.submit('tap_m', jsonb_build_object('blob', repeat('x', 10 * 1024 * 1024)), queue => 'tap_m_huge')$$,
                'submit: a 10 MB payload');
SELECT is((SELECT octet_length(payload->>'blob') FROM taskq.jobs WHERE id = pg_temp.job('m_huge')), 10 * 1024 * 1024,
          'the 10 MB payload is stored whole');
SELECT is((SELECT count(*) FROM taskq.submit_many(jsonb_build_array(
               jsonb_build_object('job_type', 'tap_m', 'queue', 'tap_m_huge', 'payload', jsonb_build_object('blob', repeat('y', 10 * 1024 * 1024))),
               jsonb_build_object('job_type', 'tap_m', 'queue', 'tap_m_huge', 'payload', jsonb_build_object('blob', repeat('z', 10 * 1024 * 1024)))))),
          2::bigint, 'submit_many: two 10 MB payloads');
SELECT is((SELECT array_agg(octet_length(payload::text) > 10 * 1024 * 1024 ORDER BY id) FROM taskq.claim(ARRAY['tap_m_huge'], 'mallory', 10)),
          ARRAY[true, true, true], 'claim: the three 10 MB jobs come back whole');
SELECT lives_ok(format('SELECT taskq.complete(%s, %L)', pg_temp.job('m_huge'), jsonb_build_object('r', repeat('r', 10 * 1024 * 1024))),
                'complete: a 10 MB result');
SELECT is((SELECT octet_length(result->>'r') FROM taskq.jobs WHERE id = pg_temp.job('m_huge')), 10 * 1024 * 1024,
          'the 10 MB result is stored whole');
RESET ROLE;
RESET taskq.max_payload_size;
RESET taskq.max_result_size;
SET ROLE taskq_tap_mallory;

SELECT lives_ok($$INSERT INTO tap_ids SELECT 'm_last', taskq.submit('tap_m', queue => 'tap_m_edge', run_at => '294276-12-31 23:59:59.999999+00')$$,
                'submit: run_at the last representable microsecond');
SELECT lives_ok($$INSERT INTO tap_ids SELECT 'm_first', taskq.submit('tap_m', queue => 'tap_m_edge', run_at => '4714-11-24 00:00:00+00 BC')$$,
                'submit: run_at the first representable timestamp');
SELECT is((SELECT array_agg(id) FROM taskq.claim(ARRAY['tap_m_edge'], 'mallory', 10)), ARRAY[pg_temp.job('m_first')],
          'claim: the job due in 4714 BC is due, the one due in 294276 is not');
SELECT is(taskq.wait(ARRAY[pg_temp.job('m_last')], '-10 centuries'), false, 'wait: a negative timeout returns at once');
SELECT lives_ok($$SELECT taskq.cancel(pg_temp.job('m_last'))$$, 'cancel: the job due in 294276');
SELECT is((SELECT array_agg(id ORDER BY id) FROM taskq.dead_letter_queue), NULL,
          'the dead-letter queue shows a plain role none of another role''s failed jobs');

SELECT lives_ok($$INSERT INTO tap_ids SELECT 'm_long', taskq.submit('tap_m', queue => 'tap_m_long', timeout => '10 centuries',
                                                              backoff => '10 centuries', max_attempts => 2147483647)$$,
                'submit: timeout and backoff of ten centuries, max_attempts INT_MAX');
SELECT is((SELECT array_agg(id) FROM taskq.claim(ARRAY['tap_m_long'], 'mallory', 1, '10 centuries')), ARRAY[pg_temp.job('m_long')],
          'claim: a lease of ten centuries');
SELECT is((SELECT lease_expires_at FROM taskq.jobs WHERE id = pg_temp.job('m_long')),
          (SELECT started_at + interval '10 centuries' FROM taskq.jobs WHERE id = pg_temp.job('m_long')),
          '... the lease expires ten centuries after the claim');
SELECT is(taskq.heartbeat(pg_temp.job('m_long'), 'mallory', '20 centuries'), now() + interval '20 centuries',
          'heartbeat: an extension of twenty centuries');

-- The retry delay is min(taskq.backoff_max, backoff * 2^(attempt-1)): a
-- backoff near the top of the interval range must not overflow on the
-- second failure (the worker could not report it, nor could the launcher
-- recover the job once its lease expired).
RESET ROLE;
SET LOCAL taskq.backoff_max = 0;   -- (superuser only) every retry is due at once
SET ROLE taskq_tap_mallory;
INSERT INTO tap_ids SELECT 'm_backoff', taskq.submit('tap_m', queue => 'tap_m_backoff', backoff => '170000000 years', max_attempts => 5);
SELECT is((SELECT array_agg(id) FROM taskq.claim(ARRAY['tap_m_backoff'], 'mallory')), ARRAY[pg_temp.job('m_backoff')], 'backoff: first claim');
SELECT lives_ok($$SELECT taskq.fail(pg_temp.job('m_backoff'), 'first')$$, 'backoff of 170 million years: the first failure');
SELECT is((SELECT array_agg(id) FROM taskq.claim(ARRAY['tap_m_backoff'], 'mallory')), ARRAY[pg_temp.job('m_backoff')], 'backoff: second claim');
SELECT lives_ok($$SELECT taskq.fail(pg_temp.job('m_backoff'), 'second')$$, 'backoff of 170 million years: the second failure does not overflow');
SELECT is((SELECT status::text || ' ' || attempts FROM taskq.jobs WHERE id = pg_temp.job('m_backoff')), 'pending 2',
          'backoff: the job waits for its third attempt');
RESET ROLE;
RESET taskq.backoff_max;

------------------------------------------------------------------------------
-- Names with quotes, semicolons, unicode: data, never SQL
------------------------------------------------------------------------------
SET ROLE taskq_tap_mallory;
SELECT lives_ok($$INSERT INTO tap_ids SELECT 'm_odd', taskq.submit(E'x''); DROP TABLE taskq.jobs; --\n"', '{"k''; --": "v\"; --"}',
                                                             queue => E'q"; SELECT pg_sleep(60); -- \\ %_',
                                                             idempotency_key => 'ключ 🔑 '';--')$$,
                'submit: quotes, semicolons, backslash, LIKE wildcards and unicode in names');
SELECT is((SELECT format('%s|%s|%s|%s', job_type, queue, idempotency_key, payload) FROM taskq.jobs WHERE id = pg_temp.job('m_odd')),
          format('%s|%s|%s|%s', E'x''); DROP TABLE taskq.jobs; --\n"', E'q"; SELECT pg_sleep(60); -- \\ %_', 'ключ 🔑 '';--', '{"k''; --": "v\"; --"}'),
          'such names are stored verbatim');
SELECT is(taskq.submit(E'x''); DROP TABLE taskq.jobs; --\n"', queue => E'q"; SELECT pg_sleep(60); -- \\ %_', idempotency_key => 'ключ 🔑 '';--'),
          pg_temp.job('m_odd'), 'the odd idempotency key finds the same job');
SELECT is((SELECT count(*) FROM taskq.claim(ARRAY['q"; SELECT pg_sleep(60); -- \ __'], 'mallory')), 0::bigint,
          'claim: LIKE wildcards in a queue name match nothing else');
SELECT is((SELECT array_agg(id) FROM taskq.claim(ARRAY[E'q"; SELECT pg_sleep(60); -- \\ %_'], E'w''"; --\\ 🚀')),
          ARRAY[pg_temp.job('m_odd')], 'claim: the odd queue, an odd worker name');
SELECT lives_ok(format('SELECT taskq.complete(%s, NULL, %L)', pg_temp.job('m_odd'), E'w''"; --\\ 🚀'),
                'complete: under the odd worker name');
SELECT is(taskq.retry_failed(E'q"; SELECT pg_sleep(60); -- \\ %_', E'x''); DROP TABLE taskq.jobs; --\n"', E'%''; --'), 0,
          'retry_failed: odd filters');
SELECT ok(taskq.dag(pg_temp.job('m_odd')) LIKE E'%x\'); DROP TABLE taskq.jobs; --\n#quot;%', 'dag: an odd job type is escaped for mermaid');
SELECT is(taskq.submit(repeat('🚀', 200), queue => repeat('й', 200)) > 0, true, 'submit: 200-character names of multibyte letters');
RESET ROLE;
SELECT has_table('taskq', 'jobs', 'taskq.jobs survived');

------------------------------------------------------------------------------
-- Privilege: another role's jobs, as a plain role and as a worker member
------------------------------------------------------------------------------
SET ROLE taskq_tap_mallory;
-- views and tables show nothing of the victim's
SELECT is((SELECT count(*) FROM taskq.jobs WHERE id IN (SELECT id FROM tap_ids WHERE name LIKE 'v\_%')), 0::bigint,
          'mallory: taskq.jobs hides the victim''s jobs');
SELECT is((SELECT count(*) FROM taskq.jobs WHERE owner <> 'taskq_tap_mallory'::regrole), 0::bigint,
          'mallory: taskq.jobs shows only her own jobs');
SELECT is((SELECT count(*) FROM taskq.job_logs WHERE job_id IN (SELECT id FROM tap_ids WHERE name LIKE 'v\_%')), 0::bigint,
          'mallory: taskq.job_logs hides the victim''s logs');
SELECT is((SELECT count(*) FROM taskq.job_dependencies WHERE job_id = pg_temp.job('v_blocked')), 0::bigint,
          'mallory: taskq.job_dependencies hides the victim''s edges');
SELECT is((SELECT count(*) FROM taskq.queue_depth WHERE queue LIKE 'tap\_victim%'), 0::bigint,
          'mallory: taskq.queue_depth hides the victim''s queues');
SELECT is((SELECT count(*) FROM taskq.schedules WHERE owner <> 'taskq_tap_mallory'::regrole), 0::bigint,
          'mallory: taskq.schedules hides other roles'' schedules');
-- functions: the victim's jobs "do not exist"
SELECT pg_temp.rejects($$SELECT taskq.cancel(pg_temp.job('v_pending'))$$, 'P0002', 'mallory: cancel the victim''s pending job');
SELECT pg_temp.rejects($$SELECT taskq.cancel(pg_temp.job('v_run'))$$, 'P0002', 'mallory: cancel the victim''s running job');
SELECT pg_temp.rejects($$SELECT taskq.retry(pg_temp.job('v_fail'))$$, 'P0002', 'mallory: retry the victim''s failed job');
SELECT pg_temp.rejects($$SELECT taskq.complete(pg_temp.job('v_run'), '{"forged": true}')$$, 'P0002', 'mallory: complete the victim''s job');
SELECT pg_temp.rejects($$SELECT taskq.complete(pg_temp.job('v_run'), '{}', 'victim worker')$$, 'P0002', 'mallory: complete the victim''s job under its worker''s name');
SELECT pg_temp.rejects($$SELECT taskq.fail(pg_temp.job('v_run'), 'sabotage', false)$$, 'P0002', 'mallory: fail the victim''s job');
SELECT pg_temp.rejects($$SELECT taskq.heartbeat(pg_temp.job('v_run'), NULL, '10 centuries')$$, 'P0002', 'mallory: heartbeat the victim''s job');
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(pg_temp.job('m_pending'), pg_temp.job('v_pending'))$$, '23503', 'mallory: depend on the victim''s job');
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(pg_temp.job('v_pending'), pg_temp.job('m_pending'))$$, 'P0002', 'mallory: block the victim''s job on hers');
SELECT pg_temp.rejects($$SELECT taskq.submit('tap_m', queue => 'tap_m', depends_on => ARRAY[pg_temp.job('v_pending')])$$, '23503', 'mallory: submit after the victim''s job');
SELECT pg_temp.rejects($$SELECT taskq.dag(pg_temp.job('v_blocked'))$$, 'P0002', 'mallory: draw the victim''s graph');
SELECT is(taskq.wait(ARRAY[pg_temp.job('v_pending')], '0'), true, 'mallory: wait ignores the victim''s jobs (tells nothing of them)');
SELECT is((SELECT count(*) FROM taskq.claim(ARRAY['tap_victim'], 'mallory', 100)), 0::bigint, 'mallory: claim does not hand her the victim''s jobs');
SELECT is((SELECT array_agg(DISTINCT owner::text) FROM taskq.claim(NULL, 'mallory', 10000)), ARRAY['taskq_tap_mallory'],
          'mallory: claim from all queues hands her only her own jobs');
SELECT is((SELECT status::text FROM taskq.jobs WHERE id = pg_temp.job('m_pending')), 'running', '... all of them');
-- direct DML on the tables
SELECT pg_temp.rejects($$INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status, payload, max_attempts,
                                                 backoff, cpu_units, memory_mb, run_at, owner)
                         VALUES ('tap_m', 'tap_m', 'normal', 'normal', 'pending', '{}', 1, '1s', 1, 0, now(), 'taskq_tap_victim')$$,
                       '42501', 'mallory: INSERT a job as the victim');
SELECT pg_temp.rejects($$UPDATE taskq.jobs SET status = 'cancelled' WHERE id = pg_temp.job('v_pending')$$, '42501', 'mallory: UPDATE the victim''s job');
SELECT pg_temp.rejects($$UPDATE taskq.jobs SET owner = 'taskq_tap_victim' WHERE id = pg_temp.job('m_pending')$$, '42501', 'mallory: UPDATE her job to the victim''s');
SELECT pg_temp.rejects($$DELETE FROM taskq.jobs WHERE id = pg_temp.job('m_pending')$$, '42501', 'mallory: DELETE even her own job');
SELECT pg_temp.rejects($$TRUNCATE taskq.jobs CASCADE$$, '42501', 'mallory: TRUNCATE taskq.jobs');
SELECT pg_temp.rejects($$INSERT INTO taskq.job_dependencies VALUES (pg_temp.job('v_pending'), pg_temp.job('m_pending'))$$, '42501', 'mallory: INSERT an edge');
SELECT pg_temp.rejects($$DELETE FROM taskq.job_dependencies$$, '42501', 'mallory: DELETE edges');
SELECT pg_temp.rejects($$INSERT INTO taskq.job_logs (job_id, status, attempt, message) VALUES (pg_temp.job('v_pending'), 'succeeded', 1, 'forged')$$, '42501', 'mallory: INSERT a log row');
SELECT pg_temp.rejects($$INSERT INTO taskq.handlers VALUES ('tap_v', 'pg_temp.tap_handler(jsonb)', 'taskq_tap_mallory')$$, '42501', 'mallory: INSERT a handler');
SELECT pg_temp.rejects($$UPDATE taskq.queues SET paused = true$$, '42501', 'mallory: UPDATE queues');
SELECT pg_temp.rejects($$INSERT INTO taskq.schedules (name, cron, job_type, payload, priority, queue, owner) VALUES ('x', '* * * * *', 'tap_v', '{}', 'normal', 'q', 'taskq_tap_victim')$$, '42501', 'mallory: INSERT a schedule');
-- the internal functions are not callable
SELECT pg_temp.rejects($$SELECT taskq._insert_job('tap_v', '{}', 'normal', 'tap_m', '{}', now(), 1, NULL, 1, 0, NULL, NULL, NULL, NULL, 'taskq_tap_victim')$$,
                       '42501', 'mallory: _insert_job with the victim as owner');
SELECT pg_temp.rejects($$SELECT taskq._cancel_job(pg_temp.job('v_pending'), 'x')$$, '42501', 'mallory: _cancel_job');
SELECT pg_temp.rejects($$SELECT taskq._complete_batch(ARRAY[pg_temp.job('v_run')], 'victim worker', ARRAY[NULL::jsonb])$$, '42501', 'mallory: _complete_batch');
SELECT pg_temp.rejects($$SELECT taskq._fail(ARRAY[pg_temp.job('v_run')], 'victim worker', '{1}', '{x}', '{f}')$$, '42501', 'mallory: _fail');
SELECT pg_temp.rejects($$SELECT taskq._requeue_failed(ARRAY[pg_temp.job('v_fail')])$$, '42501', 'mallory: _requeue_failed');
SELECT pg_temp.rejects($$SELECT taskq._claim(true, NULL, 'executor/9', 10, '1h', 100, 100000, NULL)$$, '42501', 'mallory: _claim of in-database jobs');
SELECT pg_temp.rejects($$SELECT taskq._request_cancel(pg_temp.job('v_run'), 'executor/0')$$, '42501', 'mallory: _request_cancel');
SELECT pg_temp.rejects($$SELECT taskq._recover('{}', now() + interval '1 day')$$, '42501', 'mallory: _recover');
SELECT pg_temp.rejects($$SELECT taskq._emit(ARRAY[pg_temp.job('v_pending')], 'forged')$$, '42501', 'mallory: _emit');
SELECT pg_temp.rejects($$SELECT taskq._record(NULL, ARRAY[ROW(NULL, pg_temp.job('v_pending'), NULL, 'failed', 1, 'forged', NULL, NULL)::taskq.job_logs])$$, '42501', 'mallory: _record');
-- no running a job as another role
RESET ROLE;
SET SESSION AUTHORIZATION taskq_tap_mallory;   -- (SET ROLE is checked against the session user)
SELECT pg_temp.rejects($$SET ROLE taskq_tap_victim$$, '42501', 'mallory: SET ROLE to the victim');
RESET SESSION AUTHORIZATION;
SET ROLE taskq_tap_mallory;
SELECT lives_ok($$INSERT INTO tap_ids SELECT 'm_definer', pg_temp.victim_submit()$$, 'mallory: submit through the victim''s SECURITY DEFINER function');
RESET ROLE;
SELECT is((SELECT owner::text FROM taskq.jobs WHERE id = pg_temp.job('m_definer')), 'taskq_tap_victim',
          'mallory: ... the job is the victim''s, whose rights the function runs with');
SET ROLE taskq_tap_mallory;
SELECT lives_ok($$INSERT INTO tap_ids SELECT 'm_inside', taskq.submit('tap_inside', queue => 'tap_m')$$, 'mallory: submit a job type with a handler');
SELECT is((SELECT owner::text || ' ' || in_database FROM taskq.jobs WHERE id = pg_temp.job('m_inside')), 'taskq_tap_mallory true',
          'mallory: ... an executor will run it as her');
\if :has_cron
SELECT lives_ok($$SELECT taskq.schedule(E'tap m''; --', '0 4 * * *', E'tap''); SELECT 1; --', '{"a": "''"}', 'low', E'q\\''')$$,
                'mallory: schedule with quotes in every name');
\else
SELECT skip('pg_cron is not installed', 1);
\endif
RESET ROLE;
\if :has_cron
SELECT command AS cron_command, username AS cron_user FROM cron.job WHERE jobname = E'taskq:tap m''; --' \gset
SELECT is(:'cron_user'::text, 'taskq_tap_mallory', 'mallory''s schedule runs as mallory');
SET ROLE taskq_tap_mallory;
SELECT lives_ok(:'cron_command', 'the scheduled command runs');
SELECT is((SELECT format('%s|%s|%s|%s', job_type, payload, priority, queue) FROM taskq.jobs
           WHERE job_type = E'tap''); SELECT 1; --'),
          format('%s|%s|%s|%s', E'tap''); SELECT 1; --', '{"a": "''"}', 'low', E'q\\'''),
          '... and submits exactly the scheduled job');
RESET ROLE;
\else
SELECT skip('pg_cron is not installed', 3);
\endif

-- a taskq_worker member may claim and finish any external job, nothing more
SET ROLE taskq_tap_wrk;
SELECT is((SELECT count(*) FROM taskq.jobs WHERE id IN (SELECT id FROM tap_ids)), 0::bigint,
          'worker: taskq.jobs hides other roles'' jobs');
SELECT is((SELECT count(*) FROM taskq.dead_letter_queue), 0::bigint, 'worker: the dead-letter queue hides other roles'' jobs');
SELECT pg_temp.rejects($$SELECT taskq.cancel(pg_temp.job('v_pending'))$$, 'P0002', 'worker: cancel the victim''s job');
SELECT pg_temp.rejects($$SELECT taskq.retry(pg_temp.job('v_fail'))$$, 'P0002', 'worker: retry the victim''s failed job');
SELECT pg_temp.rejects($$SELECT taskq.add_dependency(pg_temp.job('v_blocked'), pg_temp.job('m_pending'))$$, 'P0002', 'worker: edit the victim''s graph');
SELECT pg_temp.rejects($$SELECT taskq.dag(pg_temp.job('v_pending'))$$, 'P0002', 'worker: draw the victim''s graph');
SELECT pg_temp.rejects($$SELECT taskq.complete(pg_temp.job('v_run'), '{}', 'wrk')$$, '55000', 'worker: complete a job another worker holds');
SELECT pg_temp.rejects($$SELECT taskq.complete(pg_temp.job('m_exec'))$$, '55000', 'worker: complete a job an executor runs');
SELECT pg_temp.rejects($$SELECT taskq.heartbeat(pg_temp.job('m_exec'), NULL, '1 hour')$$, '55000', 'worker: heartbeat a job an executor runs');
SELECT pg_temp.rejects($$SELECT taskq.claim(NULL, 'executor/1')$$, '22023', 'worker: claim as an executor');
SELECT pg_temp.rejects($$SELECT taskq.register_handler('tap_v', 'pg_temp.tap_handler(jsonb)')$$, '42501', 'worker: register a handler');
SELECT pg_temp.rejects($$SELECT taskq.unregister_handler('tap_inside')$$, '42501', 'worker: unregister a handler');
SELECT pg_temp.rejects($$SELECT taskq.pause('tap_victim')$$, '42501', 'worker: pause a queue');
SELECT pg_temp.rejects($$UPDATE taskq.jobs SET status = 'succeeded' WHERE id = pg_temp.job('v_run')$$, '42501', 'worker: UPDATE a job');
SELECT pg_temp.rejects($$INSERT INTO taskq.job_logs (job_id, status, attempt, message) VALUES (pg_temp.job('v_run'), 'succeeded', 1, 'x')$$, '42501', 'worker: INSERT a log row');
SELECT pg_temp.rejects($$SELECT taskq._claim(true, NULL, 'executor/9', 10, '1h', 100, 100000, NULL)$$, '42501', 'worker: _claim of in-database jobs');
SELECT is((SELECT count(*) FROM taskq.claim(NULL, 'wrk', 10000) c WHERE c.in_database), 0::bigint,
          'worker: claim never hands out a job that has a handler');
SELECT lives_ok($$SELECT taskq.complete(pg_temp.job('m_wrk'), '{"by": "wrk"}', 'wrk')$$, 'worker: complete the job it holds');
RESET ROLE;
SELECT is((SELECT status::text FROM taskq.jobs WHERE id = pg_temp.job('m_inside')), 'pending', 'the job with a handler was not claimed by the worker');
SELECT is((SELECT status::text FROM taskq.jobs WHERE id = pg_temp.job('v_fail')), 'failed', 'the victim''s failed job is still failed');
SELECT is((SELECT status::text FROM taskq.jobs WHERE id = pg_temp.job('v_blocked')), 'blocked', 'the victim''s blocked job is still blocked');

------------------------------------------------------------------------------
-- Big graphs, as a plain role: a chain of 10,000 and a fan-in of 10,000.
-- Each runs in a savepoint rolled back afterwards (a transaction holds one
-- advisory lock per parent); the results are read into psql variables first.
------------------------------------------------------------------------------
SAVEPOINT chain;
SET ROLE taskq_tap_mallory;
CREATE TEMP TABLE tap_chain AS
SELECT row_number() OVER (ORDER BY id) AS n, id FROM taskq.submit_many((
    SELECT jsonb_agg(CASE WHEN i = 0 THEN '{"job_type": "tap_chain", "queue": "tap_chain"}'::jsonb
                          ELSE jsonb_build_object('job_type', 'tap_chain', 'queue', 'tap_chain', 'after', jsonb_build_array(i - 1)) END
                     ORDER BY i)
    FROM generate_series(0, 9999) i)) AS id;
SELECT count(*) AS chain_jobs,
       count(*) FILTER (WHERE j.status = 'blocked' AND j.unfinished_parents = 1) AS chain_blocked,
       (SELECT count(*) FROM taskq.job_dependencies d JOIN tap_chain c ON c.id = d.job_id) AS chain_edges,
       (SELECT count(*) FROM taskq.job_dependencies d JOIN tap_chain c ON c.id = d.job_id
          JOIN tap_chain p ON p.id = d.depends_on WHERE p.n = c.n - 1) AS chain_links
FROM tap_chain c JOIN taskq.jobs j USING (id) \gset
SELECT (SELECT count(*) FROM regexp_matches(taskq.dag((SELECT id FROM tap_chain WHERE n = 5000)), '\["#', 'g')) AS chain_dag_nodes,
       taskq.wait(ARRAY[(SELECT id FROM tap_chain WHERE n = 10000)], '0') AS chain_wait_before \gset
SELECT pg_temp.snap() AS chain_snap \gset
SELECT count(*) AS chain_bad_claimed FROM taskq.claim(ARRAY['tap_chain'], 'mallory', 10000) \gset
SELECT taskq.cancel((SELECT id FROM tap_chain WHERE n = 1)) \g /dev/null
SELECT count(*) FILTER (WHERE j.status = 'cancelled') AS chain_cancelled,
       taskq.wait(ARRAY[(SELECT id FROM tap_chain WHERE n = 10000)], '0') AS chain_wait_after
FROM tap_chain c JOIN taskq.jobs j USING (id) \gset
RESET ROLE;
ROLLBACK TO SAVEPOINT chain;
SELECT is(:chain_jobs, 10000, 'chain: submit_many of a 10,000-deep chain as a plain role');
SELECT is(:chain_blocked, 9999, 'chain: every job but the first is blocked on one parent');
SELECT is(:chain_edges, 9999, 'chain: 9,999 edges');
SELECT is(:chain_links, 9999, 'chain: each edge links a job to the one before it');
SELECT is(:chain_dag_nodes, 500, 'chain: dag in the middle of the chain stops at 500 jobs');
SELECT is(:'chain_wait_before'::text, 'f', 'chain: the last job is not finished');
SELECT is(:chain_bad_claimed, 1, 'chain: only the head can be claimed');
SELECT is(:chain_cancelled, 10000, 'chain: cancelling the head (claimed, running) cancels it and the 9,999 behind it');
SELECT is(:'chain_wait_after'::text, 't', 'chain: then the last job is finished');

SAVEPOINT fan_in;
SET ROLE taskq_tap_mallory;
CREATE TEMP TABLE tap_fan AS
SELECT id FROM taskq.submit_many((SELECT jsonb_agg('{"job_type": "tap_fan", "queue": "tap_fan"}'::jsonb)
                                  FROM generate_series(1, 10000))) AS id;
SELECT taskq.submit('tap_fan', queue => 'tap_fan', depends_on => (SELECT array_agg(id ORDER BY random()) FROM tap_fan)) AS fan_child \gset
SELECT status AS fan_status, unfinished_parents AS fan_unfinished,
       (SELECT count(*) FROM taskq.job_dependencies WHERE job_id = :fan_child) AS fan_edges
FROM taskq.jobs WHERE id = :fan_child \gset
SELECT taskq.cancel((SELECT max(id) FROM tap_fan)) \g /dev/null
SELECT status AS fan_status_after FROM taskq.jobs WHERE id = :fan_child \gset
RESET ROLE;
ROLLBACK TO SAVEPOINT fan_in;
SELECT is(:'fan_status'::text, 'blocked', 'fan-in: a job on 10,000 parents, submitted by a plain role, is blocked');
SELECT is(:fan_unfinished, 10000, 'fan-in: it waits for 10,000 parents');
SELECT is(:fan_edges::bigint, 10000::bigint, 'fan-in: 10,000 edges');
SELECT is(:'fan_status_after'::text, 'cancelled', 'fan-in: cancelling one parent cancels the child');

-- the same fan-in with one of the victim's jobs among the parents: refused,
-- nothing written (outside a savepoint: the failed call takes no lock with it)
SET ROLE taskq_tap_mallory;
CREATE TEMP TABLE tap_fan2 AS
SELECT id FROM taskq.submit_many((SELECT jsonb_agg('{"job_type": "tap_fan", "queue": "tap_fan"}'::jsonb)
                                  FROM generate_series(1, 10000))) AS id;
SELECT pg_temp.rejects(format('SELECT taskq.submit(%L, queue => %L, depends_on => %L)', 'tap_fan', 'tap_fan',
                              (SELECT array_agg(id) || pg_temp.job('v_pending') FROM tap_fan2)),
                       '23503', 'fan-in: 10,000 parents and one of the victim''s');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
