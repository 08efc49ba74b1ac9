-- pgTAP: tenants (issue 23): the tenant on every submit path, its name
-- checks, and taskq.configure_tenant with its bad input (each an error with
-- its SQLSTATE, nothing written) and who may call it.  One transaction,
-- rolled back; the jobs have no handler and sit in queues no test claims.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(44);

CREATE ROLE taskq_tap_ten_user IN ROLE taskq_user;
CREATE ROLE taskq_tap_ten_mon IN ROLE taskq_monitor;

-- what a rejected call could have written
CREATE FUNCTION pg_temp.snap() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce((SELECT string_agg(format('%s=%s', t.name, t.weight), ',' ORDER BY t.name)
                       FROM taskq.tenants t WHERE t.name LIKE 'tap_ten%'), '') || '|' ||
           (SELECT count(*) FROM taskq.jobs WHERE queue LIKE 'tap_ten%')::text
$$;

------------------------------------------------------------------------------
-- Schema
------------------------------------------------------------------------------
SELECT has_column('taskq', 'jobs', 'tenant', 'taskq.jobs has column tenant');
SELECT has_table('taskq', 'tenants', 'taskq.tenants exists');
SELECT has_function('taskq', 'configure_tenant', ARRAY['text', 'double precision'],
                    'taskq.configure_tenant(text, float8) exists');

------------------------------------------------------------------------------
-- Every submit path writes the tenant
------------------------------------------------------------------------------
-- plain (the C path of src/job_rows.c), keyed and with parents (SQL)
SELECT taskq.submit('tap', queue => 'tap_ten', tenant => 'acme') AS plain_id \gset
SELECT taskq.submit('tap', queue => 'tap_ten', tenant => 'acme-2', idempotency_key => 'tap-ten-1') AS keyed_id \gset
SELECT taskq.submit('tap', queue => 'tap_ten', tenant => 'acme-3', depends_on => ARRAY[:plain_id]::bigint[])
    AS child_id \gset
SELECT taskq.submit('tap', queue => 'tap_ten') AS none_id \gset
-- submit_many: set-wise, job by job, and the plain batch (no tenant)
SELECT array_agg(i ORDER BY i) AS set_ids FROM taskq.submit_many(
    '[{"job_type": "tap", "queue": "tap_ten", "tenant": "t1"},
      {"job_type": "tap", "queue": "tap_ten", "tenant": null}]') i \gset
SELECT array_agg(i ORDER BY i) AS seq_ids FROM taskq.submit_many(
    '[{"job_type": "tap", "queue": "tap_ten", "tenant": "t2"},
      {"job_type": "tap", "queue": "tap_ten", "tenant": "t3", "after": [0]}]') i \gset
SELECT array_agg(i ORDER BY i) AS plain_ids FROM taskq.submit_many(
    '[{"job_type": "tap", "queue": "tap_ten"}]') i \gset
SELECT is((SELECT tenant FROM taskq.jobs WHERE id = :plain_id), 'acme', 'submit: a plain job keeps its tenant');
SELECT is((SELECT tenant FROM taskq.jobs WHERE id = :keyed_id), 'acme-2', 'submit: with an idempotency key');
SELECT is((SELECT tenant FROM taskq.jobs WHERE id = :child_id), 'acme-3', 'submit: with parents');
SELECT is((SELECT tenant FROM taskq.jobs WHERE id = :none_id), NULL, 'submit: no tenant is NULL');
SELECT is((SELECT array_agg(j.tenant ORDER BY j.id) FROM taskq.jobs j WHERE j.id = ANY (:'set_ids'::bigint[])),
          ARRAY['t1', NULL], 'submit_many set-wise: the tenants, a JSON null for none');
SELECT is((SELECT array_agg(j.tenant ORDER BY j.id) FROM taskq.jobs j WHERE j.id = ANY (:'seq_ids'::bigint[])),
          ARRAY['t2', 't3'], 'submit_many job by job: the tenants');
SELECT is((SELECT array_agg(j.tenant ORDER BY j.id) FROM taskq.jobs j WHERE j.id = ANY (:'plain_ids'::bigint[])),
          ARRAY[NULL::text], 'submit_many plain batch: no tenant');
SELECT is(taskq.submit('tap', queue => 'tap_ten', tenant => 'other', idempotency_key => 'tap-ten-1'),
          :keyed_id::bigint, 'a live idempotency key returns its job, tenant and all');
SELECT is((SELECT tenant FROM taskq.jobs WHERE id = :keyed_id), 'acme-2', 'and leaves its tenant alone');

-- a taskq_user submits with a tenant on each path, and sees it
SET ROLE taskq_tap_ten_user;
SELECT taskq.submit('tap', queue => 'tap_ten', tenant => 'u1') AS user_id \gset
SELECT is((SELECT tenant FROM taskq.jobs WHERE id = :user_id), 'u1', 'a taskq_user submits with a tenant');
SELECT array_agg(i) AS user_ids
  FROM taskq.submit_many('[{"job_type": "tap", "queue": "tap_ten", "tenant": "u2"}]') i \gset
SELECT is((SELECT array_agg(j.tenant ORDER BY j.id) FROM taskq.jobs j WHERE j.id = ANY (:'user_ids'::bigint[])),
          ARRAY['u2'], 'and through submit_many');
RESET ROLE;

