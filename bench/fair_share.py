#!/usr/bin/env python3
"""Tenant fair share and the cost of keys and tenants in the claim (issue 23).

Two measurements, against the taskq of --dsn (point it at a private or
throwaway install, never a production server):

pickup   Tenant B's pickup latency (claimed_at - submitted, p50/p99) while
         --drainers external workers drain queue bench_fair as fast as they
         can (claim --batch, complete_many), once with tenant A's backlog of
         --backlog jobs submitted first, once without.  B submits one job
         every --probe-ms until A's backlog is gone (or --seconds pass).

drain    The executors' drain of --drain-jobs no-op in-database jobs without
         any limit or tenant, alternated --rounds times between --dsn and
         --other-dsn (the same server config built from another commit,
         e.g. main): jobs/s of each run and the ratio of the medians.

claim    The time of one taskq.claim(max_jobs => --batch) with --jobs pending
         jobs spread over 1, 1,000 and 100,000 distinct tenants, and over as
         many concurrency keys with key_concurrency 1: once with nothing
         running, once while the previous claim's jobs still run (their
         keys full).

    /usr/bin/python3 bench/fair_share.py --dsn 'host=/tmp/pg port=5432 dbname=bench' pickup claim

Needs psycopg 3 and a superuser connection (it deletes its queues' jobs).
Prints one line per result and, with --json FILE, writes them there.
"""
import argparse
import json
import statistics
import threading
import time

import psycopg

QUEUE = "bench_fair"


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def reset(c, queue):
    c.execute("DELETE FROM taskq.jobs WHERE queue = %s", (queue,))
    c.execute("DELETE FROM taskq.queues WHERE name = %s", (queue,))
    c.execute("VACUUM taskq.jobs")


def submit(c, queue, n, field=None, distinct=1, chunk=10000):
    """n jobs of queue; field (tenant or concurrency_key) cycling over distinct values"""
    done = 0
    while done < n:
        k = min(chunk, n - done)
        extra = ("" if field is None else
                 f", '{field}', 'v' || ((g + {done}) %% {distinct})")
        c.execute(f"""SELECT count(*) FROM taskq.submit_many(
                          (SELECT jsonb_agg(jsonb_build_object('job_type', 'bench_fair',
                                                               'queue', %s::text{extra}) ORDER BY g)
                             FROM generate_series(1, %s) g))""", (queue, k))
        done += k


