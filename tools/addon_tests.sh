#!/usr/bin/env bash
# Run the addon's tests on a real Odoo 18 and PostgreSQL, or say in one line why not.
#
# Odoo is looked for as an `odoo` package importable by $ODOO_PYTHON (default python3);
# database options come from ~/.odoorc (or $ODOO_RC) when present. A template database with
# `account` and `l10n_fr_account` installed (the modules of tools/odoo_setup.py's template) is
# built once (about a minute) and copied for every run (under a second).
#
# With --oca, the tests of bank_sync_aggregator_reconcile_oca run on a database that also has
# OCA's reconciliation widget (account_reconcile_oca, made available by tools/oca_addons.sh).
#
# Usage: tools/addon_tests.sh [--oca] [TEST_TAGS]
#   e.g. tools/addon_tests.sh /bank_sync_aggregator:TestConnect
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${ODOO_PYTHON:-python3}
module=bank_sync_aggregator
install=$module
tested=$module
label=addon
if [ "${1:-}" = "--oca" ]; then
    shift
    tested=${module}_reconcile_oca
    install=$module,account_reconcile_oca,$tested
    label="addon with OCA's reconciliation"
fi
tags=${1:-/$tested}

if ! odoo_dir=$("$py" -c 'import odoo, os, sys; sys.exit(1) if odoo.release.version_info[0] != 18 else print(os.path.dirname(odoo.__file__))' 2>/dev/null); then
    echo "SKIPPED: addon tests not run: no Odoo 18 importable by $py (see DEVELOPERS.md to install one)"
    exit 0
fi

extra_addons=
if [ "$tested" != "$module" ]; then
    if ! extra_addons=$("$repo/tools/oca_addons.sh" 2>/tmp/bsa_oca_addons.log); then
        echo "SKIPPED: $label tests not run: OCA's modules could not be installed" \
            "(tools/oca_addons.sh; $(tail -1 /tmp/bsa_oca_addons.log))"
        exit 0
    fi
fi

# The browser tests (tours, the picker's unit tests) need Chrome or Chromium, and Python's
# websocket-client (the test extra of pyproject.toml); Odoo skips them, one line each, without.
has_browser() {
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$name" >/dev/null 2>&1 && return 0
    done
    [ -x /usr/bin/chromium ]
}
if ! has_browser; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Debian's chromium for the browser tests (apt-get, once)."
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
            >/tmp/bsa_chromium_install.log 2>&1 || true
    fi
    has_browser || echo "NOTE: no Chrome or Chromium (apt-get install chromium): the browser tests will be skipped"
fi
if ! "$py" -c 'import websocket' >/dev/null 2>&1; then
    echo "NOTE: Python's websocket-client is missing (pip install -e '.[test]'): the browser tests will be skipped"
fi

rc_file=${ODOO_RC:-$HOME/.odoorc}
odoo_args=(--addons-path="$odoo_dir/addons,${extra_addons:+$extra_addons,}$repo" --without-demo=all --log-level=info)
[ -f "$rc_file" ] && odoo_args=(-c "$rc_file" "${odoo_args[@]}")
db_args=()
if [ ! -f "$rc_file" ]; then
    db_args=(--db_host="${PGHOST:-127.0.0.1}" --db_port="${PGPORT:-5432}" --db_user="${PGUSER:-$(id -un)}")
fi
psql_env=(env PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-$(id -un)}")

template=${BSA_TEMPLATE_DB:-bsa_tpl_account_fr_18}
exists() { "${psql_env[@]}" psql -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname='$1'" | grep -q 1; }

if ! exists "$template"; then
    echo "Preparing template database $template (account, French chart module, no demo): about a minute, once."
    building="${template}_building_$$"
    "${psql_env[@]}" dropdb --if-exists "$building"
    "$py" -m odoo "${odoo_args[@]}" "${db_args[@]}" -d "$building" -i account,l10n_fr_account --stop-after-init \
        --http-port=0 >"/tmp/${building}.log" 2>&1 || { tail -30 "/tmp/${building}.log"; exit 1; }
    # Rename only when complete, so an interrupted build never leaves a broken template.
    "${psql_env[@]}" psql -d postgres -qc "ALTER DATABASE \"$building\" RENAME TO \"$template\""
    store=$("$py" -c 'import sys; from odoo.tools import config; config.parse_config(sys.argv[1:]); print(config.filestore(""))' \
        "${odoo_args[@]}" 2>/dev/null || true)
    if [ -n "$store" ] && [ -d "$store/$building" ]; then mv "$store/$building" "$store/$template"; fi
fi

db="bsa_test_$$_$(date +%s)"
log="${TMPDIR:-/tmp}/${db}.log"
cleanup() {
    "${psql_env[@]}" dropdb --if-exists "$db" >/dev/null 2>&1 || true
    if [ -n "${filestore_root:-}" ] && [ -d "$filestore_root/$db" ]; then rm -rf "${filestore_root:?}/$db"; fi
}
trap cleanup EXIT
"${psql_env[@]}" createdb -T "$template" "$db"
# createdb -T copies the database, not its filestore: copy the template's attachments too, so
# the copy never points at missing files.
filestore_root=$("$py" -c 'import sys; from odoo.tools import config; config.parse_config(sys.argv[1:]); print(config.filestore(""))' \
    "${odoo_args[@]}" 2>/dev/null || true)
if [ -n "$filestore_root" ] && [ -d "$filestore_root/$template" ]; then
    cp -r "$filestore_root/$template" "$filestore_root/$db"
fi
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

set +e
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" -m odoo "${odoo_args[@]}" "${db_args[@]}" -d "$db" \
    -i "$install" --test-enable --test-tags "$tags" --stop-after-init \
    --http-interface=127.0.0.1 --http-port="$port" >"$log" 2>&1
status=$?
set -e

# Odoo logs "N failed, M error(s) of T tests" per phase; sum them for one plain closing line.
read -r total failed < <("$py" - "$log" <<'PY'
import re, sys
total = failed = 0
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.search(r"(\d+) failed, (\d+) error\(s\) of (\d+) tests", line)
    if m:
        failed += int(m[1]) + int(m[2]); total += int(m[3])
ran = re.findall(r"(\d+) post-tests in|Ran (\d+) tests?", open(sys.argv[1], errors="replace").read())
print(total, failed)
PY
)
grep -E "(ERROR|CRITICAL|FAIL:|Traceback)" "$log" | grep -v "odoo.tests.stats" | head -80 || true
if [ "$total" -eq 0 ]; then
    # Odoo logs no summary when every test passed: count the tests it ran instead.
    total=$(grep -cE "odoo\.addons\.$tested\.tests\.[a-z_]+: (Starting|running) " "$log" || true)
fi
if [ "$status" -ne 0 ] || grep -qE " (ERROR|CRITICAL) .*($module|Failed to initialize)" "$log"; then
    [ "$failed" -eq 0 ] && failed=1
fi
echo "$label: $((total - failed)) passed, $failed failed"
echo "(full Odoo log: $log)"
if [ "$failed" -ne 0 ] || [ "$total" -eq 0 ]; then
    [ "$total" -eq 0 ] && echo "No $label test ran: that is a failure."
    exit 1
fi
