-- An executor's writes in plain SQL, on copies of taskq.jobs and its indexes
-- (not its triggers): in one transaction, lock a batch in claim order without
-- writing it, then write each job once, succeeded, with its attempt, worker,
-- start and end.  No log row (a first-try success has none), no handler
-- runs, nothing is published, no capacity is kept.
BEGIN;
SELECT coalesce(array_agg(id), '{}')::text AS job_ids
  FROM (SELECT id FROM bench.same_jobs
         WHERE status = 'pending' AND in_database
         ORDER BY in_database, effective_priority, run_at, id
         LIMIT :batch FOR NO KEY UPDATE SKIP LOCKED) c \gset
UPDATE bench.same_jobs
   SET status = 'succeeded', attempts = attempts + 1, worker = 'pgbench',
       started_at = clock_timestamp(), finished_at = clock_timestamp(),
       updated_at = clock_timestamp(), lease_expires_at = NULL
 WHERE id = ANY (:job_ids::bigint[]) AND status = 'pending';
COMMIT;
