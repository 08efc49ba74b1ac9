#!/usr/bin/env bash
# `taskq web` in a real browser: Debian's headless chromium driven by
# selenium (test_web.py) against the suite's cluster.  Run inside
# pg_virtualenv by test/suites.sh with PGDATABASE set to the taskq database;
# prints one "web NAME ... ok|FAILED" line per check.  The screenshots of the
# overview and of a job's graph are left in $TASKQ_WEB_ARTIFACTS (default: a
# new temporary directory).
set -uo pipefail
cd "$(dirname "$0")/../.."

taskq=${TASKQ_BIN:-$PWD/cli/taskq}
[ -x "$taskq" ] || { echo "web build ... FAILED (no $taskq)"; exit 1; }
artifacts=${TASKQ_WEB_ARTIFACTS:-$(mktemp -d -t taskq-web.XXXXXX)}
mkdir -p "$artifacts"
for need in /usr/bin/chromium /usr/bin/chromedriver /usr/bin/python3; do
    [ -x "$need" ] || { echo "web setup ... FAILED (no $need: run scripts/deps.sh)"; exit 1; }
done
# Debian's modules, whatever python3 is first on PATH
/usr/bin/python3 -c "import selenium, psycopg" 2>/dev/null ||
    { echo "web setup ... FAILED (python3-selenium or python3-psycopg missing: run scripts/deps.sh)"; exit 1; }

TASKQ_BIN="$taskq" TASKQ_WEB_ARTIFACTS="$artifacts" /usr/bin/python3 test/web/test_web.py
rc=$?
echo "web screenshots: $artifacts/overview.png $artifacts/dag.png"
exit $rc
