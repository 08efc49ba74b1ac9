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
-- Grants: one row write per job
------------------------------------------------------------------------------
-- A handler reads its attempt number here (its row reads the attempts before
-- the claim while its batch runs).
GRANT EXECUTE ON FUNCTION taskq.current_attempt() TO taskq_user;
