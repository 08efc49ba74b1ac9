-- Queues (pause, resume, concurrency and defaults) and handler registration.
\i sql/include/helpers.psql
-- Job types of this file have no handler, except inside rolled-back
-- transactions, so executors never run them.
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'queues%';

-- pause/resume: a paused queue is not claimable, others are.
SELECT pg_temp.j('p1', taskq.submit('queues', queue => 'regress_queues_paused'));
SELECT pg_temp.j('p2', taskq.submit('queues', queue => 'regress_queues_paused'));
SELECT pg_temp.j('free', taskq.submit('queues', queue => 'regress_queues_free'));
SELECT taskq.pause('regress_queues_paused');
SELECT taskq.pause('regress_queues_paused');
SELECT name, paused, concurrency FROM taskq.queues WHERE name LIKE 'regress_queues%' ORDER BY name;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_queues_paused', 'regress_queues_free'], 'wk', 10);
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_queues_paused'], 'wk', 10);
-- submitting into a paused queue is fine; the jobs wait
SELECT pg_temp.j('p3', taskq.submit('queues', queue => 'regress_queues_paused'));
SELECT pg_temp.n(id) AS job, status FROM taskq.jobs WHERE queue = 'regress_queues_paused' ORDER BY id;
SELECT taskq.resume('regress_queues_paused');
SELECT name, paused FROM taskq.queues WHERE name = 'regress_queues_paused';
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_queues_paused'], 'wk', 10) ORDER BY id;
-- a running job of a queue paused meanwhile can still finish
SELECT taskq.pause('regress_queues_paused');
SELECT count(taskq.complete(id)) AS completed FROM taskq.jobs WHERE queue = 'regress_queues_paused';
SELECT taskq.resume('regress_queues_paused');
-- resume of a queue never seen before just creates its settings
SELECT taskq.resume('regress_queues_new');
SELECT name, paused, concurrency FROM taskq.queues WHERE name = 'regress_queues_new';

