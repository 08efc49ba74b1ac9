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

-- Notification channels (src/publish.c): any role may LISTEN on any
-- channel, so a role's jobs are published only on channels named by an HMAC
-- under this secret, which no role but the extension's owner can read.  Not
-- dumped: a restored install makes a new one, and its clients ask again.
CREATE TABLE taskq.channel_secret (secret bytea NOT NULL);
INSERT INTO taskq.channel_secret
SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
REVOKE ALL ON taskq.channel_secret FROM PUBLIC;

-- The channel of kind 'jobs' or 'work' of role, or with a NULL role the
-- shared one (admins' for jobs, external workers' for work).
CREATE FUNCTION taskq._channel(kind text, role regrole) RETURNS text
    AS 'MODULE_PATHNAME', 'taskq_channel' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION taskq._channel(text, regrole) FROM PUBLIC;

-- LISTEN on this to see your jobs' transitions (payload: {"id", "status",
-- "queue", "job_type", "attempt"}); a taskq_admin member's carries everyone's.
CREATE FUNCTION taskq.channel() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT taskq._channel('jobs', CASE WHEN taskq._is_admin() THEN NULL ELSE taskq._caller() END)
$$;

-- LISTEN on this to hear which queue got work you may claim (payload: the
-- queue's name): a taskq_worker or taskq_admin member's carries every
-- queue's, anyone else's only the queues of its own jobs.
CREATE FUNCTION taskq.work_channel() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT taskq._channel('work', CASE WHEN taskq._can_work_any() THEN NULL ELSE taskq._caller() END)
$$;
GRANT EXECUTE ON FUNCTION taskq.channel(), taskq.work_channel() TO PUBLIC;

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
REVOKE ALL ON FUNCTION taskq._check_size() FROM PUBLIC;
CREATE TRIGGER jobs_check_payload_size BEFORE INSERT ON taskq.jobs
    FOR EACH ROW EXECUTE FUNCTION taskq._check_size('payload');
CREATE TRIGGER jobs_check_result_size BEFORE UPDATE OF result ON taskq.jobs
    FOR EACH ROW WHEN (NEW.result IS NOT NULL) EXECUTE FUNCTION taskq._check_size('result');
CREATE TRIGGER schedules_check_payload_size BEFORE INSERT OR UPDATE OF payload ON taskq.schedules
    FOR EACH ROW EXECUTE FUNCTION taskq._check_size('payload');




------------------------------------------------------------------------------
-- Identity and privileges (last: it wraps every public function defined above)
------------------------------------------------------------------------------

