-- taskq 0.1.0 -> 0.2.0.  Also how a fresh install reaches 0.2.0: CREATE
-- EXTENSION runs taskq--0.1.0.sql (frozen, byte for byte the 0.1.0 release)
-- and then this script, as pg_stat_statements ships one base script and its
-- updates.  Every schema change after 0.1.0 goes here, in the section of its
-- concern; the upgrade test (test/t/030_upgrade.pl) checks that an updated
-- 0.1.0 database equals a fresh install and that its old jobs still run.

\echo Use "ALTER EXTENSION taskq UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Workers: launcher, executors, cancel and shutdown
------------------------------------------------------------------------------




------------------------------------------------------------------------------
-- Dependencies, locks, claims and submission checks
------------------------------------------------------------------------------




------------------------------------------------------------------------------
-- Notifications, metrics and size limits
------------------------------------------------------------------------------

-- Notification channels (src/publish.c): any role may LISTEN on any
-- channel, so a role's jobs are published only on channels named by an HMAC
-- under this secret, which no role but the extension's owner can read.  Not
-- dumped: a restored install makes a new one, and its clients ask again.
CREATE TABLE taskq.channel_secret (secret bytea NOT NULL);
INSERT INTO taskq.channel_secret
SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
REVOKE ALL ON taskq.channel_secret FROM PUBLIC;

-- The channel of kind 'jobs' or 'work' of role, or with a NULL role the
-- shared one (admins' for jobs, external workers' for work).
CREATE FUNCTION taskq._channel(kind text, role regrole) RETURNS text
    AS 'MODULE_PATHNAME', 'taskq_channel' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION taskq._channel(text, regrole) FROM PUBLIC;

-- LISTEN on this to see your jobs' transitions (payload: {"id", "status",
-- "queue", "job_type", "attempt"}); a taskq_admin member's carries everyone's.
CREATE FUNCTION taskq.channel() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT taskq._channel('jobs', CASE WHEN taskq._is_admin() THEN NULL ELSE taskq._caller() END)
$$;

-- LISTEN on this to hear which queue got work you may claim (payload: the
-- queue's name): a taskq_worker or taskq_admin member's carries every
-- queue's, anyone else's only the queues of its own jobs.
CREATE FUNCTION taskq.work_channel() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT taskq._channel('work', CASE WHEN taskq._can_work_any() THEN NULL ELSE taskq._caller() END)
$$;
GRANT EXECUTE ON FUNCTION taskq.channel(), taskq.work_channel() TO PUBLIC;

-- Prometheus text exposition of taskq.metrics().  Label values are escaped
-- as the format requires (backslash, double quote, newline): any role names
-- its queues and job types, and must not forge lines.
CREATE OR REPLACE FUNCTION taskq.metrics_prometheus() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(string_agg(line, E'\n' ORDER BY metric, ord), '') || E'\n'
    FROM (
        SELECT m.metric, 0 AS ord, format('# TYPE %s gauge', m.metric) AS line
          FROM (SELECT DISTINCT metric FROM taskq.metrics()) m
        UNION ALL
        SELECT m.metric, 1,
               m.metric ||
               coalesce('{' || (SELECT string_agg(format('%s="%s"', k,
                                                        replace(replace(replace(v, '\', '\\'),
                                                                        '"', '\"'),
                                                                E'\n', '\n')),
                                                  ',' ORDER BY k)
                                FROM jsonb_each_text(m.labels) AS e(k, v)) || '}', '') ||
               ' ' || m.value::text
          FROM taskq.metrics() m
    ) s
$$;

-- Size limits (taskq.max_payload_size, taskq.max_result_size): every row
-- written by SQL is checked here; job_rows.c checks the rows it writes
-- itself, and the executors a handler's result before they keep it.
CREATE FUNCTION taskq._check_size() RETURNS trigger
    AS 'MODULE_PATHNAME', 'taskq_check_size_trigger' LANGUAGE C;
REVOKE ALL ON FUNCTION taskq._check_size() FROM PUBLIC;
CREATE TRIGGER jobs_check_payload_size BEFORE INSERT ON taskq.jobs
    FOR EACH ROW EXECUTE FUNCTION taskq._check_size('payload');
CREATE TRIGGER jobs_check_result_size BEFORE UPDATE OF result ON taskq.jobs
    FOR EACH ROW WHEN (NEW.result IS NOT NULL) EXECUTE FUNCTION taskq._check_size('result');
CREATE TRIGGER schedules_check_payload_size BEFORE INSERT OR UPDATE OF payload ON taskq.schedules
    FOR EACH ROW EXECUTE FUNCTION taskq._check_size('payload');




------------------------------------------------------------------------------
-- Identity and privileges (last: it wraps every public function defined above)
------------------------------------------------------------------------------

-- Roles in the manner of PostgreSQL's predefined roles; a member of
-- taskq_admin is a member of the others.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'taskq_user') THEN
        CREATE ROLE taskq_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'taskq_monitor') THEN
        CREATE ROLE taskq_monitor NOLOGIN;
    END IF;
