#!/usr/bin/env bash
# Runs taskq's suite (test/run.sh) against PostgreSQL 17 and 18, each in a
# Debian chroot: 17 from Debian 13 (trixie), 18 from Debian testing (forky).
# Run as root.  The roots are cached outside the checkout, in
# $TASKQ_MATRIX_CACHE (default /var/cache/taskq-matrix), so only the first
# run downloads them.  Usage: test/matrix.sh [--prepare] [MAJOR...]
# (default: 17 18; --prepare only builds the roots and installs packages).
# The last line is "N passed, N failed" summed over the versions.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${TASKQ_MATRIX_CACHE:-/var/cache/taskq-matrix}
prepare_only=0
[ "${1:-}" = --prepare ] && { prepare_only=1; shift; }
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(17 18)

passed=0
failed=0
fail_step() {
    echo "FAILED: $1"
    failed=$((failed + 1))
}

if [ "$(id -u)" -ne 0 ]; then
    fail_step "matrix: must run as root (debootstrap, chroot)"
    echo "$passed passed, $failed failed"
    exit 1
fi

# The Debian mirror this machine's apt already uses; no other host.
mirror() {
    local m
    m=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
            /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v -- '-security' |
        grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1)
    m=${m% }
    echo "${m%/}"
}

# Mounts of the root being used, undone by the trap whatever happens;
# first ends what a failed or timed-out run left running in that root.
mounted=()
active_root=
cleanup() {
    local i p
    if [ -n "$active_root" ]; then
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/root" 2>/dev/null)" = "$active_root" ] && kill -KILL "${p#/proc/}" 2>/dev/null
        done
        active_root=
    fi
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -R "${mounted[i]}" 2>/dev/null || umount -lR "${mounted[i]}" 2>/dev/null
    done
    mounted=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_root() {
    local root=$1
    active_root=$(readlink -f "$root")
    mount -t proc proc "$root/proc" && mounted+=("$root/proc") || return 1
    mount --rbind /dev "$root/dev" && mounted+=("$root/dev") || return 1
    mount --make-rslave "$root/dev"
}

# in_root ROOT CMD...: run a command in the chroot with a clean environment
in_root() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        DEBIAN_FRONTEND=noninteractive \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# make_root SUITE DIR: a minimal Debian root, once; later runs reuse it
make_root() {
    local suite=$1 root=$2 m script=()
    [ -f "$root/.taskq-root-ok" ] && return 0
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null || return 1
    m=$(mirror)
    [ -n "$m" ] || { echo "matrix: no Debian mirror in /etc/apt sources" >&2; return 1; }
    # forky has no debootstrap script yet; it is built like sid
    [ "$suite" = forky ] && script=(/usr/share/debootstrap/scripts/sid)
    rm -rf "$root"
    mkdir -p "$root"
    echo "matrix: debootstrap $suite from $m into $root"
    debootstrap --variant=minbase "$suite" "$root" "$m" "${script[@]}" \
        > "$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log"; return 1; }
    # testing's Release file may be past its Valid-Until
    echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99taskq"
    # no services start in the chroot; packages create no default cluster
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    mkdir -p "$root/etc/postgresql-common/createcluster.d"
    echo 'create_main_cluster = false' > "$root/etc/postgresql-common/createcluster.d/taskq.conf"
    touch "$root/.taskq-root-ok"
}

run_version() {
    local pg=$1 suite root log last ok bad
    case $pg in
        17) suite=trixie ;;
        18) suite=forky ;;
        *) fail_step "matrix: PostgreSQL $pg is not in the matrix (17, 18)"; return ;;
    esac
    root=$cache/$suite
    mkdir -p "$cache"
    make_root "$suite" "$root" || { fail_step "matrix $pg: debootstrap $suite"; return; }
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null
    mount_root "$root" || { cleanup; fail_step "matrix $pg: mounts"; return; }

    if [ "$prepare_only" = 1 ]; then
        in_root "$root" mkdir -p /taskq-deps
        cp "$repo/scripts/deps.sh" "$root/taskq-deps/deps.sh"
        if in_root "$root" env TASKQ_PG="$pg" bash /taskq-deps/deps.sh; then
            passed=$((passed + 1))
        else
            fail_step "matrix $pg: packages"
        fi
        cleanup
        return
    fi

    # a copy of the checkout, without git metadata and build products; the
    # previous run's logs and clusters go
    rm -rf "$root/taskq" "$root"/tmp/taskq-*
    mkdir -p "$root/taskq"
    tar -C "$repo" --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
        --exclude=./build.log --exclude=./results --exclude=./tmp_check -cf - . |
        tar -C "$root/taskq" -xf -

    log=$cache/$suite.run.log
    echo "== matrix: PostgreSQL $pg in $suite"
    # deps.sh (called by run.sh) runs apt-get update + install only when
    # a package is missing, so a warm root starts testing at once
    # (bounded: a hung run must not eat CI's budget; the 15 suite takes ~10 min;
    # its own port for the production-install cluster, so that two versions
    # can run at once)
    timeout --kill-after=30 "${TASKQ_MATRIX_TIMEOUT:-2400}" \
        chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        TASKQ_PG="$pg" TASKQ_MATRIX=0 TASKQ_BENCH=0 TASKQ_PROD_PORT=$((54404 + 10 * pg)) \
        bash /taskq/test/run.sh 2>&1 | tee "$log" | sed -u "s/^/[pg$pg] /"
    in_root "$root" apt-get clean
    cleanup

    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    if [ -z "$last" ]; then
        fail_step "matrix $pg: run.sh gave no result line (log: $log)"
        return
    fi
    ok=${last%% passed*}
    bad=${last#*, }
    bad=${bad%% failed}
    echo "matrix PostgreSQL $pg: $last"
    passed=$((passed + ok))
    failed=$((failed + bad))
}

# (in a function: bash reads a script as it runs, and a checkout edited
# meanwhile must not change what runs)
main() {
    local v
    for v in "${versions[@]}"; do
        run_version "$v"
    done
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
main
exit
