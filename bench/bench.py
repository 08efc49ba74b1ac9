#!/usr/bin/env python3
"""taskq benchmark driver (see README.md; run through bench/run.sh).

Starts one throwaway PostgreSQL 15 server, measures taskq beside the raw
PostgreSQL limit and beside graphile-worker and pg-boss on that server, and
writes bench/results/<timestamp>.json and a Markdown report.
"""
import argparse
import datetime
import io
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import psycopg

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PGBIN = "/usr/lib/postgresql/15/bin"
PAYLOAD = {"user_id": 42, "action": "send_welcome_email", "locale": "en"}

FULL = dict(
    runs=3, submit_seconds=10, submit_clients=[1, 4, 16], batch_seconds=10,
    e2e_jobs=100_000, ext_jobs=20_000, raw_clients=[2], ext_procs=2, ext_concurrency=8, ext_batch=100,
    pickup_rate=500, pickup_seconds=20, churn_jobs=1_000_000, churn_samples=10,
    scale_workers=[1, 2, 4, 8], scale_jobs=100_000, chains=(100, 100), fan_in=1000,
    backlogs=[1_000, 100_000, 1_000_000], claim_repeats=15, idle_cpu_seconds=5,
)
QUICK = dict(
    runs=1, submit_seconds=2, submit_clients=[1, 4, 16], batch_seconds=1,
    e2e_jobs=5_000, ext_jobs=2_000, raw_clients=[2], ext_procs=2, ext_concurrency=8, ext_batch=100,
    pickup_rate=500, pickup_seconds=3, churn_jobs=20_000, churn_samples=4,
    scale_workers=[1, 2, 4, 8], scale_jobs=2_000, chains=(10, 10), fan_in=100,
    backlogs=[1_000, 10_000], claim_repeats=5, idle_cpu_seconds=2,
)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stats(values):
    """median, min and max of a list of runs (None when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def med(s):
    return None if s is None else s["median"]


def ratio(a, b):
    a, b = med(a) if isinstance(a, dict) else a, med(b) if isinstance(b, dict) else b
    return None if not a or not b else a / b


# --------------------------------------------------------------------------
# The throwaway server
# --------------------------------------------------------------------------

def free_port():
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if 20000 <= port <= 65000:
            return port
    return 54329


class Server:
    """One PostgreSQL 15 server in a temporary directory, run as postgres."""

    def __init__(self, settings):
        self.root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="taskq-bench.")
        self.data = os.path.join(self.dir, "data")
        self.sock = self.dir
        self.logfile = os.path.join(self.dir, "server.log")
        self.port = free_port()
        self.settings = dict(settings, port=self.port,
                             unix_socket_directories=f"'{self.sock}'")
        if self.root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o755)
        self.as_pg(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                    "--no-sync", "-E", "UTF8", "--locale=C"], quiet=True)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# taskq benchmark\n")
            for k, v in self.settings.items():
                f.write(f"{k} = {v}\n")
        self.as_pg(["pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "120",
                    "start"], quiet=True)

    def as_pg(self, cmd, quiet=False):
        cmd = [os.path.join(PGBIN, cmd[0])] + cmd[1:]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)

    def conninfo(self, db):
        return f"host={self.sock} port={self.port} user=postgres dbname={db}"

    def env(self, db):
        return dict(os.environ, PGHOST=self.sock, PGPORT=str(self.port), PGUSER="postgres",
                    PGDATABASE=db, PEER_DB=db)

    def connect(self, db="bench", autocommit=True):
        return psycopg.connect(self.conninfo(db), autocommit=autocommit)

    def stop(self, keep=False):
        try:
            self.as_pg(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], quiet=True)
        except subprocess.CalledProcessError:
            pass
        if keep:
            log(f"server files kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self):
        self.as_pg(["pg_ctl", "-D", self.data, "-l", self.logfile, "-m", "fast", "-w",
                    "-t", "120", "restart"], quiet=True)

    def log_tail(self, n=40):
        try:
            with open(self.logfile) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def pgbench(server, db, script, clients, seconds=None, transactions=None, rate=None,
            defines=None, options=None):
    """Run pgbench with a custom script; returns its numbers.  options: PGOPTIONS."""
    cmd = [os.path.join(PGBIN, "pgbench"), "-n", "-M", "prepared", "-f",
           os.path.join(BENCH, "pgbench", script), "-c", str(clients),
           "-j", str(min(clients, os.cpu_count() or 1))]
    if seconds:
        cmd += ["-T", str(seconds)]
    if transactions:
        cmd += ["-t", str(transactions)]
    if rate:
        cmd += ["-R", str(rate)]
    for k, v in (defines or {}).items():
        cmd += ["-D", f"{k}={v}"]
    cmd.append(db)
    t0 = time.monotonic()
    env = server.env(db)
    if options:
        env["PGOPTIONS"] = options
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    out = p.stdout + p.stderr
    if p.returncode != 0 or "aborted" in out:
        raise RuntimeError(f"pgbench {script} failed:\n{out[-2000:]}")
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    n = re.search(r"number of transactions actually processed: (\d+)", out)
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    lag = re.search(r"rate limit schedule lag: avg ([0-9.]+) \(max ([0-9.]+)\) ms", out)
    return {"tps": float(m.group(1)), "transactions": int(n.group(1)), "wall_s": wall,
            "latency_ms": float(lat.group(1)) if lat else None,
            "lag_avg_ms": float(lag.group(1)) if lag else None,
            "lag_max_ms": float(lag.group(2)) if lag else None}


def wait_for(check, what, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def reset_taskq(conn):
    """Empty taskq's tables (between runs)."""
    for attempt in range(10):
        try:
            # an executor may hold one of these while it waits for another
            conn.execute("TRUNCATE taskq.job_dependencies, taskq.job_logs, taskq.jobs, bench.pickup, bench.submitted")
            break
        except psycopg.errors.DeadlockDetected:
            if attempt == 9:
                raise
            time.sleep(0.1)
    conn.execute("DELETE FROM taskq.queues")


