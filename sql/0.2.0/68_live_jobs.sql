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
