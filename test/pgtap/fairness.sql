-- pgTAP: fair scheduling (issue 23): concurrency keys on every submit path,
-- per-queue key and rate limits, their bad input (each an error with its
-- SQLSTATE, nothing written) and who may configure them.  One transaction,
-- rolled back; the jobs have no handler and sit in queues no test claims.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(49);

CREATE ROLE taskq_tap_fair_user IN ROLE taskq_user;
CREATE ROLE taskq_tap_fair_wrk IN ROLE taskq_worker;

-- what a rejected call could have written
CREATE FUNCTION pg_temp.snap() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce((SELECT string_agg(format('%s', q), ',' ORDER BY q.name) FROM taskq.queues q
                      WHERE q.name LIKE 'tap_fair%'), '') || '|' ||
           (SELECT count(*) FROM taskq.jobs WHERE queue LIKE 'tap_fair%')::text
$$;

------------------------------------------------------------------------------
-- Schema
------------------------------------------------------------------------------
SELECT has_column('taskq', 'jobs', 'concurrency_key', 'taskq.jobs has column concurrency_key');
SELECT has_column('taskq', 'queues', c, 'taskq.queues has column ' || c)
FROM unnest(ARRAY['key_concurrency', 'rate_limit', 'rate_per_second', 'rate_burst']) c;
SELECT has_function('taskq', 'claim_retry_after', ARRAY['text[]'], 'taskq.claim_retry_after(text[]) exists');

------------------------------------------------------------------------------
-- Every submit path writes the key
------------------------------------------------------------------------------
SELECT taskq.submit('tap', queue => 'tap_fair', concurrency_key => 'cust-42') AS plain_id \gset
SELECT taskq.submit('tap', queue => 'tap_fair', concurrency_key => 'cust-43',
                    idempotency_key => 'tap-fair-1') AS keyed_id \gset
SELECT taskq.submit('tap', queue => 'tap_fair', concurrency_key => 'cust-44',
                    depends_on => ARRAY[taskq.submit('tap', queue => 'tap_fair')]) AS child_id \gset
SELECT taskq.submit('tap', queue => 'tap_fair') AS none_id \gset
SELECT array_agg(i) AS setwise_ids FROM taskq.submit_many(
    '[{"job_type": "tap", "queue": "tap_fair", "concurrency_key": "k1"},
      {"job_type": "tap", "queue": "tap_fair"}]') i \gset
SELECT array_agg(i) AS byjob_ids FROM taskq.submit_many(
    '[{"job_type": "tap", "queue": "tap_fair", "concurrency_key": "k2"},
      {"job_type": "tap", "queue": "tap_fair", "concurrency_key": "k3", "after": [0]}]') i \gset
SELECT is((SELECT concurrency_key FROM taskq.jobs WHERE id = :plain_id),
          'cust-42', 'submit (C rows) keeps the concurrency key');
SELECT is((SELECT concurrency_key FROM taskq.jobs WHERE id = :keyed_id),
          'cust-43', 'submit with an idempotency key (SQL) keeps the concurrency key');
SELECT is((SELECT concurrency_key FROM taskq.jobs WHERE id = :child_id),
          'cust-44', 'submit with parents (SQL) keeps the concurrency key');
SELECT is((SELECT concurrency_key FROM taskq.jobs WHERE id = :none_id),
          NULL, 'a job without a key has none');
SELECT is((SELECT array_agg(j.concurrency_key ORDER BY j.id) FROM taskq.jobs j
            WHERE j.id = ANY (:'setwise_ids'::bigint[])),
          ARRAY['k1', NULL], 'submit_many (set-wise) keeps the concurrency keys');
SELECT is((SELECT array_agg(j.concurrency_key ORDER BY j.id) FROM taskq.jobs j
            WHERE j.id = ANY (:'byjob_ids'::bigint[])),
          ARRAY['k2', 'k3'], 'submit_many (job by job) keeps the concurrency keys');

