------------------------------------------------------------------------------
-- Fair scheduling: rate limits, concurrency keys, tenants
------------------------------------------------------------------------------

-- A job's concurrency key (e.g. a customer): a queue's key_concurrency
-- bounds how many jobs of one key run at once.  Counted from the running
-- jobs themselves (src/fairness.c), so completions write nothing more.
ALTER TABLE taskq.jobs ADD COLUMN concurrency_key text;
-- rate_limit as given ('100/s'), rate_per_second as claims use it
ALTER TABLE taskq.queues
    ADD COLUMN key_concurrency integer CHECK (key_concurrency > 0),
    ADD COLUMN rate_limit text,
    ADD COLUMN rate_per_second float8 CHECK (rate_per_second > 0),
    ADD COLUMN rate_burst integer CHECK (rate_burst >= 1);

-- Token buckets in shared memory (src/fairness.c), read and spent by
-- taskq._claim under the queues' claim locks.
CREATE FUNCTION taskq._rate_tokens(queues text[], rates float8[], bursts integer[], now timestamptz)
RETURNS integer[]
    AS 'MODULE_PATHNAME', 'taskq_rate_tokens' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION taskq._rate_take(queues text[], counts integer[], throttled boolean[]) RETURNS void
    AS 'MODULE_PATHNAME', 'taskq_rate_take' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION taskq._rate_state(queues text[], rates float8[], bursts integer[])
RETURNS TABLE (queue text, tokens float8, wait_seconds float8, throttled bigint, taken bigint,
               throttled_seconds float8)
    AS 'MODULE_PATHNAME', 'taskq_rate_state' LANGUAGE C VOLATILE STRICT;
-- Running jobs per (queue, key) of these queues, claims not yet committed too.
CREATE FUNCTION taskq._running_per_key(queues text[])
RETURNS TABLE (queue text, key text, n integer)
    AS 'MODULE_PATHNAME', 'taskq_running_per_key' LANGUAGE C VOLATILE STRICT;

-- '100/s', '6000/min', '10/h' (also sec, second, minute, hour) as jobs per
-- second; any other text is an error.
CREATE FUNCTION taskq._parse_rate(rate text) RETURNS float8
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m text[] := regexp_match(rate, '^\s*([+-]?[0-9]+(?:\.[0-9]+)?)\s*/\s*([A-Za-z]+)\s*$');
    n numeric;
BEGIN
    IF m IS NULL THEN
        RAISE EXCEPTION 'invalid rate_limit "%"', rate
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a number of jobs per unit, as ''100/s'', ''6000/min'' or ''10/h''.';
    END IF;
    n := m[1]::numeric;
    IF n <= 0 THEN
        RAISE EXCEPTION 'rate_limit must be positive, got "%"', rate USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE lower(m[2])
        WHEN 's', 'sec', 'second' THEN RETURN n;
        WHEN 'm', 'min', 'minute' THEN RETURN n / 60;
        WHEN 'h', 'hour' THEN RETURN n / 3600;
        ELSE
            RAISE EXCEPTION 'unknown unit "%" in rate_limit "%"', m[2], rate
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The units are s, min and h.';
    END CASE;
END
$$;

-- A rate limit and burst as configure_queue and configure_job_type take
-- them: the rate in jobs per second (NULL: none), or the error.
CREATE FUNCTION taskq._check_rate(rate_limit text, rate_burst integer) RETURNS float8
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    per_second float8;
BEGIN
    IF rate_burst IS NOT NULL AND rate_limit IS NULL THEN
        RAISE EXCEPTION 'rate_burst needs a rate_limit' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_burst IS NOT NULL AND rate_burst < 1 THEN
        RAISE EXCEPTION 'rate_burst must be at least 1, got %', rate_burst
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_limit IS NULL THEN
        RETURN NULL;
    END IF;
    per_second := taskq._parse_rate(rate_limit);
    IF per_second > 1000000 THEN
        RAISE EXCEPTION 'rate_limit must be at most 1000000/s, got "%"', rate_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN per_second;
END
$$;

