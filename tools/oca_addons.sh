#!/usr/bin/env bash
# Make OCA's reconciliation modules for Odoo 18 available to the addon tests, and print the
# folder to add to Odoo's addons path (nothing when Odoo finds them by itself).
#
# Users install them from PyPI into Odoo's Python (`pip install odoo-addon-account-reconcile-oca`),
# where they land in site-packages/odoo/addons; Odoo finds them there when its own source tree
# is on sys.path through a .pth file or installed non-editable (see DEVELOPERS.md). When they
# are not there, the pinned wheels below are installed, without their dependencies (they
# require an "odoo" distribution that a source install is not), into a cache folder of their
# own, so that nothing of the machine's Python changes.
#
# Usage: tools/oca_addons.sh   (prints the addons folder, or nothing; exit 1 when unavailable)
set -euo pipefail

py=${ODOO_PYTHON:-python3}
cache=${BSA_OCA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bank_sync_aggregator/oca-18.0}
# The versions the tests were written against (pip's names; their modules:
# account_reconcile_oca, account_reconcile_model_oca, account_statement_base).
wheels=(
    "odoo-addon-account-reconcile-oca==18.0.1.3.0.1"
    "odoo-addon-account-reconcile-model-oca==18.0.1.2.0"
    "odoo-addon-account-statement-base==18.0.1.3.1"
)

found_by_odoo() {
    "$py" - "$1" <<'PY'
import sys, os, pkgutil
import odoo.addons
folder = sys.argv[1]
paths = list(odoo.addons.__path__) + ([folder] if folder else [])
names = ("account_reconcile_oca", "account_reconcile_model_oca", "account_statement_base")
sys.exit(0 if all(any(os.path.isfile(os.path.join(p, n, "__manifest__.py")) for p in paths) for n in names) else 1)
PY
}

if found_by_odoo ""; then
    exit 0
fi
if ! found_by_odoo "$cache/odoo/addons"; then
    "$py" -m pip install -q --disable-pip-version-check --no-deps --target "$cache" "${wheels[@]}" \
        >&2 || exit 1
    found_by_odoo "$cache/odoo/addons" || exit 1
fi
echo "$cache/odoo/addons"
