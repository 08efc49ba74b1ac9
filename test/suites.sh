#!/usr/bin/env bash
# Runs inside pg_virtualenv (see test/run.sh): pg_regress, isolation specs,
# pgTAP and the Python end-to-end test against one throwaway cluster whose
# taskq workers run in database taskq_regress.
set -uo pipefail
logdir=$1
pgxs=$(dirname "$(pg_config --pgxs)")/..
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

tests=$(ls sql/*.sql | grep -v 'taskq--' | xargs -n1 basename | sed 's/\.sql$//' | sort)
if [ -n "$tests" ]; then
    "$pgxs/test/regress/pg_regress" --use-existing --dbname="$db" --inputdir=. \
        --outputdir="$logdir/regress" $tests
    [ -f "$logdir/regress/regression.diffs" ] && head -200 "$logdir/regress/regression.diffs"
fi

specs=$(ls test/isolation/specs/*.spec 2>/dev/null | xargs -rn1 basename | sed 's/\.spec$//' | sort)
if [ -n "$specs" ]; then
    "$pgxs/test/isolation/pg_isolation_regress" --use-existing --dbname="$db" \
        --inputdir=test/isolation --outputdir="$logdir/isolation" $specs
    [ -f "$logdir/isolation/regression.diffs" ] && head -200 "$logdir/isolation/regression.diffs"
fi

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

# the metrics in Debian's postgres_exporter and Prometheus (bounded: 1 s scrapes)
timeout 300 bash test/prometheus.sh "$db" || echo "prometheus test/prometheus.sh ... FAILED (exit $?)"

# the taskq command-line tool: one "cli NAME ... ok|FAILED" line per check
if [ -f test/cli/test_cli.sh ]; then
    PGDATABASE="$db" timeout 600 bash test/cli/test_cli.sh || echo "cli test_cli.sh ... FAILED (exit $?)"
fi
exit 0
