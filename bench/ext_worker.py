#!/usr/bin/env python3
"""An external worker process for the benchmark: runs no-op jobs of type
bench_ext until SIGTERM.

    ext_worker.py reference CONNINFO QUEUE CONCURRENCY
        the Python reference worker (clients/python/taskq_worker.py)
    ext_worker.py batch CONNINFO QUEUE MAX_JOBS
        a minimal loop: claim up to MAX_JOBS, complete them all in one
        transaction, repeat (LISTEN for new work when the queue is empty)

Prints "ready" once connected.
"""
import os
import select
import signal
import sys

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))


def reference(conninfo, queue, concurrency):
    sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
    from taskq_worker import Worker

    worker = Worker(conninfo, queues=[queue], name="bench", concurrency=concurrency,
                    lease=60, poll_interval=1)
    worker.register("bench_ext", lambda payload, job: None)
    print("ready", flush=True)
    worker.run()


def batch(conninfo, queue, max_jobs):
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    name = f"bench-batch:{os.getpid()}"
    conn = psycopg.connect(conninfo, autocommit=True)
    listener = psycopg.connect(conninfo, autocommit=True)
    listener.execute("LISTEN taskq_jobs")
    print("ready", flush=True)
    while not stop:
        with conn.transaction():
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM taskq.claim(%s, %s, %s, '60 s')", ([queue], name, max_jobs))]
        if ids:
            # the no-op "work", then every completion in one transaction
            conn.execute("SELECT count(taskq.complete(id, NULL, %s)) FROM unnest(%s::bigint[]) id",
                         (name, ids))
            continue
        select.select([listener.fileno()], [], [], 1.0)
        listener.pgconn.consume_input()
        while listener.pgconn.notifies() is not None:
            pass
    conn.close()
    listener.close()


if __name__ == "__main__":
    mode, conninfo, queue, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    {"reference": reference, "batch": batch}[mode](conninfo, queue, n)
