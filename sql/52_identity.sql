-- Identity: taskq acts for current_user, never for the session user or the
-- caller of a SECURITY DEFINER function, and not at all inside a
-- security-restricted operation; handlers are code only trusted roles can
-- change; row security matches role OIDs; each predefined role gets what it
-- needs and PUBLIC nothing.
\i sql/include/helpers.psql
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS regress_mallory, regress_fn CASCADE;
DROP ROLE IF EXISTS taskq_mallory, taskq_victim, "Victim", "Ops.Team", taskq_fnowner,
                    taskq_nobody, taskq_watch;
RESET client_min_messages;
CREATE ROLE taskq_mallory LOGIN IN ROLE taskq_user;
CREATE ROLE taskq_victim LOGIN IN ROLE taskq_user;
CREATE ROLE "Victim" LOGIN IN ROLE taskq_user;
CREATE ROLE "Ops.Team" LOGIN IN ROLE taskq_user, taskq_monitor;
CREATE ROLE taskq_fnowner LOGIN IN ROLE taskq_user;
CREATE ROLE taskq_nobody LOGIN;
CREATE ROLE taskq_watch LOGIN IN ROLE taskq_monitor;
CREATE SCHEMA regress_mallory AUTHORIZATION taskq_mallory;
GRANT USAGE ON SCHEMA regress_mallory TO PUBLIC;

-- 1. Security-restricted operations.  Mallory's index expressions and
-- materialized view call taskq; first harmless, so the index can be built.
SET ROLE taskq_mallory;
CREATE FUNCTION regress_mallory.via_submit(x int) RETURNS int
    LANGUAGE sql IMMUTABLE AS $$ SELECT x $$;
CREATE FUNCTION regress_mallory.via_register(x int) RETURNS int
    LANGUAGE sql IMMUTABLE AS $$ SELECT x $$;
CREATE FUNCTION regress_mallory.grab(payload jsonb) RETURNS void
    LANGUAGE sql AS $$ SELECT NULL::void $$;
CREATE TABLE regress_mallory.t_submit (x int);
CREATE FUNCTION regress_mallory.via_submit_many(x int) RETURNS int
    LANGUAGE sql IMMUTABLE AS $$ SELECT x $$;
CREATE TABLE regress_mallory.t_register (x int);
CREATE TABLE regress_mallory.t_many (x int);
INSERT INTO regress_mallory.t_submit SELECT generate_series(1, 10);
INSERT INTO regress_mallory.t_register SELECT generate_series(1, 10);
INSERT INTO regress_mallory.t_many SELECT generate_series(1, 10);
CREATE INDEX ON regress_mallory.t_submit (regress_mallory.via_submit(x));
CREATE INDEX ON regress_mallory.t_register (regress_mallory.via_register(x));
CREATE INDEX ON regress_mallory.t_many (regress_mallory.via_submit_many(x));
CREATE MATERIALIZED VIEW regress_mallory.mv AS SELECT regress_mallory.via_submit(1) AS x WITH NO DATA;
CREATE OR REPLACE FUNCTION regress_mallory.via_submit(x int) RETURNS int
    LANGUAGE sql IMMUTABLE AS $$ SELECT x + 0 * taskq.submit('identity_sro', queue => 'regress_identity')::int $$;
CREATE OR REPLACE FUNCTION regress_mallory.via_register(x int) RETURNS int
    LANGUAGE sql IMMUTABLE AS $$
    SELECT x FROM (SELECT taskq.register_handler('identity_sro', 'regress_mallory.grab(jsonb)')) s $$;
CREATE OR REPLACE FUNCTION regress_mallory.via_submit_many(x int) RETURNS int
    LANGUAGE sql IMMUTABLE AS $$
    SELECT x + 0 * (SELECT count(*) FROM taskq.submit_many('[{"job_type": "identity_sro", "queue": "regress_identity"}]'))::int $$;
RESET ROLE;
-- A superuser's ANALYZE and REFRESH run them as mallory, restricted: taskq
-- refuses, so nothing is done in the superuser's name, nor in mallory's
-- (register_handler is refused earlier: mallory may not execute it).
ANALYZE regress_mallory.t_submit;
ANALYZE regress_mallory.t_register;
ANALYZE regress_mallory.t_many;
REFRESH MATERIALIZED VIEW regress_mallory.mv;
SELECT count(*) AS sro_jobs FROM taskq.jobs WHERE job_type = 'identity_sro';
SELECT count(*) AS sro_handlers FROM taskq.handlers WHERE job_type = 'identity_sro';
-- outside such an operation the same call is mallory's own
SET ROLE taskq_mallory;
SELECT pg_temp.j('m1', taskq.submit('identity', queue => 'regress_identity'));
RESET ROLE;
SELECT pg_temp.n(id) AS job, owner::text FROM taskq.jobs WHERE job_type = 'identity_sro' OR id = pg_temp.id('m1');

