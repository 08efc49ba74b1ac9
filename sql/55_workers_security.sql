-- Workers: taskq._counters() fills every column it declares (retried read
-- past its arrays and returned garbage); _request_cancel flags only a job
-- an executor holds.
\i sql/include/helpers.psql
CREATE SCHEMA w55;
-- fails its first attempt, succeeds in the second
CREATE FUNCTION w55.flaky(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF taskq.current_attempt() < 2 THEN
        RAISE EXCEPTION 'the first attempt fails';
    END IF;
END $$;
SELECT taskq.register_handler('w55_flaky', 'w55.flaky(jsonb)');

CREATE TEMP TABLE before AS SELECT * FROM taskq._counters();
SELECT pg_temp.j('flaky', taskq.submit('w55_flaky', queue => 'w55', max_attempts => 3,
                                      backoff => '0 s'));
SELECT taskq.wait(ARRAY[pg_temp.id('flaky')], '60 s') AS finished;
SELECT status, attempts, last_error FROM taskq.jobs WHERE id = pg_temp.id('flaky');
-- the retry is counted; retried is a count of failed attempts, no garbage
SELECT c.retried - b.retried >= 1 AS retry_counted,
       c.failed - b.failed >= 1 AS failure_counted,
       c.retried BETWEEN 0 AND c.failed AS retried_within_failed
FROM taskq._counters() c, before b;
SELECT count(*) AS columns FROM taskq._counters() c, jsonb_each(to_jsonb(c)) e
WHERE e.value IS NOT NULL;

-- no executor holds this job (and there is no such executor)
SELECT taskq._request_cancel(taskq.submit('w55_nohandler', queue => 'w55'), 'executor/0.0')
    AS flagged;

SELECT pg_temp.cancel_all('w55') >= 1 AS cancelled;
SELECT taskq.unregister_handler('w55_flaky');
DROP SCHEMA w55 CASCADE;
