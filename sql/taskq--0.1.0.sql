-- taskq 0.1.0: schema, submission and dependency API, claim/complete protocol,
-- observability.  This script is the single source of taskq's SQL objects.
\echo Use "CREATE EXTENSION taskq" to load this file. \quit

-- Every object below is schema-qualified.  Every SECURITY DEFINER function and
-- every internal function the workers call pins search_path, so objects
-- planted in public or pg_temp cannot capture calls; the other internal
-- helpers run only inside those.
--
-- The functions that record a job's progress (submit, submit_many,
-- complete, complete_many, fail, heartbeat, and _fail, which the launcher
-- calls too) SET enable_seqscan = off: plpgsql keeps a generic plan made while the jobs
-- table was still small or empty, and a kept sequential scan then read the
-- whole table at every call as it grew (the executors' no-op pickup went
-- from 0.1 to 2 ms of claim per job within seconds).  They also SET
-- plan_cache_mode = force_generic_plan: for a statement taking an array of
-- ids the planner judged every custom plan cheaper than the generic one and
-- planned it again at each call, which cost 20 times its execution.  The
-- executors run with both for the whole session, their claim included;
-- external claims do not: in bench/ the settings made them 1.5 times slower.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'taskq_admin') THEN
        CREATE ROLE taskq_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'taskq_worker') THEN
        CREATE ROLE taskq_worker NOLOGIN;
    END IF;
END
$roles$;

CREATE TYPE taskq.priority AS ENUM ('critical', 'high', 'normal', 'low');
CREATE TYPE taskq.job_status AS ENUM ('blocked', 'pending', 'running', 'succeeded', 'failed', 'cancelled');