------------------------------------------------------------------------------
-- Bad keys: an error, nothing written
------------------------------------------------------------------------------
SELECT pg_temp.snap() AS before \gset
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_fair', concurrency_key => '')$$,
                 '22023', 'concurrency_key must not be empty', 'submit: empty concurrency_key');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_fair', concurrency_key => repeat('k', 201))$$,
                 '22023', 'concurrency_key is longer than 200 characters', 'submit: concurrency_key too long');
SELECT throws_ok($$SELECT taskq.submit_many(jsonb_build_array(jsonb_build_object(
                     'job_type', 'tap', 'queue', 'tap_fair', 'concurrency_key', repeat('k', 201))))$$,
                 '22023', 'job 0 of the batch: concurrency_key is longer than 200 characters',
                 'submit_many: concurrency_key too long');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap", "queue": "tap_fair", "concurrency_key": 5}]')$$,
                 '22P02', NULL, 'submit_many: a concurrency_key that is not a string');
SELECT is(pg_temp.snap(), :'before', 'bad keys wrote nothing');

------------------------------------------------------------------------------
-- configure_queue: limits and their bad input
------------------------------------------------------------------------------
SELECT lives_ok($$SELECT taskq.configure_queue('tap_fair', key_concurrency => 3, rate_limit => '6000/min')$$,
                'a key limit and a rate limit');
SELECT results_eq($$SELECT key_concurrency, rate_limit, rate_per_second, rate_burst FROM taskq.queues WHERE name = 'tap_fair'$$,
                  $$VALUES (3, '6000/min', 100::float8, 100)$$, '6000/min is 100 jobs/s, in bursts of a second''s worth');
SELECT lives_ok($$SELECT taskq.configure_queue('tap_fair_h', rate_limit => ' 10 / h ')$$, 'a rate per hour');
SELECT results_eq($$SELECT rate_per_second * 3600, rate_burst FROM taskq.queues WHERE name = 'tap_fair_h'$$,
                  $$VALUES (10::float8, 1)$$, '10/h: a burst of 1');
SELECT lives_ok($$SELECT taskq.configure_queue('tap_fair_h', rate_limit => '2.5/second', rate_burst => 7)$$,
                'a fractional rate with a burst');
SELECT results_eq($$SELECT rate_per_second, rate_burst FROM taskq.queues WHERE name = 'tap_fair_h'$$,
                  $$VALUES (2.5::float8, 7)$$, 'the new limit replaces the old one');

SELECT pg_temp.snap() AS before \gset
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '0/s')$$, '22023',
                 'rate_limit must be positive, got "0/s"', 'rate 0/s');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '-5/s')$$, '22023',
                 'rate_limit must be positive, got "-5/s"', 'rate -5/s');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => 'ten per second')$$, '22023',
                 'invalid rate_limit "ten per second"', 'rate in words');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '5/d')$$, '22023',
                 'unknown unit "d" in rate_limit "5/d"', 'unknown unit');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '')$$, '22023',
                 'invalid rate_limit ""', 'empty rate');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '2000000/s')$$, '22023',
                 'rate_limit must be at most 1000000/s, got "2000000/s"', 'rate too high');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '5/s', rate_burst => 0)$$, '22023',
                 'rate_burst must be at least 1, got 0', 'burst 0');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '5/s', rate_burst => -1)$$, '22023',
                 'rate_burst must be at least 1, got -1', 'burst -1');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_burst => 5)$$, '22023',
                 'rate_burst needs a rate_limit', 'burst without a rate');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', key_concurrency => 0)$$, '22023',
                 'key_concurrency must be at least 1, got 0', 'key_concurrency 0');
SELECT throws_ok($$SELECT taskq.configure_queue(repeat('q', 201), rate_limit => '5/s')$$, '22023',
                 'queue is longer than 200 characters', 'queue name too long');
SELECT is(pg_temp.snap(), :'before', 'bad limits wrote nothing');

------------------------------------------------------------------------------
-- Who may configure and ask
------------------------------------------------------------------------------
SET ROLE taskq_tap_fair_user;
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', key_concurrency => 100)$$, '42501', NULL,
                 'a taskq_user cannot raise a key limit');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '1000/s')$$, '42501', NULL,
                 'a taskq_user cannot raise a rate limit');
