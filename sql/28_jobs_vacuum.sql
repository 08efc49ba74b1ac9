-- The launcher vacuums taskq.jobs when its dead rows pass 10,000 and a tenth
-- of its live ones (src/jobs_vacuum.c): autovacuum reaches a table only once
-- per autovacuum_naptime.  Its VACUUM counts in vacuum_count (autovacuum's
-- in autovacuum_count), which nothing else in the suites increments.
SET taskq.notify_level = 'none';
SELECT pg_stat_force_next_flush();
SELECT vacuum_count AS vacuums_before FROM pg_stat_all_tables
 WHERE relid = 'taskq.jobs'::regclass \gset
SELECT count(*) AS submitted FROM taskq.submit_many(
    (SELECT jsonb_agg(jsonb_build_object('job_type', 'vacuum_ext', 'queue', 'regress_vacuum'))
       FROM generate_series(1, 12000)));
-- 12,000 dead rows at once (a superuser's shortcut for a busy queue)
DELETE FROM taskq.jobs WHERE queue = 'regress_vacuum';
SELECT pg_stat_force_next_flush();
CREATE FUNCTION pg_temp.vacuumed(before bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE deadline timestamptz := clock_timestamp() + interval '60s';
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        IF (SELECT vacuum_count FROM pg_stat_all_tables
             WHERE relid = 'taskq.jobs'::regclass) > before THEN
            RETURN true;
        ELSIF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT pg_temp.vacuumed(:vacuums_before) AS launcher_vacuumed;
SELECT pg_stat_clear_snapshot();
SELECT n_dead_tup < 10000 AS dead_rows_gone FROM pg_stat_all_tables
 WHERE relid = 'taskq.jobs'::regclass;
RESET taskq.notify_level;