------------------------------------------------------------------------------
-- Bad tenant names: an error each, nothing written
------------------------------------------------------------------------------
SELECT pg_temp.snap() AS before \gset
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_ten', tenant => '')$$,
                 '22023', 'tenant must not be empty', 'submit: empty tenant');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_ten', tenant => E' \t')$$,
                 '22023', 'tenant must not be empty', 'submit: blank tenant');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_ten', tenant => repeat('t', 201))$$,
                 '22023', 'tenant is longer than 200 characters', 'submit: tenant too long');
SELECT throws_ok($$SELECT taskq.submit('tap', queue => 'tap_ten', tenant => repeat('t', 201),
                                       idempotency_key => 'tap-ten-2')$$,
                 '22023', 'tenant is longer than 200 characters', 'submit with a key: tenant too long');
SELECT throws_ok($$SELECT taskq.submit_many(jsonb_build_array(jsonb_build_object(
                     'job_type', 'tap', 'queue', 'tap_ten', 'tenant', repeat('t', 201))))$$,
                 '22023', 'job 0 of the batch: tenant is longer than 200 characters',
                 'submit_many: tenant too long');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap", "queue": "tap_ten"},
                                              {"job_type": "tap", "queue": "tap_ten", "tenant": ""}]')$$,
                 '22023', 'job 1 of the batch: tenant must not be empty', 'submit_many: empty tenant');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap", "queue": "tap_ten", "tenant": 5}]')$$,
                 '22P02', NULL, 'submit_many: a tenant that is not a string');
SELECT throws_ok($$SELECT taskq.submit_many('[{"job_type": "tap", "queue": "tap_ten", "tenant": ["a"]}]')$$,
                 '22P02', NULL, 'submit_many: a tenant that is an array');
SELECT is(pg_temp.snap(), :'before', 'bad tenants wrote nothing');

------------------------------------------------------------------------------
-- configure_tenant
------------------------------------------------------------------------------
SELECT lives_ok($$SELECT taskq.configure_tenant('tap_ten_a', 3)$$, 'an admin sets a weight');
SELECT results_eq($$SELECT weight FROM taskq.tenants WHERE name = 'tap_ten_a'$$, $$VALUES (3::float8)$$,
                  'the weight is stored');
SELECT lives_ok($$SELECT taskq.configure_tenant('tap_ten_a', 0.25)$$, 'a fractional weight replaces it');
SELECT results_eq($$SELECT weight FROM taskq.tenants WHERE name = 'tap_ten_a'$$, $$VALUES (0.25::float8)$$,
                  'the new weight is stored');
SELECT lives_ok($$SELECT taskq.configure_tenant('tap_ten_b', 2)$$, 'a second tenant');
SELECT lives_ok($$SELECT taskq.configure_tenant('tap_ten_b')$$, 'no weight: back to the default');
SELECT is((SELECT count(*) FROM taskq.tenants WHERE name = 'tap_ten_b'), 0::bigint, 'its row is gone');

SELECT pg_temp.snap() AS before \gset
SELECT throws_ok($$SELECT taskq.configure_tenant('tap_ten_a', 0)$$, '22023',
                 'weight must be positive, got 0', 'weight 0');
SELECT throws_ok($$SELECT taskq.configure_tenant('tap_ten_a', -2)$$, '22023',
                 'weight must be positive, got -2', 'weight below 0');
SELECT throws_ok($$SELECT taskq.configure_tenant('tap_ten_a', 'NaN')$$, '22023',
                 'weight must be positive, got NaN', 'weight NaN');
SELECT throws_ok($$SELECT taskq.configure_tenant('tap_ten_a', 'Infinity')$$, '22023',
                 'weight must be at most 1000000, got Infinity', 'weight infinite');
SELECT throws_ok($$SELECT taskq.configure_tenant('tap_ten_c', 2000000)$$, '22023',
                 'weight must be at most 1000000, got 2000000', 'weight too high');
SELECT throws_ok($$SELECT taskq.configure_tenant('', 2)$$, '22023',
                 'tenant must not be empty', 'empty tenant name');
SELECT throws_ok($$SELECT taskq.configure_tenant(repeat('t', 201), 2)$$, '22023',
                 'tenant is longer than 200 characters', 'tenant name too long');
SELECT throws_ok($$SELECT taskq.configure_tenant(NULL, 2)$$, '22004',
                 'tenant must not be NULL', 'tenant NULL');
SELECT is(pg_temp.snap(), :'before', 'bad weights wrote nothing');

------------------------------------------------------------------------------
-- Who may configure: admins only
------------------------------------------------------------------------------
SET ROLE taskq_tap_ten_user;
SELECT throws_ok($$SELECT taskq.configure_tenant('tap_ten_a', 1000)$$, '42501', NULL,
                 'a taskq_user cannot raise its tenant''s weight');
SELECT throws_ok($$INSERT INTO taskq.tenants (name, weight) VALUES ('tap_ten_d', 1000)$$, '42501', NULL,
                 'a taskq_user cannot write taskq.tenants');
RESET ROLE;
SET ROLE taskq_tap_ten_mon;
SELECT throws_ok($$SELECT taskq.configure_tenant('tap_ten_a', 1000)$$, '42501', NULL,
                 'nor can a taskq_monitor');
SELECT throws_ok($$SELECT weight FROM taskq.tenants$$, '42501', NULL,
                 'a taskq_monitor does not read tenant names');
RESET ROLE;
SELECT is(pg_temp.snap(), :'before', 'refused calls wrote nothing');

SELECT * FROM finish();
ROLLBACK;