-- 2. Confused deputy: a SECURITY DEFINER function acts with its owner's
-- rights, whoever calls it.
SET ROLE taskq_mallory;
CREATE FUNCTION regress_mallory.deputy_cancel(id bigint) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT taskq.cancel(id) $$;
CREATE FUNCTION regress_mallory.deputy_admin() RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT taskq.pause('regress_identity') $$;
CREATE FUNCTION regress_mallory.deputy_register() RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ SELECT taskq.register_handler('identity_deputy', 'regress_mallory.grab(jsonb)') $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA regress_mallory TO PUBLIC;
RESET ROLE;
SET ROLE taskq_victim;
SELECT pg_temp.j('v1', taskq.submit('identity', '{"secret": "victim"}', queue => 'regress_identity'));
SELECT pg_temp.try_ids(format('SELECT regress_mallory.deputy_cancel(%s)', pg_temp.id('v1'))) AS victim_calls;
SET ROLE taskq_boss;
SELECT pg_temp.try('SELECT regress_mallory.deputy_admin()') AS admin_calls_pause;
SELECT pg_temp.try('SELECT regress_mallory.deputy_register()') AS admin_calls_register;
RESET ROLE;
SELECT pg_temp.n(id) AS job, status FROM taskq.jobs WHERE id = pg_temp.id('v1');
SELECT count(*) AS paused FROM taskq.queues WHERE name = 'regress_identity' AND paused;
SELECT count(*) AS deputy_handlers FROM taskq.handlers WHERE job_type = 'identity_deputy';

-- 3. Handlers.  One owned by a role that is not trusted to run code as
-- every job's owner is refused at registration.
CREATE SCHEMA regress_fn AUTHORIZATION taskq_fnowner;
GRANT USAGE ON SCHEMA regress_fn TO PUBLIC;
SET ROLE taskq_fnowner;
CREATE FUNCTION regress_fn.untrusted_h(payload jsonb) RETURNS void
    LANGUAGE sql AS $$ SELECT NULL::void $$;
GRANT EXECUTE ON FUNCTION regress_fn.untrusted_h(jsonb) TO PUBLIC;
SET ROLE taskq_boss;
SELECT pg_temp.try($$SELECT taskq.register_handler('identity_h', 'regress_fn.untrusted_h(jsonb)')$$) AS untrusted;
RESET ROLE;
-- A trusted one is registered; when its owner or SECURITY attribute changes
-- afterwards, its jobs fail without running it.
CREATE TABLE regress_identity_runs (job_id bigint, who text);
GRANT INSERT ON regress_identity_runs TO PUBLIC;
CREATE FUNCTION public.regress_trusted_h(payload jsonb) RETURNS void
    LANGUAGE sql AS $$ INSERT INTO public.regress_identity_runs VALUES (taskq.current_job_id(), current_user) $$;
GRANT EXECUTE ON FUNCTION public.regress_trusted_h(jsonb) TO PUBLIC;
SET ROLE taskq_boss;
SELECT taskq.register_handler('identity_h', 'public.regress_trusted_h(jsonb)');
SELECT taskq.pause('regress_identity_h');
RESET ROLE;
SET ROLE taskq_victim;
SELECT pg_temp.j('h_ok', taskq.submit('identity_h', queue => 'regress_identity_h'));
RESET ROLE;
SELECT taskq.resume('regress_identity_h');
SELECT pg_temp.wait_status(pg_temp.id('h_ok'), 'succeeded') AS ran;
SELECT pg_temp.n(job_id) AS job, who FROM regress_identity_runs;
SELECT taskq.pause('regress_identity_h');
SET ROLE taskq_victim;
SELECT pg_temp.j('h_owner', taskq.submit('identity_h', queue => 'regress_identity_h', max_attempts => 3));
RESET ROLE;
ALTER FUNCTION public.regress_trusted_h(jsonb) OWNER TO taskq_fnowner;
SELECT taskq.resume('regress_identity_h');
SELECT pg_temp.wait_status(pg_temp.id('h_owner'), 'failed') AS failed;
SELECT taskq.pause('regress_identity_h');
ALTER FUNCTION public.regress_trusted_h(jsonb) OWNER TO CURRENT_USER;
ALTER FUNCTION public.regress_trusted_h(jsonb) SECURITY DEFINER;
SET ROLE taskq_victim;
SELECT pg_temp.j('h_definer', taskq.submit('identity_h', queue => 'regress_identity_h'));
RESET ROLE;
SELECT taskq.resume('regress_identity_h');
SELECT pg_temp.wait_status(pg_temp.id('h_definer'), 'failed') AS failed;
SELECT pg_temp.n(id) AS job, status, attempts, last_error FROM taskq.jobs
WHERE queue = 'regress_identity_h' ORDER BY id;
SELECT pg_temp.n(job_id) AS job, who FROM regress_identity_runs ORDER BY job_id;

