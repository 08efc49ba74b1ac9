#!/usr/bin/env bash
# taskq benchmark: one command.  Installs what it needs (Debian packages via
# scripts/deps.sh, taskq itself, graphile-worker and pg-boss from npm at the
# versions pinned in bench/package-lock.json), starts one throwaway
# PostgreSQL 15 server and runs bench/bench.py against it.
#
#   bash bench/run.sh            full run (about 40 minutes on 2 cores)
#   bash bench/run.sh --quick    smoke run: tiny sizes, one run (< 3 minutes)
#
# Other options are bench.py's (--no-peers, --only, --out-dir, --report,
# --keep, --pg-stat-statements; see python3 bench/bench.py --help), plus
# --no-install: skip deps.sh and make install (taskq must be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
command="bash bench/run.sh${*:+ $*}"

install=1
args=()
for a in "$@"; do
    case "$a" in
        --no-install) install=0 ;;
        *) args+=("$a") ;;
    esac
done

if [ "$install" -eq 1 ]; then
    bash scripts/deps.sh
    # build and install taskq (no `make clean`: others may build in this tree)
    make -s >/dev/null
    if [ "$(id -u)" -eq 0 ]; then
        make -s install >/dev/null
    else
        echo "bench: not root, using the taskq already installed" >&2
    fi
fi
export PATH=/usr/lib/postgresql/15/bin:$PATH

# graphile-worker and pg-boss, exactly as pinned (package-lock.json)
peers_why=""
case " ${args[*]-} " in
    *" --no-peers "*) ;;
    *)
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
            peers_why="node/npm not installed"
        elif ! (cd bench && { [ -d node_modules/graphile-worker ] && [ -d node_modules/pg-boss ] &&
                             [ node_modules/.package-lock.json -nt package-lock.json ] ||
                             npm ci --no-audit --no-fund --loglevel=error >/dev/null; }); then
            peers_why="npm ci failed (no network?)"
        fi
        ;;
esac
if [ -n "$peers_why" ]; then
    echo "bench: skipping graphile-worker and pg-boss: $peers_why" >&2
    args+=(--peers-unavailable "$peers_why")
fi

# Debian's python3 has python3-psycopg (deps.sh); another python3 first in PATH may not
py=python3
python3 -c 'import psycopg' 2>/dev/null || py=/usr/bin/python3
exec "$py" bench/bench.py --command "$command" ${args[@]+"${args[@]}"}
