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

