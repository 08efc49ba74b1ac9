-- taskq demo: a small shop, its nightly ETL as in-database handlers, and one
-- realistic batch of jobs.  Run by demo/run.sh as a superuser, in the database
-- where taskq's workers run; the jobs belong to the ordinary role etl_app.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

------------------------------------------------------------------------------
-- The application: yesterday's orders and some web sessions.
------------------------------------------------------------------------------
CREATE ROLE etl_app;
CREATE SCHEMA shop AUTHORIZATION etl_app;
CREATE SCHEMA etl AUTHORIZATION etl_app;
SET ROLE etl_app;

CREATE TABLE shop.orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region     text NOT NULL,
    currency   text NOT NULL,
    amount     numeric(10, 2) NOT NULL,
    ordered_at timestamptz NOT NULL
);
INSERT INTO shop.orders (region, currency, amount, ordered_at)
SELECT r.region, r.currency, round((5 + random() * 195)::numeric * r.per_usd, 2),
       date_trunc('day', now()) - interval '1 day' + random() * interval '1 day'
FROM generate_series(1, 20000) g
JOIN (VALUES (0, 'eu', 'EUR', 0.93), (1, 'us', 'USD', 1), (2, 'apac', 'JPY', 150))
     AS r(k, region, currency, per_usd) ON r.k = g % 3;

CREATE TABLE shop.sessions (id bigint PRIMARY KEY, shard int NOT NULL, expires_at timestamptz NOT NULL);
INSERT INTO shop.sessions
SELECT g, g % 4, now() + (random() - 0.7) * interval '2 days' FROM generate_series(1, 40000) g;

CREATE TABLE shop.outbox (id bigint GENERATED ALWAYS AS IDENTITY, recipient text, subject text, body jsonb);

------------------------------------------------------------------------------
-- The warehouse the ETL fills.
------------------------------------------------------------------------------
CREATE TABLE etl.staging (LIKE shop.orders);
CREATE TABLE etl.fx_rates (currency text PRIMARY KEY, usd numeric NOT NULL);
CREATE TABLE etl.region_totals (region text PRIMARY KEY, currency text, orders int, revenue numeric);
CREATE TABLE etl.daily_revenue (day date, region text, orders int, revenue_usd numeric,
                                PRIMARY KEY (day, region));
CREATE TABLE etl.forecasts (day date PRIMARY KEY, orders numeric, model jsonb);
CREATE TABLE etl.reports (day date PRIMARY KEY, body jsonb);

