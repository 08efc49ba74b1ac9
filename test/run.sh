#!/usr/bin/env bash
# taskq's whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds (warnings fail the build), installs, and runs every kind of
# test against throwaway clusters, then runs the same suite against the other
# tested PostgreSQL versions in Debian chroots (test/matrix.sh).  The last
# line is "N passed, N failed".
#   TASKQ_PG=17      test against that major version here (default 15)
#   TASKQ_MATRIX=0   skip the 17/18 chroot matrix (quick local runs)
#   TASKQ_BENCH=0    skip the benchmark smoke step
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

pg=${TASKQ_PG:-15}
export TASKQ_PG=$pg
bash scripts/deps.sh || { echo "0 passed, 1 failed"; exit 1; }
export PATH=/usr/lib/postgresql/$pg/bin:$PATH

passed=0
failed=0
# count_results FILE: add the per-test "... ok" / "FAILED" lines of a runner's output
count_results() {
    local ok bad
    ok=$(grep -cE '(\.\.\. ok|\.\. ok$|^ok [0-9]+ +[-+] )' "$1")
    bad=$(grep -cE '(^FAILED: |\.\.\. FAILED|\.\. (Failed|Dubious)|^not ok [0-9]+ +[-+] |^# FAILED)' "$1")
    passed=$((passed + ok))
    failed=$((failed + bad))
}
fail_step() {
    echo "FAILED: $1"
    failed=$((failed + 1))
}

echo "== build"
make -s clean >/dev/null 2>&1
if make -s 2>build.log >/dev/null && ! grep -q 'warning:' build.log; then
    passed=$((passed + 1))
else
    cat build.log
    fail_step "build (errors or warnings)"
fi
make -s install >/dev/null || fail_step "make install"

logdir=$(mktemp -d -t taskq-test.XXXXXX)
chmod 755 "$logdir"

echo "== docs (the map names only what exists; the update script is its parts)"
{ bash test/docs/check_map.sh; bash test/docs/check_update_parts.sh; } 2>&1 | tee "$logdir/docs.out"
count_results "$logdir/docs.out"

echo "== Debian packages (build, install in place of make install's files, smoke test, purge)"
bash test/package.sh "$pg" 2>&1 | tee "$logdir/package.out"
count_results "$logdir/package.out"

echo "== pg_regress, isolation, pgTAP and Python end-to-end (one throwaway cluster, PostgreSQL $pg)"
pg_virtualenv -v "$pg" -t \
    -o "shared_preload_libraries=taskq,pg_cron" \
    -o "taskq.database=taskq_regress" \
    -o "cron.database_name=taskq_regress" \
    -o "cron.use_background_workers=on" \
    -o "taskq.poll_interval=100ms" \
    -o "taskq.workers=2" \
    -o "max_worker_processes=32" \
    bash test/suites.sh "$logdir" 2>&1 | tee "$logdir/suites.out"
count_results "$logdir/suites.out"

echo "== TAP (PostgreSQL::Test::Cluster, as the postgres user)"
if ls test/t/*.pl >/dev/null 2>&1; then
    tapdir=$(mktemp -d -t taskq-tap.XXXXXX)
    cp -r test/t "$tapdir/t"
    chown -R postgres:postgres "$tapdir"
    pgxs=$(dirname "$(pg_config --pgxs)")/..
    su postgres -s /bin/bash -c "cd '$tapdir' && \
        TESTDIR='$tapdir' PATH='$PATH' \
        PG_REGRESS='$pgxs/test/regress/pg_regress' \
        PERL5LIB='$pgxs/test/perl' \
        prove -v t/*.pl" > "$logdir/tap.out" 2>&1
    grep -E '^(t/|ok |not ok |# )' "$logdir/tap.out" | grep -vE '^ok [0-9]+ - ' | tail -100
    # count per test file
    grep -E '^t/.*\.pl \.\.' "$logdir/tap.out" >/dev/null
    tap_ok=$(grep -cE '^ok [0-9]+ ' "$logdir/tap.out")
    tap_bad=$(grep -cE '^not ok [0-9]+ ' "$logdir/tap.out")
    if ! grep -q '^Result: PASS' "$logdir/tap.out" && [ "$tap_bad" -eq 0 ]; then
        tail -40 "$logdir/tap.out"
        tap_bad=1
    fi
    echo "TAP: $tap_ok ok, $tap_bad not ok"
    passed=$((passed + tap_ok))
    failed=$((failed + tap_bad))
    if [ "$tap_bad" -gt 0 ]; then
        # (PostgreSQL 17 moved the TAP logs from tmp_check/log to log)
        for f in "$tapdir"/tmp_check/log/* "$tapdir"/log/*; do
            [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }
        done
    fi
fi

echo "== production install (README's steps on a pg_createcluster cluster, port ${TASKQ_PROD_PORT:-54454})"
timeout 900 bash test/production_install.sh > "$logdir/production.out" 2>&1
cat "$logdir/production.out"
count_results "$logdir/production.out"

if [ "${TASKQ_BENCH:-1}" != 0 ] && [ "$pg" = 15 ]; then
    echo "== benchmark smoke (bench/run.sh --quick on its own throwaway server)"
    bash test/bench_smoke.sh > "$logdir/bench.out" 2>&1
    tail -5 "$logdir/bench.out"
    count_results "$logdir/bench.out"
fi

# PostgreSQL 17 and 18 in Debian chroots; matrix.sh ends with its own
# "N passed, N failed" line, which is added to ours.
if [ "${TASKQ_MATRIX:-1}" != 0 ]; then
    echo "== matrix: PostgreSQL 17 and 18 (test/matrix.sh)"
    bash test/matrix.sh 17 18 2>&1 | tee "$logdir/matrix.out"
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$logdir/matrix.out" | tail -1)
    if [ -n "$last" ]; then
        passed=$((passed + ${last%% passed*}))
        m_bad=${last#*, }
        failed=$((failed + ${m_bad%% failed}))
    else
        fail_step "matrix (no result line)"
    fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
