#!/usr/bin/env bash
# README's "Production install", command by command, on a Debian cluster
# made with pg_createcluster: database first, conf.d settings and the
# worker budget, extensions, roles, autovacuum, checks as the roles, a
# schedule pg_cron really runs, an external worker through pgbouncer in
# transaction pooling, upgrade from 0.1.0, uninstall (DROP EXTENSION
# removes the pg_cron jobs; the roles are dropped last).  Prints
# "production NAME ... ok|FAILED" lines.  Run as root; taskq must be
# installed for the cluster's PostgreSQL (CI: `make install` first).
#
# TASKQ_PG (15), TASKQ_PROD_PORT (54454) and TASKQ_PROD_CLUSTER pick the
# cluster.  TASKQ_BINDIR=<bin directory of another installation of the
# same major version> starts the server from there instead of
# pg_ctlcluster (to try a private `make install` without touching the
# system's; everything else is unchanged).
set -uo pipefail
cd "$(dirname "$0")/.."
ver=${TASKQ_PG:-15}
port=${TASKQ_PROD_PORT:-54454}
bouncer_port=$((port + 1))
name=${TASKQ_PROD_CLUSTER:-taskq_prod_$$}
conf=/etc/postgresql/$ver/$name
data=/var/lib/postgresql/$ver/$name
work=$(mktemp -d -t taskq-prod.XXXXXX)
chmod 755 "$work"
chown postgres: "$work"

