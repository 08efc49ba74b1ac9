-- taskq.submit writes a job without parents or idempotency key straight into
-- the heap and indexes (src/job_rows.c); when taskq.jobs has an INSERT
-- trigger it does not know, it takes the SQL path instead.  Both must write
-- the same rows.
\i sql/include/helpers.psql
SELECT taskq.configure_queue('regress_direct_q', default_timeout => interval '7 minutes',
                             default_max_attempts => 4);
CREATE FUNCTION public.regress_direct_noop(jsonb) RETURNS void LANGUAGE sql AS '';
SELECT taskq.register_handler('direct handled', 'public.regress_direct_noop(jsonb)');
SELECT taskq.pause('regress_direct_q');
SELECT taskq.pause('regress_direct_other');
SET taskq.backoff_base = '2500ms';

-- The columns that do not depend on the moment or the id.
CREATE FUNCTION pg_temp.job_shape(job bigint) RETURNS jsonb LANGUAGE sql AS $$
    SELECT to_jsonb(j) - 'id' - 'run_at' - 'created_at' - 'updated_at' - 'owner'
           || jsonb_build_object('owner_is_me', j.owner = current_user::text::regrole)
      FROM taskq.jobs j WHERE j.id = job
$$;
CREATE FUNCTION pg_temp.log_shape(job bigint) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_agg(to_jsonb(l) - 'id' - 'job_id' - 'logged_at' ORDER BY l.id)
      FROM taskq.job_logs l WHERE l.job_id = job
$$;
CREATE TEMP TABLE cases (n int, stmt text);
INSERT INTO cases VALUES
 (1, $$SELECT taskq.submit('direct plain', queue => 'regress_direct_q')$$),
 (2, $$SELECT taskq.submit('direct full', '{"k": [1, 2]}', 'high', 'regress_direct_q', '{}',
                           now() + interval '1 hour', 2, interval '1 minute', 2, 5, NULL,
                           interval '3 seconds')$$),
 (3, $$SELECT taskq.submit('direct plain', queue => 'regress_direct_other')$$),
 (4, $$SELECT taskq.submit('direct handled', queue => 'regress_direct_other', priority => 'low')$$),
 (5, $$SELECT taskq.submit('direct plain', queue => 'regress_direct_other', run_at => NULL)$$),
 (6, $$SELECT taskq.submit('direct plain', queue => 'regress_direct_unknown', max_attempts => 9)$$);
-- submit_many writes a plain batch without SQL too (one job per line here).
CREATE TEMP TABLE batch AS SELECT $$[
    {"job_type": "direct plain", "queue": "regress_direct_q"},
    {"job_type": "direct full", "queue": "regress_direct_other", "priority": "high",
     "payload": {"k": [1, 2]}},
    {"job_type": "direct handled", "queue": "regress_direct_q", "priority": "low"},
    {"job_type": "direct plain", "queue": "regress_direct_nowhere", "payload": {}},
    {"job_type": "direct plain", "queue": "regress_direct_q"}]$$::jsonb AS jobs;
