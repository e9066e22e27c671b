#!/usr/bin/env bash
# Run the README's demo (tools/demo.py) on a throwaway database and say in one line how it went.
# The demo itself checks that every booked operation was imported exactly once and that the
# balances agree; it exits non-zero otherwise. Skipped, in one line, when no Odoo 18 is found.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${ODOO_PYTHON:-python3}
db=${BSA_DEMO_CHECK_DB:-bsa_demo_check}
log=/tmp/${db}_$$.log

if ! "$py" -c 'import odoo, sys; sys.exit(odoo.release.version_info[0] != 18)' 2>/dev/null; then
    echo "SKIPPED: demo not run: no Odoo 18 importable by $py (see DEVELOPERS.md to install one)"
    exit 0
fi
started=$(date +%s)
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" "$repo/tools/demo.py" --db "$db" >"$log" 2>&1
rc=$?
env PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-$(id -un)}" \
    dropdb --if-exists "$db" >/dev/null 2>&1
if [ $rc -ne 0 ]; then
    tail -40 "$log"
    echo "demo: FAILED (exit $rc, full output in $log)"
    exit $rc
fi
echo "demo: ok in $(( $(date +%s) - started )) s ($(grep -c 'each imported exactly once' "$log") accounts imported exactly once; output in $log)"
