#!/usr/bin/env bash
# taskq's metrics in a real monitoring stack: Debian's postgres_exporter
# with contrib/postgres_exporter.yml, connected as a member of
# taskq_monitor, scraped every second by Debian's Prometheus while jobs
# run in both lanes; then one rate and one histogram quantile through
# Prometheus' HTTP API.  Prints "prometheus NAME ... ok|FAILED" lines.
# Uses the libpq environment (PGHOST, PGPORT, PGUSER...) and database $1.
set -uo pipefail
db=${1:-${PGDATABASE:-taskq_regress}}
cd "$(dirname "$0")/.."
export PGDATABASE=$db

report() { echo "prometheus $1 ... $2"; }
for bin in prometheus prometheus-postgres-exporter curl; do
    if ! command -v "$bin" >/dev/null; then
        report "$bin" "FAILED (missing: scripts/deps.sh installs it)"
        exit 0
    fi
done

work=$(mktemp -d -t taskq-prom.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    psql -Xq -c "SELECT taskq.unregister_handler('prom_h')" -c "DROP FUNCTION IF EXISTS public.prom_h(jsonb)" \
        -c "SELECT taskq.cancel(id) FROM taskq.jobs WHERE queue IN ('prom_idle', 'prom_test') AND status IN ('pending', 'running', 'blocked')" \
        -c "DROP ROLE IF EXISTS taskq_prom_exporter" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
exporter_port=$(free_port)
prom_port=$(free_port)
password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

psql -Xq -v ON_ERROR_STOP=1 >/dev/null <<EOF || { report setup FAILED; exit 0; }
DROP ROLE IF EXISTS taskq_prom_exporter;
CREATE ROLE taskq_prom_exporter LOGIN PASSWORD '$password' IN ROLE taskq_monitor;
CREATE OR REPLACE FUNCTION public.prom_h(payload jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT payload';
SELECT taskq.register_handler('prom_h', 'public.prom_h(jsonb)');
-- a job that waits all along: taskq_queue_depth is in every scrape
SELECT taskq.submit('prom_later', '{}', queue => 'prom_idle', run_at => now() + interval '1 day');
-- tenant jobs nobody claims (no handler, no worker): taskq_tenant_turn_waiting_jobs
SELECT taskq.submit('prom_tenant', '{}', queue => 'prom_idle', tenant => 'prom_t') FROM generate_series(1, 1000);
EOF

# the exporter as README's "Production install" runs it
# (a clean environment: the exporter's lib/pq panics on libpq variables it
# does not support, such as the PGSYSCONFDIR pg_virtualenv sets)
env -i PATH="$PATH" HOME="${HOME:-/}" \
    DATA_SOURCE_NAME="host=${PGHOST:-/var/run/postgresql} port=${PGPORT:-5432} dbname=$db user=taskq_prom_exporter password=$password sslmode=disable" \
    prometheus-postgres-exporter --web.listen-address="127.0.0.1:$exporter_port" \
    --disable-default-metrics --disable-settings-metrics \
    --extend.query-path=contrib/postgres_exporter.yml >"$work/exporter.log" 2>&1 &
pids+=($!)

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: taskq
    static_configs:
      - targets: ['127.0.0.1:$exporter_port']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

# load in both lanes until the end: executors run prom_h, an "external
# worker" (psql) claims and completes prom_ext
(
    while :; do
        psql -Xq >/dev/null 2>&1 <<'EOF'
SET taskq.notify_level = 'none';
SELECT taskq.submit('prom_h', '{}', queue => 'prom_test') FROM generate_series(1, 5);
SELECT taskq.submit('prom_ext', '{}', queue => 'prom_test') FROM generate_series(1, 5);
SELECT taskq.complete(id, NULL, 'prom_worker')
  FROM taskq.claim(ARRAY['prom_test'], 'prom_worker', 5, cpu_units => 100, memory_mb => 100000);
EOF
        sleep 0.2
    done
) &
pids+=($!)

query() {  # an instant query; prints "lane value" lines of a vector result
    curl -s --max-time 5 "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
        python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for s in r.get("data", {}).get("result", []):
    print(s["metric"].get("lane", "-"), s["value"][1])'
}

# every name the exporter serves is a name of taskq.metrics_prometheus()
names_ok=false
for _ in $(seq 1 60); do
    served=$(curl -s --max-time 5 "http://127.0.0.1:$exporter_port/metrics" |
             sed -n 's/^\(taskq_[a-z_]*\)[{ ].*/\1/p' | sort -u)
    if echo "$served" | grep -q '^taskq_jobs_completed_total$'; then
        sql=$(psql -XAt -c "SELECT DISTINCT (regexp_match(line, '^(taskq_[a-z_]+)[{ ]'))[1]
                             FROM regexp_split_to_table(taskq.metrics_prometheus(), E'\n') line
                            WHERE line ~ '^taskq_' ORDER BY 1")
        if [ "$served" = "$sql" ]; then names_ok=true; else
            diff <(echo "$served") <(echo "$sql") | head -20; fi
        break
    fi
    sleep 0.5
done
$names_ok && report exporter_names ok || {
    report exporter_names FAILED; grep -m1 -A4 -E '^panic|level=error' "$work/exporter.log"; tail -5 "$work/exporter.log"; }

# rate() of the completion counter, per lane: both lanes counted, a sane rate
rate_ok=false
for _ in $(seq 1 120); do
    out=$(query 'sum by (lane) (rate(taskq_jobs_completed_total{queue="prom_test",outcome="succeeded"}[1m]))')
    if echo "$out" | awk '$2 > 0 { n++ } END { exit !(n == 2) }'; then
        echo "$out" | awk '$2 > 0 && $2 < 100000 { n++ } END { exit !(n == 2) }' && rate_ok=true
        echo "# succeeded per second by lane: $(echo $out)"
        break
    fi
    sleep 0.5
done
$rate_ok && report rate ok || {
    report rate FAILED; echo "# last: $out"; tail -5 "$work/prometheus.log"
    psql -XAt -c "SELECT '# completion label sets: ' || count(*) || ', (other): ' || count(*) FILTER (WHERE labels->>'queue' = '(other)')
                    FROM taskq.metrics() WHERE metric = 'taskq_jobs_completed_total'"; }

# a quantile of the run time histogram: finite, within the buckets
quantile_ok=false
for _ in $(seq 1 120); do
    out=$(query 'histogram_quantile(0.9, sum by (le) (rate(taskq_job_run_seconds_bucket{queue="prom_test"}[1m])))')
    v=$(echo "$out" | awk '{ print $2 }')
    if [ -n "$v" ] && [ "$v" != NaN ]; then
        awk -v v="$v" 'BEGIN { exit !(v >= 0 && v <= 3600) }' && quantile_ok=true
        echo "# p90 run time: ${v}s"
        break
    fi
    sleep 0.5
done
$quantile_ok && report histogram_quantile ok || { report histogram_quantile FAILED; echo "# last: $out"; }

# the Grafana dashboard: every query is valid PromQL over taskq's names
# (those of the sql_exporter collector, checked below to cover metrics())
/usr/bin/python3 - "$prom_port" contrib/grafana/taskq-dashboard.json contrib/sql_exporter/taskq.collector.yml <<'PY' \
    && report grafana_dashboard ok || report grafana_dashboard FAILED
import json, re, sys, urllib.parse, urllib.request, yaml
port, path = sys.argv[1], sys.argv[2]
known = {re.sub(r"_(bucket|sum|count)$", "", m["metric_name"])
         for m in yaml.safe_load(open(sys.argv[3]))["metrics"]}
bad = 0
for panel in json.load(open(path))["panels"]:
    for t in panel["targets"]:
        expr = t["expr"].replace("$__rate_interval", "1m").replace("$queue", ".*")
        for name in re.findall(r"\b(taskq_[a-z_]+)", expr):
            if re.sub(r"_(bucket|sum|count)$", "", name) not in known:
                print("# unknown metric %s in panel %r" % (name, panel["title"])); bad += 1
        url = "http://127.0.0.1:%s/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": expr}))
        try:
            r = json.load(urllib.request.urlopen(url, timeout=5))
        except Exception as e:
            r = {"status": str(e)}
        if r.get("status") != "success":
            print("# panel %r: %s" % (panel["title"], r)); bad += 1
sys.exit(bad != 0)
PY

# sql_exporter's collector: each query runs as the exporter role, gives its
# key labels and value, and the collector covers every name of metrics()
PGUSER=taskq_prom_exporter PGPASSWORD=$password /usr/bin/python3 - contrib/sql_exporter/taskq.collector.yml <<'PY' \
    && report sql_exporter_collector ok || report sql_exporter_collector FAILED
import subprocess, sys, yaml
def psql(sql):
    return subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, check=True).stdout
bad = 0
names = set()
for m in yaml.safe_load(open(sys.argv[1]))["metrics"]:
    names.add(m["metric_name"])
    want = list(m.get("key_labels", [])) + list(m["values"])
    try:
        got = psql("CREATE TEMP VIEW c AS " + m["query"] + ";"
                   " SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute"
                   " WHERE attrelid = 'c'::regclass AND attnum > 0").strip()
    except subprocess.CalledProcessError as e:
        print("# %s: %s" % (m["metric_name"], e.stderr.strip())); bad += 1; continue
    if got.split(",") != want:
        print("# %s: columns %s, want %s" % (m["metric_name"], got, want)); bad += 1
missing = set(psql("SELECT DISTINCT metric FROM taskq.metrics()").split()) - names
if missing:
    print("# not in the collector: %s" % sorted(missing)); bad += 1
sys.exit(bad != 0)
PY
exit 0
