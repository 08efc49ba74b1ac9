INSERT INTO bench.submitted SELECT taskq.submit('bench_pickup', '{}', queue => 'pickup');
