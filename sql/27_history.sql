-- History records what went wrong, not every step: exactly which log rows
-- each course of a job writes.  No row for 'submitted', 'running' or a
-- first-try success; one per failed attempt (error, worker, start and end),
-- per retry scheduled, per cancel, per retry from the dead-letter queue and
-- per job a failed parent leaves blocked.  External jobs are driven with
-- claim/complete/fail; in-database ones by the executors.
\i sql/include/helpers.psql
SET taskq.notify_level = 'none';
-- each log row of a job, ids as labels, times as their order
CREATE FUNCTION pg_temp.history(name text) RETURNS TABLE (status taskq.job_status, attempt integer,
                                                         message text, error text, details text)
LANGUAGE sql AS $$
    SELECT l.status, l.attempt, pg_temp.l(l.message), l.error,
           CASE WHEN l.details ? 'started_at'
                THEN format('worker %s, started_at <= ended_at: %s', l.details->>'worker',
                            (l.details->>'started_at')::timestamptz <= (l.details->>'ended_at')::timestamptz)
                WHEN l.details ? 'run_at' THEN 'run_at set'
                ELSE pg_temp.l(l.details::text) END
      FROM taskq.job_logs l WHERE l.job_id = pg_temp.id(name) ORDER BY l.id
$$;

-- First-try success, through submit, submit_many, claim and complete or
-- complete_many: no row at all; the job's row carries the story.
SELECT pg_temp.j('ok1', taskq.submit('history_ext', queue => 'regress_history'));
SELECT pg_temp.j('ok2', id) FROM taskq.submit_many(
    '[{"job_type": "history_ext", "queue": "regress_history"}]') AS id;
SELECT pg_temp.j('ok3', id) FROM taskq.submit_many(
    '[{"job_type": "history_ext", "queue": "regress_history", "max_attempts": 2}]') AS id;
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_history'], 'wk', 3) ORDER BY id;
SELECT taskq.complete(pg_temp.id('ok1'), '{"r": 1}', 'wk');
SELECT taskq.complete_many(ARRAY[pg_temp.id('ok2'), pg_temp.id('ok3')], NULL, 'wk') AS completed;
SELECT pg_temp.n(id) AS job, status, attempts, worker, result,
       created_at <= started_at AND started_at <= finished_at AS times_in_order
FROM taskq.jobs WHERE id IN (SELECT id FROM lbl WHERE name LIKE 'ok%') ORDER BY id;
SELECT count(*) AS log_rows FROM taskq.job_logs WHERE job_id IN (SELECT id FROM lbl WHERE name LIKE 'ok%');

-- A failure, then success: the failed attempt and the retry scheduled.
SELECT pg_temp.j('retried', taskq.submit('history_ext', queue => 'regress_history_retry',
                                         max_attempts => 3, backoff => '0'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_history_retry'], 'wk');
SELECT taskq.fail(pg_temp.id('retried'), 'disk full', true, 'wk');
SELECT * FROM pg_temp.history('retried');
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_history_retry'], 'wk2');
SELECT taskq.complete(pg_temp.id('retried'), NULL, 'wk2');
SELECT * FROM pg_temp.history('retried');
SELECT status, attempts, worker, last_error FROM taskq.jobs WHERE id = pg_temp.id('retried');

-- Dead-letter: the last failed attempt, one row; a job it leaves blocked
-- gets one row saying why it does not run.
SELECT pg_temp.j('dead', taskq.submit('history_ext', queue => 'regress_history_dead', max_attempts => 1));
SELECT pg_temp.j('child', taskq.submit('history_ext', queue => 'regress_history_dead',
                                       depends_on => ARRAY[pg_temp.id('dead')]));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_history_dead'], 'wk');
SELECT taskq.fail(pg_temp.id('dead'), 'no luck', true, 'wk');
SELECT * FROM pg_temp.history('dead');
SELECT * FROM pg_temp.history('child');

-- Manual retry from the dead-letter queue: one row; its success, none.
SELECT taskq.retry(pg_temp.id('dead'));
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_history_dead'], 'wk');
SELECT taskq.complete(pg_temp.id('dead'), NULL, 'wk');
SELECT * FROM pg_temp.history('dead');
-- the child, released by its parent's success, writes nothing more
SELECT pg_temp.n(id) AS claimed FROM taskq.claim(ARRAY['regress_history_dead'], 'wk');
SELECT taskq.complete(pg_temp.id('child'), NULL, 'wk');
SELECT * FROM pg_temp.history('child');

-- Cancel: one row per job cancelled, the cascade included.
SELECT pg_temp.j('cancelled', taskq.submit('history_ext', queue => 'regress_history_cancel'));
SELECT pg_temp.j('dependent', taskq.submit('history_ext', queue => 'regress_history_cancel',
                                           depends_on => ARRAY[pg_temp.id('cancelled')]));
SELECT taskq.cancel(pg_temp.id('cancelled'));
SELECT * FROM pg_temp.history('cancelled');
SELECT * FROM pg_temp.history('dependent');

-- In-database jobs follow the same rule: a success writes nothing, a failed
-- attempt and its retry their two rows, with the executor as worker.
CREATE FUNCTION public.regress_history_h(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (payload->>'fail_first')::boolean
       AND taskq.current_attempt() = 1 THEN
        RAISE EXCEPTION 'first attempt fails';
    END IF;
    RETURN '{"done": true}';
END
$$;
SELECT taskq.register_handler('history_db', 'public.regress_history_h(jsonb)');
SELECT pg_temp.j('db_ok', taskq.submit('history_db', queue => 'regress_history_db'));
SELECT pg_temp.j('db_retried', taskq.submit('history_db', '{"fail_first": true}',
                                            queue => 'regress_history_db', backoff => '0'));
SELECT pg_temp.wait_status(pg_temp.id('db_ok'), 'succeeded') AS db_ok_succeeded,
       pg_temp.wait_status(pg_temp.id('db_retried'), 'succeeded') AS db_retried_succeeded;
SELECT pg_temp.n(id) AS job, status, attempts, worker LIKE 'executor/%' AS by_executor, result,
       started_at <= finished_at AS times_in_order
FROM taskq.jobs WHERE id IN (pg_temp.id('db_ok'), pg_temp.id('db_retried')) ORDER BY id;
SELECT * FROM pg_temp.history('db_ok');
SELECT status, attempt, message, error, details->>'worker' LIKE 'executor/%' AS by_executor
FROM taskq.job_logs WHERE job_id = pg_temp.id('db_retried') ORDER BY id;
SELECT taskq.unregister_handler('history_db');
DROP FUNCTION public.regress_history_h(jsonb);

-- Leave no live jobs behind.
SELECT pg_temp.cancel_all('regress_history%');
SELECT status, count(*) FROM taskq.jobs WHERE queue LIKE 'regress_history%' GROUP BY 1 ORDER BY 1;
RESET taskq.notify_level;
