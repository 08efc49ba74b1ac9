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
