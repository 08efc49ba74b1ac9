-- pgTAP: issue 23's remaining contract: a job type that forbids a tenant or
-- a concurrency key (taskq.configure_job_type(allow_tenant,
-- allow_concurrency_key)), refused on every submit path with 22023 and
-- nothing written; and the tenants' metric taskq_tenant_turn_waiting_jobs
-- in taskq.metrics() and the Prometheus text.  One transaction, rolled back; the jobs have no handler and sit in
-- queues no test claims.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(30);

CREATE ROLE taskq_tap_rules_user IN ROLE taskq_user;
CREATE ROLE taskq_tap_rules_mon IN ROLE taskq_monitor;

CREATE FUNCTION pg_temp.jobs() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM taskq.jobs WHERE queue LIKE 'tap_rules%'
$$;

------------------------------------------------------------------------------
-- configure_job_type(allow_tenant, allow_concurrency_key)
------------------------------------------------------------------------------
SELECT has_function('taskq', 'configure_job_type', ARRAY['text', 'text', 'integer', 'boolean', 'boolean'],
                    'taskq.configure_job_type(text, text, integer, boolean, boolean) exists');
SELECT lives_ok($$SELECT taskq.configure_job_type('tap_rules_nt', allow_tenant => false)$$,
                'a type without tenants, without a rate limit');
SELECT lives_ok($$SELECT taskq.configure_job_type('tap_rules_nk', '1000/s', allow_concurrency_key => false)$$,
                'a type without keys, with a rate limit');
SELECT results_eq($$SELECT job_type, rate_limit, allow_tenant, allow_concurrency_key FROM taskq.job_types
                     WHERE job_type LIKE 'tap_rules%' ORDER BY 1$$,
                  $$VALUES ('tap_rules_nk'::text, '1000/s'::text, true, false),
                           ('tap_rules_nt', NULL, false, true)$$,
                  'taskq.job_types keeps the rules');
SELECT is((SELECT count(*) FROM taskq.rate_limit_state() WHERE name LIKE 'tap_rules%'), 1::bigint,
          'a type without a rate limit is no rate limit');
SELECT is((SELECT count(*) FROM taskq.metrics() WHERE labels->>'job_type' LIKE 'tap_rules%'), 6::bigint,
          'only the rate-limited type has rate metrics');

------------------------------------------------------------------------------
-- Every submit path refuses, writing nothing
------------------------------------------------------------------------------
SET ROLE taskq_tap_rules_user;
SELECT throws_ok($$SELECT taskq.submit('tap_rules_nt', queue => 'tap_rules_q', tenant => 'cust-1')$$,
                 '22023', 'job type "tap_rules_nt" does not allow a tenant', 'submit: a forbidden tenant');
SELECT throws_ok($$SELECT taskq.submit('tap_rules_nk', queue => 'tap_rules_q', concurrency_key => 'k')$$,
                 '22023', 'job type "tap_rules_nk" does not allow a concurrency_key', 'submit: a forbidden key');
SELECT throws_ok($$SELECT taskq.submit('tap_rules_nt', queue => 'tap_rules_q', tenant => 'cust-1',
                                       depends_on => ARRAY[(SELECT taskq.submit('tap_rules_ok', queue => 'tap_rules_q'))])$$,
                 '22023', 'job type "tap_rules_nt" does not allow a tenant',
                 'submit with parents (through SQL): a forbidden tenant, and the parent is rolled back');
SELECT throws_ok($$SELECT taskq.submit('tap_rules_nk', queue => 'tap_rules_q', concurrency_key => 'k',
                                       idempotency_key => 'tap-rules-1')$$,
                 '22023', 'job type "tap_rules_nk" does not allow a concurrency_key',
                 'submit with an idempotency key: a forbidden key');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap_rules_ok", "queue": "tap_rules_q"},
                                              {"job_type": "tap_rules_nt", "queue": "tap_rules_q", "tenant": "c"}]')$$,
                 '22023', 'job type "tap_rules_nt" does not allow a tenant',
                 'submit_many set-wise: a forbidden tenant in the second job');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap_rules_nk", "queue": "tap_rules_q", "concurrency_key": "k"}]')$$,
                 '22023', 'job type "tap_rules_nk" does not allow a concurrency_key',
                 'submit_many set-wise: a forbidden key');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap_rules_ok", "queue": "tap_rules_q"},
                                              {"job_type": "tap_rules_nk", "queue": "tap_rules_q",
                                               "concurrency_key": "k", "after": [0]}]')$$,
                 '22023', 'job type "tap_rules_nk" does not allow a concurrency_key',
                 'submit_many job by job: a forbidden key');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap_rules_nt", "queue": "tap_rules_q",
                                               "tenant": "c", "idempotency_key": "tap-rules-2"}]')$$,
                 '22023', 'job type "tap_rules_nt" does not allow a tenant',
                 'submit_many job by job: a forbidden tenant');
