-- An executor's writes in plain SQL, on copies of taskq.jobs and taskq.job_logs
-- with their indexes: claim a batch in claim order (one transaction: the rows
-- become running, one log row each), then mark them succeeded (another: one
-- log row each).  No handler runs, nothing is published, no capacity is kept.
WITH c AS (
    UPDATE bench.same_jobs j
       SET status = 'running', attempts = j.attempts + 1, worker = 'pgbench',
           started_at = clock_timestamp(), updated_at = clock_timestamp(),
           lease_expires_at = clock_timestamp() + interval '5 minutes'
     WHERE j.id = ANY (ARRAY(SELECT id FROM bench.same_jobs
                              WHERE status = 'pending' AND in_database
                              ORDER BY in_database, effective_priority, run_at, id
                              LIMIT :batch FOR UPDATE SKIP LOCKED))
    RETURNING j.id, j.attempts),
logged AS (
    INSERT INTO bench.same_logs (job_id, status, attempt, message)
    SELECT id, 'running', attempts, 'claimed' FROM c)
SELECT coalesce(array_agg(id), '{}')::text AS job_ids FROM c \gset
WITH d AS (
    UPDATE bench.same_jobs
       SET status = 'succeeded', finished_at = clock_timestamp(),
           updated_at = clock_timestamp(), lease_expires_at = NULL
     WHERE id = ANY (:job_ids::bigint[]) AND status = 'running'
    RETURNING id, attempts)
INSERT INTO bench.same_logs (job_id, status, attempt, message)
SELECT id, 'succeeded', attempts, 'succeeded' FROM d;
