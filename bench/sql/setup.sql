-- Objects the benchmark needs in database "bench" (taskq is installed there).
CREATE EXTENSION IF NOT EXISTS taskq;
CREATE SCHEMA IF NOT EXISTS bench;

-- A plain table with taskq.jobs' columns and nothing else but a primary key:
-- the "raw INSERT of an equally wide row" that taskq.submit is compared with.
CREATE TABLE bench.raw_jobs (LIKE taskq.jobs INCLUDING DEFAULTS INCLUDING IDENTITY);
ALTER TABLE bench.raw_jobs ADD PRIMARY KEY (id);

-- taskq's own writes without taskq: copies of taskq.jobs and taskq.job_logs
-- with their indexes, defaults and checks (not its triggers).  Plain SQL
-- writing the rows taskq writes is the ceiling of any taskq function that
-- keeps those indexes and that history (bench/README.md, "same writes").
CREATE TABLE bench.same_jobs (LIKE taskq.jobs INCLUDING ALL);
CREATE TABLE bench.same_logs (LIKE taskq.job_logs INCLUDING ALL);

-- The naive queue: the physical limit of "claim one row with SKIP LOCKED,
-- mark it done" on this server.
CREATE TABLE bench.raw_queue (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status      text NOT NULL DEFAULT 'pending',
    payload     jsonb NOT NULL,
    worker      text,
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX raw_queue_pending_idx ON bench.raw_queue (id) WHERE status = 'pending';

-- Handlers: a no-op, and one that records when it started (pickup latency).
CREATE FUNCTION bench.noop(payload jsonb) RETURNS void LANGUAGE sql AS '';

CREATE UNLOGGED TABLE bench.pickup (job_id bigint NOT NULL, started_at timestamptz NOT NULL);
-- the submit's commit (its xmin's commit timestamp): taskq writes no log row
-- for a submit, so the pgbench script records the id in the same statement
CREATE UNLOGGED TABLE bench.submitted (job_id bigint NOT NULL);
CREATE FUNCTION bench.record_pickup(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bench.pickup VALUES (taskq.current_job_id(), clock_timestamp())
$$;

SELECT taskq.register_handler('bench_noop', 'bench.noop(jsonb)');
SELECT taskq.register_handler('bench_pickup', 'bench.record_pickup(jsonb)');
-- job type 'bench_ext' has no handler: external workers run it.

-- Latencies measured by the peers (milliseconds), loaded by the driver so the
-- percentiles of every system come from the same SQL.
CREATE TABLE bench.peer_latency (system text NOT NULL, run integer NOT NULL, ms float8 NOT NULL);
