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


