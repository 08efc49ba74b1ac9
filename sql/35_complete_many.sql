-- taskq.complete_many: complete() for a batch of held jobs, all or nothing.
\i sql/include/helpers.psql
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'cm%';

-- Three held jobs; d waits for a and b, e for a alone.
SELECT pg_temp.j(x, taskq.submit('cm', jsonb_build_object('x', x), queue => 'regress_cm'))
FROM unnest(ARRAY['a', 'b', 'c']) x;
SELECT pg_temp.j('d', taskq.submit('cm', queue => 'regress_cm', depends_on => ARRAY[pg_temp.id('a'), pg_temp.id('b')]));
SELECT pg_temp.j('e', taskq.submit('cm', queue => 'regress_cm', depends_on => ARRAY[pg_temp.id('a')]));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cm'], 'wk', 3) ORDER BY id;

-- One call completes them: results by position, dependents released at once.
SELECT taskq.complete_many(ARRAY[pg_temp.id('c'), pg_temp.id('a'), pg_temp.id('b')],
                           ARRAY['{"r": "c"}', NULL, '{"r": "b"}']::jsonb[], 'wk') AS completed;
SELECT pg_temp.n(id) AS job, status, result, attempts, worker, lease_expires_at,
       finished_at IS NOT NULL AS finished, unfinished_parents
FROM taskq.jobs WHERE queue = 'regress_cm' ORDER BY id;
SELECT pg_temp.n(job_id) AS job, status, attempt, message
FROM taskq.job_logs WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'regress_cm')
ORDER BY job_id, id;

-- Results default to NULL, worker to whoever holds each job.
SELECT pg_temp.n(id) AS claimed, worker FROM taskq.claim(ARRAY['regress_cm'], 'wk2', 1) ORDER BY id;
SELECT pg_temp.n(id) AS claimed, worker FROM taskq.claim(ARRAY['regress_cm'], 'wk3', 1) ORDER BY id;
SELECT taskq.complete_many(ARRAY[pg_temp.id('d'), pg_temp.id('e')]) AS completed;
SELECT pg_temp.n(id) AS job, status, result FROM taskq.jobs
WHERE id IN (pg_temp.id('d'), pg_temp.id('e')) ORDER BY id;
SELECT taskq.complete_many('{}') AS completed_none;

-- Fencing: one job complete() would refuse fails the whole call with
-- complete()'s error for the first such id; nothing is written.
SELECT pg_temp.j(x, taskq.submit('cm', queue => 'regress_cm_fence'))
FROM unnest(ARRAY['g1', 'g2', 'theirs', 'cancelled', 'expired']) x;
SELECT pg_temp.j('retaken', taskq.submit('cm', queue => 'regress_cm_fence', backoff => '0 s'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cm_fence'], 'wk', 2) ORDER BY id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cm_fence'], 'other', 1) ORDER BY id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cm_fence'], 'wk', 3) ORDER BY id;
SELECT taskq.cancel(pg_temp.id('cancelled'));
-- 'retaken': its lease expires, the launcher takes it back, another worker claims it
UPDATE taskq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = pg_temp.id('retaken');
SELECT pg_temp.wait_status(pg_temp.id('retaken'), 'pending') AS taken_back;
SELECT pg_temp.n(id) AS claimed, attempts FROM taskq.claim(ARRAY['regress_cm_fence'], 'wk2', 1);
SELECT count(*) AS logs_before FROM taskq.job_logs
WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'regress_cm_fence') \gset
BEGIN;
-- 'expired': lease past, not yet taken back (this transaction hides it from the launcher)
UPDATE taskq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = pg_temp.id('expired');
SELECT n, regexp_replace(pg_temp.try_ids(stmt), 'expired at .*', 'expired at ...') AS error FROM (VALUES
 (1, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('g1'), pg_temp.id('theirs'), pg_temp.id('g2')], NULL, 'wk')$$),
 (2, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('g1'), pg_temp.id('cancelled')], NULL, 'wk')$$),
 (3, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('expired'), pg_temp.id('g1')], NULL, 'wk')$$),
 (4, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('g2'), pg_temp.id('retaken')], NULL, 'wk')$$),
 -- the first refused id in array order is reported, whatever the id order
 (5, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('g1'), pg_temp.id('cancelled'), pg_temp.id('theirs')], NULL, 'wk')$$),
 (6, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('g1'), pg_temp.id('theirs'), pg_temp.id('cancelled')], NULL, 'wk')$$),
 (7, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('g1'), 9223372036854775807], NULL, 'wk')$$),
 (8, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('g1'), pg_temp.id('a')])$$)
) AS t(n, stmt) ORDER BY n;
ROLLBACK;
SELECT pg_temp.n(id) AS job, status, worker, result IS NULL AS no_result
FROM taskq.jobs WHERE queue = 'regress_cm_fence' ORDER BY id;
SELECT count(*) = :logs_before AS no_log_written FROM taskq.job_logs
WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'regress_cm_fence');
-- the holders complete theirs
SELECT taskq.complete_many(ARRAY[pg_temp.id('g1'), pg_temp.id('g2'), pg_temp.id('expired')], NULL, 'wk') AS wk;
SELECT taskq.complete_many(ARRAY[pg_temp.id('retaken')], ARRAY['{"by": "wk2"}'::jsonb], 'wk2') AS wk2;
SELECT taskq.complete_many(ARRAY[pg_temp.id('theirs')], NULL, 'other') AS other;
SELECT pg_temp.n(id) AS job, status, attempts, result FROM taskq.jobs
WHERE queue = 'regress_cm_fence' ORDER BY id;

-- Privileges as complete(): others' jobs do not exist for a plain role.
SET ROLE taskq_bob;
SELECT pg_temp.j('bobs', taskq.submit('cm', queue => 'regress_cm_roles'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cm_roles'], 'bw', 1);
SET ROLE taskq_alice;
SELECT pg_temp.try_ids($$SELECT taskq.complete_many(ARRAY[pg_temp.id('bobs')])$$) AS alice;
SET ROLE taskq_bob;
SELECT taskq.complete_many(ARRAY[pg_temp.id('bobs')], NULL, 'bw') AS bob;
RESET ROLE;
SELECT status FROM taskq.jobs WHERE id = pg_temp.id('bobs');

-- Bad input.
SELECT pg_temp.j('held', taskq.submit('cm', queue => 'regress_cm_bad'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cm_bad'], 'wk', 1);
-- (only 5 names a job: the other messages' numbers are counts and positions)
SELECT n, CASE n WHEN 5 THEN pg_temp.try_ids(stmt) ELSE pg_temp.try(stmt) END AS error FROM (VALUES
 (1, $$SELECT taskq.complete_many(NULL)$$),
 (2, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('held'), NULL])$$),
 (3, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('held')], ARRAY['{}', '{}']::jsonb[])$$),
 (4, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('held')], '{}'::jsonb[])$$),
 (5, $$SELECT taskq.complete_many(ARRAY[pg_temp.id('held'), pg_temp.id('held')])$$),
 (6, $$SELECT taskq.complete_many(ARRAY(SELECT generate_series(1, 10001)::bigint))$$),
 (7, $$SELECT taskq.complete_many(ARRAY[[pg_temp.id('held')]])$$)
) AS t(n, stmt) ORDER BY n;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.try_ids($$SELECT taskq.complete_many(ARRAY[pg_temp.id('held')], NULL, 'wk')$$) AS repeatable_read;
ROLLBACK;
SELECT status FROM taskq.jobs WHERE id = pg_temp.id('held');
SELECT taskq.complete_many(ARRAY[pg_temp.id('held')], NULL, 'wk') AS completed;
