#!/usr/bin/env bash
# The Debian packages, end to end (as root): build postgresql-NN-taskq and
# taskq-client from this checkout for the PostgreSQL versions installed here
# (or given as arguments), install them in place of make install's files, run
# debian/tests/smoke (CREATE EXTENSION, a handler's job, the CLI from PATH),
# purge them, and put make install's files back as they were.
# usage: bash test/package.sh [VERSION...]
# One "package NAME ... ok|FAILED" line per check.  The build happens in a
# copy of the checkout in a temp dir: nothing is written to the checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

failed=0
ok() { echo "package $1 ... ok"; }
bad() { echo "package $1 ... FAILED${2:+ ($2)}"; failed=1; }
finish() { [ "$failed" -eq 0 ]; exit; }

[ "$(id -u)" -eq 0 ] || { bad setup "run as root"; finish; }

# versions: the arguments, else every server with headers that debian/pgversions lists
if [ $# -gt 0 ]; then
    versions="$*"
else
    versions=$(for d in /usr/lib/postgresql/*/bin; do
                   v=$(basename "$(dirname "$d")")
                   [ -x "$d/postgres" ] && [ -x "$d/pg_config" ] &&
                       grep -qx "$v" debian/pgversions && echo "$v"
               done | sort -n | xargs)
fi
[ -n "$versions" ] || { bad setup "no PostgreSQL server with headers listed in debian/pgversions"; finish; }
for v in $versions; do
    grep -qx "$v" debian/pgversions || { bad "setup-$v" "$v is not in debian/pgversions"; finish; }
done

# build dependencies (the list is in README "Install from a package")
need=(dpkg-dev debhelper fakeroot libpq-dev postgresql-server-dev-all)
for v in $versions; do need+=("postgresql-$v" "postgresql-server-dev-$v"); done
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
        { bad setup "apt-get install ${missing[*]}"; finish; }
fi

work=$(mktemp -d -t taskq-package.XXXXXX)
chmod 755 "$work"
pkgs=(taskq-client)
for v in $versions; do pkgs+=("postgresql-$v-taskq"); done
backup=
installed=

cleanup() {
    if [ -n "$installed" ]; then
        apt-get purge -y -q "${pkgs[@]}" >/dev/null 2>&1
    fi
    # make install's files, as they were before this script
    if [ -n "$backup" ]; then
        tar -xpPf "$backup" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# the checkout's files (tracked and new, not ignored: no build products)
upstream=$(dpkg-parsechangelog -S Version | sed -e 's/-[^-]*$//')
src="$work/taskq-$upstream"
mkdir "$src"
if git rev-parse --git-dir >/dev/null 2>&1; then
    git ls-files -z -co --exclude-standard --deduplicate |
        tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$src"
else
    cp -a . "$src" && make -s -C "$src" clean >/dev/null 2>&1
fi
tar -C "$work" --exclude="taskq-$upstream/debian" -czf "$work/taskq_$upstream.orig.tar.gz" "taskq-$upstream"

# build source and binary packages for exactly $versions
(
    cd "$src" &&
    PG_SUPPORTED_VERSIONS="$versions" DEB_BUILD_OPTIONS=noddebs \
        dpkg-buildpackage -us -uc
) > "$work/build.log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
    ok build
else
    tail -40 "$work/build.log"
    bad build "dpkg-buildpackage exit $rc"
    finish
fi
if grep -E '(^|: )warning:' "$work/build.log" | grep -vE '^dpkg-[a-z]+: warning:' >"$work/warnings"; then
    cat "$work/warnings"
    bad build-warnings "$(wc -l <"$work/warnings") compiler/linker warnings"
else
    ok build-warnings
fi
grep -E '^dpkg-[a-z]+: warning:' "$work/build.log" | sed -e 's/^/  (packaging) /'

debs=()
for p in "${pkgs[@]}"; do
    deb=$(ls "$work/${p}_"*.deb 2>/dev/null | head -1)
    if [ -n "$deb" ]; then
        debs+=("$deb")
    else
        bad "deb-$p" "not built"
    fi
done
[ ${#debs[@]} -eq ${#pkgs[@]} ] || finish
extra=$(ls "$work"/*.deb | grep -vE "/($(IFS='|'; echo "${pkgs[*]}"))_" | xargs -r -n1 basename)
[ -z "$extra" ] && ok debs || bad debs "unexpected: $extra"

# contents: each version's library, control file and scripts; the CLI once, in /usr/bin
for v in $versions; do
    list=$(dpkg-deb -c "$work/postgresql-${v}-taskq_"*.deb | awk '{print $6}')
    miss=
    for f in "./usr/lib/postgresql/$v/lib/taskq.so" \
             "./usr/share/postgresql/$v/extension/taskq.control" \
             "./usr/share/postgresql/$v/extension/taskq--0.1.0.sql" \
             "./usr/share/postgresql/$v/extension/taskq--0.1.0--0.2.0.sql"; do
        grep -qxF "$f" <<<"$list" || miss="$miss ${f#./}"
    done
    grep -q '/bin/taskq$' <<<"$list" && miss="$miss (has a CLI copy)"
    [ -z "$miss" ] && ok "contents-$v" || bad "contents-$v" "missing:$miss"
done
dpkg-deb -c "$work"/taskq-client_*.deb | awk '{print $6}' | grep -qxF ./usr/bin/taskq &&
    ok contents-client || bad contents-client "no usr/bin/taskq"

# make install's files: save them, then remove them so the test proves the
# packages provide everything
files=()
for v in $versions; do
    pgc=/usr/lib/postgresql/$v/bin/pg_config
    lib=$($pgc --pkglibdir) share=$($pgc --sharedir) bin=$($pgc --bindir)
    for f in "$lib/taskq.so" "$lib/bitcode/taskq.index.bc" "$lib/bitcode/taskq" \
             "$share/extension/taskq.control" "$share"/extension/taskq--*.sql "$bin/taskq"; do
        [ -e "$f" ] && ! dpkg -S "$f" >/dev/null 2>&1 && files+=("$f")
    done
done
[ -L /usr/local/bin/taskq ] && files+=(/usr/local/bin/taskq)
if [ ${#files[@]} -gt 0 ]; then
    tar -cpPf "$work/make-install.tar" "${files[@]}" && backup="$work/make-install.tar" &&
        rm -rf "${files[@]}" || { bad setup "saving make install's files"; finish; }
fi

installed=yes
if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${debs[@]}" \
        > "$work/install.log" 2>&1; then
    ok install
else
    tail -20 "$work/install.log"
    bad install
    finish
fi
for v in $versions; do
    owner=$(dpkg -S "/usr/lib/postgresql/$v/lib/taskq.so" 2>/dev/null | cut -d: -f1)
    [ "$owner" = "postgresql-$v-taskq" ] && ok "owns-$v" || bad "owns-$v" "taskq.so owner: '$owner'"
done

# the installed packages at work (debian/tests/smoke prints its own lines)
bash "$src/debian/tests/smoke" $versions || failed=1

apt-get purge -y -q "${pkgs[@]}" > "$work/purge.log" 2>&1
left=
for v in $versions; do
    [ -e "/usr/lib/postgresql/$v/lib/taskq.so" ] && left="$left taskq.so($v)"
done
[ -e /usr/bin/taskq ] && left="$left /usr/bin/taskq"
if [ -z "$left" ] && ! dpkg -l "${pkgs[@]}" 2>/dev/null | grep -q '^ii'; then
    installed=
    ok purge
else
    bad purge "left:$left"
fi
finish
