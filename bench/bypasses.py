#!/usr/bin/env python3
"""Issue 20: what taskq's bypasses of PostgreSQL buy (job_rows.c, commit_flush.c,
listeners.c), each against the plain PostgreSQL way, in one server, variants
alternated run by run (bench/README.md, "Issue 20: what the bypasses buy today").

Needs a taskq built with the throwaway measurement switches described there
(taskq.bench_job_rows, taskq.bench_count_listeners); the other variants use
the real GUCs taskq.flush_after_notify and taskq.wake_before_flush.

    PGBIN=/opt/pg-x/lib/postgresql/15/bin python3 bench/bypasses.py [--runs 3] [--seconds 5]
    python3 bench/bypasses.py --render results/bypasses-*.json > REPORT-bypasses.md
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

B.PGBIN = os.environ.get("PGBIN", B.PGBIN)

ROWS_SQL = "-c taskq.bench_job_rows=off"
NOTIFY_ALWAYS = "-c taskq.bench_count_listeners=off"
FLUSH_OFF = "-c taskq.flush_after_notify=off"
WAKE_AFTER = "-c taskq.wake_before_flush=off"

# single submits without a listener: (name, pgbench script, PGOPTIONS)
SUBMIT = [("main", "taskq_submit.sql", None),
          ("rows_sql", "taskq_submit.sql", ROWS_SQL),
          ("notify_always", "taskq_submit.sql", NOTIFY_ALWAYS),
          ("notify_always_flush_off", "taskq_submit.sql", f"{NOTIFY_ALWAYS} {FLUSH_OFF}"),
          ("bare_insert", "taskq_jobs_insert.sql", None),
          ("raw_insert", "raw_insert.sql", None)]
# single submits while a session listens
LISTENED = [("listened", None), ("listened_flush_off", FLUSH_OFF)]
# submit_many of 1,000: (name, SET of the session)
BATCH = [("main", {}), ("rows_sql", {"taskq.bench_job_rows": "off"}),
         ("notify_always", {"taskq.bench_count_listeners": "off"}), ("bare_insert", "bare"),
         ("lean_sql", "lean"), ("graphile_add_jobs", None)]
# the ceiling of any SQL path: one INSERT into taskq.jobs with the values spelled out
BARE_BATCH = """INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status,
                     payload, max_attempts, backoff, cpu_units, memory_mb, run_at, owner, in_database)
                 SELECT e->>'queue', e->>'job_type', 'normal', 'normal', 'pending', e->'payload',
                        3, '1 second', 1, 0, now(), 'postgres', false
                   FROM jsonb_array_elements(%s::jsonb) e
                 RETURNING id"""
# a lean set-wise INSERT with the lookups submit_many's SQL path makes
# (queue defaults, handler), ids in input order; no publishing, no job type lock
LEAN_BATCH = """WITH spec AS (
                    SELECT e, ord, coalesce(e->>'queue', 'default') AS queue,
                           coalesce((e->>'priority')::taskq.priority, 'normal') AS priority
                      FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS x(e, ord))
                INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority, status,
                    payload, max_attempts, backoff, timeout, cpu_units, memory_mb, run_at, owner,
                    in_database)
                SELECT spec.queue, e->>'job_type', spec.priority, spec.priority, 'pending',
                       coalesce(e->'payload', '{}'), coalesce(q.default_max_attempts, 3),
                       '1 second', q.default_timeout, 1, 0, now(), 'postgres',
                       h.job_type IS NOT NULL
                  FROM spec
                  LEFT JOIN taskq.queues q ON q.name = spec.queue
                  LEFT JOIN taskq.handlers h ON h.job_type = spec.e->>'job_type'
                 ORDER BY spec.ord
                RETURNING id"""
# pickup at 500 jobs/s: (name, PGOPTIONS of the submitters, ALTER SYSTEM for everyone)
PICKUP = [("main", None, {}), ("wake_after_flush", WAKE_AFTER, {}),
          ("rows_sql", ROWS_SQL, {}),
          ("notify_always", NOTIFY_ALWAYS, {"taskq.bench_count_listeners": "off"})]
# 20,000 submits in one statement, no commit per job: the CPU a submit costs
LOOP = [("main", {}), ("rows_sql", {"taskq.bench_job_rows": "off"})]
LOOP_SQL = ("SELECT count(taskq.submit('bench_submit', %s::jsonb, queue => 'submit'))"
            "  FROM generate_series(1, 20000)")
# the same in PL/pgSQL (each statement a kept plan, one executor per row),
# beside a lean kept-plan INSERT of the row with its values spelled out:
# no submit around it, so a bound on what any SQL path could cost
PAYLOAD_SQL = "'{\"user_id\": 42, \"action\": \"send_welcome_email\", \"locale\": \"en\"}'"
PLPGSQL_LOOP = [
    ("main", {}, f"PERFORM taskq.submit('bench_submit', {PAYLOAD_SQL}::jsonb, queue => 'submit')"),
    ("rows_sql", {"taskq.bench_job_rows": "off"},
     f"PERFORM taskq.submit('bench_submit', {PAYLOAD_SQL}::jsonb, queue => 'submit')"),
    ("bare_insert", {}, "INSERT INTO taskq.jobs (queue, job_type, priority, effective_priority,"
     " status, payload, max_attempts, backoff, cpu_units, memory_mb, run_at, owner, in_database)"
     f" VALUES ('submit', 'bench_submit', 'normal', 'normal', 'pending', {PAYLOAD_SQL}, 3,"
     " '1 second', 1, 0, now(), 'postgres', false) RETURNING id INTO x")]
# executors' drain: (name, ALTER SYSTEM)
DRAIN = [("main", {}), ("notify_always", {"taskq.bench_count_listeners": "off"})]


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def rotated(variants, run):
    k = run % len(variants)
    return variants[k:] + variants[:k]


class Bypasses(B.Bench):
    def measure(self, out, key, name, fn):
        before = loadavg()
        v = fn()
        out.setdefault(key, {}).setdefault(name, []).append(v)
        out.setdefault("load", {}).setdefault(key, []).extend([before, loadavg()])
        B.log(f"{key} {name}: {v if not isinstance(v, dict) else {k: round(x, 2) for k, x in v.items() if isinstance(x, float)}}")

    def submit(self, out, clients, run):
        c = self.conn
        key = f"submit_{clients}"
        for name, script, opts in rotated(SUBMIT, run):
            B.reset_taskq(c)
            c.execute("TRUNCATE bench.raw_jobs")
            B.checkpoint(c)
            self.measure(out, key, name, lambda: B.pgbench(
                self.s, "bench", script, clients, seconds=self.cfg["submit_seconds"],
                options=opts)["tps"])
        key = f"listened_{clients}"
        with B.Listener(self.s):
            for name, opts in rotated(LISTENED, run):
                B.reset_taskq(c)
                B.checkpoint(c)
                self.measure(out, key, name, lambda: B.pgbench(
                    self.s, "bench", "taskq_submit.sql", clients,
                    seconds=self.cfg["submit_seconds"], options=opts)["tps"])

    def batch(self, out, run):
        for name, sets in rotated(BATCH, run):
            if sets is None:
                if self.peers is not None:
                    continue
                with self.s.connect("bench_graphile") as conn:
                    self.measure(out, "batch", name, lambda: self._batch_graphile(conn))
                continue
            if sets in ("bare", "lean"):
                doc = B.jobs_json(1000, "bench_submit", "submit")
                sql = BARE_BATCH if sets == "bare" else LEAN_BATCH
                with self.s.connect("bench") as conn:
                    self.measure(out, "batch", name, lambda: self._timed_batches(
                        conn, lambda k: k.execute(sql, (doc,)).fetchall(),
                        prepare=B.reset_taskq))
                continue
            with self.s.connect("bench") as conn:
                for k, v in sets.items():
                    conn.execute(f"SET {k} = {v}")
                self.measure(out, "batch", name, lambda: self._batch_submit_many(conn))

    def loop(self, out, run):
        for name, sets in rotated(LOOP, run):
            with self.s.connect("bench") as conn:
                B.reset_taskq(conn)
                B.checkpoint(conn)
                for k, v in sets.items():
                    conn.execute(f"SET {k} = {v}")
                conn.execute(LOOP_SQL.replace("20000", "100"), (json.dumps(B.PAYLOAD),))

                def timed():
                    t0 = time.monotonic()
                    conn.execute(LOOP_SQL, (json.dumps(B.PAYLOAD),))
                    return 20000 / (time.monotonic() - t0)
                self.measure(out, "submit_loop", name, timed)

    def plpgsql_loop(self, out, run):
        for name, sets, stmt in rotated(PLPGSQL_LOOP, run):
            with self.s.connect("bench") as conn:
                B.reset_taskq(conn)
                B.checkpoint(conn)
                for k, v in sets.items():
                    conn.execute(f"SET {k} = {v}")

                def loop(n):
                    conn.execute(f"DO $$ DECLARE x bigint; BEGIN FOR i IN 1..{n} LOOP {stmt};"
                                 " END LOOP; END $$")
                loop(100)

                def timed():
                    t0 = time.monotonic()
                    loop(20000)
                    return 20000 / (time.monotonic() - t0)
                self.measure(out, "plpgsql_loop", name, timed)

    def system(self, sets, reset=False):
        for k, v in sets.items():
            self.conn.execute(f"ALTER SYSTEM RESET {k}" if reset else f"ALTER SYSTEM SET {k} = {v}")
        if sets:
            self.conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)      # (the executors read it at their next wake-up)

    def pickup_run(self, out, run):
        for name, opts, sets in rotated(PICKUP, run):
            self.system(sets)
            try:
                self.measure(out, "pickup", name, lambda: {
                    k: v for k, v in self.pickup_taskq(opts).items()
                    if k in ("p50", "p95", "p99", "max", "jobs")})
            finally:
                self.system(sets, reset=True)

    def drain_run(self, out, run):
        for name, sets in rotated(DRAIN, run):
            self.system(sets)
            try:
                self.measure(out, "drain", name, lambda: self.e2e_in_database(self.cfg["e2e_jobs"]))
            finally:
                self.system(sets, reset=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="per submit and batch measurement")
    ap.add_argument("--drain-jobs", type=int, default=50_000)
    ap.add_argument("--pickup-seconds", type=int, default=20)
    ap.add_argument("--pickup-runs", type=int, help="default: --runs")
    ap.add_argument("--only", default="submit,batch,loop,plpgsql_loop,pickup,drain")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--render", nargs="+", metavar="JSON")
    args = ap.parse_args()
    if args.render:
        print(render([json.load(open(p)) for p in args.render]))
        return 0
    parts = args.only.split(",")
    cfg = dict(B.FULL, submit_seconds=args.seconds, batch_seconds=args.seconds,
               e2e_jobs=args.drain_jobs, pickup_seconds=args.pickup_seconds)
    out = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "pgbin": B.PGBIN, "taskq_commit": B.git_rev(), "runs": args.runs,
           "seconds": args.seconds, "drain_jobs": args.drain_jobs}
    server = B.Server(B.SERVER_SETTINGS)
    try:
        with server.connect("postgres") as c:
            for db in ("bench", "bench_graphile"):
                c.execute(f"CREATE DATABASE {db}")
        with server.connect("bench") as c:
            c.execute(open(os.path.join(B.BENCH, "sql", "setup.sql")).read())
            B.set_workers(c, 2)
        bp = Bypasses(server, cfg, "--no-peers" if args.no_peers else None)
        if bp.peers is None and "batch" in parts:
            bp.node("graphile-setup", "bench_graphile")
        for run in range(args.runs):
            if "submit" in parts:
                for clients in cfg["submit_clients"]:
                    bp.submit(out, clients, run)
            if "batch" in parts:
                bp.batch(out, run)
            if "loop" in parts:
                bp.loop(out, run)
            if "plpgsql_loop" in parts:
                bp.plpgsql_loop(out, run)
            if "drain" in parts:
                bp.drain_run(out, run)
        if "pickup" in parts:
            bp._restart_server("on")
            for run in range(args.pickup_runs or args.runs):
                bp.pickup_run(out, run)
    finally:
        out["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        server.stop()
        path = os.path.join(B.BENCH, "results",
                            "bypasses-" + time.strftime("%Y%m%d-%H%M%S") + ".json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        json.dump(out, open(path, "w"), indent=1, default=float)
        B.log(f"results: {path}")
    return 0


def fmt(vals, digits=0):
    m = statistics.median(vals)
    return f"{m:,.{digits}f} ({min(vals):,.{digits}f}–{max(vals):,.{digits}f})"


def paired(vals, ref):
    """The ratios vals[i] / ref[i] of the same run (variants alternate within
    a run): median (min–max)."""
    ratios = [v / r for v, r in zip(vals, ref)]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


REFERENCE = {"batch": "graphile_add_jobs"}


def render(results):
    """One table per measurement: per invocation, each variant's median
    (min–max) over its runs, and its ratio to the first variant (main, or
    listened) and to raw_insert or graphile's add_jobs, taken run by run."""
    lines = ["# Issue 20: what the bypasses buy (bench/bypasses.py)", ""]
    for i, r in enumerate(results, 1):
        lines.append(f"- invocation {i}: {r['started']} → {r.get('finished')}, "
                     f"{r['runs']} runs × {r['seconds']} s, taskq {r['taskq_commit']}, "
                     f"{r['pgbin']}")
    lines += ["", "Each invocation ran one throwaway server of the private PostgreSQL named, "
              "with taskq built from the commit named plus bench/bypasses-switches.patch "
              "(\"uncommitted changes\": the patch was applied in the tree at the time).  "
              "Variants: see bench/README.md, \"Issue 20: what the bypasses buy today\".", "",
              "Ratios are taken within each run (the variants of a run ran one after "
              "the other, in an order rotated run by run), then the median (min–max) of "
              "the runs.  Load: the 1-minute load average before and after each "
              "measurement of the table (min–max).", ""]
    keys = []
    for r in results:
        keys += [k for k in r.get("load", {}) if k not in keys]
    for key in keys:
        ref = REFERENCE.get(key, "raw_insert" if key.startswith("submit_") else None)
        lines += [f"## {key}", ""]
        if key == "pickup":
            lines += ["| inv. | variant | p50 ms | p99 ms | load |", "|---|---|---|---|---|"]
        else:
            lines += ["| inv. | variant | per second: median (min–max) | ÷ first variant | "
                      f"÷ {ref or '–'} | load |", "|---|---|---|---|---|---|"]
        for i, r in enumerate(results, 1):
            if key not in r:
                continue
            load = r["load"][key]
            ltxt = f"{min(load):.1f}–{max(load):.1f}"
            first = next(iter(r[key].values()))
            for name, vals in r[key].items():
                if key == "pickup":
                    lines.append(f"| {i} | {name} | {fmt([v['p50'] for v in vals], 2)} | "
                                 f"{fmt([v['p99'] for v in vals], 2)} | {ltxt} |")
                    continue
                to_ref = paired(vals, r[key][ref]) if ref in r[key] else ""
                lines.append(f"| {i} | {name} | {fmt(vals)} | {paired(vals, first)} | "
                             f"{to_ref} | {ltxt} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
