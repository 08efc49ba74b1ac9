------------------------------------------------------------------------------
-- Workers: launcher, executors, cancel and shutdown
------------------------------------------------------------------------------

-- The GUCs SQL reads, typed, from C (taskq.c): each default is written once,
-- in the GUC's definition, not again here as a fallback.
CREATE FUNCTION taskq._workers() RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_workers_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._backoff_base() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_backoff_base_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._backoff_max() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_backoff_max_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._aging_interval() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_aging_interval_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._big_job_wait() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_big_job_wait_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._retention() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_retention_sql' LANGUAGE C STABLE;
CREATE FUNCTION taskq._throttle_warn_after() RETURNS interval
    AS 'MODULE_PATHNAME', 'taskq_throttle_warn_after_sql' LANGUAGE C STABLE;

-- Retry delay after attempt n: min(backoff_max, base * 2^(n-1)), with up to 20 % jitter.
-- (compared before multiplying: a backoff of centuries would overflow interval)
CREATE OR REPLACE FUNCTION taskq._retry_delay(base interval, attempt integer) RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN base >= m / power(2, k) THEN m ELSE base * power(2, k) END
           * (1 + 0.2 * random())
    FROM (SELECT taskq._backoff_max() AS m,
                 least(greatest(attempt, 1) - 1, 40) AS k) s
$$;

-- health(): the executors check fails when their number differs from
-- taskq.workers, too few or too many (a restarted launcher used to start a
-- second set beside the first, reported as "5 of 2 executors running", ok).
CREATE OR REPLACE FUNCTION taskq.health()
RETURNS TABLE (check_name text, status text, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    launchers integer;
    executors integer;
    changing integer;
    launcher_age interval;
    wanted integer := taskq._workers();
    oldest interval := taskq._oldest_runnable_age();
    usage float8 := pg_notification_queue_usage();
    limit_ float8 := taskq._notify_queue_limit();
    dead bigint;
    stuck bigint;
    live bigint;
    dead_tup bigint;
    horizon interval;
BEGIN
    SELECT count(*) FILTER (WHERE kind = 'launcher'), count(*) FILTER (WHERE kind = 'executor'),
           count(*) FILTER (WHERE kind = 'executor' AND state IN ('starting', 'stopping'))
      INTO launchers, executors, changing FROM taskq._worker_slots();
    SELECT max(now() - a.backend_start) INTO launcher_age
      FROM taskq._worker_slots() w JOIN pg_stat_activity a ON a.pid = w.pid
     WHERE w.kind = 'launcher';
    check_name := 'launcher';
    IF launchers > 0 THEN status := 'ok'; message := 'launcher is running';
    ELSE status := 'fail'; message := 'no launcher: is taskq in shared_preload_libraries and taskq.database this database?';
    END IF;
    RETURN NEXT;

    -- exactly taskq.workers; a difference is only a warning while the
    -- launcher is new (10 s) or while the difference is executors starting
    -- or being stopped
    check_name := 'executors';
    IF executors = wanted THEN
        status := 'ok'; message := format('%s of %s executors running', executors, wanted);
    ELSE
        status := CASE WHEN launcher_age < interval '10 s'
                         OR (changing > 0 AND executors - changing <= wanted) THEN 'warn'
                       ELSE 'fail' END;
        message := CASE WHEN executors > wanted
                        THEN format('%s executors running, more than taskq.workers = %s', executors, wanted)
                        WHEN executors > 0 THEN format('only %s of %s executors running', executors, wanted)
                        ELSE format('none of %s executors running', wanted) END;
        IF changing > 0 THEN
            message := message || format(' (%s starting or stopping)', changing);
        END IF;
    END IF;
    RETURN NEXT;

    check_name := 'oldest_runnable_job';
    IF oldest IS NULL OR oldest < interval '1 minute' THEN
        status := 'ok';
        message := CASE WHEN oldest IS NULL THEN 'no job is waiting to run'
                        ELSE format('oldest runnable job has waited %s', date_trunc('second', oldest)) END;
    ELSIF oldest < interval '15 minutes' THEN
        status := 'warn'; message := format('oldest runnable job has waited %s', date_trunc('second', oldest));
    ELSE
        status := 'fail'; message := format('oldest runnable job has waited %s', date_trunc('second', oldest));
    END IF;
    RETURN NEXT;

    check_name := 'notification_queue';
    status := CASE WHEN usage < limit_ / 2 THEN 'ok' WHEN usage < limit_ THEN 'warn' ELSE 'fail' END;
    message := format('NOTIFY queue %s%% full', round((usage * 100)::numeric, 1));
    IF usage >= limit_ THEN
        message := message || format(': a listener is not reading its notifications; taskq stopped publishing at %s%% (taskq.notify_queue_limit)',
                                     round((limit_ * 100)::numeric, 1));
    ELSIF usage >= limit_ / 2 THEN
        message := message || format(': a listener is not reading its notifications; taskq stops publishing at %s%% (taskq.notify_queue_limit)',
                                     round((limit_ * 100)::numeric, 1));
    END IF;
    RETURN NEXT;

    SELECT count(*) INTO dead FROM taskq.jobs WHERE status = 'failed';
    check_name := 'dead_letter_queue';
    status := CASE WHEN dead = 0 THEN 'ok' ELSE 'warn' END;
    message := format('%s failed jobs in the dead-letter queue', dead);
    RETURN NEXT;

    SELECT count(DISTINCT d.job_id) INTO stuck
      FROM taskq.job_dependencies d
      JOIN taskq.jobs p ON p.id = d.depends_on AND p.status = 'failed'
      JOIN taskq.jobs c ON c.id = d.job_id AND c.status = 'blocked';
    check_name := 'blocked_by_failure';
    status := CASE WHEN stuck = 0 THEN 'ok' ELSE 'warn' END;
    message := format('%s jobs blocked by a failed parent (retry or cancel the parent)', stuck);
    RETURN NEXT;

    SELECT s.n_live_tup, s.n_dead_tup INTO live, dead_tup
      FROM pg_stat_user_tables s WHERE s.relid = 'taskq.jobs'::regclass;
    SELECT max(now() - a.xact_start) INTO horizon
      FROM pg_stat_activity a WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid();
    check_name := 'vacuum';
    IF coalesce(horizon, interval '0') > interval '1 hour' THEN
        status := 'fail';
    ELSIF coalesce(horizon, interval '0') > interval '5 minutes'
          OR coalesce(dead_tup, 0) > 10 * coalesce(live, 0) + 100000 THEN
        status := 'warn';
    ELSE
        status := 'ok';
    END IF;
    message := format('taskq.jobs: %s live, %s dead tuples; oldest snapshot held %s',
                      coalesce(live, 0), coalesce(dead_tup, 0),
                      coalesce(date_trunc('second', horizon)::text, 'by nobody'));
    RETURN NEXT;

    RETURN QUERY SELECT * FROM taskq._schedule_health();
END
$$;




