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
