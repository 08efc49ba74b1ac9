-- Limits of the graph and of taskq's locks, run as an unprivileged role
-- (PUBLIC may call the API):
-- the cycle check is linear in the edges it reads (a lattice of 2^30 paths),
-- a job's parents take no lock-table entry each, taskq's locks are out of
-- pg_advisory_*'s reach, and bad arguments get the documented SQLSTATE,
-- submit_many's naming the job and the key.
\i sql/include/helpers.psql
CREATE ROLE taskq_graph_user NOLOGIN;
DO $$ BEGIN  -- (where the API is granted to taskq_user rather than PUBLIC)
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskq_user') THEN
        GRANT taskq_user TO taskq_graph_user;
    END IF;
END $$;
GRANT ALL ON lbl TO taskq_graph_user;
SET ROLE taskq_graph_user;

-- 30 layers of 2 jobs, each job depending on both jobs of the layer below:
-- 2^30 paths from the top to the bottom (job type graph_none has no handler).
DO $$
DECLARE below bigint[]; here bigint[];
BEGIN
    FOR layer IN 0..29 LOOP
        here := ARRAY[
            taskq.submit('graph_none', queue => 'regress_graph', depends_on => coalesce(below, '{}')),
            taskq.submit('graph_none', queue => 'regress_graph', depends_on => coalesce(below, '{}'))];
        PERFORM pg_temp.j(format('L%sa', layer), here[1]);
        PERFORM pg_temp.j(format('L%sb', layer), here[2]);
        below := here;
    END LOOP;
