-- taskq 0.1.0 -> 0.2.0.  Also how a fresh install reaches 0.2.0: CREATE
-- EXTENSION runs taskq--0.1.0.sql (frozen, byte for byte the 0.1.0 release)
-- and then this script, as pg_stat_statements ships one base script and its
-- updates.  Every schema change after 0.1.0 goes here, in the section of its
-- concern; the upgrade test (test/t/030_upgrade.pl) checks that an updated
-- 0.1.0 database equals a fresh install and that its old jobs still run.

\echo Use "ALTER EXTENSION taskq UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Workers: launcher, executors, cancel and shutdown
------------------------------------------------------------------------------




------------------------------------------------------------------------------
-- Dependencies, locks, claims and submission checks
------------------------------------------------------------------------------




------------------------------------------------------------------------------
-- Notifications, metrics and size limits
------------------------------------------------------------------------------

-- Prometheus text exposition of taskq.metrics().  Label values are escaped
-- as the format requires (backslash, double quote, newline): any role names
-- its queues and job types, and must not forge lines.
CREATE OR REPLACE FUNCTION taskq.metrics_prometheus() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(string_agg(line, E'\n' ORDER BY metric, ord), '') || E'\n'
    FROM (
        SELECT m.metric, 0 AS ord, format('# TYPE %s gauge', m.metric) AS line
          FROM (SELECT DISTINCT metric FROM taskq.metrics()) m
        UNION ALL
        SELECT m.metric, 1,
               m.metric ||
               coalesce('{' || (SELECT string_agg(format('%s="%s"', k,
                                                        replace(replace(replace(v, '\', '\\'),
                                                                        '"', '\"'),
                                                                E'\n', '\n')),
                                                  ',' ORDER BY k)
                                FROM jsonb_each_text(m.labels) AS e(k, v)) || '}', '') ||
               ' ' || m.value::text
          FROM taskq.metrics() m
    ) s
$$;

-- Size limits (taskq.max_payload_size, taskq.max_result_size): every row
-- written by SQL is checked here; job_rows.c checks the rows it writes
-- itself, and the executors a handler's result before they keep it.
CREATE FUNCTION taskq._check_size() RETURNS trigger
    AS 'MODULE_PATHNAME', 'taskq_check_size_trigger' LANGUAGE C;
CREATE TRIGGER jobs_check_payload_size BEFORE INSERT ON taskq.jobs
    FOR EACH ROW EXECUTE FUNCTION taskq._check_size('payload');
CREATE TRIGGER jobs_check_result_size BEFORE UPDATE OF result ON taskq.jobs
    FOR EACH ROW WHEN (NEW.result IS NOT NULL) EXECUTE FUNCTION taskq._check_size('result');
CREATE TRIGGER schedules_check_payload_size BEFORE INSERT OR UPDATE OF payload ON taskq.schedules
    FOR EACH ROW EXECUTE FUNCTION taskq._check_size('payload');




------------------------------------------------------------------------------
-- Identity and privileges (last: it wraps every public function defined above)
------------------------------------------------------------------------------

