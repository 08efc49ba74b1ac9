SELECT taskq.submit('bench_submit', '{"user_id": 42, "action": "send_welcome_email", "locale": "en"}', queue => 'submit');
