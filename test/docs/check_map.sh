#!/usr/bin/env bash
# The map (src/README.md) names only what exists: every `name()` it cites is
# a C function, macro or SQL function defined in src/ or sql/, and every
# `src/...` or `test/...` path it cites is in the tree.  Prints one
# "docs NAME ... ok|FAILED" line (test/run.sh counts it).
cd "$(dirname "$0")/../.."
map=src/README.md
missing=()
for f in $(grep -o '`[A-Za-z_][A-Za-z0-9_.]*()`' "$map" | tr -d '`()' | sort -u); do
    name=${f##*.}
    if ! grep -qE "(^|[^A-Za-z0-9_])$name[[:space:]]*\(" src/*.c src/*.h sql/taskq--*.sql; then
        missing+=("$f()")
    fi
done
for p in $(grep -oE '`(src|sql|test|expected)/[A-Za-z0-9_./*-]*`' "$map" | tr -d '`' | sort -u); do
    case $p in *NN_*) continue ;; esac   # a pattern, not a file
    # shellcheck disable=SC2086
    ls -d $p >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "docs check_map ... ok"
else
    echo "missing from the tree: ${missing[*]}"
    echo "docs check_map ... FAILED"
    exit 1
fi
