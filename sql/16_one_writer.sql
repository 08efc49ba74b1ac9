-- Every job row that src/job_rows.c does not write is written by one
-- statement (src/submit.c, INSERT_JOBS_SQL): taskq.submit's SQL path,
-- submit_many's job by job path (taskq._insert_job) and its set-wise path
-- (taskq._insert_jobs).  The same job, submitted each way, gets the same row.
\i sql/include/helpers.psql
SELECT taskq.configure_queue('regress_writer_q', default_timeout => interval '7 minutes',
                             default_max_attempts => 4);
CREATE FUNCTION public.regress_writer_noop(jsonb) RETURNS void LANGUAGE sql AS '';
SELECT taskq.register_handler('writer handled', 'public.regress_writer_noop(jsonb)');
SELECT taskq.pause('regress_writer_q');
SELECT taskq.pause('regress_writer_other');
SET taskq.backoff_base = '2500ms';

-- The columns that do not depend on the id, the key or the tenant's turn.
CREATE FUNCTION pg_temp.job_shape(job bigint) RETURNS jsonb LANGUAGE sql AS $$
    SELECT to_jsonb(j) - 'id' - 'idempotency_key' - 'fair_at' - 'owner'
           || jsonb_build_object('owner_is_me', j.owner = current_user::text::regrole)
      FROM taskq.jobs j WHERE j.id = job
$$;
-- taskq.submit of a submit_many job (absent keys: submit's defaults).
CREATE FUNCTION pg_temp.submit(spec jsonb, key text DEFAULT NULL) RETURNS bigint
LANGUAGE sql AS $$
    SELECT taskq.submit(spec->>'job_type', coalesce(spec->'payload', '{}'),
                        coalesce((spec->>'priority')::taskq.priority, 'normal'),
                        coalesce(spec->>'queue', 'default'), '{}',
                        coalesce((spec->>'run_at')::timestamptz, now()),
                        (spec->>'max_attempts')::integer, (spec->>'timeout')::interval,
                        coalesce((spec->>'cpu_units')::integer, 1),
                        coalesce((spec->>'memory_mb')::integer, 0), key,
                        (spec->>'backoff')::interval, spec->>'concurrency_key', spec->>'tenant')
$$;
CREATE TEMP TABLE specs (n int, spec jsonb);
INSERT INTO specs VALUES
 (1, '{"job_type": "writer plain", "queue": "regress_writer_q", "run_at": "2031-01-01 00:00:00+00"}'),
 (2, '{"job_type": "writer full", "queue": "regress_writer_other", "priority": "high",
       "payload": {"k": [1, 2]}, "run_at": "2031-01-01 00:00:00+00", "max_attempts": 2,
       "timeout": "1 minute", "cpu_units": 2, "memory_mb": 5, "backoff": "3 seconds",
       "concurrency_key": "c1", "tenant": "t1"}'),
 (3, '{"job_type": "writer handled", "queue": "regress_writer_other", "priority": "low",
       "tenant": "t2"}'),
 (4, '{"job_type": "writer plain", "queue": "regress_writer_nowhere", "max_attempts": 9,
       "backoff": "0 seconds"}'),
 (5, '{"job_type": "writer plain", "queue": null, "priority": null, "cpu_units": null}');

-- A trigger taskq does not know sends submit's plain jobs to SQL as well.
CREATE FUNCTION public.regress_writer_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NEW;
END
$$;
CREATE TRIGGER regress_writer_seen BEFORE INSERT ON taskq.jobs
    FOR EACH ROW EXECUTE FUNCTION public.regress_writer_seen();

-- In one transaction: now() is the same for every way.
BEGIN;
CREATE TEMP TABLE by_submit AS SELECT n, pg_temp.submit(spec) AS id FROM specs;
CREATE TEMP TABLE by_submit_keyed AS
    SELECT n, pg_temp.submit(spec, 'regress-writer-' || n) AS id FROM specs;
CREATE TEMP TABLE set_wise AS
    SELECT row_number() OVER () AS n, id
      FROM taskq.submit_many((SELECT jsonb_agg(spec ORDER BY n) FROM specs)) AS id;
CREATE TEMP TABLE job_by_job AS
    SELECT row_number() OVER () AS n, id
      FROM taskq.submit_many((SELECT jsonb_agg(spec || jsonb_build_object(
                                  'idempotency_key', 'regress-writer-many-' || n) ORDER BY n)
                                FROM specs)) AS id;
COMMIT;
DROP TRIGGER regress_writer_seen ON taskq.jobs;
DROP FUNCTION public.regress_writer_seen();

SELECT n, pg_temp.job_shape(s.id) = pg_temp.job_shape(k.id) AS keyed_same,
       pg_temp.job_shape(s.id) = pg_temp.job_shape(w.id) AS set_wise_same,
       pg_temp.job_shape(s.id) = pg_temp.job_shape(b.id) AS job_by_job_same
  FROM by_submit s JOIN by_submit_keyed k USING (n) JOIN set_wise w USING (n)
  JOIN job_by_job b USING (n) ORDER BY n;
SELECT n, queue, priority, status, payload, max_attempts, backoff, timeout, cpu_units, memory_mb,
       CASE WHEN run_at = created_at THEN 'now' ELSE run_at::text END AS run_at, in_database,
       concurrency_key, tenant
  FROM set_wise JOIN taskq.jobs j USING (id) ORDER BY n;
SELECT (SELECT array_agg(id ORDER BY n) FROM set_wise)
       = (SELECT array_agg(id ORDER BY id) FROM set_wise) AS ids_in_input_order;
SELECT count(*) FILTER (WHERE idempotency_key IS NOT NULL) AS keyed,
       count(*) FILTER (WHERE fair_at IS NOT NULL) AS tenant_turns
  FROM taskq.jobs WHERE id IN (SELECT id FROM by_submit_keyed UNION ALL SELECT id FROM set_wise
                               UNION ALL SELECT id FROM job_by_job);

-- A key held by a live job: submit and submit_many give its id back.
SELECT pg_temp.submit(spec, 'regress-writer-1') = (SELECT id FROM by_submit_keyed WHERE n = 1)
       AS submit_found_it
  FROM specs WHERE n = 1;
SELECT taskq.submit_many(jsonb_build_array(spec || '{"idempotency_key": "regress-writer-many-2"}'))
       = (SELECT id FROM job_by_job WHERE n = 2) AS submit_many_found_it
  FROM specs WHERE n = 2;

-- The set-wise path is not for everyone to call.
SET ROLE taskq_alice;
SELECT pg_temp.try($$SELECT taskq._insert_jobs('{}', 'taskq_alice')$$);
RESET ROLE;

RESET taskq.backoff_base;
SELECT taskq.unregister_handler('writer handled');
SELECT count(taskq.cancel(id)) AS cancelled
  FROM (SELECT id FROM by_submit UNION SELECT id FROM by_submit_keyed
        UNION SELECT id FROM set_wise UNION SELECT id FROM job_by_job) s;
DROP FUNCTION public.regress_writer_noop(jsonb);
