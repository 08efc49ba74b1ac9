#!/usr/bin/env bash
# End-to-end tests of the taskq command-line tool (cli/) against a running
# cluster with taskq workers: run inside pg_virtualenv by test/suites.sh with
# PGDATABASE set to the taskq database.  One "cli NAME ... ok|FAILED" line per
# check.  Every wait is a poll on a condition with a deadline.
set -uo pipefail
cd "$(dirname "$0")/../.."

taskq=${TASKQ_BIN:-$PWD/cli/taskq}
[ -x "$taskq" ] || taskq=$(command -v taskq) || { echo "cli build ... FAILED (no taskq binary)"; exit 1; }
work=$(mktemp -d -t taskq-cli.XXXXXX)
tag="cli_$$"                        # unique queue/type prefix: reruns do not collide
tmux_sock="taskq-cli-$$"
pids=()
unset TMUX

psql_q() { psql -X -Atq -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for name in top top_ctrl_c; do tmux -L "$tmux_sock-$name" kill-server 2>/dev/null; done
    # one by one: cancelling a parent cascades to its children
    psql_q -c "DO \$\$ DECLARE j bigint; BEGIN
                   FOR j IN SELECT id FROM taskq.jobs WHERE left(queue, length('${tag}_')) = '${tag}_' ORDER BY id LOOP
                       BEGIN PERFORM taskq.cancel(j); EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL; END;
                   END LOOP;
               END \$\$" >/dev/null
    psql_q -c "SELECT taskq.unregister_handler('${tag}_noop')" >/dev/null 2>&1
    psql_q -c "DROP FUNCTION IF EXISTS public.${tag}_noop(jsonb)" >/dev/null 2>&1
    psql_q -c "DROP ROLE IF EXISTS ${tag}_user" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

# run CMD...: stdout in $work/out, stderr in $work/err, exit status in $rc
run() {
    "$@" >"$work/out" 2>"$work/err"
    rc=$?
}

# check NAME EXPECTED_RC [REGEX...]: $rc and every REGEX (grep -E) on stdout
check() {
    local name=$1 want=$2 re
    shift 2
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit status $rc, expected $want"
        return 1
    fi
    for re in "$@"; do
        if ! grep -qE -- "$re" "$work/out"; then
            fail "$name" "stdout does not match: $re"
            return 1
        fi
    done
    echo "cli $name ... ok"
}

# check_err NAME EXPECTED_RC [REGEX...]: the same on stderr
check_err() {
    local name=$1 want=$2 re
    shift 2
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit status $rc, expected $want"
        return 1
    fi
    for re in "$@"; do
        if ! grep -qE -- "$re" "$work/err"; then
            fail "$name" "stderr does not match: $re"
            return 1
        fi
    done
    echo "cli $name ... ok"
}

# assert NAME [!] CMD...: a check that CMD succeeds (with "!": fails)
assert() {
    local name=$1 want=0 got=0
    shift
    if [ "$1" = "!" ]; then
        want=1
        shift
    fi
    "$@" || got=1
    if [ "$got" = "$want" ]; then
        echo "cli $name ... ok"
    else
        fail "$name" "failed: $([ "$want" = 1 ] && echo '! ')$*"
    fi
}

fail() {
    echo "cli $1 ... FAILED"
    echo "    $2"
    [ -f "$work/out" ] && sed 's/^/    out| /' "$work/out" | head -40
    [ -f "$work/err" ] && sed 's/^/    err| /' "$work/err" | head -20
}

# wait_for SECONDS CMD...: poll CMD until it succeeds or the deadline passes
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

# whether a `taskq watch` with application_name $1 is listening
listening() {
    [ "$(psql_q -c "SELECT count(*) FROM pg_stat_activity
                   WHERE application_name = '$1' AND state = 'idle'
                     AND query LIKE 'LISTEN \"taskq\\_jobs\\_%'")" = 1 ]
}

# whether process $1 is gone
gone() { ! kill -0 "$1" 2>/dev/null; }

# ---------------------------------------------------------------- usage
run "$taskq" --help
check help 0 '^  status ' '^  watch ' '^  top ' '^  dlq ' '^  dag ' '^  submit ' '--dbname'
for cmd in status watch top dlq dag submit; do
    run "$taskq" "$cmd" --help
    check "help_$cmd" 0 '^Usage:' "$cmd" '--host'
done
run "$taskq" help dag
check help_topic 0 'dag ID'
run "$taskq" --version
check version 0 '^taskq \(taskq\) [0-9]'

run "$taskq" frobnicate
check_err usage_unknown_command 2 'unknown command "frobnicate"' 'taskq --help'
run "$taskq" submit
check_err usage_submit_no_type 2 'no job type given'
run "$taskq" status 12abc
check_err usage_bad_id 2 'job id must be a positive integer'
run "$taskq" dag 1 --format svg
check_err usage_dag_format 2 'mermaid or dot'
run "$taskq" top --interval 0
check_err usage_top_interval 2 'interval'
run "$taskq" status --no-such-option
check_err usage_bad_option 2 "unrecognized option '--no-such-option'" 'taskq status --help'
run "$taskq" dlq purge 5
check_err usage_dlq_ids 2 'only retry takes job ids'

# ---------------------------------------------------------------- errors
run "$taskq" dag 999999999999
if check_err server_error 1 '^taskq: error: job 999999999999 does not exist$' && grep -qE 'ERROR:|P0002' "$work/err"; then
    fail server_error_no_sqlstate "stderr shows the ERROR prefix or SQLSTATE"
else
    echo "cli server_error_no_sqlstate ... ok"
fi
run "$taskq" submit "${tag}_x" --payload '[1, 2]'
check_err server_error_payload 1 'payload must be a JSON object'
run "$taskq" submit "${tag}_x" --payload 'not json'
check_err server_error_json 1 'invalid input syntax for type json'
run env PGDATABASE="${tag}_no_such_db" "$taskq" status
check_err connection_error 1 "database \"${tag}_no_such_db\" does not exist"

# ---------------------------------------------------------------- connection options
conn=()
[ -n "${PGHOST:-}" ] && conn+=(-h "$PGHOST")
[ -n "${PGPORT:-}" ] && conn+=(-p "$PGPORT")
[ -n "${PGUSER:-}" ] && conn+=(-U "$PGUSER")
run env -u PGDATABASE -u PGHOST -u PGPORT -u PGUSER "$taskq" "${conn[@]}" -d "$PGDATABASE" status
check conn_options 0 '^Health'
run env -u PGDATABASE "$taskq" status -d "dbname=$PGDATABASE application_name=${tag}_conninfo"
check conn_conninfo_after_command 0 '^Queues'

# ---------------------------------------------------------------- submit
run "$taskq" submit "${tag}_ext" --queue "${tag}_a" --priority high --payload '{"k": "v"}' --max-attempts 5
check submit 0 '^[0-9]+$'
a=$(cat "$work/out")
assert submit_row [ "$(psql_q -c "SELECT queue || ' ' || priority || ' ' || status || ' ' || max_attempts || ' ' || (payload->>'k')
                                  FROM taskq.jobs WHERE id = ${a:-0}")" = "${tag}_a high pending 5 v" ]
run "$taskq" submit "${tag}_ext" -q "${tag}_a"
check submit_second 0 '^[0-9]+$'
a2=$(cat "$work/out")
run "$taskq" submit "${tag}_child" -q "${tag}_a" --depends-on "$a,$a2"
check submit_depends_on 0 '^[0-9]+$'
b=$(cat "$work/out")
assert submit_blocked [ "$(psql_q -c "SELECT status FROM taskq.jobs WHERE id = ${b:-0}")" = blocked ]
run "$taskq" submit "${tag}_later" -q "${tag}_delayed" --delay '1 hour' --idempotency-key "${tag}_k"
check submit_delay 0 '^[0-9]+$'
d=$(cat "$work/out")
run "$taskq" submit "${tag}_later" -q "${tag}_delayed" --idempotency-key "${tag}_k"
check submit_idempotent 0 "^${d:-x}\$"

# ---------------------------------------------------------------- status
run "$taskq" status
check status_summary 0 '^Queues' \
    "^  ${tag}_a +2 +0 +1 +0\$" \
    '^Resources' 'cpu units +[0-9]+ / [0-9]+ used' 'memory MB +[0-9]+ / [0-9]+ used' \
    '^Throughput' '^  1m ' '^  15m ' \
    '^Workers' ' launcher ' ' executor ' \
    '^Health' '^  ok +launcher ' '^  (ok|warn|fail) +dead_letter_queue '

run "$taskq" status --queue "${tag}_%"
check status_queue_filter 0 "^  ${tag}_a +2 +0 +1 +0\$" "^  ${tag}_delayed +1 +0 +0 +0\$"
assert status_queue_filter_only ! grep -qE '^  default ' "$work/out"

# a queue whose rate limit holds back every claim shows for how long
psql_q -c "SELECT taskq.configure_queue('${tag}_thr', rate_limit => '1/h')" >/dev/null
psql_q -c "SELECT taskq.submit('${tag}_thr', queue => '${tag}_thr') FROM generate_series(1, 3)" >/dev/null
psql_q -c "SELECT count(*) FROM taskq.claim(ARRAY['${tag}_thr'], '${tag}_w', 10, '1 hour')" >/dev/null
run "$taskq" status --queue "${tag}_thr"
check status_throttled 0 '^  queue +pending +running +blocked +failed +paused +throttled$' \
    "^  ${tag}_thr +[23] +[01] +0 +0 +[0-9]{2}:[0-9]{2}:[0-9]{2}\$"
run "$taskq" top --once --queue "${tag}_thr"
check top_throttled 0 "^  ${tag}_thr +[23] +[01] +0 +0 +[0-9]{2}:[0-9]{2}:[0-9]{2}\$"

run "$taskq" status "$b"
check status_job 0 "^id +$b\$" '^status +blocked$' "^job_type +${tag}_child\$" \
    "^depends_on +\\{$a,$a2\\}\$" '^Log' '^  \(empty\)$'
psql_q -c "SELECT taskq.cancel($a)" >/dev/null
run "$taskq" status "$b"
check status_job_cancelled 0 '^status +cancelled$' "cancelled because job $a was cancelled"
# history records what went wrong: no 'submitted' line, one for the cancel
assert status_log_one_line [ "$(grep -cE ' (blocked|cancelled) +0 +(submitted|cancelled because)' "$work/out")" = 1 ]
run "$taskq" status 999999999999
check_err status_missing_job 1 'job 999999999999 does not exist'

# ---------------------------------------------------------------- dag
run "$taskq" submit "${tag}_root" -q "${tag}_dag"
r=$(cat "$work/out")
run "$taskq" submit "${tag}_leaf" -q "${tag}_dag" -a "$r"
l=$(cat "$work/out")
run "$taskq" dag "$l"
check dag_mermaid 0 '^graph TD$' "^    j$r\\[\"#$r ${tag}_root<br/>pending\"\\]" "^    j$r --> j$l\$"
run "$taskq" dag "$r" --format dot
check dag_dot 0 '^digraph taskq \{$' "^    j$l \\[label=\"#$l ${tag}_leaf" "^    j$r -> j$l;\$" '^\}$'

# ---------------------------------------------------------------- dlq
# an external job (no handler) failed for good: claim it and fail it
dlq_fail() {
    psql_q -c "SELECT taskq.fail(id, 'boom: ${tag}', false)
               FROM taskq.claim(ARRAY['${tag}_dlq'], '${tag}-worker', 1)" >/dev/null
}
run "$taskq" submit "${tag}_doomed" -q "${tag}_dlq" --max-attempts 1
f=$(cat "$work/out")
dlq_fail
assert dlq_job_failed [ "$(psql_q -c "SELECT status FROM taskq.jobs WHERE id = ${f:-0}")" = failed ]
run "$taskq" dlq
check dlq_list 0 '^ *id +queue +job_type +attempts +failed_at +last_error$' "^ *$f +${tag}_dlq +${tag}_doomed +1/1 .* boom: ${tag}\$"
run "$taskq" dlq list --queue "${tag}_elsewhere"
check dlq_list_filter 0 '^\(no failed jobs\)$'
run "$taskq" dlq retry --queue "${tag}_dlq" --type "${tag}_doomed"
check dlq_retry 0 '^retried 1 job$'
assert dlq_retried_pending [ "$(psql_q -c "SELECT status || ' ' || attempts FROM taskq.jobs WHERE id = ${f:-0}")" = "pending 0" ]
run "$taskq" dlq retry "$f"
check_err dlq_retry_not_failed 1 "only failed jobs can be retried"
dlq_fail
run "$taskq" dlq retry "$f"
check dlq_retry_id 0 '^retried 1 job$'
dlq_fail
run "$taskq" dlq purge --older-than '1 hour' --queue "${tag}_dlq"
check dlq_purge_older_than 0 '^purged 0 jobs$'
assert dlq_purge_kept_recent [ "$(psql_q -c "SELECT count(*) FROM taskq.jobs WHERE id = ${f:-0}")" = 1 ]
run "$taskq" dlq purge --queue "${tag}_dlq"
check dlq_purge 0 '^purged 1 job$'
assert dlq_purged_gone [ "$(psql_q -c "SELECT count(*) FROM taskq.jobs WHERE id = ${f:-0}")" = 0 ]

# ---------------------------------------------------------------- watch
# an in-database handler, so the executors drive pending -> running -> succeeded
psql_q -c "CREATE FUNCTION public.${tag}_noop(payload jsonb) RETURNS jsonb
           LANGUAGE sql AS \$\$ SELECT '{\"done\": true}'::jsonb \$\$;
           SELECT taskq.register_handler('${tag}_noop', 'public.${tag}_noop(jsonb)')" >/dev/null

PGAPPNAME="${tag}_watch" "$taskq" watch --queue "${tag}_w" >"$work/watch.out" 2>"$work/watch.err" &
wpid=$!
pids+=("$wpid")
if wait_for 30 listening "${tag}_watch"; then
    echo "cli watch_listens ... ok"
else
    fail watch_listens "taskq watch is not listening after 30s"
fi
other=$("$taskq" submit "${tag}_ext" -q "${tag}_other")
w1=$("$taskq" submit "${tag}_ext" -q "${tag}_w")
w2=$("$taskq" submit "${tag}_noop" -q "${tag}_w")
psql_q -c "SELECT taskq.cancel($w1)" >/dev/null
watch_line() { grep -qE "^[0-9:.]+ +$1 +$2 +${tag}_w +$3 +$4\$" "$work/watch.out"; }
if wait_for 60 watch_line "$w2" "${tag}_noop" succeeded 1; then
    echo "cli watch_handler_succeeded ... ok"
else
    cp "$work/watch.out" "$work/out"; cp "$work/watch.err" "$work/err"
    fail watch_handler_succeeded "no 'succeeded' line for job $w2 within 60s"
fi
cp "$work/watch.out" "$work/out"
: >"$work/err"
rc=0
check watch_transitions 0 \
    "^[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} +$w1 +${tag}_ext +${tag}_w +pending +0\$" \
    "^[0-9:.]+ +$w1 +${tag}_ext +${tag}_w +cancelled +0\$" \
    "^[0-9:.]+ +$w2 +${tag}_noop +${tag}_w +pending +0\$" \
    "^[0-9:.]+ +$w2 +${tag}_noop +${tag}_w +running +1\$"
assert watch_order [ "$(grep -E " $w2 " "$work/watch.out" | awk '{print $5}' | tr '\n' ' ')" = "pending running succeeded " ]
not_watched() { [ -n "$other" ] && ! grep -qE " $other " "$work/watch.out"; }
assert watch_queue_filter not_watched
kill -INT "$wpid"
if wait_for 10 gone "$wpid"; then
    wait "$wpid"
    wrc=$?
    assert watch_sigint_exit_0 [ "$wrc" = 0 ]
    assert watch_sigint_quiet [ ! -s "$work/watch.err" ]
else
    fail watch_sigint_exit_0 "taskq watch still running 10s after SIGINT"
fi

# --count: exits by itself after N transitions
PGAPPNAME="${tag}_watch1" "$taskq" watch --count 1 --queue "${tag}_w1" >"$work/watch1.out" 2>&1 &
w1pid=$!
pids+=("$w1pid")
wait_for 30 listening "${tag}_watch1"
c1=$("$taskq" submit "${tag}_ext" -q "${tag}_w1")
if wait_for 30 gone "$w1pid"; then
    wait "$w1pid"
    rc=$?
    cp "$work/watch1.out" "$work/out"
    check watch_count 0 "^[0-9:.]+ +$c1 +${tag}_ext +${tag}_w1 +pending +0\$"
else
    fail watch_count "taskq watch --count 1 still running after its transition"
fi

# a role that is not an admin watches its own jobs only, not the superuser's
psql_q -c "CREATE ROLE ${tag}_user LOGIN PASSWORD '${tag}_pw';
           DO \$\$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'taskq_user') THEN
               GRANT taskq_user TO ${tag}_user; END IF; END \$\$" >/dev/null