------------------------------------------------------------------------------
-- Handlers: fn(payload jsonb) returns jsonb (the job's result).  Each runs as
-- the job's owner, in a transaction that also records the job's completion.
-- The pg_sleep calls stand in for real work so the progress is visible.
------------------------------------------------------------------------------

-- extract: copy the day's orders from the shop into staging.
CREATE FUNCTION etl.extract(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    DELETE FROM etl.staging;
    INSERT INTO etl.staging SELECT * FROM shop.orders
    WHERE ordered_at >= (p->>'day')::date AND ordered_at < (p->>'day')::date + 1;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pg_sleep(0.5);
    RETURN jsonb_build_object('rows', n);
END $$;

-- fetch_fx: exchange rates from a (simulated) remote API that times out on
-- the first attempt; taskq retries it after its backoff.
CREATE FUNCTION etl.fetch_fx(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE attempt int := (SELECT attempts FROM taskq.jobs WHERE id = taskq.current_job_id());
BEGIN
    PERFORM pg_sleep(0.3);
    IF attempt = 1 THEN
        RAISE EXCEPTION 'fx-api.example.com: read timed out after 300 ms';
    END IF;
    INSERT INTO etl.fx_rates VALUES ('EUR', 1.08), ('USD', 1), ('JPY', 0.0067)
    ON CONFLICT (currency) DO UPDATE SET usd = excluded.usd;
    RETURN jsonb_build_object('rates', 3, 'attempt', attempt);
END $$;

-- transform: aggregate one region of staging (three of these run in parallel).
CREATE FUNCTION etl.transform(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r etl.region_totals;
BEGIN
    INSERT INTO etl.region_totals
    SELECT region, min(currency), count(*), sum(amount) FROM etl.staging
    WHERE region = p->>'region' GROUP BY region
    ON CONFLICT (region) DO UPDATE SET orders = excluded.orders, revenue = excluded.revenue
    RETURNING * INTO r;
    PERFORM pg_sleep(0.4 + 0.1 * length(p->>'region'));
    RETURN jsonb_build_object('region', r.region, 'orders', r.orders, 'revenue', r.revenue);
END $$;

-- load: convert every region to USD and upsert the warehouse fact table.
CREATE FUNCTION etl.load(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    INSERT INTO etl.daily_revenue
    SELECT (p->>'day')::date, t.region, t.orders, round(t.revenue * fx.usd, 2)
    FROM etl.region_totals t JOIN etl.fx_rates fx USING (currency)
    ON CONFLICT (day, region) DO UPDATE
        SET orders = excluded.orders, revenue_usd = excluded.revenue_usd;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pg_sleep(0.4);
    RETURN jsonb_build_object('regions', n);
END $$;

-- report: the day's numbers as a JSON document, queued for e-mail.
CREATE FUNCTION etl.report(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE body jsonb;
BEGIN
    SELECT jsonb_build_object('day', p->>'day', 'orders', sum(orders),
                              'revenue_usd', sum(revenue_usd), 'made_by', current_user)
      INTO body FROM etl.daily_revenue WHERE day = (p->>'day')::date;
    INSERT INTO etl.reports VALUES ((p->>'day')::date, body)
    ON CONFLICT (day) DO UPDATE SET body = excluded.body;
    INSERT INTO shop.outbox (recipient, subject, body) VALUES ('cfo@shop.test', 'Daily revenue', body);
    PERFORM pg_sleep(0.3);
    RETURN body;
END $$;

-- train_forecast: a heavy job (4 cpu units): fits the orders per hour of
-- the day to a trend line and extends it over tomorrow.
CREATE FUNCTION etl.train_forecast(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE slope float8; icpt float8;
BEGIN
    SELECT regr_slope(n, hour), regr_intercept(n, hour) INTO slope, icpt
      FROM (SELECT extract(hour FROM ordered_at) AS hour, count(*) AS n
            FROM etl.staging GROUP BY 1) h;
    INSERT INTO etl.forecasts
    VALUES ((p->>'day')::date + 1, round(24 * (icpt + 35.5 * slope)),
            jsonb_build_object('slope', slope, 'intercept', icpt))
    ON CONFLICT (day) DO UPDATE SET orders = excluded.orders, model = excluded.model;
    PERFORM pg_sleep(1.0);
    RETURN jsonb_build_object('forecast_orders', round(24 * (icpt + 35.5 * slope)));
END $$;

-- purge_sessions: low-priority housekeeping, one shard at a time.
CREATE FUNCTION shop.purge_sessions(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    DELETE FROM shop.sessions WHERE shard = (p->>'shard')::int AND expires_at < now();
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pg_sleep(0.3);
    RETURN jsonb_build_object('deleted', n);
END $$;

-- send_digest: a delayed job, e-mails a digest when it is due.
CREATE FUNCTION shop.send_digest(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shop.outbox (recipient, subject, body)
    VALUES (p->>'to', 'Your digest', jsonb_build_object('orders', (SELECT count(*) FROM shop.orders)));
    PERFORM pg_sleep(0.2);
    RETURN jsonb_build_object('sent_to', p->>'to');
END $$;

RESET ROLE;
SELECT taskq.register_handler('etl.extract',        'etl.extract(jsonb)'),
       taskq.register_handler('etl.fetch_fx',       'etl.fetch_fx(jsonb)'),
       taskq.register_handler('etl.transform',      'etl.transform(jsonb)'),
       taskq.register_handler('etl.load',           'etl.load(jsonb)'),
       taskq.register_handler('etl.report',         'etl.report(jsonb)'),
       taskq.register_handler('etl.train_forecast', 'etl.train_forecast(jsonb)'),
       taskq.register_handler('shop.purge_sessions','shop.purge_sessions(jsonb)'),
       taskq.register_handler('shop.send_digest',   'shop.send_digest(jsonb)')
\g /dev/null

------------------------------------------------------------------------------
-- The jobs, submitted by etl_app in one transaction (so they start together).
------------------------------------------------------------------------------
SET ROLE etl_app;
BEGIN;

-- Housekeeping first, at low priority: submitted before the ETL, run after it.
SELECT taskq.submit_many(jsonb_agg(jsonb_build_object(
           'job_type', 'shop.purge_sessions', 'priority', 'low',
           'payload', jsonb_build_object('shard', s))))
FROM generate_series(0, 3) s
\g /dev/null

-- The ETL DAG ("after" = indexes of earlier jobs of the batch):
--
--   0 extract ──┬─► 2 transform eu ───┐
--               ├─► 3 transform us ───┤
--               ├─► 4 transform apac ─┼─► 6 load ─► 7 report
--               └─► 5 train_forecast  │
--   1 fetch_fx (fails once) ──────────┘
SELECT taskq.submit_many(jsonb_build_array(
    jsonb_build_object('job_type', 'etl.extract', 'priority', 'critical',
                       'payload', jsonb_build_object('day', current_date - 1)),
    jsonb_build_object('job_type', 'etl.fetch_fx', 'priority', 'high',
                       'backoff', '1 second', 'max_attempts', 3),
    jsonb_build_object('job_type', 'etl.transform', 'priority', 'high', 'after', '[0]'::jsonb,
                       'payload', '{"region": "eu"}'::jsonb),
    jsonb_build_object('job_type', 'etl.transform', 'priority', 'high', 'after', '[0]'::jsonb,
                       'payload', '{"region": "us"}'::jsonb),
    jsonb_build_object('job_type', 'etl.transform', 'priority', 'high', 'after', '[0]'::jsonb,
                       'payload', '{"region": "apac"}'::jsonb),
    jsonb_build_object('job_type', 'etl.train_forecast', 'priority', 'normal', 'after', '[0]'::jsonb,
                       'cpu_units', 4, 'payload', jsonb_build_object('day', current_date - 1)),
    jsonb_build_object('job_type', 'etl.load', 'priority', 'high', 'after', '[1, 2, 3, 4]'::jsonb,
                       'payload', jsonb_build_object('day', current_date - 1)),
    jsonb_build_object('job_type', 'etl.report', 'priority', 'normal', 'after', '[6]'::jsonb,
                       'payload', jsonb_build_object('day', current_date - 1))))
\g /dev/null

-- A delayed job: due in 2 seconds.
SELECT taskq.submit('shop.send_digest', '{"to": "ops@shop.test"}',
                    run_at => now() + interval '2 seconds')
\g /dev/null

COMMIT;
RESET ROLE;

------------------------------------------------------------------------------
-- What run.sh prints at the end: per job, how long it spent in each state
-- (from taskq.job_logs, one row per transition), and the totals.
------------------------------------------------------------------------------
CREATE SCHEMA demo;

CREATE VIEW demo.job_summary AS
WITH l AS (
    SELECT job_id, status, logged_at,
           lead(logged_at) OVER (PARTITION BY job_id ORDER BY id) - logged_at AS lasted
    FROM taskq.job_logs
), per_job AS (
    SELECT job_id,
           sum(lasted) FILTER (WHERE status = 'blocked') AS blocked,
           sum(lasted) FILTER (WHERE status = 'pending') AS queued,
           sum(lasted) FILTER (WHERE status = 'running') AS ran,
           max(logged_at) AS done_at
    FROM l GROUP BY job_id
), t0 AS (
    SELECT min(logged_at) AS t0 FROM taskq.job_logs
)
SELECT j.id AS job, j.job_type AS type,
       (SELECT string_agg(key || '=' || value, ' ') FROM jsonb_each_text(j.payload)
        WHERE key <> 'day') AS args,
       j.priority, j.cpu_units AS cpu, j.status, j.attempts,
       round(extract(epoch FROM coalesce(p.blocked, '0')
                                + coalesce(p.queued, '0'))::numeric, 2) AS "wait s",
       round(extract(epoch FROM p.blocked)::numeric, 2) AS "blocked s",
       round(extract(epoch FROM p.queued)::numeric, 2) AS "queued s",
       round(extract(epoch FROM p.ran)::numeric, 2) AS "run s",
       round(extract(epoch FROM p.done_at - t0.t0)::numeric, 2) AS "done at s"
FROM taskq.jobs j JOIN per_job p ON p.job_id = j.id, t0
ORDER BY j.id;

CREATE VIEW demo.totals AS
SELECT count(*) AS jobs,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       sum(attempts) - count(*) AS retries,
       sum("wait s") AS "wait s (sum)",
       sum("run s") AS "run s (sum)",
       max("done at s") AS "elapsed s",
       round(sum("run s") / nullif(max("done at s"), 0), 1) AS "jobs in parallel (avg)"
FROM demo.job_summary;
