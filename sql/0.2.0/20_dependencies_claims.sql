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