CREATE TABLE taskq.queues (
    name                 text PRIMARY KEY CHECK (name <> ''),
    paused               boolean NOT NULL DEFAULT false,
    concurrency          integer CHECK (concurrency > 0),
    default_timeout      interval CHECK (default_timeout > interval '0'),
    default_max_attempts integer CHECK (default_max_attempts >= 1),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE taskq.jobs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue              text NOT NULL,
    job_type           text NOT NULL,
    priority           taskq.priority NOT NULL,
    -- priority after aging; the claim order uses this one
    effective_priority taskq.priority NOT NULL,
    status             taskq.job_status NOT NULL,
    payload            jsonb NOT NULL,
    result             jsonb,
    last_error         text,
    attempts           integer NOT NULL DEFAULT 0,
    max_attempts       integer NOT NULL CHECK (max_attempts >= 1),
    backoff            interval NOT NULL,
    timeout            interval CHECK (timeout > interval '0'),
    cpu_units          integer NOT NULL CHECK (cpu_units > 0),
    memory_mb          integer NOT NULL CHECK (memory_mb >= 0),
    run_at             timestamptz NOT NULL,
    idempotency_key    text,
    owner              regrole NOT NULL,
    worker             text,
    lease_expires_at   timestamptz,
    -- parents that have not succeeded yet; the job is blocked while > 0
    unfinished_parents integer NOT NULL DEFAULT 0,
    -- a handler is registered for job_type: the executors run it (else
    -- external workers); kept up to date by register/unregister_handler
    in_database        boolean NOT NULL DEFAULT false,
    aged_at            timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The claims scan this index in claim order and stop after a batch; the
-- leading in_database splits it in two lanes, so a backlog of external jobs
-- never slows the executors' claim, nor the reverse.
CREATE INDEX jobs_runnable_idx ON taskq.jobs (in_database, effective_priority, run_at, id)
    WHERE status = 'pending';
-- External workers claiming named queues read only those queues' entries.
CREATE INDEX jobs_runnable_queue_idx ON taskq.jobs (queue, effective_priority, run_at, id)
    WHERE status = 'pending' AND NOT in_database;
-- (The executors lock their batch by id with status::text = 'running': with
-- status = 'running' the generic plan read this index whole, which grows with
-- every job running anywhere, and ANDed it with the primary key's bitmap.)
CREATE INDEX jobs_running_idx ON taskq.jobs (lease_expires_at)
    WHERE status = 'running';
CREATE INDEX jobs_finished_idx ON taskq.jobs (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_idempotency_idx ON taskq.jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('blocked', 'pending', 'running');

CREATE TABLE taskq.job_dependencies (
    job_id     bigint NOT NULL REFERENCES taskq.jobs (id) ON DELETE CASCADE,
    depends_on bigint NOT NULL REFERENCES taskq.jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, depends_on),
    CHECK (job_id <> depends_on)
);
CREATE INDEX job_dependencies_depends_on_idx ON taskq.job_dependencies (depends_on, job_id);

CREATE TABLE taskq.job_logs (
    id        bigint GENERATED ALWAYS AS IDENTITY,
    job_id    bigint NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    status    taskq.job_status NOT NULL,
    attempt   integer NOT NULL,
    message   text NOT NULL,
    error     text,
    details   jsonb,
    -- one index for both: a job's history is read by job_id, in id order
    -- (a second index cost every logged transition an insert)
    PRIMARY KEY (job_id, id)
);

CREATE TABLE taskq.handlers (
    job_type      text PRIMARY KEY CHECK (job_type <> ''),
    handler       regprocedure NOT NULL,
    registered_by regrole NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- One row; add_dependency updates it so concurrent graph edits serialize.
CREATE TABLE taskq.dag_lock (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO taskq.dag_lock DEFAULT VALUES;

-- Recurring jobs created through taskq.schedule (pg_cron runs them).
CREATE TABLE taskq.schedules (
    name       text PRIMARY KEY CHECK (name <> ''),
    cron       text NOT NULL,
    job_type   text NOT NULL,
    payload    jsonb NOT NULL,
    priority   taskq.priority NOT NULL,
    queue      text NOT NULL,
    owner      regrole NOT NULL,
    cron_jobid bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);

SELECT pg_catalog.pg_extension_config_dump('taskq.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('taskq.job_dependencies', '');
SELECT pg_catalog.pg_extension_config_dump('taskq.job_logs', '');
SELECT pg_catalog.pg_extension_config_dump('taskq.handlers', '');
SELECT pg_catalog.pg_extension_config_dump('taskq.queues', '');
SELECT pg_catalog.pg_extension_config_dump('taskq.schedules', '');

------------------------------------------------------------------------------
-- C functions (src/)
------------------------------------------------------------------------------

-- The role the session acts as: SET ROLE is honoured, SECURITY DEFINER is not,
-- so no definer function can make a job run with its owner's rights.
CREATE FUNCTION taskq._caller() RETURNS regrole
    AS 'MODULE_PATHNAME', 'taskq_caller' LANGUAGE C STABLE PARALLEL RESTRICTED;

-- Wake the executors when the current transaction commits.
CREATE FUNCTION taskq._wake_on_commit() RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_wake_on_commit' LANGUAGE C VOLATILE;

-- Ask the executor named worker to stop job_id (now if it runs it, else before
-- it starts it); false when no such executor is alive.
CREATE FUNCTION taskq._request_cancel(job_id bigint, worker text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'taskq_request_cancel' LANGUAGE C VOLATILE STRICT;

-- Jobs of submit_many that need no per-job check (submit.c)
CREATE FUNCTION taskq._plain_batch(jobs jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'taskq_plain_batch' LANGUAGE C IMMUTABLE STRICT;
-- The jobs of a plain batch written without SQL (src/job_rows.c), or NULL
-- when that declines; for submit_many only (no grant: it trusts its caller).
CREATE FUNCTION taskq._insert_plain_batch(jobs jsonb, owner regrole) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'taskq_insert_plain_batch' LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION taskq._max_cpu_units() RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_max_cpu_units_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._max_memory_mb() RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_max_memory_mb_sql' LANGUAGE C STABLE;

-- May a transition to status be published now (on taskq_jobs, or for a job
-- made pending on taskq_work)?  Per taskq.notify_level, and never above
-- taskq.notify_queue_limit (read once per transaction).  STABLE: with a
-- constant status, a statement asks once, not once per job.
CREATE FUNCTION taskq._publishing(status text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'taskq_publishing_status' LANGUAGE C STABLE STRICT;
CREATE FUNCTION taskq._notify_queue_limit() RETURNS float8
    AS 'MODULE_PATHNAME', 'taskq_notify_queue_limit_sql' LANGUAGE C STABLE;

CREATE FUNCTION taskq.current_job_id() RETURNS bigint
    AS 'MODULE_PATHNAME', 'taskq_current_job_id' LANGUAGE C STABLE;

CREATE FUNCTION taskq._worker_slots(
    OUT pid integer, OUT kind text, OUT state text, OUT job_id bigint,
    OUT since timestamptz, OUT jobs_done bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'taskq_worker_slots' LANGUAGE C VOLATILE;

CREATE FUNCTION taskq._resources(
    OUT cpu_units_used integer, OUT cpu_units_max integer,
    OUT memory_mb_used integer, OUT memory_mb_max integer)
    RETURNS record
    AS 'MODULE_PATHNAME', 'taskq_resources' LANGUAGE C VOLATILE;

CREATE FUNCTION taskq._counters(
    OUT claimed bigint, OUT succeeded bigint, OUT failed bigint, OUT retried bigint)
    RETURNS record
    AS 'MODULE_PATHNAME', 'taskq_counters' LANGUAGE C VOLATILE;

-- Where claims start reading a priority of a lane of jobs_runnable_idx
-- (src/scan_floor.c): every pending job there has a key (run_at, id) at or
-- above the floor; a floor at infinity: none pending (left out).
CREATE FUNCTION taskq._scan_floors(jobs regclass, lane boolean, priorities taskq.priority[],
    OUT priority taskq.priority, OUT seen bigint, OUT run_at timestamptz, OUT id bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'taskq_scan_floors' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION taskq._raise_scan_floor(jobs regclass, lane boolean, priority taskq.priority,
    seen bigint, run_at timestamptz, id bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_raise_scan_floor' LANGUAGE C VOLATILE STRICT;
-- Every write that leaves a job pending lowers its floor at commit, whoever
-- writes it (ALWAYS: also under session_replication_role = replica).
CREATE FUNCTION taskq._note_pending() RETURNS trigger
    AS 'MODULE_PATHNAME', 'taskq_note_pending' LANGUAGE C;
CREATE TRIGGER jobs_note_pending_insert BEFORE INSERT ON taskq.jobs
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION taskq._note_pending();
CREATE TRIGGER jobs_note_pending AFTER UPDATE ON taskq.jobs
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION taskq._note_pending();
ALTER TABLE taskq.jobs ENABLE ALWAYS TRIGGER jobs_note_pending_insert;
ALTER TABLE taskq.jobs ENABLE ALWAYS TRIGGER jobs_note_pending;
-- TRUNCATE drops the table's floors: a bulk load with triggers disabled
-- (pg_restore --disable-triggers) may follow.
CREATE FUNCTION taskq._forget_scan_floors() RETURNS trigger
    AS 'MODULE_PATHNAME', 'taskq_forget_scan_floors' LANGUAGE C;
CREATE TRIGGER jobs_truncated AFTER TRUNCATE ON taskq.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION taskq._forget_scan_floors();
ALTER TABLE taskq.jobs ENABLE ALWAYS TRIGGER jobs_truncated;

------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------

CREATE FUNCTION taskq._is_admin() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.pg_has_role(taskq._caller(), 'taskq_admin', 'MEMBER')
$$;

CREATE FUNCTION taskq._require_admin(action text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    IF NOT taskq._is_admin() THEN
        RAISE EXCEPTION 'permission denied to %', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only members of taskq_admin may do this.';
    END IF;
END
$$;

-- Publish one transition on channel taskq_jobs; the payload is the contract
-- of DESIGN.md (Notifications): {"id", "status", "queue", "job_type", "attempt"}.
-- A job made pending for external workers (not in_database) also announces
-- its queue on taskq_work.
CREATE FUNCTION taskq._publish(id bigint, status text, queue text, job_type text, attempt integer,
                               in_database boolean)
RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_publish_job' LANGUAGE C VOLATILE STRICT;

-- A resumed queue: {"status": "resumed", "queue"} on taskq_jobs, its name on taskq_work.
CREATE FUNCTION taskq._publish_resumed(queue text) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_publish_resumed' LANGUAGE C VOLATILE STRICT;

-- The queue's name on taskq_work: its jobs became claimable by external workers.
CREATE FUNCTION taskq._announce_work(queue text) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_announce_work_sql' LANGUAGE C VOLATILE STRICT;

-- Log one transition per job and publish it (taskq._publish).
-- errors[i] is the error of ids[i] (NULL when there is none).
CREATE FUNCTION taskq._emit(ids bigint[], message text, errors text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    sent bigint;
BEGIN
    WITH t AS (
        SELECT j.id, j.status, j.attempts, j.queue, j.job_type, j.in_database,
               errors[u.ord] AS error
        FROM unnest(ids) WITH ORDINALITY AS u(id, ord)
        JOIN taskq.jobs j ON j.id = u.id AND j.id = ANY (ids)  -- (see _complete_batch)
    ), logged AS (
        INSERT INTO taskq.job_logs (job_id, status, attempt, message, error)
        SELECT t.id, t.status, t.attempts, message, t.error FROM t
    )
    SELECT count(taskq._publish(t.id, t.status::text, t.queue, t.job_type, t.attempts,
                                t.in_database))
    FROM t
    WHERE taskq._publishing(t.status::text)
    INTO sent;
END
$$;

-- A job's "parent lock" orders linking a child to it against the job
-- finishing (success releases dependents, cancel cascades): a child takes it
-- shared while it reads its parents' status, a finishing job exclusive before
-- it looks for dependents.  An advisory lock, not the row lock, because an
-- executor holds the row lock of every job of its batch until it commits.
CREATE FUNCTION taskq._lock_parents(ids bigint[], exclusive boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- (plpgsql, not sql: its plans are kept, and every completion calls it)
    IF exclusive THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(29812, (i % 2147483647)::integer)
        FROM (SELECT DISTINCT i FROM unnest(ids) AS i ORDER BY i) s;
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(29812, (i % 2147483647)::integer)
    FROM (SELECT DISTINCT i FROM unnest(ids) AS i ORDER BY i) s;
    -- A REPEATABLE READ snapshot may predate a parent's success and never see
    -- it: share-lock the rows too, so that is a serialization failure instead
    -- of a child blocked forever behind a succeeded parent.
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM 1 FROM taskq.jobs j WHERE j.id = ANY (ids) ORDER BY j.id FOR SHARE;
    END IF;
END
$$;

-- Finishing a job looks for its dependents after taking its parent lock; only
-- a fresh snapshot (READ COMMITTED) is sure to see a child linked just before.
CREATE FUNCTION taskq._require_read_committed(action text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% requires the READ COMMITTED isolation level', action
            USING ERRCODE = 'active_sql_transaction',
                  DETAIL = format('The transaction is %s.', current_setting('transaction_isolation')),
                  HINT = 'Call it in its own READ COMMITTED transaction.';
    END IF;
END
$$;

-- A job type's lock orders submitting jobs of that type against registering
-- or unregistering its handler, which flips in_database of the waiting jobs:
-- a submit takes it shared before it looks for the handler.
CREATE FUNCTION taskq._lock_job_type(job_type text, exclusive boolean) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN exclusive THEN pg_catalog.pg_advisory_xact_lock(29813, pg_catalog.hashtext(job_type))
                ELSE pg_catalog.pg_advisory_xact_lock_shared(29813, pg_catalog.hashtext(job_type)) END
$$;

-- Fetch a job the caller may act on, locked, or fail with a clear error.
CREATE FUNCTION taskq._lock_job(job_id bigint) RETURNS taskq.jobs
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs;
BEGIN
    IF job_id IS NULL THEN
        RAISE EXCEPTION 'job id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO j FROM taskq.jobs WHERE id = job_id FOR NO KEY UPDATE;
    IF NOT FOUND OR (j.owner <> taskq._caller() AND NOT taskq._is_admin()) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN j;
END
$$;

CREATE FUNCTION taskq._check_name(what text, value text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_column
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF btrim(value, E' \t\r\n') = '' THEN
        RAISE EXCEPTION '% must not be empty', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(value) > 200 THEN
        RAISE EXCEPTION '% is longer than 200 characters', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Retry delay after attempt n: min(backoff_max, base * 2^(n-1)), with up to 20 % jitter.
-- (compared before multiplying: a backoff of centuries would overflow interval)
CREATE FUNCTION taskq._retry_delay(base interval, attempt integer) RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN base >= m / power(2, k) THEN m ELSE base * power(2, k) END
           * (1 + 0.2 * random())
    FROM (SELECT coalesce(current_setting('taskq.backoff_max', true), '1 hour')::interval AS m,
                 least(greatest(attempt, 1) - 1, 40) AS k) s
$$;

------------------------------------------------------------------------------
-- Submission
------------------------------------------------------------------------------

-- The parents of a job being submitted by owner: none NULL, each existing,
-- visible to owner and not cancelled, else the error.  Locks them against
-- concurrent completion (taskq._lock_parents); returns how many have not
-- succeeded yet.  Called by taskq._insert_job (src/submit.c).
CREATE FUNCTION taskq._check_parents(depends_on bigint[], owner regrole)
RETURNS integer
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    parents_total integer;
    unfinished integer;
    bad record;
    admin boolean := taskq._is_admin();
BEGIN
    IF array_position(depends_on, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'depends_on must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Under the parents' locks the status read next is the final word.
    PERFORM taskq._lock_parents(depends_on, false);
    SELECT count(*), count(*) FILTER (WHERE j.status <> 'succeeded')
      INTO parents_total, unfinished
      FROM taskq.jobs j
     WHERE j.id IN (SELECT DISTINCT unnest(depends_on))
       AND (admin OR j.owner = _check_parents.owner);
    IF parents_total <> (SELECT count(DISTINCT d) FROM unnest(depends_on) d) THEN
        SELECT d INTO bad FROM unnest(depends_on) d
        WHERE NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = d
                          AND (admin OR j.owner = _check_parents.owner)) LIMIT 1;
        RAISE EXCEPTION 'job % does not exist', bad.d
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = 'A job can only depend on existing jobs.';
    END IF;
    SELECT j.id INTO bad FROM taskq.jobs j
    WHERE j.id = ANY (depends_on) AND j.status = 'cancelled' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot depend on cancelled job %', bad.id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN unfinished;
END
$$;

-- Insert one validated job owned by owner, with its log row, edges and
-- notification (src/submit.c).  The job by job path of submit_many.
CREATE FUNCTION taskq._insert_job(
    job_type text, payload jsonb, priority taskq.priority, queue text,
    depends_on bigint[], run_at timestamptz, max_attempts integer, timeout interval,
    cpu_units integer, memory_mb integer, idempotency_key text, backoff interval,
    owner regrole)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'taskq_insert_job' LANGUAGE C VOLATILE;

-- In C (src/submit.c), with plans kept per session.  Not SECURITY DEFINER:
-- its statements run as the function's owner, under a search_path of
-- pg_catalog alone, without the GUC save and restore of SET clauses.
CREATE FUNCTION taskq.submit(
    job_type        text,
    payload         jsonb DEFAULT '{}',
    priority        taskq.priority DEFAULT 'normal',
    queue           text DEFAULT 'default',
    depends_on      bigint[] DEFAULT '{}',
    run_at          timestamptz DEFAULT now(),
    max_attempts    integer DEFAULT NULL,
    timeout         interval DEFAULT NULL,
    cpu_units       integer DEFAULT 1,
    memory_mb       integer DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    backoff         interval DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'taskq_submit' LANGUAGE C VOLATILE;

-- Submit many jobs in one statement.  jobs is a JSON array of objects with the
-- keys of submit(); "after" lists indexes (0-based) of earlier jobs of the same
-- batch that the job depends on.  Returns the ids in input order.
CREATE FUNCTION taskq.submit_many(jobs jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    me regrole := taskq._caller();
    default_backoff interval := coalesce(current_setting('taskq.backoff_base', true)::interval,
                                         interval '1 second');
    ids bigint[] := '{}';
    plain boolean;
    spec jsonb;
    n integer := 0;
    deps bigint[];
    idx jsonb;
    k integer;
    unknown text;
BEGIN
    IF jobs IS NULL THEN
        RAISE EXCEPTION 'jobs must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'jobs must be a JSON array of objects' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Fast path: a batch of independent, valid jobs is inserted set-wise.
    -- Anything else (dependencies, idempotency keys, an invalid job) goes
    -- job by job below, which also raises the precise error.
    plain := taskq._plain_batch(jobs);
    IF plain OR NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements(jobs) e
        WHERE jsonb_typeof(e) <> 'object'
           OR e ?| ARRAY['after', 'depends_on', 'idempotency_key']
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k
                      WHERE k NOT IN ('job_type', 'payload', 'priority', 'queue', 'run_at',
                                      'max_attempts', 'timeout', 'cpu_units', 'memory_mb', 'backoff'))
           OR coalesce(btrim(e->>'job_type', E' \t\r\n'), '') = '' OR length(e->>'job_type') > 200
           OR btrim(coalesce(e->>'queue', 'default'), E' \t\r\n') = '' OR length(e->>'queue') > 200
           OR jsonb_typeof(coalesce(e->'payload', '{}')) <> 'object'
           OR jsonb_typeof(coalesce(e->'cpu_units', '1')) <> 'number'
           OR jsonb_typeof(coalesce(e->'memory_mb', '0')) <> 'number'
           OR (e->>'cpu_units')::numeric NOT BETWEEN 1 AND taskq._max_cpu_units()
           OR (e->>'memory_mb')::numeric NOT BETWEEN 0 AND taskq._max_memory_mb()
           OR (e->>'max_attempts')::numeric < 1
           OR (e->>'timeout')::interval <= interval '0'
           OR (e->>'backoff')::interval < interval '0'
           OR NOT isfinite((e->>'run_at')::timestamptz)) THEN
        PERFORM taskq._lock_job_type(t, false)
           FROM (SELECT DISTINCT e->>'job_type' AS t FROM jsonb_array_elements(jobs) e ORDER BY 1) s;
        IF plain THEN
            ids := taskq._insert_plain_batch(jobs, me);
            IF ids IS NOT NULL THEN
                RETURN QUERY SELECT unnest(ids);
                RETURN;
            END IF;
        END IF;
        RETURN QUERY
        WITH spec AS (
            -- (casts inside coalesce: a key that is absent costs none)
            SELECT e, ord, coalesce(e->>'queue', 'default') AS queue,
                   coalesce((e->>'priority')::taskq.priority, 'normal') AS priority
              FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(e, ord)
        ), inserted AS (
            INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status, payload,
                                    max_attempts, backoff, timeout, cpu_units, memory_mb, run_at, owner,
                                    in_database)
            SELECT spec.queue, e->>'job_type', spec.priority, spec.priority,
                   'pending', coalesce(e->'payload', '{}'),
                   coalesce((e->>'max_attempts')::integer, q.default_max_attempts, 3),
                   coalesce((e->>'backoff')::interval, default_backoff),
                   coalesce((e->>'timeout')::interval, q.default_timeout),
                   coalesce((e->>'cpu_units')::integer, 1), coalesce((e->>'memory_mb')::integer, 0),
                   coalesce((e->>'run_at')::timestamptz, now()), me,
                   EXISTS (SELECT 1 FROM taskq.handlers h WHERE h.job_type = spec.e->>'job_type')
              FROM spec
              LEFT JOIN taskq.queues q ON q.name = spec.queue
             ORDER BY spec.ord      -- ids are assigned in input order
            RETURNING id, queue, job_type, in_database
        ), logged AS (
            INSERT INTO taskq.job_logs (job_id, status, attempt, message)
            SELECT i.id, 'pending', 0, 'submitted' FROM inserted i
        ), notified AS (
            SELECT count(taskq._publish(i.id, 'pending', i.queue, i.job_type, 0, i.in_database)) AS n
              FROM inserted i
             WHERE taskq._publishing('pending')
        )
        SELECT i.id FROM inserted i, notified ORDER BY i.id;
        IF EXISTS (SELECT 1 FROM taskq.handlers h
                   WHERE h.job_type IN (SELECT e->>'job_type' FROM jsonb_array_elements(jobs) e)) THEN
            PERFORM taskq._wake_on_commit();
        END IF;
        RETURN;
    END IF;

    FOR spec IN SELECT value FROM jsonb_array_elements(jobs) LOOP
        IF jsonb_typeof(spec) <> 'object' THEN
            RAISE EXCEPTION 'job % of the batch is not a JSON object', n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        SELECT key INTO unknown FROM jsonb_object_keys(spec) AS key
        WHERE key NOT IN ('job_type', 'payload', 'priority', 'queue', 'depends_on', 'after',
                          'run_at', 'max_attempts', 'timeout', 'cpu_units', 'memory_mb',
                          'idempotency_key', 'backoff')
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'job % of the batch has unknown key "%"', n, unknown
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        deps := coalesce(ARRAY(SELECT jsonb_array_elements_text(spec->'depends_on')::bigint), '{}');
        FOR idx IN SELECT value FROM jsonb_array_elements(coalesce(spec->'after', '[]')) LOOP
            k := idx::text::integer;
            IF k < 0 OR k >= n THEN
                RAISE EXCEPTION 'job % of the batch depends on batch index %, which is not an earlier job', n, k
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = '"after" may only name earlier jobs of the same batch.';
            END IF;
            deps := deps || ids[k + 1];
        END LOOP;
        ids := ids || taskq._insert_job(
            spec->>'job_type',
            coalesce(spec->'payload', '{}'),
            coalesce(spec->>'priority', 'normal')::taskq.priority,
            coalesce(spec->>'queue', 'default'),
            deps,
            coalesce((spec->>'run_at')::timestamptz, now()),
            (spec->>'max_attempts')::integer,
            (spec->>'timeout')::interval,
            coalesce((spec->>'cpu_units')::integer, 1),
            coalesce((spec->>'memory_mb')::integer, 0),
            spec->>'idempotency_key',
            (spec->>'backoff')::interval,
            me);
        n := n + 1;
    END LOOP;
    RETURN QUERY SELECT unnest(ids);
END
$$;

------------------------------------------------------------------------------
-- Dependencies
------------------------------------------------------------------------------

CREATE FUNCTION taskq.add_dependency(job_id bigint, depends_on bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    child taskq.jobs;
    parent taskq.jobs;
    path bigint[];
BEGIN
    IF job_id IS NULL OR depends_on IS NULL THEN
        RAISE EXCEPTION 'job_id and depends_on must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF job_id = depends_on THEN
        RAISE EXCEPTION 'job % cannot depend on itself', job_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Serializes graph edits: under READ COMMITTED the cycle check below then
    -- sees every committed edge; under REPEATABLE READ a concurrent edit is a
    -- serialization failure.
    UPDATE taskq.dag_lock SET version = version + 1;

    child := taskq._lock_job(job_id);
    PERFORM taskq._lock_parents(ARRAY[depends_on], false);
    SELECT * INTO parent FROM taskq.jobs j WHERE j.id = add_dependency.depends_on;
    IF NOT FOUND OR (parent.owner <> taskq._caller() AND NOT taskq._is_admin()) THEN
        RAISE EXCEPTION 'job % does not exist', depends_on USING ERRCODE = 'no_data_found';
    END IF;

    IF child.status NOT IN ('blocked', 'pending') THEN
        RAISE EXCEPTION 'job % is %, only blocked or pending jobs can get new dependencies', job_id, child.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF parent.status = 'cancelled' THEN
        RAISE EXCEPTION 'cannot depend on cancelled job %', depends_on
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF EXISTS (SELECT 1 FROM taskq.job_dependencies d
               WHERE d.job_id = add_dependency.job_id AND d.depends_on = add_dependency.depends_on) THEN
        RETURN;
    END IF;

    -- A path depends_on -> ... -> job_id through existing edges would close a cycle.
    WITH RECURSIVE up(id, path) AS (
        SELECT d.depends_on, ARRAY[add_dependency.depends_on, d.depends_on]
        FROM taskq.job_dependencies d WHERE d.job_id = add_dependency.depends_on
      UNION ALL
        SELECT d.depends_on, up.path || d.depends_on
        FROM up JOIN taskq.job_dependencies d ON d.job_id = up.id
        WHERE up.id <> add_dependency.job_id AND NOT d.depends_on = ANY (up.path)
    )
    SELECT up.path INTO path FROM up WHERE up.id = add_dependency.job_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'dependency of job % on job % would create a cycle', job_id, depends_on
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('cycle: %s', array_to_string(ARRAY[job_id] || path, ' -> '));
    END IF;

    INSERT INTO taskq.job_dependencies (job_id, depends_on) VALUES (job_id, depends_on);
    IF parent.status <> 'succeeded' THEN
        UPDATE taskq.jobs j SET unfinished_parents = j.unfinished_parents + 1,
                               status = 'blocked', updated_at = now()
        WHERE j.id = add_dependency.job_id;
        IF child.status = 'pending' THEN
            PERFORM taskq._emit(ARRAY[job_id], format('blocked by job %s', depends_on));
        END IF;
    END IF;
END
$$;

-- Dependents of succeeded jobs lose one unfinished parent each; the ones left
-- with none become pending.  Row updates re-read the latest version, so two
-- parents finishing at once cannot both miss the last decrement.
CREATE FUNCTION taskq._release_dependents(parent_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    ready bigint[];
BEGIN
    WITH d AS (
        SELECT dep.job_id, count(*)::integer AS n
        FROM taskq.job_dependencies dep
        WHERE dep.depends_on = ANY (parent_ids)
        GROUP BY dep.job_id
    ), u AS (
        UPDATE taskq.jobs j
        SET unfinished_parents = greatest(j.unfinished_parents - d.n, 0),
            status = CASE WHEN j.status = 'blocked' AND j.unfinished_parents - d.n <= 0
                          THEN 'pending'::taskq.job_status ELSE j.status END,
            run_at = CASE WHEN j.status = 'blocked' AND j.unfinished_parents - d.n <= 0
                          THEN greatest(j.run_at, now()) ELSE j.run_at END,
            updated_at = now()
        FROM d WHERE j.id = d.job_id AND j.id = ANY (ARRAY(SELECT d.job_id FROM d))
        RETURNING j.id, j.status
    )
    SELECT array_agg(u.id) INTO ready FROM u WHERE u.status = 'pending';
    IF ready IS NOT NULL THEN
        PERFORM taskq._emit(ready, 'all dependencies succeeded');
        PERFORM taskq._wake_on_commit();
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Cancel, retry, queues, handlers
------------------------------------------------------------------------------

-- Cancel one job and, transitively, its dependents (which can never run now).
-- The caller holds the job's row lock.
CREATE FUNCTION taskq._cancel_job(job_id bigint, message text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    cascaded bigint[];
    reach bigint[] := ARRAY[job_id];
    seen bigint[] := '{}';
BEGIN
    PERFORM taskq._require_read_committed('cancelling a job');
    UPDATE taskq.jobs SET status = 'cancelled', finished_at = now(), updated_at = now(),
                          lease_expires_at = NULL
    WHERE id = job_id;
    PERFORM taskq._emit(ARRAY[job_id], message);

    -- Take the parent lock of every job the cascade reaches, until no new
    -- dependent shows up: then no child can be linked to them unseen.
    WHILE reach <> seen LOOP
        PERFORM taskq._lock_parents(reach, true);
        seen := reach;
        WITH RECURSIVE down(id) AS (
            SELECT _cancel_job.job_id
          UNION
            SELECT d.job_id FROM down JOIN taskq.job_dependencies d ON d.depends_on = down.id
        )
        SELECT array_agg(id ORDER BY id) INTO reach FROM down;
    END LOOP;

    WITH locked AS (
        -- in id order, so concurrent cascades cannot deadlock
        SELECT x.id FROM taskq.jobs x
        WHERE x.id = ANY (reach) AND x.id <> _cancel_job.job_id AND x.status IN ('blocked', 'pending')
        ORDER BY x.id FOR NO KEY UPDATE OF x
    ), u AS (
        UPDATE taskq.jobs x SET status = 'cancelled', finished_at = now(), updated_at = now()
        FROM locked WHERE x.id = locked.id AND x.status IN ('blocked', 'pending')
        RETURNING x.id
    )
    SELECT array_agg(u.id ORDER BY u.id) INTO cascaded FROM u;
    IF cascaded IS NOT NULL THEN
        PERFORM taskq._emit(cascaded, format('cancelled because job %s was cancelled', job_id));
    END IF;
END
$$;

CREATE FUNCTION taskq.cancel(job_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs;
    held_by text;
    interrupted boolean := false;
BEGIN
    -- An executor holds the row lock of a job it runs until its batch commits:
    -- ask it to stop the job first, then wait for the lock.
    SELECT x.worker INTO held_by FROM taskq.jobs x
    WHERE x.id = job_id AND x.status = 'running' AND x.worker LIKE 'executor/%'
      AND (x.owner = taskq._caller() OR taskq._is_admin());
    IF held_by IS NOT NULL THEN
        interrupted := taskq._request_cancel(job_id, held_by);
    END IF;
    j := taskq._lock_job(job_id);
    IF interrupted AND j.status = 'cancelled' THEN
        RETURN;
    END IF;
    IF j.status NOT IN ('blocked', 'pending', 'running') THEN
        RAISE EXCEPTION 'job % is already %', job_id, j.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only blocked, pending or running jobs can be cancelled.';
    END IF;
    PERFORM taskq._cancel_job(job_id, 'cancelled');
END
$$;

-- Requeue failed jobs (locked by the caller) from the dead-letter queue with
-- fresh attempts; returns how many.
CREATE FUNCTION taskq._requeue_failed(ids bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    done bigint[];
BEGIN
    WITH u AS (
        UPDATE taskq.jobs j
           SET status = 'pending', attempts = 0, run_at = now(), effective_priority = j.priority,
               aged_at = NULL, finished_at = NULL, worker = NULL, lease_expires_at = NULL,
               updated_at = now()
         WHERE j.id = ANY (ids) AND j.status = 'failed'
        RETURNING j.id
    )
    SELECT array_agg(u.id ORDER BY u.id) INTO done FROM u;
    IF done IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM taskq._emit(done, 'retried from the dead-letter queue');
    PERFORM taskq._wake_on_commit();
    RETURN cardinality(done);
END
$$;

CREATE FUNCTION taskq.retry(job_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs := taskq._lock_job(job_id);
BEGIN
    IF j.status <> 'failed' THEN
        RAISE EXCEPTION 'job % is %, only failed jobs can be retried', job_id, j.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM taskq._requeue_failed(ARRAY[job_id]);
END
$$;

CREATE FUNCTION taskq.pause(queue text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM taskq._require_admin('pause a queue');
    PERFORM taskq._check_name('queue', queue);
    INSERT INTO taskq.queues (name, paused) VALUES (queue, true)
    ON CONFLICT (name) DO UPDATE SET paused = true, updated_at = now();
END
$$;

CREATE FUNCTION taskq.resume(queue text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM taskq._require_admin('resume a queue');
    PERFORM taskq._check_name('queue', queue);
    INSERT INTO taskq.queues (name, paused) VALUES (queue, false)
    ON CONFLICT (name) DO UPDATE SET paused = false, updated_at = now();
    PERFORM taskq._wake_on_commit();
    -- its pending jobs changed no status: tell listening workers to claim
    IF taskq._publishing('pending') THEN
        PERFORM taskq._publish_resumed(queue);
    END IF;
END
$$;

-- Per-queue settings; NULL leaves a setting unlimited / at the built-in default.
CREATE FUNCTION taskq.configure_queue(queue text, concurrency integer DEFAULT NULL,
                                      default_timeout interval DEFAULT NULL,
                                      default_max_attempts integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM taskq._require_admin('configure a queue');
    PERFORM taskq._check_name('queue', queue);
    IF concurrency IS NOT NULL AND concurrency < 1 THEN
        RAISE EXCEPTION 'concurrency must be at least 1, got %', concurrency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF default_timeout IS NOT NULL AND default_timeout <= interval '0' THEN
        RAISE EXCEPTION 'default_timeout must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF default_max_attempts IS NOT NULL AND default_max_attempts < 1 THEN
        RAISE EXCEPTION 'default_max_attempts must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO taskq.queues AS q (name, concurrency, default_timeout, default_max_attempts)
    VALUES (queue, concurrency, default_timeout, default_max_attempts)
    ON CONFLICT (name) DO UPDATE
        SET concurrency = excluded.concurrency, default_timeout = excluded.default_timeout,
            default_max_attempts = excluded.default_max_attempts, updated_at = now();
    PERFORM taskq._wake_on_commit();
END
$$;

CREATE FUNCTION taskq.register_handler(job_type text, handler regprocedure)
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
    IF p.prosecdef THEN
        RAISE EXCEPTION 'handler % is SECURITY DEFINER', handler
            USING ERRCODE = 'invalid_function_definition',
                  DETAIL = 'Handlers run with the rights of the role that submitted the job.';
    END IF;
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

CREATE FUNCTION taskq.unregister_handler(job_type text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    claimable text[];
BEGIN
    PERFORM taskq._require_admin('unregister a handler');
    PERFORM taskq._check_name('job_type', job_type);
    PERFORM taskq._lock_job_type(job_type, true);
    DELETE FROM taskq.handlers h WHERE h.job_type = unregister_handler.job_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no handler is registered for job type "%"', job_type
            USING ERRCODE = 'undefined_object';
    END IF;
    -- waiting jobs of this type go back to external workers
    WITH moved AS (
        UPDATE taskq.jobs j SET in_database = false, updated_at = now()
         WHERE j.job_type = unregister_handler.job_type AND j.status IN ('blocked', 'pending')
           AND j.in_database
        RETURNING j.queue, j.status
    )
    SELECT array_agg(DISTINCT moved.queue) FILTER (WHERE moved.status = 'pending')
      INTO claimable FROM moved;
    IF claimable IS NOT NULL AND taskq._publishing('pending') THEN
        PERFORM taskq._announce_work(q) FROM unnest(claimable) AS q;
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Claim and finish: shared by the in-database executors and external workers
------------------------------------------------------------------------------

-- Claim up to max_jobs runnable jobs whose resource needs fit in the budget,
-- in claim order (effective priority, run_at, id).  in_database selects the
-- job types that have a handler (executors) or the ones that do not (external
-- workers).  A job that does not fit is skipped unless it has waited longer
-- than taskq.big_job_wait: then the claim stops there, so capacity drains
-- toward it and big jobs cannot be starved by small ones.
CREATE FUNCTION taskq._claim(in_database boolean, queues text[], worker text, max_jobs integer,
                             lease interval, cpu_budget integer, memory_budget integer,
                             only_owner regrole)
RETURNS SETOF taskq.jobs
-- jit off: the candidate scan's estimated cost (the whole backlog) passes
-- jit_above_cost, and compiling it took 10-20 ms of every claim (bench/).
-- enable_sort off: a generic plan cannot tell how small LIMIT is, and sorted
-- the whole backlog instead of reading the index in claim order.
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET jit = off SET enable_sort = off AS $$
#variable_conflict use_column
DECLARE
    paused text[];
    limited text[];
    slots integer[];
    c_ids bigint[];
    c_queues text[];
    c_cpu integer[];
    c_mem integer[];
    c_run timestamptz[];
    c_cpu_max integer;
    c_mem_max integer;
    c_cpu_sum bigint;
    c_mem_sum bigint;
    picked bigint[] := '{}';
    cpu_left integer := cpu_budget;
    mem_left integer := memory_budget;
    big_wait interval := coalesce(current_setting('taskq.big_job_wait', true), '30s')::interval;
    qi integer;
    seen bigint[] := '{}';
    got integer;
    wanted integer;
    -- the clock, not now(): an executor claims at the end of a long transaction
    t timestamptz := clock_timestamp();
    lane_floor record;
    head record;
    big_job_waits boolean := false;
    prio taskq.priority;
    full_queues text[] := '{}';
BEGIN
    SELECT coalesce(array_agg(name) FILTER (WHERE paused), '{}'),
           coalesce(array_agg(name) FILTER (WHERE NOT paused AND concurrency IS NOT NULL), '{}')
      INTO paused, limited
      FROM taskq.queues;

    IF cardinality(limited) > 0 THEN
        -- Lock limited queues so concurrent claims cannot overshoot their limit.
        PERFORM 1 FROM taskq.queues WHERE name = ANY (limited) ORDER BY name FOR UPDATE;
        SELECT array_agg(greatest(q.concurrency - coalesce(r.n, 0), 0) ORDER BY q.name),
               array_agg(q.name ORDER BY q.name)
          INTO slots, limited
          FROM taskq.queues q
          LEFT JOIN (SELECT j.queue, count(*)::integer AS n FROM taskq.jobs j
                     WHERE j.status = 'running' GROUP BY j.queue) r ON r.queue = q.name
          WHERE q.name = ANY (limited);
    END IF;

    -- Candidates in claim order, locked as they are read (SKIP LOCKED: rows
    -- another worker is taking are passed over).  LIMIT sits above the lock,
    -- so only the rows returned are locked (for named queues: up to LIMIT per
    -- queue); one that does not fit stays locked until the claiming
    -- transaction ends, and a further round looks past it.  Queues at their
    -- concurrency limit are left out.
    IF cardinality(queues) = 0 THEN
        RETURN;                        -- no queue named
    END IF;
    <<priorities>>
    FOR lane_floor IN SELECT * FROM taskq._scan_floors('taskq.jobs', _claim.in_database,
                                                        enum_range(NULL::taskq.priority)) LOOP
        -- The first pending job of this priority, read from its floor: entries of
        -- jobs claimed since the last claim lie before it, dead, and are passed
        -- over once; it becomes the floor (at commit).
        prio := lane_floor.priority;
        SELECT j.run_at AS run_at, j.id AS id INTO head
          FROM taskq.jobs j
         WHERE j.status = 'pending' AND j.in_database = _claim.in_database AND j.effective_priority = prio
           AND (j.run_at, j.id) >= (coalesce(lane_floor.run_at, '-infinity'), coalesce(lane_floor.id, 0))
         ORDER BY j.run_at, j.id
         LIMIT 1;
        IF NOT FOUND THEN
            -- none pending: later claims skip this priority until one comes
            PERFORM taskq._raise_scan_floor('taskq.jobs', _claim.in_database, prio, lane_floor.seen,
                                            'infinity', 0);
            CONTINUE;
        END IF;
        PERFORM taskq._raise_scan_floor('taskq.jobs', _claim.in_database, prio, lane_floor.seen,
                                        head.run_at, head.id);
        CONTINUE WHEN head.run_at > t;     -- none of this priority is due yet
        FOR round IN 1..4 LOOP
            got := 0;
            wanted := max_jobs - cardinality(picked);
            IF cardinality(limited) > 0 THEN
                full_queues := ARRAY(SELECT limited[i] FROM generate_subscripts(limited, 1) i
                                     WHERE slots[i] <= 0);
            END IF;
            -- The candidates come as arrays from one statement: fetching them
            -- one by one from a cursor cost more than updating them.
            IF queues IS NULL OR in_database THEN
                SELECT coalesce(array_agg(c.id ORDER BY c.run_at, c.id), '{}'),
                       array_agg(c.queue ORDER BY c.run_at, c.id),
                       array_agg(c.cpu_units ORDER BY c.run_at, c.id),
                       array_agg(c.memory_mb ORDER BY c.run_at, c.id),
                       array_agg(c.run_at ORDER BY c.run_at, c.id),
                       max(c.cpu_units), max(c.memory_mb), sum(c.cpu_units), sum(c.memory_mb)
                  INTO c_ids, c_queues, c_cpu, c_mem, c_run, c_cpu_max, c_mem_max, c_cpu_sum, c_mem_sum
                  FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at
                          FROM taskq.jobs j
                         WHERE j.status = 'pending' AND j.run_at <= t
                           AND j.effective_priority = prio AND (j.run_at, j.id) >= (head.run_at, head.id)
                           AND (queues IS NULL OR j.queue = ANY (queues))
                           AND NOT (j.queue = ANY (paused)) AND NOT (j.queue = ANY (full_queues))
                           AND (only_owner IS NULL OR j.owner = only_owner)
                           AND j.in_database = _claim.in_database
                           AND (round = 1 OR j.id <> ALL (seen))
                         ORDER BY j.run_at, j.id
                         LIMIT wanted
                         FOR NO KEY UPDATE OF j SKIP LOCKED) c;
            ELSE
                -- An external worker naming its queues reads each queue's own
                -- range of jobs_runnable_queue_idx, never other queues' backlog:
                -- one subquery per queue, its name a literal, so that the plan is
                -- made for it (a generic plan, taking any queue for as common as
                -- the average one, may read the lane index past a big backlog).
                EXECUTE
                    'SELECT coalesce(array_agg(c.id ORDER BY c.run_at, c.id), ''{}''),'
                    '       array_agg(c.queue ORDER BY c.run_at, c.id),'
                    '       array_agg(c.cpu_units ORDER BY c.run_at, c.id),'
                    '       array_agg(c.memory_mb ORDER BY c.run_at, c.id),'
                    '       array_agg(c.run_at ORDER BY c.run_at, c.id),'
                    '       max(c.cpu_units), max(c.memory_mb), sum(c.cpu_units), sum(c.memory_mb)'
                    '  FROM (SELECT u.* FROM ('
                    || (SELECT string_agg(format(
                           'SELECT * FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at'
                           '  FROM taskq.jobs j'
                           ' WHERE j.status = ''pending'' AND NOT j.in_database AND j.queue = %L'
                           '   AND j.run_at <= $1 AND j.effective_priority = $2'
                           '   AND (j.run_at, j.id) >= ($3, $4)'
                           '   AND NOT (j.queue = ANY ($5)) AND NOT (j.queue = ANY ($6))'
                           '   AND ($7 IS NULL OR j.owner = $7) AND ($8 = 1 OR j.id <> ALL ($9))'
                           ' ORDER BY j.run_at, j.id LIMIT $10'
                           ' FOR NO KEY UPDATE OF j SKIP LOCKED) AS q%s', name, n), ' UNION ALL ')
                        FROM (SELECT name, row_number() OVER () AS n
                                FROM (SELECT DISTINCT name FROM unnest(queues) AS name) d) named)
                    || ') AS u ORDER BY u.run_at, u.id LIMIT $10) AS c'
                    INTO c_ids, c_queues, c_cpu, c_mem, c_run, c_cpu_max, c_mem_max, c_cpu_sum, c_mem_sum
                    USING t, prio, head.run_at, head.id, paused, full_queues, only_owner, round,
                          seen, wanted;
            END IF;
            got := cardinality(c_ids);
            seen := seen || c_ids;
            IF got > 0 AND NOT (c_queues && limited)
               AND ((in_database AND c_cpu_max <= cpu_budget AND c_mem_max <= memory_budget)
                    OR (NOT in_database AND c_cpu_sum <= cpu_left AND c_mem_sum <= mem_left)) THEN
                -- the common case: every candidate fits, no queue limit applies
                picked := picked || c_ids;
                IF NOT in_database THEN
                    cpu_left := cpu_left - c_cpu_sum;
                    mem_left := mem_left - c_mem_sum;
                END IF;
            ELSE
                FOR i IN 1..got LOOP
                    qi := array_position(limited, c_queues[i]);
                    IF qi IS NOT NULL AND slots[qi] <= 0 THEN
                        CONTINUE;
                    END IF;
                    -- An executor runs its batch one job at a time, so each job must fit the
                    -- budget on its own; an external worker runs its jobs side by side.
                    IF (in_database AND (c_cpu[i] > cpu_budget OR c_mem[i] > memory_budget))
                       OR (NOT in_database AND (c_cpu[i] > cpu_left OR c_mem[i] > mem_left)) THEN
                        IF in_database AND c_run[i] < t - big_wait THEN
                            big_job_waits := true;
                            EXIT;
                        END IF;
                        CONTINUE;
                    END IF;
                    picked := picked || c_ids[i];
                    IF NOT in_database THEN
                        cpu_left := cpu_left - c_cpu[i];
                        mem_left := mem_left - c_mem[i];
                    END IF;
                    IF qi IS NOT NULL THEN
                        slots[qi] := slots[qi] - 1;
                    END IF;
                END LOOP;
            END IF;
            EXIT priorities WHEN big_job_waits;
            -- fewer than asked for: none is left unlocked to look past
            EXIT WHEN got < wanted OR cardinality(picked) >= max_jobs;
        END LOOP;
        EXIT WHEN cardinality(picked) >= max_jobs;
    END LOOP;

    IF cardinality(picked) = 0 THEN
        RETURN;
    END IF;

    -- Take the picked (and locked) jobs, log and publish, in one statement.
    RETURN QUERY
    WITH taken AS (
        UPDATE taskq.jobs j
           SET status = 'running', attempts = j.attempts + 1, worker = _claim.worker,
               started_at = t, updated_at = t,
               lease_expires_at = t + lease
         WHERE j.id = ANY (picked)
        RETURNING j.*
    ), logged AS (
        INSERT INTO taskq.job_logs (job_id, status, attempt, message)
        SELECT taken.id, 'running', taken.attempts, 'claimed by ' || _claim.worker FROM taken
    ), notified AS (
        SELECT count(taskq._publish(taken.id, 'running', taken.queue, taken.job_type,
                                    taken.attempts, taken.in_database)) AS n
          FROM taken
         WHERE taskq._publishing('running')
    )
    SELECT taken.* FROM taken, notified;
END
$$;

-- Record a success; fenced on the claim (worker and attempt), so a job that
-- was cancelled, recovered or re-claimed meanwhile is left alone.  Returns
-- whether the job was still held.
CREATE FUNCTION taskq._succeed(job_id bigint, worker text, attempt integer, result jsonb)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    UPDATE taskq.jobs j
       SET status = 'succeeded', result = _succeed.result, finished_at = clock_timestamp(),
           updated_at = clock_timestamp(), lease_expires_at = NULL
     WHERE j.id = job_id AND j.status = 'running' AND j.worker = _succeed.worker
       AND j.attempts = attempt;
    RETURN FOUND;
END
$$;

-- Record many successes of one executor (which holds their row locks): the
-- updates, their log rows and notifications in one statement.  Only the
-- executors call it, and their sessions have the plan settings already.
CREATE FUNCTION taskq._complete_batch(ids bigint[], worker text, results jsonb[])
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    done bigint[];
BEGIN
    -- (j.id = ANY (ids) repeats the join so that any plan, even one made on
    -- an empty table, probes the primary key instead of reading an index whole)
    WITH u AS (
        UPDATE taskq.jobs j
           SET status = 'succeeded', result = r.result, finished_at = clock_timestamp(),
               updated_at = clock_timestamp(), lease_expires_at = NULL
          FROM unnest(ids, results) AS r(id, result)
         WHERE j.id = r.id AND j.id = ANY (ids)
           AND j.status = 'running' AND j.worker = _complete_batch.worker
        RETURNING j.id, j.attempts, j.queue, j.job_type, j.in_database
    ), logged AS (
        INSERT INTO taskq.job_logs (job_id, status, attempt, message)
        SELECT u.id, 'succeeded', u.attempts, 'succeeded' FROM u
    ), notified AS (
        SELECT count(taskq._publish(u.id, 'succeeded', u.queue, u.job_type, u.attempts,
                                    u.in_database)) AS n
          FROM u
         WHERE taskq._publishing('succeeded')
    )
    SELECT array_agg(u.id) INTO done FROM u, notified;
    IF done IS NOT NULL THEN
        PERFORM taskq._release_after_success(done);
    END IF;
END
$$;

-- Publish successes recorded by the caller: log, notify, release dependents.
CREATE FUNCTION taskq._succeeded(ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    IF cardinality(ids) > 0 THEN
        PERFORM taskq._emit(ids, 'succeeded');
        PERFORM taskq._release_after_success(ids);
    END IF;
END
$$;

-- Dependents of jobs that just succeeded lose a parent, under the parents'
-- locks so that a child linked an instant before is seen.
CREATE FUNCTION taskq._release_after_success(ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM taskq._require_read_committed('completing a job');
    PERFORM taskq._lock_parents(ids, true);
    PERFORM taskq._release_dependents(ids);
END
$$;

-- Record failed attempts (fenced like _succeed): retry after backoff while
-- attempts are left and the error is retryable, else dead-letter.  A
-- give_back attempt (shutdown) does not count.  Returns the ids recorded.
CREATE FUNCTION taskq._fail(ids bigint[], worker text, attempts integer[], errors text[],
                            retryable boolean[], give_back boolean DEFAULT false)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    done bigint[];
    errs text[];
    dead bigint[];
    dead_errs text[];
BEGIN
    WITH f AS (
        SELECT u.id, u.attempt, u.error, u.retryable
        FROM unnest(ids, attempts, errors, retryable) AS u(id, attempt, error, retryable)
    ), upd AS (
        UPDATE taskq.jobs j
           SET status = CASE WHEN give_back OR (f.retryable AND j.attempts < j.max_attempts)
                             THEN 'pending' ELSE 'failed' END::taskq.job_status,
               attempts = CASE WHEN give_back THEN j.attempts - 1 ELSE j.attempts END,
               run_at = CASE WHEN give_back THEN j.run_at          -- keeps its place in line
                             WHEN f.retryable AND j.attempts < j.max_attempts
                             THEN clock_timestamp() + taskq._retry_delay(j.backoff, j.attempts)
                             ELSE j.run_at END,
               finished_at = CASE WHEN give_back OR (f.retryable AND j.attempts < j.max_attempts)
                                  THEN NULL ELSE clock_timestamp() END,
               last_error = f.error, worker = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
          FROM f
         WHERE j.id = f.id AND j.id = ANY (ids) AND j.status = 'running' AND j.worker = _fail.worker
           AND j.attempts = f.attempt
        RETURNING j.id, f.error, j.status
    )
    SELECT array_agg(upd.id ORDER BY upd.id), array_agg(upd.error ORDER BY upd.id),
           array_agg(upd.id ORDER BY upd.id) FILTER (WHERE upd.status = 'failed'),
           array_agg(upd.error ORDER BY upd.id) FILTER (WHERE upd.status = 'failed')
      INTO done, errs, dead, dead_errs FROM upd;
    IF done IS NOT NULL THEN
        IF give_back THEN
            PERFORM taskq._emit(done, 'given back to the queue (not counted as an attempt)', errs);
        ELSE
            PERFORM taskq._emit(ARRAY(SELECT u FROM unnest(done) u WHERE u <> ALL (coalesce(dead, '{}'))),
                                'attempt failed, will retry',
                                ARRAY(SELECT e FROM unnest(done, errs) AS x(u, e) WHERE u <> ALL (coalesce(dead, '{}'))));
            IF dead IS NOT NULL THEN
                PERFORM taskq._emit(dead, 'attempt failed, dead-lettered', dead_errs);
            END IF;
        END IF;
        PERFORM taskq._wake_on_commit();
    END IF;
    RETURN coalesce(done, '{}');
END
$$;

-- Put back jobs whose holder is gone: external workers whose lease expired,
-- executors that are no longer alive.  The lost attempt counts; a job out of
-- attempts is dead-lettered.  Bounded per call.
CREATE FUNCTION taskq._recover(live_executor_workers text[], listed_at timestamptz,
                               batch integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    lost record;
    n integer := 0;
    ids bigint[] := '{}';
    workers text[] := '{}';
    attempts integer[] := '{}';
    errors text[] := '{}';
    flags boolean[] := '{}';
BEGIN
    FOR lost IN
        SELECT j.id, j.worker, j.attempts,
               CASE WHEN j.worker LIKE 'executor/%' THEN 'executor ' || j.worker || ' died while running the job'
                    ELSE 'lease of worker ' || coalesce(j.worker, '?') || ' expired' END AS error
        FROM taskq.jobs j
        WHERE j.status = 'running'
          AND ((j.worker LIKE 'executor/%' AND j.started_at < listed_at
                AND NOT (j.worker = ANY (live_executor_workers)))
            OR (j.worker NOT LIKE 'executor/%' AND j.lease_expires_at < now()))
        ORDER BY j.id
        LIMIT batch
        FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        ids := ids || lost.id;
        workers := workers || lost.worker;
        attempts := attempts || lost.attempts;
        errors := errors || lost.error;
        flags := flags || true;
    END LOOP;
    -- _fail is fenced on (worker, attempt); call it per distinct worker.
    FOR lost IN SELECT DISTINCT w FROM unnest(workers) w LOOP
        n := n + cardinality(taskq._fail(
            ARRAY(SELECT i FROM unnest(ids, workers) u(i, w) WHERE u.w = lost.w),
            lost.w,
            ARRAY(SELECT a FROM unnest(attempts, workers) u(a, w) WHERE u.w = lost.w),
            ARRAY(SELECT e FROM unnest(errors, workers) u(e, w) WHERE u.w = lost.w),
            ARRAY(SELECT f FROM unnest(flags, workers) u(f, w) WHERE u.w = lost.w)));
    END LOOP;
    RETURN n;
END
$$;

-- Raise jobs that waited taskq.aging_interval at their effective priority by
-- one level.  Bounded per call.
CREATE FUNCTION taskq._age_priorities(batch integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    step interval := coalesce(current_setting('taskq.aging_interval', true), '5min')::interval;
    n integer;
BEGIN
    IF step <= interval '0' THEN
        RETURN 0;
    END IF;
    -- the oldest of each lane and priority, read by the claim index
    WITH c AS (
        SELECT o.id FROM (VALUES (true), (false)) AS lane(d),
             unnest(ARRAY['high', 'normal', 'low']::taskq.priority[]) AS p,
             LATERAL (SELECT j.id, j.aged_at, j.run_at FROM taskq.jobs j
                      WHERE j.status = 'pending' AND j.in_database = lane.d
                        AND j.effective_priority = p AND j.run_at <= now() - step
                      ORDER BY j.run_at LIMIT batch) o
        WHERE coalesce(o.aged_at, o.run_at) <= now() - step
    ), locked AS (
        SELECT j.id FROM taskq.jobs j JOIN c USING (id)
        WHERE j.status = 'pending'
        ORDER BY j.id LIMIT batch
        FOR NO KEY UPDATE OF j SKIP LOCKED
    )
    UPDATE taskq.jobs j
       SET effective_priority = (enum_range(NULL::taskq.priority))
                                [array_position(enum_range(NULL::taskq.priority), j.effective_priority) - 1],
           aged_at = now(), updated_at = now()
      FROM locked WHERE j.id = locked.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Delete finished jobs (and their edges and logs) older than taskq.retention,
-- a small batch per call.
CREATE FUNCTION taskq._purge_finished(batch integer DEFAULT 500) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    keep interval := coalesce(current_setting('taskq.retention', true), '7 days')::interval;
    ids bigint[];
BEGIN
    IF keep < interval '0' THEN
        RETURN 0;
    END IF;
    SELECT array_agg(j.id) INTO ids FROM (
        SELECT j.id FROM taskq.jobs j
        WHERE j.finished_at < now() - keep AND j.status IN ('succeeded', 'failed', 'cancelled')
          -- a failed parent still holds its blocked dependents
          AND NOT EXISTS (SELECT 1 FROM taskq.job_dependencies d JOIN taskq.jobs c ON c.id = d.job_id
                          WHERE d.depends_on = j.id AND c.status IN ('blocked', 'pending', 'running'))
        ORDER BY j.finished_at LIMIT batch
        FOR UPDATE SKIP LOCKED) j;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM taskq.job_logs WHERE job_id = ANY (ids);
    DELETE FROM taskq.jobs WHERE id = ANY (ids);
    RETURN cardinality(ids);
END
$$;

-- Earliest future run_at among pending jobs: how long an idle executor may sleep.
CREATE FUNCTION taskq._next_run_at() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- each priority read from its scan floor (no pending job lies below it),
    -- so an idle executor does not walk the entries of every job claimed
    -- since the last vacuum; plpgsql keeps the plan (an idle executor asks
    -- after every empty claim)
    RETURN (SELECT min(t) FROM (
        SELECT (SELECT j.run_at FROM taskq.jobs j
                WHERE j.status = 'pending' AND j.in_database AND j.effective_priority = f.priority
                  AND (j.run_at, j.id) >= (coalesce(f.run_at, '-infinity'), coalesce(f.id, 0))
                ORDER BY j.run_at, j.id LIMIT 1) AS t
        FROM taskq._scan_floors('taskq.jobs', true, enum_range(NULL::taskq.priority)) f) s);
END
$$;

------------------------------------------------------------------------------
-- External workers
------------------------------------------------------------------------------

CREATE FUNCTION taskq._can_work_any() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.pg_has_role(taskq._caller(), 'taskq_admin', 'MEMBER')
        OR pg_catalog.pg_has_role(taskq._caller(), 'taskq_worker', 'MEMBER')
$$;

CREATE FUNCTION taskq.claim(queues text[], worker text, max_jobs integer DEFAULT 1,
                            lease interval DEFAULT '5 minutes',
                            cpu_units integer DEFAULT NULL, memory_mb integer DEFAULT NULL)
RETURNS SETOF taskq.jobs
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM taskq._check_name('worker', worker);
    IF worker LIKE 'executor/%' THEN
        RAISE EXCEPTION 'worker names starting with "executor/" are reserved'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_jobs IS NULL OR max_jobs < 1 THEN
        RAISE EXCEPTION 'max_jobs must be at least 1, got %', coalesce(max_jobs::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease IS NULL OR lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be positive, got %', coalesce(lease::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cpu_units IS NOT NULL AND cpu_units <= 0 THEN
        RAISE EXCEPTION 'cpu_units must be positive, got %', cpu_units USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF memory_mb IS NOT NULL AND memory_mb < 0 THEN
        RAISE EXCEPTION 'memory_mb must not be negative, got %', memory_mb USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM taskq._claim(false, queues, worker, least(max_jobs, 10000), lease,
                                            coalesce(cpu_units, 2147483647),
                                            coalesce(memory_mb, 2147483647),
                                            CASE WHEN taskq._can_work_any() THEN NULL ELSE taskq._caller() END);
END
$$;

-- The job as held by worker, locked, or a clear error (fencing).
CREATE FUNCTION taskq._held_job(job_id bigint, worker text) RETURNS taskq.jobs
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs;
BEGIN
    IF job_id IS NULL THEN
        RAISE EXCEPTION 'job id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO j FROM taskq.jobs WHERE id = job_id FOR NO KEY UPDATE;
    IF NOT FOUND OR (j.owner <> taskq._caller() AND NOT taskq._can_work_any()) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
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

CREATE FUNCTION taskq.complete(job_id bigint, result jsonb DEFAULT NULL, worker text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs := taskq._held_job(job_id, worker);
BEGIN
    PERFORM taskq._succeed(job_id, j.worker, j.attempts, result);
    PERFORM taskq._succeeded(ARRAY[job_id]);
END
$$;

-- complete() for many jobs at once, set-wise: one update, one insert of log
-- rows, the notifications, dependents released.  All or nothing: if any id is
-- not held as complete() requires, the call fails with complete()'s error for
-- the first such id (in array order) and nothing is written.  results[i] is
-- the result of job_ids[i] (NULL: no results).  Returns how many succeeded.
CREATE FUNCTION taskq.complete_many(job_ids bigint[], results jsonb[] DEFAULT NULL,
                                    worker text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(job_ids);
    me regrole := taskq._caller();
    any_job boolean := taskq._can_work_any();
    bad bigint;
    done bigint[];
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
    PERFORM 1 FROM taskq.jobs j WHERE j.id = ANY (job_ids) ORDER BY j.id FOR NO KEY UPDATE;
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
    WITH u AS (
        UPDATE taskq.jobs j
           SET status = 'succeeded', result = r.result, finished_at = clock_timestamp(),
               updated_at = clock_timestamp(), lease_expires_at = NULL
          FROM unnest(job_ids, results) AS r(id, result)
         WHERE j.id = r.id AND j.id = ANY (job_ids) AND j.status = 'running'
        RETURNING j.id
    )
    SELECT array_agg(u.id) INTO done FROM u;
    PERFORM taskq._succeeded(done);
    RETURN cardinality(done);
END
$$;

CREATE FUNCTION taskq.fail(job_id bigint, error text, retryable boolean DEFAULT true,
                           worker text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs := taskq._held_job(job_id, worker);
BEGIN
    PERFORM taskq._fail(ARRAY[job_id], j.worker, ARRAY[j.attempts],
                        ARRAY[coalesce(error, 'failed without an error message')],
                        ARRAY[coalesce(retryable, true)]);
END
$$;

-- Extend the lease by extend (default: the lease's original length).
CREATE FUNCTION taskq.heartbeat(job_id bigint, worker text DEFAULT NULL, extend interval DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs := taskq._held_job(job_id, worker);
    until timestamptz;
BEGIN
    IF extend IS NOT NULL AND extend <= interval '0' THEN
        RAISE EXCEPTION 'extend must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A running job's updated_at is its claim or last heartbeat, so this is the
    -- last lease's length (measuring from started_at would grow it each beat).
    UPDATE taskq.jobs
       SET lease_expires_at = now() + coalesce(extend, j.lease_expires_at - j.updated_at),
           updated_at = now()
     WHERE id = job_id
    RETURNING lease_expires_at INTO until;
    RETURN until;
END
$$;

------------------------------------------------------------------------------
-- Waiting
------------------------------------------------------------------------------

-- Wait until every job is finished (succeeded, failed or cancelled) or the
-- timeout passes; true when all finished.  Needs READ COMMITTED to see progress.
CREATE FUNCTION taskq.wait(job_ids bigint[], timeout interval DEFAULT '1 minute')
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    deadline timestamptz := clock_timestamp() + coalesce(timeout, '1 minute');
    me regrole := taskq._caller();
    admin boolean := taskq._is_admin();
    nap float8 := 0.001;
BEGIN
    IF job_ids IS NULL THEN
        RAISE EXCEPTION 'job_ids must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    LOOP
        IF NOT EXISTS (SELECT 1 FROM taskq.jobs j
                       WHERE j.id = ANY (job_ids) AND (admin OR j.owner = me)
                         AND j.status IN ('blocked', 'pending', 'running')) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(nap);
        nap := least(nap * 2, 0.05);
    END LOOP;
END
$$;

------------------------------------------------------------------------------
-- Observability
------------------------------------------------------------------------------

-- Views run as the caller, so row-level security shows each role its own jobs.
CREATE VIEW taskq.dead_letter_queue WITH (security_invoker) AS
    SELECT id, queue, job_type, priority, payload, last_error, attempts, max_attempts,
           owner, created_at, finished_at
    FROM taskq.jobs WHERE status = 'failed';

CREATE VIEW taskq.queue_depth WITH (security_invoker) AS
    SELECT queue, priority, status, count(*) AS jobs
    FROM taskq.jobs
    WHERE status IN ('blocked', 'pending', 'running')
    GROUP BY queue, priority, status;

CREATE VIEW taskq.workers AS
    SELECT * FROM taskq._worker_slots();

CREATE VIEW taskq.resources AS
    SELECT * FROM taskq._resources();

CREATE FUNCTION taskq._rates(
    OUT window_minutes integer, OUT claimed_per_s float8,
    OUT succeeded_per_s float8, OUT failed_per_s float8)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'taskq_rates' LANGUAGE C VOLATILE;

-- Executor throughput over the last 1, 5 and 15 minutes, from counters in
-- shared memory (no table scan).  failed_per_s counts failed attempts.
CREATE VIEW taskq.throughput AS
    SELECT * FROM taskq._rates();

-- Age of the oldest job that could run now: one index probe per priority.
CREATE FUNCTION taskq._oldest_runnable_age() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT now() - min(t) FROM (
        SELECT (SELECT j.run_at FROM taskq.jobs j
                WHERE j.status = 'pending' AND j.in_database = lane.d AND j.effective_priority = p
                  AND j.run_at <= now()
                ORDER BY j.run_at LIMIT 1) AS t
        FROM unnest(enum_range(NULL::taskq.priority)) p, (VALUES (true), (false)) AS lane(d)) s
$$;

-- Wait (run_at -> start) and run (start -> finish) time percentiles of the
-- jobs finished in the last `since`, per queue.
CREATE FUNCTION taskq.latency(since interval DEFAULT '15 minutes')
RETURNS TABLE (queue text, jobs bigint,
               wait_p50 interval, wait_p95 interval, wait_p99 interval,
               run_p50 interval, run_p95 interval, run_p99 interval)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT j.queue, count(*),
           percentile_cont(0.50) WITHIN GROUP (ORDER BY j.started_at - j.run_at),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY j.started_at - j.run_at),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY j.started_at - j.run_at),
           percentile_cont(0.50) WITHIN GROUP (ORDER BY j.finished_at - j.started_at),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY j.finished_at - j.started_at),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY j.finished_at - j.started_at)
    FROM taskq.jobs j
    WHERE j.finished_at > now() - since AND j.started_at IS NOT NULL
    GROUP BY j.queue
$$;

-- Every metric as (name, labels, value): the source of metrics_prometheus().
CREATE FUNCTION taskq.metrics()
RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'taskq_jobs', jsonb_build_object('queue', d.queue, 'priority', d.priority, 'status', d.status),
           d.jobs::float8
      FROM taskq.queue_depth d
    UNION ALL
    SELECT 'taskq_dead_letter_jobs', '{}'::jsonb, (SELECT count(*) FROM taskq.jobs WHERE status = 'failed')::float8
    UNION ALL
    SELECT m.name, jsonb_build_object('window', t.window_minutes || 'm'), m.v
      FROM taskq.throughput t,
           LATERAL (VALUES ('taskq_claimed_per_second', t.claimed_per_s),
                           ('taskq_succeeded_per_second', t.succeeded_per_s),
                           ('taskq_failed_attempts_per_second', t.failed_per_s)) m(name, v)
     WHERE m.v IS NOT NULL
    UNION ALL
    SELECT m.name, jsonb_build_object('queue', l.queue, 'quantile', m.q), extract(epoch FROM m.v)
      FROM taskq.latency() l,
           LATERAL (VALUES ('taskq_wait_seconds', '0.5', l.wait_p50), ('taskq_wait_seconds', '0.95', l.wait_p95),
                           ('taskq_wait_seconds', '0.99', l.wait_p99), ('taskq_run_seconds', '0.5', l.run_p50),
                           ('taskq_run_seconds', '0.95', l.run_p95), ('taskq_run_seconds', '0.99', l.run_p99)) m(name, q, v)
    UNION ALL
    SELECT m.name, '{}'::jsonb, m.v::float8
      FROM taskq._resources() r,
           LATERAL (VALUES ('taskq_cpu_units_used', r.cpu_units_used), ('taskq_cpu_units_max', r.cpu_units_max),
                           ('taskq_memory_mb_used', r.memory_mb_used), ('taskq_memory_mb_max', r.memory_mb_max)) m(name, v)
    UNION ALL
    SELECT 'taskq_workers', jsonb_build_object('kind', w.kind, 'state', w.state), count(*)::float8
      FROM taskq._worker_slots() w GROUP BY w.kind, w.state
    UNION ALL
    SELECT 'taskq_oldest_runnable_age_seconds', '{}'::jsonb,
           coalesce(extract(epoch FROM taskq._oldest_runnable_age()), 0)::float8
$$;

-- Prometheus text exposition of taskq.metrics().
CREATE FUNCTION taskq.metrics_prometheus() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(string_agg(line, E'\n' ORDER BY metric, ord), '') || E'\n'
    FROM (
        SELECT m.metric, 0 AS ord, format('# TYPE %s gauge', m.metric) AS line
          FROM (SELECT DISTINCT metric FROM taskq.metrics()) m
        UNION ALL
        SELECT m.metric, 1,
               m.metric ||
               coalesce('{' || (SELECT string_agg(format('%s="%s"', k,
                                                        replace(replace(v, '\', '\\'), '"', '\"')), ',' ORDER BY k)
                                FROM jsonb_each_text(m.labels) AS e(k, v)) || '}', '') ||
               ' ' || m.value::text
          FROM taskq.metrics() m
    ) s
$$;

-- One row per check: ok, warn or fail, with a message.
CREATE FUNCTION taskq.health()
RETURNS TABLE (check_name text, status text, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    launchers integer;
    executors integer;
    wanted integer := coalesce(current_setting('taskq.workers', true), '0')::integer;
    oldest interval := taskq._oldest_runnable_age();
    usage float8 := pg_notification_queue_usage();
    limit_ float8 := taskq._notify_queue_limit();
    dead bigint;
    stuck bigint;
    live bigint;
    dead_tup bigint;
    horizon interval;
BEGIN
    SELECT count(*) FILTER (WHERE kind = 'launcher'), count(*) FILTER (WHERE kind = 'executor')
      INTO launchers, executors FROM taskq._worker_slots();
    check_name := 'launcher';
    IF launchers > 0 THEN status := 'ok'; message := 'launcher is running';
    ELSE status := 'fail'; message := 'no launcher: is taskq in shared_preload_libraries and taskq.database this database?';
    END IF;
    RETURN NEXT;

    check_name := 'executors';
    IF executors >= wanted THEN status := 'ok'; message := format('%s of %s executors running', executors, wanted);
    ELSIF executors > 0 THEN status := 'warn'; message := format('only %s of %s executors running', executors, wanted);
    ELSE status := 'fail'; message := format('none of %s executors running', wanted);
    END IF;
    RETURN NEXT;

    check_name := 'oldest_runnable_job';
    IF oldest IS NULL OR oldest < interval '1 minute' THEN
        status := 'ok';
        message := CASE WHEN oldest IS NULL THEN 'no job is waiting to run'
                        ELSE format('oldest runnable job has waited %s', date_trunc('second', oldest)) END;
    ELSIF oldest < interval '15 minutes' THEN
        status := 'warn'; message := format('oldest runnable job has waited %s', date_trunc('second', oldest));
    ELSE
        status := 'fail'; message := format('oldest runnable job has waited %s', date_trunc('second', oldest));
    END IF;
    RETURN NEXT;

    check_name := 'notification_queue';
    status := CASE WHEN usage < limit_ / 2 THEN 'ok' WHEN usage < limit_ THEN 'warn' ELSE 'fail' END;
    message := format('NOTIFY queue %s%% full', round((usage * 100)::numeric, 1));
    IF usage >= limit_ THEN
        message := message || format(': a listener is not reading its notifications; taskq stopped publishing at %s%% (taskq.notify_queue_limit)',
                                     round((limit_ * 100)::numeric, 1));
    ELSIF usage >= limit_ / 2 THEN
        message := message || format(': a listener is not reading its notifications; taskq stops publishing at %s%% (taskq.notify_queue_limit)',
                                     round((limit_ * 100)::numeric, 1));
    END IF;
    RETURN NEXT;

    SELECT count(*) INTO dead FROM taskq.jobs WHERE status = 'failed';
    check_name := 'dead_letter_queue';
    status := CASE WHEN dead = 0 THEN 'ok' ELSE 'warn' END;
    message := format('%s failed jobs in the dead-letter queue', dead);
    RETURN NEXT;

    SELECT count(DISTINCT d.job_id) INTO stuck
      FROM taskq.job_dependencies d
      JOIN taskq.jobs p ON p.id = d.depends_on AND p.status = 'failed'
      JOIN taskq.jobs c ON c.id = d.job_id AND c.status = 'blocked';
    check_name := 'blocked_by_failure';
    status := CASE WHEN stuck = 0 THEN 'ok' ELSE 'warn' END;
    message := format('%s jobs blocked by a failed parent (retry or cancel the parent)', stuck);
    RETURN NEXT;

    SELECT s.n_live_tup, s.n_dead_tup INTO live, dead_tup
      FROM pg_stat_user_tables s WHERE s.relid = 'taskq.jobs'::regclass;
    SELECT max(now() - a.xact_start) INTO horizon
      FROM pg_stat_activity a WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid();
    check_name := 'vacuum';
    IF coalesce(horizon, interval '0') > interval '1 hour' THEN
        status := 'fail';
    ELSIF coalesce(horizon, interval '0') > interval '5 minutes'
          OR coalesce(dead_tup, 0) > 10 * coalesce(live, 0) + 100000 THEN
        status := 'warn';
    ELSE
        status := 'ok';
    END IF;
    message := format('taskq.jobs: %s live, %s dead tuples; oldest snapshot held %s',
                      coalesce(live, 0), coalesce(dead_tup, 0),
                      coalesce(date_trunc('second', horizon)::text, 'by nobody'));
    RETURN NEXT;
END
$$;

------------------------------------------------------------------------------
-- Dead-letter queue administration
------------------------------------------------------------------------------

-- Retry every failed job that matches the filters (NULL matches all); returns
-- how many.  Each role retries only its own jobs unless it is taskq_admin.
CREATE FUNCTION taskq.retry_failed(queue text DEFAULT NULL, job_type text DEFAULT NULL,
                                   error_like text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(c.id) INTO ids FROM (
        SELECT j.id FROM taskq.jobs j
        WHERE j.status = 'failed'
          AND (retry_failed.queue IS NULL OR j.queue = retry_failed.queue)
          AND (retry_failed.job_type IS NULL OR j.job_type = retry_failed.job_type)
          AND (error_like IS NULL OR j.last_error LIKE error_like)
          AND (j.owner = taskq._caller() OR taskq._is_admin())
        ORDER BY j.id FOR NO KEY UPDATE) c;
    RETURN taskq._requeue_failed(coalesce(ids, '{}'));
END
$$;

-- Delete failed jobs that match (and that no blocked job still waits on).
CREATE FUNCTION taskq.purge_failed(older_than interval DEFAULT NULL, queue text DEFAULT NULL,
                                   job_type text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(j.id) INTO ids FROM (
        SELECT j.id FROM taskq.jobs j
        WHERE j.status = 'failed'
          AND (older_than IS NULL OR j.finished_at < now() - older_than)
          AND (purge_failed.queue IS NULL OR j.queue = purge_failed.queue)
          AND (purge_failed.job_type IS NULL OR j.job_type = purge_failed.job_type)
          AND (j.owner = taskq._caller() OR taskq._is_admin())
          AND NOT EXISTS (SELECT 1 FROM taskq.job_dependencies d JOIN taskq.jobs c ON c.id = d.job_id
                          WHERE d.depends_on = j.id AND c.status IN ('blocked', 'pending', 'running'))
        FOR UPDATE) j;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM taskq.job_logs WHERE job_id = ANY (ids);
    DELETE FROM taskq.jobs WHERE id = ANY (ids);
    RETURN cardinality(ids);
END
$$;

------------------------------------------------------------------------------
-- Dependency graph rendering
------------------------------------------------------------------------------

-- The connected dependency graph around job_id (ancestors and descendants,
-- at most 500 jobs) as Mermaid ('mermaid') or Graphviz ('dot') text.
CREATE FUNCTION taskq.dag(job_id bigint, format text DEFAULT 'mermaid')
RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    nodes bigint[];
    out text;
BEGIN
    IF format IS NULL OR format NOT IN ('mermaid', 'dot') THEN
        RAISE EXCEPTION 'format must be mermaid or dot, got %', format
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = dag.job_id) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
    WITH RECURSIVE up(id) AS (
        SELECT dag.job_id
      UNION
        SELECT d.depends_on FROM up JOIN taskq.job_dependencies d ON d.job_id = up.id
    ), down(id) AS (
        SELECT dag.job_id
      UNION
        SELECT d.job_id FROM down JOIN taskq.job_dependencies d ON d.depends_on = down.id
    )
    SELECT array_agg(id) INTO nodes FROM (
        SELECT id FROM up UNION SELECT id FROM down ORDER BY id LIMIT 500) n;

    IF format = 'mermaid' THEN
        SELECT 'graph TD' || E'\n' ||
               coalesce((SELECT string_agg(format('    j%s["#%s %s<br/>%s"]:::%s', j.id, j.id,
                                                  replace(j.job_type, '"', '#quot;'), j.status, j.status),
                                           E'\n' ORDER BY j.id)
                         FROM taskq.jobs j WHERE j.id = ANY (nodes)), '') || E'\n' ||
               coalesce((SELECT string_agg(format('    j%s --> j%s', d.depends_on, d.job_id), E'\n'
                                           ORDER BY d.depends_on, d.job_id)
                         FROM taskq.job_dependencies d
                         WHERE d.job_id = ANY (nodes) AND d.depends_on = ANY (nodes)), '') || E'\n' ||
               '    classDef succeeded fill:#c8e6c9' || E'\n' ||
               '    classDef failed fill:#ffcdd2' || E'\n' ||
               '    classDef running fill:#fff9c4' || E'\n' ||
               '    classDef cancelled fill:#e0e0e0' || E'\n' ||
               '    classDef blocked fill:#ffe0b2' || E'\n' ||
               '    classDef pending fill:#bbdefb'
          INTO out;
    ELSE
        SELECT 'digraph taskq {' || E'\n' || '    rankdir=LR;' || E'\n' ||
               coalesce((SELECT string_agg(format('    j%s [label="#%s %s\n%s", style=filled, fillcolor="%s"];',
                                                  j.id, j.id, replace(j.job_type, '"', '\"'), j.status,
                                                  CASE j.status WHEN 'succeeded' THEN '#c8e6c9' WHEN 'failed' THEN '#ffcdd2'
                                                       WHEN 'running' THEN '#fff9c4' WHEN 'cancelled' THEN '#e0e0e0'
                                                       WHEN 'blocked' THEN '#ffe0b2' ELSE '#bbdefb' END),
                                           E'\n' ORDER BY j.id)
                         FROM taskq.jobs j WHERE j.id = ANY (nodes)), '') || E'\n' ||
               coalesce((SELECT string_agg(format('    j%s -> j%s;', d.depends_on, d.job_id), E'\n'
                                           ORDER BY d.depends_on, d.job_id)
                         FROM taskq.job_dependencies d
                         WHERE d.job_id = ANY (nodes) AND d.depends_on = ANY (nodes)), '') || E'\n}'
          INTO out;
    END IF;
    RETURN out;
END
$$;

------------------------------------------------------------------------------
-- Recurring jobs, on pg_cron
------------------------------------------------------------------------------

-- Submit job_type on a cron schedule.  pg_cron runs the submission as the
-- role that called schedule(), so the jobs are that role's.  Re-scheduling a
-- name replaces it.
CREATE FUNCTION taskq.schedule(name text, cron text, job_type text, payload jsonb DEFAULT '{}',
                               priority taskq.priority DEFAULT 'normal', queue text DEFAULT 'default')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    me regrole := taskq._caller();
    cron_id bigint;
    existing taskq.schedules;
BEGIN
    PERFORM taskq._check_name('schedule name', name);
    PERFORM taskq._check_name('job_type', job_type);
    PERFORM taskq._check_name('queue', queue);
    IF cron IS NULL OR btrim(cron, E' \t\r\n') = '' THEN
        RAISE EXCEPTION 'cron must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'payload must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regnamespace('cron') IS NULL OR NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database and CREATE EXTENSION pg_cron.';
    END IF;
    SELECT * INTO existing FROM taskq.schedules s WHERE s.name = schedule.name FOR UPDATE;
    IF FOUND AND existing.owner <> me AND NOT taskq._is_admin() THEN
        RAISE EXCEPTION 'schedule "%" belongs to another role', name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, current_database(), $4)'
       INTO cron_id
      USING 'taskq:' || name, cron,
            format('SELECT taskq.submit(%L, %L::jsonb, %L::taskq.priority, %L)',
                   job_type, payload::text, priority::text, queue),
            (SELECT rolname FROM pg_roles WHERE oid = me);
    INSERT INTO taskq.schedules AS s (name, cron, job_type, payload, priority, queue, owner, cron_jobid)
    VALUES (name, cron, job_type, payload, priority, queue, me, cron_id)
    ON CONFLICT (name) DO UPDATE
        SET cron = excluded.cron, job_type = excluded.job_type, payload = excluded.payload,
            priority = excluded.priority, queue = excluded.queue, owner = excluded.owner,
            cron_jobid = excluded.cron_jobid;
    RETURN cron_id;
END
$$;

CREATE FUNCTION taskq.unschedule(name text) RETURNS void
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
        EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1' USING 'taskq:' || name;
    END IF;
    DELETE FROM taskq.schedules s WHERE s.name = unschedule.name;
END
$$;

------------------------------------------------------------------------------
-- Privileges: tables are written only through the functions above.
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA taskq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA taskq FROM PUBLIC;
GRANT USAGE ON SCHEMA taskq TO PUBLIC;

ALTER TABLE taskq.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE taskq.job_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE taskq.job_dependencies ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_visible ON taskq.jobs FOR SELECT
    USING (owner = current_user::text::regrole OR pg_catalog.pg_has_role('taskq_admin', 'MEMBER'));
CREATE POLICY job_logs_visible ON taskq.job_logs FOR SELECT
    USING (EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = job_id));
CREATE POLICY job_dependencies_visible ON taskq.job_dependencies FOR SELECT
    USING (EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = job_id));
GRANT SELECT ON taskq.jobs, taskq.job_logs, taskq.job_dependencies, taskq.handlers,
                taskq.queues, taskq.schedules TO PUBLIC;
GRANT SELECT ON taskq.dead_letter_queue, taskq.queue_depth TO PUBLIC;
GRANT SELECT ON taskq.workers, taskq.resources, taskq.throughput TO PUBLIC;
ALTER TABLE taskq.schedules ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedules_visible ON taskq.schedules FOR SELECT
    USING (owner = current_user::text::regrole OR pg_catalog.pg_has_role('taskq_admin', 'MEMBER'));

GRANT EXECUTE ON FUNCTION
    taskq.submit(text, jsonb, taskq.priority, text, bigint[], timestamptz, integer, interval,
                 integer, integer, text, interval),
    taskq.submit_many(jsonb),
    taskq.add_dependency(bigint, bigint),
    taskq.cancel(bigint),
    taskq.retry(bigint),
    taskq.pause(text),
    taskq.resume(text),
    taskq.configure_queue(text, integer, interval, integer),
    taskq.register_handler(text, regprocedure),
    taskq.unregister_handler(text),
    taskq.claim(text[], text, integer, interval, integer, integer),
    taskq.complete(bigint, jsonb, text),
    taskq.complete_many(bigint[], jsonb[], text),
    taskq.fail(bigint, text, boolean, text),
    taskq.heartbeat(bigint, text, interval),
    taskq.wait(bigint[], interval),
    taskq.current_job_id(),
    taskq._caller(),
    taskq._is_admin(),
    taskq._worker_slots(),
    taskq._resources(),
    taskq._rates(),
    taskq._counters(),
    taskq._oldest_runnable_age(),
    taskq.latency(interval),
    taskq.metrics(),
    taskq.metrics_prometheus(),
    taskq.health(),
    taskq.retry_failed(text, text, text),
    taskq.purge_failed(interval, text, text),
    taskq.dag(bigint, text),
    taskq.schedule(text, text, text, jsonb, taskq.priority, text),
    taskq.unschedule(text)
TO PUBLIC;
