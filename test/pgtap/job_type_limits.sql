-- pgTAP: rate limits per job type (issue 23): taskq.configure_job_type, its
-- bad input (each an error with its SQLSTATE, nothing written), who may call
-- it, and a claim that takes no more of a type than its bucket holds while
-- other types pass.  One transaction, rolled back; the jobs have no handler
-- and sit in queues no other test claims.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(29);

CREATE ROLE taskq_tap_jt_user IN ROLE taskq_user;
CREATE ROLE taskq_tap_jt_mon IN ROLE taskq_monitor;

-- what a rejected call could have written
CREATE FUNCTION pg_temp.snap() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce((SELECT string_agg(format('%s', t), ',' ORDER BY t.job_type) FROM taskq.job_types t
                      WHERE t.job_type LIKE 'tap_jt%'), '')
$$;

SELECT has_table('taskq', 'job_types', 'taskq.job_types exists');
SELECT has_function('taskq', 'configure_job_type', ARRAY['text', 'text', 'integer', 'boolean', 'boolean'],
                    'taskq.configure_job_type(text, text, integer, boolean, boolean) exists');

------------------------------------------------------------------------------
-- Values
------------------------------------------------------------------------------
SELECT lives_ok($$SELECT taskq.configure_job_type('tap_jt', '6000/min')$$, 'a rate per minute');
SELECT results_eq($$SELECT rate_limit, rate_per_second, rate_burst FROM taskq.job_types WHERE job_type = 'tap_jt'$$,
                  $$VALUES ('6000/min', 100::float8, 100)$$, '100 jobs/s, in bursts of a second''s worth');
SELECT lives_ok($$SELECT taskq.configure_job_type('tap_jt', ' 2.5 / s ', rate_burst => 7)$$, 'a fractional rate with a burst');
SELECT results_eq($$SELECT rate_limit, rate_per_second, rate_burst FROM taskq.job_types WHERE job_type = 'tap_jt'$$,
                  $$VALUES ('2.5 / s', 2.5::float8, 7)$$, 'the new limit replaces the old one');
SELECT lives_ok($$SELECT taskq.configure_job_type('tap_jt_gone', '10/h')$$, 'a second type');
SELECT lives_ok($$SELECT taskq.configure_job_type('tap_jt_gone')$$, 'no rate: unlimited again');
SELECT is((SELECT count(*) FROM taskq.job_types WHERE job_type = 'tap_jt_gone'), 0::bigint, 'its row is gone');

------------------------------------------------------------------------------
-- Bad input: an error each, nothing written
------------------------------------------------------------------------------
SELECT pg_temp.snap() AS before \gset
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', '0/s')$$, '22023',
                 'rate_limit must be positive, got "0/s"', 'rate 0/s');
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', '-5/s')$$, '22023',
                 'rate_limit must be positive, got "-5/s"', 'rate -5/s');
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', 'ten per second')$$, '22023',
                 'invalid rate_limit "ten per second"', 'rate in words');
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', '5/d')$$, '22023',
                 'unknown unit "d" in rate_limit "5/d"', 'unknown unit');
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', '2000000/s')$$, '22023',
                 'rate_limit must be at most 1000000/s, got "2000000/s"', 'rate too high');
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', '5/s', 0)$$, '22023',
                 'rate_burst must be at least 1, got 0', 'burst 0');
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', rate_burst => 5)$$, '22023',
                 'rate_burst needs a rate_limit', 'burst without a rate');
SELECT throws_ok($$SELECT taskq.configure_job_type('', '5/s')$$, '22023',
                 'job_type must not be empty', 'empty job type');
SELECT throws_ok($$SELECT taskq.configure_job_type(repeat('t', 201), '5/s')$$, '22023',
                 'job_type is longer than 200 characters', 'job type too long');
SELECT throws_ok($$SELECT taskq.configure_job_type(NULL, '5/s')$$, '22004',
                 'job_type must not be NULL', 'job type NULL');
SELECT is(pg_temp.snap(), :'before', 'bad limits wrote nothing');

------------------------------------------------------------------------------
-- Who may configure: admins only; the limits are readable
------------------------------------------------------------------------------
SET ROLE taskq_tap_jt_user;
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', '1000/s')$$, '42501', NULL,
                 'a taskq_user cannot raise a job type''s limit');
SELECT throws_ok($$UPDATE taskq.job_types SET rate_per_second = 1000 WHERE job_type = 'tap_jt'$$, '42501', NULL,
                 'a taskq_user cannot write taskq.job_types');
SELECT is((SELECT rate_limit FROM taskq.job_types WHERE job_type = 'tap_jt'), '2.5 / s',
          'a taskq_user reads the limits');
RESET ROLE;
SET ROLE taskq_tap_jt_mon;
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_jt', '1000/s')$$, '42501', NULL,
                 'nor can a taskq_monitor');
RESET ROLE;
SELECT is(pg_temp.snap(), :'before', 'refused calls wrote nothing');

------------------------------------------------------------------------------
-- The claim: at most the bucket's tokens of the type, other types pass
------------------------------------------------------------------------------
-- one token an hour, a burst of one (the bucket starts empty, or holds at
-- most one token left from an earlier run)
SELECT taskq.configure_job_type('tap_jt_c', '1/h', 1) \gset
SELECT count(*) AS submitted FROM taskq.submit_many(
    '[{"job_type": "tap_jt_c", "queue": "tap_jt_q"}, {"job_type": "tap_jt_c", "queue": "tap_jt_q"},
      {"job_type": "tap_jt_c", "queue": "tap_jt_q2"}, {"job_type": "tap_jt_free", "queue": "tap_jt_q"}]') \gset
SELECT results_eq($$SELECT count(*) FILTER (WHERE job_type = 'tap_jt_c') <= 1,
                           count(*) FILTER (WHERE job_type = 'tap_jt_free')
                      FROM taskq.claim(ARRAY['tap_jt_q', 'tap_jt_q2'], 'tap-jt', 10, '1 hour')$$,
                  $$VALUES (true, 1::bigint)$$,
                  'a claim takes at most one job of the limited type, and the other type');
SELECT results_eq($$SELECT kind, rate_limit, throttled_for IS NOT NULL FROM taskq.rate_limit_state()
                     WHERE name = 'tap_jt_c'$$,
                  $$VALUES ('job_type', '1/h', true)$$, 'rate_limit_state: the type is throttled');
SELECT set_eq($$SELECT metric FROM taskq.metrics() WHERE labels->>'job_type' = 'tap_jt_c'$$,
              ARRAY['taskq_job_type_rate_limit_per_second', 'taskq_job_type_rate_limit_burst',
                    'taskq_job_type_rate_limit_tokens', 'taskq_job_type_rate_limit_throttled_claims_total',
                    'taskq_job_type_rate_limit_taken_jobs_total', 'taskq_job_type_rate_limit_throttled_seconds'],
              'metrics: a row of each job type rate limit metric, labelled by job_type');
SET ROLE taskq_tap_jt_user;
SELECT is((SELECT kind FROM taskq.rate_limit_state() WHERE name = 'tap_jt_c'), 'job_type',
          'a taskq_user reads the state of a type''s limit');
RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