-- 4. Row security matches role OIDs: "Victim" is not taskq_victim.
SET ROLE "Victim";
SELECT pg_temp.j('V1', taskq.submit('identity', queue => 'regress_identity'));
SELECT pg_temp.n(id) AS job, owner::text FROM taskq.jobs ORDER BY id;
SELECT count(*) AS dead_letters FROM taskq.dead_letter_queue;
SET ROLE taskq_victim;
SELECT pg_temp.n(id) AS job, owner::text FROM taskq.jobs WHERE queue = 'regress_identity' ORDER BY id;
SET ROLE "Ops.Team";
SELECT count(*) AS jobs FROM taskq.jobs;
SELECT count(*) > 0 AS metrics FROM taskq.metrics();
SELECT sum(jobs) AS queued FROM taskq.queue_depth WHERE queue = 'regress_identity';
RESET ROLE;

-- 5. A role removes only its own schedules' pg_cron jobs, not another
-- role's job of the same name.
SELECT cron.schedule('taskq:regress_shared', '0 0 1 1 *', 'SELECT 1') > 0 AS superuser_job;
SET ROLE taskq_mallory;
SELECT taskq.schedule('regress_shared', '0 0 1 1 *', 'identity') > 0 AS scheduled;
SELECT taskq.unschedule('regress_shared');
RESET ROLE;
SELECT username, count(*) FROM cron.job WHERE jobname = 'taskq:regress_shared' GROUP BY 1;
SELECT cron.unschedule('taskq:regress_shared');

-- 6. Least privilege.  PUBLIC gets nothing; taskq_monitor reads metrics,
-- health and queue depth, and no job.
SET ROLE taskq_nobody;
SELECT n, pg_temp.try(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.submit('identity', queue => 'regress_identity')$$),
 (2, $$SELECT taskq.submit_many('[{"job_type": "identity"}]')$$),
 (3, $$SELECT count(*) FROM taskq.jobs$$),
 (4, $$SELECT count(*) FROM taskq.metrics()$$),
 (5, $$SELECT count(*) FROM taskq.health()$$),
 (6, $$SELECT count(*) FROM taskq.claim(ARRAY['regress_identity'], 'w')$$),
 (7, $$SELECT count(*) FROM taskq.queue_depth$$)
) AS t(n, stmt) ORDER BY n;
SET ROLE taskq_watch;
SELECT n, pg_temp.try(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.submit('identity', queue => 'regress_identity')$$),
 (2, $$SELECT count(*) FROM taskq.jobs$$),
 (3, $$SELECT count(*) FROM taskq.dead_letter_queue$$),
 (4, $$SELECT count(*) FROM taskq.claim(ARRAY['regress_identity'], 'w')$$),
 (5, $$SELECT taskq.cancel(1)$$),
 (6, $$SELECT count(*) FROM taskq.metrics()$$),
 (7, $$SELECT count(*) FROM taskq.health()$$),
 (8, $$SELECT length(taskq.metrics_prometheus()) > 0$$),
 (9, $$SELECT count(*) FROM taskq.workers$$)
) AS t(n, stmt) ORDER BY n;
SELECT sum(jobs) AS queued_all_roles FROM taskq.queue_depth WHERE queue = 'regress_identity';
RESET ROLE;
-- 7. No leak through queue_depth: mallory's cheap function sees only the
-- rows the view shows her (security_barrier), not other roles' queues.
SET ROLE taskq_victim;
SELECT pg_temp.j('v_secret', taskq.submit('identity', queue => 'regress_identity_secret'));
SET ROLE taskq_mallory;
CREATE FUNCTION regress_mallory.peek(q text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE COST 0.0000001 AS $$
BEGIN
    PERFORM set_config('regress.seen', current_setting('regress.seen', true) || ',' || q, false);
    RETURN true;
END $$;
SELECT set_config('regress.seen', '', false) IS NOT NULL AS reset;
SELECT count(*) > 0 AS own_rows FROM taskq.queue_depth WHERE regress_mallory.peek(queue);
SELECT current_setting('regress.seen') LIKE '%regress_identity_secret%' AS saw_victims_queue;
-- 8. A claim names at most 100 queues (one subquery each).
SELECT pg_temp.try($$SELECT count(*) FROM taskq.claim(array(SELECT 'q' || g FROM generate_series(1, 101) g), 'w')$$) AS many_queues;
RESET ROLE;

-- who may execute what: the grants of every public function
SELECT p.proname, array_agg(DISTINCT a.grantee::regrole::text ORDER BY a.grantee::regrole::text) AS executable_by
FROM pg_proc p, aclexplode(p.proacl) a
WHERE p.pronamespace = 'taskq'::regnamespace AND p.proname !~ '^_' AND a.privilege_type = 'EXECUTE'
  AND a.grantee <> p.proowner
GROUP BY p.proname ORDER BY 1;
-- nobody but the owner may use the bodies' schema
SELECT has_schema_privilege('taskq_boss', 'taskq_internal', 'USAGE') AS admin_uses_bodies;

-- Leave no live jobs or objects behind.
SELECT taskq.resume('regress_identity');
SELECT taskq.unregister_handler('identity_h');
SELECT pg_temp.cancel_all('regress_identity%') >= 0 AS cancelled;
DROP TABLE regress_identity_runs;
DROP FUNCTION public.regress_trusted_h(jsonb);
DROP SCHEMA regress_mallory, regress_fn CASCADE;
