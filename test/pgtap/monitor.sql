-- pgTAP: taskq_monitor reads metrics, health and queue depth (every role's
-- counts) and nothing else: no job's rows, no write, no internal function.
-- As taskq_tap_mon, a plain member of taskq_monitor.  One transaction,
-- rolled back.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(33);

CREATE ROLE taskq_tap_mon LOGIN IN ROLE taskq_monitor;
CREATE ROLE taskq_tap_owner IN ROLE taskq_user;
SET ROLE taskq_tap_owner;
SELECT taskq.submit('tap_mon', '{"secret": 1}', queue => 'tap_mon_q') AS job \gset
RESET ROLE;

SET ROLE taskq_tap_mon;
SELECT lives_ok($$SELECT count(*) FROM taskq.metrics()$$, 'monitor reads taskq.metrics()');
SELECT lives_ok($$SELECT taskq.metrics_prometheus()$$, 'monitor reads taskq.metrics_prometheus()');
SELECT lives_ok($$SELECT count(*) FROM taskq.health()$$, 'monitor reads taskq.health()');
SELECT lives_ok($$SELECT count(*) FROM taskq.queue_depth$$, 'monitor reads taskq.queue_depth');
SELECT lives_ok($$SELECT count(*) FROM taskq.workers$$, 'monitor reads taskq.workers');
SELECT lives_ok($$SELECT count(*) FROM taskq.throughput$$, 'monitor reads taskq.throughput');
SELECT lives_ok($$SELECT count(*) FROM taskq.resources$$, 'monitor reads taskq.resources');
SELECT is((SELECT sum(jobs) FROM taskq.queue_depth WHERE queue = 'tap_mon_q'), 1::numeric,
          'queue_depth counts another role''s job for the monitor');
SELECT is((SELECT value FROM taskq.metrics()
            WHERE metric = 'taskq_queue_depth' AND labels->>'queue' = 'tap_mon_q'), 1::float8,
          'metrics() counts another role''s job for the monitor');
SELECT ok(taskq.metrics_prometheus() LIKE '%taskq_queue_depth{priority="normal",queue="tap_mon_q",status="pending"} 1%',
          'the Prometheus text carries the same sample');
SELECT ok(taskq.metrics_prometheus() NOT LIKE '%secret%', 'no payload in the metrics');

-- no job's contents
SELECT throws_ok($$SELECT * FROM taskq.jobs$$, '42501', NULL, 'monitor cannot read taskq.jobs');
SELECT throws_ok($$SELECT * FROM taskq.job_logs$$, '42501', NULL, 'monitor cannot read taskq.job_logs');
SELECT throws_ok($$SELECT * FROM taskq.dead_letter_queue$$, '42501', NULL, 'monitor cannot read the dead letters');
SELECT throws_ok($$SELECT * FROM taskq.schedules$$, '42501', NULL, 'monitor cannot read taskq.schedules');
SELECT throws_ok($$SELECT * FROM taskq.job_dependencies$$, '42501', NULL, 'monitor cannot read the edges');
SELECT throws_ok(format($$SELECT * FROM taskq.dag(%s, 'text')$$, :job), '42501', NULL, 'monitor cannot render a dag');
-- no writes
SELECT throws_ok($$SELECT taskq.submit('tap_mon')$$, '42501', NULL, 'monitor cannot submit');
SELECT throws_ok(format('SELECT taskq.cancel(%s)', :job), '42501', NULL, 'monitor cannot cancel');
SELECT throws_ok($$SELECT * FROM taskq.claim(ARRAY['tap_mon_q'], 'w')$$, '42501', NULL, 'monitor cannot claim');
SELECT throws_ok(format('SELECT taskq.complete(%s)', :job), '42501', NULL, 'monitor cannot complete');
SELECT throws_ok($$SELECT taskq.pause('tap_mon_q')$$, '42501', NULL, 'monitor cannot pause');
SELECT throws_ok($$SELECT taskq.configure_queue('tap_mon_q', 1)$$, '42501', NULL, 'monitor cannot configure a queue');
SELECT throws_ok($$SELECT taskq.register_handler('tap_mon', 'pg_catalog.to_jsonb(anyelement)')$$, '42501', NULL,
                 'monitor cannot register a handler');
SELECT throws_ok($$SELECT taskq.purge_failed()$$, '42501', NULL, 'monitor cannot purge');
SELECT throws_ok($$SELECT taskq.retry_failed()$$, '42501', NULL, 'monitor cannot retry dead letters');
SELECT throws_ok($$SELECT taskq.schedule('tap_mon', '* * * * *', 'tap_mon')$$, '42501', NULL, 'monitor cannot schedule');
-- no internals
SELECT throws_ok($$SELECT * FROM taskq._job_metrics()$$, '42501', NULL, 'monitor cannot call _job_metrics()');
SELECT throws_ok($$SELECT * FROM taskq_internal.metrics()$$, '42501', NULL, 'monitor cannot call the wrapped body');
SELECT throws_ok($$UPDATE taskq.jobs SET status = 'running'$$, '42501', NULL, 'monitor cannot update jobs');
RESET ROLE;

-- taskq_monitor holds no other taskq role and no table privilege
SELECT ok(NOT pg_has_role('taskq_monitor', 'taskq_user', 'MEMBER')
          AND NOT pg_has_role('taskq_monitor', 'taskq_worker', 'MEMBER')
          AND NOT pg_has_role('taskq_monitor', 'taskq_admin', 'MEMBER'),
          'taskq_monitor is a member of no other taskq role');
SELECT is((SELECT array_agg(DISTINCT c.relname::text ORDER BY c.relname::text)
             FROM pg_class c
            WHERE c.relnamespace = 'taskq'::regnamespace
              AND has_table_privilege('taskq_monitor', c.oid, 'SELECT')),
          ARRAY['queue_depth', 'resources', 'throughput', 'workers'],
          'taskq_monitor may read exactly the counting views');
SELECT is((SELECT count(*) FROM pg_class c
            WHERE c.relnamespace = 'taskq'::regnamespace
              AND (has_table_privilege('taskq_monitor', c.oid, 'INSERT')
                   OR has_table_privilege('taskq_monitor', c.oid, 'UPDATE')
                   OR has_table_privilege('taskq_monitor', c.oid, 'DELETE'))),
          0::bigint, 'taskq_monitor may write no table');

SELECT * FROM finish();
ROLLBACK;
