-- taskq.submit's writes in plain SQL: the job row, into a copy of taskq.jobs
-- with its indexes (a submit writes no log row)
INSERT INTO bench.same_jobs (queue, job_type, priority, effective_priority, status, payload,
                             max_attempts, backoff, cpu_units, memory_mb, run_at, owner)
VALUES ('submit', 'bench_submit', 'normal', 'normal', 'pending',
        '{"user_id": 42, "action": "send_welcome_email", "locale": "en"}',
        3, '1 second', 1, 0, now(), 'postgres')
RETURNING id;
