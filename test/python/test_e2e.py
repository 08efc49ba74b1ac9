#!/usr/bin/env python3
"""End-to-end test of the reference external worker (clients/python/taskq_worker.py).

Needs a database with taskq whose launcher runs there (it returns expired
leases); connection settings come from the environment (PGDATABASE, ...).

1. Bad input to claim/complete/fail/heartbeat, straight through SQL.
2. The library in this process: results, Permanent, retries, non-JSON results,
   unknown job types, polling without LISTEN; batched claims (prefetch) and
   batched completions (taskq.complete_many), a refused batch recorded job by
   job, buffered successes recorded at stop().
3. 2,000 jobs, 4 worker processes with a 2 s lease; one is killed with SIGKILL
   while it holds jobs: every job succeeds, exactly the killed worker's jobs are
   re-run (attempt 2) after their lease expired, long jobs survive on heartbeats,
   and SIGTERM lets the others finish what they run, then exit 0.

Prints progress; exits non-zero on failure; bounded by TIME_LIMIT seconds.
"""

import os
import sys

import testenv  # noqa: F401  (first: psycopg from the system python3)
import psycopg

import collections
import json
import logging
import random
import select
import signal
import subprocess
import tempfile
import threading
import time

from psycopg import sql

import taskq_worker  # noqa: E402

TIME_LIMIT = 170.0            # seconds for the whole test
N_JOBS = 2000
N_WORKERS = 4
LEASE = 2.0                   # seconds; long jobs sleep longer than this
LONG_SLEEP = 2.5
ECHO = "e2e_echo"             # job types without an in-database handler
LIB_TYPES = ["e2e_ok", "e2e_permanent", "e2e_flaky", "e2e_not_json", "e2e_none", "e2e_unknown",
             "e2e_slow"]

tag = f"{os.getpid()}_{random.randrange(1 << 30):x}"
QUEUE, BAD_QUEUE, LIB_QUEUE, POLL_QUEUE, BATCH_QUEUE, EXIT_QUEUE = (
    f"e2e_{k}_{tag}" for k in ("main", "bad", "lib", "poll", "batch", "exit"))
RUNS = f"taskq_e2e_runs_{tag}"

START = time.monotonic()
failures = []


def say(msg):
    print(f"[{time.monotonic() - START:6.1f}s] {msg}", flush=True)


def check(cond, msg):
    if cond:
        print(f"  ok: {msg}", flush=True)
    else:
        print(f"  FAILED: {msg}", flush=True)
        failures.append(msg)
    return cond


def remaining(limit=None):
    left = START + TIME_LIMIT - time.monotonic()
    if left <= 0:
        raise TimeoutError("test time limit reached")
    return left if limit is None else min(left, limit)


def wait_for(what, cond, timeout, step=0.05):
    """Poll cond() until true; fail the test after timeout seconds."""
    deadline = time.monotonic() + remaining(timeout)
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(step)


def connect():
    return psycopg.connect("", autocommit=True)


def expect_error(conn, query, params, sqlstate, fragment, what):
    try:
        conn.execute(query, params)
    except psycopg.Error as e:
        msg = e.diag.message_primary or str(e)
        check(e.sqlstate == sqlstate and fragment in msg,
              f"{what}: {sqlstate} (got {e.sqlstate} \"{msg}\")")
    else:
        check(False, f"{what}: expected error {sqlstate}, got none")


def one(conn, query, params=()):
    return conn.execute(query, params).fetchone()


# ---------------------------------------------------------------- worker process