def checkpoint(conn):
    conn.execute("CHECKPOINT")


def jobs_json(n, job_type, queue, extra=None):
    spec = {"job_type": job_type, "queue": queue, "payload": PAYLOAD}
    if extra:
        spec.update(extra)
    return json.dumps([spec] * n)




def submit_many(conn, n, job_type, queue, batch=1000):
    doc = jobs_json(batch, job_type, queue)
    done = 0
    while done < n:
        k = min(batch, n - done)
        conn.execute("SELECT count(*) FROM taskq.submit_many(%s::jsonb)",
                     (doc if k == batch else jobs_json(k, job_type, queue),))
        done += k


def counters(conn):
    return conn.execute("SELECT claimed, succeeded, failed FROM taskq._counters()").fetchone()


def executors(conn):
    return [r[0] for r in conn.execute(
        "SELECT pid FROM taskq.workers WHERE kind = 'executor' ORDER BY pid")]


def set_workers(conn, n):
    conn.execute(f"ALTER SYSTEM SET taskq.workers = {int(n)}")
    conn.execute("SELECT pg_reload_conf()")
    wait_for(lambda: len(executors(conn)) == n, f"{n} executors", 120, 0.1)


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])     # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def executor_cpu(conn, seconds):
    """CPU used by the executors (percent of one core, summed) over seconds of
    doing nothing but their own idle polling."""
    pids = executors(conn)
    before = sum(cpu_ticks(p) for p in pids)
    time.sleep(seconds)
    used = sum(cpu_ticks(p) for p in pids) - before
    return 100.0 * used / os.sysconf("SC_CLK_TCK") / seconds


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssShmem", "VmHWM"):
                    out[k] = int(v.split()[0])  # kB
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

