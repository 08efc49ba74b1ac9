-- cancel and retry in every state, the dead-letter queue, retry backoff,
-- leases and the fencing of the external-worker protocol.
\i sql/include/helpers.psql
-- Job types of this file have no handler; this session plays the external worker.
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'cancel%';

-- One job in each state.
SELECT pg_temp.j('parent', taskq.submit('cancel', queue => 'regress_cancel'));
SELECT pg_temp.j('blocked', taskq.submit('cancel', queue => 'regress_cancel', depends_on => ARRAY[pg_temp.id('parent')]));
SELECT pg_temp.j('running', taskq.submit('cancel', queue => 'regress_cancel', priority => 'critical'));
SELECT pg_temp.j('succeeded', taskq.submit('cancel', queue => 'regress_cancel', priority => 'critical'));
SELECT pg_temp.j('failed', taskq.submit('cancel', queue => 'regress_cancel', priority => 'critical', max_attempts => 1));
SELECT pg_temp.j('cancelled', taskq.submit('cancel', queue => 'regress_cancel', priority => 'critical'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cancel'], 'wk', 3) ORDER BY id;
SELECT taskq.complete(pg_temp.id('succeeded'), '{"n": 1}', 'wk');
SELECT taskq.fail(pg_temp.id('failed'), 'no luck', true, 'wk');
SELECT taskq.cancel(pg_temp.id('cancelled'));
SELECT pg_temp.n(id) AS job, status FROM taskq.jobs WHERE queue = 'regress_cancel' ORDER BY id;

-- cancel and retry where the state does not allow it; nothing is written
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.snap() AS before \gset
SELECT n, pg_temp.try_ids(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.cancel(pg_temp.id('succeeded'))$$),
 (2, $$SELECT taskq.cancel(pg_temp.id('failed'))$$),
 (3, $$SELECT taskq.cancel(pg_temp.id('cancelled'))$$),
 (4, $$SELECT taskq.retry(pg_temp.id('parent'))$$),
 (5, $$SELECT taskq.retry(pg_temp.id('blocked'))$$),
 (6, $$SELECT taskq.retry(pg_temp.id('running'))$$),
 (7, $$SELECT taskq.retry(pg_temp.id('succeeded'))$$),
 (8, $$SELECT taskq.retry(pg_temp.id('cancelled'))$$),
 (9, $$SELECT taskq.cancel(NULL)$$),
 (10, $$SELECT taskq.retry(NULL)$$),
 (11, $$SELECT taskq.cancel(9223372036854775807)$$),
 (12, $$SELECT taskq.retry(9223372036854775807)$$),
 -- the external-worker protocol checks who holds the job
 (13, $$SELECT taskq.complete(pg_temp.id('parent'))$$),
 (14, $$SELECT taskq.complete(pg_temp.id('running'), '{}', 'someone else')$$),
 (15, $$SELECT taskq.fail(pg_temp.id('running'), 'x', true, 'someone else')$$),
 (16, $$SELECT taskq.heartbeat(pg_temp.id('running'), 'someone else')$$),
 (17, $$SELECT taskq.heartbeat(pg_temp.id('running'), 'wk', interval '0')$$),
 (18, $$SELECT taskq.heartbeat(pg_temp.id('succeeded'))$$),
 (19, $$SELECT taskq.fail(pg_temp.id('failed'), 'again')$$),
 (20, $$SELECT taskq.complete(NULL)$$),
 (21, $$SELECT taskq.fail(NULL, 'x')$$),
 (22, $$SELECT taskq.heartbeat(NULL)$$),
 (23, $$SELECT taskq.complete(9223372036854775807)$$)
) AS t(n, stmt) ORDER BY n;
SELECT pg_temp.snap() = :'before' AS nothing_written;
COMMIT;

-- Cancelling: blocked, pending and running jobs.  A cancelled running job is
-- no longer the worker's: its complete/fail/heartbeat are refused.
SELECT taskq.cancel(pg_temp.id('blocked'));
SELECT taskq.cancel(pg_temp.id('running'));
SELECT pg_temp.try_ids($$SELECT taskq.complete(pg_temp.id('running'), '{}', 'wk')$$);
SELECT pg_temp.try_ids($$SELECT taskq.fail(pg_temp.id('running'), 'late', true, 'wk')$$);
SELECT pg_temp.try_ids($$SELECT taskq.heartbeat(pg_temp.id('running'), 'wk')$$);
SELECT taskq.cancel(pg_temp.id('parent'));
SELECT pg_temp.n(id) AS job, status, worker, lease_expires_at, finished_at IS NOT NULL AS finished
FROM taskq.jobs WHERE queue = 'regress_cancel' ORDER BY id;
SELECT status, attempt, message FROM taskq.job_logs WHERE job_id = pg_temp.id('running') ORDER BY id;

-- Retrying from the dead-letter queue: attempts start over, the job runs again.
SELECT pg_temp.n(id) AS dead_letter, attempts, max_attempts, last_error FROM taskq.dead_letter_queue
WHERE queue = 'regress_cancel';
SELECT taskq.retry(pg_temp.id('failed'));
SELECT pg_temp.n(id) AS job, status, attempts, last_error, worker, finished_at,
       run_at <= now() AS runnable
FROM taskq.jobs WHERE id = pg_temp.id('failed');
SELECT count(*) AS dead_letters FROM taskq.dead_letter_queue WHERE queue = 'regress_cancel';
SELECT pg_temp.n(id) AS claimed, attempts FROM taskq.claim(ARRAY['regress_cancel'], 'wk');
SELECT taskq.fail(pg_temp.id('failed'), NULL, NULL, 'wk');
SELECT pg_temp.n(id) AS job, status, attempts, last_error FROM taskq.jobs WHERE id = pg_temp.id('failed');
SELECT status, attempt, message, error FROM taskq.job_logs WHERE job_id = pg_temp.id('failed') ORDER BY id;

-- Retries back off exponentially: base * 2^(attempt-1), plus up to 20 % jitter.
SELECT pg_temp.j('backoff', taskq.submit('cancel', queue => 'regress_cancel_backoff',
                 max_attempts => 4, backoff => interval '10 seconds'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_cancel_backoff'], 'wk');
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT taskq.fail(pg_temp.id('backoff'), 'first', true, 'wk');
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT status, attempts,
       extract(epoch FROM run_at) BETWEEN :t0 + 10 AND :t1 + 12 AS delay_10s_to_12s
FROM taskq.jobs WHERE id = pg_temp.id('backoff');
-- not claimable before run_at
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_cancel_backoff'], 'wk');
-- skip the wait, then fail attempt 2
UPDATE taskq.jobs SET run_at = now() WHERE id = pg_temp.id('backoff');
SELECT pg_temp.n(id) AS claimed, attempts FROM taskq.claim(ARRAY['regress_cancel_backoff'], 'wk');
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT taskq.fail(pg_temp.id('backoff'), 'second', true, 'wk');
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT status, attempts,
       extract(epoch FROM run_at) BETWEEN :t0 + 20 AND :t1 + 24 AS delay_20s_to_24s
FROM taskq.jobs WHERE id = pg_temp.id('backoff');
-- a non-retryable error dead-letters at once, attempts left or not
UPDATE taskq.jobs SET run_at = now() WHERE id = pg_temp.id('backoff');
SELECT pg_temp.n(id) AS claimed, attempts FROM taskq.claim(ARRAY['regress_cancel_backoff'], 'wk');
SELECT taskq.fail(pg_temp.id('backoff'), 'fatal', false, 'wk');
SELECT pg_temp.n(id) AS job, status, attempts, max_attempts, last_error FROM taskq.jobs WHERE id = pg_temp.id('backoff');

-- Leases: heartbeat extends one; an expired one is taken back by the launcher
-- (the attempt counts) and the late worker is refused.
SELECT pg_temp.j('lease', taskq.submit('cancel', queue => 'regress_cancel_lease'));
SELECT pg_temp.n(id) AS claimed, lease_expires_at - started_at AS lease
FROM taskq.claim(ARRAY['regress_cancel_lease'], 'wk', 1, interval '1 minute');
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT extract(epoch FROM taskq.heartbeat(pg_temp.id('lease'), 'wk', interval '1 hour')) AS hb \gset
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT :hb BETWEEN :t0 + 3600 AND :t1 + 3600 AS extended_by_1_hour;
-- without extend, by the lease's last length (now 1 hour)
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT extract(epoch FROM taskq.heartbeat(pg_temp.id('lease'))) AS hb \gset
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT :hb BETWEEN :t0 + 3600 AND :t1 + 3600 AS extended_again;
SELECT extract(epoch FROM lease_expires_at) = :hb AS recorded FROM taskq.jobs WHERE id = pg_temp.id('lease');
-- (expire it by hand; the row lock keeps the launcher out until COMMIT)
BEGIN;
UPDATE taskq.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = pg_temp.id('lease');
SELECT pg_temp.try_ids($$SELECT taskq.heartbeat(pg_temp.id('lease'), 'wk')$$) LIKE '55000 lease on job <lease> expired at %' AS refused;
COMMIT;
SELECT pg_temp.wait_status(pg_temp.id('lease'), 'pending') AS taken_back;
SELECT pg_temp.n(id) AS job, status, attempts, worker, last_error FROM taskq.jobs WHERE id = pg_temp.id('lease');
SELECT pg_temp.try_ids($$SELECT taskq.complete(pg_temp.id('lease'), '{}', 'wk')$$);

-- Completing or cancelling must see dependents linked an instant before (a
-- fresh snapshot): under REPEATABLE READ both are refused, nothing changes.
SELECT taskq.submit('rc_job', queue => 'regress_cancel_rr') AS rr_job \gset
SELECT count(*) FROM taskq.claim(ARRAY['regress_cancel_rr'], 'wk_rr', 1);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.try($$SELECT taskq.complete($$ || :rr_job || $$, '{}', 'wk_rr')$$);
SELECT pg_temp.try($$SELECT taskq.cancel($$ || :rr_job || $$)$$);
COMMIT;
SELECT status, worker FROM taskq.jobs WHERE id = :rr_job;
SELECT taskq.complete(:rr_job, '{}', 'wk_rr');
SELECT status FROM taskq.jobs WHERE id = :rr_job;

-- Leave no live jobs behind.
SELECT pg_temp.cancel_all('regress_cancel%');
SELECT status, count(*) FROM taskq.jobs WHERE queue LIKE 'regress_cancel%' GROUP BY 1 ORDER BY 1;