PGUSER="${tag}_user" PGPASSWORD="${tag}_pw" PGAPPNAME="${tag}_watch3" "$taskq" watch >"$work/watch3.out" 2>&1 &
w3pid=$!
pids+=("$w3pid")
wait_for 30 listening "${tag}_watch3"
theirs=$("$taskq" submit "${tag}_secret" -q "${tag}_w3_secret")
mine=$(PGUSER="${tag}_user" PGPASSWORD="${tag}_pw" "$taskq" submit "${tag}_mine" -q "${tag}_w3")
watch3_mine() { grep -qE "^[0-9:.]+ +$mine +${tag}_mine +${tag}_w3 +pending +0\$" "$work/watch3.out"; }
if wait_for 30 watch3_mine; then
    echo "cli watch_own_jobs ... ok"
else
    cp "$work/watch3.out" "$work/out"
    fail watch_own_jobs "no line for the role's own job $mine within 30s"
fi
not_theirs() { [ -n "$theirs" ] && ! grep -qE " $theirs |_secret" "$work/watch3.out"; }
assert watch_not_others_jobs not_theirs
kill -INT "$w3pid"
wait_for 10 gone "$w3pid"

# a lost connection ends watch with status 1 and the reason on stderr
PGAPPNAME="${tag}_watch2" "$taskq" watch >/dev/null 2>"$work/watch2.err" &
w2pid=$!
pids+=("$w2pid")
wait_for 30 listening "${tag}_watch2"
psql_q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '${tag}_watch2'" >/dev/null
if wait_for 30 gone "$w2pid"; then
    wait "$w2pid"
    rc=$?
    cp "$work/watch2.err" "$work/err"
    # (libpq says it differently over SSL, which newer Debian clusters use)
    check_err watch_connection_lost 1 \
        '^taskq: error: (server closed the connection|SSL connection has been closed unexpectedly)'