END $$;
SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'blocked') AS blocked
FROM taskq.jobs WHERE queue = 'regress_graph';
SELECT count(*) AS edges FROM taskq.job_dependencies d JOIN lbl ON lbl.id = d.job_id;
-- a new job may depend on the top: the check reads every job below it once
SELECT pg_temp.j('x', taskq.submit('graph_none', queue => 'regress_graph'));
SELECT taskq.add_dependency(pg_temp.id('x'), pg_temp.id('L29a'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs WHERE id = pg_temp.id('x');
-- the bottom may not depend on the top: the error shows a shortest cycle
SELECT pg_temp.try_ids(format('SELECT taskq.add_dependency(%s, %s)', pg_temp.id('L0a'), pg_temp.id('L29a')));
SELECT pg_temp.try_ids(format('SELECT taskq.add_dependency(%s, %s)', pg_temp.id('L0b'), pg_temp.id('x')));
-- nor on itself through one edge
SELECT pg_temp.try_ids(format('SELECT taskq.add_dependency(%s, %s)', pg_temp.id('L28b'), pg_temp.id('L29b')));
SELECT count(*) AS edges FROM taskq.job_dependencies d JOIN lbl ON lbl.id = d.job_id;

-- A job's parents are row-locked, not advisory-locked: one submit with
-- 5,000 parents, three times in one transaction, holds a handful of
-- heavyweight locks, none of them in pg_advisory_*'s key space.
BEGIN;
SELECT count(*) AS parents FROM (
    SELECT taskq.submit('graph_none', queue => 'regress_graph_wide')
    FROM generate_series(1, 5000)) s;
SELECT count(*) AS children FROM (
    SELECT taskq.submit('graph_none', queue => 'regress_graph_wide',
                        depends_on => ARRAY(SELECT id FROM taskq.jobs WHERE queue = 'regress_graph_wide'
                                            AND unfinished_parents = 0))
    FROM generate_series(1, 3)) s;
SELECT count(*) < 50 AS few_locks,
       count(*) FILTER (WHERE locktype = 'advisory' AND objsubid IN (1, 2)) AS sql_advisory_locks
FROM pg_locks WHERE pid = pg_backend_pid();
-- a batch of 200 job types takes at most 16 job-type locks
SELECT count(*) AS jobs FROM taskq.submit_many(
    (SELECT jsonb_agg(jsonb_build_object('job_type', 'graph_type_' || i, 'queue', 'regress_graph_wide'))
     FROM generate_series(1, 200) i));
SELECT count(*) FILTER (WHERE locktype = 'advisory') <= 16 AS job_type_locks_bounded,
       count(*) FILTER (WHERE locktype = 'advisory' AND objsubid IN (1, 2)) AS sql_advisory_locks
FROM pg_locks WHERE pid = pg_backend_pid();
COMMIT;

-- The SQLSTATEs of the API: NULL is 22004, a missing parent 23503.
SELECT n, pg_temp.try(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.schedule('graph_s', '* * * * *', 'graph_none', '{}', NULL)$$),
 (2, $$SELECT taskq.dag(NULL)$$),
 (3, $$SELECT taskq.dag(NULL, 'dot')$$),
 (4, format('SELECT taskq.add_dependency(%s, -5)', pg_temp.id('x'))),
 (5, format('SELECT taskq.add_dependency(%s, 9223372036854775807)', pg_temp.id('x')))
) AS t(n, stmt) ORDER BY n;

-- submit_many names the job (numbered from 0) and the key of every error,
-- and takes no value of the wrong JSON type.  Jobs 0 and 1 are good; each
-- batch is tried alone (a plain batch), beside a job with "after" (the job
-- by job path) and beside one with a run_at (the set-wise path).
CREATE TEMP TABLE bad_job (n integer, job jsonb);
INSERT INTO bad_job VALUES
 (1, '{"job_type": 5}'), (2, '{"job_type": {"a": 1}}'), (3, '{"job_type": [1, 2]}'),
 (4, '{"job_type": true}'), (5, '{"job_type": null}'), (6, '{"queue": "q"}'),
 (7, '{"job_type": "t", "queue": true}'), (8, '{"job_type": "t", "queue": 7}'),
 (9, '{"job_type": "t", "cpu_units": "1"}'), (10, '{"job_type": "t", "cpu_units": 1.5}'),
 (11, '{"job_type": "t", "cpu_units": 0}'), (12, '{"job_type": "t", "cpu_units": 99}'),
 (13, '{"job_type": "t", "memory_mb": -1}'), (14, '{"job_type": "t", "memory_mb": 1e12}'),
 (15, '{"job_type": "t", "max_attempts": "3"}'), (16, '{"job_type": "t", "max_attempts": 0}'),
 (17, '{"job_type": "t", "priority": 1}'), (18, '{"job_type": "t", "priority": "urgent"}'),
 (19, '{"job_type": "t", "payload": "x"}'), (20, '{"job_type": "t", "depends_on": 1}'),
 (21, '{"job_type": "t", "depends_on": ["1"]}'), (22, '{"job_type": "t", "depends_on": [null]}'),
 (23, '{"job_type": "t", "after": "0"}'), (24, '{"job_type": "t", "after": ["0"]}'),
 (25, '{"job_type": "t", "after": [""]}'), (26, '{"job_type": "t", "after": [2]}'),
 (27, '{"job_type": "t", "after": [0.5]}'), (28, '{"job_type": "t", "run_at": 5}'),
 (29, '{"job_type": "t", "run_at": "soon"}'), (30, '{"job_type": "t", "run_at": "infinity"}'),
 (31, '{"job_type": "t", "timeout": 30}'), (32, '{"job_type": "t", "timeout": "0 s"}'),
 (33, '{"job_type": "t", "backoff": "-1 s"}'), (34, '{"job_type": "t", "backoff": "later"}'),
 (35, '{"job_type": "t", "idempotency_key": 5}'), (36, '{"job_type": "t", "idempotency_key": ""}'),
 (37, '{"job_type": "t", "owner": "postgres"}'), (38, '[1]'), (39, '"job"'),
 (40, '{"job_type": " "}'), (41, '{"job_type": "t", "after": [1e30]}');
SELECT n, pg_temp.try(format('SELECT taskq.submit_many(%L)',
                             jsonb_build_array('{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                               '{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                               job))) AS error
FROM bad_job ORDER BY n;
-- the same errors on the other paths
SELECT n FROM bad_job
WHERE pg_temp.try(format('SELECT taskq.submit_many(%L)',
                         jsonb_build_array('{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                           '{"job_type": "t", "queue": "regress_graph_bad", "after": [0]}'::jsonb,
                                           job)))
   <> pg_temp.try(format('SELECT taskq.submit_many(%L)',
                         jsonb_build_array('{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                           '{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                           job)))
   OR pg_temp.try(format('SELECT taskq.submit_many(%L)',
                         jsonb_build_array('{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                           '{"job_type": "t", "queue": "regress_graph_bad", "run_at": "2000-01-01"}'::jsonb,
                                           job)))
   <> pg_temp.try(format('SELECT taskq.submit_many(%L)',
                         jsonb_build_array('{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                           '{"job_type": "t", "queue": "regress_graph_bad"}'::jsonb,
                                           job)))
ORDER BY n;
-- nothing was written, and good values of every key still go through
SELECT count(*) AS written FROM taskq.jobs WHERE queue = 'regress_graph_bad';
SELECT count(*) AS submitted FROM taskq.submit_many(format('[
    {"job_type": "t", "queue": "regress_graph_bad", "priority": null, "cpu_units": 2, "memory_mb": 1e1,
     "max_attempts": 2, "timeout": "1 min", "backoff": "0 s", "run_at": "2100-01-01", "payload": {"a": null},
     "idempotency_key": "k", "depends_on": [%s]},
    {"job_type": "t", "queue": null, "after": [0], "depends_on": null, "timeout": null}]',
    pg_temp.id('x'))::jsonb);
SELECT queue, priority, cpu_units, memory_mb, max_attempts, timeout, backoff, payload, unfinished_parents
FROM taskq.jobs WHERE queue IN ('regress_graph_bad', 'default') AND job_type = 't' ORDER BY id;

-- clean up
RESET ROLE;
DELETE FROM taskq.job_logs WHERE job_id IN (SELECT id FROM taskq.jobs j WHERE j.owner = 'taskq_graph_user'::regrole);
DELETE FROM taskq.jobs j WHERE j.owner = 'taskq_graph_user'::regrole;
DROP OWNED BY taskq_graph_user;
DROP ROLE taskq_graph_user;