def worker_main(queue, runs):
    """A worker process of part 3: records every run in the runs table."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    worker = taskq_worker.Worker("", queues=[queue], name="e2e", concurrency=4,
                                 lease=LEASE, poll_interval=0.5)
    local = threading.local()
    insert = sql.SQL("INSERT INTO {} (job_id, worker, attempt) VALUES (%s, %s, %s)").format(
        sql.Identifier(runs))

    @worker.handler(ECHO)
    def echo(payload, job):
        time.sleep(payload["sleep"])
        if getattr(local, "conn", None) is None:
            local.conn = connect()
        local.conn.execute(insert, (job.id, worker.name, job.attempt))
        return {"n": payload["n"], "worker": worker.name}

    parent = os.getppid()

    def orphan_watch():  # never outlive the test
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(3)

    threading.Thread(target=orphan_watch, daemon=True).start()
    print(worker.name, flush=True)
    worker.run()


# ---------------------------------------------------------------- part 1: SQL

def test_bad_input(conn):
    say("part 1: bad input through SQL")
    claim = "SELECT id FROM taskq.claim(%s::text[], %s, %s, %s::interval)"
    (job,) = one(conn, "SELECT taskq.submit(%s, '{}', queue => %s)", (ECHO, BAD_QUEUE))

    expect_error(conn, claim, ([BAD_QUEUE], "e2e-bad", 0, "1 min"), "22023",
                 "max_jobs must be at least 1", "claim with max_jobs = 0")
    expect_error(conn, claim, ([BAD_QUEUE], "e2e-bad", -5, "1 min"), "22023",
                 "max_jobs must be at least 1", "claim with max_jobs < 0")
    expect_error(conn, claim, ([BAD_QUEUE], "e2e-bad", 1, "0 s"), "22023",
                 "lease must be positive", "claim with a zero lease")
    expect_error(conn, claim, ([BAD_QUEUE], "e2e-bad", 1, "-1 s"), "22023",
                 "lease must be positive", "claim with a negative lease")
    expect_error(conn, claim, ([BAD_QUEUE], "executor/1", 1, "1 min"), "22023",
                 "reserved", "claim as an executor/ name")
    expect_error(conn, claim, ([BAD_QUEUE], " ", 1, "1 min"), "22023",
                 "worker must not be empty", "claim with an empty worker name")
    expect_error(conn, claim, ([BAD_QUEUE], None, 1, "1 min"), "22004",
                 "worker must not be NULL", "claim with a NULL worker name")
    rows = conn.execute(claim, ([f"no_such_queue_{tag}", f"nor_this_{tag}"], "e2e-bad", 10,
                                "1 min")).fetchall()
    check(rows == [], "claim from unknown queues returns nothing")
    check(one(conn, "SELECT status::text FROM taskq.jobs WHERE id = %s", (job,))[0] == "pending",
          "the job of another queue is still pending")

    expect_error(conn, "SELECT taskq.complete(%s, '{}', 'e2e-bad')", (job,), "55000",
                 "is pending, not running", "complete of a pending job")
    expect_error(conn, "SELECT taskq.complete(%s, '{}')", (-1,), "P0002",
                 "does not exist", "complete of a job that does not exist")
    expect_error(conn, "SELECT taskq.fail(%s, 'x', true, 'e2e-bad')", (job,), "55000",
                 "not running", "fail of a pending job")
    expect_error(conn, "SELECT taskq.heartbeat(%s, 'e2e-bad')", (job,), "55000",
                 "not running", "heartbeat of a pending job")

    rows = conn.execute(claim, ([BAD_QUEUE], "e2e-bad", 5, "1 min")).fetchall()
    check(rows == [(job,)], "claim of the job by e2e-bad")
    expect_error(conn, "SELECT taskq.complete(%s, %s::jsonb, 'e2e-bad')", (job, "{not json"),
                 "22P02", "invalid input syntax for type json", "complete with a result that is not JSON")
    expect_error(conn, "SELECT taskq.complete(%s, '{}', 'someone-else')", (job,), "55000",
                 "held by another worker", "complete by another worker")
    expect_error(conn, "SELECT taskq.heartbeat(%s, 'e2e-bad', '-1 s')", (job,), "22023",
                 "extend must be positive", "heartbeat with a negative extension")
    check(one(conn, "SELECT status::text FROM taskq.jobs WHERE id = %s", (job,))[0] == "running",
          "the rejected calls left the job running")
    # The default extension is the lease's length, however many heartbeats came before.
    conn.execute("SELECT taskq.heartbeat(%s, 'e2e-bad')", (job,))
    (left,) = one(conn, "SELECT taskq.heartbeat(%s, 'e2e-bad') - now()", (job,))
    check(left.total_seconds() == 60, f"a heartbeat extends by the lease, 1 min (got {left})")
    conn.execute("SELECT taskq.fail(%s, 'boom', false, 'e2e-bad')", (job,))
    row = one(conn, "SELECT status::text, attempts, last_error FROM taskq.jobs WHERE id = %s", (job,))
    check(row == ("failed", 1, "boom"), f"fail(retryable => false) dead-letters at once {row}")
    expect_error(conn, "SELECT taskq.complete(%s, '{}', 'e2e-bad')", (job,), "55000",
                 "is failed, not running", "complete of a failed job")

    # An expired lease fences the holder, and the launcher returns the job.
    (job2,) = one(conn, "SELECT taskq.submit(%s, '{}', queue => %s, backoff => '0 s')",
                  (ECHO, BAD_QUEUE))
    rows = conn.execute(claim, ([BAD_QUEUE], "e2e-bad-2", 1, "20 ms")).fetchall()
    check(rows == [(job2,)], "claim with a 20 ms lease")
    wait_for("the lease to expire", lambda: one(
        conn, "SELECT lease_expires_at IS NULL OR lease_expires_at < clock_timestamp() "
              "FROM taskq.jobs WHERE id = %s", (job2,))[0], 10)
    expect_error(conn, "SELECT taskq.heartbeat(%s, 'e2e-bad-2')", (job2,), "55000", "",
                 "heartbeat after the lease expired")
    expect_error(conn, "SELECT taskq.complete(%s, '{}', 'e2e-bad-2')", (job2,), "55000", "",
                 "complete after the lease expired")
    wait_for("the launcher to return the expired job", lambda: one(
        conn, "SELECT status <> 'running' FROM taskq.jobs WHERE id = %s", (job2,))[0], 20)
    row = one(conn, "SELECT j.status::text, j.attempts, j.worker, "
                    "  (SELECT count(*) FROM taskq.job_logs l WHERE l.job_id = j.id "
                    "   AND l.error = 'lease of worker e2e-bad-2 expired') "
                    "FROM taskq.jobs j WHERE j.id = %s", (job2,))
    check(row == ("pending", 1, None, 1), f"expired job is pending again, attempt counted {row}")

    # complete_many notifies like complete: one "succeeded" per job.
    ids = [r[0] for r in conn.execute(
        "SELECT taskq.submit(%s, '{}', queue => %s) FROM generate_series(1, 3)", (ECHO, BAD_QUEUE))]
    listener = connect()
    (channel,) = listener.execute("SELECT taskq.channel()").fetchone()
    listener.execute(f'LISTEN "{channel}"')
    got = sorted(r[0] for r in conn.execute(claim, ([BAD_QUEUE], "e2e-bad-3", 10, "1 min")))
    check(set(ids) <= set(got), f"claimed the 3 jobs ({got})")
    (n,) = one(conn, "SELECT taskq.complete_many(%s, %s::jsonb[], 'e2e-bad-3')",
               (got, [json.dumps({"i": i}) for i in range(len(got))]))
    check(n == len(got), f"complete_many completed {n} of {len(got)}")
    seen = set()

    def notified():
        select.select([listener.fileno()], [], [], 0.2)
        listener.pgconn.consume_input()
        while (note := listener.pgconn.notifies()) is not None:
            body = json.loads(note.extra.decode())
            if body["status"] == "succeeded" and body["queue"] == BAD_QUEUE:
                seen.add(body["id"])
        return seen >= set(got)
    wait_for("the succeeded notifications", notified, 10, step=0)
    check(seen == set(got), f"one succeeded notification per job ({sorted(seen)})")
    listener.close()


# ---------------------------------------------------------------- part 2: library

def test_library(conn):
    say("part 2: the library in this process")
    for kwargs, what in (({"concurrency": 0}, "concurrency 0"), ({"lease": 0}, "lease 0"),
                         ({"lease": 3, "heartbeat": 3}, "heartbeat >= lease"),
                         ({"queues": "abc"}, "queues as a string"), ({"queues": []}, "no queues"),
                         ({"poll_interval": -1}, "negative poll interval")):
        try:
            taskq_worker.Worker("", **kwargs)
        except ValueError:
            check(True, f"Worker rejects {what}")
        else:
            check(False, f"Worker rejects {what}")
    a, b = taskq_worker.Worker(""), taskq_worker.Worker("", name="x")
    check(a.name != b.name and f":{os.getpid()}:" in a.name and b.name.startswith("x:"),
          f"worker names are unique per Worker ({a.name}, {b.name})")

    worker = taskq_worker.Worker("", queues=[LIB_QUEUE], concurrency=3, lease=3,
                                 poll_interval=30)  # LISTEN must do the waking
    seen = collections.Counter()

    @worker.handler("e2e_ok")
    def ok(payload, job):
        return {"x": payload["x"], "attempt": job.attempt, "queue": job.queue}

    @worker.handler("e2e_permanent")
    def permanent(payload, job):
        raise taskq_worker.Permanent("bad payload: no x")

    @worker.handler("e2e_flaky")
    def flaky(payload, job):
        seen[job.id] += 1
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {"attempt": job.attempt}

    worker.register("e2e_not_json", lambda payload, job: {"s": {1, 2}})
    worker.register("e2e_none", lambda payload, job: None)
    # runs past its 1 s timeout: the worker fails it and tells the handler
    worker.register("e2e_slow", lambda payload, job: {"noticed": job.lost.wait(remaining(20))})

    thread = threading.Thread(target=worker.run, name="lib-worker", daemon=True)
    thread.start()
    wait_for("the worker to LISTEN", lambda: one(
        conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
              "AND query LIKE 'LISTEN \"taskq\\_work\\_%%'",
        (f"taskq worker {worker.name}"[:63],))[0] > 0, 20)
    ids = {}
    for jt in LIB_TYPES:
        ids[jt] = one(conn, "SELECT taskq.submit(%s, %s, queue => %s, backoff => '0 s', "
                            "max_attempts => %s, timeout => %s::interval)",
                      (jt, json.dumps({"x": 7}), LIB_QUEUE,
                       1 if jt in ("e2e_unknown", "e2e_slow") else 3,
                       "1 s" if jt == "e2e_slow" else None))[0]
    done = one(conn, "SELECT taskq.wait(%s, %s::interval)",
               (list(ids.values()), f"{remaining(30)} s"))[0]
    check(done, "the library worker finished every job (woken by NOTIFY, not polling)")

    # a job of a paused queue: the worker hears "pending", claims nothing and
    # sleeps for its 30 s poll; resume must wake it
    conn.execute("SELECT taskq.pause(%s)", (LIB_QUEUE,))
    held = one(conn, "SELECT taskq.submit('e2e_ok', '{\"x\": 8}', queue => %s)", (LIB_QUEUE,))[0]
    time.sleep(1)
    check(one(conn, "SELECT status::text FROM taskq.jobs WHERE id = %s", (held,))[0] == "pending",
          "a job of a paused queue waits")
    conn.execute("SELECT taskq.resume(%s)", (LIB_QUEUE,))
    check(one(conn, "SELECT taskq.wait(%s, '10 s')", ([held],))[0],
          "resume wakes a listening worker (NOTIFY 'resumed'; its poll is 30 s)")
    worker.stop()
    thread.join(remaining(20))
    check(not thread.is_alive(), "stop() ends run()")

    got = {jt: one(conn, "SELECT status::text, attempts, result, last_error FROM taskq.jobs "
                         "WHERE id = %s", (i,)) for jt, i in ids.items()}
    check(got["e2e_ok"][:3] == ("succeeded", 1, {"x": 7, "attempt": 1, "queue": LIB_QUEUE}),
          f"a result is stored {got['e2e_ok'][:3]}")
    check(got["e2e_permanent"][:2] == ("failed", 1) and got["e2e_permanent"][3] == "bad payload: no x",
          f"Permanent fails without retry {got['e2e_permanent']}")
    check(got["e2e_flaky"][:3] == ("succeeded", 2, {"attempt": 2}) and seen[ids["e2e_flaky"]] == 2,
          f"an exception is retried {got['e2e_flaky'][:3]}")
    check(got["e2e_flaky"][3] is not None and "RuntimeError: first attempt fails" in got["e2e_flaky"][3],
          "the failed attempt's error and traceback are kept")
    check(got["e2e_not_json"][:2] == ("failed", 1) and "not JSON" in (got["e2e_not_json"][3] or ""),
          f"a result that is not JSON fails the job for good {got['e2e_not_json']}")
    check(got["e2e_none"][:3] == ("succeeded", 1, None), f"a None result is NULL {got['e2e_none'][:3]}")
    check(got["e2e_unknown"][0] == "failed" and "no handler" in (got["e2e_unknown"][3] or ""),
          f"a job type without a handler fails {got['e2e_unknown']}")
    check(got["e2e_slow"][:3] == ("failed", 1, None) and "timed out after 1 s" in (got["e2e_slow"][3] or ""),
          f"a job past its timeout is failed and its late result discarded {got['e2e_slow']}")

    # Polling only (as behind a transaction pooler): no LISTEN at all.
    poller = taskq_worker.Worker("", queues=[POLL_QUEUE], concurrency=2, lease=10,
                                 poll_interval=0.2, listen=False)
    poller.register("e2e_ok", ok)
    ids = [r[0] for r in conn.execute(
        "SELECT taskq.submit_many(jsonb_agg(jsonb_build_object('job_type', 'e2e_ok', "
        "'queue', %s::text, 'payload', jsonb_build_object('x', i)))) "
        "FROM generate_series(1, 10) i", (POLL_QUEUE,))]
    thread = threading.Thread(target=poller.run, name="poll-worker", daemon=True)
    thread.start()
    done = one(conn, "SELECT taskq.wait(%s, %s::interval)", (ids, f"{remaining(30)} s"))[0]
    listens = one(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                        "AND query ILIKE 'LISTEN%%'", (f"taskq worker {poller.name}"[:63],))[0]
    poller.stop()
    thread.join(remaining(20))
    n = one(conn, "SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) AND status = 'succeeded'",
            (ids,))[0]
    check(done and n == 10 and listens == 0 and not thread.is_alive(),
          f"listen=False works by polling ({n}/10 succeeded, {listens} LISTEN)")

    # A handler that calls sys.exit(): its job fails, its (only) thread goes on.
    exiter = taskq_worker.Worker("", queues=[EXIT_QUEUE], concurrency=1, lease=10,
                                 poll_interval=0.2)
    exiter.register("e2e_exit", lambda payload, job: sys.exit(3))
    exiter.register("e2e_ok", ok)
    gone = one(conn, "SELECT taskq.submit('e2e_exit', queue => %s, max_attempts => 1)",
               (EXIT_QUEUE,))[0]
    after = one(conn, "SELECT taskq.submit('e2e_ok', '{\"x\": 9}', queue => %s)",
                (EXIT_QUEUE,))[0]
    thread = threading.Thread(target=exiter.run, name="exit-worker", daemon=True)
    thread.start()
    done = one(conn, "SELECT taskq.wait(%s, %s::interval)", ([gone, after], f"{remaining(30)} s"))[0]
    exiter.stop()
    thread.join(remaining(20))
    got = {i: one(conn, "SELECT status::text, last_error FROM taskq.jobs WHERE id = %s", (i,))
           for i in (gone, after)}
    check(done and got[gone][0] == "failed" and "SystemExit" in (got[gone][1] or ""),
          f"sys.exit() in a handler fails its job ({got[gone][0]})")
    check(got[after][0] == "succeeded" and not thread.is_alive(),
          f"and the worker's only job thread runs the next job ({got[after][0]})")


def test_batching(conn):
    say("part 2b: batched claims and completions")
    n_jobs, batch = 53, 10
    ids = [r[0] for r in conn.execute(
        "SELECT taskq.submit_many(jsonb_agg(jsonb_build_object('job_type', 'e2e_ok', "
        "'queue', %s::text, 'payload', jsonb_build_object('x', i)) ORDER BY i)) "
        "FROM generate_series(1, %s) i", (BATCH_QUEUE, n_jobs))]
    # successes wait for a full batch of 10 (the delay is longer than the test)
    worker = taskq_worker.Worker("", queues=[BATCH_QUEUE], concurrency=4, prefetch=20,
                                 lease=600, complete_batch=batch, complete_delay=150)
    handled = []
    lock = threading.Lock()

    @worker.handler("e2e_ok")
    def ok(payload, job):
        with lock:
            handled.append(job.id)
        return {"x": payload["x"]}

    thread = threading.Thread(target=worker.run, name="batch-worker", daemon=True)
    thread.start()
    wait_for("every handler to run", lambda: len(handled) == n_jobs, 60)
    state = lambda: counts(conn, ids)  # noqa: E731
    wait_for("5 full batches to be recorded", lambda: state().get("succeeded") == 50, 30)
    c = state()
    check(c == {"succeeded": 50, "running": 3},
          f"50 successes recorded in full batches, 3 buffered ({c})")
    claims = sorted((r[0] for r in conn.execute(
        "SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) AND started_at IS NOT NULL "
        "GROUP BY started_at", (ids,))), reverse=True)  # (one claim, one started_at)
    check(claims[0] == 24, f"claims take concurrency + prefetch = 24 jobs at once ({claims})")
    # One of the buffered successes is cancelled meanwhile: the batch is
    # refused as a whole and recorded job by job at stop().
    (lost,) = one(conn, "SELECT min(id) FROM taskq.jobs WHERE id = ANY (%s) AND status = 'running'",
                  (ids,))
    conn.execute("SELECT taskq.cancel(%s)", (lost,))
    worker.stop()
    thread.join(remaining(20))
    check(not thread.is_alive(), "stop() ends run()")
    c = state()
    check(c == {"succeeded": n_jobs - 1, "cancelled": 1},
          f"stop() records the buffered successes, not the cancelled job ({c})")
    groups = sorted(r[0] for r in conn.execute(
        "SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) AND status = 'succeeded' "
        "GROUP BY xmin::text", (ids,)))
    check(groups == [1, 1] + [batch] * 5,
          f"one transaction per batch of {batch}, then one per job after the refusal ({groups})")
    bad = one(conn, "SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) AND status = 'succeeded' "
                    "AND (result->>'x' IS DISTINCT FROM payload->>'x' OR result - 'x' <> '{}')", (ids,))[0]
    check(bad == 0, f"every result belongs to its job ({bad} do not)")


# ---------------------------------------------------------------- part 3: e2e

def start_worker(logdir, i):
    log = open(os.path.join(logdir, f"worker{i}.log"), "w")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker", QUEUE, RUNS],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], remaining(30))
    name = proc.stdout.readline().strip() if ready else ""
    if not name:
        raise RuntimeError(f"worker {i} did not start (see {log.name})")
    return proc, name


def counts(conn, ids):
    return dict(conn.execute("SELECT status::text, count(*) FROM taskq.jobs WHERE id = ANY (%s) "
                             "GROUP BY 1", (ids,)).fetchall())


def test_e2e(conn, logdir, procs):
    say(f"part 3: {N_JOBS} jobs, {N_WORKERS} worker processes, lease {LEASE}s")
    names = []
    for i in range(N_WORKERS):
        proc, name = start_worker(logdir, i)
        procs.append(proc)
        names.append(name)
    victim, victim_proc = names[0], procs[0]
    say(f"workers: {', '.join(names)}")

    specs = [{"job_type": ECHO, "queue": QUEUE,
              "payload": {"n": i, "sleep": LONG_SLEEP if i % 100 == 0 else random.random() / 100}}
             for i in range(N_JOBS)]
    ids = [r[0] for r in conn.execute("SELECT taskq.submit_many(%s::jsonb)", (json.dumps(specs),))]
    check(len(ids) == N_JOBS, f"submitted {len(ids)} jobs")

    def victim_busy():
        c = counts(conn, ids)
        held = one(conn, "SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) "
                         "AND status = 'running' AND worker = %s", (ids, victim))[0]
        return c.get("succeeded", 0) >= N_JOBS // 6 and held > 0

    wait_for("the victim to hold jobs", victim_busy, 60, step=0.02)
    victim_proc.send_signal(signal.SIGKILL)
    victim_proc.wait(remaining(10))
    # a statement its sessions were running when it died still commits: what
    # it held is what is left once those sessions are gone
    wait_for("the killed worker's sessions to end", lambda: one(
        conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        (f"taskq worker {victim}"[:63],))[0] == 0, 30)
    held = {r[0] for r in conn.execute("SELECT id FROM taskq.jobs WHERE id = ANY (%s) AND "
                                       "status = 'running' AND worker = %s", (ids, victim))}
    say(f"killed {victim} (SIGKILL) holding {len(held)} job(s): {sorted(held)}")
    check(len(held) > 0, "the killed worker held jobs")

    while True:
        finished = one(conn, "SELECT taskq.wait(%s, %s::interval)", (ids, f"{remaining(3)} s"))[0]
        c = counts(conn, ids)
        say(f"progress: {json.dumps(c, sort_keys=True)}")
        if finished:
            break

    # The survivors stop gracefully: each finishes the job it runs, then exits 0.
    last = [r[0] for r in conn.execute(
        "SELECT taskq.submit(%s, jsonb_build_object('n', -i, 'sleep', %s::float8), queue => %s) "
        "FROM generate_series(1, 3) i", (ECHO, LONG_SLEEP, QUEUE))]
    holders = wait_for("the survivors to run the last jobs", lambda: dict(conn.execute(
        "SELECT id, worker FROM taskq.jobs WHERE id = ANY (%s) AND status = 'running'",
        (last,)).fetchall()) if counts(conn, last) == {"running": 3} else None, 30)
    for proc in procs[1:]:
        proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs[1:]:
        try:
            codes.append(proc.wait(remaining(30)))
        except subprocess.TimeoutExpired:
            codes.append(None)
    check(codes == [0] * (N_WORKERS - 1), f"SIGTERM: the survivors exit 0 ({codes})")
    rows = conn.execute("SELECT id, status::text, attempts, result->>'worker' FROM taskq.jobs "
                        "WHERE id = ANY (%s)", (last,)).fetchall()
    check(all(r[1:] == ("succeeded", 1, holders[r[0]]) for r in rows),
          "SIGTERM: the jobs they were running were finished by them")

    say("checking the 2,000 jobs")
    c = counts(conn, ids)
    check(c == {"succeeded": N_JOBS}, f"{N_JOBS} succeeded, 0 failed, 0 lost ({c})")
    bad = one(conn, "SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) AND "
                    "(result->>'n')::int <> (payload->>'n')::int", (ids,))[0]
    check(bad == 0, f"every result belongs to its job ({bad} do not)")
    jobs = {r[0]: r[1:] for r in conn.execute(
        "SELECT id, attempts, result->>'worker' FROM taskq.jobs WHERE id = ANY (%s)", (ids,))}
    # a job the victim held: its failed attempt's log row names the victim
    claimed_by_victim = {r[0] for r in conn.execute(
        "SELECT job_id FROM taskq.job_logs WHERE job_id = ANY (%s) AND details->>'worker' = %s",
        (ids, victim))} | {i for i, j in jobs.items() if j[1] == victim}
    orphaned = {i for i in claimed_by_victim if jobs[i][1] != victim}
    expired = collections.Counter(r[0] for r in conn.execute(
        "SELECT job_id FROM taskq.job_logs WHERE job_id = ANY (%s) AND error = %s",
        (ids, f"lease of worker {victim} expired")))
    others = conn.execute("SELECT job_id, error FROM taskq.job_logs WHERE job_id = ANY (%s) "
                          "AND error LIKE 'lease of worker %%' AND error <> %s",
                          (ids, f"lease of worker {victim} expired")).fetchall()
    check(held <= orphaned, "the jobs held at the kill were not completed by the killed worker")
    check(set(expired) == orphaned and all(v == 1 for v in expired.values()),
          f"'lease of worker {victim} expired' logged once for each of its {len(orphaned)} "
          f"unfinished jobs ({len(expired)} logged)")
    check(others == [], f"no other worker lost a lease ({others[:5]})")
    check(all(jobs[i][0] == 2 and jobs[i][1] in names[1:] for i in orphaned),
          "the killed worker's jobs were re-run by others, attempts = 2")
    check(all(a == 1 for i, (a, w) in jobs.items() if i not in orphaned),
          "every other job ran once, attempts = 1")
    long_ok = [i for i, n in zip(ids, range(N_JOBS)) if n % 100 == 0 and i not in orphaned]
    check(len(long_ok) >= 10 and all(jobs[i][0] == 1 for i in long_ok),
          f"{len(long_ok)} jobs ran {LONG_SLEEP}s > lease {LEASE}s on heartbeats, once each")
    by_worker = collections.Counter(w for a, w in jobs.values())
    check(set(by_worker) <= set(names) and all(by_worker[n] > 0 for n in names),
          f"all workers took part {dict(by_worker)}")

    runs = conn.execute(sql.SQL("SELECT job_id, worker, attempt FROM {} WHERE job_id = ANY (%s)")
                        .format(sql.Identifier(RUNS)), (ids,)).fetchall()
    final = collections.Counter((j, w, a) for j, w, a in runs if jobs[j] == (a, w))
    check(len(final) == N_JOBS and all(v == 1 for v in final.values()),
          "each job's handler ran exactly once in the attempt that completed it")
    extra = [(j, w, a) for j, w, a in runs if jobs[j] != (a, w)]
    check(all(w == victim and j in orphaned and a == 1 for j, w, a in extra),
          f"the only other runs are the killed worker's unfinished ones ({len(extra)})")


# ---------------------------------------------------------------- main

def cleanup(conn):
    queues = [QUEUE, BAD_QUEUE, LIB_QUEUE, POLL_QUEUE, BATCH_QUEUE, EXIT_QUEUE]
    conn.execute("DELETE FROM taskq.job_logs WHERE job_id IN "
                 "(SELECT id FROM taskq.jobs WHERE queue = ANY (%s))", (queues,))
    conn.execute("DELETE FROM taskq.jobs WHERE queue = ANY (%s)", (queues,))
    conn.execute("DELETE FROM taskq.queues WHERE name = ANY (%s)", (queues,))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(RUNS)))


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    logging.basicConfig(level=logging.WARNING, format="  worker log: %(levelname)s %(message)s")
    conn = connect()
    handled = one(conn, "SELECT count(*) FROM taskq.handlers WHERE job_type = ANY (%s)",
                  ([ECHO] + LIB_TYPES,))[0]
    if handled:
        sys.exit("the e2e job types must not have in-database handlers")
    conn.execute(sql.SQL("CREATE TABLE {} (job_id bigint NOT NULL, worker text NOT NULL, "
                         "attempt integer NOT NULL)").format(sql.Identifier(RUNS)))
    conn.execute("SELECT taskq.configure_queue(%s, default_max_attempts => 3)", (QUEUE,))
    procs = []
    logdir = tempfile.mkdtemp(prefix="taskq-e2e-")
    try:
        test_bad_input(conn)
        test_library(conn)
        test_batching(conn)
        test_e2e(conn, logdir, procs)
    except Exception as e:
        failures.append(f"{type(e).__name__}: {e}")
        print(f"  FAILED: {type(e).__name__}: {e}", flush=True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if failures:
            for name in sorted(os.listdir(logdir)):
                with open(os.path.join(logdir, name)) as f:
                    tail = f.readlines()[-15:]
                print(f"--- {name} (last lines)\n{''.join(tail)}", end="", flush=True)
        cleanup(conn)
        conn.close()
    say(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        main()