else
    fail watch_connection_lost "taskq watch still running after its backend was terminated"
fi

# ---------------------------------------------------------------- top
run "$taskq" top --once
check top_once 0 '^taskq top ' '^Resources +cpu [0-9]+/[0-9]+ units' '^Throughput' '^Health' '^Queues' \
    "^  ${tag}_delayed +1 +0 +0 +0\$" '^Workers' ' executor '
assert top_once_plain ! grep -q $'\033' "$work/out"

if command -v tmux >/dev/null; then
    # a tmux server per screen: killing a server's last session ends it, and a
    # new session asked of a server that is ending fails
    tmux_cmd() { tmux -L "$tmux_sock-$name" -f /dev/null "$@"; }
    # after top, the pane's shell records the terminal's modes and stays
    # (reading a line) so we can see the screen top left behind
    top_in_tmux() {
        local name=$1 key=$2
        rm -f "$work/$name.rc" "$work/$name.stty"
        tmux_cmd new-session -d -s "$name" -x 120 -y 40 \
            "'$taskq' top --interval 0.3 --queue '${tag}%'; echo \$? > '$work/$name.rc'; stty -a > '$work/$name.stty'; read line"
        pane() { tmux_cmd capture-pane -p -t "$name" > "$work/out" 2>/dev/null; }
        # a capture can catch a redraw half-way: wait for a complete screen
        drawn() { pane && grep -q '^taskq top ' "$work/out" && grep -q "^  ${tag}_delayed " "$work/out" &&
                  grep -q "^  ${tag}_a " "$work/out" && grep -q '^Resources ' "$work/out" &&
                  grep -q '^  claimed ' "$work/out" && grep -q ' launcher ' "$work/out" &&
                  grep -q ' executor ' "$work/out"; }
        : >"$work/err"
        if ! wait_for 30 drawn; then
            fail "${name}_draws" "the top screen did not show up within 30s"
            return
        fi
        rc=0
        check "${name}_draws" 0 '^taskq top .* \(q quits\)' '^Resources +cpu' '^  claimed ' "^Queues LIKE ${tag}%\$" \
            '^  queue +pending +running +blocked +failed +paused +throttled$' "^  ${tag}_delayed +1 +0 +0 +0\$" \
            "^  ${tag}_a +1 +0 +0 +0\$" '^Workers' '^ +pid +kind +state +job ' ' launcher ' ' executor '
        tmux_cmd send-keys -t "$name" "$key"
        if wait_for 10 test -s "$work/$name.rc"; then
            assert "${name}_exits_0" [ "$(cat "$work/$name.rc")" = 0 ]
            wait_for 10 test -s "$work/$name.stty"
            restored() {
                grep -qE '(^| )icanon( |;|$)' "$1" && grep -qE '(^| )echo( |;|$)' "$1" &&
                    grep -qE '(^| )isig( |;|$)' "$1" && ! grep -qE '(^| )-(icanon|echo|isig)( |;|$)' "$1"
            }
            assert "${name}_terminal_restored" restored "$work/$name.stty"
            # tmux's view of the pane: back on the normal screen, cursor shown
            assert "${name}_screen_restored" [ "$(tmux_cmd display-message -p -t "$name" \
                                                  '#{alternate_on} #{cursor_flag}')" = "0 1" ]
        else
            fail "${name}_exits_0" "taskq top did not exit within 10s of key $key"
        fi
        tmux_cmd kill-session -t "$name" 2>/dev/null
    }
    top_in_tmux top q
    top_in_tmux top_ctrl_c C-c
else
    echo "cli top_tmux ... FAILED"
    echo "    tmux is not installed (scripts/deps.sh installs it)"
fi
exit 0
