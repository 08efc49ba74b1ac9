-- pgTAP: schedules pg_cron can run, as the roles involved (the suite's
-- cluster runs pg_cron with background workers; the settings that need a
-- restart are in TAP 032_schedules.pl).  One transaction, rolled back.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(12);

CREATE ROLE taskq_tap_sched LOGIN IN ROLE taskq_user;
CREATE ROLE taskq_tap_other LOGIN IN ROLE taskq_user;
CREATE ROLE taskq_tap_nologin NOLOGIN IN ROLE taskq_user;
CREATE ROLE taskq_tap_watch LOGIN IN ROLE taskq_monitor;
CREATE FUNCTION pg_temp.state() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$
    SELECT (SELECT count(*) FROM taskq.schedules WHERE name LIKE 'tap_s%') || '/' ||
           (SELECT count(*) FROM cron.job WHERE jobname LIKE 'taskq:tap_s%')
$$;
GRANT EXECUTE ON FUNCTION pg_temp.state() TO PUBLIC;

SET ROLE taskq_tap_nologin;
SELECT throws_ok($$SELECT taskq.schedule('tap_s_nologin', '0 3 * * *', 'tap_s')$$, '55000',
                 'pg_cron could not run this schedule as role taskq_tap_nologin',
                 'a NOLOGIN role cannot schedule (pg_cron runs schedules as their role)');
SELECT is(pg_temp.state(), '0/0', '... nothing created');
RESET ROLE;

SET ROLE taskq_tap_sched;
SELECT lives_ok($$SELECT taskq.schedule('tap_s_daily', '0 3 * * *', 'tap_s')$$,
                'a LOGIN role schedules with cron.use_background_workers = on');
SELECT is(pg_temp.state(), '1/1', '... one schedule and its pg_cron job');
SELECT throws_ok($$SELECT taskq.schedule('tap_s_bad', 'every tuesday', 'tap_s')$$, '22023', NULL,
                 'a cron expression pg_cron rejects: 22023');
SELECT is(pg_temp.state(), '1/1', '... nothing added');
SELECT is((SELECT status FROM taskq.health() WHERE check_name = 'schedules'), 'ok',
          'health(): no failed run yet');
RESET ROLE;

-- pg_cron records a failed run of the schedule
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status,
                                  return_message, start_time, end_time)
SELECT jobid, 900002, 0, current_database(), 'taskq_tap_sched', command, 'failed',
       'could not start background process', now(), now()
  FROM cron.job WHERE jobname = 'taskq:tap_s_daily';

SET ROLE taskq_tap_sched;
SELECT is((SELECT status FROM taskq.health() WHERE check_name = 'schedules'), 'fail',
          'health(): the owner sees its schedule''s failed run');
SELECT matches((SELECT message FROM taskq.health() WHERE check_name = 'schedules'),
               'tap_s_daily.*could not start background process', '... with pg_cron''s error');
RESET ROLE;
SET ROLE taskq_tap_other;
SELECT ok((SELECT message FROM taskq.health() WHERE check_name = 'schedules') !~ 'tap_s_daily',
          'another taskq_user does not see it');
RESET ROLE;
SET ROLE taskq_tap_watch;
SELECT matches((SELECT message FROM taskq.health() WHERE check_name = 'schedules'),
               'tap_s_daily', 'a taskq_monitor member sees the schedule''s name');
SELECT ok((SELECT message FROM taskq.health() WHERE check_name = 'schedules') !~ 'background process',
          '... not pg_cron''s error text');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
