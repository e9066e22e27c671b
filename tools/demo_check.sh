#!/usr/bin/env bash
# Run the README's demo (tools/demo.py) on a throwaway database and say in one line how it went.
# The demo itself checks that every booked operation was imported exactly once and that the
# balances agree, and this script that matching reconciled operations automatically and none
# wrongly; either exits non-zero otherwise. Skipped, in one line, when no Odoo 18 is found.
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
# The books close: operations reconciled automatically, none with anything else than what it
# pays (the demo judges against the invoices and bills it made).
summary=$(grep -Eo '[0-9]+ of [0-9]+ operations reconciled automatically, [0-9]+ with a suggestion, [0-9]+ wrong' "$log" | tail -1)
read -r auto _of _total _rest <<<"$summary"
wrong=$(sed -E 's/.* ([0-9]+) wrong$/\1/' <<<"$summary")
if [ -z "$summary" ] || [ "$wrong" != 0 ] || [ "$auto" -le 0 ]; then
    tail -40 "$log"
    echo "demo: FAILED (matching: '${summary:-no summary line}'; full output in $log)"
    exit 1
fi
echo "demo: ok in $(( $(date +%s) - started )) s ($(grep -c 'each imported exactly once' "$log") accounts imported exactly once; $summary; output in $log)"
