#!/usr/bin/env bash
# The addon's tests through pytest-odoo, the fast loop of DEVELOPERS.md, on a throwaway copy of
# the test template with the addon installed; or one line saying why not.
#
# CI runs Odoo's own runner for every addon test (tools/addon_tests.sh) and this script once on
# two test classes, so that the pytest-odoo path keeps working. It prints one line: the pytest
# summary, or SKIPPED and why (no Odoo 18, no pytest-odoo, no template database yet).
#
# Usage: tools/addon_pytest.sh [pytest arguments]   default: the two classes below
#   e.g. tools/addon_pytest.sh bank_sync_aggregator/tests/test_sync_engine.py -k history
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${ODOO_PYTHON:-python3}
module=bank_sync_aggregator
default_tests=(
    "$module/tests/test_security.py::TestSecurity"
    "$module/tests/test_link_journal.py::TestLinkJournal"
)

if ! odoo_dir=$("$py" -c 'import odoo, os, sys; sys.exit(1) if odoo.release.version_info[0] != 18 else print(os.path.dirname(odoo.__file__))' 2>/dev/null); then
    echo "SKIPPED: addon tests through pytest-odoo not run: no Odoo 18 importable by $py"
    exit 0
fi
if ! "$py" -c 'import pytest_odoo' 2>/dev/null; then
    echo "SKIPPED: addon tests through pytest-odoo not run: pytest-odoo is not installed for $py" \
        "($py -m pip install -e '$repo[test]', see DEVELOPERS.md)"
    exit 0
fi

rc_file=${ODOO_RC:-$HOME/.odoorc}
odoo_args=(--addons-path="$odoo_dir/addons,$repo" --without-demo=all)
pytest_odoo_args=(--odoo-addons-path="$odoo_dir/addons,$repo")
db_args=()
if [ -f "$rc_file" ]; then
    odoo_args=(-c "$rc_file" "${odoo_args[@]}")
    pytest_odoo_args+=(--odoo-config="$rc_file")
else
    db_args=(--db_host="${PGHOST:-127.0.0.1}" --db_port="${PGPORT:-5432}" --db_user="${PGUSER:-$(id -un)}")
    for option in "${db_args[@]}"; do pytest_odoo_args+=(--odoo-extra="${option#--}"); done
fi
psql_env=(env PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-$(id -un)}")

template=${BSA_TEMPLATE_DB:-bsa_tpl_account_fr_18}
if ! "${psql_env[@]}" psql -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname='$template'" | grep -q 1; then
    echo "SKIPPED: addon tests through pytest-odoo not run: no template database $template yet" \
        "(tools/addon_tests.sh builds it)"
    exit 0
fi

db="bsa_pytest_$$_$(date +%s)"
log="${TMPDIR:-/tmp}/${db}.log"
filestore_root=$("$py" -c 'import sys; from odoo.tools import config; config.parse_config(sys.argv[1:]); print(config.filestore(""))' \
    "${odoo_args[@]}" 2>/dev/null || true)
cleanup() {
    "${psql_env[@]}" dropdb --if-exists "$db" >/dev/null 2>&1 || true
    if [ -n "$filestore_root" ] && [ -d "$filestore_root/$db" ]; then rm -rf "${filestore_root:?}/$db"; fi
}
trap cleanup EXIT
"${psql_env[@]}" createdb -T "$template" "$db"
if [ -n "$filestore_root" ] && [ -d "$filestore_root/$template" ]; then
    cp -r "$filestore_root/$template" "$filestore_root/$db"
fi
# pytest-odoo tests an installed addon: install it once, as DEVELOPERS.md says to.
if ! PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" -m odoo "${odoo_args[@]}" "${db_args[@]}" \
    -d "$db" -i "$module" --stop-after-init --http-port=0 >"$log" 2>&1; then
    echo "addon (pytest-odoo): the addon did not install on $db (log: $log)"
    tail -20 "$log"
    exit 1
fi

tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=("${default_tests[@]}")
set +e
# `-p odoo` loads pytest-odoo, which pyproject.toml keeps away from the package's own tests.
(cd "$repo" && PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" -m pytest -q -p odoo \
    -p no:cacheprovider --odoo-database="$db" "${pytest_odoo_args[@]}" "${tests[@]}") >>"$log" 2>&1
status=$?
set -e
summary=$(grep -E "^[=]* *[0-9]+ (passed|failed|error|skipped)|no tests ran" "$log" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
echo "addon (pytest-odoo): ${summary:-no summary} (log: $log)"
if [ "$status" -ne 0 ]; then
    grep -E "^(FAILED|ERROR)|Error" "$log" | head -20 || true
    exit 1
fi