def pickup(a, with_backlog):
    with psycopg.connect(a.dsn, autocommit=True) as c:
        reset(c, QUEUE)
        if with_backlog:
            submit(c, QUEUE, a.backlog, "tenant", 1)   # all of tenant A ('v0')
        c.execute("CHECKPOINT")
    stop = threading.Event()
    drained = [0] * a.drainers
    probes = []                                     # (id, submitted monotonic)

    def drainer(i):
        with psycopg.connect(a.dsn, autocommit=True) as c:
            while not stop.is_set():
                ids = [r[0] for r in c.execute(
                    "SELECT id FROM taskq.claim(ARRAY[%s], %s, %s, '1 hour')",
                    (QUEUE, f"fair-{i}", a.batch))]
                if ids:
                    c.execute("SELECT taskq.complete_many(%s::bigint[], NULL, %s)", (ids, f"fair-{i}"))
                    drained[i] += len(ids)
                else:
                    time.sleep(0.002)

    threads = [threading.Thread(target=drainer, args=(i,)) for i in range(a.drainers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    with psycopg.connect(a.dsn, autocommit=True) as c:
        while time.monotonic() - t0 < a.seconds:
            probes.append(c.execute("SELECT taskq.submit('bench_fair', queue => %s, tenant => 'B')",
                                    (QUEUE,)).fetchone()[0])
            time.sleep(a.probe_ms / 1000)
            if with_backlog:
                left = c.execute("SELECT count(*) FROM taskq.jobs WHERE queue = %s AND status = 'pending'"
                                 " AND tenant = 'v0'", (QUEUE,)).fetchone()[0] if len(probes) % 20 == 0 else 1
                if left == 0:
                    break
            elif len(probes) >= a.probes_without:
                break
        # every probe picked up: bounded wait
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and c.execute(
                "SELECT count(*) FROM taskq.jobs WHERE id = ANY (%s) AND started_at IS NULL",
                (probes,)).fetchone()[0] > 0:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        rows = c.execute("""SELECT extract(epoch FROM started_at - created_at) * 1000
                              FROM taskq.jobs WHERE id = ANY (%s) AND started_at IS NOT NULL""",
                         (probes,)).fetchall()
        lat = [float(r[0]) for r in rows]
        reset(c, QUEUE)
    return {"scenario": "pickup", "a_backlog": a.backlog if with_backlog else 0,
            "drainers": a.drainers, "batch": a.batch, "probes": len(probes),
            "picked_up": len(lat), "b_p50_ms": pct(lat, 50), "b_p99_ms": pct(lat, 99),
            "b_max_ms": max(lat) if lat else None,
            "drained_jobs_per_s": sum(drained) / elapsed if elapsed > 0 else None}


def claim_cost(a, field, distinct):
    with psycopg.connect(a.dsn, autocommit=True) as c:
        reset(c, QUEUE)
        if field == "concurrency_key":
            c.execute("SELECT taskq.configure_queue(%s, key_concurrency => 1)", (QUEUE,))
        submit(c, QUEUE, a.jobs, field, distinct)
        c.execute("VACUUM ANALYZE taskq.jobs")
        idle, busy = [], []
        held = []
        for i in range(a.claims):
            t = time.perf_counter()
            ids = [r[0] for r in c.execute("SELECT id FROM taskq.claim(ARRAY[%s], 'cost', %s, '1 hour')",
                                           (QUEUE, a.batch))]
            ms = (time.perf_counter() - t) * 1000
            (busy if held else idle).append(ms)
            # alternate: claim with nothing running, then with that claim's jobs running
            if held:
                c.execute("SELECT taskq.complete_many(%s::bigint[], NULL, 'cost')", (held + ids,))
                held = []
            else:
                held = ids
        if held:
            c.execute("SELECT taskq.complete_many(%s::bigint[], NULL, 'cost')", (held,))
        reset(c, QUEUE)
    return {"scenario": "claim", "field": field, "distinct": distinct, "jobs": a.jobs, "batch": a.batch,
            "idle_p50_ms": statistics.median(idle) if idle else None, "idle_p99_ms": pct(idle, 99),
            "busy_p50_ms": statistics.median(busy) if busy else None, "busy_p99_ms": pct(busy, 99)}


DRAIN_QUEUE = "bench_fair_drain"


def drain_setup(c):
    c.execute("CREATE SCHEMA IF NOT EXISTS bench_fair")
    c.execute("CREATE OR REPLACE FUNCTION bench_fair.noop(payload jsonb) RETURNS void LANGUAGE sql AS ''")
    c.execute("SELECT taskq.register_handler('bench_fair_noop', 'bench_fair.noop(jsonb)')")


def drain_once(dsn, n):
    """n no-op jobs queued paused, then drained by the executors; jobs/s"""
    with psycopg.connect(dsn, autocommit=True) as c:
        reset(c, DRAIN_QUEUE)
        c.execute("SELECT taskq.pause(%s)", (DRAIN_QUEUE,))
        done = 0
        while done < n:
            k = min(10000, n - done)
            c.execute("""SELECT count(*) FROM taskq.submit_many(
                             (SELECT jsonb_agg(jsonb_build_object('job_type', 'bench_fair_noop',
                                                                  'queue', %s::text))
                                FROM generate_series(1, %s)))""", (DRAIN_QUEUE, k))
            done += k
        c.execute("VACUUM ANALYZE taskq.jobs")
        c.execute("CHECKPOINT")
        t0 = c.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
        c.execute("SELECT taskq.resume(%s)", (DRAIN_QUEUE,))
        deadline = time.monotonic() + max(120, n / 500)
        while True:
            ok, last = c.execute("""SELECT count(*) FILTER (WHERE status = 'succeeded'),
                                           extract(epoch FROM max(finished_at))::float8
                                      FROM taskq.jobs WHERE queue = %s""", (DRAIN_QUEUE,)).fetchone()
            if ok == n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {ok} of {n} jobs drained")
            time.sleep(0.05)
        reset(c, DRAIN_QUEUE)
    return n / (last - t0)


def drain(a):
    for dsn in (a.dsn, a.other_dsn):
        with psycopg.connect(dsn, autocommit=True) as c:
            drain_setup(c)
    this, other = [], []
    for r in range(a.rounds):
        # alternate which goes first, so that neither always runs second
        order = [(a.dsn, this), (a.other_dsn, other)]
        for dsn, runs in (order if r % 2 == 0 else order[::-1]):
            runs.append(drain_once(dsn, a.drain_jobs))
            print(json.dumps({"round": r, "which": "this" if runs is this else "other",
                              "jobs_per_s": round(runs[-1])}), flush=True)
    return {"scenario": "drain", "jobs": a.drain_jobs, "rounds": a.rounds,
            "this_jobs_per_s": [round(x) for x in this], "other_jobs_per_s": [round(x) for x in other],
            "ratio_of_medians": statistics.median(this) / statistics.median(other)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="+", choices=["pickup", "claim", "drain"])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--backlog", type=int, default=100000, help="tenant A's backlog")
    ap.add_argument("--drainers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--probe-ms", type=float, default=50)
    ap.add_argument("--probes-without", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--jobs", type=int, default=100000, help="pending jobs for the claim cost")
    ap.add_argument("--claims", type=int, default=60)
    ap.add_argument("--distinct", default="1,1000,100000")
    ap.add_argument("--fields", default="tenant,concurrency_key", help="claim: what varies")
    ap.add_argument("--other-dsn", help="drain: the install to compare with")
    ap.add_argument("--drain-jobs", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    results = []
    if "pickup" in a.what:
        for with_backlog in (False, True):
            results.append(pickup(a, with_backlog))
            print(json.dumps(results[-1]), flush=True)
    if "claim" in a.what:
        for field in a.fields.split(","):
            for d in (int(x) for x in a.distinct.split(",")):
                results.append(claim_cost(a, field, d))
                print(json.dumps(results[-1]), flush=True)
    if "drain" in a.what:
        if not a.other_dsn:
            ap.error("drain needs --other-dsn")
        results.append(drain(a))
        print(json.dumps(results[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
