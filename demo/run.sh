#!/usr/bin/env bash
# taskq demo, as root on Debian 12:  bash demo/run.sh   (or: make demo)
#
# Installs what is missing, builds and installs taskq, starts a throwaway
# PostgreSQL 15 cluster, runs a shop's nightly ETL as a DAG of in-database
# jobs (demo/demo.sql) while demo/watch.py prints every transition live, and
# prints a summary when every job has finished.  The cluster is dropped on
# exit, Ctrl-C included.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH=/usr/lib/postgresql/15/bin:$PATH

if [ "${1:-}" != "--in-cluster" ]; then
    echo "== installing missing packages (scripts/deps.sh)"
    bash scripts/deps.sh
    echo "== building and installing taskq"
    make -s >/dev/null
    make -s install >/dev/null
    echo "== starting a throwaway PostgreSQL 15 cluster"
    # pg_virtualenv -t: the server runs as postgres in a temporary directory,
    # and is dropped when the command exits.  4 executors share 4 cpu units;
    # the jobs are slow, so each claim takes one job.
    interrupted=0
    trap 'interrupted=1' INT
    status=0
    pg_virtualenv -t -v 15 \
        -o "shared_preload_libraries=taskq,pg_cron" \
        -o "taskq.database=postgres" \
        -o "cron.database_name=postgres" \
        -o "taskq.workers=4" \
        -o "taskq.max_cpu_units=4" \
        -o "taskq.batch_size=1" \
        bash "$repo/demo/run.sh" --in-cluster || status=$?
    [ "$interrupted" -eq 0 ] || exit 130
    exit "$status"
fi

# From here on we run inside pg_virtualenv: PGHOST, PGPORT, PGUSER... are set.
psql=(psql -X -q -v ON_ERROR_STOP=1 -P pager=off)
tmp=$(mktemp -d -t taskq-demo.XXXXXX)
watcher=
cleanup() {
    [ -n "$watcher" ] && kill "$watcher" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
# On Ctrl-C exit quietly: pg_virtualenv drops the cluster (a failure would
# also make it dump the server log) and the outer run.sh exits 130.
trap 'echo "== interrupted, dropping the cluster"; exit 0' INT TERM

"${psql[@]}" -c "CREATE EXTENSION pg_cron; CREATE EXTENSION taskq;"

echo "== live transitions (demo/watch.py, LISTEN taskq_jobs)"
/usr/bin/python3 demo/watch.py --ready "$tmp/ready" &
watcher=$!
for _ in $(seq 100); do
    [ -e "$tmp/ready" ] && break
    kill -0 "$watcher" 2>/dev/null || { echo "demo/watch.py failed to start" >&2; exit 1; }
    sleep 0.1
done
[ -e "$tmp/ready" ] || { echo "demo/watch.py is not listening after 10 s" >&2; exit 1; }

# handlers, the shop's data and the jobs
"${psql[@]}" -f demo/demo.sql

finished=$("${psql[@]}" -At -c "SELECT taskq.wait(array(SELECT id FROM taskq.jobs), '45 seconds')")
"${psql[@]}" -c "NOTIFY taskq_demo, 'done'"
wait "$watcher" || true
watcher=
if [ "$finished" != t ]; then
    echo "some jobs did not finish within 45 seconds:" >&2
    "${psql[@]}" -c "SELECT id, job_type, status, attempts, last_error FROM taskq.jobs WHERE status IN ('blocked', 'pending', 'running')" >&2
    exit 1
fi

echo
echo "== summary (from taskq.job_logs: time spent blocked on parents, queued, running)"
"${psql[@]}" -P footer=off -c "SELECT * FROM demo.job_summary" -c "SELECT * FROM demo.totals"
"${psql[@]}" -At -c "SELECT 'report: ' || body::text FROM etl.reports" \
              -c "SELECT 'forecast for ' || day || ': ' || orders || ' orders' FROM etl.forecasts"

failed=$("${psql[@]}" -At -c "SELECT count(*) FROM taskq.jobs WHERE status <> 'succeeded'")
[ "$failed" -eq 0 ] || { echo "$failed jobs did not succeed" >&2; exit 1; }
echo "== all jobs succeeded"
