-- One success path and one place that records a transition (issue 21):
-- among taskq's SQL functions, only taskq._record writes taskq.job_logs or
-- calls taskq._publish, and every function that writes a job 'succeeded'
-- hands what it wrote to taskq._succeeded.
SELECT p.oid::regprocedure AS records_transitions
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace IN ('taskq'::regnamespace, 'taskq_internal'::regnamespace)
   AND l.lanname IN ('sql', 'plpgsql')
   AND (p.prosrc ~* 'insert\s+into\s+taskq\.job_logs' OR p.prosrc ~ 'taskq\._publish\(')
 ORDER BY p.oid::regprocedure::text;
SELECT p.oid::regprocedure AS writes_succeeded, p.prosrc ~ 'taskq\._succeeded\(' AS then_succeeded
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace IN ('taskq'::regnamespace, 'taskq_internal'::regnamespace)
   AND l.lanname IN ('sql', 'plpgsql')
   AND p.prosrc ~* 'set\s+status\s*=\s*''succeeded'''
 ORDER BY p.oid::regprocedure::text;
