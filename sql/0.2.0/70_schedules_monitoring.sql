------------------------------------------------------------------------------
-- Schedules, metrics and monitoring
------------------------------------------------------------------------------

-- Why pg_cron could not start a run as role, or NULL.  pg_cron starts each
-- run as the role that scheduled it: as a background worker when
-- cron.use_background_workers is on, else over libpq to cron.host with no
-- password, which works only where pg_hba.conf's first matching rule trusts
-- it.  (Runs as the extension's owner: pg_hba_file_rules is theirs to read.)
CREATE FUNCTION taskq._cron_login_problem(role regrole) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    host text := coalesce(nullif(current_setting('cron.host', true), ''), 'localhost');
    rname name := (SELECT r.rolname FROM pg_roles r WHERE r.oid = role);
    addrs inet[];
    a inet;
    rule record;
BEGIN
    IF NOT (SELECT r.rolcanlogin FROM pg_roles r WHERE r.oid = role) THEN
        RETURN format('role %s cannot log in (NOLOGIN), and pg_cron runs a schedule as its role', role);
    END IF;
    IF coalesce(current_setting('cron.use_background_workers', true), 'off') = 'on' THEN
        RETURN NULL;
    END IF;
    IF host LIKE '/%' THEN
        addrs := ARRAY[NULL::inet];
    ELSIF current_setting('listen_addresses') = '' THEN
        RETURN format('pg_cron would connect over TCP to cron.host = %s, but listen_addresses is empty', host);
    ELSIF host = 'localhost' THEN
        addrs := ARRAY['127.0.0.1'::inet, '::1'::inet];
    ELSE
        BEGIN
            addrs := ARRAY[host::inet];
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN format('pg_cron would connect to cron.host = %s, a host name whose pg_hba.conf rule taskq cannot check', host);
        END;
    END IF;
    FOREACH a IN ARRAY addrs LOOP
        SELECT r.line_number, r.auth_method INTO rule
          FROM pg_hba_file_rules r
         WHERE r.error IS NULL
           AND CASE WHEN a IS NULL THEN r.type = 'local'
                    ELSE r.type IN ('host', CASE WHEN current_setting('ssl') = 'on' THEN 'hostssl' ELSE 'hostnossl' END)
                         AND (r.address IN ('all', 'samehost', 'samenet', 'localhost')
                              OR (r.address ~ '^[0-9a-fA-F.:]+$' AND r.netmask IS NOT NULL
                                  AND family(r.address::inet) = family(a)
                                  AND host(a & r.netmask::inet) = host(r.address::inet & r.netmask::inet)))
               END
           AND ('all' = ANY (r.database) OR current_database() = ANY (r.database)
                OR ('sameuser' = ANY (r.database) AND current_database() = rname))
           AND ('all' = ANY (r.user_name) OR rname = ANY (r.user_name)
                OR EXISTS (SELECT 1 FROM unnest(r.user_name) AS u(n)
                            WHERE u.n LIKE '+%' AND to_regrole(substr(u.n, 2)) IS NOT NULL
                              AND pg_has_role(role, to_regrole(substr(u.n, 2)), 'MEMBER')))
         ORDER BY r.line_number LIMIT 1;
        IF NOT FOUND THEN
            RETURN format('no pg_hba.conf rule accepts pg_cron''s connection as %s to %s (cron.host = %s)',
                          role, current_database(), host);
        ELSIF rule.auth_method <> 'trust' THEN
            RETURN format('pg_hba.conf line %s asks pg_cron''s connection as %s (cron.host = %s) for %s, and pg_cron has no password',
                          rule.line_number, role, host, rule.auth_method);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION taskq._cron_login_problem(regrole) FROM PUBLIC;

-- Refuses a schedule pg_cron could not run (called by schedule()).
CREATE FUNCTION taskq._check_cron_can_run(role regrole) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text := taskq._cron_login_problem(role);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'pg_cron could not run this schedule as role %', role
            USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = problem || '.',
                  HINT = CASE WHEN problem LIKE '%NOLOGIN%'
                              THEN format('ALTER ROLE %s LOGIN, or schedule as a role that can log in.', role)
                              ELSE 'Set cron.use_background_workers = on (and max_worker_processes to fit cron.max_running_jobs besides taskq''s workers), or give this role a trust rule in pg_hba.conf and set cron.host to the socket directory.' END;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION taskq._check_cron_can_run(regrole) FROM PUBLIC;

-- health()'s "schedules" check: runs pg_cron failed in the last hour, and
-- schedules it could not run now.  A role sees its own schedules; a
-- taskq_admin member every one, with pg_cron's error; a taskq_monitor
-- member every one's count and names.
CREATE FUNCTION taskq._schedule_health(OUT check_name text, OUT status text, OUT message text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    me regrole := taskq._caller();
    admin boolean := taskq._is_admin();
    everyone boolean := admin OR pg_has_role(me, 'taskq_monitor', 'MEMBER');
    failed bigint;
    failed_names text;
    last_error text;
    stuck text;
BEGIN
    check_name := 'schedules';
    IF to_regclass('cron.job_run_details') IS NULL THEN
        status := 'ok'; message := 'pg_cron is not installed in this database';
        RETURN NEXT;
        RETURN;
    END IF;
    EXECUTE $q$
        SELECT count(*), string_agg(DISTINCT s.name, ', '),
               (array_agg(d.return_message ORDER BY d.start_time DESC))[1]
          FROM cron.job_run_details d JOIN taskq.schedules s ON s.cron_jobid = d.jobid
         WHERE d.status = 'failed' AND d.start_time > now() - interval '1 hour'
           AND (s.owner = $1 OR $2)$q$
       INTO failed, failed_names, last_error USING me, everyone;
    SELECT string_agg(format('%s (%s)', s.name, p.problem), '; ' ORDER BY s.name) INTO stuck
      FROM taskq.schedules s, LATERAL (SELECT taskq._cron_login_problem(s.owner) AS problem) p
     WHERE (s.owner = me OR everyone) AND p.problem IS NOT NULL;
    IF failed = 0 AND stuck IS NULL THEN
        status := 'ok'; message := 'no pg_cron run of a schedule failed in the last hour';
    ELSE
        status := 'fail';
        message := concat_ws('; ',
            CASE WHEN failed > 0 THEN
                format('%s pg_cron runs failed in the last hour (schedules: %s)', failed, failed_names) ||
                CASE WHEN admin OR NOT everyone THEN format(', the last with: %s', btrim(last_error)) ELSE '' END
            END,
            CASE WHEN stuck IS NOT NULL THEN 'pg_cron cannot run: ' || stuck END);
    END IF;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION taskq._schedule_health() FROM PUBLIC;

-- Claims and finished attempts of both lanes (executors and external
-- workers), noted by this trigger and counted at commit in shared memory
-- (src/job_metrics.c): the source of the _total counters and histograms.
CREATE FUNCTION taskq._count_transition() RETURNS trigger
    AS 'MODULE_PATHNAME', 'taskq_count_transition' LANGUAGE C;
REVOKE ALL ON FUNCTION taskq._count_transition() FROM PUBLIC;
CREATE TRIGGER jobs_count_transition BEFORE UPDATE OF status ON taskq.jobs
    FOR EACH ROW WHEN ((OLD.status = 'running') IS DISTINCT FROM (NEW.status = 'running')
                       OR (OLD.status = 'pending' AND NEW.status = 'succeeded'))
    EXECUTE FUNCTION taskq._count_transition();

-- This database's counters and histogram buckets, one row per sample.
CREATE FUNCTION taskq._job_metrics(
    OUT metric text, OUT queue text, OUT job_type text, OUT lane text,
    OUT outcome text, OUT le text, OUT value float8)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'taskq_job_metrics' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION taskq._job_metrics() FROM PUBLIC;

-- Every metric as (name, labels, value), named as Prometheus names them:
-- metrics_prometheus() prints exactly these.  Counters end in _total and
-- only grow (from zero at server start); rates are Prometheus' rate().
-- jit off: the function scans' default estimates (1,000 rows each) put the
-- union past jit_above_cost, and compiling it took 30-70 ms of every call,
-- which postgres_exporter makes once per metric namespace (~15 per scrape).
CREATE OR REPLACE FUNCTION taskq.metrics()
RETURNS TABLE (metric text, labels jsonb, value float8)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
    SELECT 'taskq_queue_depth', jsonb_build_object('queue', d.queue, 'priority', d.priority, 'status', d.status),
           count(*)::float8
      FROM taskq.jobs d
     WHERE d.status IN ('blocked', 'pending', 'running')
     GROUP BY d.queue, d.priority, d.status
    UNION ALL
    SELECT 'taskq_dead_letter_jobs', '{}'::jsonb, (SELECT count(*) FROM taskq.jobs WHERE status = 'failed')::float8
    UNION ALL
    SELECT c.metric,
           jsonb_strip_nulls(jsonb_build_object('queue', c.queue, 'job_type', c.job_type, 'lane', c.lane,
                                                'outcome', c.outcome, 'le', c.le)),
           c.value
      FROM taskq._job_metrics() c
    UNION ALL
    SELECT m.name, '{}'::jsonb, m.v::float8
      FROM taskq._resources() r,
           LATERAL (VALUES ('taskq_cpu_units_used', r.cpu_units_used), ('taskq_cpu_units_max', r.cpu_units_max),
                           ('taskq_memory_mb_used', r.memory_mb_used), ('taskq_memory_mb_max', r.memory_mb_max)) m(name, v)
    UNION ALL
    SELECT 'taskq_workers', jsonb_build_object('kind', w.kind, 'state', w.state), count(*)::float8
      FROM taskq._worker_slots() w GROUP BY w.kind, w.state
    UNION ALL
    SELECT 'taskq_oldest_runnable_age_seconds', '{}'::jsonb,
           coalesce(extract(epoch FROM taskq._oldest_runnable_age()), 0)::float8
    UNION ALL
    SELECT 'taskq_health_status', jsonb_build_object('check', h.check_name),
           CASE h.status WHEN 'ok' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END
      FROM taskq.health() h
    UNION ALL
    -- fair scheduling (issue 23): rate and key limits
    SELECT * FROM taskq._fair_metrics()
    UNION ALL
    -- and tenants: jobs waiting for their turn
    SELECT * FROM taskq._tenant_metrics()
$$;


