"""Render a benchmark results dict (bench.py's JSON) as Markdown."""


def _med(s):
    return None if not isinstance(s, dict) else s.get("median")


def _num(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _fmt(s, digits=0):
    """median (min–max) of a stats dict."""
    if not isinstance(s, dict):
        return "–"
    if len(s.get("runs", [])) <= 1:
        return _num(s["median"], digits)
    return f"{_num(s['median'], digits)} ({_num(s['min'], digits)}–{_num(s['max'], digits)})"


def _ratio(a, b, digits=2):
    a = _med(a) if isinstance(a, dict) else a
    b = _med(b) if isinstance(b, dict) else b
    if not a or not b:
        return None
    return a / b


def _x(r, digits=2):
    return "–" if r is None else f"{r:.{digits}f}×"


def _pct(r):
    return "–" if r is None else f"{100 * r:.0f} %"


def _mb(b):
    return "–" if b is None else f"{b / 1048576:,.1f} MB"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def targets(r):
    rows = []
    sub = r.get("submission", {})
    single = sub.get("single", {})
    if single:
        ratios = {c: _ratio(v.get("taskq_submit"), v.get("raw_insert")) for c, v in single.items()}
        ok = all(x is not None and x >= 0.85 for x in ratios.values()) if ratios else None
        ceiling = {c: _ratio(v.get("same_writes"), v.get("raw_insert")) for c, v in single.items()}
        text = ", ".join(f"{c} clients: {_pct(x)}" for c, x in ratios.items())
        if any(x is not None for x in ceiling.values()):
            text += ("; taskq's writes in plain SQL (the ceiling): "
                     + ", ".join(f"{_pct(x)}" for x in ceiling.values()))
        rows.append(["submit ≥ 85 % of raw INSERT TPS at every client count", text, _verdict(ok)])
    batch = sub.get("batch", {})
    g = _ratio(batch.get("taskq_submit_many"), batch.get("graphile_add_jobs"))
    text = (f"{_num(_med(batch.get('taskq_submit_many')))} vs "
            f"{_num(_med(batch.get('graphile_add_jobs')))} jobs/s = {_x(g)}")
    gs = _ratio(batch.get("same_writes_batch"), batch.get("graphile_add_jobs"))
    if gs is not None:
        text += f"; taskq's writes in plain SQL (the ceiling): {_x(gs)}"
    rows.append(["batch submit (1,000 per call) ≥ 2× graphile-worker's batch enqueue", text,
                 _verdict(None if g is None else g >= 2)])
    e2e = r.get("end_to_end", {})
    same = next((v for k, v in e2e.items() if k.startswith("same_writes_batch256_c")), None)
    for peer, name, want in (("graphile", "graphile-worker", 1.5), ("pgboss", "pg-boss", 6)):
        x = _ratio(e2e.get("taskq_executors"), e2e.get(peer))
        text = (f"{_num(_med(e2e.get('taskq_executors')))} vs "
                f"{_num(_med(e2e.get(peer)))} jobs/s = {_x(x)}")
        xs = _ratio(same, e2e.get(peer))
        if xs is not None:
            text += f"; the executors' writes in plain SQL (the ceiling): {_x(xs)}"
        rows.append([f"end to end (executors, no-op) ≥ {want}× {name}", text,
                     _verdict(None if x is None else x >= want)])
    x = _ratio(e2e.get("taskq_external_reference"), e2e.get("pgboss"))
    rows.append(["external workers (Python reference worker) ≥ pg-boss",
                 f"{_num(_med(e2e.get('taskq_external_reference')))} vs "
                 f"{_num(_med(e2e.get('pgboss')))} jobs/s = {_x(x)}",
                 _verdict(None if x is None else x >= 1)])
    pk = r.get("pickup", {}).get("taskq")
    if pk:
        p50, p99 = _med(pk["p50"]), _med(pk["p99"])
        since = "commit to start" if "from_start_p50" in pk else "submit start to start"
        rows.append([f"pickup p50 ≤ 1 ms at {r['pickup']['rate']} jobs/s",
                     f"{p50:.2f} ms ({since})", _verdict(p50 <= 1)])
        rows.append([f"pickup p99 ≤ 3 ms at {r['pickup']['rate']} jobs/s",
                     f"{p99:.2f} ms ({since})", _verdict(p99 <= 3)])
    ch = r.get("churn")
    if ch:
        ok, text = churn_bounded(ch)
        rows.append(["table/index sizes and executor RSS bounded across the churn run", text,
                     _verdict(ok)])
    bl = r.get("scaling", {}).get("backlog")
    if bl:
        sizes = sorted(bl, key=int)
        lo, hi = bl[sizes[0]], bl[sizes[-1]]
        parts, oks = [], []
        for key, what in (("external_claim_ms", "claim"),
                          ("external_claim_other_queue_ms", "claim of another queue"),
                          ("executor_claim_ms", "executor claim")):
            x = _ratio(hi[key], lo[key])
            oks.append(x is not None and x <= 2)
            parts.append(f"{what}: {_med(lo[key]):.2f} → {_med(hi[key]):.2f} ms ({_x(x, 1)})")
        rows.append([f"claim time flat from {int(sizes[0]):,} to {int(sizes[-1]):,} pending "
                     "(≤ 2× counts as flat)", "; ".join(parts), _verdict(all(oks))])
    return _table(["target (issue 7)", "measured", "verdict"], rows)


def churn_bounded(ch):
    """Bounded: the end state (after purge) is no bigger than 1.25× the state at
    the middle of the run, for the taskq relations and the executors' RssAnon."""
    s = ch["samples"]
    if len(s) < 3:
        return None, "too few samples"
    mid, end = s[len(s) // 2], s[-1]

    def total(sample):
        return sum(v["total_bytes"] for v in sample["relations"].values())

    def rss(sample):
        return max((w.get("RssAnon", 0) for w in sample["workers"].get("executor", [])), default=0)

    ok = total(end) <= 1.25 * total(mid) and rss(end) <= 1.25 * max(rss(mid), 1)
    text = (f"taskq tables {_mb(total(s[0]))} → {_mb(total(mid))} (mid) → {_mb(total(end))} (end); "
            f"executor RssAnon {rss(s[0]) / 1024:.1f} → {rss(mid) / 1024:.1f} → "
            f"{rss(end) / 1024:.1f} MB; jobs left {end['rows']['jobs']:,}")
    return ok, text


def render(r):
    m, sv = r.get("machine", {}), r.get("server", {})
    out = [f"# taskq benchmark report ({r.get('mode')} mode)\n",
           "Generated by `bench/run.sh` (bench/bench.py); do not edit by hand. "
           "See bench/README.md for what each number means and how to reproduce it.\n",
           f"- command: `{r.get('command')}`",
           f"- started {r.get('started')}, finished {r.get('finished')}",
           f"- taskq commit: {r.get('taskq_commit')}",
           f"- machine: {m.get('cpu')}, {m.get('nproc')} CPUs, {m.get('memory_mb', 0):,} MB RAM, "
           f"Linux {m.get('kernel')}; node {m.get('node')}, Python {m.get('python')}",
           f"- load average (1/5/15 min) at start {' '.join(m.get('loadavg_start', []))}, "
           f"at end {' '.join(m.get('loadavg_end', []))} — the machine was shared with other "
           "work, so absolute numbers are noisy; the ratios come from the same run",
           f"- {sv.get('version', '?')}"]
    if r.get("peers"):
        out.append("- peers: " + ", ".join(f"{k} {v}" for k, v in r["peers"].items()))
    elif r.get("peers_skipped"):
        out.append(f"- peers skipped: {r['peers_skipped']}")
    out.append("- every number is the median of "
               f"{r.get('config', {}).get('runs')} run(s), with (min–max) when there are several\n")
    if r.get("errors"):
        out.append("**Sections that failed:**\n")
        out += [f"- {k}: `{v}`" for k, v in r["errors"].items()]
        out.append("")

    out.append("## Targets\n")
    out.append(targets(r))

    sub = r.get("submission")
    if sub:
        out.append("## 1. Submission\n")
        out.append("pgbench, one statement per transaction, `-M prepared`, "
                   f"{r['config']['submit_seconds']} s per run. taskq.submit writes the job (no log "
                   "row), and a NOTIFY while some session listens on the admins' job channel (the "
                   "listener columns: one session LISTENs and reads throughout); the raw INSERT "
                   "writes a row of the same width into a plain table with only a primary key; "
                   "\"same writes\" is plain SQL writing what taskq.submit writes (the job row into "
                   "a copy of taskq.jobs with all its indexes, one statement): the ceiling of any "
                   "submit function that keeps taskq's indexes.\n")
        rows = []
        for c, v in sub["single"].items():
            rows.append([c, _fmt(v["taskq_submit"]), _fmt(v.get("taskq_submit_listened")),
                         _fmt(v.get("taskq_submit_listened_flush_off")),
                         _fmt(v["raw_insert"]), _fmt(v.get("same_writes")),
                         _pct(_ratio(v["taskq_submit"], v["raw_insert"])),
                         _pct(_ratio(v.get("same_writes"), v["raw_insert"])),
                         _pct(_ratio(v["taskq_submit"], v.get("same_writes"))),
                         _pct(_ratio(v.get("taskq_submit_listened"), v["raw_insert"])),
                         _pct(_ratio(v.get("taskq_submit_listened_flush_off"), v["raw_insert"]))])
        out.append(_table(["clients", "taskq.submit TPS", "… with a listener",
                           "… with a listener and taskq.flush_after_notify = off",
                           "raw INSERT TPS", "same writes TPS", "taskq / raw", "same writes / raw",
                           "taskq / same writes", "taskq (listener) / raw",
                           "taskq (listener, flush off) / raw"], rows))
        b = sub.get("batch", {})
        out.append("\nBatches of 1,000 jobs per call, one client, "
                   f"{r['config']['batch_seconds']} s per run (psycopg, ids returned to the client "
                   "except for COPY):\n")
        rows = []
        names = {"taskq_submit_many": "taskq.submit_many",
                 "raw_batch_insert": "raw INSERT … SELECT FROM jsonb_array_elements",
                 "same_writes_batch": "same writes: INSERT … SELECT into a copy of taskq.jobs "
                                      "(all its indexes)",
                 "raw_copy": "raw COPY", "graphile_add_jobs": "graphile_worker.add_jobs"}
        for k, label in names.items():
            if k in b:
                rows.append([label, _fmt(b[k]), _pct(_ratio(b[k], b.get("raw_batch_insert"))),
                             _pct(_ratio(b[k], b.get("raw_copy")))])
        out.append(_table(["method", "jobs/s", "vs raw batch INSERT", "vs COPY"], rows))

    e = r.get("end_to_end")
    if e:
        out.append("\n## 2. End to end\n")
        out.append(f"{e['jobs']:,} no-op jobs enqueued first (taskq: submit_many into a paused "
                   "queue, then `taskq.resume`), then timed until every one has succeeded "
                   "(taskq: resume → last `finished_at`; peers: worker start → queue empty). "
                   f"taskq executors: taskq.workers = {e.get('executors')}, handler "
                   "`bench.noop(jsonb) returns void`. External workers: "
                   f"{e.get('external_settings', {}).get('processes')} processes draining "
                   f"{e.get('ext_jobs', e['jobs']):,} jobs (fewer: they are slow); reference = "
                   f"{e.get('external_settings', {}).get('reference')}; batch loop = "
                   f"{e.get('external_settings', {}).get('batch')}"
                   + "".join(f"; {k.replace('_', ' ')} = {v}"
                             for k, v in e.get('external_settings', {}).items()
                             if k.endswith("_per_job")) + ".\n")
        rows = []
        base = e.get("taskq_executors")
        labels = [("taskq_executors", "taskq, in-database executors"),
                  ("taskq_external_reference", "taskq, Python reference worker (external)"),
                  ("taskq_external_batch", "taskq, minimal batched psycopg loop (external)"),
                  ("taskq_external_reference_per_job",
                   "taskq, Python reference worker, one complete per job (external)"),
                  ("taskq_external_batch_per_job",
                   "taskq, batched psycopg loop, one complete per job (external)")]
        labels += [(k, f"raw: claim 1 row SKIP LOCKED + mark done, pgbench -c {k.rsplit('c', 1)[1]}")
                   for k in e if k.startswith("raw_cycle_c")]
        labels += [(k, f"raw: claim 64 rows SKIP LOCKED + mark done, pgbench -c {k.rsplit('c', 1)[1]}")
                   for k in e if k.startswith("raw_cycle_batch64_c")]
        labels += [(k, "same writes: in one transaction, lock 256 rows SKIP LOCKED in claim "
                    "order, then write each succeeded once, on a copy of taskq.jobs with its "
                    f"indexes, pgbench -c {k.rsplit('c', 1)[1]}")
                   for k in e if k.startswith("same_writes_batch256_c")]
        labels += [("graphile", "graphile-worker"), ("pgboss", "pg-boss")]
        for k, label in labels:
            if isinstance(e.get(k), dict):
                rows.append([label, _fmt(e[k]), _x(_ratio(base, e[k]))])
        out.append(_table(["system", "jobs/s", "taskq executors / this"], rows))
        for peer in ("graphile", "pgboss"):
            if e.get(peer + "_settings"):
                out.append(f"\n{peer} settings: `{e[peer + '_settings']}`")
        out.append("")

    p = r.get("pickup")
    if p:
        out.append("\n## 3. Pickup latency\n")
        commit_based = "from_start_p50" in p.get("taskq", {})
        if not commit_based:     # results from before 2026-12-06
            out.append(f"One job per transaction at a steady {p['rate']} jobs/s for "
                       f"{p['seconds']} s. Latency from the submit transaction's start (taskq: "
                       "created_at; graphile-worker: now() in the payload; pg-boss: JS clock "
                       "before send()) to the handler's start.\n")
        else:
            out.append(f"One job per transaction at a steady {p['rate']} jobs/s for {p['seconds']} s "
                       "(pgbench -R, 4 clients; pg-boss: its own send() from Node, since it has no SQL "
                       "API). Commit to start, as issue 7 asks: the server runs this scenario with "
                       "track_commit_timestamp = on, and a job's latency is its handler's start − "
                       "pg_xact_commit_timestamp() of the transaction that submitted it. taskq: the "
                       "handler records clock_timestamp(); the submit's commit is that of the job's "
                       "first log row. graphile-worker: the task records the JS clock; each add_job "
                       "statement also inserts a row into pickup_marks, whose id the job carries. "
                       "\"From submit start\" measures from the submit transaction's start instead "
                       "(taskq: the job's created_at; graphile-worker: now() in the payload), so it "
                       "adds the submit's own work and commit. pg-boss: JS clock at handler start − "
                       "JS clock before send() (send's round trip included). Percentiles by "
                       "percentile_cont in SQL for all three.\n")
        rows = []
        for k, label in (("taskq", "taskq (executors)"),
                         ("taskq_wake_after_flush", "taskq with taskq.wake_before_flush = off"),
                         ("taskq_listened", "taskq while a session listens on a job channel"),
                         ("taskq_listened_flush_off",
                          "taskq with a listener and taskq.flush_after_notify = off"),
                         ("graphile", "graphile-worker"),
                         ("pgboss", "pg-boss (send to start)")):
            if k in p:
                v = p[k]
                from_start = [_fmt(v["from_start_p50"], 2) if "from_start_p50" in v else "",
                              _fmt(v["from_start_p99"], 2) if "from_start_p99" in v else ""]
                rows.append([label, _fmt(v["p50"], 2), _fmt(v["p95"], 2), _fmt(v["p99"], 2),
                             _fmt(v["max"], 1)] + (from_start if commit_based else []) +
                            [", ".join(f"{j:,}" for j in v["jobs"])])
        out.append(_table(["system", "p50 ms", "p95 ms", "p99 ms", "max ms"] +
                          (["from submit start: p50 ms", "p99 ms"] if commit_based else []) +
                          ["jobs per run"], rows))
        if "taskq" in p:
            for k in ("graphile", "pgboss"):
                if k in p:
                    send = " (pg-boss: send to start)" if k == "pgboss" and commit_based else ""
                    out.append(f"\ntaskq's latency ÷ {k}'s{send}, p50 / p99: "
                               f"{_x(_ratio(p['taskq']['p50'], p[k]['p50']), 2)} / "
                               f"{_x(_ratio(p['taskq']['p99'], p[k]['p99']), 2)} "
                               "(below 1: taskq picks up sooner)")
        out.append("")

    ch = r.get("churn")
    if ch:
        out.append("\n## 5. Cost under churn\n")
        out.append(f"{ch['jobs']:,} no-op jobs through the executors (submit_many of 1,000 while "
                   f"at most {ch['max_backlog']:,} wait), taskq.retention = {ch['retention']} so "
                   f"the launcher deletes finished jobs, autovacuum_naptime = "
                   f"{ch.get('autovacuum_naptime', '1min')}: {_num(ch['jobs_per_s'])} jobs/s overall. "
                   "Sizes are heap + indexes (+TOAST); RSS from /proc/<pid>/status of each executor "
                   "(RssAnon is private memory; VmRSS also counts the shared buffers it touched).\n")
        rows = []
        for s in ch["samples"]:
            rel = s["relations"]
            ex = s["workers"].get("executor", [])
            rows.append([s["label"], f"{s['jobs_done']:,}", f"{s['rows']['jobs']:,}",
                         _mb(rel.get("jobs", {}).get("total_bytes")),
                         _mb(rel.get("jobs", {}).get("index_bytes")),
                         f"{rel.get('jobs', {}).get('dead_tuples', 0):,}",
                         _mb(rel.get("job_logs", {}).get("total_bytes")),
                         f"{rel.get('job_logs', {}).get('dead_tuples', 0):,}",
                         str(rel.get("jobs", {}).get("vacuums", "–")),
                         " / ".join(f"{w.get('RssAnon', 0) / 1024:.1f}" for w in ex),
                         " / ".join(f"{w.get('VmRSS', 0) / 1024:.1f}" for w in ex)])
        out.append(_table(["sample", "jobs done", "jobs rows", "jobs size", "jobs indexes",
                           "jobs dead", "job_logs size", "job_logs dead", "jobs vacuums",
                           "executor RssAnon MB", "executor VmRSS MB"], rows))
        ok, text = churn_bounded(ch)
        out.append(f"\nBounded: {_verdict(ok)} ({text}).\n")

    sc = r.get("scaling")
    if sc:
        out.append("\n## 6. Scaling\n")
        out.append(f"End to end ({sc['jobs']:,} no-op jobs) by executor count "
                   "(ALTER SYSTEM SET taskq.workers + pg_reload_conf):\n")
        w1 = sc["workers"].get("1")
        rows = [[w, _fmt(v), _x(_ratio(v, w1))] for w, v in sc["workers"].items()]
        out.append(_table(["executors", "jobs/s", "vs 1 executor"], rows))
        if sc.get("chains"):
            cs = sc["chains_shape"]
            out.append(f"\nDependencies: {cs['chains']} chains of {cs['length']} jobs (each job "
                       f"after the previous one): {_fmt(sc['chains'])} jobs/s. Fan-in: "
                       f"{sc['fan_in']['parents']:,} parents and one child that depends on all of "
                       f"them: {_fmt(sc['fan_in']['jobs_per_s'])} jobs/s; the child started "
                       f"{_fmt(sc['fan_in']['child_release_ms'], 1)} ms after the last parent "
                       "finished.\n")
        bl = sc.get("backlog")
        if bl:
            out.append("\nClaim time with a backlog of pending jobs nobody runs (type without a "
                       "handler, in a queue no worker serves), each call in a rolled-back "
                       "transaction, timed by the client (ms): `taskq.claim(NULL, …, 10)` finds "
                       "10 of them; `taskq.claim(ARRAY['other'], …)` serves another, empty "
                       "queue; the executor's `taskq._claim(true, …, 64, …)` looks for jobs with "
                       "a handler (there are none).\n")
            rows = [[f"{int(b):,}", _num(v["build_jobs_per_s"]),
                     _num(v.get("executors_idle_cpu_pct")), _fmt(v["external_claim_ms"], 2),
                     _fmt(v["external_claim_other_queue_ms"], 2), _fmt(v["executor_claim_ms"], 2)]
                    for b, v in sorted(bl.items(), key=lambda kv: int(kv[0]))]
            out.append(_table(["pending backlog", "built at jobs/s (submit_many)",
                               "idle executors' CPU %", "claim ms", "claim of another queue ms",
                               "executor claim ms"], rows))
            out.append("\n(idle executors' CPU: both executors together, in percent of one "
                       "core, measured over a few seconds in which nothing but their idle "
                       "polling runs.)\n")

    out.append("\n## PostgreSQL settings\n")
    out.append("Configured for the run (appended to postgresql.conf of a fresh initdb):\n")
    out.append(_table(["setting", "value"], [[k, f"`{v}`"] for k, v in
                                             sv.get("configured", {}).items()]))
    out.append("\nEvery setting not at its default (pg_settings), plus a few for reference:\n")
    out.append(_table(["setting", "value"], [[k, f"`{v}`"] for k, v in
                                             sv.get("settings", {}).items()]))
    if r.get("pg_stat_statements"):
        out.append("\n## pg_stat_statements (top by total time)\n")
        out.append(_table(["calls", "total ms", "mean ms", "query"],
                          [[q["calls"], q["total_ms"], q["mean_ms"],
                            "`" + q["query"].replace("|", "\\|") + "`"]
                           for q in r["pg_stat_statements"]]))
    return "\n".join(out) + "\n"
