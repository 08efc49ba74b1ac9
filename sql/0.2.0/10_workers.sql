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
