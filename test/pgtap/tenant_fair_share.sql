-- pgTAP: tenant fair share in the claim (issue 23): tenant jobs' turns
-- (fair_at), B's new job claimed before A's backlog, 2:1 interleave at
-- weights 2 and 1, untenanted jobs in FIFO order, a retried job keeps its
-- turn, priorities and aging across tenants.  One transaction, rolled back;
-- the jobs have no handler, so only these external claims take them.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;

BEGIN;
SELECT plan(19);

-- claim one job at a time from queue q, n times: the tenants in claim order
-- ('-' for none)
CREATE FUNCTION pg_temp.claim_order(q text, n integer) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    out text := '';
    j taskq.jobs;
BEGIN
    FOR i IN 1..n LOOP
        SELECT * INTO j FROM taskq.claim(ARRAY[q], 'tap-fair', 1);
        EXIT WHEN NOT FOUND;
        out := out || coalesce(j.tenant, '-');
    END LOOP;
    RETURN out;
END
$$;

-- the same, their ids
CREATE FUNCTION pg_temp.claim_ids(q text, n integer) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[] := '{}';
    j taskq.jobs;
BEGIN
    FOR i IN 1..n LOOP
        SELECT * INTO j FROM taskq.claim(ARRAY[q], 'tap-fair', 1);
        EXIT WHEN NOT FOUND;
        ids := ids || j.id;
    END LOOP;
    RETURN ids;
END
$$;

------------------------------------------------------------------------------
-- Schema
------------------------------------------------------------------------------
SELECT has_column('taskq', 'jobs', 'fair_at', 'taskq.jobs has column fair_at (a tenant job''s turn)');
SELECT has_index('taskq', 'jobs', 'jobs_runnable_turn_idx', 'tenant jobs are indexed in turn order');

------------------------------------------------------------------------------
-- Turns: every submit path sets them, 1 s / weight apart per tenant
------------------------------------------------------------------------------
-- the C path of src/job_rows.c, then submit_many (set-wise, SQL INSERT)
SELECT taskq.submit('tap_fair', queue => 'tap_fair_turns', tenant => 'tap_t') AS t1 \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_turns', tenant => 'tap_t') AS t2 \gset
SELECT max(id) AS t4 FROM taskq.submit_many(jsonb_build_array(
    jsonb_build_object('job_type', 'tap_fair', 'queue', 'tap_fair_turns', 'tenant', 'tap_t'),
    jsonb_build_object('job_type', 'tap_fair', 'queue', 'tap_fair_turns', 'tenant', 'tap_t'))) AS s(id) \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_turns') AS untenanted \gset
SELECT is((SELECT fair_at - run_at FROM taskq.jobs WHERE id = :t1), interval '1 s',
          'a tenant''s first pending job has its turn 1 s after its run_at');
SELECT is((SELECT array_agg(fair_at - now() ORDER BY id) FROM taskq.jobs
            WHERE queue = 'tap_fair_turns' AND tenant = 'tap_t'),
          ARRAY[interval '1 s', interval '2 s', interval '3 s', interval '4 s'],
          'each next job of the tenant, by submit or submit_many, takes the next turn');
SELECT is((SELECT fair_at FROM taskq.jobs WHERE id = :untenanted), NULL,
          'a job without a tenant has no turn');

------------------------------------------------------------------------------
-- B's new job is claimed before A's backlog
------------------------------------------------------------------------------
SELECT count(taskq.submit('tap_fair', queue => 'tap_fair_bl', tenant => 'tap_a'))
  FROM generate_series(1, 500) \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_bl', tenant => 'tap_b') AS b_job \gset
SELECT ok(:b_job = ANY (ARRAY(SELECT id FROM taskq.claim(ARRAY['tap_fair_bl'], 'tap-fair', 2))),
          'B''s job, submitted after A''s 500, is in the first batch of 2');
-- the executors' and every worker's claim (no queue named) honours it too
SELECT taskq.submit('tap_fair', queue => 'tap_fair_bl', tenant => 'tap_c') AS c_job \gset
SELECT ok(:c_job = ANY (ARRAY(SELECT id FROM taskq._claim(false, NULL, 'tap-fair', 2, '5 min',
                                                            2147483647, 2147483647, NULL))),
          'a claim of every queue takes C''s job before A''s backlog too');

------------------------------------------------------------------------------
-- Weights 2 and 1: two turns of H for one of L
------------------------------------------------------------------------------
SELECT taskq.configure_tenant('tap_h', 2);
SELECT count(taskq.submit('tap_fair', queue => 'tap_fair_w', tenant => 'tap_h')) FROM generate_series(1, 6) \gset
SELECT count(taskq.submit('tap_fair', queue => 'tap_fair_w', tenant => 'tap_l')) FROM generate_series(1, 6) \gset
SELECT is(replace(replace(pg_temp.claim_order('tap_fair_w', 9), 'tap_h', 'H'), 'tap_l', 'L'),
          'HHLHHLHHL', 'weights 2 and 1 interleave 2:1, though L''s jobs were all submitted after H''s');
