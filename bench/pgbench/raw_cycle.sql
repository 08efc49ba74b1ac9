-- claim one row (its own transaction), then mark it done (another)
UPDATE bench.raw_queue q SET status = 'running', worker = 'pgbench', started_at = clock_timestamp()
 WHERE q.id = (SELECT id FROM bench.raw_queue WHERE status = 'pending'
               ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING q.id AS job_id \gset
UPDATE bench.raw_queue SET status = 'done', finished_at = clock_timestamp() WHERE id = :job_id;
