-- Scan floors (src/scan_floor.c): a claim starts reading each priority of its
-- lane of the runnable index at the floor and raises it to the first pending
-- job.  Every path that leaves a job pending below the floor must lower it,
-- or that job would never be claimed.  External jobs only, so no executor interferes;
-- run_at in the past stays under taskq.aging_interval (5 min), so the launcher
-- cannot move a job to another priority mid-test.
SET taskq.notify_level = 'none';
CREATE FUNCTION pg_temp.floor_id() RETURNS bigint LANGUAGE sql AS
    $$ SELECT id FROM taskq._scan_floors('taskq.jobs', false, ARRAY['normal']::taskq.priority[]) $$;
CREATE FUNCTION pg_temp.floor_seen() RETURNS bigint LANGUAGE sql AS
    $$ SELECT seen FROM taskq._scan_floors('taskq.jobs', false, ARRAY['normal']::taskq.priority[]) $$;
CREATE FUNCTION pg_temp.age_until_aged(job bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM taskq._age_priorities();
        IF (SELECT effective_priority FROM taskq.jobs WHERE id = job) <> 'low' THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END $$;
SELECT count(*) AS other_pending_external FROM taskq.jobs WHERE status = 'pending' AND NOT in_database;

SELECT taskq.submit('floor_ext', queue => 'regress_floor') AS a \gset
SELECT taskq.submit('floor_ext', queue => 'regress_floor') AS b \gset
SELECT taskq.submit('floor_ext', queue => 'regress_floor') AS c \gset
SELECT array_agg(id ORDER BY id) = ARRAY[:a, :b]::bigint[] AS claimed_a_b
FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 2);
-- a claim of an empty queue still probes the lane: the floor rises to c
SELECT count(*) FROM taskq.claim(ARRAY['regress_floor_empty'], 'floor-worker', 1);
SELECT pg_temp.floor_id() = :c AS floor_at_c;

-- A job submitted with a run_at in the past sorts before c: it lowers the floor.
SELECT taskq.submit('floor_ext', queue => 'regress_floor', run_at => now() - interval '1 minute') AS d \gset
SELECT pg_temp.floor_id() = :d AS floor_lowered_to_d;
SELECT id = :d AS claimed_d FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);

-- A higher priority has a floor of its own: e is claimed first.
SELECT count(*) FROM taskq.claim(ARRAY['regress_floor_empty'], 'floor-worker', 1);
SELECT taskq.submit('floor_ext', queue => 'regress_floor', priority => 'critical') AS e \gset
SELECT id = :e AS claimed_e FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);

-- A child released by its parent's success (high: it sorts before c).
SELECT taskq.submit('floor_ext', queue => 'regress_floor', priority => 'critical') AS p \gset
SELECT taskq.submit('floor_ext', queue => 'regress_floor', depends_on => ARRAY[:p],
                    priority => 'high') AS child \gset
SELECT id = :p AS claimed_parent FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
SELECT count(*) FROM taskq.claim(ARRAY['regress_floor_empty'], 'floor-worker', 1);
SELECT pg_temp.floor_id() = :c AS floor_at_c;
SELECT taskq.complete(:p, NULL, 'floor-worker');
SELECT id = :child AS claimed_child FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);

-- A failed attempt retried at once (zero backoff) is claimed before c.
SELECT taskq.submit('floor_ext', queue => 'regress_floor', priority => 'high',
                    backoff => interval '0') AS r \gset
SELECT id = :r AS claimed_r FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
SELECT count(*) FROM taskq.claim(ARRAY['regress_floor_empty'], 'floor-worker', 1);
SELECT pg_temp.floor_id() = :c AS floor_at_c;
SELECT taskq.fail(:r, 'try again', true, 'floor-worker');
SELECT id = :r AS claimed_r_again FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);

-- Aging raises a waiting low job to normal, below c.
SELECT taskq.submit('floor_ext', queue => 'regress_floor', priority => 'low',
                    run_at => now() - interval '11 minutes') AS old_low \gset
SELECT count(*) FROM taskq.claim(ARRAY['regress_floor_empty'], 'floor-worker', 1);
-- (the launcher ages jobs too: a run of its own may hold the row, which a
-- call here skips, so call until the job is aged)
SELECT pg_temp.age_until_aged(:old_low) AS aged;
SELECT effective_priority FROM taskq.jobs WHERE id = :old_low;
SELECT id = :old_low AS claimed_aged FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);

-- The raise itself: a key committed after the claim read the floor (so maybe
-- after its snapshot was taken) caps the raise.
SELECT pg_temp.floor_seen() AS seen \gset
SELECT taskq.submit('floor_ext', queue => 'regress_floor', run_at => now() - interval '2 minutes') AS late \gset
SELECT taskq._raise_scan_floor('taskq.jobs', false, 'normal', :seen, 'infinity', 0);
SELECT pg_temp.floor_id() = :late AS raise_capped_by_late_commit;
-- under REPEATABLE READ the snapshot may be older than the floor read: no raise
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.floor_seen() AS seen \gset
SELECT taskq._raise_scan_floor('taskq.jobs', false, 'normal', :seen, 'infinity', 0);
COMMIT;
SELECT pg_temp.floor_id() = :late AS floor_kept;
SELECT id = :late AS claimed_late FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);

-- A job submitted below the floor lowers it only at commit, yet the same
-- transaction's claim sees it.
SELECT count(*) FROM taskq.claim(ARRAY['regress_floor_empty'], 'floor-worker', 1);
SELECT pg_temp.floor_id() = :c AS floor_at_c;
BEGIN;
SELECT taskq.submit('floor_ext', queue => 'regress_floor', run_at => now() - interval '3 minutes') AS own \gset
SELECT id = :own AS claimed_own FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
COMMIT;

-- A claim's raise of the floor waits for its transaction to commit: the
-- probe saw the transaction's own claims, which a rollback undoes.
SELECT taskq.submit('floor_ext', queue => 'regress_floor', run_at => now() - interval '4 minutes') AS ra \gset
SELECT taskq.submit('floor_ext', queue => 'regress_floor', run_at => now() - interval '4 minutes') AS rb \gset
BEGIN;
SELECT id = :ra AS claimed_ra FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
SELECT id = :rb AS claimed_rb FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT id = :ra AS claimed_ra FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
SELECT id = :rb AS claimed_rb FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT array_agg(id ORDER BY id) = ARRAY[:ra, :rb]::bigint[] AS both_claimed_after_rollbacks
FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 2);

-- A transaction that makes jobs pending cannot be prepared: COMMIT PREPARED
-- would come from another session, which would not lower the floor.
BEGIN;
SELECT taskq.submit('floor_ext', queue => 'regress_floor') > 0 AS submitted;
PREPARE TRANSACTION 'taskq_floor';
SELECT array_agg(id) = ARRAY[:c]::bigint[] AS only_c_pending
FROM taskq.jobs WHERE queue = 'regress_floor' AND status = 'pending';

-- c was never passed over.
SELECT id = :c AS claimed_c FROM taskq.claim(ARRAY['regress_floor'], 'floor-worker', 1);
SELECT count(*) AS still_running FROM taskq.jobs
 WHERE queue = 'regress_floor' AND status = 'running' AND worker = 'floor-worker';
DELETE FROM taskq.job_logs WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'regress_floor');
DELETE FROM taskq.jobs WHERE queue = 'regress_floor';
RESET taskq.notify_level;
