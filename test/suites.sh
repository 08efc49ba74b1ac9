#!/usr/bin/env bash
# Runs inside pg_virtualenv (see test/run.sh): pg_regress, isolation specs,
# pgTAP and the Python end-to-end test against one throwaway cluster whose
# taskq workers run in database taskq_regress.
set -uo pipefail
logdir=$1
db=taskq_regress

createdb "$db" || { echo "FAILED: createdb"; exit 1; }
psql -q -d "$db" -c "CREATE EXTENSION taskq; CREATE EXTENSION pgtap; CREATE EXTENSION pg_cron;" \
    || echo "FAILED: create extension"

# The launcher started before the database existed and retries with backoff:
# wait (bounded) until it and the executors are connected.
for _ in $(seq 1 120); do
    n=$(psql -Atq -d "$db" -c "SELECT count(*) FROM taskq.workers WHERE kind = 'executor'")
    [ "${n:-0}" -ge 2 ] && break
    sleep 0.5
done
[ "${n:-0}" -ge 2 ] || echo "FAILED: taskq workers did not start in $db"

# the metrics in Debian's postgres_exporter and Prometheus (bounded: 1 s
# scrapes).  First: its queue's counters must get label sets of their own,
# and the suites below use more than the 256 a database keeps (the rest
# count under "(other)", README: Metrics).
timeout 300 bash test/prometheus.sh "$db" || echo "prometheus test/prometheus.sh ... FAILED (exit $?)"

# pg_regress and isolation: the Makefile's `make installcheck` (its REGRESS
# and ISOLATION lists), one kind at a time so a failure in one still runs
# the other; outputs go to the log directory, not the tree.
make -s installcheck ISOLATION= EXTRA_REGRESS_OPTS="--outputdir=$logdir/regress"
[ -f "$logdir/regress/regression.diffs" ] && head -200 "$logdir/regress/regression.diffs"
make -s installcheck REGRESS= EXTRA_REGRESS_OPTS="--outputdir=$logdir/isolation"
[ -f "$logdir/isolation/regression.diffs" ] && head -200 "$logdir/isolation/regression.diffs"

if ls test/pgtap/*.sql >/dev/null 2>&1; then
    if command -v pg_prove >/dev/null; then
        pg_prove -d "$db" test/pgtap/*.sql
    else
        echo "FAILED: pg_prove is missing (scripts/deps.sh installs it)"
    fi
fi

# The Python client as a user installs it: a package in a fresh virtual
# environment (offline: Debian's setuptools, wheel and psycopg), and the
# tests import that, never the source tree.
venv="$logdir/venv"
pkgsrc="$logdir/taskq-worker-src"
rm -rf "$venv" "$pkgsrc"
cp -r clients/python "$pkgsrc"
if /usr/bin/python3 -m venv --system-site-packages "$venv" &&
   "$venv/bin/pip" install -q --no-build-isolation --no-index "$pkgsrc" &&
   "$venv/bin/python" -c "import taskq_worker, os, sys; sys.exit(taskq_worker.__version__ != '0.2.0' or
        not os.path.exists(os.path.join(os.path.dirname(taskq_worker.__file__), 'py.typed')))"; then
    echo "python install_package ... ok"
else
    echo "python install_package ... FAILED"
fi
for t in test/python/test_*.py; do
    [ -f "$t" ] || continue
    if PGDATABASE="$db" TASKQ_WORKER_INSTALLED=1 timeout 600 "$venv/bin/python" "$t"; then
        echo "python $(basename "$t") ... ok"
    else
        echo "python $(basename "$t") ... FAILED"
    fi
done

# the taskq command-line tool: one "cli NAME ... ok|FAILED" line per check
if [ -f test/cli/test_cli.sh ]; then
    PGDATABASE="$db" timeout 600 bash test/cli/test_cli.sh || echo "cli test_cli.sh ... FAILED (exit $?)"
fi

# the web dashboard in headless chromium: one "web NAME ... ok|FAILED" line per check
if [ -f test/web/test_web.sh ]; then
    PGDATABASE="$db" TASKQ_WEB_ARTIFACTS="$logdir/web" timeout 600 bash test/web/test_web.sh >"$logdir/web.out" 2>&1
    rc=$?
    cat "$logdir/web.out"
    # a crash or timeout of the driver must count even if no check printed FAILED
    [ $rc -eq 0 ] || grep -q '^web .* FAILED' "$logdir/web.out" || echo "web test_web.sh ... FAILED (exit $rc)"
fi
exit 0