failures=0
report() {
    if [ "$2" = 0 ]; then echo "production $1 ... ok"; else echo "production $1 ... FAILED"; failures=$((failures + 1)); fi
}
check() { local what=$1; shift; "$@" >/dev/null 2>>"$work/errors"; report "$what" $?; }
as_pg() { runuser -u postgres -- "$@"; }
psql_pg() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$port" "$@"; }
# a role's session over TCP with its password (Debian's pg_hba.conf: scram)
psql_as() {
    local role=$1 db=$2; shift 2
    PGPASSWORD="$role-secret" psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$role" -d "$db" "$@"
}
cluster() {  # start|stop|restart
    if [ -n "${TASKQ_BINDIR:-}" ]; then
        as_pg "$TASKQ_BINDIR/pg_ctl" -D "$data" -o "-c config_file=$conf/postgresql.conf" \
            -l "$work/server.log" -w -t 60 "$1" >/dev/null
    else
        pg_ctlcluster "$ver" "$name" "$1"
    fi
}
cleanup() {
    if [ "$failures" -gt 0 ] && [ -s "$work/errors" ]; then
        echo "# errors:"; tail -40 "$work/errors" | sed 's/^/# /'
    fi
    [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null
    if [ -d "$conf" ]; then
        cluster stop >/dev/null 2>&1
        pg_dropcluster --stop "$ver" "$name" >/dev/null 2>&1
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if [ "$(id -u)" -ne 0 ] || ! command -v pg_createcluster >/dev/null; then
    echo "production setup ... FAILED (needs root and pg_createcluster)"
    exit 0
fi
if pg_lsclusters -h | awk -v p="$port" '$3 == p { f = 1 } END { exit !f }'; then
    echo "production setup ... FAILED (port $port is taken by another cluster)"
    exit 0
fi

# the cluster, as Debian makes it (pg_hba.conf: peer locally, scram over TCP)
pg_createcluster "$ver" "$name" -p "$port" >/dev/null || { report create_cluster 1; exit 0; }
cluster start || { report start_cluster 1; exit 0; }

# README 1. The database first: taskq.databases must name an existing one.
check createdb as_pg createdb -h /var/run/postgresql -p "$port" app

# README 2. Settings, in conf.d (Debian's postgresql.conf includes it), and
# the worker budget: max_worker_processes >= (1 + taskq.workers) +
# (1 + cron.max_running_jobs) + max_parallel_workers (+ logical replication).
cat >"$conf/conf.d/taskq.conf" <<'EOF'
shared_preload_libraries = 'taskq,pg_cron'
taskq.databases = 'app'
taskq.workers = 4
cron.database_name = 'app'
cron.use_background_workers = on
cron.max_running_jobs = 4
max_worker_processes = 24
max_parallel_workers = 8
EOF
check restart_with_settings cluster restart
check worker_budget_fits test "$(psql_pg -d app -Atc "SELECT current_setting('max_worker_processes')::int >=
    1 + current_setting('taskq.workers')::int + 1 + current_setting('cron.max_running_jobs')::int
      + current_setting('max_parallel_workers')::int")" = t

# README 3. The extensions, in that database, as the superuser.
check create_extensions psql_pg -d app -c 'CREATE EXTENSION pg_cron; CREATE EXTENSION taskq;'

# README 4. Roles: the application, its external workers, the monitoring.
check create_roles psql_pg -d app <<'EOF'
CREATE ROLE app LOGIN PASSWORD 'app-secret' IN ROLE taskq_user;
CREATE ROLE app_worker LOGIN PASSWORD 'app_worker-secret' IN ROLE taskq_worker;
CREATE ROLE app_monitor LOGIN PASSWORD 'app_monitor-secret' IN ROLE taskq_monitor;
CREATE ROLE app_ops LOGIN PASSWORD 'app_ops-secret' IN ROLE taskq_admin;
EOF

# README 5. Autovacuum for taskq.jobs (updated at every transition).
check autovacuum psql_pg -d app -c "ALTER TABLE taskq.jobs SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
    ALTER TABLE taskq.job_logs SET (autovacuum_vacuum_insert_scale_factor = 0.05);"

# README 6. Check: the workers are up, health() is all ok, as the monitor.
up=1
for _ in $(seq 1 120); do
    n=$(psql_as app_monitor app -c "SELECT count(*) FROM taskq.workers WHERE kind = 'executor'" 2>/dev/null)
    [ "${n:-0}" = 4 ] && { up=0; break; }
    sleep 0.5
done
report executors_up $up
fails=$(psql_as app_monitor app -c "SELECT string_agg(check_name || ': ' || message, '; ') FROM taskq.health() WHERE status = 'fail'")
[ -z "$fails" ]; report health_ok $?
[ -n "$fails" ] && echo "# $fails"

# The application submits, an in-database handler and an external worker
# run its jobs, a schedule fires through pg_cron (background workers).
check create_handler psql_pg -d app -c "CREATE FUNCTION public.echo(payload jsonb) RETURNS jsonb
    LANGUAGE sql AS 'SELECT payload'; GRANT EXECUTE ON FUNCTION public.echo(jsonb) TO app"
check register_handler psql_as app_ops app -c "SELECT taskq.register_handler('echo', 'public.echo(jsonb)')"
job=$(psql_as app app -c "SELECT taskq.submit('echo', '{\"n\": 1}')")
check handler_job_runs test "$(psql_as app app -c "SELECT taskq.wait(ARRAY[$job], '60 s') AND
    (SELECT status FROM taskq.jobs WHERE id = $job) = 'succeeded'")" = t
check schedule_accepted psql_as app app -c "SELECT taskq.schedule('tick', '* * * * *', 'echo', '{\"from\": \"cron\"}')"
ran=1
for _ in $(seq 1 150); do
    [ "$(psql_as app app -c "SELECT count(*) FROM taskq.jobs WHERE payload = '{\"from\": \"cron\"}' AND status = 'succeeded'")" -ge 1 ] && { ran=0; break; }
    sleep 1
done
report schedule_runs_as_app $ran

# README 7. Pooler: transaction pooling carries submit/claim/complete (one
# statement each, no session state); LISTEN needs a session (direct).
cat >"$work/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$port dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
auth_type = plain
auth_file = $work/users.txt
pool_mode = transaction
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
EOF
echo '"app_worker" "app_worker-secret"' >"$work/users.txt"
echo '"app" "app-secret"' >>"$work/users.txt"
if command -v pgbouncer >/dev/null; then
    as_pg pgbouncer -d "$work/pgbouncer.ini" >/dev/null 2>&1
    for _ in $(seq 1 40); do
        PGPASSWORD=app-secret psql -X -At -h 127.0.0.1 -p "$bouncer_port" -U app -d app -c 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.25
    done
    ext=$(PGPASSWORD=app-secret psql -X -At -h 127.0.0.1 -p "$bouncer_port" -U app -d app \
          -c "SELECT taskq.submit('external_kind', '{}', queue => 'ext')")
    PGPASSWORD=app_worker-secret psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$bouncer_port" -U app_worker -d app >/dev/null 2>&1 <<EOF
SELECT id FROM taskq.claim(ARRAY['ext'], 'worker-1', 1, '1 minute');
SELECT taskq.heartbeat($ext, 'worker-1');
SELECT taskq.complete($ext, '{"done": true}', 'worker-1');
EOF
    check pooled_external_worker test "$(psql_as app app -c "SELECT status FROM taskq.jobs WHERE id = ${ext:-0}")" = succeeded
    kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null
else
    echo "production pooled_external_worker ... FAILED (pgbouncer missing: scripts/deps.sh)"
fi

# the metrics as the monitoring role sees them
check metrics_as_monitor test "$(psql_as app_monitor app -c "SELECT sum(value) FROM taskq.metrics()
    WHERE metric = 'taskq_jobs_completed_total' AND labels->>'outcome' = 'succeeded'")" -ge 3

# README 8. Upgrade: install the new files, restart, ALTER EXTENSION UPDATE
# in the database (here from a 0.1.0 schema, made again: until the update
# the workers wait and calls fail with 55000 and the hint to update).
check reinstall_0_1_0 psql_pg -d app -c "DROP EXTENSION taskq; CREATE EXTENSION taskq VERSION '0.1.0'"
check old_schema_refused test "$(psql_as app_ops app -c "SELECT taskq.submit('x')" 2>&1 | grep -c 'ALTER EXTENSION taskq UPDATE')" -ge 1
check upgrade_restart cluster restart
check alter_extension_update psql_pg -d app -c 'ALTER EXTENSION taskq UPDATE'
check upgraded test "$(psql_pg -d app -Atc "SELECT extversion FROM pg_extension WHERE extname = 'taskq'")" = 0.2.0
up=1
for _ in $(seq 1 120); do
    [ "$(psql_as app_monitor app -c "SELECT count(*) FROM taskq.health() WHERE status = 'fail'" 2>/dev/null)" = 0 ] && { up=0; break; }
    sleep 0.5
done
report health_after_upgrade $up

# README 9. Uninstall: DROP EXTENSION removes taskq's pg_cron jobs; then the
# settings; the roles last (cluster-wide: once no database has taskq).
check schedule_before_uninstall psql_as app app -c "SELECT taskq.schedule('nightly', '0 3 * * *', 'echo')"
check roles_kept_while_installed test "$(psql_pg -d postgres -c 'DROP ROLE taskq_user' 2>&1 | grep -c 'in database app')" -ge 1
check drop_extension psql_pg -d app -c 'DROP EXTENSION taskq'
check no_pg_cron_jobs_left test "$(psql_pg -d app -Atc "SELECT count(*) FROM cron.job WHERE jobname LIKE 'taskq:%'")" = 0
rm -f "$conf/conf.d/taskq.conf"
check restart_without_taskq cluster restart
check drop_app_roles_objects psql_pg -d app <<'EOF'
REASSIGN OWNED BY app, app_worker, app_monitor, app_ops TO postgres;
DROP OWNED BY app, app_worker, app_monitor, app_ops;
EOF
check drop_roles psql_pg -d postgres <<'EOF'
DROP ROLE app, app_worker, app_monitor, app_ops;
DROP ROLE taskq_admin, taskq_worker, taskq_monitor, taskq_user;
EOF
check no_roles_left test "$(psql_pg -d postgres -Atc "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'taskq\_%'")" = 0
exit 0
