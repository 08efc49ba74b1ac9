-- The GUCs SQL reads come from typed C getters (taskq.c) whose values are
-- those current_setting() shows, units and all; a job's defaults come from
-- one table (taskq.h); names are checked by one C check (job_rows.c).
SELECT taskq._workers() = current_setting('taskq.workers')::integer AS workers;
SET taskq.backoff_base = '2500ms';
SET taskq.backoff_max = '2d';
SELECT name, getter, getter = current_setting(name)::interval AS same
FROM (VALUES ('taskq.backoff_base', taskq._backoff_base()),
             ('taskq.backoff_max', taskq._backoff_max()),
             ('taskq.aging_interval', taskq._aging_interval()),
             ('taskq.big_job_wait', taskq._big_job_wait()),
             ('taskq.retention', taskq._retention()),
             ('taskq.throttle_warn_after', taskq._throttle_warn_after())) AS s(name, getter)
ORDER BY name;
-- '2d' stays 2 days (not 48 hours), as current_setting()::interval gave it
SELECT taskq._backoff_max()::text AS backoff_max;
RESET taskq.backoff_max;
-- a job's defaults, as submit_many's SQL sees them; the backoff follows the GUC
SELECT * FROM taskq._job_defaults();
RESET taskq.backoff_base;
SELECT backoff FROM taskq._job_defaults();
-- the one name check, as SQL calls it: the errors taskq.submit raises
SELECT taskq._check_name('queue', NULL);
SELECT taskq._check_name('queue', E' \t\r\n');
SELECT taskq._check_name('queue', repeat('é', 201));
SELECT taskq._check_name('queue', repeat('é', 200)) AS two_hundred_is_fine;
SELECT taskq.submit('settings', queue => E' \t');
