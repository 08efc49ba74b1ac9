#!/usr/bin/env python3
"""An external worker process for the benchmark: runs no-op jobs of type
bench_ext until SIGTERM.

    ext_worker.py reference CONNINFO QUEUE CONCURRENCY
        the Python reference worker (clients/python/taskq_worker.py) with
        batched claims (prefetch PREFETCH) and batched completions
        (taskq.complete_many, its defaults)
    ext_worker.py reference_per_job CONNINFO QUEUE CONCURRENCY
        the same worker as before complete_many: claims of at most
        CONCURRENCY jobs, one taskq.complete per job (complete_batch=1)
    ext_worker.py batch CONNINFO QUEUE MAX_JOBS
        a minimal loop: claim up to MAX_JOBS, complete them all with one
        taskq.complete_many, repeat (LISTEN for new work when the queue is empty)
    ext_worker.py batch_per_job CONNINFO QUEUE MAX_JOBS
        the same loop with one taskq.complete per job (in one statement)

Prints "ready" once connected.
"""
import os
import select
import signal
import sys

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
PREFETCH = 200   # the reference worker's local queue beyond its threads


def reference(conninfo, queue, concurrency, per_job=False):
    sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
    from taskq_worker import Worker

    batching = dict(complete_batch=1) if per_job else dict(prefetch=PREFETCH)
    worker = Worker(conninfo, queues=[queue], name="bench", concurrency=concurrency,
                    lease=60, poll_interval=1, **batching)
    worker.register("bench_ext", lambda payload, job: None)
    print("ready", flush=True)
    worker.run()


def batch(conninfo, queue, max_jobs, per_job=False):
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    name = f"bench-batch:{os.getpid()}"
    conn = psycopg.connect(conninfo, autocommit=True)
    listener = psycopg.connect(conninfo, autocommit=True)
    (channel,) = listener.execute("SELECT taskq.work_channel()").fetchone()
    listener.execute(f'LISTEN "{channel}"')
    print("ready", flush=True)
    while not stop:
        with conn.transaction():
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM taskq.claim(%s, %s, %s, '60 s')", ([queue], name, max_jobs))]
        if ids:
            # the no-op "work", then every completion in one transaction
            if per_job:
                conn.execute("SELECT count(taskq.complete(id, NULL, %s)) FROM unnest(%s::bigint[]) id",
                             (name, ids))
            else:
                conn.execute("SELECT taskq.complete_many(%s::bigint[], NULL, %s)", (ids, name))
            continue
        select.select([listener.fileno()], [], [], 1.0)
        listener.pgconn.consume_input()
        while listener.pgconn.notifies() is not None:
            pass
    conn.close()
    listener.close()


if __name__ == "__main__":
    mode, conninfo, queue, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    {"reference": reference, "batch": batch,
     "reference_per_job": lambda *a: reference(*a, per_job=True),
     "batch_per_job": lambda *a: batch(*a, per_job=True)}[mode](conninfo, queue, n)
