#!/usr/bin/env bash
# Smoke test of the benchmark harness: bench/run.sh --quick on its own
# throwaway server (taskq must already be built and installed), then checks
# that every section produced sane numbers.  Prints "bench smoke ... ok" or
# "bench smoke ... FAILED".  The peers (graphile-worker, pg-boss) run when
# node and npm can install them; otherwise they are skipped and not checked.
set -uo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp -d -t taskq-bench-smoke.XXXXXX)
chmod 755 "$out"
trap 'rm -rf "$out"' EXIT
py=python3
python3 -c 'import psycopg' 2>/dev/null || py=/usr/bin/python3

if ! timeout 600 bash bench/run.sh --quick --no-install --out-dir "$out" \
        --report "$out/REPORT.md" >"$out/run.log" 2>&1; then
    tail -60 "$out/run.log"
    echo "bench smoke ... FAILED"
    exit 1
fi

if "$py" - "$out" <<'EOF'
import glob, json, sys

out = sys.argv[1]
r = json.load(open(glob.glob(f"{out}/*.json")[0]))
problems = []

def check(cond, what):
    if not cond:
        problems.append(what)

def positive(s, what):
    check(isinstance(s, dict) and s.get("median", 0) > 0, f"{what}: {s!r}")

check(not r["errors"], f"sections failed: {r['errors']}")
for c, v in r["submission"]["single"].items():
    for k in ("taskq_submit", "taskq_submit_listened", "taskq_submit_listened_flush_off", "raw_insert",
              "same_writes"):
        positive(v[k], f"submission {k} x{c}")
for k, v in r["submission"]["batch"].items():
    positive(v, f"batch {k}")
check("same_writes_batch" in r["submission"]["batch"], "batch: no same_writes_batch")
e = r["end_to_end"]
for k in ("taskq_executors", "taskq_external_reference", "taskq_external_batch",
          "raw_cycle_c2", "raw_cycle_batch64_c2", "same_writes_batch256_c2"):
    positive(e[k], f"end to end {k}")
p = r["pickup"]["taskq"]
check(sum(p["jobs"]) > 0 and 0 < p["p50"]["median"] <= p["p99"]["median"],
      f"pickup percentiles: {p}")
# commit to start is the shorter span: it leaves out the submit's own work
check(0 < p["p50"]["median"] <= p["from_start_p50"]["median"],
      f"pickup from commit vs from submit start: {p}")
ch = r["churn"]
check(ch["purged"] and ch["samples"][-1]["rows"]["jobs"] < 1000,
      "churn: the launcher did not purge finished jobs")
check(all(s["workers"].get("executor") for s in ch["samples"]), "churn: no executor RSS")
sc = r["scaling"]
check(set(sc["workers"]) == {"1", "2", "4", "8"}, f"scaling: {list(sc['workers'])}")
for w, v in sc["workers"].items():
    positive(v, f"scaling {w} executors")
positive(sc["chains"], "chains")
positive(sc["fan_in"]["jobs_per_s"], "fan-in")
for b, v in sc["backlog"].items():
    positive(v["external_claim_ms"], f"claim with backlog {b}")
if not r["peers_skipped"]:
    for peer in ("graphile", "pgboss"):
        positive(e[peer], f"end to end {peer}")
        check(peer in r["pickup"], f"pickup {peer}")
    positive(r["submission"]["batch"].get("graphile_add_jobs"), "graphile batch enqueue")
report = open(f"{out}/REPORT.md").read()
check("## Targets" in report and "## 6. Scaling" in report, "report incomplete")
for p in problems:
    print("bench smoke:", p)
sys.exit(1 if problems else 0)
EOF
then
    grep -E "peers skipped" "$out/REPORT.md" || true
    echo "bench smoke ... ok"
else
    tail -30 "$out/run.log"
    echo "bench smoke ... FAILED"
    exit 1
fi
