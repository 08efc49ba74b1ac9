------------------------------------------------------------------------------
-- Rate limits per job type (issue 23)
------------------------------------------------------------------------------

-- A job type's rate limit, across every queue and worker: a token bucket
-- like a queue's (src/fairness.c), spent by taskq._claim under the type's
-- claim lock.  No row: unlimited.
CREATE TABLE taskq.job_types (
    job_type        text PRIMARY KEY CHECK (length(job_type) BETWEEN 1 AND 200),
    rate_limit      text NOT NULL,
    rate_per_second float8 NOT NULL CHECK (rate_per_second > 0),
    rate_burst      integer NOT NULL CHECK (rate_burst >= 1),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The name of a job type's bucket and claim lock, apart from the queues'
-- (which share their space: a queue named so would only share its limit).
CREATE FUNCTION taskq._job_type_bucket(job_type text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT E'\x1f' || 'job_type ' || job_type
$$;
REVOKE ALL ON FUNCTION taskq._job_type_bucket(text) FROM PUBLIC;

-- A job type's rate limit: most jobs of it claimed per second, minute or
-- hour, in bursts of at most rate_burst (default: one second's worth, at
-- least 1); rate_limit NULL removes the limit.
CREATE FUNCTION taskq.configure_job_type(job_type text, rate_limit text DEFAULT NULL,
                                         rate_burst integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    per_second float8;
BEGIN
    PERFORM taskq._require_admin('configure a job type');
    PERFORM taskq._check_name('job_type', job_type);
    per_second := taskq._check_rate(rate_limit, rate_burst);
    IF per_second IS NULL THEN
        DELETE FROM taskq.job_types t WHERE t.job_type = configure_job_type.job_type;
    ELSE
        INSERT INTO taskq.job_types AS t (job_type, rate_limit, rate_per_second, rate_burst)
        VALUES (job_type, btrim(rate_limit), per_second,
                coalesce(rate_burst, greatest(1, ceil(per_second))::integer))
        ON CONFLICT (job_type) DO UPDATE
            SET rate_limit = excluded.rate_limit, rate_per_second = excluded.rate_per_second,
                rate_burst = excluded.rate_burst, updated_at = now();
    END IF;
    PERFORM taskq._wake_on_commit();
END
$$;