class Listener:
    """A session that LISTENs on its job channel (taskq.channel(): the bench's
    superuser gets every job's) and reads every notification, while
    in a with block: taskq publishes only while some session listens."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self.conn = self.server.connect()
        self.heard = 0
        self.conn.add_notify_handler(self._heard)
        (channel,) = self.conn.execute("SELECT taskq.channel()").fetchone()
        self.conn.execute(f'LISTEN "{channel}"')
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _heard(self, notify):
        self.heard += 1

    def _read(self):
        # (psycopg 3.1 has no notifies(timeout=): a query every 50 ms reads them)
        while not self.stop.wait(0.05):
            self.conn.execute("SELECT 1")

    def __exit__(self, exc_type, exc, tb):
        self.stop.set()
        self.thread.join()
        self.conn.close()
        if exc_type is None and self.heard == 0:
            raise RuntimeError("the listener heard no notification: taskq published nothing")
        return False


class Bench:
    def __init__(self, server, cfg, peers):
        self.s = server
        self.cfg = cfg
        self.peers = peers          # None, or why peers are skipped (str)
        self.conn = server.connect("bench")
        self.r = {}
        self.e2e_parts = {"executors", "external", "raw", "peers"}

    def runs(self):
        return range(self.cfg["runs"])

    # 1. submission -------------------------------------------------------
    def submission(self):
        cfg, c = self.cfg, self.conn
        out = {"single": {}, "batch": {}}
        for clients in cfg["submit_clients"]:
            taskq_tps, heard_tps, serial_tps, raw_tps, same_tps = [], [], [], [], []
            for _ in self.runs():
                reset_taskq(c)
                c.execute("TRUNCATE bench.raw_jobs")
                checkpoint(c)
                taskq_tps.append(pgbench(self.s, "bench", "taskq_submit.sql", clients,
                                         seconds=cfg["submit_seconds"])["tps"])
                reset_taskq(c)
                checkpoint(c)
                # with a listener every submit NOTIFYs (README: NOTIFY serializes commits)
                with Listener(self.s):
                    heard_tps.append(pgbench(self.s, "bench", "taskq_submit.sql", clients,
                                             seconds=cfg["submit_seconds"])["tps"])
                    reset_taskq(c)
                    checkpoint(c)
                    # PostgreSQL's commit order: the NOTIFY lock held through the flush
                    serial_tps.append(pgbench(self.s, "bench", "taskq_submit.sql", clients,
                                              seconds=cfg["submit_seconds"],
                                              options="-c taskq.flush_after_notify=off")["tps"])
                checkpoint(c)
                raw_tps.append(pgbench(self.s, "bench", "raw_insert.sql", clients,
                                       seconds=cfg["submit_seconds"])["tps"])
                c.execute("TRUNCATE bench.same_jobs, bench.same_logs")
                checkpoint(c)
                same_tps.append(pgbench(self.s, "bench", "same_writes_submit.sql", clients,
                                        seconds=cfg["submit_seconds"])["tps"])
            out["single"][str(clients)] = {"taskq_submit": stats(taskq_tps),
                                           "taskq_submit_listened": stats(heard_tps),
                                           "taskq_submit_listened_flush_off": stats(serial_tps),
                                           "raw_insert": stats(raw_tps),
                                           "same_writes": stats(same_tps)}
            log(f"submit x{clients}: taskq {med(stats(taskq_tps)):.0f} tps "
                f"(with a listener: {med(stats(heard_tps)):.0f}, "
                f"and flush_after_notify=off: {med(stats(serial_tps)):.0f}), "
                f"raw INSERT {med(stats(raw_tps)):.0f} tps, "
                f"the same writes in plain SQL {med(stats(same_tps)):.0f} tps")

        methods = {
            "taskq_submit_many": ("bench", self._batch_submit_many),
            "raw_batch_insert": ("bench", self._batch_raw_insert),
            "same_writes_batch": ("bench", self._batch_same_writes),
            "raw_copy": ("bench", self._batch_copy),
        }
        if self.peers is None:
            methods["graphile_add_jobs"] = ("bench_graphile", self._batch_graphile)
        for name, (db, fn) in methods.items():
            vals = []
            for _ in self.runs():
                with self.s.connect(db) as conn:
                    vals.append(fn(conn))
            out["batch"][name] = stats(vals)
            log(f"batch {name}: {med(out['batch'][name]):.0f} jobs/s")
        self.r["submission"] = out

    def _timed_batches(self, conn, call, prepare=None):
        """Call call(conn) (1,000 jobs) repeatedly for batch_seconds; jobs/s."""
        if prepare:
            prepare(conn)
        checkpoint(conn)
        call(conn)      # warm the plan cache
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < self.cfg["batch_seconds"]:
            call(conn)
            n += 1000
        return n / (time.monotonic() - t0)

    def _batch_submit_many(self, conn):
        doc = jobs_json(1000, "bench_submit", "submit")
        return self._timed_batches(
            conn, lambda k: k.execute("SELECT id FROM taskq.submit_many(%s::jsonb) id",
                                      (doc,)).fetchall(),
            prepare=reset_taskq)

    def _batch_raw_insert(self, conn):
        doc = jobs_json(1000, "bench_submit", "submit")
        sql = """INSERT INTO bench.raw_jobs (queue, job_type, priority, effective_priority, status,
                     payload, max_attempts, backoff, cpu_units, memory_mb, run_at, owner)
                 SELECT e->>'queue', e->>'job_type', 'normal', 'normal', 'pending', e->'payload',
                        3, '1 second', 1, 0, now(), 'postgres'
                   FROM jsonb_array_elements(%s::jsonb) e
                 RETURNING id"""
        return self._timed_batches(
            conn, lambda k: k.execute(sql, (doc,)).fetchall(),
            prepare=lambda k: k.execute("TRUNCATE bench.raw_jobs"))

    def _batch_same_writes(self, conn):
        doc = jobs_json(1000, "bench_submit", "submit")
        sql = """INSERT INTO bench.same_jobs (queue, job_type, priority, effective_priority,
                     status, payload, max_attempts, backoff, cpu_units, memory_mb, run_at, owner)
                 SELECT e->>'queue', e->>'job_type', 'normal', 'normal', 'pending', e->'payload',
                        3, '1 second', 1, 0, now(), 'postgres'
                   FROM jsonb_array_elements(%s::jsonb) e
                 RETURNING id"""
        return self._timed_batches(
            conn, lambda k: k.execute(sql, (doc,)).fetchall(),
            prepare=lambda k: k.execute("TRUNCATE bench.same_jobs, bench.same_logs"))

    def _batch_copy(self, conn):
        row = "\t".join(["submit", "bench_submit", "normal", "normal", "pending",
                         json.dumps(PAYLOAD), "3", "1 second", "1", "0",
                         "2000-01-01 00:00:00+00", "postgres"]) + "\n"
        data = (row * 1000).encode()

        def copy(k):
            with k.cursor().copy(
                    "COPY bench.raw_jobs (queue, job_type, priority, effective_priority, status,"
                    " payload, max_attempts, backoff, cpu_units, memory_mb, run_at, owner)"
                    " FROM STDIN") as cp:
                cp.write(data)
        return self._timed_batches(conn, copy,
                                   prepare=lambda k: k.execute("TRUNCATE bench.raw_jobs"))

    def _batch_graphile(self, conn):
        spec = json.dumps([{"identifier": "batch", "payload": PAYLOAD}] * 1000)
        sql = ("SELECT id FROM graphile_worker.add_jobs(array(SELECT json_populate_recordset("
               "null::graphile_worker.job_spec, %s::json)), false)")
        return self._timed_batches(
            conn, lambda k: k.execute(sql, (spec,)).fetchall(),
            prepare=lambda k: k.execute("DELETE FROM graphile_worker._private_jobs"))

    # 2. end to end -------------------------------------------------------
    def _enqueue_paused(self, n, job_type, queue):
        c = self.conn
        reset_taskq(c)
        c.execute("SELECT taskq.pause(%s)", (queue,))
        submit_many(c, n, job_type, queue)
        c.execute("VACUUM ANALYZE taskq.jobs")
        checkpoint(c)

    def _finish_time(self, queue, n):
        """When the last of the n jobs of queue finished (epoch seconds)."""
        def done():
            # (the executors count a success just before their commit)
            ok, last = self.conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
                "extract(epoch FROM max(finished_at))::float8 FROM taskq.jobs WHERE queue = %s",
                (queue,)).fetchone()
            return last if ok == n else None
        try:
            return wait_for(done, f"all {n} jobs of queue {queue} to succeed", 60)
        except TimeoutError:
            raise RuntimeError(f"not all {n} jobs of queue {queue} succeeded") from None

    def e2e_in_database(self, n):
        """Drain n pre-enqueued no-op jobs with the executors; jobs/s."""
        c = self.conn
        self._enqueue_paused(n, "bench_noop", "e2e")
        base = counters(c)[1]
        t0 = time.time()
        c.execute("SELECT taskq.resume('e2e')")
        wait_for(lambda: counters(c)[1] >= base + n, "executors to drain e2e",
                 max(120, n / 200))
        return n / (self._finish_time("e2e", n) - t0)

    def e2e_external(self, n, mode):
        """Drain n jobs with external worker processes; jobs/s."""
        cfg, c = self.cfg, self.conn
        self._enqueue_paused(n, "bench_ext", "e2e_ext")
        arg = cfg["ext_concurrency"] if mode.startswith("reference") else cfg["ext_batch"]
        t0 = time.time()
        c.execute("SELECT taskq.resume('e2e_ext')")
        procs = [subprocess.Popen([sys.executable, os.path.join(BENCH, "ext_worker.py"), mode,
                                   self.s.conninfo("bench"), "e2e_ext", str(arg)],
                                  stdout=subprocess.PIPE, text=True)
                 for _ in range(cfg["ext_procs"])]
        try:
            left = ("SELECT EXISTS (SELECT 1 FROM taskq.jobs WHERE status = 'pending' AND queue = 'e2e_ext')"
                    " OR EXISTS (SELECT 1 FROM taskq.jobs WHERE status = 'running' AND queue = 'e2e_ext')")
            wait_for(lambda: not c.execute(left).fetchone()[0], f"{mode} workers to drain",
                     max(300, n / 50), 0.1)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        return n / (self._finish_time("e2e_ext", n) - t0)

    def pgbench_drain(self, what, table, fill_sql, script, n, clients, batch, done_sql):
        """Fill table with n rows (fill_sql, parameters payload and n), then
        pgbench script drains them, batch rows per transaction; jobs/s."""
        c = self.conn
        c.execute(f"TRUNCATE {table}")
        c.execute(fill_sql, (json.dumps(PAYLOAD), n))
        c.execute(f"VACUUM ANALYZE {table.split(',')[0]}")
        checkpoint(c)
        tx = n // (clients * batch)
        r = pgbench(self.s, "bench", script, clients, transactions=tx,
                    defines={"batch": batch} if batch > 1 else None)
        done = c.execute(done_sql).fetchone()[0]
        if done != tx * clients * batch:
            raise RuntimeError(f"{what}: {done} rows done, expected {tx * clients * batch}")
        return r["tps"] * batch

    def raw_cycle(self, n, clients, batch=None):
        """pgbench draining n rows of the naive queue; jobs/s."""
        return self.pgbench_drain(
            "raw cycle", "bench.raw_queue",
            "INSERT INTO bench.raw_queue (payload) SELECT %s::jsonb FROM generate_series(1, %s)",
            "raw_cycle_batch.sql" if batch else "raw_cycle.sql", n, clients, batch or 1,
            "SELECT count(*) FROM bench.raw_queue WHERE status = 'done'")

    def same_writes_cycle(self, n, clients, batch):
        """pgbench writing what the executors write for n jobs (no handler, no
        NOTIFY), on copies of taskq's tables with their indexes; jobs/s."""
        return self.pgbench_drain(
            "same-writes cycle", "bench.same_jobs, bench.same_logs",
            "INSERT INTO bench.same_jobs (queue, job_type, priority, effective_priority,"
            " status, payload, max_attempts, backoff, cpu_units, memory_mb, run_at, owner,"
            " in_database)"
            " SELECT 'e2e', 'bench_noop', 'normal', 'normal', 'pending', %s::jsonb, 3,"
            " '1 second', 1, 0, now(), 'postgres', true FROM generate_series(1, %s)",
            "same_writes_cycle.sql", n, clients, batch,
            "SELECT count(*) FROM bench.same_jobs WHERE status = 'succeeded'")

    def end_to_end(self):
        cfg, n = self.cfg, self.cfg["e2e_jobs"]
        parts = self.e2e_parts
        out = {"jobs": n, "executors": 2}
        if "executors" in parts:
            out["taskq_executors"] = stats([self.e2e_in_database(n) for _ in self.runs()])
            log(f"e2e taskq executors: {med(out['taskq_executors']):.0f} jobs/s")
        # fewer jobs: external workers are slower (see README); the *_per_job
        # modes are the same clients with one taskq.complete per job
        out["ext_jobs"] = cfg["ext_jobs"]
        for mode in ("reference", "batch", "reference_per_job", "batch_per_job"):
            if "external" not in parts:
                break
            key = f"taskq_external_{mode}"
            out[key] = stats([self.e2e_external(cfg["ext_jobs"], mode) for _ in self.runs()])
            log(f"e2e taskq external ({mode}): {med(out[key]):.0f} jobs/s")
        from ext_worker import PREFETCH
        c, b = cfg["ext_concurrency"], cfg["ext_batch"]
        out["external_settings"] = {
            "processes": cfg["ext_procs"],
            "reference": f"taskq_worker.Worker(concurrency={c}, prefetch={PREFETCH}, "
                         f"max_batch={c + PREFETCH}, listen=True), successes by "
                         "taskq.complete_many (complete_batch=100, complete_delay=0.01 s)",
            "reference_per_job": f"taskq_worker.Worker(concurrency={c}, max_batch={c}, "
                                 "complete_batch=1, listen=True): one taskq.complete per job",
            "batch": f"claim(max_jobs={b}) then one taskq.complete_many",
            "batch_per_job": f"claim(max_jobs={b}) then every taskq.complete in one statement"}
        for clients in cfg["raw_clients"]:
            if "raw" in parts:
                out[f"raw_cycle_c{clients}"] = stats([self.raw_cycle(n, clients)
                                                      for _ in self.runs()])
                out[f"raw_cycle_batch64_c{clients}"] = stats([self.raw_cycle(n, clients, 64)
                                                              for _ in self.runs()])
                log(f"e2e raw cycle x{clients}: {med(out[f'raw_cycle_c{clients}']):.0f} jobs/s, "
                    f"batched 64: {med(out[f'raw_cycle_batch64_c{clients}']):.0f} jobs/s")
            if "raw" in parts or "same_writes" in parts:
                # the executors' batch (taskq.batch_size's default)
                out[f"same_writes_batch256_c{clients}"] = stats(
                    [self.same_writes_cycle(n, clients, 256) for _ in self.runs()])
                log(f"e2e taskq's writes x{clients} batched 256: "
                    f"{med(out[f'same_writes_batch256_c{clients}']):.0f} jobs/s")
        if self.peers is None and "peers" in parts:
            for peer, cmd in (("graphile", "graphile-e2e"), ("pgboss", "pgboss-e2e")):
                runs, settings = [], None
                for _ in self.runs():
                    res = self.node(cmd, "bench_" + peer, str(n))
                    runs.append(res["jobs_per_s"])
                    settings = res["settings"]
                out[peer] = stats(runs)
                out[peer + "_settings"] = settings
                log(f"e2e {peer}: {med(out[peer]):.0f} jobs/s")
        self.r["end_to_end"] = out

    # 3. pickup latency ---------------------------------------------------
    PERCENTILES = """
        SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
        FROM ({}) s"""

    def _percentiles(self, query, params=()):
        n, p50, p95, p99, mx = self.conn.execute(self.PERCENTILES.format(query), params).fetchone()
        return {"jobs": n, "p50": p50, "p95": p95, "p99": p99, "max": mx}

    def _with_percentiles(self, res, query, params=()):
        """res (commit to start) plus the percentiles of query (from the submit
        transaction's start) under from_start_*."""
        res.update({"from_start_" + k: v for k, v in self._percentiles(query, params).items()})
        return res

    def pickup_taskq(self, options=None):
        cfg, c = self.cfg, self.conn
        reset_taskq(c)
        checkpoint(c)
        r = pgbench(self.s, "bench", "taskq_pickup.sql", 4, seconds=cfg["pickup_seconds"],
                    rate=cfg["pickup_rate"], options=options)
        wait_for(lambda: not c.execute(
            "SELECT EXISTS (SELECT 1 FROM taskq.jobs WHERE queue = 'pickup'"
            " AND status IN ('pending', 'running'))").fetchone()[0], "pickup jobs", 120, 0.05)
        # the submit's commit: that of the row the pgbench script wrote with it
        res = self._with_percentiles(self._percentiles(
            "SELECT extract(epoch FROM p.started_at - pg_xact_commit_timestamp(s.xmin)) * 1000"
            "       AS ms"
            "  FROM bench.pickup p JOIN bench.submitted s ON s.job_id = p.job_id"),
            "SELECT extract(epoch FROM p.started_at - j.created_at) * 1000 AS ms"
            " FROM bench.pickup p JOIN taskq.jobs j ON j.id = p.job_id")
        res.update(submitted=r["transactions"], rate=cfg["pickup_rate"],
                   lag_max_ms=r["lag_max_ms"])
        if res["jobs"] != r["transactions"] or res["from_start_jobs"] != res["jobs"]:
            raise RuntimeError(f"pickup: {res['jobs']} of {r['transactions']} jobs recorded")
        return res

    def pickup_peer(self, peer, run):
        cfg = self.cfg
        db = "bench_" + peer
        p = subprocess.Popen(["node", os.path.join(BENCH, "peers.js"), f"{peer}-pickup"],
                             env=self.s.env(db), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        try:
            line = p.stdout.readline()
            if '"ready"' not in line:
                raise RuntimeError(f"{peer}-pickup did not start: {line}")
            if peer == "graphile":
                with self.s.connect(db) as g:
                    g.execute("TRUNCATE pickup_marks")
                r = pgbench(self.s, db, "graphile_pickup.sql", 4, seconds=cfg["pickup_seconds"],
                            rate=cfg["pickup_rate"])
                submitted, lag = r["transactions"], r["lag_max_ms"]
            else:
                pr = self.node("pgboss-produce", db, str(cfg["pickup_seconds"]),
                               str(cfg["pickup_rate"]))
                submitted, lag = pr["sent"], pr["max_schedule_lag_ms"]
            out, _ = p.communicate("stop\n", timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
        if p.returncode != 0:
            raise RuntimeError(f"{peer}-pickup failed")
        res = json.loads(out.strip().splitlines()[-1])
        if peer == "graphile":
            # commit to start: the add_job transaction's commit, from the mark it wrote
            with self.s.connect(db) as g:
                committed = dict(g.execute(
                    "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8"
                    "  FROM pickup_marks").fetchall())
            latencies = {peer: [(started - committed[mark]) * 1000
                                for mark, started in res["starts"]],
                         peer + "_from_start": res["latencies_ms"]}
        else:
            latencies = {peer: res["latencies_ms"]}
        with self.conn.cursor().copy("COPY bench.peer_latency FROM STDIN") as cp:
            for system, values in latencies.items():
                cp.write("".join(f"{system}\t{run}\t{ms}\n" for ms in values))
        query = "SELECT ms FROM bench.peer_latency WHERE system = %s AND run = %s"
        pct = self._percentiles(query, (peer, run))
        if peer == "graphile":
            self._with_percentiles(pct, query, (peer + "_from_start", run))
        pct.update(submitted=submitted, rate=cfg["pickup_rate"], lag_max_ms=lag)
        if pct["jobs"] != submitted or pct.get("from_start_jobs", submitted) != submitted:
            raise RuntimeError(f"{peer} pickup: {pct['jobs']} of {submitted} jobs ran")
        return pct

    def pickup_listened(self):
        """taskq while a session listens on a job channel: every transition NOTIFYs."""
        with Listener(self.s):
            return self.pickup_taskq()

    def pickup_listened_flush_off(self):
        """... and taskq.flush_after_notify off (executors and submitters)."""
        c = self.conn
        c.execute("ALTER SYSTEM SET taskq.flush_after_notify = off")
        c.execute("SELECT pg_reload_conf()")
        try:
            with Listener(self.s):
                return self.pickup_taskq("-c taskq.flush_after_notify=off")
        finally:
            c.execute("ALTER SYSTEM RESET taskq.flush_after_notify")
            c.execute("SELECT pg_reload_conf()")

    def _restart_server(self, track_commit_timestamp):
        """Latency is measured from each submit's commit, which PostgreSQL records
        only with track_commit_timestamp (a restart); the other scenarios run
        without it."""
        workers = int(self.conn.execute("SHOW taskq.workers").fetchone()[0])
        self.conn.execute(f"ALTER SYSTEM SET track_commit_timestamp = {track_commit_timestamp}")
        self.conn.close()
        self.s.restart()
        self.conn = self.s.connect("bench")
        wait_for(lambda: len(executors(self.conn)) == workers, f"{workers} executors", 120, 0.1)

    def pickup(self):
        self._restart_server("on")
        try:
            self._pickup()
        finally:
            self._restart_server("off")

    def _pickup(self):
        out = {"rate": self.cfg["pickup_rate"], "seconds": self.cfg["pickup_seconds"],
               "track_commit_timestamp": self.conn.execute(
                   "SHOW track_commit_timestamp").fetchone()[0]}
        if self.peers is None:
            with self.s.connect("bench_graphile") as g:
                g.execute("CREATE TABLE IF NOT EXISTS pickup_marks"
                          " (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)")
        systems = [("taskq", lambda run: self.pickup_taskq()),
                   ("taskq_wake_after_flush",
                    lambda run: self.pickup_taskq("-c taskq.wake_before_flush=off")),
                   ("taskq_listened", lambda run: self.pickup_listened()),
                   ("taskq_listened_flush_off", lambda run: self.pickup_listened_flush_off())]
        if self.peers is None:
            systems += [(peer, lambda run, peer=peer: self.pickup_peer(peer, run))
                        for peer in ("graphile", "pgboss")]
        for name, fn in systems:
            runs = [fn(run) for run in self.runs()]
            out[name] = {k: stats([r[k] for r in runs]) for k in runs[0]
                         if k.replace("from_start_", "") in ("p50", "p95", "p99", "max")}
            out[name]["jobs"] = [r["jobs"] for r in runs]
            out[name]["lag_max_ms"] = [r["lag_max_ms"] for r in runs]
            log(f"pickup {name}: p50 {med(out[name]['p50']):.2f} ms, "
                f"p95 {med(out[name]['p95']):.2f} ms, p99 {med(out[name]['p99']):.2f} ms")
        self.r["pickup"] = out

    # 5. churn ------------------------------------------------------------
    def sample(self, label, jobs_done):
        c = self.conn
        c.execute("SELECT pg_stat_force_next_flush()")
        rels = {}
        for name, heap, idx, total, live, dead, vacuums in c.execute(
                "SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid),"
                "       pg_total_relation_size(c.oid), s.n_live_tup, s.n_dead_tup,"
                "       s.autovacuum_count + s.vacuum_count"
                "  FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
                " WHERE s.schemaname = 'taskq'"
                "   AND s.relname IN ('jobs', 'job_logs', 'job_dependencies') ORDER BY 1"):
            rels[name] = {"heap_bytes": heap, "index_bytes": idx, "total_bytes": total,
                          "live_tuples": live, "dead_tuples": dead, "vacuums": vacuums}
        rows = c.execute("SELECT (SELECT count(*) FROM taskq.jobs), "
                         "(SELECT count(*) FROM taskq.job_logs)").fetchone()
        workers = {}
        for pid, kind in c.execute("SELECT pid, kind FROM taskq.workers ORDER BY kind, pid"):
            workers.setdefault(kind, []).append(dict(proc_status(pid), pid=pid))
        return {"label": label, "jobs_done": jobs_done, "relations": rels,
                "rows": {"jobs": rows[0], "job_logs": rows[1]}, "workers": workers}

    def churn(self):
        cfg, c = self.cfg, self.conn
        n = cfg["churn_jobs"]
        reset_taskq(c)
        c.execute("VACUUM taskq.jobs, taskq.job_logs")
        c.execute("ALTER SYSTEM SET taskq.retention = '1s'")
        # autovacuum_naptime stays at its default (1 min): the per-table
        # settings and the launcher's vacuum must keep the tables small
        # without a server-wide change (issue 20)
        c.execute("SELECT pg_reload_conf()")
        samples = [self.sample("start", 0)]
        marks = [n * (i + 1) // cfg["churn_samples"] for i in range(cfg["churn_samples"])]
        doc = jobs_json(1000, "bench_noop", "churn")
        base = counters(c)[1]
        submitted, t0 = 0, time.time()
        max_backlog = 20_000
        try:
            while submitted < n:
                # keep a bounded backlog: the executors, not the submitter, set the pace
                while submitted - (counters(c)[1] - base) > max_backlog:
                    time.sleep(0.02)
                c.execute("SELECT count(*) FROM taskq.submit_many(%s::jsonb)", (doc,))
                submitted += 1000
                if marks and submitted >= marks[0]:
                    marks.pop(0)
                    if marks:
                        samples.append(self.sample(f"{submitted:,} submitted",
                                                   counters(c)[1] - base))
            wait_for(lambda: counters(c)[1] - base >= n, "churn jobs", max(300, n / 100), 0.1)
            elapsed = time.time() - t0
            samples.append(self.sample("all succeeded", n))
            # the launcher deletes finished jobs older than retention in small batches
            try:
                wait_for(lambda: c.execute("SELECT count(*) FROM taskq.jobs").fetchone()[0] < 1000,
                         "the launcher's purge", 300, 0.5)
                purged = True
            except TimeoutError:
                purged = False
            samples.append(self.sample("after purge" if purged else "purge timed out", n))
        finally:
            c.execute("ALTER SYSTEM RESET taskq.retention")
            c.execute("SELECT pg_reload_conf()")
        self.r["churn"] = {"jobs": n, "seconds": elapsed, "jobs_per_s": n / elapsed,
                           "retention": "1s", "autovacuum_naptime": "1min",
                           "max_backlog": max_backlog, "purged": purged,
                           "samples": samples}
        log(f"churn: {n} jobs at {n / elapsed:.0f} jobs/s; purged={purged}")

    # 6. scaling ----------------------------------------------------------
    def scaling(self):
        cfg, c = self.cfg, self.conn
        out = {"workers": {}, "jobs": cfg["scale_jobs"]}
        try:
            for w in cfg["scale_workers"]:
                set_workers(c, w)
                out["workers"][str(w)] = stats([self.e2e_in_database(cfg["scale_jobs"])
                                                for _ in self.runs()])
                log(f"scaling: {w} executors: {med(out['workers'][str(w)]):.0f} jobs/s")
        finally:
            set_workers(c, 2)
        out["chains"] = stats([self.chains(*cfg["chains"]) for _ in self.runs()])
        out["chains_shape"] = {"chains": cfg["chains"][0], "length": cfg["chains"][1]}
        fan = [self.fan_in(cfg["fan_in"]) for _ in self.runs()]
        out["fan_in"] = {"parents": cfg["fan_in"],
                         "jobs_per_s": stats([f["jobs_per_s"] for f in fan]),
                         "child_release_ms": stats([f["child_release_ms"] for f in fan])}
        log(f"deps: chains {med(out['chains']):.0f} jobs/s; fan-in "
            f"{med(out['fan_in']['jobs_per_s']):.0f} jobs/s, child released "
            f"{med(out['fan_in']['child_release_ms']):.1f} ms after the last parent")
        out["backlog"] = self.backlog()
        self.r["scaling"] = out

    def _run_graph(self, specs_batches, queue):
        c = self.conn
        reset_taskq(c)
        c.execute("SELECT taskq.pause(%s)", (queue,))
        n = 0
        for batch in specs_batches:
            c.execute("SELECT count(*) FROM taskq.submit_many(%s::jsonb)", (json.dumps(batch),))
            n += len(batch)
        c.execute("VACUUM ANALYZE taskq.jobs, taskq.job_dependencies")
        checkpoint(c)
        base = counters(c)[1]
        t0 = time.time()
        c.execute("SELECT taskq.resume(%s)", (queue,))
        wait_for(lambda: counters(c)[1] >= base + n, "graph jobs", max(300, n / 20), 0.02)
        return n, t0

    def chains(self, count, length):
        """count chains of length jobs each (job i after job i-1); jobs/s."""
        spec = {"job_type": "bench_noop", "queue": "deps", "payload": {}}
        batches = [[dict(spec, **({"after": [i - 1]} if i else {})) for i in range(length)]
                   for _ in range(count)]
        n, t0 = self._run_graph(batches, "deps")
        return n / (self._finish_time("deps", n) - t0)

    def fan_in(self, parents):
        spec = {"job_type": "bench_noop", "queue": "deps", "payload": {}}
        batch = [spec] * parents + [dict(spec, after=list(range(parents)))]
        n, t0 = self._run_graph([batch], "deps")
        end = self._finish_time("deps", n)
        release = self.conn.execute(
            "SELECT extract(epoch FROM c.started_at - max(p.finished_at)) * 1000"
            "  FROM taskq.job_dependencies d JOIN taskq.jobs p ON p.id = d.depends_on"
            "  JOIN taskq.jobs c ON c.id = d.job_id GROUP BY c.started_at").fetchone()[0]
        return {"jobs_per_s": n / (end - t0), "child_release_ms": float(release)}

    def backlog(self):
        """Claim cost with a backlog of pending jobs that nobody runs."""
        cfg, c = self.cfg, self.conn
        out = {}
        for b in cfg["backlogs"]:
            reset_taskq(c)
            # the backlog: external jobs (no handler) in a queue no worker serves
            t0 = time.monotonic()
            submit_many(c, b, "bench_ext", "backlog")
            build_s = time.monotonic() - t0
            c.execute("VACUUM ANALYZE taskq.jobs")
            res = {"build_jobs_per_s": b / build_s,
                   "executors_idle_cpu_pct": executor_cpu(c, cfg["idle_cpu_seconds"])}
            for key, sql in (
                    ("external_claim_ms",
                     "SELECT count(*) FROM taskq.claim(NULL, 'bench-claimer', 10)"),
                    ("external_claim_other_queue_ms",
                     "SELECT count(*) FROM taskq.claim(ARRAY['other'], 'bench-claimer', 10)"),
                    ("executor_claim_ms",
                     "SELECT count(*) FROM taskq._claim(true, NULL, 'executor/bench', 64,"
                     " NULL, 4, 1024, NULL)")):
                times = []
                for _ in range(cfg["claim_repeats"]):
                    with c.transaction(force_rollback=True):
                        t = time.perf_counter()
                        c.execute(sql).fetchone()
                        times.append((time.perf_counter() - t) * 1000)
                res[key] = stats(times)
            out[str(b)] = res
            log(f"backlog {b}: executors idle CPU {res['executors_idle_cpu_pct']:.0f} %, "
                f"external claim {med(res['external_claim_ms']):.2f} ms, "
                f"claim of another queue {med(res['external_claim_other_queue_ms']):.2f} ms, "
                f"executor claim {med(res['executor_claim_ms']):.2f} ms")
        reset_taskq(c)
        return out

    # peers ---------------------------------------------------------------
    def node(self, cmd, db, *args):
        p = subprocess.run(["node", os.path.join(BENCH, "peers.js"), cmd, *args],
                           env=self.s.env(db), capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"node peers.js {cmd} failed:\n{p.stderr[-3000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Machine, settings, report
# --------------------------------------------------------------------------

def machine():
    info = {"nproc": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}
    with open("/proc/meminfo") as f:
        info["memory_mb"] = int(f.readline().split()[1]) // 1024
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    try:
        info["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                      text=True).stdout.strip()
    except OSError:
        info["node"] = None
    return info


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "sql"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted changes in src/ or sql/" if dirty else "")
    except OSError:
        return None


SERVER_SETTINGS = {
    "shared_preload_libraries": "'taskq'",
    "taskq.database": "'bench'",
    "taskq.workers": 2,
    "max_connections": 300,
    "max_worker_processes": 32,
    "shared_buffers": "'512MB'",
    "synchronous_commit": "on",
    "fsync": "on",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'30min'",
    "listen_addresses": "''",
    "lc_messages": "'C'",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one run")
    ap.add_argument("--no-peers", action="store_true", help="skip graphile-worker and pg-boss")
    ap.add_argument("--peers-unavailable", metavar="WHY", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated sections: submission,end_to_end,pickup,"
                                   "churn,scaling")
    ap.add_argument("--e2e-parts", default="executors,external,raw,peers",
                    help="comma-separated parts of end_to_end to run (default all: "
                         "executors,external,raw,peers; same_writes alone runs raw's "
                         "copy of the executors' writes without the naive queue)")
    ap.add_argument("--out-dir", default=os.path.join(BENCH, "results"),
                    help="where the JSON results go (default bench/results)")
    ap.add_argument("--report", help="where the Markdown report goes (default bench/REPORT.md, "
                                     "or REPORT-quick.md in the results directory with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the server's files (and log)")
    ap.add_argument("--pg-stat-statements", action="store_true",
                    help="also preload pg_stat_statements (track = all) and save its top "
                         "statements (profiling; adds overhead)")
    ap.add_argument("--render", metavar="JSON", help="only render the report of a results file")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        from report import render
        path = args.report or os.path.join(BENCH, "REPORT.md")
        with open(path, "w") as f:
            f.write(render(results))
        log(f"report: {path}")
        return 0

    cfg = QUICK if args.quick else FULL
    peers = ("--no-peers" if args.no_peers else args.peers_unavailable)
    sections = ["submission", "end_to_end", "pickup", "churn", "scaling"]
    if args.only:
        sections = [s for s in sections if s in args.only.split(",")]
    settings = dict(SERVER_SETTINGS)
    if args.pg_stat_statements:
        settings["shared_preload_libraries"] = "'taskq,pg_stat_statements'"
        settings["pg_stat_statements.track"] = "all"

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "command": args.command or "bash bench/run.sh " + " ".join(sys.argv[1:]),
        "config": cfg, "machine": machine(), "taskq_commit": git_rev(),
        "peers_skipped": peers, "errors": {},
    }
    # SIGTERM/SIGHUP end the run through the finally below, which stops the server
    def on_signal(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    log(f"starting a PostgreSQL 15 server ({results['mode']} mode)")
    server = Server(settings)
    failed = False
    try:
        with server.connect("postgres") as c:
            for db in ("bench", "bench_graphile", "bench_pgboss"):
                c.execute(f"CREATE DATABASE {db}")
            results["server"] = {
                "version": c.execute("SELECT version()").fetchone()[0],
                "port": server.port, "socket_dir": server.sock, "configured": settings,
                "settings": {r[0]: (r[1] + (r[2] or "")) for r in c.execute(
                    "SELECT name, setting, unit FROM pg_settings"
                    " WHERE source NOT IN ('default', 'override')"
                    "    OR name IN ('autovacuum', 'wal_level', 'work_mem', 'jit',"
                    "                'max_parallel_workers_per_gather', 'effective_cache_size')"
                    " ORDER BY name")},
            }
        with server.connect("bench") as c:
            with open(os.path.join(BENCH, "sql", "setup.sql")) as f:
                c.execute(f.read())
            if args.pg_stat_statements:
                c.execute("CREATE EXTENSION pg_stat_statements")
            set_workers(c, 2)
        bench = Bench(server, cfg, peers)
        bench.e2e_parts = set(args.e2e_parts.split(","))
        if peers is None:
            results["peers"] = {
                "graphile-worker": bench.node("graphile-setup", "bench_graphile")["version"],
                "pg-boss": bench.node("pgboss-setup", "bench_pgboss")["version"]}
        for section in sections:
            log(f"== {section}")
            try:
                getattr(bench, section)()
            except Exception as e:       # keep the other sections' numbers
                failed = True
                results["errors"][section] = f"{type(e).__name__}: {e}"
                log(f"{section} FAILED: {e}")
                traceback.print_exc()
                print(server.log_tail(), file=sys.stderr)
        results.update(bench.r)
        if args.pg_stat_statements:
            results["pg_stat_statements"] = [dict(zip(
                ("query", "calls", "total_ms", "mean_ms", "rows"), r)) for r in bench.conn.execute(
                    "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 200), calls,"
                    " round(total_exec_time::numeric, 1)::float8,"
                    " round(mean_exec_time::numeric, 4)::float8, rows"
                    " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25")]
    finally:
        results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        results["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        server.stop(keep=args.keep)

    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, f"{stamp}{'-quick' if args.quick else ''}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1, default=float)
    log(f"results: {out}")
    sys.path.insert(0, BENCH)
    from report import render
    report = args.report or (os.path.join(args.out_dir, "REPORT-quick.md") if args.quick
                             else os.path.join(BENCH, "REPORT.md"))
    with open(report, "w") as f:
        f.write(render(results))
    log(f"report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
