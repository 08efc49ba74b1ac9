-- taskq 0.1.0 -> 0.2.0.  Also how a fresh install reaches 0.2.0: CREATE
-- EXTENSION runs taskq--0.1.0.sql (frozen, byte for byte the 0.1.0 release)
-- and then this script, as pg_stat_statements ships one base script and its
-- updates.  Every schema change after 0.1.0 goes here, in the part of its
-- concern (this file is sql/0.2.0/*.sql joined by `make update-script`:
-- edit the parts, never the joined file); the upgrade test (test/t/030_upgrade.pl) checks that an updated
-- 0.1.0 database equals a fresh install and that its old jobs still run.

\echo Use "ALTER EXTENSION taskq UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Workers: launcher, executors, cancel and shutdown
------------------------------------------------------------------------------

-- The GUCs SQL reads, typed, from C (taskq.c): each default is written once,
-- in the GUC's definition, not again here as a fallback.
CREATE FUNCTION taskq._workers() RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_workers_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._backoff_base() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_backoff_base_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._backoff_max() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_backoff_max_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._aging_interval() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_aging_interval_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._big_job_wait() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_big_job_wait_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._retention() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_retention_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._throttle_warn_after() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_throttle_warn_after_sql' LANGUAGE C STABLE;

-- Retry delay after attempt n: min(backoff_max, base * 2^(n-1)), with up to 20 % jitter.
-- (compared before multiplying: a backoff of centuries would overflow interval)
CREATE OR REPLACE FUNCTION taskq._retry_delay(base interval, attempt integer) RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN base >= m / power(2, k) THEN m ELSE base * power(2, k) END
           * (1 + 0.2 * random())
    FROM (SELECT taskq._backoff_max() AS m,
                 least(greatest(attempt, 1) - 1, 40) AS k) s
$$;
------------------------------------------------------------------------------
-- Dependencies, locks and claims
------------------------------------------------------------------------------

-- taskq's own locks live where no SQL user can take them (src/dag.c): an
-- advisory tag space pg_advisory_* cannot name, and row locks of taskq's rows.
-- Parents are ordered against their completion by row locks, which live in
-- the tuples, not in the shared lock table, so a job with 20,000 parents
-- costs no lock-table entry per parent.

-- A job's "parent lock" orders linking a child to it against the job
-- finishing (success releases dependents, cancel cascades).  A child takes
-- FOR KEY SHARE on its parents' rows before it reads their status, a finishing
-- job FOR UPDATE on its own row before it looks for dependents: the only pair
-- of row locks that conflict here.  KEY SHARE does not conflict with the FOR
-- NO KEY UPDATE an executor holds on every job of its batch until it commits,
-- nor with claims (FOR NO KEY UPDATE SKIP LOCKED), so a child is never kept
-- waiting by a batch, and a claim never skips a parent being linked to.
CREATE OR REPLACE FUNCTION taskq._lock_parents(ids bigint[], exclusive boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    admin boolean;
    me regrole;
BEGIN
    -- (plpgsql, not sql: its plans are kept, and every completion calls it)
    IF exclusive THEN
        PERFORM 1 FROM taskq.jobs j WHERE j.id = ANY (ids) ORDER BY j.id FOR UPDATE OF j;
        RETURN;
    END IF;
    -- a child's parents: only rows its submitter may see are locked (another
    -- role's would be kept from finishing for as long as the submitter likes)
    admin := taskq._is_admin();
    me := taskq._caller();
    IF pg_catalog.current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM 1 FROM taskq.jobs j WHERE j.id = ANY (ids) AND (admin OR j.owner = me)
         ORDER BY j.id FOR KEY SHARE OF j;
    ELSE
        -- A REPEATABLE READ snapshot may predate a parent's success and never
        -- see it.  KEY SHARE would lock such a row (its key did not change);
        -- SHARE conflicts with the update, so that is a serialization failure
        -- instead of a child blocked forever behind a succeeded parent.
        PERFORM 1 FROM taskq.jobs j WHERE j.id = ANY (ids) AND (admin OR j.owner = me)
         ORDER BY j.id FOR SHARE OF j;
    END IF;
END
$$;

-- The one name check (src/job_rows.c), the same as taskq.submit's: NULL,
-- blank (only spaces, tabs, CRs, LFs) or longer than 200 characters.
CREATE OR REPLACE FUNCTION taskq._check_name(what text, value text) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_check_name_sql' LANGUAGE C IMMUTABLE;

-- A job type's lock orders submitting jobs of that type against registering
-- or unregistering its handler, which flips in_database of the waiting jobs:
-- a submit takes it shared before it looks for the handler.  In taskq's own
-- lock space, hashed into 16 buckets (a batch of many job types takes at most
-- 16 locks).
CREATE OR REPLACE FUNCTION taskq._lock_job_type(job_type text, exclusive boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_lock_job_type_sql' LANGUAGE C VOLATILE;

-- A claim's locks on concurrency-limited queues, taken (take) while it counts
-- their running jobs and released (NOT take) once its jobs are running.
CREATE FUNCTION taskq._lock_queue_limits(queues text[], take boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_lock_queue_limits' LANGUAGE C VOLATILE STRICT;

-- Running jobs per queue, counting claims not yet committed (src/dag.c).
CREATE FUNCTION taskq._running_in_queues(queues text[]) RETURNS integer[]
    AS 'MODULE_PATHNAME', 'taskq_running_in_queues' LANGUAGE C VOLATILE STRICT;

-- A path depends_on -> ... -> job_id that the edge job_id -> depends_on would
-- close into a cycle, or NULL (src/dag.c: breadth-first, each job once).
-- add_dependency's graph lock, held from its cycle check to its edge (src/dag.c)
CREATE FUNCTION taskq._lock_graph(take boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_lock_graph' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION taskq._lock_graph(boolean) FROM PUBLIC;
-- (its row lock serialized graph edits to their commit)
DROP TABLE taskq.dag_lock;

CREATE FUNCTION taskq._cycle_path(job_id bigint, depends_on bigint) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'taskq_cycle_path' LANGUAGE C VOLATILE STRICT;

REVOKE ALL ON FUNCTION taskq._lock_queue_limits(text[], boolean), taskq._running_in_queues(text[]),
    taskq._cycle_path(bigint, bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION taskq.add_dependency(job_id bigint, depends_on bigint)
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
    child := taskq._lock_job(job_id);
    PERFORM taskq._lock_parents(ARRAY[depends_on], false);
    SELECT * INTO parent FROM taskq.jobs j WHERE j.id = add_dependency.depends_on;
    IF NOT FOUND OR (parent.owner <> taskq._caller() AND NOT taskq._is_admin()) THEN
        RAISE EXCEPTION 'job % does not exist', depends_on
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = 'A job can only depend on existing jobs.';
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

    -- A path depends_on -> ... -> job_id through existing edges would close a
    -- cycle.  (A recursive CTE carried every path: 2^30 of them in a lattice
    -- of 60 jobs.)  Graph edits serialize from the check to the edge's
    -- insert only; the check reads edges not yet committed too.
    PERFORM taskq._lock_graph(true);
    SELECT taskq._cycle_path(job_id, depends_on) INTO path;
    IF path IS NOT NULL THEN
        RAISE EXCEPTION 'dependency of job % on job % would create a cycle', job_id, depends_on
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('cycle: %s', array_to_string(ARRAY[job_id] || path, ' -> '));
    END IF;
    INSERT INTO taskq.job_dependencies (job_id, depends_on) VALUES (job_id, depends_on);
    PERFORM taskq._lock_graph(false);
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

CREATE OR REPLACE FUNCTION taskq._claim(in_database boolean, queues text[], worker text, max_jobs integer,
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
    big_wait interval := taskq._big_job_wait();
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
    locked_limits text[];
    defer boolean;
    limits_apply text[];
    taken_at timestamptz;
    -- >>> fair scheduling (issue 23, src/fairness.c): queues with key limits
    -- and their limits; rate-limited queues, their rates, bursts and tokens;
    -- free slots per (queue, key) seen; the keys at their limit
    fair_keyed text[];
    fair_key_limit integer[];
    fair_rated text[];
    fair_rates float8[];
    fair_bursts integer[];
    fair_slots0 integer[];
    k_queue text[] := '{}';
    k_key text[] := '{}';
    k_left integer[] := '{}';
    full_kq text[] := '{}';
    full_kk text[] := '{}';
    c_keys text[];
    ki integer;
    -- rate-limited job types (taskq.job_types): their names, the names of
    -- their buckets and claim locks, rates, bursts, tokens; those out of tokens
    t_types text[];
    t_buckets text[];
    t_rates float8[];
    t_bursts integer[];
    t_slots integer[];
    t_slots0 integer[];
    full_types text[] := '{}';
    c_types text[];
    ti integer;
    -- tenant jobs pending in this priority of the lane (taskq._claim_by_turn)
    has_turns boolean;
    -- <<< fair scheduling
BEGIN
    -- one subquery per named queue below: bounded, so one call cannot
    -- spend minutes of a core planning thousands of them
    IF cardinality(queues) > 100 THEN
        RAISE EXCEPTION 'a claim may name at most 100 queues, got %', cardinality(queues)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Pass NULL to claim from every queue.';
    END IF;
    SELECT coalesce(array_agg(name) FILTER (WHERE paused), '{}'),
           coalesce(array_agg(name) FILTER (WHERE NOT paused AND concurrency IS NOT NULL), '{}'),
           -- fair scheduling (issue 23): key and rate limits, in the same read
           coalesce(array_agg(name) FILTER (WHERE NOT paused AND key_concurrency IS NOT NULL), '{}'),
           array_agg(key_concurrency) FILTER (WHERE NOT paused AND key_concurrency IS NOT NULL),
           coalesce(array_agg(name) FILTER (WHERE NOT paused AND rate_per_second IS NOT NULL
                                            AND (_claim.queues IS NULL OR name = ANY (_claim.queues))), '{}'),
           array_agg(rate_per_second) FILTER (WHERE NOT paused AND rate_per_second IS NOT NULL
                                              AND (_claim.queues IS NULL OR name = ANY (_claim.queues))),
           array_agg(rate_burst) FILTER (WHERE NOT paused AND rate_per_second IS NOT NULL
                                         AND (_claim.queues IS NULL OR name = ANY (_claim.queues)))
      INTO paused, limited, fair_keyed, fair_key_limit, fair_rated, fair_rates, fair_bursts
      FROM taskq.queues;
    -- fair scheduling (issue 23): job type rate limits
    SELECT coalesce(array_agg(job_type ORDER BY job_type), '{}'),
           coalesce(array_agg(taskq._job_type_bucket(job_type) ORDER BY job_type), '{}'),
           array_agg(rate_per_second ORDER BY job_type), array_agg(rate_burst ORDER BY job_type)
      INTO t_types, t_buckets, t_rates, t_bursts
      FROM taskq.job_types WHERE rate_per_second IS NOT NULL;

    IF cardinality(queues) = 0 THEN
        RETURN;                        -- no queue named
    END IF;
    -- Concurrent claims cannot overshoot a limit: each holds the limited
    -- queues' claim locks from this count until its jobs are running, and
    -- the count includes claims not yet committed.  The locks are released
    -- at the end of this function, not at commit: a claimer idle in its
    -- transaction blocks nobody (taskq.queues' rows were locked until then).
    -- (fair scheduling, issue 23: key and rate limits under the same locks)
    IF cardinality(limited) > 0 OR cardinality(fair_keyed) > 0 OR cardinality(fair_rated) > 0
       OR cardinality(t_types) > 0 THEN
        locked_limits := limited || fair_keyed || fair_rated || t_buckets;
        PERFORM taskq._lock_queue_limits(locked_limits, true);
        -- fair scheduling: the claim's time is after its wait for the locks,
        -- so that started_at orders claims as their tokens were counted
        t := clock_timestamp();
    END IF;
    IF cardinality(limited) > 0 THEN
        SELECT array_agg(greatest(q.concurrency - r.n, 0) ORDER BY q.name),
               array_agg(q.name ORDER BY q.name)
          INTO slots, limited
          FROM taskq.queues q
          JOIN unnest(limited, taskq._running_in_queues(limited)) AS r(name, n) ON r.name = q.name
          WHERE q.name = ANY (limited) AND q.concurrency IS NOT NULL;
        limited := coalesce(limited, '{}');
        slots := coalesce(slots, '{}');
    END IF;

    -- >>> fair scheduling (issue 23, src/fairness.c): a rate-limited queue
    -- is claimed as a limited one whose slots are its bucket's whole tokens;
    -- a keyed queue's running jobs are counted per key.
    IF cardinality(fair_rated) > 0 THEN
        slots := coalesce(slots, '{}');
        fair_slots0 := taskq._rate_tokens(fair_rated, fair_rates, fair_bursts, t);
        FOR i IN 1..cardinality(fair_rated) LOOP
            qi := array_position(limited, fair_rated[i]);
            IF qi IS NULL THEN
                limited := limited || fair_rated[i];
                slots := slots || fair_slots0[i];
            ELSE
                slots[qi] := least(slots[qi], fair_slots0[i]);
            END IF;
        END LOOP;
        fair_slots0 := slots;
    END IF;
    IF cardinality(fair_keyed) > 0 THEN
        SELECT coalesce(array_agg(r.queue), '{}'), coalesce(array_agg(r.key), '{}'),
               coalesce(array_agg(fair_key_limit[array_position(fair_keyed, r.queue)] - r.n), '{}')
          INTO k_queue, k_key, k_left
          FROM taskq._running_per_key(fair_keyed) r;
    END IF;
    IF cardinality(t_types) > 0 THEN
        t_slots := taskq._rate_tokens(t_buckets, t_rates, t_bursts, t);
        t_slots0 := t_slots;
    END IF;
    -- <<< fair scheduling

    -- Candidates in claim order, locked as they are read (SKIP LOCKED: rows
    -- another worker is taking are passed over).  LIMIT sits above the lock,
    -- so only the rows returned are locked (for named queues: up to LIMIT per
    -- queue); one that does not fit stays locked until the claiming
    -- transaction ends, and a further round looks past it.  Queues at their
    -- concurrency limit are left out.
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
        -- fair scheduling (issue 23): with tenant jobs, claim in turn order
        has_turns := EXISTS (SELECT FROM taskq.jobs j
                              WHERE j.status = 'pending' AND j.fair_at IS NOT NULL
                                AND j.in_database = _claim.in_database AND j.effective_priority = prio);
        FOR round IN 1..4 LOOP
            got := 0;
            wanted := max_jobs - cardinality(picked);
            IF cardinality(limited) > 0 THEN
                full_queues := ARRAY(SELECT limited[i] FROM generate_subscripts(limited, 1) i
                                     WHERE slots[i] <= 0);
            END IF;
            -- fair scheduling (issue 23): keys at their limit are left out
            IF cardinality(k_key) > 0 THEN
                full_kq := ARRAY(SELECT k_queue[i] FROM generate_subscripts(k_key, 1) i WHERE k_left[i] <= 0);
                full_kk := ARRAY(SELECT k_key[i] FROM generate_subscripts(k_key, 1) i WHERE k_left[i] <= 0);
            END IF;
            -- fair scheduling (issue 23): job types out of tokens are left out
            IF cardinality(t_types) > 0 THEN
                full_types := ARRAY(SELECT t_types[i] FROM generate_subscripts(t_types, 1) i WHERE t_slots[i] <= 0);
            END IF;
            -- The candidates come as arrays from one statement: fetching them
            -- one by one from a cursor cost more than updating them.
            IF has_turns THEN
                -- fair scheduling (issue 23): the first jobs in turn order
                SELECT coalesce(array_agg(c.id ORDER BY c.turn, c.id), '{}'),
                       array_agg(c.queue ORDER BY c.turn, c.id),
                       array_agg(c.cpu_units ORDER BY c.turn, c.id),
                       array_agg(c.memory_mb ORDER BY c.turn, c.id),
                       array_agg(c.run_at ORDER BY c.turn, c.id),
                       max(c.cpu_units), max(c.memory_mb), sum(c.cpu_units), sum(c.memory_mb),
                       array_agg(c.concurrency_key ORDER BY c.turn, c.id),
                       array_agg(c.job_type ORDER BY c.turn, c.id)
                  INTO c_ids, c_queues, c_cpu, c_mem, c_run, c_cpu_max, c_mem_max, c_cpu_sum, c_mem_sum,
                       c_keys, c_types
                  FROM taskq._claim_by_turn(in_database, queues, t, prio, head.run_at, head.id,
                                            paused, full_queues, only_owner, round, seen, wanted,
                                            full_kq, full_kk, full_types) c;
            ELSIF queues IS NULL OR in_database THEN
                SELECT coalesce(array_agg(c.id ORDER BY c.run_at, c.id), '{}'),
                       array_agg(c.queue ORDER BY c.run_at, c.id),
                       array_agg(c.cpu_units ORDER BY c.run_at, c.id),
                       array_agg(c.memory_mb ORDER BY c.run_at, c.id),
                       array_agg(c.run_at ORDER BY c.run_at, c.id),
                       max(c.cpu_units), max(c.memory_mb), sum(c.cpu_units), sum(c.memory_mb),
                       array_agg(c.concurrency_key ORDER BY c.run_at, c.id),  -- fair scheduling
                       array_agg(c.job_type ORDER BY c.run_at, c.id)
                  INTO c_ids, c_queues, c_cpu, c_mem, c_run, c_cpu_max, c_mem_max, c_cpu_sum, c_mem_sum,
                       c_keys, c_types
                  FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at, j.concurrency_key,
                               j.job_type
                          FROM taskq.jobs j
                         WHERE j.status = 'pending' AND j.run_at <= t
                           AND j.effective_priority = prio AND (j.run_at, j.id) >= (head.run_at, head.id)
                           AND (queues IS NULL OR j.queue = ANY (queues))
                           AND NOT (j.queue = ANY (paused)) AND NOT (j.queue = ANY (full_queues))
                           AND (only_owner IS NULL OR j.owner = only_owner)
                           AND j.in_database = _claim.in_database
                           AND (round = 1 OR j.id <> ALL (seen))
                           -- fair scheduling (issue 23): not of a key at its limit
                           AND (cardinality(full_kk) = 0 OR j.concurrency_key IS NULL
                                OR NOT EXISTS (SELECT FROM unnest(full_kq, full_kk) AS f(q, k)
                                               WHERE f.q = j.queue AND f.k = j.concurrency_key))
                           -- fair scheduling (issue 23): not of a job type out of tokens
                           AND NOT (j.job_type = ANY (full_types))
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
                    '       max(c.cpu_units), max(c.memory_mb), sum(c.cpu_units), sum(c.memory_mb),'
                    '       array_agg(c.concurrency_key ORDER BY c.run_at, c.id),'  -- fair scheduling
                    '       array_agg(c.job_type ORDER BY c.run_at, c.id)'
                    '  FROM (SELECT u.* FROM ('
                    || (SELECT string_agg(format(
                           'SELECT * FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at,'
                           '       j.concurrency_key, j.job_type'
                           '  FROM taskq.jobs j'
                           ' WHERE j.status = ''pending'' AND NOT j.in_database AND j.queue = %L'
                           '   AND j.run_at <= $1 AND j.effective_priority = $2'
                           '   AND (j.run_at, j.id) >= ($3, $4)'
                           '   AND NOT (j.queue = ANY ($5)) AND NOT (j.queue = ANY ($6))'
                           '   AND ($7 IS NULL OR j.owner = $7) AND ($8 = 1 OR j.id <> ALL ($9))'
                           -- fair scheduling (issue 23): not of a key at its limit
                           '   AND (cardinality($12) = 0 OR j.concurrency_key IS NULL'
                           '        OR NOT EXISTS (SELECT FROM unnest($11, $12) AS f(q, k)'
                           '                       WHERE f.q = j.queue AND f.k = j.concurrency_key))'
                           '   AND NOT (j.job_type = ANY ($13))'  -- fair scheduling: types out of tokens
                           ' ORDER BY j.run_at, j.id LIMIT $10'
                           ' FOR NO KEY UPDATE OF j SKIP LOCKED) AS q%s', name, n), ' UNION ALL ')
                        FROM (SELECT name, row_number() OVER () AS n
                                FROM (SELECT DISTINCT name FROM unnest(queues) AS name) d) named)
                    || ') AS u ORDER BY u.run_at, u.id LIMIT $10) AS c'
                    INTO c_ids, c_queues, c_cpu, c_mem, c_run, c_cpu_max, c_mem_max, c_cpu_sum, c_mem_sum,
                         c_keys, c_types
                    USING t, prio, head.run_at, head.id, paused, full_queues, only_owner, round,
                          seen, wanted, full_kq, full_kk, full_types;
            END IF;
            got := cardinality(c_ids);
            seen := seen || c_ids;
            IF got > 0 AND NOT (c_queues && limited) AND NOT (c_queues && fair_keyed)
               AND NOT (c_types && t_types)                    -- fair scheduling
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
                    -- >>> fair scheduling (issue 23): the job's key has a free slot
                    ki := NULL;
                    IF c_keys[i] IS NOT NULL AND c_queues[i] = ANY (fair_keyed) THEN
                        ki := (SELECT s FROM generate_subscripts(k_key, 1) s
                                WHERE k_queue[s] = c_queues[i] AND k_key[s] = c_keys[i]);
                        IF ki IS NULL THEN
                            k_queue := k_queue || c_queues[i];
                            k_key := k_key || c_keys[i];
                            k_left := k_left || fair_key_limit[array_position(fair_keyed, c_queues[i])];
                            ki := cardinality(k_key);
                        END IF;
                        CONTINUE WHEN k_left[ki] <= 0;
                    END IF;
                    -- its job type has a token
                    ti := array_position(t_types, c_types[i]);
                    CONTINUE WHEN ti IS NOT NULL AND t_slots[ti] <= 0;
                    -- <<< fair scheduling
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
                    IF ki IS NOT NULL THEN                  -- fair scheduling
                        k_left[ki] := k_left[ki] - 1;
                    END IF;
                    IF ti IS NOT NULL THEN                  -- fair scheduling
                        t_slots[ti] := t_slots[ti] - 1;
                    END IF;
                END LOOP;
            END IF;
            EXIT priorities WHEN big_job_waits;
            -- fewer than asked for: none is left unlocked to look past
            EXIT WHEN got < wanted OR cardinality(picked) >= max_jobs;
        END LOOP;
        EXIT WHEN cardinality(picked) >= max_jobs;
    END LOOP;

    -- >>> fair scheduling (issue 23): spend the tokens of the jobs picked
    -- (still under the claim locks); a bucket left empty throttled the claim
    IF cardinality(fair_rated) > 0 THEN
        PERFORM taskq._rate_take(fair_rated,
                                 ARRAY(SELECT fair_slots0[array_position(limited, r)] - slots[array_position(limited, r)]
                                         FROM unnest(fair_rated) AS r),
                                 ARRAY(SELECT slots[array_position(limited, r)] <= 0
                                              AND cardinality(picked) < max_jobs
                                         FROM unnest(fair_rated) AS r));
    END IF;
    IF cardinality(t_types) > 0 THEN
        PERFORM taskq._rate_take(t_buckets,
                                 ARRAY(SELECT t_slots0[i] - t_slots[i] FROM generate_subscripts(t_types, 1) i
                                        ORDER BY i),
                                 ARRAY(SELECT t_slots[i] <= 0 AND cardinality(picked) < max_jobs
                                         FROM generate_subscripts(t_types, 1) i ORDER BY i));
    END IF;
    -- <<< fair scheduling

    IF cardinality(picked) = 0 THEN
        PERFORM taskq._lock_queue_limits(locked_limits, false);
        RETURN;
    END IF;

    -- Take the picked (and locked) jobs and publish, in one statement (no
    -- log row: the job's row says who runs it since when).
    -- The pause is read again here, after the locks: `paused` is as of this
    -- call's start, and taking a lock can wait (for the queue limits, or,
    -- SKIP LOCKED or not, for a row's later holder when its update chain is
    -- followed) until a job was given back to a queue paused meanwhile.
    -- An executor's claim in its batch's transaction only locks its jobs
    -- (45_batch_transaction.sql: one row write per job); those of a queue
    -- with a concurrency, key or rate limit are still written, because the
    -- next claim counts a queue's running jobs from their rows.
    defer := in_database AND taskq._claim_defers_write();
    limits_apply := coalesce(locked_limits, '{}');
    -- A job is stamped with the time it is taken, after the candidates were
    -- read: a parent that committed while this claim started is then always
    -- older than its child's start.  Under a rate limit the stamp stays the
    -- time the tokens were counted (t), so that started_at windows hold the
    -- limit exactly (claims are serialized by the claim locks).
    taken_at := CASE WHEN cardinality(fair_rated) > 0 OR cardinality(t_types) > 0
                     THEN t ELSE clock_timestamp() END;
    RETURN QUERY
    WITH taken AS (
        UPDATE taskq.jobs j
           SET status = 'running', attempts = j.attempts + 1, worker = _claim.worker,
               started_at = taken_at, updated_at = taken_at,
               lease_expires_at = taken_at + lease
         WHERE j.id = ANY (picked)
           AND NOT EXISTS (SELECT FROM taskq.queues q WHERE q.name = j.queue AND q.paused)
           AND (NOT defer OR j.queue = ANY (limits_apply))
           -- (a one-time filter: an executor's claim from queues without
           -- limits writes nothing, and so reads no row here)
           AND (NOT defer OR cardinality(limits_apply) > 0)
        RETURNING j.*
    ), held AS (
        SELECT j.* FROM taskq.jobs j     -- (pending: locked so above)
         WHERE defer AND j.id = ANY (picked)
           AND NOT EXISTS (SELECT FROM taskq.queues q WHERE q.name = j.queue AND q.paused)
           AND NOT (j.queue = ANY (limits_apply))
    ), notified AS (
        -- (held rows still read 'pending': they are published as running)
        SELECT taskq._record(array_agg((c.id, 'running', c.attempts, c.queue, c.job_type,
                                        c.in_database)::taskq._transition)) AS n
          FROM (SELECT taken.id, taken.queue, taken.job_type, taken.attempts, taken.in_database
                  FROM taken
                UNION ALL
                SELECT held.id, held.queue, held.job_type, held.attempts + 1, held.in_database
                  FROM held) c
    )
    SELECT taken.* FROM taken, notified
    UNION ALL
    SELECT held.* FROM held, notified;
    -- the jobs are running (to a dirty read): the next claim counts them
    PERFORM taskq._lock_queue_limits(locked_limits, false);
END
$$;

CREATE OR REPLACE FUNCTION taskq.schedule(name text, cron text, job_type text, payload jsonb DEFAULT '{}',
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
    IF priority IS NULL THEN
        RAISE EXCEPTION 'priority must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
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
    PERFORM taskq._check_cron_can_run(me);
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

CREATE OR REPLACE FUNCTION taskq.dag(job_id bigint, format text DEFAULT 'mermaid')
RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    nodes bigint[];
    out text;
BEGIN
    IF job_id IS NULL THEN
        RAISE EXCEPTION 'job_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
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
                         FROM taskq.live_jobs j WHERE j.id = ANY (nodes)), '') || E'\n' ||
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
                         FROM taskq.live_jobs j WHERE j.id = ANY (nodes)), '') || E'\n' ||
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

-- A job's change of status as it is published: what taskq._publish tells.
-- (status as text: a caller that knows it passes a constant, and no row
-- pays for the enum's output function)
CREATE TYPE taskq._transition AS (
    job_id      bigint,
    status      text,
    attempt     integer,
    queue       text,
    job_type    text,
    in_database boolean
);

-- Record and publish a transition: the one place that writes taskq.job_logs
-- and publishes a job's change of status.  logs: the rows the history rule
-- (40_history.sql) keeps, inserted in their order (NULL for the normal
-- course: a success, a release, a claim); then each of moved is published,
-- in its order.  Callers pass what their own statement returned, so the hot
-- paths read no row again.
CREATE FUNCTION taskq._record(moved taskq._transition[], logs taskq.job_logs[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF logs IS NOT NULL THEN
        INSERT INTO taskq.job_logs (job_id, status, attempt, message, error, details)
        SELECT l.job_id, l.status, l.attempt, l.message, l.error, l.details
          FROM unnest(logs) AS l;
    END IF;
    IF cardinality(moved) > 0 THEN
        PERFORM count(taskq._publish(m.job_id, m.status, m.queue, m.job_type, m.attempt,
                                     m.in_database))
           FROM unnest(moved) AS m
          WHERE taskq._publishing(m.status);
    END IF;
END
$$;

-- _record for jobs named by id, one log row each (their status and
-- attempts as they are now, message, errors[i] the error of ids[i]).
CREATE OR REPLACE FUNCTION taskq._emit(ids bigint[], message text, errors text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    moved taskq._transition[];
    logs taskq.job_logs[];
BEGIN
    SELECT array_agg((j.id, j.status::text, j.attempts, j.queue, j.job_type, j.in_database)::taskq._transition
                     ORDER BY u.ord),
           array_agg(ROW(NULL, j.id, NULL, j.status, j.attempts, _emit.message, _emit.errors[u.ord],
                         NULL)::taskq.job_logs ORDER BY u.ord)
      INTO moved, logs
      FROM unnest(ids) WITH ORDINALITY AS u(id, ord)
      JOIN taskq.jobs j ON j.id = u.id AND j.id = ANY (ids);  -- (see _complete_batch)
    PERFORM taskq._record(moved, logs);
END
$$;

-- Prometheus text exposition of taskq.metrics(): a TYPE line per family
-- (counter for _total, histogram for the _bucket/_sum/_count of
-- taskq_job_*_seconds, gauge otherwise), its samples next to it.  Label
-- values are escaped as the format requires (backslash, double quote,
-- newline): any role names its queues and job types, and must not forge lines.
CREATE OR REPLACE FUNCTION taskq.metrics_prometheus() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    WITH m AS (
        SELECT m.metric, m.labels, m.value,
               regexp_replace(m.metric, '^(taskq_job_(wait|run)_seconds)_(bucket|sum|count)$', '\1') AS family
          FROM taskq.metrics() m
    )
    SELECT coalesce(string_agg(line, E'\n' ORDER BY family, ord, metric, labels_key, le), '') || E'\n'
    FROM (
        SELECT DISTINCT m.family, 0 AS ord, ''::text AS metric, ''::text AS labels_key, 0::float8 AS le,
               format('# TYPE %s %s', m.family,
                      CASE WHEN m.family ~ '_total$' THEN 'counter'
                           WHEN m.family <> m.metric THEN 'histogram'
                           ELSE 'gauge' END) AS line
          FROM m
        UNION ALL
        SELECT m.family, 1, m.metric, (m.labels - 'le')::text, coalesce((m.labels->>'le')::float8, 0),
               m.metric ||
               coalesce('{' || (SELECT string_agg(format('%s="%s"', k,
                                                        replace(replace(replace(v, '\', '\\'),
                                                                        '"', '\"'),
                                                                E'\n', '\n')),
                                                  ',' ORDER BY k)
                                FROM jsonb_each_text(m.labels) AS e(k, v)) || '}', '') ||
               ' ' || m.value::text
          FROM m
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
-- History and the lean write path
------------------------------------------------------------------------------

-- History records what went wrong, not every step.  A job's row carries its
-- created, started and finished times, attempts, worker and result;
-- taskq.job_logs gets a row for each failed attempt (error, worker, start and
-- end), each retry scheduled, each job given back, each cancel, each retry
-- from the dead-letter queue, each job blocked (by a parent added to it or
-- by a parent that failed), and none for 'submitted', 'running' or a
-- success.  Two log rows per job of three were most of the write cost of a
-- job (bench/README.md).  Notifications are unchanged.

-- The success path.  Each entry point writes its jobs' rows 'succeeded' its
-- own way (below: running jobs of an executor, of complete and of
-- complete_many; 45_batch_transaction.sql: jobs an executor claimed without
-- a write) and hands what it wrote to _succeeded, which does the rest.
DROP FUNCTION taskq._succeed(bigint, text, integer, jsonb);
DROP FUNCTION taskq._release_after_success(bigint[]);
DROP FUNCTION taskq._succeeded(bigint[]);
DROP FUNCTION taskq._complete_batch(bigint[], text, jsonb[]);

-- After jobs' rows were written 'succeeded': publish them (no log row: a
-- success is the normal course) and release their dependents, under the
-- parents' locks so that a child linked an instant before is seen.  done is
-- what the write returned, in its order.
CREATE FUNCTION taskq._succeeded(done taskq._transition[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF cardinality(done) > 0 THEN
        PERFORM taskq._record(done);
        ids := ARRAY(SELECT d.job_id FROM unnest(done) AS d);
        PERFORM taskq._require_read_committed('completing a job');
        PERFORM taskq._lock_parents(ids, true);
        PERFORM taskq._release_dependents(ids);
    END IF;
END
$$;

-- Record successes of running jobs: an executor's (worker, which holds
-- their row locks), complete's and complete_many's (worker NULL: the caller
-- locked the rows and checked who holds them).  Returns how many.  The
-- executors' sessions and complete's have the plan settings already.
CREATE FUNCTION taskq._complete_batch(ids bigint[], worker text, results jsonb[])
RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    done taskq._transition[];
BEGIN
    -- (j.id = ANY (ids) repeats the join so that any plan, even one made on
    -- an empty table, probes the primary key instead of reading an index whole)
    WITH u AS (
        UPDATE taskq.jobs j
           SET status = 'succeeded', result = r.result, finished_at = clock_timestamp(),
               updated_at = clock_timestamp(), lease_expires_at = NULL
          FROM unnest(ids, results) AS r(id, result)
         WHERE j.id = r.id AND j.id = ANY (ids) AND j.status = 'running'
           AND (_complete_batch.worker IS NULL OR j.worker = _complete_batch.worker)
        RETURNING (j.id, 'succeeded', j.attempts, j.queue, j.job_type, j.in_database)::taskq._transition AS t
    )
    SELECT array_agg(u.t) INTO done FROM u;
    PERFORM taskq._succeeded(done);
    RETURN coalesce(cardinality(done), 0);
END
$$;

-- An external worker's success: the checks of _held_job, then the one path.
CREATE OR REPLACE FUNCTION taskq.complete(job_id bigint, result jsonb DEFAULT NULL,
                                         worker text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs := taskq._held_job(job_id, worker);
BEGIN
    PERFORM taskq._complete_batch(ARRAY[job_id], j.worker, ARRAY[result]);
END
$$;

-- Dependents of succeeded jobs lose one unfinished parent each; the ones left
-- with none become pending.  Row updates re-read the latest version, so two
-- parents finishing at once cannot both miss the last decrement.
CREATE OR REPLACE FUNCTION taskq._release_dependents(parent_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    ready taskq._transition[];
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
        RETURNING (j.id, j.status::text, j.attempts, j.queue, j.job_type, j.in_database)::taskq._transition AS t
    )
    SELECT array_agg(u.t) INTO ready FROM u WHERE (u.t).status = 'pending';
    IF ready IS NOT NULL THEN
        PERFORM taskq._record(ready);       -- released: the normal course, no log row
        PERFORM taskq._wake_on_commit();
    END IF;
END
$$;

-- Record failed attempts (fenced on the claim: worker and attempt): retry
-- after backoff while attempts are left and the error is retryable, else
-- dead-letter.  A
-- give_back attempt (shutdown) does not count.  Returns the ids recorded.
-- Log rows: the failed attempt (its error, worker, start and end) and, when
-- it will run again, the retry scheduled; a job given back, one row; each
-- job a dead-lettered job leaves blocked, one row.
CREATE OR REPLACE FUNCTION taskq._fail(ids bigint[], worker text, attempts integer[], errors text[],
                                       retryable boolean[], give_back boolean DEFAULT false)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    done bigint[];
    dead bigint[];
    moved taskq._transition[];
    logs taskq.job_logs[];
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
        RETURNING j.id, f.error, f.attempt, j.status, j.attempts, j.run_at, j.started_at,
                  j.updated_at, j.queue, j.job_type, j.in_database
    ), logged AS (
        -- the failed attempt (its error, worker, start and end) and, when it
        -- will run again, the retry scheduled; a job given back, one row
        SELECT array_agg(ROW(NULL, upd.id, NULL, r.status, r.attempt, r.message, r.error,
                             r.details)::taskq.job_logs ORDER BY upd.id, r.n) AS rows
          FROM upd, LATERAL (VALUES
                (1, CASE WHEN give_back THEN 'pending' ELSE 'failed' END::taskq.job_status,
                 upd.attempt,
                 CASE WHEN give_back THEN 'given back to the queue (not counted as an attempt)'
                      WHEN upd.status = 'failed' THEN 'attempt failed, dead-lettered'
                      ELSE 'attempt failed' END,
                 upd.error,
                 jsonb_build_object('worker', _fail.worker, 'started_at', upd.started_at,
                                    'ended_at', upd.updated_at)),
                (2, 'pending'::taskq.job_status, upd.attempts, 'retry scheduled', NULL::text,
                 jsonb_build_object('run_at', upd.run_at))
          ) AS r(n, status, attempt, message, error, details)
         WHERE r.n = 1 OR (NOT give_back AND upd.status = 'pending')
    )
    SELECT array_agg((upd.id, upd.status::text, upd.attempts, upd.queue, upd.job_type,
                      upd.in_database)::taskq._transition),
           array_agg(upd.id ORDER BY upd.id),
           array_agg(upd.id ORDER BY upd.id) FILTER (WHERE upd.status = 'failed'),
           (SELECT logged.rows FROM logged)
      INTO moved, done, dead, logs FROM upd;
    PERFORM taskq._record(moved, logs);
    IF dead IS NOT NULL THEN
        -- a failed parent holds its blocked dependents until it is retried:
        -- their owners must see why they do not run (a log row, no change of
        -- status).  FOR SHARE waits for a cancel of a dependent in progress
        -- and reads its status again, so that no 'blocked' row lands after
        -- its 'cancelled' one.
        PERFORM taskq._record(NULL, ARRAY(
            SELECT ROW(NULL, c.id, NULL, c.status, c.attempts,
                       format('blocked by failed job %s', d.depends_on), NULL,
                       jsonb_build_object('parent', d.depends_on))::taskq.job_logs
              FROM taskq.job_dependencies d JOIN taskq.jobs c ON c.id = d.job_id
             WHERE d.depends_on = ANY (dead) AND c.status = 'blocked'
             ORDER BY d.depends_on, c.id
               FOR SHARE OF c));
    END IF;
    IF done IS NOT NULL THEN
        PERFORM taskq._wake_on_commit();
    END IF;
    RETURN coalesce(done, '{}');
END
$$;

-- Has the job a dependent still waiting for it (blocked, pending or running)?
CREATE FUNCTION taskq._holds_dependents(job_id bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM taskq.job_dependencies d JOIN taskq.jobs c ON c.id = d.job_id
                   WHERE d.depends_on = $1 AND c.status IN ('blocked', 'pending', 'running'))
$$;

-- Delete finished jobs (and their edges and logs) older than taskq.retention,
-- a batch per call, oldest finished first (jobs_finished_idx).  A purge in
-- id order without that index fell behind under a steady load with short
-- retention (TAP 022: finished jobs left ever longer past retention).
CREATE OR REPLACE FUNCTION taskq._purge_finished(batch integer DEFAULT 500) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    keep interval := taskq._retention();
    ids bigint[];
BEGIN
    IF keep < interval '0' THEN
        RETURN 0;
    END IF;
    SELECT array_agg(j.id) INTO ids FROM (
        SELECT j.id FROM taskq.jobs j
        WHERE j.finished_at < now() - keep AND j.status IN ('succeeded', 'failed', 'cancelled')
          -- a failed parent still holds its blocked dependents
          AND NOT (j.status = 'failed' AND taskq._holds_dependents(j.id))
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

-- Only the indexes a claim, a completion and the purge need; each says which.
COMMENT ON INDEX taskq.jobs_finished_idx IS
    'the retention purge, oldest finished first (_purge_finished)';
COMMENT ON INDEX taskq.jobs_pkey IS
    'completion, cancel, heartbeat and every lock of a job by id (_complete_batch, _fail, '
    '_lock_job)';
COMMENT ON INDEX taskq.jobs_runnable_idx IS
    'claims (_claim: each lane''s candidates in claim order, from its scan floor); '
    'priority aging (_age_priorities); the executors'' sleep (_next_run_at)';
COMMENT ON INDEX taskq.jobs_runnable_queue_idx IS
    'external workers'' claims naming their queues (_claim, one range per queue)';
COMMENT ON INDEX taskq.jobs_running_idx IS
    'expired leases and orphaned jobs (_recover); running jobs per limited queue '
    '(_running_in_queues, src/dag.c)';
COMMENT ON INDEX taskq.jobs_idempotency_idx IS
    'submit''s ON CONFLICT on a live job''s idempotency key (src/submit.c)';
COMMENT ON INDEX taskq.job_dependencies_pkey IS
    'a job''s parents: add_dependency''s duplicate check, the cycle search (_cycle_path)';
COMMENT ON INDEX taskq.job_dependencies_depends_on_idx IS
    'a job''s dependents: their release at its success (_release_dependents), the cancel '
    'cascade (_cancel_job), the purge''s check for waiting dependents (_holds_dependents)';
COMMENT ON INDEX taskq.job_logs_pkey IS
    'a job''s history in order (the CLI''s "taskq status ID") and the purge of a job''s rows';

-- Dead rows: every job leaves three dead versions (claim, completion,
-- purge), and the default thresholds (20 % of the table, at the default
-- cost delay) let a busy queue grow for minutes.  Vacuum these two tables
-- early and unthrottled.  (No fillfactor: a claim or a completion changes
-- status, in the partial indexes' predicates, so no update is HOT, and
-- fillfactor 50 drained no faster, bench/README.md.)  Autovacuum still
-- comes only once per naptime: the launcher vacuums taskq.jobs between
-- (src/jobs_vacuum.c).
ALTER TABLE taskq.jobs SET (
    autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE taskq.job_logs SET (
    autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0);


------------------------------------------------------------------------------
-- One transaction per executor batch: crash charges and cancels
------------------------------------------------------------------------------

-- An executor claims, runs and completes a batch in one transaction, so a
-- crash gives its jobs back uncharged; the job whose handler was running is
-- named in the executor's crash mark (src/crash_marks.c) with the attempts it
-- had before that claim, and charged here: only if it is still pending with
-- those attempts (never twice, never a job whose outcome committed), as a
-- failed attempt of that executor (its log row, a retry, or the dead-letter
-- queue).  Returns 1 charged, 0 nothing to charge, -1 the row is locked (ask
-- again: a live claim holds it).
CREATE FUNCTION taskq._charge_crashed(job_id bigint, attempt integer, started timestamptz,
                                      worker text, error text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM taskq.jobs j
     WHERE j.id = _charge_crashed.job_id AND j.status = 'pending' AND j.attempts = _charge_crashed.attempt
       FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN CASE WHEN EXISTS (SELECT 1 FROM taskq.jobs j
                                  WHERE j.id = _charge_crashed.job_id AND j.status = 'pending'
                                    AND j.attempts = _charge_crashed.attempt)
                    THEN -1 ELSE 0 END;
    END IF;
    -- the attempt as the claim had it, then failed as any attempt fails
    UPDATE taskq.jobs j
       SET status = 'running', attempts = j.attempts + 1, worker = _charge_crashed.worker,
           started_at = _charge_crashed.started, lease_expires_at = NULL
     WHERE j.id = _charge_crashed.job_id;
    PERFORM taskq._fail(ARRAY[job_id], worker, ARRAY[attempt + 1], ARRAY[error], ARRAY[true]);
    RETURN 1;
END
$$;

-- One row write per job: an executor's claim in its batch's transaction locks
-- its jobs and writes nothing (their rows read 'pending' until the batch
-- commits); the outcome writes the claim's columns with it.  True only in
-- that claim (src/executor.c), false in every other session and in an
-- executor's slow path, whose claim commits first.
CREATE FUNCTION taskq._claim_defers_write() RETURNS boolean
    AS 'MODULE_PATHNAME', 'taskq_claim_defers_write' LANGUAGE C VOLATILE;

-- The attempt number of the job whose handler runs in this session (NULL
-- outside a handler).  A handler must ask this, not its job's row: the row
-- still reads the attempts before this claim while the batch runs.
CREATE FUNCTION taskq.current_attempt() RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_current_attempt' LANGUAGE C STABLE;

-- Record successes of jobs claimed without a write (their rows pending,
-- locked by the caller's batch): the claim and the outcome in one update per
-- job, fenced on the attempts the claim read.  Status changes, so the update
-- is not HOT; the claim's own update (and its jobs_running_idx entry) is gone.
CREATE FUNCTION taskq._complete_held(ids bigint[], worker text, results jsonb[],
                                     attempts integer[], started timestamptz[])
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    done taskq._transition[];
BEGIN
    WITH u AS (
        UPDATE taskq.jobs j
           SET status = 'succeeded', result = r.result, attempts = r.attempt,
               worker = _complete_held.worker, started_at = r.started,
               finished_at = clock_timestamp(), updated_at = clock_timestamp(),
               lease_expires_at = NULL
          FROM unnest(_complete_held.ids, _complete_held.results, _complete_held.attempts,
                      _complete_held.started) AS r(id, result, attempt, started)
         -- Each job probed by its id from the arrays, whatever the table's
         -- size when the plan was made (enable_seqscan off).  status::text:
         -- on status = 'pending' a plan read jobs_runnable_idx, whose
         -- predicate it matches; with j.id = ANY (ids) too, a plan took the
         -- jobs side for one row and unnested the arrays once per job.
         WHERE j.id = r.id AND j.status::text = 'pending' AND j.attempts = r.attempt - 1
        RETURNING (j.id, 'succeeded', j.attempts, j.queue, j.job_type, j.in_database)::taskq._transition AS t
    )
    SELECT array_agg(u.t) INTO done FROM u;
    PERFORM taskq._succeeded(done);         -- the rest of the success path (40_history.sql)
END
$$;

-- Write the claim of jobs claimed without a write whose outcome is not a
-- success, so that _fail and _cancel_job record them as any claimed job (a
-- failure costs two writes; failures are rare, successes are not).
CREATE FUNCTION taskq._take_held(ids bigint[], worker text, attempts integer[],
                                 started timestamptz[])
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
    UPDATE taskq.jobs j                                 -- (the plan: see _complete_held)
       SET status = 'running', attempts = r.attempt, worker = $2, started_at = r.started,
           updated_at = clock_timestamp(), lease_expires_at = NULL
      FROM unnest($1, $3, $4) AS r(id, attempt, started)
     WHERE j.id = r.id AND j.status::text = 'pending' AND j.attempts = r.attempt - 1
$$;

-- Flag a job for cancel in the executor batch that holds it (shared memory):
-- 1 flagged, 2 its handler already succeeded in the batch, 3 the batch is
-- recording its outcomes, 0 not held.
CREATE FUNCTION taskq._cancel_held(job_id bigint) RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_cancel_held' LANGUAGE C VOLATILE STRICT;

REVOKE ALL ON FUNCTION taskq._charge_crashed(bigint, integer, timestamptz, text, text),
    taskq._cancel_held(bigint), taskq._claim_defers_write(),
    taskq._complete_held(bigint[], text, jsonb[], integer[], timestamptz[]),
    taskq._take_held(bigint[], text, integer[], timestamptz[]) FROM PUBLIC;

-- An executor's batch holds its jobs' row locks until it commits, and its
-- claim is not committed before: a job it holds is cancelled through its flag
-- in shared memory (the executor skips or interrupts it and records the
-- cancel at its commit), never by waiting for those locks.  A job not held
-- is locked as before; a short wait covers a claim that has locked the row
-- and not yet published its batch.
CREATE OR REPLACE FUNCTION taskq.cancel(job_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j taskq.jobs;
    held integer;
    saved_timeout text := current_setting('lock_timeout');
BEGIN
    -- another role's job is not there for the caller: say so without a lock
    IF job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM taskq.jobs x WHERE x.id = job_id
                                            AND (x.owner = taskq._caller() OR taskq._is_admin())) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    END IF;
    FOR round IN 1..10 LOOP
        held := 0;
        IF EXISTS (SELECT 1 FROM taskq.jobs x
                    WHERE x.id = job_id AND x.in_database AND x.status IN ('pending', 'running')
                      AND (x.owner = taskq._caller() OR taskq._is_admin())) THEN
            held := taskq._cancel_held(job_id);
        END IF;
        IF held = 1 THEN
            RETURN;
        ELSIF held = 2 THEN
            RAISE EXCEPTION 'job % has already run', job_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Its handler succeeded; its executor is committing the outcome.',
                      HINT = 'Only blocked, pending or running jobs can be cancelled.';
        ELSIF held = 3 OR round = 10 THEN
            -- its executor commits at once (or a session of a user holds it)
            j := taskq._lock_job(job_id);
            EXIT;
        END IF;
        BEGIN
            PERFORM set_config('lock_timeout', '20ms', true);
            j := taskq._lock_job(job_id);
            PERFORM set_config('lock_timeout', saved_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            NULL;               -- locked: held by a batch now? look again
        END;
    END LOOP;
    IF j.status NOT IN ('blocked', 'pending', 'running') THEN
        RAISE EXCEPTION 'job % is already %', job_id, j.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only blocked, pending or running jobs can be cancelled.';
    END IF;
    PERFORM taskq._cancel_job(job_id, 'cancelled');
END
$$;
------------------------------------------------------------------------------
-- Databases served (taskq.databases)
------------------------------------------------------------------------------

-- The databases whose launcher and executors taskq runs (src/databases.c).
CREATE FUNCTION taskq._served_databases() RETURNS text[]
    AS 'MODULE_PATHNAME', 'taskq_served_databases' LANGUAGE C STABLE;
-- How many executors this database should have; 0 when it is not served.
CREATE FUNCTION taskq._executors_wanted() RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_executors_wanted_sql' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION taskq._served_databases(), taskq._executors_wanted() FROM PUBLIC;

-- health(): the executors check fails when their number differs from the
-- wanted number, too few or too many (a restarted launcher used to start a
-- second set beside the first, reported as "5 of 2 executors running", ok).
-- In a database taskq does not serve, the launcher and executors checks fail
-- ("no executors serve this database") instead of describing the workers of
-- another database; the wanted number of executors is this database's (its
-- taskq.workers, at most its share of taskq.max_total_workers).
CREATE OR REPLACE FUNCTION taskq.health()
RETURNS TABLE (check_name text, status text, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    launchers integer;
    executors integer;
    changing integer;
    launcher_age interval;
    served text[] := taskq._served_databases();
    wanted integer := taskq._executors_wanted();
    oldest interval := taskq._oldest_runnable_age();
    usage float8 := pg_notification_queue_usage();
    limit_ float8 := taskq._notify_queue_limit();
    dead bigint;
    stuck bigint;
    live bigint;
    dead_tup bigint;
    horizon interval;
BEGIN
    SELECT count(*) FILTER (WHERE kind = 'launcher'), count(*) FILTER (WHERE kind = 'executor'),
           count(*) FILTER (WHERE kind = 'executor' AND state IN ('starting', 'stopping'))
      INTO launchers, executors, changing FROM taskq._worker_slots();
    SELECT max(now() - a.backend_start) INTO launcher_age
      FROM taskq._worker_slots() w JOIN pg_stat_activity a ON a.pid = w.pid
     WHERE w.kind = 'launcher';
    IF NOT current_database() = ANY (served) THEN
        check_name := 'launcher'; status := 'fail';
        message := CASE WHEN cardinality(served) = 0
                        THEN 'no launcher: taskq is not in shared_preload_libraries, or taskq.databases lists no database'
                        ELSE format('no launcher serves this database: taskq.databases lists %s', array_to_string(served, ', ')) END;
        RETURN NEXT;
        check_name := 'executors'; status := 'fail';
        message := 'no executors serve this database: add it to taskq.databases and restart the server';
        RETURN NEXT;
    ELSE
        check_name := 'launcher';
        IF launchers > 0 THEN status := 'ok'; message := 'launcher is running';
        ELSE status := 'fail'; message := 'no launcher: it is waiting for this database or restarting (see the server log)';
        END IF;
        RETURN NEXT;

        -- exactly the wanted number; a difference is only a warning while the
        -- launcher is new (10 s) or while the difference is executors starting
        -- or being stopped
        check_name := 'executors';
        IF executors = wanted THEN
            status := 'ok'; message := format('%s of %s executors running', executors, wanted);
        ELSE
            status := CASE WHEN launcher_age < interval '10 s'
                             OR (changing > 0 AND executors - changing <= wanted) THEN 'warn'
                           ELSE 'fail' END;
            message := CASE WHEN executors > wanted
                            THEN format('%s executors running, more than the %s wanted (taskq.workers, taskq.max_total_workers)', executors, wanted)
                            WHEN executors > 0 THEN format('only %s of %s executors running', executors, wanted)
                            ELSE format('none of %s executors running', wanted) END;
            IF changing > 0 THEN
                message := message || format(' (%s starting or stopping)', changing);
            END IF;
        END IF;
        RETURN NEXT;
    END IF;

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

    -- fair scheduling (issue 23): queues throttled for too long
    RETURN QUERY SELECT * FROM taskq._rate_limit_health();
    RETURN QUERY SELECT * FROM taskq._schedule_health();
END
$$;

-- Installed (or updated) where no worker runs: it works, but jobs with
-- handlers would wait for ever; say so rather than fail.
DO $served$
DECLARE
    served text[] := taskq._served_databases();
BEGIN
    IF NOT current_database() = ANY (served) THEN
        RAISE WARNING 'taskq''s background workers do not serve database "%"', current_database()
            USING DETAIL = 'Jobs with a registered handler are run only in the databases of taskq.databases; external workers can still claim jobs here.',
                  HINT = CASE WHEN cardinality(served) = 0
                              THEN 'Add taskq to shared_preload_libraries and this database to taskq.databases, then restart the server.'
                              ELSE format('Add it to taskq.databases (now: %s) and restart the server.', array_to_string(served, ', ')) END;
    END IF;
END
$served$;


------------------------------------------------------------------------------
-- Fair scheduling: rate limits, concurrency keys, tenants
------------------------------------------------------------------------------

-- A job's concurrency key (e.g. a customer): a queue's key_concurrency
-- bounds how many jobs of one key run at once.  Counted from the running
-- jobs themselves (src/fairness.c), so completions write nothing more.
ALTER TABLE taskq.jobs ADD COLUMN concurrency_key text;
-- rate_limit as given ('100/s'), rate_per_second as claims use it
ALTER TABLE taskq.queues
    ADD COLUMN key_concurrency integer CHECK (key_concurrency > 0),
    ADD COLUMN rate_limit text,
    ADD COLUMN rate_per_second float8 CHECK (rate_per_second > 0),
    ADD COLUMN rate_burst integer CHECK (rate_burst >= 1);

-- Token buckets in shared memory (src/fairness.c), read and spent by
-- taskq._claim under the queues' claim locks.
CREATE FUNCTION taskq._rate_tokens(queues text[], rates float8[], bursts integer[], now timestamptz)
RETURNS integer[]
    AS 'MODULE_PATHNAME', 'taskq_rate_tokens' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION taskq._rate_take(queues text[], counts integer[], throttled boolean[]) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_rate_take' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION taskq._rate_state(queues text[], rates float8[], bursts integer[])
RETURNS TABLE (queue text, tokens float8, wait_seconds float8, throttled bigint, taken bigint,
               throttled_seconds float8)
    AS 'MODULE_PATHNAME', 'taskq_rate_state' LANGUAGE C VOLATILE STRICT;
-- Running jobs per (queue, key) of these queues, claims not yet committed too.
CREATE FUNCTION taskq._running_per_key(queues text[])
RETURNS TABLE (queue text, key text, n integer)
    AS 'MODULE_PATHNAME', 'taskq_running_per_key' LANGUAGE C VOLATILE STRICT;

-- '100/s', '6000/min', '10/h' (also sec, second, minute, hour) as jobs per
-- second; any other text is an error.
CREATE FUNCTION taskq._parse_rate(rate text) RETURNS float8
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m text[] := regexp_match(rate, '^\s*([+-]?[0-9]+(?:\.[0-9]+)?)\s*/\s*([A-Za-z]+)\s*$');
    n numeric;
BEGIN
    IF m IS NULL THEN
        RAISE EXCEPTION 'invalid rate_limit "%"', rate
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a number of jobs per unit, as ''100/s'', ''6000/min'' or ''10/h''.';
    END IF;
    n := m[1]::numeric;
    IF n <= 0 THEN
        RAISE EXCEPTION 'rate_limit must be positive, got "%"', rate USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE lower(m[2])
        WHEN 's', 'sec', 'second' THEN RETURN n;
        WHEN 'm', 'min', 'minute' THEN RETURN n / 60;
        WHEN 'h', 'hour' THEN RETURN n / 3600;
        ELSE
            RAISE EXCEPTION 'unknown unit "%" in rate_limit "%"', m[2], rate
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The units are s, min and h.';
    END CASE;
END
$$;

-- A rate limit and burst as configure_queue and configure_job_type take
-- them: the rate in jobs per second (NULL: none), or the error.
CREATE FUNCTION taskq._check_rate(rate_limit text, rate_burst integer) RETURNS float8
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    per_second float8;
BEGIN
    IF rate_burst IS NOT NULL AND rate_limit IS NULL THEN
        RAISE EXCEPTION 'rate_burst needs a rate_limit' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_burst IS NOT NULL AND rate_burst < 1 THEN
        RAISE EXCEPTION 'rate_burst must be at least 1, got %', rate_burst
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_limit IS NULL THEN
        RETURN NULL;
    END IF;
    per_second := taskq._parse_rate(rate_limit);
    IF per_second > 1000000 THEN
        RAISE EXCEPTION 'rate_limit must be at most 1000000/s, got "%"', rate_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN per_second;
END
$$;

DROP FUNCTION taskq.configure_queue(text, integer, interval, integer);
-- Per-queue settings; NULL leaves a setting unlimited / at the built-in
-- default.  key_concurrency: most running jobs per concurrency key;
-- rate_limit: most jobs claimed per second, minute or hour, in bursts of at
-- most rate_burst (default: one second's worth, at least 1).
CREATE FUNCTION taskq.configure_queue(queue text, concurrency integer DEFAULT NULL,
                                      default_timeout interval DEFAULT NULL,
                                      default_max_attempts integer DEFAULT NULL,
                                      key_concurrency integer DEFAULT NULL,
                                      rate_limit text DEFAULT NULL,
                                      rate_burst integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    per_second float8;
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
    IF key_concurrency IS NOT NULL AND key_concurrency < 1 THEN
        RAISE EXCEPTION 'key_concurrency must be at least 1, got %', key_concurrency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    per_second := taskq._check_rate(rate_limit, rate_burst);
    INSERT INTO taskq.queues AS q (name, concurrency, default_timeout, default_max_attempts,
                                   key_concurrency, rate_limit, rate_per_second, rate_burst)
    VALUES (queue, concurrency, default_timeout, default_max_attempts, key_concurrency,
            btrim(rate_limit), per_second,
            CASE WHEN per_second IS NOT NULL
                 THEN coalesce(rate_burst, greatest(1, ceil(per_second))::integer) END)
    ON CONFLICT (name) DO UPDATE
        SET concurrency = excluded.concurrency, default_timeout = excluded.default_timeout,
            default_max_attempts = excluded.default_max_attempts,
            key_concurrency = excluded.key_concurrency, rate_limit = excluded.rate_limit,
            rate_per_second = excluded.rate_per_second, rate_burst = excluded.rate_burst,
            updated_at = now();
    PERFORM taskq._wake_on_commit();
END
$$;

-- A job type's rate limit, across every queue and worker: a token bucket
-- like a queue's (src/fairness.c), spent by taskq._claim under the type's
-- claim lock (rate columns NULL: unlimited); and whether its jobs may name
-- a tenant or a concurrency key (checked by every submit path).  No row:
-- unlimited, both allowed.
CREATE TABLE taskq.job_types (
    job_type        text PRIMARY KEY CHECK (length(job_type) BETWEEN 1 AND 200),
    rate_limit      text,
    rate_per_second float8 CHECK (rate_per_second > 0),
    rate_burst      integer CHECK (rate_burst >= 1),
    allow_tenant    boolean NOT NULL DEFAULT true,
    allow_concurrency_key boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_per_second IS NULL)
           AND (rate_per_second IS NULL) = (rate_burst IS NULL))
);

-- The name of a job type's bucket and claim lock, apart from the queues'
-- (which share their space: a queue named so would only share its limit).
CREATE FUNCTION taskq._job_type_bucket(job_type text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT E'\x1f' || 'job_type ' || job_type
$$;
REVOKE ALL ON FUNCTION taskq._job_type_bucket(text) FROM PUBLIC;

-- A job type's rate limit: most jobs of it claimed per second, minute or
-- hour, in bursts of at most rate_burst (default: one second's worth, at
-- least 1); rate_limit NULL removes the limit.  allow_tenant and
-- allow_concurrency_key false make submits naming one fail (22023); NULL
-- is true.  Every call sets all of them.
CREATE FUNCTION taskq.configure_job_type(job_type text, rate_limit text DEFAULT NULL,
                                         rate_burst integer DEFAULT NULL,
                                         allow_tenant boolean DEFAULT true,
                                         allow_concurrency_key boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    per_second float8;
BEGIN
    PERFORM taskq._require_admin('configure a job type');
    PERFORM taskq._check_name('job_type', job_type);
    per_second := taskq._check_rate(rate_limit, rate_burst);
    IF per_second IS NULL AND coalesce(allow_tenant, true) AND coalesce(allow_concurrency_key, true) THEN
        DELETE FROM taskq.job_types t WHERE t.job_type = configure_job_type.job_type;
    ELSE
        INSERT INTO taskq.job_types AS t (job_type, rate_limit, rate_per_second, rate_burst,
                                          allow_tenant, allow_concurrency_key)
        VALUES (job_type, btrim(rate_limit), per_second,
                CASE WHEN per_second IS NOT NULL
                     THEN coalesce(rate_burst, greatest(1, ceil(per_second))::integer) END,
                coalesce(allow_tenant, true), coalesce(allow_concurrency_key, true))
        ON CONFLICT (job_type) DO UPDATE
            SET rate_limit = excluded.rate_limit, rate_per_second = excluded.rate_per_second,
                rate_burst = excluded.rate_burst, allow_tenant = excluded.allow_tenant,
                allow_concurrency_key = excluded.allow_concurrency_key, updated_at = now();
    END IF;
    PERFORM taskq._wake_on_commit();
END
$$;

-- How long an external worker should wait before it claims again from these
-- queues (NULL: every queue) when a rate limit held its claim back: zero when
-- one of the named rate-limited queues has a token now, else the time until
-- the first has one; NULL when none of them is rate-limited.
CREATE FUNCTION taskq.claim_retry_after(queues text[] DEFAULT NULL) RETURNS interval
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT make_interval(secs => min(s.wait_seconds))
      FROM (SELECT array_agg(q.name) AS n, array_agg(q.rate_per_second) AS r, array_agg(q.rate_burst) AS b
              FROM taskq.queues q
             WHERE q.rate_per_second IS NOT NULL AND NOT q.paused
               AND (claim_retry_after.queues IS NULL OR q.name = ANY (claim_retry_after.queues))) a,
           LATERAL taskq._rate_state(a.n, a.r, a.b) s
$$;

-- Fair scheduling's rows of taskq.metrics(): per rate-limited queue its
-- limit, tokens, claims throttled and tokens spent since the server started;
-- per keyed queue the keys running and the jobs due but waiting for their
-- key (this one reads the due jobs of keyed queues).
CREATE FUNCTION taskq._fair_metrics()
RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH rated AS (
        SELECT array_agg(name) AS n, array_agg(rate_per_second) AS r, array_agg(rate_burst) AS b
          FROM taskq.queues WHERE rate_per_second IS NOT NULL
    ), buckets AS (
        SELECT s.* FROM rated, LATERAL taskq._rate_state(rated.n, rated.r, rated.b) s
    ), keyed AS (
        SELECT coalesce(array_agg(name), '{}') AS n FROM taskq.queues WHERE key_concurrency IS NOT NULL
    ), running AS (
        SELECT r.* FROM keyed, LATERAL taskq._running_per_key(keyed.n) r
    )
    SELECT m.name, jsonb_build_object('queue', b.queue), m.v
      FROM buckets b JOIN taskq.queues q ON q.name = b.queue,
           LATERAL (VALUES ('taskq_rate_limit_per_second', q.rate_per_second),
                           ('taskq_rate_limit_burst', q.rate_burst::float8),
                           ('taskq_rate_limit_tokens', b.tokens),
                           ('taskq_rate_limit_throttled_claims_total', b.throttled::float8),
                           ('taskq_rate_limit_taken_jobs_total', b.taken::float8),
                           ('taskq_rate_limit_throttled_seconds', coalesce(b.throttled_seconds, 0))) m(name, v)
    UNION ALL
    -- the same of each job type's limit, by job_type
    SELECT m.name, jsonb_build_object('job_type', t.job_type), m.v
      FROM taskq.job_types t,
           LATERAL taskq._rate_state(ARRAY[taskq._job_type_bucket(t.job_type)], ARRAY[t.rate_per_second],
                                     ARRAY[t.rate_burst]) b,
           LATERAL (VALUES ('taskq_job_type_rate_limit_per_second', t.rate_per_second),
                           ('taskq_job_type_rate_limit_burst', t.rate_burst::float8),
                           ('taskq_job_type_rate_limit_tokens', b.tokens),
                           ('taskq_job_type_rate_limit_throttled_claims_total', b.throttled::float8),
                           ('taskq_job_type_rate_limit_taken_jobs_total', b.taken::float8),
                           ('taskq_job_type_rate_limit_throttled_seconds', coalesce(b.throttled_seconds, 0))) m(name, v)
     WHERE t.rate_per_second IS NOT NULL
    UNION ALL
    SELECT 'taskq_key_limit_running_keys', jsonb_build_object('queue', q.name),
           (SELECT count(*) FROM running r WHERE r.queue = q.name)::float8
      FROM taskq.queues q WHERE q.key_concurrency IS NOT NULL
    UNION ALL
    SELECT 'taskq_key_limit_waiting_jobs', jsonb_build_object('queue', q.name),
           (SELECT count(*) FROM taskq.jobs j JOIN running r ON r.queue = j.queue AND r.key = j.concurrency_key
             WHERE j.status = 'pending' AND j.queue = q.name AND j.run_at <= now()
               AND r.n >= q.key_concurrency)::float8
      FROM taskq.queues q WHERE q.key_concurrency IS NOT NULL
$$;

REVOKE ALL ON FUNCTION taskq._rate_tokens(text[], float8[], integer[], timestamptz),
    taskq._rate_take(text[], integer[], boolean[]), taskq._rate_state(text[], float8[], integer[]),
    taskq._running_per_key(text[]), taskq._parse_rate(text), taskq._check_rate(text, integer),
    taskq._fair_metrics() FROM PUBLIC;

-- Every rate limit (kind 'queue' or 'job_type'), its tokens now and how
-- long every claim has been throttled by it (NULL: not throttled).
CREATE FUNCTION taskq.rate_limit_state()
RETURNS TABLE (kind text, name text, rate_limit text, tokens float8, throttled_for interval)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH rated AS (
        SELECT 'queue' AS kind, q.name, q.name AS bucket, q.rate_limit, q.rate_per_second, q.rate_burst
          FROM taskq.queues q WHERE q.rate_per_second IS NOT NULL
        UNION ALL
        SELECT 'job_type', t.job_type, taskq._job_type_bucket(t.job_type), t.rate_limit, t.rate_per_second,
               t.rate_burst
          FROM taskq.job_types t WHERE t.rate_per_second IS NOT NULL
    )
    SELECT r.kind, r.name, r.rate_limit, s.tokens, make_interval(secs => s.throttled_seconds)
      FROM (SELECT array_agg(bucket) AS n, array_agg(rate_per_second) AS r, array_agg(rate_burst) AS b
              FROM rated) a,
           LATERAL taskq._rate_state(a.n, a.r, a.b) s
      JOIN rated r ON r.bucket = s.queue
     ORDER BY r.kind DESC, r.name
$$;

-- health()'s "rate_limits" check: a warning when a queue with due jobs has
-- had every claim throttled for longer than taskq.throttle_warn_after (its
-- limit is below the demand, or a burst is too small for the batches).
CREATE FUNCTION taskq._rate_limit_health(OUT check_name text, OUT status text, OUT message text)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    warn_after interval := taskq._throttle_warn_after();
    slow text;
BEGIN
    check_name := 'rate_limits';
    SELECT string_agg(format('%s %s (%s, for %s)', replace(s.kind, '_', ' '), s.name, s.rate_limit,
                             date_trunc('second', s.throttled_for)), ', ')
      INTO slow
      FROM taskq.rate_limit_state() s
     WHERE s.throttled_for > warn_after
       AND EXISTS (SELECT FROM taskq.jobs j
                    WHERE j.status = 'pending' AND j.run_at <= now()
                      AND CASE s.kind WHEN 'queue' THEN j.queue = s.name ELSE j.job_type = s.name END);
    IF slow IS NULL THEN
        status := 'ok';
        message := format('no rate limit has throttled a queue for longer than %s', warn_after);
    ELSE
        status := 'warn';
        message := format('rate limits have throttled every claim for longer than %s: %s', warn_after, slow);
    END IF;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION taskq._rate_limit_health() FROM PUBLIC;
------------------------------------------------------------------------------
-- Tenants (issue 23): who a job is for, and each tenant's weight
------------------------------------------------------------------------------

-- A job's tenant (e.g. a customer), set at submit; NULL: none.  Claims
-- share a queue's priority between tenants by weight, in turns: fair_at.
ALTER TABLE taskq.jobs ADD COLUMN tenant text;
ALTER TABLE taskq.jobs ADD COLUMN fair_at timestamptz;

-- Weights set by an admin; a tenant without a row weighs 1.
CREATE TABLE taskq.tenants (
    name       text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    weight     float8 NOT NULL CHECK (weight > 0 AND weight <= 1000000),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Set a tenant's weight (its share against others of weight 1); NULL puts
-- it back to the default, 1.  Admin-only: a tenant's own roles must not
-- raise their share.
CREATE FUNCTION taskq.configure_tenant(tenant text, weight float8 DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM taskq._require_admin('configure a tenant');
    PERFORM taskq._check_name('tenant', tenant);
    IF weight IS NULL THEN
        DELETE FROM taskq.tenants t WHERE t.name = configure_tenant.tenant;
        RETURN;
    END IF;
    -- (NaN > 0 holds for float8: refused by name)
    IF weight <= 0 OR weight = 'NaN' THEN
        RAISE EXCEPTION 'weight must be positive, got %', weight
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF weight > 1000000 THEN
        RAISE EXCEPTION 'weight must be at most 1000000, got %', weight
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO taskq.tenants AS t (name, weight) VALUES (tenant, weight)
    ON CONFLICT (name) DO UPDATE SET weight = excluded.weight, updated_at = now();
END
$$;

-- A pending tenant job's turn (fair_at): after its tenant's last pending
-- turn (or its own run_at when that is later) by 1 s / weight.  A tenant's
-- backlog thus holds turns far ahead, and another tenant's new job, whose
-- turn is now, is claimed before it; busy tenants alternate by weight.  Set
-- on INSERT of a pending job with a tenant (trigger jobs_note_pending_insert
-- and src/job_rows.c, by src/tenants.c); kept by retries, so a retried job
-- keeps its turn.

-- Only tenant jobs are in these: untenanted ones cost nothing more.
-- A tenant's last turn (src/tenants.c).
CREATE INDEX jobs_tenant_turn_idx ON taskq.jobs (tenant, fair_at)
    WHERE status = 'pending' AND fair_at IS NOT NULL;
-- Claims read each lane's tenant jobs in turn order beside jobs_runnable_idx.
CREATE INDEX jobs_runnable_turn_idx ON taskq.jobs (in_database, effective_priority, fair_at, id)
    WHERE status = 'pending' AND fair_at IS NOT NULL;
-- External workers claiming named queues: the same per queue.
CREATE INDEX jobs_runnable_queue_turn_idx ON taskq.jobs (queue, effective_priority, fair_at, id)
    WHERE status = 'pending' AND NOT in_database AND fair_at IS NOT NULL;
COMMENT ON INDEX taskq.jobs_tenant_turn_idx IS
    'a tenant''s last pending turn (src/tenants.c)';
COMMENT ON INDEX taskq.jobs_runnable_turn_idx IS
    'claims (_claim: each lane''s tenant jobs in turn order); priority aging of tenant jobs '
    '(_age_priorities)';
COMMENT ON INDEX taskq.jobs_runnable_queue_turn_idx IS
    'external workers'' claims naming their queues: their tenant jobs in turn order (_claim)';

-- Aging (taskq--0.1.0.sql) by turn for tenant jobs: a backlog's turns lie
-- ahead, and aging it by run_at would lift it all above another tenant's
-- new job; by turn, a tenant job ages once its turn has waited a step.
CREATE OR REPLACE FUNCTION taskq._age_priorities(batch integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    step interval := taskq._aging_interval();
    n integer;
BEGIN
    IF step <= interval '0' THEN
        RETURN 0;
    END IF;
    -- the oldest of each lane and priority, read by the claim indexes
    WITH c AS (
        SELECT o.id FROM (VALUES (true), (false)) AS lane(d),
             unnest(ARRAY['high', 'normal', 'low']::taskq.priority[]) AS p,
             LATERAL (SELECT j.id, j.aged_at, j.run_at, j.fair_at FROM taskq.jobs j
                      WHERE j.status = 'pending' AND j.in_database = lane.d
                        AND j.effective_priority = p AND j.run_at <= now() - step
                      ORDER BY j.run_at LIMIT batch) o
        WHERE coalesce(o.aged_at, o.fair_at, o.run_at) <= now() - step
        UNION
        SELECT o.id FROM (VALUES (true), (false)) AS lane(d),
             unnest(ARRAY['high', 'normal', 'low']::taskq.priority[]) AS p,
             LATERAL (SELECT j.id, j.aged_at FROM taskq.jobs j
                      WHERE j.status = 'pending' AND j.fair_at IS NOT NULL AND j.in_database = lane.d
                        AND j.effective_priority = p AND j.fair_at <= now() - step
                        AND j.run_at <= now() - step
                      ORDER BY j.fair_at LIMIT batch) o
        WHERE o.aged_at IS NULL OR o.aged_at <= now() - step
    ), locked AS (
        -- aged_at again here: a row aged by a concurrent run after c read it
        -- is locked in its new version, and these conditions are checked
        -- again on that version (c's are not): it must not age twice
        SELECT j.id FROM taskq.jobs j JOIN c USING (id)
        WHERE j.status = 'pending' AND (j.aged_at IS NULL OR j.aged_at <= now() - step)
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

-- The claim's candidates in a lane and priority holding tenant jobs: its
-- first jobs by run_at (from the scan floor, as without tenants) and its
-- first tenant jobs by turn, merged by turn (an untenanted job's turn is its
-- run_at); up to wanted, each locked as it is read (SKIP LOCKED, so that
-- concurrent claims take different jobs; unlocked reads locked afterwards
-- made two busy claimers collide on the same first jobs round after
-- round).  A row read but not taken stays locked until the claim's
-- transaction ends, as one that does not fit the budget does.
CREATE FUNCTION taskq._claim_by_turn(in_database boolean, queues text[], t timestamptz,
                                     prio taskq.priority, head_run_at timestamptz, head_id bigint,
                                     paused text[], full_queues text[], only_owner regrole,
                                     round integer, seen bigint[], wanted integer,
                                     full_kq text[], full_kk text[], full_types text[])
RETURNS TABLE (id bigint, queue text, cpu_units integer, memory_mb integer, run_at timestamptz,
               concurrency_key text, job_type text, turn timestamptz)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF queues IS NULL OR in_database THEN
        RETURN QUERY
        SELECT DISTINCT ON (b.turn, b.id) b.* FROM (
            SELECT * FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at, j.concurrency_key,
                                  j.job_type, coalesce(j.fair_at, j.run_at) AS turn
                             FROM taskq.jobs j
                            WHERE j.status = 'pending' AND j.run_at <= t
                              AND j.effective_priority = prio
                              AND (j.run_at, j.id) >= (head_run_at, head_id)
                              AND (queues IS NULL OR j.queue = ANY (queues))
                              AND NOT (j.queue = ANY (paused)) AND NOT (j.queue = ANY (full_queues))
                              AND (only_owner IS NULL OR j.owner = only_owner)
                              AND j.in_database = _claim_by_turn.in_database
                              AND (round = 1 OR j.id <> ALL (seen))
                              AND (cardinality(full_kk) = 0 OR j.concurrency_key IS NULL
                                   OR NOT EXISTS (SELECT FROM unnest(full_kq, full_kk) AS f(q, k)
                                                  WHERE f.q = j.queue AND f.k = j.concurrency_key))
                              AND NOT (j.job_type = ANY (full_types))
                            ORDER BY j.run_at, j.id LIMIT wanted
                              FOR NO KEY UPDATE OF j SKIP LOCKED) AS by_run_at
            UNION ALL
            SELECT * FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at, j.concurrency_key,
                                  j.job_type, j.fair_at
                             FROM taskq.jobs j
                            WHERE j.status = 'pending' AND j.fair_at IS NOT NULL AND j.run_at <= t
                              AND j.effective_priority = prio
                              AND (queues IS NULL OR j.queue = ANY (queues))
                              AND NOT (j.queue = ANY (paused)) AND NOT (j.queue = ANY (full_queues))
                              AND (only_owner IS NULL OR j.owner = only_owner)
                              AND j.in_database = _claim_by_turn.in_database
                              AND (round = 1 OR j.id <> ALL (seen))
                              AND (cardinality(full_kk) = 0 OR j.concurrency_key IS NULL
                                   OR NOT EXISTS (SELECT FROM unnest(full_kq, full_kk) AS f(q, k)
                                                  WHERE f.q = j.queue AND f.k = j.concurrency_key))
                              AND NOT (j.job_type = ANY (full_types))
                            ORDER BY j.fair_at, j.id LIMIT wanted
                              FOR NO KEY UPDATE OF j SKIP LOCKED) AS by_turn) b
         ORDER BY b.turn, b.id LIMIT wanted;
        RETURN;
    END IF;
    -- named queues of external workers: each queue's own ranges of
    -- jobs_runnable_queue_idx and jobs_runnable_queue_turn_idx, its name a
    -- literal (as in _claim)
    RETURN QUERY EXECUTE
        'SELECT DISTINCT ON (u.turn, u.id) u.* FROM ('
        || (SELECT string_agg(format(
               'SELECT * FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at, j.concurrency_key,'
               '       j.job_type, coalesce(j.fair_at, j.run_at) AS turn FROM taskq.jobs j'
               ' WHERE j.status = ''pending'' AND NOT j.in_database AND j.queue = %1$L'
               '   AND j.run_at <= $1 AND j.effective_priority = $2 AND (j.run_at, j.id) >= ($3, $4) %3$s'
               ' ORDER BY j.run_at, j.id LIMIT $10 FOR NO KEY UPDATE OF j SKIP LOCKED) AS q%2$s'
               ' UNION ALL '
               'SELECT * FROM (SELECT j.id, j.queue, j.cpu_units, j.memory_mb, j.run_at, j.concurrency_key,'
               '       j.job_type, j.fair_at FROM taskq.jobs j'
               ' WHERE j.status = ''pending'' AND NOT j.in_database AND j.queue = %1$L'
               '   AND j.fair_at IS NOT NULL AND j.run_at <= $1 AND j.effective_priority = $2 %3$s'
               ' ORDER BY j.fair_at, j.id LIMIT $10 FOR NO KEY UPDATE OF j SKIP LOCKED) AS r%2$s', name, n,
               '   AND NOT (j.queue = ANY ($5)) AND NOT (j.queue = ANY ($6))'
               '   AND ($7 IS NULL OR j.owner = $7) AND ($8 = 1 OR j.id <> ALL ($9))'
               '   AND (cardinality($12) = 0 OR j.concurrency_key IS NULL'
               '        OR NOT EXISTS (SELECT FROM unnest($11, $12) AS f(q, k)'
               '                       WHERE f.q = j.queue AND f.k = j.concurrency_key))'
               '   AND NOT (j.job_type = ANY ($13))'), ' UNION ALL ')
            FROM (SELECT name, row_number() OVER () AS n
                    FROM (SELECT DISTINCT name FROM unnest(queues) AS name) d) named)
        || ') AS u ORDER BY u.turn, u.id LIMIT $10'
        USING t, prio, head_run_at, head_id, paused, full_queues, only_owner, round,
              seen, wanted, full_kq, full_kk, full_types;
END
$$;

-- Tenants' row of taskq.metrics(), per queue with such jobs: the due
-- tenant jobs whose turn is still ahead (waiting for their tenant's turn).
-- Read per lane and priority as a range (turn > now) of
-- jobs_runnable_turn_idx, which holds only pending tenant jobs: the cost
-- grows with the jobs waiting, not with other jobs.  Labels: queue only.
-- (Busy tenants per queue, a count of distinct tenants, sorted the whole
-- tenant backlog: 420 ms for 100,000 tenants; left out.)
CREATE FUNCTION taskq._tenant_metrics()
RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'taskq_tenant_turn_waiting_jobs', jsonb_build_object('queue', j.queue), count(*)::float8
      FROM (VALUES (true), (false)) AS lane(d),
           unnest(ARRAY['high', 'normal', 'low']::taskq.priority[]) AS p,
           LATERAL (SELECT j.queue FROM taskq.jobs j
                     WHERE j.status = 'pending' AND j.fair_at IS NOT NULL
                       AND j.in_database = lane.d AND j.effective_priority = p
                       AND j.fair_at > now() AND j.run_at <= now()) j
     GROUP BY j.queue
$$;
REVOKE ALL ON FUNCTION taskq._tenant_metrics() FROM PUBLIC;
------------------------------------------------------------------------------
-- What a user sees while an executor's batch runs
------------------------------------------------------------------------------

-- What a user sees while a batch runs: an executor's claim is not committed
-- before its batch ends, so the rows of the jobs it holds still say
-- 'pending'.  Shared memory knows them (the batch's ids, published for
-- cancel); taskq.live_jobs is taskq.jobs with those jobs shown as running.
CREATE FUNCTION taskq._held_jobs(OUT job_id bigint, OUT pid integer, OUT worker text,
                                 OUT started_at timestamptz)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'taskq_held_jobs' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION taskq._held_jobs() FROM PUBLIC;

CREATE VIEW taskq.live_jobs WITH (security_invoker) AS
    SELECT j.id, j.queue, j.job_type, j.priority, j.effective_priority,
           CASE WHEN h.job_id IS NULL THEN j.status ELSE 'running' END AS status,
           j.payload, j.result, j.last_error,
           CASE WHEN h.job_id IS NULL THEN j.attempts ELSE j.attempts + 1 END AS attempts,
           j.max_attempts, j.backoff, j.timeout, j.cpu_units, j.memory_mb, j.run_at,
           j.idempotency_key, j.owner,
           CASE WHEN h.job_id IS NULL THEN j.worker ELSE h.worker END AS worker,
           j.lease_expires_at, j.unfinished_parents, j.in_database, j.aged_at, j.created_at,
           CASE WHEN h.job_id IS NULL THEN j.started_at ELSE h.started_at END AS started_at,
           j.finished_at, j.updated_at, j.concurrency_key, j.tenant, j.fair_at
      FROM taskq.jobs j
      LEFT JOIN taskq._held_jobs() h ON h.job_id = j.id AND j.status = 'pending';
COMMENT ON VIEW taskq.live_jobs IS
    'taskq.jobs, where a job held by an executor''s open batch (its claim not yet committed) shows as running, with its attempt, executor and start';
------------------------------------------------------------------------------
-- Schedules, metrics and monitoring
------------------------------------------------------------------------------

-- Why pg_cron could not start a run as role, or NULL.  pg_cron starts each
-- run as the role that scheduled it: as a background worker when
-- cron.use_background_workers is on, else over libpq to cron.host with no
-- password, which works only where pg_hba.conf's first matching rule trusts
-- it.  (Runs as the extension's owner: pg_hba_file_rules is theirs to read.)
CREATE FUNCTION taskq._cron_login_problem(role regrole) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    host text := coalesce(nullif(current_setting('cron.host', true), ''), 'localhost');
    rname name := (SELECT r.rolname FROM pg_roles r WHERE r.oid = role);
    addrs inet[];
    a inet;
    rule record;
BEGIN
    IF NOT (SELECT r.rolcanlogin FROM pg_roles r WHERE r.oid = role) THEN
        RETURN format('role %s cannot log in (NOLOGIN), and pg_cron runs a schedule as its role', role);
    END IF;
    IF coalesce(current_setting('cron.use_background_workers', true), 'off') = 'on' THEN
        RETURN NULL;
    END IF;
    IF host LIKE '/%' THEN
        addrs := ARRAY[NULL::inet];
    ELSIF current_setting('listen_addresses') = '' THEN
        RETURN format('pg_cron would connect over TCP to cron.host = %s, but listen_addresses is empty', host);
    ELSIF host = 'localhost' THEN
        addrs := ARRAY['127.0.0.1'::inet, '::1'::inet];
    ELSE
        BEGIN
            addrs := ARRAY[host::inet];
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN format('pg_cron would connect to cron.host = %s, a host name whose pg_hba.conf rule taskq cannot check', host);
        END;
    END IF;
    FOREACH a IN ARRAY addrs LOOP
        SELECT r.line_number, r.auth_method INTO rule
          FROM pg_hba_file_rules r
         WHERE r.error IS NULL
           AND CASE WHEN a IS NULL THEN r.type = 'local'
                    ELSE r.type IN ('host', CASE WHEN current_setting('ssl') = 'on' THEN 'hostssl' ELSE 'hostnossl' END)
                         AND (r.address IN ('all', 'samehost', 'samenet', 'localhost')
                              OR (r.address ~ '^[0-9a-fA-F.:]+$' AND r.netmask IS NOT NULL
                                  AND family(r.address::inet) = family(a)
                                  AND host(a & r.netmask::inet) = host(r.address::inet & r.netmask::inet)))
               END
           AND ('all' = ANY (r.database) OR current_database() = ANY (r.database)
                OR ('sameuser' = ANY (r.database) AND current_database() = rname))
           AND ('all' = ANY (r.user_name) OR rname = ANY (r.user_name)
                OR EXISTS (SELECT 1 FROM unnest(r.user_name) AS u(n)
                            WHERE u.n LIKE '+%' AND to_regrole(substr(u.n, 2)) IS NOT NULL
                              AND pg_has_role(role, to_regrole(substr(u.n, 2)), 'MEMBER')))
         ORDER BY r.line_number LIMIT 1;
        IF NOT FOUND THEN
            RETURN format('no pg_hba.conf rule accepts pg_cron''s connection as %s to %s (cron.host = %s)',
                          role, current_database(), host);
        ELSIF rule.auth_method <> 'trust' THEN
            RETURN format('pg_hba.conf line %s asks pg_cron''s connection as %s (cron.host = %s) for %s, and pg_cron has no password',
                          rule.line_number, role, host, rule.auth_method);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION taskq._cron_login_problem(regrole) FROM PUBLIC;

-- Refuses a schedule pg_cron could not run (called by schedule()).
CREATE FUNCTION taskq._check_cron_can_run(role regrole) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text := taskq._cron_login_problem(role);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'pg_cron could not run this schedule as role %', role
            USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = problem || '.',
                  HINT = CASE WHEN problem LIKE '%NOLOGIN%'
                              THEN format('ALTER ROLE %s LOGIN, or schedule as a role that can log in.', role)
                              ELSE 'Set cron.use_background_workers = on (and max_worker_processes to fit cron.max_running_jobs besides taskq''s workers), or give this role a trust rule in pg_hba.conf and set cron.host to the socket directory.' END;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION taskq._check_cron_can_run(regrole) FROM PUBLIC;

-- health()'s "schedules" check: runs pg_cron failed in the last hour, and
-- schedules it could not run now.  A role sees its own schedules; a
-- taskq_admin member every one, with pg_cron's error; a taskq_monitor
-- member every one's count and names.
CREATE FUNCTION taskq._schedule_health(OUT check_name text, OUT status text, OUT message text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me regrole := taskq._caller();
    admin boolean := taskq._is_admin();
    everyone boolean := admin OR pg_has_role(me, 'taskq_monitor', 'MEMBER');
    failed bigint;
    failed_names text;
    last_error text;
    stuck text;
BEGIN
    check_name := 'schedules';
    IF to_regclass('cron.job_run_details') IS NULL THEN
        status := 'ok'; message := 'pg_cron is not installed in this database';
        RETURN NEXT;
        RETURN;
    END IF;
    EXECUTE $q$
        SELECT count(*), string_agg(DISTINCT s.name, ', '),
               (array_agg(d.return_message ORDER BY d.start_time DESC))[1]
          FROM cron.job_run_details d JOIN taskq.schedules s ON s.cron_jobid = d.jobid
         WHERE d.status = 'failed' AND d.start_time > now() - interval '1 hour'
           AND (s.owner = $1 OR $2)$q$
       INTO failed, failed_names, last_error USING me, everyone;
    SELECT string_agg(format('%s (%s)', s.name, p.problem), '; ' ORDER BY s.name) INTO stuck
      FROM taskq.schedules s, LATERAL (SELECT taskq._cron_login_problem(s.owner) AS problem) p
     WHERE (s.owner = me OR everyone) AND p.problem IS NOT NULL;
    IF failed = 0 AND stuck IS NULL THEN
        status := 'ok'; message := 'no pg_cron run of a schedule failed in the last hour';
    ELSE
        status := 'fail';
        message := concat_ws('; ',
            CASE WHEN failed > 0 THEN
                format('%s pg_cron runs failed in the last hour (schedules: %s)', failed, failed_names) ||
                CASE WHEN admin OR NOT everyone THEN format(', the last with: %s', btrim(last_error)) ELSE '' END
            END,
            CASE WHEN stuck IS NOT NULL THEN 'pg_cron cannot run: ' || stuck END);
    END IF;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION taskq._schedule_health() FROM PUBLIC;

-- Claims and finished attempts of both lanes (executors and external
-- workers), noted by this trigger and counted at commit in shared memory
-- (src/job_metrics.c): the source of the _total counters and histograms.
CREATE FUNCTION taskq._count_transition() RETURNS trigger
    AS 'MODULE_PATHNAME', 'taskq_count_transition' LANGUAGE C;
REVOKE ALL ON FUNCTION taskq._count_transition() FROM PUBLIC;
CREATE TRIGGER jobs_count_transition BEFORE UPDATE OF status ON taskq.jobs
    FOR EACH ROW WHEN ((OLD.status = 'running') IS DISTINCT FROM (NEW.status = 'running')
                       OR (OLD.status = 'pending' AND NEW.status = 'succeeded'))
    EXECUTE FUNCTION taskq._count_transition();

-- This database's counters and histogram buckets, one row per sample.
CREATE FUNCTION taskq._job_metrics(
    OUT metric text, OUT queue text, OUT job_type text, OUT lane text,
    OUT outcome text, OUT le text, OUT value float8)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'taskq_job_metrics' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION taskq._job_metrics() FROM PUBLIC;

-- Every metric as (name, labels, value), named as Prometheus names them:
-- metrics_prometheus() prints exactly these.  Counters end in _total and
-- only grow (from zero at server start); rates are Prometheus' rate().
-- jit off: the function scans' default estimates (1,000 rows each) put the
-- union past jit_above_cost, and compiling it took 30-70 ms of every call,
-- which postgres_exporter makes once per metric namespace (~15 per scrape).
CREATE OR REPLACE FUNCTION taskq.metrics()
RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
    SELECT 'taskq_queue_depth', jsonb_build_object('queue', d.queue, 'priority', d.priority, 'status', d.status),
           count(*)::float8
      FROM taskq.jobs d
     WHERE d.status IN ('blocked', 'pending', 'running')
     GROUP BY d.queue, d.priority, d.status
    UNION ALL
    SELECT 'taskq_dead_letter_jobs', '{}'::jsonb, (SELECT count(*) FROM taskq.jobs WHERE status = 'failed')::float8
    UNION ALL
    SELECT c.metric,
           jsonb_strip_nulls(jsonb_build_object('queue', c.queue, 'job_type', c.job_type, 'lane', c.lane,
                                                'outcome', c.outcome, 'le', c.le)),
           c.value
      FROM taskq._job_metrics() c
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
    UNION ALL
    SELECT 'taskq_health_status', jsonb_build_object('check', h.check_name),
           CASE h.status WHEN 'ok' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END
      FROM taskq.health() h
    UNION ALL
    -- fair scheduling (issue 23): rate and key limits
    SELECT * FROM taskq._fair_metrics()
    UNION ALL
    -- and tenants: jobs waiting for their turn
    SELECT * FROM taskq._tenant_metrics()
$$;


------------------------------------------------------------------------------
-- Submission: submit, submit_many and the checks of their jobs
------------------------------------------------------------------------------

-- Job rows are written two ways, both used by submit and submit_many alike:
-- plain jobs (no parents, no key) straight into the heap (src/job_rows.c),
-- any other by one INSERT (src/submit.c, INSERT_JOBS_SQL): submit's and the
-- job by job path's with one job, the set-wise path's (_insert_jobs) with
-- the batch.

DROP FUNCTION taskq.submit(text, jsonb, taskq.priority, text, bigint[], timestamptz, integer,
                           interval, integer, integer, text, interval);
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
    backoff         interval DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    tenant          text DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'taskq_submit' LANGUAGE C VOLATILE;

DROP FUNCTION taskq._insert_job(text, jsonb, taskq.priority, text, bigint[], timestamptz, integer,
                                interval, integer, integer, text, interval, regrole);
-- Insert one validated job owned by owner, with its edges and notification
-- (src/submit.c, as taskq.submit).  The job by job path of submit_many.
CREATE FUNCTION taskq._insert_job(
    job_type text, payload jsonb, priority taskq.priority, queue text,
    depends_on bigint[], run_at timestamptz, max_attempts integer, timeout interval,
    cpu_units integer, memory_mb integer, idempotency_key text, backoff interval,
    concurrency_key text, tenant text, owner regrole)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'taskq_insert_job' LANGUAGE C VOLATILE;

-- submit_many's set-wise path (src/submit.c): write jobs (checked, without
-- parents or key, their job types locked) owned by owner with the one
-- INSERT submit uses; publish and wake as submit does.  Of each element
-- only the columns a submit sets are read, NULL being the default.  Their
-- ids, in the order of jobs.
CREATE FUNCTION taskq._insert_jobs(jobs taskq.jobs[], owner regrole) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'taskq_insert_jobs' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION taskq._insert_jobs(taskq.jobs[], regrole) FROM PUBLIC;

-- The first bad job of a submit_many batch, as an error naming its index and
-- key (src/submit.c).
CREATE FUNCTION taskq._check_batch(jobs jsonb) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_check_batch' LANGUAGE C STABLE STRICT;

REVOKE ALL ON FUNCTION taskq._check_batch(jsonb) FROM PUBLIC;

-- submit_many's set-wise check of the job types' allow_tenant and
-- allow_concurrency_key (taskq.submit and _insert_job check in C,
-- src/tenants.c; a plain batch names neither): the first job refused.
CREATE FUNCTION taskq._check_job_type_rules(jobs jsonb) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    IF NOT EXISTS (SELECT FROM taskq.job_types t WHERE NOT (t.allow_tenant AND t.allow_concurrency_key)) THEN
        RETURN;
    END IF;
    SELECT x.ord - 1 AS i, t.job_type,
           CASE WHEN NOT t.allow_tenant AND x.e->>'tenant' IS NOT NULL THEN 'tenant'
                ELSE 'concurrency_key' END AS what
      INTO bad
      FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(e, ord)
      JOIN taskq.job_types t ON t.job_type = x.e->>'job_type'
     WHERE (NOT t.allow_tenant AND x.e->>'tenant' IS NOT NULL)
        OR (NOT t.allow_concurrency_key AND x.e->>'concurrency_key' IS NOT NULL)
     ORDER BY x.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'job type "%" does not allow a %', bad.job_type, bad.what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Job %s of the batch names one.', bad.i),
                  HINT = format('taskq.configure_job_type(..., allow_%s => true) allows it.', bad.what);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION taskq._check_job_type_rules(jsonb) FROM PUBLIC;

-- A job's defaults (src/taskq.h, the one table of them) for submit_many's
-- job by job path; the backoff is taskq.backoff_base.
CREATE FUNCTION taskq._job_defaults(OUT queue text, OUT priority taskq.priority,
                                    OUT max_attempts integer, OUT backoff interval,
                                    OUT cpu_units integer, OUT memory_mb integer)
    AS 'MODULE_PATHNAME', 'taskq_job_defaults_sql' LANGUAGE C STABLE;

CREATE OR REPLACE FUNCTION taskq.submit_many(jobs jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    me regrole := taskq._caller();
    dflt record;                 -- a job's defaults, written once (taskq.h)
    ids bigint[] := '{}';
    plain boolean;
    spec jsonb;
    n integer := 0;
    deps bigint[];
BEGIN
    IF jobs IS NULL THEN
        RAISE EXCEPTION 'jobs must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'jobs must be a JSON array of objects' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO dflt FROM taskq._job_defaults();

    -- Fast path: a batch of plain jobs (only job_type, queue, payload and
    -- priority, all well typed: a C scan decides) is written without SQL.
    -- Any other batch is checked job by job first (in C, each error naming
    -- the job's index and key), so that no cast below can fail; a batch of
    -- independent jobs without keys is then inserted set-wise, any other
    -- goes job by job.
    plain := taskq._plain_batch(jobs);
    IF NOT plain THEN
        PERFORM taskq._check_batch(jobs);
        -- a tenant or key on a job type that forbids it (before any write)
        PERFORM taskq._check_job_type_rules(jobs);
    END IF;
    IF plain OR NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements(jobs) e
        WHERE e ?| ARRAY['after', 'depends_on', 'idempotency_key']) THEN
        PERFORM taskq._lock_job_type(t, false)
           FROM (SELECT DISTINCT e->>'job_type' AS t FROM jsonb_array_elements(jobs) e ORDER BY 1) s;
        IF plain THEN
            ids := taskq._insert_plain_batch(jobs, me);
            IF ids IS NOT NULL THEN
                RETURN QUERY SELECT unnest(ids);
                RETURN;
            END IF;
        END IF;
        -- the one writer of job rows taskq.submit uses too (src/submit.c);
        -- a key a job leaves out is NULL there: the default
        RETURN QUERY SELECT unnest(taskq._insert_jobs(
            ARRAY(SELECT jsonb_populate_record(NULL::taskq.jobs, x.e)
                    FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(e, ord)
                   ORDER BY x.ord),
            me));
        RETURN;
    END IF;

    FOR spec IN SELECT value FROM jsonb_array_elements(jobs) LOOP
        -- (checked by taskq._check_batch: "after" names earlier jobs; a JSON
        -- null is the default)
        deps := CASE WHEN jsonb_typeof(spec->'depends_on') = 'array'
                     THEN ARRAY(SELECT jsonb_array_elements_text(spec->'depends_on')::bigint)
                     ELSE '{}' END;
        IF jsonb_typeof(spec->'after') = 'array' THEN
            deps := deps || ARRAY(SELECT ids[a::integer + 1]
                                  FROM jsonb_array_elements_text(spec->'after') AS a);
        END IF;
        ids := ids || taskq._insert_job(
            spec->>'job_type',
            coalesce(spec->'payload', '{}'),
            coalesce((spec->>'priority')::taskq.priority, dflt.priority),
            coalesce(spec->>'queue', dflt.queue),
            deps,
            coalesce((spec->>'run_at')::timestamptz, now()),
            (spec->>'max_attempts')::integer,
            (spec->>'timeout')::interval,
            coalesce((spec->>'cpu_units')::integer, dflt.cpu_units),
            coalesce((spec->>'memory_mb')::integer, dflt.memory_mb),
            spec->>'idempotency_key',
            (spec->>'backoff')::interval,
            spec->>'concurrency_key',
            spec->>'tenant',
            me);
        n := n + 1;
    END LOOP;
    RETURN QUERY SELECT unnest(ids);
END
$$;

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

------------------------------------------------------------------------------
-- Grants: schedules, metrics and monitoring
------------------------------------------------------------------------------

-- A role that schedules jobs sees in health() whether pg_cron runs them
-- (its own schedules' failures; the other checks are counts, no rows).
GRANT EXECUTE ON FUNCTION taskq.health() TO taskq_user;

------------------------------------------------------------------------------
-- Grants: fair scheduling
------------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION taskq.claim_retry_after(text[]) TO taskq_user, taskq_worker;

------------------------------------------------------------------------------
-- Grants: tenants
------------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION taskq.configure_tenant(text, float8) TO taskq_admin;
GRANT SELECT ON taskq.tenants TO taskq_admin;
GRANT EXECUTE ON FUNCTION taskq.rate_limit_state() TO taskq_user, taskq_worker, taskq_monitor;
GRANT EXECUTE ON FUNCTION taskq.configure_job_type(text, text, integer, boolean, boolean) TO taskq_admin;
GRANT SELECT ON taskq.job_types TO taskq_user, taskq_worker;

------------------------------------------------------------------------------
-- Grants: one row write per job
------------------------------------------------------------------------------
-- A handler reads its attempt number here (its row reads the attempts before
-- the claim while its batch runs).
GRANT EXECUTE ON FUNCTION taskq.current_attempt() TO taskq_user;

------------------------------------------------------------------------------
-- Grants: what a user sees while a batch runs
------------------------------------------------------------------------------
-- taskq.live_jobs applies taskq.jobs' row security to its caller; the held
-- ids it joins are the job ids taskq.workers shows (no job's contents).
GRANT SELECT ON taskq.live_jobs TO taskq_user;
GRANT EXECUTE ON FUNCTION taskq._held_jobs() TO taskq_user, taskq_worker, taskq_monitor;
