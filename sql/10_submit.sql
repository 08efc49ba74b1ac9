-- submit and submit_many: defaults, every argument, priorities, delays,
-- idempotency keys, transition logs; bad input rejected with nothing written.
\i sql/include/helpers.psql
-- Job types of this file have no handler: executors never run them, the test
-- drives them with claim/complete as an external worker would.
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'submit%';

-- Defaults (rolled back: queue 'default' belongs to nobody's test).
BEGIN;
SELECT pg_temp.j('d', taskq.submit('submit plain'));
SELECT queue, job_type, priority, effective_priority, status, payload, result, last_error,
       attempts, max_attempts, backoff, timeout, cpu_units, memory_mb,
       run_at BETWEEN now() AND clock_timestamp() AS run_now, idempotency_key,
       owner = current_user::text::regrole AS owner_is_me, worker, lease_expires_at,
       unfinished_parents, created_at BETWEEN now() AND clock_timestamp() AS created_now, started_at, finished_at
FROM taskq.jobs WHERE id = pg_temp.id('d');
SELECT status, attempt, message, error FROM taskq.job_logs WHERE job_id = pg_temp.id('d');
ROLLBACK;
DELETE FROM lbl WHERE name = 'd';

-- Every argument, positionally and by name.
SELECT pg_temp.j('full', taskq.submit('submit full', '{"k": [1, 2], "s": "x"}', 'high',
                 'regress_submit', '{}', now() + interval '1 hour', 7, interval '30 seconds',
                 2, 256, 'key-full', interval '5 seconds'));
SELECT pg_temp.j('named', taskq.submit(
    backoff => interval '0', idempotency_key => 'key-named', memory_mb => 1024,
    cpu_units => 4, timeout => interval '1 day', max_attempts => 1,
    run_at => now() - interval '1 hour', depends_on => ARRAY[pg_temp.id('full')],
    queue => 'regress_submit', priority => 'low', payload => '{"nested": {"a": null}}',
    job_type => 'submit named'));
SELECT pg_temp.n(id) AS job, queue, job_type, priority, status, payload, max_attempts, backoff,
       timeout, cpu_units, memory_mb, run_at > now() + interval '59 minutes' AS later,
       run_at < now() - interval '59 minutes' AS earlier, idempotency_key, unfinished_parents
FROM taskq.jobs WHERE id IN (pg_temp.id('full'), pg_temp.id('named')) ORDER BY id;

-- Priorities: claimed critical, high, normal, low; oldest first within one.
SELECT pg_temp.j(p::text, taskq.submit('submit prio', priority => p, queue => 'regress_submit_prio'))
FROM unnest('{low,normal,critical,high}'::taskq.priority[]) p;
SELECT pg_temp.j('normal2', taskq.submit('submit prio', queue => 'regress_submit_prio'));
SELECT pg_temp.n(id) AS claimed, priority, status, attempts, worker FROM taskq.claim(ARRAY['regress_submit_prio'], 'wk');
SELECT pg_temp.n(id) AS claimed, priority FROM taskq.claim(ARRAY['regress_submit_prio'], 'wk');
SELECT pg_temp.n(id) AS claimed, priority FROM taskq.claim(ARRAY['regress_submit_prio'], 'wk');
SELECT pg_temp.n(id) AS claimed, priority FROM taskq.claim(ARRAY['regress_submit_prio'], 'wk');
SELECT pg_temp.n(id) AS claimed, priority FROM taskq.claim(ARRAY['regress_submit_prio'], 'wk');
SELECT count(*) AS nothing_left FROM taskq.claim(ARRAY['regress_submit_prio'], 'wk');
SELECT count(taskq.complete(id, jsonb_build_object('done', priority))) AS completed
FROM taskq.jobs WHERE queue = 'regress_submit_prio';
SELECT pg_temp.n(id) AS job, status, result, finished_at IS NOT NULL AS finished
FROM taskq.jobs WHERE queue = 'regress_submit_prio' ORDER BY priority, id;
-- a first-try success writes no log row: the job's row tells its story
SELECT status, attempt, message, error FROM taskq.job_logs
WHERE job_id = pg_temp.id('critical') ORDER BY id;
SELECT status, attempts, worker, created_at <= started_at AND started_at <= finished_at AS times_in_order
FROM taskq.jobs WHERE id = pg_temp.id('critical');

-- A delayed job waits for run_at; one with run_at in the past runs at once.
SELECT pg_temp.j('later', taskq.submit('submit delay', queue => 'regress_submit_delay',
                 run_at => now() + interval '1 hour'));
SELECT pg_temp.n(id) AS job, status FROM taskq.jobs WHERE id = pg_temp.id('later');
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_submit_delay'], 'wk');
SELECT pg_temp.j('past', taskq.submit('submit delay', queue => 'regress_submit_delay',
                 run_at => now() - interval '1 minute'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_delay'], 'wk', 10);
SELECT taskq.complete(pg_temp.id('past'), NULL, 'wk');

-- Idempotency keys: a live job with the key is returned, nothing is created.
SELECT pg_temp.j('k1', taskq.submit('submit idem', queue => 'regress_submit_idem',
                 idempotency_key => 'order-42'));
SELECT taskq.submit('submit idem', queue => 'regress_submit_idem', idempotency_key => 'order-42')
       = pg_temp.id('k1') AS same_job,
       taskq.submit('other type', '{"different": true}', 'critical', 'regress_submit_idem',
                    idempotency_key => 'order-42') = pg_temp.id('k1') AS key_wins;
SELECT count(*) AS jobs FROM taskq.jobs WHERE queue = 'regress_submit_idem';
SELECT count(*) AS logs FROM taskq.job_logs WHERE job_id = pg_temp.id('k1');
-- still live while running
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_idem'], 'wk');
SELECT taskq.submit('submit idem', queue => 'regress_submit_idem', idempotency_key => 'order-42')
       = pg_temp.id('k1') AS same_while_running;
-- once it succeeded, the key is free again
SELECT taskq.complete(pg_temp.id('k1'), '{}', 'wk');
SELECT pg_temp.j('k2', taskq.submit('submit idem', queue => 'regress_submit_idem',
                 idempotency_key => 'order-42'));
SELECT pg_temp.id('k2') <> pg_temp.id('k1') AS new_job;
-- and after a cancel, and after a dead-letter
SELECT taskq.cancel(pg_temp.id('k2'));
SELECT pg_temp.j('k3', taskq.submit('submit idem', queue => 'regress_submit_idem',
                 idempotency_key => 'order-42', max_attempts => 1));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_idem'], 'wk');
SELECT taskq.fail(pg_temp.id('k3'), 'boom', true, 'wk');
SELECT pg_temp.j('k4', taskq.submit('submit idem', queue => 'regress_submit_idem',
                 idempotency_key => 'order-42'));
SELECT pg_temp.n(id) AS job, status, idempotency_key FROM taskq.jobs
WHERE queue = 'regress_submit_idem' ORDER BY id;

-- submit_many: one statement, many jobs; "after" names earlier jobs of the
-- batch, depends_on names existing jobs.
SELECT pg_temp.j('parent_done', taskq.submit('submit batch', queue => 'regress_submit_batch'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_batch'], 'wk');
SELECT taskq.complete(pg_temp.id('parent_done'));
SELECT pg_temp.j('parent_live', taskq.submit('submit batch', queue => 'regress_submit_batch'));
SELECT pg_temp.j('b' || ord - 1, id) AS batch
FROM taskq.submit_many(format('[
    {"job_type": "submit batch", "queue": "regress_submit_batch", "payload": {"n": 0}},
    {"job_type": "submit batch", "queue": "regress_submit_batch", "after": [0], "priority": "high"},
    {"job_type": "submit batch", "queue": "regress_submit_batch", "after": [0, 1, 1]},
    {"job_type": "submit batch", "queue": "regress_submit_batch", "depends_on": [%s]},
    {"job_type": "submit batch", "queue": "regress_submit_batch", "depends_on": [%s], "after": [2]},
    {"job_type": "submit batch", "queue": "regress_submit_batch", "max_attempts": 9,
     "timeout": "1 minute", "cpu_units": 2, "memory_mb": 10, "backoff": "2 seconds",
     "run_at": "2100-01-01 00:00:00+00", "idempotency_key": "batch-key"},
    {"job_type": "submit batch", "queue": "regress_submit_batch", "idempotency_key": "batch-key"}
  ]', pg_temp.id('parent_done'), pg_temp.id('parent_live'))::jsonb) WITH ORDINALITY AS t(id, ord)
ORDER BY ord;
SELECT pg_temp.n(id) AS job, priority, status, unfinished_parents, payload, max_attempts,
       timeout, cpu_units, memory_mb, backoff, run_at = '2100-01-01 00:00:00+00' AS run_2100,
       idempotency_key
FROM taskq.jobs WHERE id IN (SELECT id FROM lbl WHERE name LIKE 'b%') ORDER BY id;
SELECT pg_temp.n(job_id) AS job, pg_temp.n(depends_on) AS depends_on FROM taskq.job_dependencies
WHERE job_id IN (SELECT id FROM lbl WHERE name LIKE 'b%') ORDER BY 1, 2;
SELECT count(DISTINCT created_at) AS transactions FROM taskq.jobs
WHERE id IN (SELECT id FROM lbl WHERE name LIKE 'b%');
SELECT count(*) AS ids, count(DISTINCT id) AS distinct_ids FROM taskq.submit_many(
    (SELECT jsonb_agg(jsonb_build_object('job_type', 'submit bulk', 'queue', 'regress_submit_bulk',
                                         'payload', jsonb_build_object('i', i)))
     FROM generate_series(1, 100) i)) AS id;
SELECT count(*) AS jobs, count(DISTINCT payload) AS payloads, count(DISTINCT created_at) AS transactions
FROM taskq.jobs WHERE queue = 'regress_submit_bulk';
SELECT count(*) AS empty_batch FROM taskq.submit_many('[]');
-- a batch of plain jobs (no per-job checks in SQL) keeps priority and payload
SELECT count(*) AS plain FROM taskq.submit_many('[
    {"job_type": "submit plain", "queue": "regress_submit_plain", "priority": "high",
     "payload": {}},
    {"job_type": "submit plain", "queue": "regress_submit_plain", "payload": {"n": [1]}}]');
SELECT priority, effective_priority, payload FROM taskq.jobs
WHERE queue = 'regress_submit_plain' ORDER BY id;
-- the set-wise path takes given values, and JSON nulls as the defaults
SELECT count(*) AS setwise FROM taskq.submit_many('[
    {"job_type": "submit setwise", "queue": "regress_submit_setwise", "priority": "low",
     "max_attempts": 4, "timeout": "5 s", "cpu_units": 2, "memory_mb": 3, "backoff": "7 s",
     "run_at": "2100-01-01 00:00:00+00"},
    {"job_type": "submit setwise", "queue": "regress_submit_setwise", "priority": null,
     "max_attempts": null, "timeout": null, "backoff": null, "run_at": null}]');
SELECT priority, effective_priority, max_attempts, timeout, cpu_units, memory_mb, backoff,
       run_at = '2100-01-01 00:00:00+00' AS run_2100, run_at = created_at AS run_now
FROM taskq.jobs WHERE queue = 'regress_submit_setwise' ORDER BY id;
-- parents succeeding release the batch's children, level by level
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_batch'], 'wk', 100) ORDER BY id;
SELECT count(taskq.complete(id)) AS completed FROM taskq.jobs
WHERE queue = 'regress_submit_batch' AND status = 'running';
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE id IN (SELECT id FROM lbl WHERE name LIKE 'b%') ORDER BY id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_batch'], 'wk', 100) ORDER BY id;
SELECT taskq.complete(pg_temp.id('b1'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_batch'], 'wk', 100) ORDER BY id;
SELECT taskq.complete(pg_temp.id('b2'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_submit_batch'], 'wk', 100) ORDER BY id;
SELECT taskq.complete(pg_temp.id('b4'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE id IN (SELECT id FROM lbl WHERE name LIKE 'b%') ORDER BY id;
SELECT status, attempt, message FROM taskq.job_logs WHERE job_id = pg_temp.id('b2') ORDER BY id;

-- Bad input: a clear error with its SQLSTATE, and nothing written.
SELECT pg_temp.j('gone', taskq.submit('submit gone', queue => 'regress_submit'));
SELECT taskq.cancel(pg_temp.id('gone'));
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.snap() AS before \gset
SELECT n, pg_temp.try(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', priority => 'urgent')$$),
 (2, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', priority => NULL)$$),
 (3, $$SELECT taskq.submit(NULL, queue => 'regress_submit')$$),
 (4, $$SELECT taskq.submit('', queue => 'regress_submit')$$),
 (5, $$SELECT taskq.submit('   ', queue => 'regress_submit')$$),
 (6, $$SELECT taskq.submit(repeat('x', 201), queue => 'regress_submit')$$),
 (7, $$SELECT taskq.submit('submit bad', queue => NULL)$$),
 (8, $$SELECT taskq.submit('submit bad', queue => '')$$),
 (9, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', cpu_units => 0)$$),
 (10, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', cpu_units => -1)$$),
 (11, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', cpu_units => NULL)$$),
 (12, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', memory_mb => -1)$$),
 (13, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', memory_mb => NULL)$$),
 (14, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', cpu_units => current_setting('taskq.max_cpu_units')::int + 1)$$),
 (15, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', memory_mb => current_setting('taskq.max_memory_mb')::int + 1)$$),
 (16, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', max_attempts => 0)$$),
 (17, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', max_attempts => -3)$$),
 (18, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', timeout => interval '0')$$),
 (19, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', timeout => interval '-5 seconds')$$),
 (20, $$SELECT taskq.submit('submit bad', '[1, 2]', queue => 'regress_submit')$$),
 (21, $$SELECT taskq.submit('submit bad', '"text"', queue => 'regress_submit')$$),
 (22, $$SELECT taskq.submit('submit bad', 'null', queue => 'regress_submit')$$),
 (23, $$SELECT taskq.submit('submit bad', NULL, queue => 'regress_submit')$$),
 (24, $$SELECT taskq.submit('submit bad', '{"a":', queue => 'regress_submit')$$),
 (25, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', depends_on => ARRAY[-1])$$),
 (26, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', depends_on => ARRAY[pg_temp.id('full'), NULL])$$),
 (27, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', depends_on => ARRAY[pg_temp.id('full'), 9223372036854775807])$$),
 (28, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', run_at => 'infinity')$$),
 (29, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', backoff => interval '-1 second')$$),
 (30, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', idempotency_key => '')$$),
 (31, $$SELECT taskq.submit_many(NULL)$$),
 (32, $$SELECT taskq.submit_many('{"job_type": "submit bad"}')$$),
 (33, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit"}, 7]')$$),
 (34, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "prio": "high"}]')$$),
 (35, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "after": [0]}]')$$),
 (36, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "after": [1]}, {"job_type": "submit bad", "queue": "regress_submit"}]')$$),
 (37, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit"}, {"job_type": "submit bad", "queue": "regress_submit", "after": [-1]}]')$$),
 (38, $$SELECT taskq.submit_many('[{"queue": "regress_submit"}]')$$),
 (39, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "priority": "urgent"}]')$$),
 (40, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "after": [0.5]}]')$$),
 (41, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "cpu_units": "many"}]')$$),
 (42, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "depends_on": [null]}]')$$),
 (43, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "payload": [1]}]')$$),
 (44, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit"}, {"job_type": " \t", "queue": "regress_submit"}]')$$),
 (45, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "\n"}]')$$),
 (46, $$SELECT taskq.submit_many(jsonb_build_array(jsonb_build_object('job_type', repeat('é', 201), 'queue', 'regress_submit')))$$),
 (47, $$SELECT taskq.submit_many(jsonb_build_array(jsonb_build_object('job_type', 'submit bad', 'queue', repeat('q', 201))))$$),
 (48, $$SELECT taskq.submit_many('[{"job_type": "submit bad", "queue": "regress_submit", "payload": null}]')$$)
) AS t(n, stmt) ORDER BY n;
SELECT n, pg_temp.try_ids(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.submit('submit bad', queue => 'regress_submit', depends_on => ARRAY[pg_temp.id('gone')])$$),
 (2, $$SELECT taskq.submit_many(format('[{"job_type": "submit bad", "queue": "regress_submit", "depends_on": [%s]}]', pg_temp.id('gone'))::jsonb)$$)
) AS t(n, stmt) ORDER BY n;
SELECT pg_temp.snap() = :'before' AS nothing_written;
COMMIT;

-- A batch is all or nothing: the third job is bad, the first two are not kept.
SELECT count(*) AS batch_jobs FROM taskq.jobs WHERE queue = 'regress_submit_atomic';
SELECT taskq.submit_many('[
    {"job_type": "submit atomic", "queue": "regress_submit_atomic"},
    {"job_type": "submit atomic", "queue": "regress_submit_atomic", "after": [0]},
    {"job_type": "submit atomic", "queue": "regress_submit_atomic", "after": [0, 5]}]');
SELECT count(*) AS batch_jobs FROM taskq.jobs WHERE queue = 'regress_submit_atomic';

-- Nothing of this file was run by an executor; leave no live jobs behind.
SELECT count(*) AS executor_jobs FROM taskq.jobs
WHERE queue LIKE 'regress_submit%' AND worker LIKE 'executor/%';
SELECT pg_temp.cancel_all('regress_submit%');
SELECT status, count(*) FROM taskq.jobs WHERE queue LIKE 'regress_submit%' GROUP BY 1 ORDER BY 1;