DROP FUNCTION taskq.configure_queue(text, integer, interval, integer);
-- Per-queue settings; NULL leaves a setting unlimited / at the built-in
-- default.  key_concurrency: most running jobs per concurrency key;
-- rate_limit: most jobs claimed per second, minute or hour, in bursts of at
-- most rate_burst (default: one second's worth, at least 1).
CREATE FUNCTION taskq.configure_queue(queue text, concurrency integer DEFAULT NULL,
                                      default_timeout interval DEFAULT NULL,
                                      default_max_attempts integer DEFAULT NULL,
                                      key_concurrency integer DEFAULT NULL,
                                      rate_limit text DEFAULT NULL,
                                      rate_burst integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    per_second float8;
BEGIN
    PERFORM taskq._require_admin('configure a queue');
    PERFORM taskq._check_name('queue', queue);
    IF concurrency IS NOT NULL AND concurrency < 1 THEN
        RAISE EXCEPTION 'concurrency must be at least 1, got %', concurrency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF default_timeout IS NOT NULL AND default_timeout <= interval '0' THEN
        RAISE EXCEPTION 'default_timeout must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF default_max_attempts IS NOT NULL AND default_max_attempts < 1 THEN
        RAISE EXCEPTION 'default_max_attempts must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF key_concurrency IS NOT NULL AND key_concurrency < 1 THEN
        RAISE EXCEPTION 'key_concurrency must be at least 1, got %', key_concurrency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    per_second := taskq._check_rate(rate_limit, rate_burst);
    INSERT INTO taskq.queues AS q (name, concurrency, default_timeout, default_max_attempts,
                                   key_concurrency, rate_limit, rate_per_second, rate_burst)
    VALUES (queue, concurrency, default_timeout, default_max_attempts, key_concurrency,
            btrim(rate_limit), per_second,
            CASE WHEN per_second IS NOT NULL
                 THEN coalesce(rate_burst, greatest(1, ceil(per_second))::integer) END)
    ON CONFLICT (name) DO UPDATE
        SET concurrency = excluded.concurrency, default_timeout = excluded.default_timeout,
            default_max_attempts = excluded.default_max_attempts,
            key_concurrency = excluded.key_concurrency, rate_limit = excluded.rate_limit,
            rate_per_second = excluded.rate_per_second, rate_burst = excluded.rate_burst,
            updated_at = now();
    PERFORM taskq._wake_on_commit();
END
$$;

-- A job type's rate limit, across every queue and worker: a token bucket
-- like a queue's (src/fairness.c), spent by taskq._claim under the type's
-- claim lock (rate columns NULL: unlimited); and whether its jobs may name
-- a tenant or a concurrency key (checked by every submit path).  No row:
-- unlimited, both allowed.
CREATE TABLE taskq.job_types (
    job_type        text PRIMARY KEY CHECK (length(job_type) BETWEEN 1 AND 200),
    rate_limit      text,
    rate_per_second float8 CHECK (rate_per_second > 0),
    rate_burst      integer CHECK (rate_burst >= 1),
    allow_tenant    boolean NOT NULL DEFAULT true,
    allow_concurrency_key boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_per_second IS NULL)
           AND (rate_per_second IS NULL) = (rate_burst IS NULL))
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
-- least 1); rate_limit NULL removes the limit.  allow_tenant and
-- allow_concurrency_key false make submits naming one fail (22023); NULL
-- is true.  Every call sets all of them.
CREATE FUNCTION taskq.configure_job_type(job_type text, rate_limit text DEFAULT NULL,
                                         rate_burst integer DEFAULT NULL,
                                         allow_tenant boolean DEFAULT true,
                                         allow_concurrency_key boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    per_second float8;
BEGIN
    PERFORM taskq._require_admin('configure a job type');
    PERFORM taskq._check_name('job_type', job_type);
    per_second := taskq._check_rate(rate_limit, rate_burst);
    IF per_second IS NULL AND coalesce(allow_tenant, true) AND coalesce(allow_concurrency_key, true) THEN
        DELETE FROM taskq.job_types t WHERE t.job_type = configure_job_type.job_type;
    ELSE
        INSERT INTO taskq.job_types AS t (job_type, rate_limit, rate_per_second, rate_burst,
                                          allow_tenant, allow_concurrency_key)
        VALUES (job_type, btrim(rate_limit), per_second,
                CASE WHEN per_second IS NOT NULL
                     THEN coalesce(rate_burst, greatest(1, ceil(per_second))::integer) END,
                coalesce(allow_tenant, true), coalesce(allow_concurrency_key, true))
        ON CONFLICT (job_type) DO UPDATE
            SET rate_limit = excluded.rate_limit, rate_per_second = excluded.rate_per_second,
                rate_burst = excluded.rate_burst, allow_tenant = excluded.allow_tenant,
                allow_concurrency_key = excluded.allow_concurrency_key, updated_at = now();
    END IF;
    PERFORM taskq._wake_on_commit();
END
$$;

-- How long an external worker should wait before it claims again from these
-- queues (NULL: every queue) when a rate limit held its claim back: zero when
-- one of the named rate-limited queues has a token now, else the time until
-- the first has one; NULL when none of them is rate-limited.
CREATE FUNCTION taskq.claim_retry_after(queues text[] DEFAULT NULL) RETURNS interval
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT make_interval(secs => min(s.wait_seconds))
      FROM (SELECT array_agg(q.name) AS n, array_agg(q.rate_per_second) AS r, array_agg(q.rate_burst) AS b
              FROM taskq.queues q
             WHERE q.rate_per_second IS NOT NULL AND NOT q.paused
               AND (claim_retry_after.queues IS NULL OR q.name = ANY (claim_retry_after.queues))) a,
           LATERAL taskq._rate_state(a.n, a.r, a.b) s
$$;

-- Fair scheduling's rows of taskq.metrics(): per rate-limited queue its
-- limit, tokens, claims throttled and tokens spent since the server started;
-- per keyed queue the keys running and the jobs due but waiting for their
-- key (this one reads the due jobs of keyed queues).
CREATE FUNCTION taskq._fair_metrics()
RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH rated AS (
        SELECT array_agg(name) AS n, array_agg(rate_per_second) AS r, array_agg(rate_burst) AS b
          FROM taskq.queues WHERE rate_per_second IS NOT NULL
    ), buckets AS (
        SELECT s.* FROM rated, LATERAL taskq._rate_state(rated.n, rated.r, rated.b) s
    ), keyed AS (
        SELECT coalesce(array_agg(name), '{}') AS n FROM taskq.queues WHERE key_concurrency IS NOT NULL
    ), running AS (
        SELECT r.* FROM keyed, LATERAL taskq._running_per_key(keyed.n) r
    )
    SELECT m.name, jsonb_build_object('queue', b.queue), m.v
      FROM buckets b JOIN taskq.queues q ON q.name = b.queue,
           LATERAL (VALUES ('taskq_rate_limit_per_second', q.rate_per_second),
                           ('taskq_rate_limit_burst', q.rate_burst::float8),
                           ('taskq_rate_limit_tokens', b.tokens),
                           ('taskq_rate_limit_throttled_claims_total', b.throttled::float8),
                           ('taskq_rate_limit_taken_jobs_total', b.taken::float8),
                           ('taskq_rate_limit_throttled_seconds', coalesce(b.throttled_seconds, 0))) m(name, v)
    UNION ALL
    -- the same of each job type's limit, by job_type
    SELECT m.name, jsonb_build_object('job_type', t.job_type), m.v
      FROM taskq.job_types t,
           LATERAL taskq._rate_state(ARRAY[taskq._job_type_bucket(t.job_type)], ARRAY[t.rate_per_second],
                                     ARRAY[t.rate_burst]) b,
           LATERAL (VALUES ('taskq_job_type_rate_limit_per_second', t.rate_per_second),
                           ('taskq_job_type_rate_limit_burst', t.rate_burst::float8),
                           ('taskq_job_type_rate_limit_tokens', b.tokens),
                           ('taskq_job_type_rate_limit_throttled_claims_total', b.throttled::float8),
                           ('taskq_job_type_rate_limit_taken_jobs_total', b.taken::float8),
                           ('taskq_job_type_rate_limit_throttled_seconds', coalesce(b.throttled_seconds, 0))) m(name, v)
     WHERE t.rate_per_second IS NOT NULL
    UNION ALL
    SELECT 'taskq_key_limit_running_keys', jsonb_build_object('queue', q.name),
           (SELECT count(*) FROM running r WHERE r.queue = q.name)::float8
      FROM taskq.queues q WHERE q.key_concurrency IS NOT NULL
    UNION ALL
    SELECT 'taskq_key_limit_waiting_jobs', jsonb_build_object('queue', q.name),
           (SELECT count(*) FROM taskq.jobs j JOIN running r ON r.queue = j.queue AND r.key = j.concurrency_key
             WHERE j.status = 'pending' AND j.queue = q.name AND j.run_at <= now()
               AND r.n >= q.key_concurrency)::float8
      FROM taskq.queues q WHERE q.key_concurrency IS NOT NULL
$$;

REVOKE ALL ON FUNCTION taskq._rate_tokens(text[], float8[], integer[], timestamptz),
    taskq._rate_take(text[], integer[], boolean[]), taskq._rate_state(text[], float8[], integer[]),
    taskq._running_per_key(text[]), taskq._parse_rate(text), taskq._check_rate(text, integer),
    taskq._fair_metrics() FROM PUBLIC;

-- Every rate limit (kind 'queue' or 'job_type'), its tokens now and how
-- long every claim has been throttled by it (NULL: not throttled).
CREATE FUNCTION taskq.rate_limit_state()
RETURNS TABLE (kind text, name text, rate_limit text, tokens float8, throttled_for interval)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH rated AS (
        SELECT 'queue' AS kind, q.name, q.name AS bucket, q.rate_limit, q.rate_per_second, q.rate_burst
          FROM taskq.queues q WHERE q.rate_per_second IS NOT NULL
        UNION ALL
        SELECT 'job_type', t.job_type, taskq._job_type_bucket(t.job_type), t.rate_limit, t.rate_per_second,
               t.rate_burst
          FROM taskq.job_types t WHERE t.rate_per_second IS NOT NULL
    )
    SELECT r.kind, r.name, r.rate_limit, s.tokens, make_interval(secs => s.throttled_seconds)
      FROM (SELECT array_agg(bucket) AS n, array_agg(rate_per_second) AS r, array_agg(rate_burst) AS b
              FROM rated) a,
           LATERAL taskq._rate_state(a.n, a.r, a.b) s
      JOIN rated r ON r.bucket = s.queue
     ORDER BY r.kind DESC, r.name
$$;

-- health()'s "rate_limits" check: a warning when a queue with due jobs has
-- had every claim throttled for longer than taskq.throttle_warn_after (its
-- limit is below the demand, or a burst is too small for the batches).
CREATE FUNCTION taskq._rate_limit_health(OUT check_name text, OUT status text, OUT message text)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    warn_after interval := taskq._throttle_warn_after();
    slow text;
BEGIN
    check_name := 'rate_limits';
    SELECT string_agg(format('%s %s (%s, for %s)', replace(s.kind, '_', ' '), s.name, s.rate_limit,
                             date_trunc('second', s.throttled_for)), ', ')
      INTO slow
      FROM taskq.rate_limit_state() s
     WHERE s.throttled_for > warn_after
       AND EXISTS (SELECT FROM taskq.jobs j
                    WHERE j.status = 'pending' AND j.run_at <= now()
                      AND CASE s.kind WHEN 'queue' THEN j.queue = s.name ELSE j.job_type = s.name END);
    IF slow IS NULL THEN
        status := 'ok';
        message := format('no rate limit has throttled a queue for longer than %s', warn_after);
    ELSE
        status := 'warn';
        message := format('rate limits have throttled every claim for longer than %s: %s', warn_after, slow);
    END IF;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION taskq._rate_limit_health() FROM PUBLIC;
