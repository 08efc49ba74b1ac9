------------------------------------------------------------------------------
-- Grants: schedules, metrics and monitoring
------------------------------------------------------------------------------

-- A role that schedules jobs sees in health() whether pg_cron runs them
-- (its own schedules' failures; the other checks are counts, no rows).
GRANT EXECUTE ON FUNCTION taskq.health() TO taskq_user;

------------------------------------------------------------------------------
-- Grants: fair scheduling
------------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION taskq.claim_retry_after(text[]) TO taskq_user, taskq_worker;

------------------------------------------------------------------------------
-- Grants: tenants
------------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION taskq.configure_tenant(text, float8) TO taskq_admin;
GRANT SELECT ON taskq.tenants TO taskq_admin;
GRANT EXECUTE ON FUNCTION taskq.rate_limit_state() TO taskq_user, taskq_worker, taskq_monitor;
GRANT EXECUTE ON FUNCTION taskq.configure_job_type(text, text, integer, boolean, boolean) TO taskq_admin;
GRANT SELECT ON taskq.job_types TO taskq_user, taskq_worker;

------------------------------------------------------------------------------
-- Grants: one row write per job
------------------------------------------------------------------------------
-- A handler reads its attempt number here (its row reads the attempts before
-- the claim while its batch runs).
GRANT EXECUTE ON FUNCTION taskq.current_attempt() TO taskq_user;

------------------------------------------------------------------------------
-- Grants: what a user sees while a batch runs
------------------------------------------------------------------------------
-- taskq.live_jobs applies taskq.jobs' row security to its caller; the held
-- ids it joins are the job ids taskq.workers shows (no job's contents).
GRANT SELECT ON taskq.live_jobs TO taskq_user;
GRANT EXECUTE ON FUNCTION taskq._held_jobs() TO taskq_user, taskq_worker, taskq_monitor;
