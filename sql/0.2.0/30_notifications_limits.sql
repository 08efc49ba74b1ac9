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

-- A job's change of status as it is published: what taskq._publish tells.
-- (status as text: a caller that knows it passes a constant, and no row
-- pays for the enum's output function)
CREATE TYPE taskq._transition AS (
    job_id      bigint,
    status      text,
    attempt     integer,
    queue       text,
    job_type    text,
    in_database boolean
);

-- Record and publish a transition: the one place that writes taskq.job_logs
-- and publishes a job's change of status.  logs: the rows the history rule
-- (40_history.sql) keeps, inserted in their order (NULL for the normal
-- course: a success, a release, a claim); then each of moved is published,
-- in its order.  Callers pass what their own statement returned, so the hot
-- paths read no row again.
CREATE FUNCTION taskq._record(moved taskq._transition[], logs taskq.job_logs[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF logs IS NOT NULL THEN
        INSERT INTO taskq.job_logs (job_id, status, attempt, message, error, details)
        SELECT l.job_id, l.status, l.attempt, l.message, l.error, l.details
          FROM unnest(logs) AS l;
    END IF;
    IF cardinality(moved) > 0 THEN
        PERFORM count(taskq._publish(m.job_id, m.status, m.queue, m.job_type, m.attempt,
                                     m.in_database))
           FROM unnest(moved) AS m
          WHERE taskq._publishing(m.status);
    END IF;
END
$$;

-- _record for jobs named by id, one log row each (their status and
-- attempts as they are now, message, errors[i] the error of ids[i]).
CREATE OR REPLACE FUNCTION taskq._emit(ids bigint[], message text, errors text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    moved taskq._transition[];
    logs taskq.job_logs[];
BEGIN
    SELECT array_agg((j.id, j.status::text, j.attempts, j.queue, j.job_type, j.in_database)::taskq._transition
                     ORDER BY u.ord),
           array_agg(ROW(NULL, j.id, NULL, j.status, j.attempts, _emit.message, _emit.errors[u.ord],
                         NULL)::taskq.job_logs ORDER BY u.ord)
      INTO moved, logs
      FROM unnest(ids) WITH ORDINALITY AS u(id, ord)
      JOIN taskq.jobs j ON j.id = u.id AND j.id = ANY (ids);  -- (see _complete_batch)
    PERFORM taskq._record(moved, logs);
END
$$;

-- Prometheus text exposition of taskq.metrics(): a TYPE line per family
-- (counter for _total, histogram for the _bucket/_sum/_count of
-- taskq_job_*_seconds, gauge otherwise), its samples next to it.  Label
-- values are escaped as the format requires (backslash, double quote,
-- newline): any role names its queues and job types, and must not forge lines.
CREATE OR REPLACE FUNCTION taskq.metrics_prometheus() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    WITH m AS (
        SELECT m.metric, m.labels, m.value,
               regexp_replace(m.metric, '^(taskq_job_(wait|run)_seconds)_(bucket|sum|count)$', '\1') AS family
          FROM taskq.metrics() m
    )
    SELECT coalesce(string_agg(line, E'\n' ORDER BY family, ord, metric, labels_key, le), '') || E'\n'
    FROM (
        SELECT DISTINCT m.family, 0 AS ord, ''::text AS metric, ''::text AS labels_key, 0::float8 AS le,
               format('# TYPE %s %s', m.family,
                      CASE WHEN m.family ~ '_total$' THEN 'counter'
                           WHEN m.family <> m.metric THEN 'histogram'
                           ELSE 'gauge' END) AS line
          FROM m
        UNION ALL
        SELECT m.family, 1, m.metric, (m.labels - 'le')::text, coalesce((m.labels->>'le')::float8, 0),
               m.metric ||
               coalesce('{' || (SELECT string_agg(format('%s="%s"', k,
                                                        replace(replace(replace(v, '\', '\\'),
                                                                        '"', '\"'),
                                                                E'\n', '\n')),
                                                  ',' ORDER BY k)
                                FROM jsonb_each_text(m.labels) AS e(k, v)) || '}', '') ||
               ' ' || m.value::text
          FROM m
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

