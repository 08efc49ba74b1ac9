-- The launcher's upkeep, called directly (the launcher may run it too, so
-- only states are printed, never counts): priority aging and retention.
SET taskq.notify_level = 'none';

-- Aging: a low job that has waited longer than taskq.aging_interval (5 min)
-- rises one level per interval, up to critical; the claim order follows.
SELECT taskq.submit('upkeep_ext', queue => 'regress_upkeep', priority => 'low',
                    run_at => now() - interval '11 minutes') AS old_low \gset
SELECT taskq.submit('upkeep_ext', queue => 'regress_upkeep', priority => 'normal') AS new_normal \gset
SELECT taskq._age_priorities() >= 0 AS aged;
SELECT priority, effective_priority FROM taskq.jobs WHERE id = :old_low;
-- not again before another interval has passed since it was aged
SELECT taskq._age_priorities() >= 0 AS aged;
SELECT effective_priority FROM taskq.jobs WHERE id = :old_low;
UPDATE taskq.jobs SET aged_at = now() - interval '6 minutes' WHERE id = :old_low;
SELECT taskq._age_priorities() >= 0 AS aged;
SELECT effective_priority FROM taskq.jobs WHERE id = :old_low;
-- the aged low job is now claimed before the newer normal one
SELECT id = :old_low AS aged_job_first
FROM taskq.claim(ARRAY['regress_upkeep'], 'upkeep-worker', 1);
SELECT taskq.complete(:old_low, NULL, 'upkeep-worker');
-- (the newer normal job is not needed any more)
SELECT taskq.cancel(:new_normal);

-- Retention (taskq.retention = 7 days): finished jobs older than that are
-- deleted with their logs, unless a blocked job still waits on a failed one.
SELECT taskq.submit('upkeep_ext', queue => 'regress_upkeep', max_attempts => 1) AS dead_parent \gset
SELECT taskq.submit('upkeep_ext', queue => 'regress_upkeep', depends_on => ARRAY[:dead_parent]) AS child \gset
SELECT count(*) FROM taskq.claim(ARRAY['regress_upkeep'], 'upkeep-worker', 1);
SELECT taskq.fail(:dead_parent, 'boom', false, 'upkeep-worker');
-- The purge reads jobs in id order up to the first one created within
-- retention: every job up to these three is made as old as they are.
UPDATE taskq.jobs SET created_at = now() - interval '9 days' WHERE id <= :dead_parent;
UPDATE taskq.jobs SET finished_at = now() - interval '8 days'
 WHERE id IN (:old_low, :new_normal, :dead_parent);
-- (the launcher purges too, and may hold a job this call skips: wait until gone)
CREATE FUNCTION pg_temp.purged(ids bigint[]) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE deadline timestamptz := clock_timestamp() + interval '60s';
BEGIN
    LOOP
        PERFORM taskq._purge_finished();
        IF NOT EXISTS (SELECT 1 FROM taskq.jobs j WHERE j.id = ANY (ids)) THEN
            RETURN true;
        ELSIF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
SELECT pg_temp.purged(ARRAY[:old_low, :new_normal]::bigint[]) AS purged;
SELECT (SELECT count(*) FROM taskq.jobs WHERE id = :old_low) AS succeeded_kept,
       (SELECT count(*) FROM taskq.job_logs WHERE job_id = :old_low) AS its_logs,
       (SELECT count(*) FROM taskq.jobs WHERE id = :new_normal) AS cancelled_kept,
       (SELECT count(*) FROM taskq.jobs WHERE id = :dead_parent) AS failed_parent_kept;
-- once the child is cancelled, the failed parent goes too
SELECT taskq.cancel(:child);
SELECT pg_temp.purged(ARRAY[:dead_parent]::bigint[]) AS purged;
SELECT count(*) AS failed_parent_kept FROM taskq.jobs WHERE id = :dead_parent;
DELETE FROM taskq.job_logs WHERE job_id = :child;
DELETE FROM taskq.jobs WHERE id = :child;
RESET taskq.notify_level;
