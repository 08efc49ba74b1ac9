-- Observability: views, metrics, Prometheus text, health checks that turn
-- warn when their condition is made true, DLQ administration, dag rendering.
-- Starts from an empty queue (ids from 1) so counts and ids are exact.
TRUNCATE taskq.job_logs, taskq.job_dependencies, taskq.jobs RESTART IDENTITY;
SET taskq.notify_level = 'none';

-- all checks are ok on an idle, empty queue
SELECT check_name, status FROM taskq.health() ORDER BY check_name;

-- workers and resources come from shared memory
SELECT kind, count(*) > 0 AS present FROM taskq.workers GROUP BY kind ORDER BY kind;
SELECT cpu_units_max = current_setting('taskq.max_cpu_units')::int AS cpu_max_matches,
       memory_mb_max = current_setting('taskq.max_memory_mb')::int AS mem_max_matches
FROM taskq.resources;
SELECT array_agg(window_minutes ORDER BY window_minutes) FROM taskq.throughput;

-- queue depth by queue x priority x status
SELECT taskq.submit('obs_ext', queue => 'obs_a', priority => 'high') IS NOT NULL AS a1,
       taskq.submit('obs_ext', queue => 'obs_a', priority => 'high') IS NOT NULL AS a2,
       taskq.submit('obs_ext', queue => 'obs_b', priority => 'low') IS NOT NULL AS b1;
SELECT queue, priority, status, jobs FROM taskq.queue_depth ORDER BY queue, priority, status;
SELECT labels->>'queue' AS queue, labels->>'status' AS status, value
FROM taskq.metrics() WHERE metric = 'taskq_queue_depth' ORDER BY 1, 2;

-- Prometheus exposition: TYPE lines and samples with labels
SELECT line FROM regexp_split_to_table(taskq.metrics_prometheus(), E'\n') AS line
WHERE line LIKE '%taskq_queue_depth%' OR line LIKE '# TYPE taskq_dead_letter_jobs%' OR line LIKE 'taskq_dead_letter_jobs%'
ORDER BY line;

-- a runnable job that has waited too long turns oldest_runnable_job to warn, then fail
UPDATE taskq.jobs SET run_at = now() - interval '5 minutes' WHERE queue = 'obs_b';
SELECT status FROM taskq.health() WHERE check_name = 'oldest_runnable_job';
UPDATE taskq.jobs SET run_at = now() - interval '2 hours' WHERE queue = 'obs_b';
SELECT status FROM taskq.health() WHERE check_name = 'oldest_runnable_job';
SELECT value > 7000 AS oldest_age_reported FROM taskq.metrics() WHERE metric = 'taskq_oldest_runnable_age_seconds';
SELECT taskq.cancel(id) FROM taskq.jobs WHERE queue = 'obs_b';
SELECT status FROM taskq.health() WHERE check_name = 'oldest_runnable_job';

-- a dead-lettered parent: dead_letter_queue and blocked_by_failure warn
SELECT taskq.submit('obs_ext', queue => 'obs_dlq', max_attempts => 1) AS parent \gset
SELECT taskq.submit('obs_ext', queue => 'obs_dlq', depends_on => ARRAY[:parent]) AS child \gset
SELECT count(*) FROM taskq.claim(ARRAY['obs_dlq'], 'obs-worker', 10);
SELECT taskq.fail(:parent, 'disk full', true, 'obs-worker');
SELECT id = :parent AS is_parent, last_error, attempts FROM taskq.dead_letter_queue;
SELECT check_name, status, message FROM taskq.health()
WHERE check_name IN ('dead_letter_queue', 'blocked_by_failure') ORDER BY 1;

-- dag rendering shows both jobs, their statuses and the edge
SELECT :parent AS parent, :child AS child;
SELECT taskq.dag(:child) AS mermaid;
SELECT taskq.dag(:parent, 'dot') AS dot;
SELECT taskq.dag(:parent, 'svg');
SELECT taskq.dag(-1);

-- DLQ administration: retry matching jobs (none match), then all of the queue
SELECT taskq.retry_failed(queue => 'obs_dlq', error_like => 'network%');
SELECT taskq.retry_failed(queue => 'obs_dlq', error_like => 'disk%');
SELECT status, attempts FROM taskq.jobs WHERE id = :parent;
SELECT check_name, status FROM taskq.health()
WHERE check_name IN ('dead_letter_queue', 'blocked_by_failure') ORDER BY 1;
-- fail it again (non-retryable) and purge: the blocked child keeps it
SELECT count(*) FROM taskq.claim(ARRAY['obs_dlq'], 'obs-worker', 10);
SELECT taskq.fail(:parent, 'bad input', false, 'obs-worker');
SELECT taskq.purge_failed(queue => 'obs_dlq');
SELECT taskq.cancel(:child);
SELECT taskq.purge_failed(queue => 'obs_dlq');
SELECT count(*) FROM taskq.jobs WHERE id = :parent;
SELECT count(*) FROM taskq.job_logs WHERE job_id = :parent;

-- latency percentiles come from finished jobs
SELECT taskq.submit('obs_ext', queue => 'obs_lat') AS lat \gset
SELECT count(*) FROM taskq.claim(ARRAY['obs_lat'], 'obs-worker', 1);
SELECT taskq.complete(:lat, '{"ok": true}', 'obs-worker');
SELECT queue, jobs, wait_p50 >= interval '0' AS wait_ok, run_p99 >= interval '0' AS run_ok
FROM taskq.latency() WHERE queue = 'obs_lat';

-- a role that is not taskq_admin sees only its own jobs in the views
SET ROLE taskq_alice;
SELECT count(*) AS alice_sees_in_queue_depth FROM taskq.queue_depth;
SELECT count(*) AS alice_sees_in_dlq FROM taskq.dead_letter_queue;
SELECT taskq.submit('obs_ext', queue => 'obs_alice') IS NOT NULL AS submitted;
SELECT queue, jobs FROM taskq.queue_depth;
SELECT taskq.retry_failed();
RESET ROLE;

TRUNCATE taskq.job_logs, taskq.job_dependencies, taskq.jobs;
RESET taskq.notify_level;