SELECT is(pg_temp.jobs(), 0::bigint, 'the refused submits wrote no job');

-- what stays allowed
SELECT lives_ok($$SELECT taskq.submit('tap_rules_nt', queue => 'tap_rules_q', concurrency_key => 'k')$$,
                'a type without tenants takes a key');
SELECT lives_ok($$SELECT taskq.submit('tap_rules_nk', queue => 'tap_rules_q', tenant => 'cust-1')$$,
                'a type without keys takes a tenant');
SELECT lives_ok($$SELECT taskq.submit_many('[{"job_type": "tap_rules_nt", "queue": "tap_rules_q"},
                                             {"job_type": "tap_rules_nk", "queue": "tap_rules_q"}]')$$,
                'a plain batch of both types');
SELECT lives_ok($$SELECT taskq.submit('tap_rules_other', queue => 'tap_rules_q', tenant => 'c', concurrency_key => 'k')$$,
                'other types take both');
SELECT is(pg_temp.jobs(), 5::bigint, 'the allowed submits wrote their jobs');
RESET ROLE;

-- only an admin configures; NULL allows; all allowed and no rate: no row
SET ROLE taskq_tap_rules_user;
SELECT throws_ok($$SELECT taskq.configure_job_type('tap_rules_nt')$$, '42501', NULL,
                 'a taskq_user cannot allow a forbidden tenant');
RESET ROLE;
SELECT lives_ok($$SELECT taskq.configure_job_type('tap_rules_nt', allow_tenant => NULL)$$,
                'allow_tenant NULL allows');
SELECT is((SELECT count(*) FROM taskq.job_types WHERE job_type = 'tap_rules_nt'), 0::bigint,
          'a type with no rate limit that allows both has no row');
SET ROLE taskq_tap_rules_user;
SELECT lives_ok($$SELECT taskq.submit('tap_rules_nt', queue => 'tap_rules_q', tenant => 'cust-1')$$,
                'its tenant jobs are taken again');
RESET ROLE;

------------------------------------------------------------------------------
-- Tenant metrics
------------------------------------------------------------------------------
-- queue tap_rules_m: tenant a has 3 due jobs (turns now+1 s, +2 s, +3 s:
-- all ahead), tenant b 1, one job without a tenant, one tenant job not due
SELECT taskq.submit('tap_rules_m', queue => 'tap_rules_m', tenant => 'a') FROM generate_series(1, 3);
SELECT taskq.submit('tap_rules_m', queue => 'tap_rules_m', tenant => 'b');
SELECT taskq.submit('tap_rules_m', queue => 'tap_rules_m');
SELECT taskq.submit('tap_rules_m', queue => 'tap_rules_m', tenant => 'c', run_at => now() + interval '1 hour');
SELECT taskq.submit('tap_rules_m', queue => 'tap_rules_m2', tenant => 'a', priority => 'high');
SELECT results_eq($$SELECT metric, labels->>'queue', value FROM taskq.metrics()
                     WHERE metric LIKE 'taskq\_tenant\_%' AND labels->>'queue' LIKE 'tap_rules_m%' ORDER BY 1, 2$$,
                  $$VALUES ('taskq_tenant_turn_waiting_jobs'::text, 'tap_rules_m'::text, 4::float8),
                           ('taskq_tenant_turn_waiting_jobs', 'tap_rules_m2', 1)$$,
                  'due tenant jobs waiting for their turn, per queue');
SELECT is((SELECT count(*) FROM taskq.metrics() WHERE metric LIKE 'taskq\_tenant\_%'
                                                  AND labels - 'queue' <> '{}'), 0::bigint,
          'the tenant metrics are labelled by queue alone');
-- a job whose turn has come is not waiting
UPDATE taskq.jobs SET fair_at = now() - interval '1 second' WHERE queue = 'tap_rules_m' AND tenant = 'b';
SELECT is((SELECT value FROM taskq.metrics() WHERE metric = 'taskq_tenant_turn_waiting_jobs'
                                               AND labels->>'queue' = 'tap_rules_m'), 3::float8,
          'a job whose turn has come does not wait for it');
SELECT ok(taskq.metrics_prometheus() LIKE '%taskq_tenant_turn_waiting_jobs{queue="tap_rules_m"} 3%',
          'waiting jobs in the Prometheus text');
SELECT ok(taskq.metrics_prometheus() LIKE '%# TYPE taskq_tenant_turn_waiting_jobs gauge%', 'a gauge');
SET ROLE taskq_tap_rules_mon;
SELECT is((SELECT count(*) FROM taskq.metrics() WHERE metric LIKE 'taskq\_tenant\_%'
                                                  AND labels->>'queue' LIKE 'tap_rules_m%'), 2::bigint,
          'a taskq_monitor reads them');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