CREATE FUNCTION pg_temp.run(stmt text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE id bigint;
BEGIN
    EXECUTE stmt INTO id;
    RETURN id;
END
$$;

-- Without SQL: every case, in one transaction (now() is the same for all).
-- The trigger's function is not called: the direct path noted the floor.
SET track_functions = 'all';
BEGIN;
CREATE TEMP TABLE direct AS SELECT n, pg_temp.run(stmt) AS id, now() AS submitted FROM cases;
CREATE TEMP TABLE direct_batch AS
    SELECT row_number() OVER () AS n, id FROM taskq.submit_many((SELECT jobs FROM batch)) AS id;
SELECT coalesce(pg_stat_get_xact_function_calls('taskq._note_pending'::regproc), 0)
       AS note_pending_trigger_calls;
COMMIT;

-- Through SQL: an INSERT trigger taskq does not know of sends submit there.
CREATE FUNCTION public.regress_direct_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'INSERT trigger of taskq.jobs fired for %', NEW.job_type;
    RETURN NEW;
END
$$;
CREATE TRIGGER regress_direct_seen BEFORE INSERT ON taskq.jobs
    FOR EACH ROW EXECUTE FUNCTION public.regress_direct_seen();
BEGIN;
CREATE TEMP TABLE through_sql AS SELECT n, pg_temp.run(stmt) AS id FROM cases;
CREATE TEMP TABLE through_sql_batch AS
    SELECT row_number() OVER () AS n, id FROM taskq.submit_many((SELECT jobs FROM batch)) AS id;
SELECT coalesce(pg_stat_get_xact_function_calls('taskq._note_pending'::regproc), 0)
       AS note_pending_trigger_calls;
COMMIT;
DROP TRIGGER regress_direct_seen ON taskq.jobs;
DROP FUNCTION public.regress_direct_seen();

SELECT n, pg_temp.job_shape(d.id) = pg_temp.job_shape(s.id) AS same_job,
       pg_temp.log_shape(d.id) IS NOT DISTINCT FROM pg_temp.log_shape(s.id) AS same_log,
       d.id <> s.id AS new_ids
  FROM direct d JOIN through_sql s USING (n) ORDER BY n;
SELECT n, pg_temp.job_shape(d.id) = pg_temp.job_shape(s.id) AS same_job,
       pg_temp.log_shape(d.id) IS NOT DISTINCT FROM pg_temp.log_shape(s.id) AS same_log
  FROM direct_batch d JOIN through_sql_batch s USING (n) ORDER BY n;
SELECT n, pg_temp.job_shape(id) AS batch_job FROM direct_batch ORDER BY n;
SELECT (SELECT array_agg(id ORDER BY n) FROM direct_batch)
       = (SELECT array_agg(id ORDER BY id) FROM direct_batch) AS ids_in_input_order;
SELECT n, pg_temp.job_shape(id) AS job FROM direct ORDER BY n;
SELECT n, pg_temp.log_shape(id) AS log FROM direct ORDER BY n;
SELECT n, j.created_at = d.submitted AND j.updated_at = d.submitted AS stamped_now,
       CASE WHEN n = 2 THEN j.run_at = d.submitted + interval '1 hour'
            ELSE j.run_at = d.submitted END AS run_at_right
  FROM direct d JOIN taskq.jobs j USING (id) ORDER BY n;

-- Whatever the table has that the direct path does not know sends submit
-- through SQL: a constraint it does not check, a default it does not set.
BEGIN;
ALTER TABLE taskq.jobs ADD CONSTRAINT regress_direct_no_low CHECK (priority <> 'low') NOT VALID;
SELECT split_part(pg_temp.try($$SELECT taskq.submit('direct plain', queue => 'regress_direct_q',
                                                  priority => 'low')$$), ' (Failing', 1) AS error;
ROLLBACK;
BEGIN;
ALTER TABLE taskq.jobs ALTER COLUMN aged_at SET DEFAULT '2000-01-01 00:00:00+00';
SELECT taskq.submit('direct plain', queue => 'regress_direct_q') AS defaulted_id \gset
SELECT aged_at FROM taskq.jobs WHERE id = :defaulted_id;
ROLLBACK;

-- A savepoint rolled back takes its job with it; the next submit is fine.
BEGIN;
SAVEPOINT s;
SELECT taskq.submit('direct plain', queue => 'regress_direct_sp') > 0 AS submitted;
ROLLBACK TO SAVEPOINT s;
SELECT taskq.submit('direct plain', queue => 'regress_direct_sp') > 0 AS submitted;
SELECT count(*) AS sp_jobs, (SELECT count(*) FROM taskq.job_logs l JOIN taskq.jobs j ON j.id = l.job_id
                             WHERE j.queue = 'regress_direct_sp') AS sp_logs
  FROM taskq.jobs WHERE queue = 'regress_direct_sp';
ROLLBACK;

-- A handler registered earlier in the same transaction is seen.
BEGIN;
SELECT taskq.register_handler('direct late', 'public.regress_direct_noop(jsonb)');
SELECT taskq.submit('direct late', queue => 'regress_direct_other') AS late_id \gset
SELECT in_database FROM taskq.jobs WHERE id = :late_id;
ROLLBACK;

-- In a read-only transaction submit fails, and writes nothing.
SELECT count(*) AS jobs_before FROM taskq.jobs WHERE queue LIKE 'regress_direct%';
BEGIN READ ONLY;
SELECT pg_temp.try($$SELECT taskq.submit('direct plain', queue => 'regress_direct_other')$$);
ROLLBACK;
SELECT count(*) AS jobs_after FROM taskq.jobs WHERE queue LIKE 'regress_direct%';

-- The executors run what was submitted without SQL.
RESET taskq.backoff_base;
SELECT taskq.resume('regress_direct_other');
SELECT pg_temp.wait_status((SELECT id FROM direct WHERE n = 4), 'succeeded') AS handled_job_ran,
       pg_temp.wait_status((SELECT id FROM through_sql WHERE n = 4), 'succeeded') AS its_twin_ran;

SELECT taskq.unregister_handler('direct handled');
SELECT pg_temp.cancel_all('regress_direct%');
DROP FUNCTION public.regress_direct_noop(jsonb);
