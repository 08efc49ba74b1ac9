INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status, payload,
                        max_attempts, backoff, cpu_units, memory_mb, run_at, owner, in_database)
VALUES ('submit', 'bench_submit', 'normal', 'normal', 'pending',
        '{"user_id": 42, "action": "send_welcome_email", "locale": "en"}',
        3, '1 second', 1, 0, now(), 'postgres', false)
RETURNING id;
