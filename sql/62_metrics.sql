-- Metrics for a monitoring stack: claims and finished attempts of both
-- lanes (executors and external workers) counted as _total counters with
-- the lane as a label, wait and run time histograms, nothing counted for a
-- rolled-back transaction or subtransaction.  Counters are cluster-wide
-- and only grow: checked as differences from a snapshot.
SET taskq.notify_level = 'none';
CREATE FUNCTION pg_temp.snap() RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql AS $$
    SELECT metric, labels, value FROM taskq.metrics()
     WHERE labels->>'queue' LIKE 'regress_metrics%' OR metric = 'taskq_metrics_dropped_total'
$$;
CREATE TEMP TABLE before AS SELECT * FROM pg_temp.snap();
CREATE FUNCTION pg_temp.delta() RETURNS TABLE (metric text, labels text, delta float8)
LANGUAGE sql AS $$
    SELECT a.metric, (a.labels - 'job_type')::text, a.value - coalesce(b.value, 0)
      FROM pg_temp.snap() a LEFT JOIN before b USING (metric, labels)
     WHERE a.value - coalesce(b.value, 0) <> 0 AND a.metric !~ '_sum$'
       AND (a.metric !~ '_bucket$' OR a.labels->>'le' = '+Inf')
     ORDER BY 1, 2
$$;

-- the executors' lane: a handler that succeeds
CREATE FUNCTION public.regress_metrics_ok(payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT payload $$;
SELECT taskq.register_handler('regress_metrics_h', 'public.regress_metrics_ok(jsonb)');
SELECT array_agg(taskq.submit('regress_metrics_h', '{}', queue => 'regress_metrics_exec')) AS ids
  FROM generate_series(1, 3) \gset
SELECT taskq.wait(:'ids', '60 seconds') AS finished;
-- an executor counts at commit, an instant after its jobs are seen finished
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT sum(value) FROM taskq.metrics()
                    WHERE metric = 'taskq_jobs_completed_total'
                      AND labels->>'queue' = 'regress_metrics_exec') >= 3;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

-- the external lane: claim 4, complete 1, fail 1 for good, 1 for a retry
SELECT count(taskq.submit('regress_metrics_ext', '{}', queue => 'regress_metrics_ext',
                          max_attempts => 2)) AS submitted
  FROM generate_series(1, 5);
CREATE TEMP TABLE held AS
SELECT id, row_number() OVER (ORDER BY id) AS n FROM taskq.claim(ARRAY['regress_metrics_ext'], 'w1', 4,
                                                   cpu_units => 100, memory_mb => 100000);
SELECT count(*) AS claimed FROM held;
SELECT taskq.complete(id, NULL, 'w1') FROM held WHERE n = 1;
SELECT taskq.fail(id, 'gone', false, 'w1') FROM held WHERE n = 2;
SELECT taskq.fail(id, 'again', true, 'w1') FROM held WHERE n = 3;

-- rolled back: a claim, and a completion in a subtransaction
BEGIN;
SELECT count(*) AS claimed_then_rolled_back FROM taskq.claim(ARRAY['regress_metrics_ext'], 'w2', 1,
                                                                      cpu_units => 100, memory_mb => 100000);
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT taskq.fail(id, 'not counted', false, 'w1') FROM held WHERE n = 4;
SELECT count(*) AS claimed_in_savepoint FROM taskq.claim(ARRAY['regress_metrics_ext'], 'w3', 1,
                                                                  cpu_units => 100, memory_mb => 100000);
ROLLBACK TO SAVEPOINT s;
COMMIT;

SELECT * FROM pg_temp.delta();
-- a running job cancelled counts as outcome cancelled
SELECT taskq.cancel(id) FROM held WHERE n = 4;
SELECT * FROM pg_temp.delta() WHERE labels LIKE '%cancelled%';

-- every histogram's _count is its +Inf bucket, and its buckets grow with le
SELECT count(*) AS inconsistent_histograms
  FROM taskq.metrics() c JOIN taskq.metrics() b
    ON b.metric = regexp_replace(c.metric, '_count$', '_bucket')
   AND b.labels = c.labels || '{"le": "+Inf"}'
 WHERE c.metric ~ '^taskq_job_(wait|run)_seconds_count$' AND b.value <> c.value;
SELECT count(*) AS decreasing_buckets
  FROM (SELECT value < lag(value) OVER (PARTITION BY metric, labels - 'le'
                                        ORDER BY (labels->>'le')::float8) AS down
          FROM taskq.metrics() WHERE metric LIKE '%_bucket') s
 WHERE down;

-- the same names in SQL and in the Prometheus text
SELECT DISTINCT m.metric IN (SELECT (regexp_match(line, '^([a-z_]+)[{ ]'))[1]
                               FROM regexp_split_to_table(taskq.metrics_prometheus(), E'\n') line)
       AS same_names
  FROM taskq.metrics() m;
SELECT line FROM regexp_split_to_table(taskq.metrics_prometheus(), E'\n') line
 WHERE line LIKE '# TYPE taskq_job%' OR line LIKE '# TYPE taskq_queue_depth %'
 ORDER BY line;

SELECT taskq.cancel(id) FROM taskq.jobs WHERE queue = 'regress_metrics_ext' AND status IN ('pending', 'running');
SELECT taskq.unregister_handler('regress_metrics_h');
DROP FUNCTION public.regress_metrics_ok(jsonb);
