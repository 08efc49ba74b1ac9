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

-- Lock only rows the caller may act on: a lock taken before the check kept
-- other roles' jobs from their owners, their claims and the executors.
-- any_job: the caller may act on every role's jobs (an admin; for a worker's
-- calls, a member of taskq_worker).
CREATE FUNCTION taskq._lock_job_as(job_id bigint, any_job boolean) RETURNS taskq.jobs
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs;
BEGIN
    IF job_id IS NULL THEN
        RAISE EXCEPTION 'job id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- only a row the caller may act on is locked: another role's is not
    -- kept from its owner and the executors, nor its existence told
    SELECT * INTO j FROM taskq.jobs
     WHERE id = job_id AND (owner = taskq._caller() OR any_job)
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION taskq._lock_job(job_id bigint) RETURNS taskq.jobs
LANGUAGE sql VOLATILE AS $$
    SELECT taskq._lock_job_as(job_id, taskq._is_admin())
$$;

CREATE OR REPLACE FUNCTION taskq._held_job(job_id bigint, worker text) RETURNS taskq.jobs
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs := taskq._lock_job_as(job_id, taskq._can_work_any());
BEGIN
    IF j.status <> 'running' THEN
        RAISE EXCEPTION 'job % is %, not running', job_id, j.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF j.worker LIKE 'executor/%' OR (worker IS NOT NULL AND j.worker IS DISTINCT FROM worker) THEN
        RAISE EXCEPTION 'job % is held by another worker', job_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Held by %s.', j.worker);
    END IF;
    IF j.lease_expires_at < now() THEN
        RAISE EXCEPTION 'lease on job % expired at %', job_id, j.lease_expires_at
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Send taskq.heartbeat() more often than the lease lasts.';
    END IF;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION taskq.complete_many(job_ids bigint[], results jsonb[] DEFAULT NULL,
                                    worker text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(job_ids);
    me regrole := taskq._caller();
    any_job boolean := taskq._can_work_any();
    bad bigint;
BEGIN
    IF job_ids IS NULL THEN
        RAISE EXCEPTION 'job_ids must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF array_ndims(job_ids) > 1 OR array_ndims(results) > 1 THEN
        RAISE EXCEPTION 'job_ids and results must be one-dimensional arrays'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n > 10000 THEN
        RAISE EXCEPTION 'at most 10000 jobs can be completed at once, got %', n
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Split the call.';
    END IF;
    IF results IS NOT NULL AND cardinality(results) <> n THEN
        RAISE EXCEPTION 'results must have one element per job id'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('%s job ids, %s results.', n, cardinality(results));
    END IF;
    IF array_position(job_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'job id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = format('job_ids[%s] is NULL.', array_position(job_ids, NULL));
    END IF;
    SELECT u.id INTO bad FROM unnest(job_ids) AS u(id) GROUP BY u.id HAVING count(*) > 1
     ORDER BY u.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'job % appears more than once in job_ids', bad
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN 0;
    END IF;
    PERFORM taskq._require_read_committed('completing a job');
    -- Lock in id order (concurrent batches cannot deadlock), then fence like
    -- _held_job, which raises the precise error for the first refused id.
    PERFORM 1 FROM taskq.jobs j WHERE j.id = ANY (job_ids) AND (any_job OR j.owner = me)
      ORDER BY j.id FOR NO KEY UPDATE;
    SELECT u.id INTO bad
      FROM unnest(job_ids) WITH ORDINALITY AS u(id, ord)
      LEFT JOIN taskq.jobs j ON j.id = u.id AND j.id = ANY (job_ids)
     WHERE j.id IS NULL OR (j.owner <> me AND NOT any_job) OR j.status <> 'running'
        OR j.worker LIKE 'executor/%'
        OR (complete_many.worker IS NOT NULL AND j.worker IS DISTINCT FROM complete_many.worker)
        OR j.lease_expires_at < now()
     ORDER BY u.ord LIMIT 1;
    IF FOUND THEN
        PERFORM taskq._held_job(bad, complete_many.worker);
        RAISE EXCEPTION 'job % is not held', bad USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- the rows are locked and checked: the one success path (40_history.sql)
    RETURN taskq._complete_batch(job_ids, NULL, results);
END
$$;

-- Metrics count every role's jobs, for taskq_monitor, without showing rows.
ALTER FUNCTION taskq.metrics() SECURITY DEFINER;
ALTER FUNCTION taskq.latency(interval) SECURITY DEFINER;
-- Queue depth: a role's own jobs, every role's for taskq_monitor and
-- taskq_admin (counts only: the view reads the table as its owner).
-- A job held by an executor's open batch counts as running (taskq.live_jobs).
CREATE OR REPLACE VIEW taskq.queue_depth WITH (security_invoker = false, security_barrier) AS
    SELECT j.queue, j.priority,
           CASE WHEN h.job_id IS NULL THEN j.status ELSE 'running' END AS status,
           count(*) AS jobs
    FROM taskq.jobs j
    LEFT JOIN taskq._held_jobs() h ON h.job_id = j.id AND j.status = 'pending'
    WHERE j.status IN ('blocked', 'pending', 'running')
      AND (j.owner = taskq._current_role() OR pg_catalog.pg_has_role('taskq_monitor', 'MEMBER')
           OR pg_catalog.pg_has_role('taskq_admin', 'MEMBER'))
    GROUP BY 1, 2, 3;

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
                 integer, integer, text, interval, text, text),
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
    taskq.configure_queue(text, integer, interval, integer, integer, text, integer),
    taskq.register_handler(text, regprocedure),
    taskq.unregister_handler(text)
TO taskq_admin;

-- RLS policies call this as the reading role.
GRANT EXECUTE ON FUNCTION taskq._current_role() TO PUBLIC;

