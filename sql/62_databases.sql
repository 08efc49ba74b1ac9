-- Several databases (taskq.databases): the regress database is the one
-- served; its health() counts its own executors; the capacity settings are
-- PGC_SUSET so that ALTER DATABASE ... SET gives a database its own.
SELECT taskq._served_databases() = ARRAY[current_database()::text] AS served_here;
SELECT taskq._executors_wanted() = current_setting('taskq.workers')::int AS wants_taskq_workers;
SELECT check_name, status FROM taskq.health()
WHERE check_name IN ('launcher', 'executors') ORDER BY check_name;

SELECT name, context FROM pg_settings
WHERE name IN ('taskq.database', 'taskq.databases', 'taskq.max_total_workers',
               'taskq.workers', 'taskq.max_cpu_units', 'taskq.max_memory_mb')
ORDER BY name;

-- a database-level value is accepted (the workers read it when they connect)
DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET taskq.max_memory_mb = 512', current_database());
    EXECUTE format('ALTER DATABASE %I RESET taskq.max_memory_mb', current_database());
END $$;

-- not PUBLIC's
CREATE ROLE regress_db_nobody;
SET ROLE regress_db_nobody;
SELECT taskq._served_databases();
SELECT taskq._executors_wanted();
RESET ROLE;
DROP ROLE regress_db_nobody;