SELECT is(replace(pg_temp.claim_order('tap_fair_w', 5), 'tap_l', 'L'), 'LLL',
          'then L''s rest: the claim never idles while a tenant has due jobs');

------------------------------------------------------------------------------
-- Without a tenant: FIFO, as before
------------------------------------------------------------------------------
SELECT taskq.submit('tap_fair', queue => 'tap_fair_none') AS n1 \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_none') AS n2 \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_none') AS n3 \gset
SELECT is(pg_temp.claim_ids('tap_fair_none', 3),
          ARRAY[:n1, :n2, :n3]::bigint[], 'jobs without a tenant are claimed first in, first out');
-- an untenanted job submitted before a tenant's backlog goes before it
SELECT taskq.submit('tap_fair', queue => 'tap_fair_mix') AS m1 \gset
SELECT count(taskq.submit('tap_fair', queue => 'tap_fair_mix', tenant => 'tap_a')) FROM generate_series(1, 3) \gset
SELECT is(pg_temp.claim_order('tap_fair_mix', 4), '-tap_atap_atap_a',
          'an untenanted job queued before a tenant''s jobs is claimed before them');

------------------------------------------------------------------------------
-- A retried job keeps its turn
------------------------------------------------------------------------------
SELECT count(taskq.submit('tap_fair', queue => 'tap_fair_retry', tenant => 'tap_r', backoff => '1 hour'))
  FROM generate_series(1, 3) \gset
SELECT id AS r1, fair_at AS r1_turn FROM taskq.claim(ARRAY['tap_fair_retry'], 'tap-fair', 1) \gset
SELECT taskq.fail(:r1, 'try again', true, 'tap-fair');
SELECT is((SELECT status::text || ', same turn: ' || (fair_at = :'r1_turn') FROM taskq.jobs WHERE id = :r1),
          'pending, same turn: true',
          'a failed job back to pending for a retry keeps its turn');
SELECT isnt((SELECT id FROM taskq.claim(ARRAY['tap_fair_retry'], 'tap-fair', 1)), :r1::bigint,
            'while its backoff lasts, the tenant''s next job is claimed');
-- its backoff over: it goes first again, its turn being the tenant's earliest
UPDATE taskq.jobs SET run_at = now() - interval '1 s' WHERE id = :r1;
SELECT is((SELECT id FROM taskq.claim(ARRAY['tap_fair_retry'], 'tap-fair', 1)), :r1::bigint,
          'its backoff over, the retried job is claimed at its old turn, before the tenant''s later job');

------------------------------------------------------------------------------
-- Priorities still order across tenants
------------------------------------------------------------------------------
SELECT count(taskq.submit('tap_fair', queue => 'tap_fair_prio', tenant => 'tap_a')) FROM generate_series(1, 3) \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_prio', tenant => 'tap_b', priority => 'low') AS low_b \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_prio', tenant => 'tap_a', priority => 'high') AS high_a \gset
SELECT is(pg_temp.claim_ids('tap_fair_prio', 5),
          ARRAY[:high_a]::bigint[] || (SELECT array_agg(id ORDER BY id) FROM taskq.jobs
                                        WHERE queue = 'tap_fair_prio' AND priority = 'normal') || :low_b::bigint,
          'a high job goes first and a low one last, whatever their tenants'' turns');

------------------------------------------------------------------------------
-- Aging by turn: a backlog whose turns lie ahead is not lifted above others
------------------------------------------------------------------------------
SELECT taskq.submit('tap_fair', queue => 'tap_fair_age', run_at => now() - interval '11 minutes') AS old_none \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_age', tenant => 'tap_o', run_at => now() - interval '11 minutes')
    AS old_turn \gset
SELECT taskq.submit('tap_fair', queue => 'tap_fair_age', tenant => 'tap_x', run_at => now() - interval '11 minutes')
    AS ahead \gset
-- as if tap_x's backlog had pushed this job's turn an hour ahead (aging at
-- the default taskq.aging_interval, 5 min)
UPDATE taskq.jobs SET fair_at = now() + interval '1 hour' WHERE id = :ahead;
SELECT ok(taskq._age_priorities() >= 2, 'aging ran');
SELECT is((SELECT effective_priority::text FROM taskq.jobs WHERE id = :old_none), 'high',
          'an untenanted job waiting 11 minutes is aged');
SELECT is((SELECT effective_priority::text FROM taskq.jobs WHERE id = :old_turn), 'high',
          'a tenant job whose turn came 11 minutes ago is aged');
SELECT is((SELECT effective_priority::text FROM taskq.jobs WHERE id = :ahead), 'normal',
          'a tenant job whose turn is still ahead is not aged, however old its run_at');

SELECT * FROM finish();
ROLLBACK;
