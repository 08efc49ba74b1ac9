#!/usr/bin/env python3
"""External workers behind PgBouncer in transaction pooling mode.

A transaction pooler hands each transaction to whichever server connection is
free, so a session's LISTEN (and its prepared statements) do not survive: the
reference worker (clients/python/taskq_worker.py) with listen=False must get
all of its work through the poll fallback.  This test starts PgBouncer
(pool_mode = transaction, 2 server connections) in front of the database and
proves, for a worker connected only through it:

  * 300 jobs (waves submitted while the worker is idle, delayed jobs, jobs
    longer than the lease that live on heartbeats) all succeed, each run
    exactly once, and no lease expired;
  * the worker's connections really were multiplexed: PgBouncer logged more
    client logins than the (at most 2) server connections it opened;
  * LISTEN through the pooler is accepted but a notification sent meanwhile
    never reaches that client session (why listen=False is needed).

Needs PgBouncer (Debian package pgbouncer, installed by scripts/deps.sh) and
a database with taskq whose launcher runs there; connection settings come
from the environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), as
test/suites.sh provides inside pg_virtualenv.  Exits non-zero on failure.
"""

import os
import sys

import testenv  # noqa: F401  (first: psycopg from the system python3)
import psycopg

import logging
import random
import shutil
import subprocess
import tempfile
import threading
import time

import taskq_worker  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
TIME_LIMIT = 120.0
POOL_SIZE = 2
LEASE = 2.0
POLL = 0.3                    # the worker's poll interval, seconds
N_WAVE = 100                  # jobs per wave; three waves
N_DELAYED = 80
N_SLOW = 8                    # jobs that outlive their lease
N_TOTAL = 3 * N_WAVE + N_DELAYED + N_SLOW

tag = f"{os.getpid()}_{random.randrange(1 << 30):x}"
QUEUE = f"pool_{tag}"
JOB_TYPE = f"pool_echo_{tag}"  # no in-database handler

START = time.monotonic()
failures = []


def say(msg):
    print(f"[{time.monotonic() - START:6.1f}s] {msg}", flush=True)


def check(cond, msg):
    print(f"  {'ok' if cond else 'FAILED'}: {msg}", flush=True)
    if not cond:
        failures.append(msg)
    return cond


def wait_for(what, cond, timeout, step=0.1):
    deadline = min(time.monotonic() + timeout, START + TIME_LIMIT)
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(step)