SELECT throws_ok($$SELECT taskq._rate_take(ARRAY['tap_fair'], ARRAY[-1000], ARRAY[false])$$, '42501', NULL,
                 'a taskq_user cannot refill a bucket');
SELECT throws_ok($$UPDATE taskq.queues SET rate_per_second = 1000 WHERE name = 'tap_fair'$$, '42501', NULL,
                 'a taskq_user cannot write taskq.queues');
SELECT ok(taskq.claim_retry_after(ARRAY['tap_fair_none']) IS NULL,
          'claim_retry_after: NULL for queues without a rate limit');
RESET ROLE;
SET ROLE taskq_tap_fair_wrk;
SELECT throws_ok($$SELECT taskq.configure_queue('tap_fair', rate_limit => '1000/s')$$, '42501', NULL,
                 'a taskq_worker cannot raise a rate limit');
SELECT throws_ok($$SELECT * FROM taskq._running_per_key(ARRAY['tap_fair'])$$, '42501', NULL,
                 'a taskq_worker cannot call the internal counters');
SELECT ok(taskq.claim_retry_after(ARRAY['tap_fair']) >= interval '0',
          'a taskq_worker may ask when to come back');
RESET ROLE;
SELECT is(pg_temp.snap(), :'before', 'refused calls wrote nothing');

------------------------------------------------------------------------------
-- Metrics: a row per limit, for taskq_monitor too, and in the Prometheus text
------------------------------------------------------------------------------
CREATE ROLE taskq_tap_fair_mon IN ROLE taskq_monitor;
SELECT taskq.configure_queue('tap_fair_m', key_concurrency => 1, rate_limit => '5/s', rate_burst => 3);
SELECT taskq.submit('tap', queue => 'tap_fair_m', concurrency_key => 'x') FROM generate_series(1, 3);
UPDATE taskq.jobs SET status = 'running', worker = 'tap', lease_expires_at = now() + interval '1 hour'
 WHERE id = (SELECT min(id) FROM taskq.jobs WHERE queue = 'tap_fair_m');
SET ROLE taskq_tap_fair_mon;
SELECT set_eq($$SELECT metric FROM taskq.metrics() WHERE labels->>'queue' = 'tap_fair_m'
                  AND metric LIKE 'taskq\_%\_limit\_%'$$,
              ARRAY['taskq_rate_limit_per_second', 'taskq_rate_limit_burst', 'taskq_rate_limit_tokens',
                    'taskq_rate_limit_throttled_claims_total', 'taskq_rate_limit_taken_jobs_total',
                    'taskq_rate_limit_throttled_seconds', 'taskq_key_limit_running_keys', 'taskq_key_limit_waiting_jobs'],
              'taskq_monitor sees a row of each limit metric');
SELECT results_eq($$SELECT metric, value FROM taskq.metrics()
                     WHERE labels->>'queue' = 'tap_fair_m' AND metric IN
                           ('taskq_rate_limit_per_second', 'taskq_rate_limit_burst',
                            'taskq_key_limit_running_keys', 'taskq_key_limit_waiting_jobs')
                     ORDER BY metric$$,
                  $$VALUES ('taskq_key_limit_running_keys', 1::float8), ('taskq_key_limit_waiting_jobs', 2::float8),
                           ('taskq_rate_limit_burst', 3::float8), ('taskq_rate_limit_per_second', 5::float8)$$,
                  'one key running, two jobs waiting for it; the limit as configured');
SELECT ok(taskq.metrics_prometheus() LIKE '%taskq_key_limit_waiting_jobs{queue="tap_fair_m"} 2%',
          'the Prometheus text carries them');
RESET ROLE;

-- the old four-argument call still works, and clears the new limits
SELECT lives_ok($$SELECT taskq.configure_queue('tap_fair', 2, '1 minute', 4)$$, 'configure_queue by position');
SELECT results_eq($$SELECT concurrency, key_concurrency, rate_limit FROM taskq.queues WHERE name = 'tap_fair'$$,
                  $$VALUES (2, NULL::integer, NULL::text)$$, 'a setting left out is unlimited');

SELECT * FROM finish();
ROLLBACK;
