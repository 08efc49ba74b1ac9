#!/usr/bin/env bash
# The update script is its parts joined (Makefile: `make update-script`):
# an edit made to sql/taskq--0.1.0--0.2.0.sql alone, or to a part without
# joining them again, fails here.  Prints one "docs NAME ... ok|FAILED" line.
cd "$(dirname "$0")/../.."
if cat sql/0.2.0/*.sql | cmp -s - sql/taskq--0.1.0--0.2.0.sql; then
    echo "docs update_script_is_its_parts ... ok"
else
    echo "docs update_script_is_its_parts ... FAILED (run: make update-script)"
fi
