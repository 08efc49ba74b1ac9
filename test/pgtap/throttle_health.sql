-- pgTAP: a rate limit that throttles for too long (issue 23): health()'s
-- "rate_limits" check warns after taskq.throttle_warn_after, the state is
-- readable by the roles that watch queues, and a claim that is not
-- throttled ends the span.  Waits on conditions, bounded, never on a fixed
-- sleep.  One transaction, rolled back (the bucket in shared memory stays,
-- which a later run copes with: it asks for more than a token's worth).
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(13);

CREATE ROLE taskq_tap_thr_user IN ROLE taskq_user;
CREATE ROLE taskq_tap_thr_mon IN ROLE taskq_monitor;

SELECT has_function('taskq', 'rate_limit_state', 'taskq.rate_limit_state() exists');
SELECT is(current_setting('taskq.throttle_warn_after'), '5min', 'taskq.throttle_warn_after defaults to 5min');

-- one token an hour, a burst of one: every claim of three due jobs is throttled
SELECT taskq.configure_queue('tap_thr', rate_limit => '1/h') \gset
SELECT count(*) AS submitted FROM taskq.submit_many(
    '[{"job_type": "tap", "queue": "tap_thr"}, {"job_type": "tap", "queue": "tap_thr"},
      {"job_type": "tap", "queue": "tap_thr"}]') \gset
SELECT cmp_ok((SELECT count(*) FROM taskq.claim(ARRAY['tap_thr'], 'tap-thr', 10, '1 hour')), '<=', 1::bigint,
              'a claim takes at most the one token');
SELECT isnt((SELECT throttled_for FROM taskq.rate_limit_state() WHERE kind = 'queue' AND name = 'tap_thr'), NULL,
            'the queue is throttled');

-- until the span passes a second (bounded: 30 s), claiming as a worker would
DO $$
DECLARE
    stop timestamptz := clock_timestamp() + interval '30 seconds';
BEGIN
    WHILE clock_timestamp() < stop AND coalesce((SELECT throttled_for FROM taskq.rate_limit_state()
                                                  WHERE kind = 'queue' AND name = 'tap_thr'), '0') <= interval '1.2 seconds' LOOP
        PERFORM taskq.claim(ARRAY['tap_thr'], 'tap-thr', 10, '1 hour');
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT cmp_ok((SELECT throttled_for FROM taskq.rate_limit_state() WHERE kind = 'queue' AND name = 'tap_thr'), '>',
              interval '1.2 seconds', 'throttled for more than a second');
SELECT is((SELECT status FROM taskq.health() WHERE check_name = 'rate_limits'), 'ok',
          'health: ok below taskq.throttle_warn_after');
SET taskq.throttle_warn_after = '1s';
SELECT is((SELECT status FROM taskq.health() WHERE check_name = 'rate_limits'), 'warn',
          'health: warns past taskq.throttle_warn_after');
SELECT matches((SELECT message FROM taskq.health() WHERE check_name = 'rate_limits'),
               'longer than 00:00:01: .*queue tap_thr \(1/h, for 00:00:0[1-9]',
               'the warning names the queue, its limit and the span');

-- the roles that watch queues see it; a taskq_user cannot move the threshold
SET ROLE taskq_tap_thr_user;
SELECT isnt((SELECT throttled_for FROM taskq.rate_limit_state() WHERE kind = 'queue' AND name = 'tap_thr'), NULL,
            'a taskq_user reads the throttled queues');
SELECT throws_ok($$SET taskq.throttle_warn_after = '1h'$$, '42501', NULL,
                 'a taskq_user cannot set taskq.throttle_warn_after');
RESET ROLE;
SET ROLE taskq_tap_thr_mon;
SELECT is((SELECT status FROM taskq.health() WHERE check_name = 'rate_limits'), 'warn',
          'a taskq_monitor sees the warning');
RESET ROLE;

-- a claim that is not throttled ends the span
SELECT taskq.configure_queue('tap_thr', rate_limit => '1000/s') \gset
SELECT cmp_ok((SELECT count(*) FROM taskq.claim(ARRAY['tap_thr'], 'tap-thr', 10, '1 hour')), '>=', 1::bigint,
              'a claim under the raised limit takes the jobs');
SELECT is((SELECT throttled_for FROM taskq.rate_limit_state() WHERE kind = 'queue' AND name = 'tap_thr'), NULL,
          'and the queue is no longer throttled');

SELECT * FROM finish();
ROLLBACK;