def start_pgbouncer(workdir):
    port = random.randrange(20000, 60000)   # names the socket file; no TCP listener
    env = os.environ
    with open(os.path.join(workdir, "pgbouncer.ini"), "w") as f:
        f.write(f"""[databases]
taskq_pool = host={env.get('PGHOST', 'localhost')} port={env.get('PGPORT', '5432')} \
dbname={env['PGDATABASE']} user={env.get('PGUSER', 'postgres')} password={env.get('PGPASSWORD', '')} \
pool_size={POOL_SIZE}

[pgbouncer]
listen_addr =
listen_port = {port}
unix_socket_dir = {workdir}
auth_type = any
pool_mode = transaction
max_client_conn = 100
default_pool_size = {POOL_SIZE}
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
""")
    cmd = [PGBOUNCER]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root: it switches to postgres
        shutil.chown(workdir, "postgres")
        os.chmod(workdir, 0o700)
        cmd += ["-u", "postgres"]
    proc = subprocess.Popen(cmd + [os.path.join(workdir, "pgbouncer.ini")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    conninfo = f"host={workdir} port={port} dbname=taskq_pool"

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}")
        try:
            psycopg.connect(conninfo, autocommit=True, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False
    wait_for("pgbouncer to accept connections", up, 20)
    return proc, conninfo


def test_listen_is_lost(pooled, direct):
    """LISTEN through a transaction pooler is accepted, but the client's next
    transactions may run on another server connection, so notifications may
    never reach it."""
    listener = psycopg.connect(pooled, autocommit=True, prepare_threshold=None)
    got = []
    listener.add_notify_handler(got.append)
    try:
        listener.execute("LISTEN taskq_pool_probe")
        direct.execute("NOTIFY taskq_pool_probe, 'hello'")
        for _ in range(10):           # notifications arrive with query results
            listener.execute("SELECT pg_sleep(0.05)")
        # Not asserted: whether it arrives depends on which server connection
        # the pooler hands the next transactions to.  That unreliability is
        # the point: workers behind such a pooler must poll.
        print(f"  info: through the pooler the LISTENing client got {len(got)} of 1 "
              "notification (unreliable by design of transaction pooling)")
    finally:
        listener.close()


def main():
    logging.basicConfig(level=logging.WARNING, format="  worker log: %(levelname)s %(message)s")
    if not os.path.exists(PGBOUNCER):
        check(False, "pgbouncer is installed (scripts/deps.sh installs it)")
        sys.exit(1)
    direct = psycopg.connect("", autocommit=True)
    if direct.execute("SELECT count(*) FROM taskq.handlers WHERE job_type = %s", (JOB_TYPE,)).fetchone()[0]:
        sys.exit("the test's job type must not have an in-database handler")
    workdir = tempfile.mkdtemp(prefix="taskq-pooler-")
    proc = None
    worker_thread = None
    worker = None
    try:
        proc, pooled = start_pgbouncer(workdir)
        say(f"pgbouncer {PGBOUNCER} up, pool_mode=transaction, {POOL_SIZE} server connections")
        test_listen_is_lost(pooled, direct)

        runs = {}
        runs_lock = threading.Lock()
        worker = taskq_worker.Worker(pooled, queues=[QUEUE], name="pooled", concurrency=4,
                                     lease=LEASE, poll_interval=POLL, listen=False)

        @worker.handler(JOB_TYPE)
        def echo(payload, job):
            with runs_lock:
                runs.setdefault(job.id, []).append(job.attempt)
            if payload.get("sleep"):
                time.sleep(payload["sleep"])
            return {"n": payload.get("n")}

        worker_thread = threading.Thread(target=worker.run, name="worker")
        worker_thread.start()

        ids = []

        def submit(specs):
            new = [r[0] for r in direct.execute("SELECT * FROM taskq.submit_many(%s::jsonb)",
                                                (Jsonb(specs),))]
            ids.extend(new)
            return new

        def finished(wanted):
            return direct.execute("SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) AND status = "
                                  "'succeeded'", (wanted,)).fetchone()[0] == len(wanted)

        # slow jobs first (they need heartbeats), then waves, each submitted
        # while the worker is idle, so only a poll can find them
        submit([{"job_type": JOB_TYPE, "queue": QUEUE, "payload": {"sleep": LEASE * 1.5, "n": i}}
                for i in range(N_SLOW)])
        for wave in range(3):
            wanted = submit([{"job_type": JOB_TYPE, "queue": QUEUE, "payload": {"n": i}}
                             for i in range(N_WAVE)])
            t0 = time.monotonic()
            wait_for(f"wave {wave + 1}", lambda: finished(wanted), 30)
            say(f"wave {wave + 1}: {N_WAVE} jobs done in {time.monotonic() - t0:.1f}s")
            wait_for("the worker to go idle", lambda: worker.running_jobs == 0, 30)
        delayed = submit([{"job_type": JOB_TYPE, "queue": QUEUE, "payload": {"n": i},
                           "run_at": (direct.execute("SELECT (now() + interval '1.5 s')::text")
                                      .fetchone()[0])}
                          for i in range(N_DELAYED)])
        wait_for("the delayed jobs", lambda: finished(delayed), 30)
        wait_for("every job", lambda: finished(ids), 30)

        worker.stop()
        worker_thread.join(30)
        check(not worker_thread.is_alive(), "the worker stopped gracefully")

        rows = direct.execute("SELECT status::text, attempts, count(*) FROM taskq.jobs WHERE id = ANY (%s) "
                              "GROUP BY 1, 2 ORDER BY 1, 2", (ids,)).fetchall()
        say(f"jobs by status and attempts: {rows}")
        check(len(ids) == N_TOTAL and rows == [("succeeded", 1, N_TOTAL)],
              f"all {N_TOTAL} jobs succeeded on their first attempt")
        check(sorted(runs) == sorted(ids) and all(v == [1] for v in runs.values()),
              "every job ran exactly once, in this worker, through the pooler")
        expired = direct.execute("SELECT count(*) FROM taskq.job_logs WHERE job_id = ANY (%s) "
                                 "AND error LIKE 'lease of worker%%'", (ids,)).fetchone()[0]
        check(expired == 0, "heartbeats through the pooler kept every lease (jobs of "
                            f"{LEASE * 1.5:.0f}s with a {LEASE:.0f}s lease)")
        with open(os.path.join(workdir, "pgbouncer.log")) as f:
            log = f.read()
        logins = log.count("login attempt: db=taskq_pool")
        new_server = log.count("new connection to server")
        say(f"pgbouncer: {logins} client logins, {new_server} server connections opened")
        check(1 <= new_server <= POOL_SIZE,
              f"at most {POOL_SIZE} server connections served the pooled clients ({new_server})")
        check(logins > 2 * POOL_SIZE, f"{logins} client connections shared them")
    except Exception as e:  # noqa: BLE001 - reported as a failure
        failures.append(f"{type(e).__name__}: {e}")
        print(f"  FAILED: {type(e).__name__}: {e}", flush=True)
    finally:
        if worker is not None and worker_thread is not None and worker_thread.is_alive():
            worker.stop()
            worker_thread.join(10)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if failures and os.path.exists(os.path.join(workdir, "pgbouncer.log")):
            with open(os.path.join(workdir, "pgbouncer.log")) as f:
                print("--- pgbouncer.log (last lines)\n" + "".join(f.readlines()[-20:]), flush=True)
        direct.execute("DELETE FROM taskq.job_logs WHERE job_id IN "
                       "(SELECT id FROM taskq.jobs WHERE queue = %s)", (QUEUE,))
        direct.execute("DELETE FROM taskq.jobs WHERE queue = %s", (QUEUE,))
        direct.close()
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
