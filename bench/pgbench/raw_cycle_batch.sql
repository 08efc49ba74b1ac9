-- claim a batch of rows (one transaction), then mark them all done (another)
WITH c AS (
    UPDATE bench.raw_queue q SET status = 'running', worker = 'pgbench', started_at = clock_timestamp()
     WHERE q.id = ANY (ARRAY(SELECT id FROM bench.raw_queue WHERE status = 'pending'
                             ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED))
    RETURNING q.id)
SELECT coalesce(array_agg(id), '{}')::text AS job_ids FROM c \gset
UPDATE bench.raw_queue SET status = 'done', finished_at = clock_timestamp() WHERE id = ANY (:job_ids::bigint[]);
