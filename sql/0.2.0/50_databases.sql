------------------------------------------------------------------------------
-- Databases served (taskq.databases)
------------------------------------------------------------------------------

-- The databases whose launcher and executors taskq runs (src/databases.c).
CREATE FUNCTION taskq._served_databases() RETURNS text[]
    AS 'MODULE_PATHNAME', 'taskq_served_databases' LANGUAGE C STABLE;
-- How many executors this database should have; 0 when it is not served.
CREATE FUNCTION taskq._executors_wanted() RETURNS integer
    AS 'MODULE_PATHNAME', 'taskq_executors_wanted_sql' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION taskq._served_databases(), taskq._executors_wanted() FROM PUBLIC;

-- health(): the executors check fails when their number differs from the
-- wanted number, too few or too many (a restarted launcher used to start a
-- second set beside the first, reported as "5 of 2 executors running", ok).
-- In a database taskq does not serve, the launcher and executors checks fail
-- ("no executors serve this database") instead of describing the workers of
-- another database; the wanted number of executors is this database's (its
-- taskq.workers, at most its share of taskq.max_total_workers).
CREATE OR REPLACE FUNCTION taskq.health()
RETURNS TABLE (check_name text, status text, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    launchers integer;
    executors integer;
    changing integer;
    launcher_age interval;
    served text[] := taskq._served_databases();
    wanted integer := taskq._executors_wanted();
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
    IF NOT current_database() = ANY (served) THEN
        check_name := 'launcher'; status := 'fail';
        message := CASE WHEN cardinality(served) = 0
                        THEN 'no launcher: taskq is not in shared_preload_libraries, or taskq.databases lists no database'
                        ELSE format('no launcher serves this database: taskq.databases lists %s', array_to_string(served, ', ')) END;
        RETURN NEXT;
        check_name := 'executors'; status := 'fail';
        message := 'no executors serve this database: add it to taskq.databases and restart the server';
        RETURN NEXT;
    ELSE
        check_name := 'launcher';
        IF launchers > 0 THEN status := 'ok'; message := 'launcher is running';
        ELSE status := 'fail'; message := 'no launcher: it is waiting for this database or restarting (see the server log)';
        END IF;
        RETURN NEXT;

        -- exactly the wanted number; a difference is only a warning while the
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
                            THEN format('%s executors running, more than the %s wanted (taskq.workers, taskq.max_total_workers)', executors, wanted)
                            WHEN executors > 0 THEN format('only %s of %s executors running', executors, wanted)
                            ELSE format('none of %s executors running', wanted) END;
            IF changing > 0 THEN
                message := message || format(' (%s starting or stopping)', changing);
            END IF;
        END IF;
        RETURN NEXT;
    END IF;

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

    -- fair scheduling (issue 23): queues throttled for too long
    RETURN QUERY SELECT * FROM taskq._rate_limit_health();
    RETURN QUERY SELECT * FROM taskq._schedule_health();
END
$$;

-- Installed (or updated) where no worker runs: it works, but jobs with
-- handlers would wait for ever; say so rather than fail.
DO $served$
DECLARE
    served text[] := taskq._served_databases();
BEGIN
    IF NOT current_database() = ANY (served) THEN
        RAISE WARNING 'taskq''s background workers do not serve database "%"', current_database()
            USING DETAIL = 'Jobs with a registered handler are run only in the databases of taskq.databases; external workers can still claim jobs here.',
                  HINT = CASE WHEN cardinality(served) = 0
                              THEN 'Add taskq to shared_preload_libraries and this database to taskq.databases, then restart the server.'
                              ELSE format('Add it to taskq.databases (now: %s) and restart the server.', array_to_string(served, ', ')) END;
    END IF;
END
$served$;


