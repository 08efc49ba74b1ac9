SELECT taskq.submit('bench_pickup', '{}', queue => 'pickup');
