-- Shared fixtures for the regression suites: roles and handler functions.
SELECT extname, extversion FROM pg_extension WHERE extname = 'taskq';
CREATE ROLE taskq_alice LOGIN IN ROLE taskq_user;
CREATE ROLE taskq_bob LOGIN IN ROLE taskq_user;
CREATE ROLE taskq_boss LOGIN IN ROLE taskq_admin;
GRANT USAGE ON SCHEMA public TO PUBLIC;
SELECT rolname FROM pg_roles WHERE rolname LIKE 'taskq%' ORDER BY rolname;
