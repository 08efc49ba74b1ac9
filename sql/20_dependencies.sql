-- Dependencies: children wait for every parent, a failed parent holds them,
-- retry resumes, cancel cascades; add_dependency and its cycle check.
\i sql/include/helpers.psql
-- Job types of this file have no handler; parents are finished with
-- claim/complete/fail as an external worker (this session is superuser).
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'deps%';

-- A diamond: b and c wait for a, d waits for b and c.
SELECT pg_temp.j('a', taskq.submit('deps', queue => 'regress_deps'));
SELECT pg_temp.j('b', taskq.submit('deps', queue => 'regress_deps', depends_on => ARRAY[pg_temp.id('a')]));
SELECT pg_temp.j('c', taskq.submit('deps', queue => 'regress_deps', depends_on => ARRAY[pg_temp.id('a'), pg_temp.id('a')]));
SELECT pg_temp.j('d', taskq.submit('deps', queue => 'regress_deps',
                 depends_on => ARRAY[pg_temp.id('b'), pg_temp.id('c')]));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps' ORDER BY id;
-- only a is runnable; blocked jobs are never claimed
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps'], 'wk', 10);
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_deps'], 'wk', 10);
SELECT taskq.complete(pg_temp.id('a'), '{"ok": true}', 'wk');
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps' ORDER BY id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps'], 'wk', 10) ORDER BY id;
-- d waits for both b and c
SELECT taskq.complete(pg_temp.id('b'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs WHERE id = pg_temp.id('d');
SELECT taskq.complete(pg_temp.id('c'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs WHERE id = pg_temp.id('d');
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps'], 'wk', 10);
SELECT taskq.complete(pg_temp.id('d'));
SELECT taskq.wait(ARRAY[pg_temp.id('a'), pg_temp.id('b'), pg_temp.id('c'), pg_temp.id('d')], '0') AS all_done;
SELECT status, attempt, pg_temp.l(message) AS message FROM taskq.job_logs
WHERE job_id = pg_temp.id('d') ORDER BY id;
-- a job submitted after its parent succeeded is pending at once
SELECT pg_temp.j('e', taskq.submit('deps', queue => 'regress_deps', depends_on => ARRAY[pg_temp.id('a')]));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs WHERE id = pg_temp.id('e');
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps'], 'wk');
SELECT taskq.complete(pg_temp.id('e'));

-- A failing parent keeps its children blocked: a retryable failure with
-- attempts left, then the dead-letter queue; retry(parent) resumes the graph.
SELECT pg_temp.j('p', taskq.submit('deps', queue => 'regress_deps_fail', max_attempts => 2,
                 backoff => interval '0'));
SELECT pg_temp.j('ok', taskq.submit('deps', queue => 'regress_deps_fail'));
SELECT pg_temp.j('q', taskq.submit('deps', queue => 'regress_deps_fail',
                 depends_on => ARRAY[pg_temp.id('p'), pg_temp.id('ok')]));
SELECT pg_temp.j('r', taskq.submit('deps', queue => 'regress_deps_fail', depends_on => ARRAY[pg_temp.id('q')]));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps_fail'], 'wk', 10) ORDER BY id;
SELECT taskq.complete(pg_temp.id('ok'));
SELECT taskq.fail(pg_temp.id('p'), 'disk full', true, 'wk');
SELECT pg_temp.n(id) AS job, status, attempts, last_error, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps_fail' ORDER BY id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps_fail'], 'wk', 10);
SELECT taskq.fail(pg_temp.id('p'), 'disk still full', true, 'wk');
SELECT pg_temp.n(id) AS job, status, attempts, last_error, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps_fail' ORDER BY id;
SELECT pg_temp.n(id) AS dead_letter, attempts, last_error FROM taskq.dead_letter_queue
WHERE queue = 'regress_deps_fail';
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_deps_fail'], 'wk', 10);
SELECT taskq.wait(ARRAY[pg_temp.id('q')], '0') AS q_finished;
SELECT taskq.retry(pg_temp.id('p'));
SELECT pg_temp.n(id) AS job, status, attempts, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps_fail' ORDER BY id;
SELECT pg_temp.n(id) AS claimed, attempts FROM taskq.claim(ARRAY['regress_deps_fail'], 'wk', 10);
SELECT taskq.complete(pg_temp.id('p'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps_fail' ORDER BY id;
SELECT status, attempt, message, error FROM taskq.job_logs WHERE job_id = pg_temp.id('p') ORDER BY id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps_fail'], 'wk', 10);
SELECT taskq.complete(pg_temp.id('q'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps_fail'], 'wk', 10);
SELECT taskq.complete(pg_temp.id('r'));

-- Cancelling a parent cancels its dependents transitively, and nothing else.
SELECT pg_temp.j('root', taskq.submit('deps', queue => 'regress_deps_cancel'));
SELECT pg_temp.j('other', taskq.submit('deps', queue => 'regress_deps_cancel'));
SELECT pg_temp.j('child', taskq.submit('deps', queue => 'regress_deps_cancel', depends_on => ARRAY[pg_temp.id('root')]));
SELECT pg_temp.j('grandchild', taskq.submit('deps', queue => 'regress_deps_cancel',
                 depends_on => ARRAY[pg_temp.id('child'), pg_temp.id('other')]));
SELECT pg_temp.j('greatgrandchild', taskq.submit('deps', queue => 'regress_deps_cancel',
                 depends_on => ARRAY[pg_temp.id('grandchild')]));
SELECT pg_temp.j('sibling', taskq.submit('deps', queue => 'regress_deps_cancel', depends_on => ARRAY[pg_temp.id('other')]));
SELECT taskq.cancel(pg_temp.id('root'));
SELECT pg_temp.n(id) AS job, status, finished_at IS NOT NULL AS finished FROM taskq.jobs
WHERE queue = 'regress_deps_cancel' ORDER BY id;
SELECT pg_temp.n(job_id) AS job, status, pg_temp.l(message) AS message FROM taskq.job_logs
WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'regress_deps_cancel') AND status = 'cancelled'
ORDER BY job_id;
-- a cancelled job can neither be depended on nor cancelled again
SELECT pg_temp.try_ids($$SELECT taskq.submit('deps', queue => 'regress_deps_cancel', depends_on => ARRAY[pg_temp.id('child')])$$);
SELECT pg_temp.try_ids($$SELECT taskq.add_dependency(pg_temp.id('sibling'), pg_temp.id('child'))$$);
SELECT pg_temp.try_ids($$SELECT taskq.cancel(pg_temp.id('grandchild'))$$);

-- add_dependency: a pending job becomes blocked; a succeeded parent counts as
-- done; a failed one blocks; a duplicate edge is a no-op.
SELECT pg_temp.j('x', taskq.submit('deps', queue => 'regress_deps_add'));
SELECT pg_temp.j('y', taskq.submit('deps', queue => 'regress_deps_add'));
SELECT pg_temp.j('z', taskq.submit('deps', queue => 'regress_deps_add'));
SELECT taskq.add_dependency(pg_temp.id('y'), pg_temp.id('a'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs WHERE id = pg_temp.id('y');
SELECT taskq.add_dependency(pg_temp.id('y'), pg_temp.id('x'));
SELECT taskq.add_dependency(pg_temp.id('y'), pg_temp.id('x'));
SELECT taskq.add_dependency(pg_temp.id('z'), pg_temp.id('y'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps_add' ORDER BY id;
SELECT pg_temp.n(job_id) AS job, pg_temp.n(depends_on) AS depends_on FROM taskq.job_dependencies
WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'regress_deps_add') ORDER BY 1, 2;
SELECT status, pg_temp.l(message) AS message FROM taskq.job_logs WHERE job_id = pg_temp.id('y') ORDER BY id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_deps_add'], 'wk', 10);
SELECT taskq.fail(pg_temp.id('x'), 'broken', false);
SELECT pg_temp.j('w', taskq.submit('deps', queue => 'regress_deps_add'));
SELECT taskq.add_dependency(pg_temp.id('w'), pg_temp.id('x'));
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps_add' ORDER BY id;

-- Cycles are rejected, and the error names the cycle.
SELECT pg_temp.j('c1', taskq.submit('deps', queue => 'regress_deps_cycle'));
SELECT pg_temp.j('c2', taskq.submit('deps', queue => 'regress_deps_cycle', depends_on => ARRAY[pg_temp.id('c1')]));
SELECT pg_temp.j('c3', taskq.submit('deps', queue => 'regress_deps_cycle', depends_on => ARRAY[pg_temp.id('c2')]));
SELECT pg_temp.j('c4', taskq.submit('deps', queue => 'regress_deps_cycle', depends_on => ARRAY[pg_temp.id('c3')]));
SELECT pg_temp.j('c5', taskq.submit('deps', queue => 'regress_deps_cycle', depends_on => ARRAY[pg_temp.id('c4')]));
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.snap() AS before \gset
SELECT n, pg_temp.try_ids(stmt) AS error FROM (VALUES
 -- cycles of length 2, 5 and 3
 (1, $$SELECT taskq.add_dependency(pg_temp.id('c1'), pg_temp.id('c2'))$$),
 (2, $$SELECT taskq.add_dependency(pg_temp.id('c1'), pg_temp.id('c5'))$$),
 (3, $$SELECT taskq.add_dependency(pg_temp.id('c2'), pg_temp.id('c4'))$$),
 (4, $$SELECT taskq.add_dependency(pg_temp.id('c3'), pg_temp.id('c3'))$$),
 (5, $$SELECT taskq.add_dependency(pg_temp.id('c3'), 9223372036854775807)$$),
 (6, $$SELECT taskq.add_dependency(9223372036854775807, pg_temp.id('c3'))$$),
 (7, $$SELECT taskq.add_dependency(NULL, pg_temp.id('c3'))$$),
 (8, $$SELECT taskq.add_dependency(pg_temp.id('c3'), NULL)$$),
 (9, $$SELECT taskq.add_dependency(pg_temp.id('a'), pg_temp.id('c1'))$$),
 (10, $$SELECT taskq.add_dependency(pg_temp.id('greatgrandchild'), pg_temp.id('c1'))$$)
) AS t(n, stmt) ORDER BY n;
SELECT pg_temp.snap() = :'before' AS nothing_written;
COMMIT;
-- the graph is unchanged: c1 is still the only runnable job of the chain
SELECT pg_temp.n(id) AS job, status, unfinished_parents FROM taskq.jobs
WHERE queue = 'regress_deps_cycle' ORDER BY id;
-- a shortcut edge is no cycle; the cycle check then finds the shorter path
SELECT taskq.add_dependency(pg_temp.id('c5'), pg_temp.id('c2'));
SELECT pg_temp.try_ids($$SELECT taskq.add_dependency(pg_temp.id('c2'), pg_temp.id('c5'))$$);
SELECT pg_temp.n(job_id) AS job, pg_temp.n(depends_on) AS depends_on FROM taskq.job_dependencies
WHERE job_id IN (SELECT id FROM taskq.jobs WHERE queue = 'regress_deps_cycle') ORDER BY 1, 2;

-- Leave no live jobs behind.
SELECT pg_temp.cancel_all('regress_deps%');
SELECT status, count(*) FROM taskq.jobs WHERE queue LIKE 'regress_deps%' GROUP BY 1 ORDER BY 1;