END
$roles$;
GRANT taskq_user, taskq_worker, taskq_monitor TO taskq_admin;

-- Who acts (src/caller.c): the caller noted by a public function's entry
-- point, or current_user; never inside a security-restricted operation.
CREATE OR REPLACE FUNCTION taskq._caller() RETURNS regrole
    AS 'MODULE_PATHNAME', 'taskq_caller' LANGUAGE C STABLE PARALLEL RESTRICTED;
CREATE FUNCTION taskq._current_role() RETURNS regrole
    AS 'MODULE_PATHNAME', 'taskq_current_role' LANGUAGE C STABLE PARALLEL SAFE;
-- Errors unless handler may run as every job's owner (src/caller.c).
CREATE FUNCTION taskq._check_handler(handler regprocedure) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_check_handler' LANGUAGE C STRICT STABLE;

-- Row security compares role OIDs, never names parsed again.
ALTER POLICY jobs_visible ON taskq.jobs
    USING (owner = taskq._current_role() OR pg_catalog.pg_has_role('taskq_admin', 'MEMBER'));
ALTER POLICY schedules_visible ON taskq.schedules
    USING (owner = taskq._current_role() OR pg_catalog.pg_has_role('taskq_admin', 'MEMBER'));

-- A handler's owner must be trusted to run code as every job's owner.
CREATE OR REPLACE FUNCTION taskq.register_handler(job_type text, handler regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p pg_catalog.pg_proc;
BEGIN
    PERFORM taskq._require_admin('register a handler');
    PERFORM taskq._check_name('job_type', job_type);
    IF handler IS NULL THEN
        RAISE EXCEPTION 'handler must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO p FROM pg_catalog.pg_proc WHERE oid = handler;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'function with OID % does not exist', handler::oid
            USING ERRCODE = 'undefined_function';
    END IF;
    IF p.prokind <> 'f' OR p.proretset OR p.pronargs <> 1
       OR p.proargtypes[0] <> 'jsonb'::regtype
       OR p.prorettype NOT IN ('jsonb'::regtype, 'void'::regtype) THEN
        RAISE EXCEPTION 'handler % has the wrong signature', handler
            USING ERRCODE = 'invalid_function_definition',
                  HINT = 'A handler is a function (payload jsonb) returning jsonb or void.';
    END IF;
    PERFORM taskq._check_handler(handler);
    PERFORM taskq._lock_job_type(job_type, true);
    INSERT INTO taskq.handlers (job_type, handler, registered_by)
    VALUES (job_type, handler, taskq._caller())
    ON CONFLICT (job_type) DO UPDATE
        SET handler = excluded.handler, registered_by = excluded.registered_by,
            registered_at = now();
    -- waiting jobs of this type move to the executors' lane
    UPDATE taskq.jobs j SET in_database = true, updated_at = now()
     WHERE j.job_type = register_handler.job_type AND j.status IN ('blocked', 'pending')
       AND NOT j.in_database;
    PERFORM taskq._wake_on_commit();
END
$$;

-- A role removes only its own schedule's pg_cron job, not every job of
-- that name (pg_cron names are unique per user, not per cluster).
CREATE OR REPLACE FUNCTION taskq.unschedule(name text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    existing taskq.schedules;
BEGIN
    SELECT * INTO existing FROM taskq.schedules s WHERE s.name = unschedule.name FOR UPDATE;
    IF NOT FOUND OR (existing.owner <> taskq._caller() AND NOT taskq._is_admin()) THEN
        RAISE EXCEPTION 'schedule "%" does not exist', name USING ERRCODE = 'undefined_object';
    END IF;
    IF to_regnamespace('cron') IS NOT NULL THEN
        EXECUTE 'SELECT cron.unschedule(c.jobid) FROM cron.job c
                  WHERE c.jobname = $1 AND c.username = $2 AND c.database = current_database()'
          USING 'taskq:' || name, (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = existing.owner);
    END IF;
    DELETE FROM taskq.schedules s WHERE s.name = unschedule.name;
END
$$;

-- Metrics count every role's jobs, for taskq_monitor, without showing rows.
ALTER FUNCTION taskq.metrics() SECURITY DEFINER;
ALTER FUNCTION taskq.latency(interval) SECURITY DEFINER;
-- Queue depth: a role's own jobs, every role's for taskq_monitor and
-- taskq_admin (counts only: the view reads the table as its owner).
CREATE OR REPLACE VIEW taskq.queue_depth WITH (security_invoker = false) AS
    SELECT queue, priority, status, count(*) AS jobs
    FROM taskq.jobs
    WHERE status IN ('blocked', 'pending', 'running')
      AND (owner = taskq._current_role() OR pg_catalog.pg_has_role('taskq_monitor', 'MEMBER')
           OR pg_catalog.pg_has_role('taskq_admin', 'MEMBER'))
    GROUP BY queue, priority, status;

-- Each public SECURITY DEFINER function becomes a C entry point
-- (taskq_api_call, src/caller.c) that notes current_user as the caller, in
-- front of its body: the same function moved to schema taskq_internal, which
-- nobody but the extension's owner may use.
CREATE SCHEMA taskq_internal;
REVOKE ALL ON SCHEMA taskq_internal FROM PUBLIC;
DO $wrap$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid, p.proname, p.proretset, p.prorows, p.proisstrict, p.provolatile,
               pg_catalog.pg_get_function_arguments(p.oid) AS args,
               pg_catalog.pg_get_function_result(p.oid) AS result
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'taskq'::regnamespace AND p.prosecdef AND p.proname !~ '^_'
         ORDER BY p.proname, p.oid
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET SCHEMA taskq_internal', f.oid::regprocedure);
        EXECUTE format('CREATE FUNCTION taskq.%I(%s) RETURNS %s AS %L, %L LANGUAGE C %s %s%s',
                       f.proname, f.args, f.result, 'MODULE_PATHNAME', 'taskq_api_call',
                       CASE f.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
                       CASE WHEN f.proisstrict THEN 'STRICT' ELSE 'CALLED ON NULL INPUT' END,
                       CASE WHEN f.proretset THEN format(' ROWS %s', f.prorows) ELSE '' END);
    END LOOP;
END
$wrap$;

-- An updated database keeps working for the roles that used it: each role
-- that owns a job or a schedule becomes a member of taskq_user.  (A fresh
-- install has none.)
DO $keep$
DECLARE
    r regrole;
BEGIN
    FOR r IN SELECT DISTINCT j.owner FROM taskq.jobs j
             UNION SELECT s.owner FROM taskq.schedules s
    LOOP
        IF NOT pg_catalog.pg_has_role(r, 'taskq_user', 'MEMBER') THEN
            EXECUTE format('GRANT taskq_user TO %s', r);
            RAISE WARNING 'taskq: role % owns jobs or schedules and was granted taskq_user', r;
        END IF;
    END LOOP;
END
$keep$;

-- Least privilege: PUBLIC may read the schema's names, nothing more.
REVOKE ALL ON ALL TABLES IN SCHEMA taskq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA taskq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA taskq FROM PUBLIC;

-- taskq_user: submit, link, cancel, retry, schedule and see its own jobs.
GRANT EXECUTE ON FUNCTION
    taskq.submit(text, jsonb, taskq.priority, text, bigint[], timestamptz, integer, interval,
                 integer, integer, text, interval),
    taskq.submit_many(jsonb),
    taskq.add_dependency(bigint, bigint),
    taskq.cancel(bigint),
    taskq.retry(bigint),
    taskq.wait(bigint[], interval),
    taskq.current_job_id(),
    taskq.dag(bigint, text),
    taskq.retry_failed(text, text, text),
    taskq.purge_failed(interval, text, text),
    taskq.schedule(text, text, text, jsonb, taskq.priority, text),
    taskq.unschedule(text),
    taskq._caller(),
    taskq._is_admin()
TO taskq_user;
GRANT SELECT ON taskq.jobs, taskq.job_logs, taskq.job_dependencies, taskq.schedules,
                taskq.dead_letter_queue, taskq.queue_depth, taskq.queues, taskq.handlers
TO taskq_user;

-- The external worker protocol: a role claims its own jobs; a member of
-- taskq_worker claims any role's.
GRANT EXECUTE ON FUNCTION
    taskq.claim(text[], text, integer, interval, integer, integer),
    taskq.complete(bigint, jsonb, text),
    taskq.complete_many(bigint[], jsonb[], text),
    taskq.fail(bigint, text, boolean, text),
    taskq.heartbeat(bigint, text, interval),
    taskq.channel(),
    taskq.work_channel(),
    taskq._caller()
TO taskq_user, taskq_worker;

-- taskq_monitor: metrics, health and queue depth; no job's contents.
GRANT EXECUTE ON FUNCTION
    taskq.metrics(),
    taskq.metrics_prometheus(),
    taskq.health(),
    taskq.latency(interval),
    taskq._worker_slots(),
    taskq._resources(),
    taskq._rates(),
    taskq._counters(),
    taskq._oldest_runnable_age()
TO taskq_monitor;
GRANT SELECT ON taskq.queue_depth, taskq.workers, taskq.resources, taskq.throughput
TO taskq_monitor;

-- taskq_admin: everything above, and the queues and handlers.
GRANT EXECUTE ON FUNCTION
    taskq.pause(text),
    taskq.resume(text),
    taskq.configure_queue(text, integer, interval, integer),
    taskq.register_handler(text, regprocedure),
    taskq.unregister_handler(text)
TO taskq_admin;

-- RLS policies call this as the reading role.
GRANT EXECUTE ON FUNCTION taskq._current_role() TO PUBLIC;