-- configure_queue: the concurrency limit caps running jobs across all claims.
SELECT taskq.configure_queue('regress_queues_limited', concurrency => 2);
SELECT count(pg_temp.j('l' || i, taskq.submit('queues', queue => 'regress_queues_limited')))
FROM generate_series(1, 5) i;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_queues_limited'], 'wk', 5) ORDER BY id;
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_queues_limited'], 'other worker', 5);
SELECT taskq.complete(pg_temp.id('l1'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_queues_limited'], 'other worker', 5);
SELECT count(*) FILTER (WHERE status = 'running') AS running, count(*) FILTER (WHERE status = 'pending') AS pending
FROM taskq.jobs WHERE queue = 'regress_queues_limited';
-- raising the limit lets more run; pausing keeps the limit
SELECT taskq.configure_queue('regress_queues_limited', concurrency => 3);
SELECT taskq.pause('regress_queues_limited');
SELECT name, paused, concurrency FROM taskq.queues WHERE name = 'regress_queues_limited';
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_queues_limited'], 'wk', 5);
SELECT taskq.resume('regress_queues_limited');
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_queues_limited'], 'wk', 5);
-- NULL means unlimited
SELECT taskq.configure_queue('regress_queues_limited');
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_queues_limited'], 'wk', 5);

-- configure_queue: defaults for new jobs; explicit arguments win.
SELECT taskq.configure_queue('regress_queues_defaults', default_timeout => interval '5 minutes',
                             default_max_attempts => 7);
SELECT pg_temp.j('dflt', taskq.submit('queues', queue => 'regress_queues_defaults'));
SELECT pg_temp.j('own', taskq.submit('queues', queue => 'regress_queues_defaults',
                 timeout => interval '1 minute', max_attempts => 2));
SELECT pg_temp.n(id) AS job, timeout, max_attempts FROM taskq.jobs
WHERE queue = 'regress_queues_defaults' ORDER BY id;
SELECT name, paused, concurrency, default_timeout, default_max_attempts FROM taskq.queues
WHERE name = 'regress_queues_defaults';

-- Handlers: functions (payload jsonb) returning jsonb or void.
CREATE FUNCTION public.regress_qh_jsonb(payload jsonb) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
CREATE FUNCTION public.regress_qh_void(payload jsonb) RETURNS void
    LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION public.regress_qh_text(payload text) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION public.regress_qh_two(payload jsonb, extra integer) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
CREATE FUNCTION public.regress_qh_none() RETURNS jsonb
    LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION public.regress_qh_int(payload jsonb) RETURNS integer
    LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION public.regress_qh_setof(payload jsonb) RETURNS SETOF jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
CREATE FUNCTION public.regress_qh_definer(payload jsonb) RETURNS jsonb
    LANGUAGE sql SECURITY DEFINER AS $$ SELECT payload $$;
CREATE PROCEDURE public.regress_qh_proc(payload jsonb)
    LANGUAGE sql AS $$ SELECT 1 $$;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.snap() AS before \gset
SELECT n, pg_temp.try(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_text(text)')$$),
 (2, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_two(jsonb, integer)')$$),
 (3, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_none()')$$),
 (4, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_int(jsonb)')$$),
 (5, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_setof(jsonb)')$$),
 (6, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_definer(jsonb)')$$),
 (7, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_proc(jsonb)')$$),
 (8, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_missing(jsonb)')$$),
 (9, $$SELECT taskq.register_handler('queues_h', 'count(*)')$$),
 (10, $$SELECT taskq.register_handler('queues_h', NULL)$$),
 (11, $$SELECT taskq.register_handler('queues_h', 0)$$),
 (12, $$SELECT taskq.register_handler(NULL, 'public.regress_qh_jsonb(jsonb)')$$),
 (13, $$SELECT taskq.register_handler('', 'public.regress_qh_jsonb(jsonb)')$$),
 (14, $$SELECT taskq.unregister_handler('queues_never_registered')$$),
 (15, $$SELECT taskq.unregister_handler(NULL)$$),
 (16, $$SELECT taskq.pause(NULL)$$),
 (17, $$SELECT taskq.pause('')$$),
 (18, $$SELECT taskq.resume(NULL)$$),
 (19, $$SELECT taskq.resume('  ')$$),
 (20, $$SELECT taskq.configure_queue(NULL)$$),
 (21, $$SELECT taskq.configure_queue('regress_queues_bad', concurrency => 0)$$),
 (22, $$SELECT taskq.configure_queue('regress_queues_bad', concurrency => -1)$$),
 (23, $$SELECT taskq.configure_queue('regress_queues_bad', default_timeout => interval '0')$$),
 (24, $$SELECT taskq.configure_queue('regress_queues_bad', default_timeout => interval '-1 minute')$$),
 (25, $$SELECT taskq.configure_queue('regress_queues_bad', default_max_attempts => 0)$$),
 (26, $$SELECT taskq.configure_queue(repeat('q', 201))$$)
) AS t(n, stmt) ORDER BY n;
-- only members of taskq_admin manage queues and handlers
SET ROLE taskq_alice;
SELECT n, pg_temp.try(stmt) AS error FROM (VALUES
 (1, $$SELECT taskq.register_handler('queues_h', 'public.regress_qh_jsonb(jsonb)')$$),
 (2, $$SELECT taskq.unregister_handler('queues_h')$$),
 (3, $$SELECT taskq.pause('regress_queues_free')$$),
 (4, $$SELECT taskq.resume('regress_queues_free')$$),
 (5, $$SELECT taskq.configure_queue('regress_queues_free', concurrency => 1)$$)
) AS t(n, stmt) ORDER BY n;
RESET ROLE;
SELECT pg_temp.snap() = :'before' AS nothing_written;
COMMIT;

-- Registering (rolled back: a committed handler would let executors run the
-- jobs).  A job type with a handler is no longer claimable by external workers.
BEGIN;
SELECT pg_temp.j('h', taskq.submit('queues_h', queue => 'regress_queues_h'));
SELECT taskq.register_handler('queues_h', 'public.regress_qh_jsonb(jsonb)');
SELECT job_type, handler, registered_by = current_user::text::regrole AS by_me
FROM taskq.handlers WHERE job_type = 'queues_h';
SELECT count(*) AS claimed FROM taskq.claim(ARRAY['regress_queues_h'], 'wk');
-- re-registering replaces the handler
SELECT taskq.register_handler('queues_h', 'public.regress_qh_void(jsonb)');
SELECT job_type, handler FROM taskq.handlers WHERE job_type = 'queues_h';
SELECT taskq.unregister_handler('queues_h');
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type = 'queues_h';
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_queues_h'], 'wk');
-- taskq_boss (a member of taskq_admin) may register and manage queues
SET ROLE taskq_boss;
SELECT taskq.register_handler('queues_h', 'public.regress_qh_jsonb(jsonb)');
SELECT taskq.pause('regress_queues_h');
SELECT taskq.configure_queue('regress_queues_h', concurrency => 1);
SELECT job_type, registered_by::text FROM taskq.handlers WHERE job_type = 'queues_h';
RESET ROLE;
ROLLBACK;
DELETE FROM lbl WHERE name = 'h';
SELECT count(*) AS handlers FROM taskq.handlers WHERE job_type LIKE 'queues%';
SELECT count(*) AS queues FROM taskq.queues WHERE name = 'regress_queues_h';

DROP FUNCTION public.regress_qh_jsonb(jsonb), public.regress_qh_void(jsonb),
    public.regress_qh_text(text), public.regress_qh_two(jsonb, integer), public.regress_qh_none(),
    public.regress_qh_int(jsonb), public.regress_qh_setof(jsonb), public.regress_qh_definer(jsonb);
DROP PROCEDURE public.regress_qh_proc(jsonb);

-- Leave no live jobs behind.
SELECT pg_temp.cancel_all('regress_queues%');
SELECT status, count(*) FROM taskq.jobs WHERE queue LIKE 'regress_queues%' GROUP BY 1 ORDER BY 1;
