#!/usr/bin/env bash
# Install what taskq needs to build, test and run, from Debian's packages.
# Safe to run again: it installs only what is missing.  TASKQ_PG picks the
# PostgreSQL major version (15, 17 or 18; default 15).
set -euo pipefail
pg=${TASKQ_PG:-15}

packages=(
    build-essential
    postgresql-$pg
    postgresql-server-dev-$pg
    postgresql-$pg-pgtap
    libtap-parser-sourcehandler-pgtap-perl
    postgresql-$pg-cron
    libpq-dev
    libipc-run-perl
    python3-psycopg
    pgbouncer
    tmux
    sqlsmith
    python3-venv
    python3-setuptools
    python3-wheel
    dpkg-dev
    debhelper
    fakeroot
    postgresql-server-dev-all
    libmicrohttpd-dev
    xxd
    chromium
    chromium-driver
    python3-selenium
    iproute2
    prometheus
    prometheus-postgres-exporter
    python3-yaml
    curl
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "taskq: missing packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "taskq: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
