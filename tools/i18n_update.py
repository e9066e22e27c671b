#!/usr/bin/env python3
"""Regenerate the addon's .pot from a real Odoo, merge it into i18n/fr.po, list what is left.

Usage: python3 tools/i18n_update.py [--db DATABASE]

Without --db, a throwaway copy of the test template database is made, the addon installed in
it, the terms exported, and the copy dropped. New terms enter fr.po untranslated; terms no
longer used are dropped. Translate the listed terms, then run it again (idempotent).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polib

REPO = Path(__file__).resolve().parent.parent
I18N = REPO / "bank_sync_aggregator" / "i18n"
sys.path.insert(0, str(REPO))

# isort: split
from tools.odoo_setup import TEMPLATE_DB as TEMPLATE  # noqa: E402  (the repository on the path)


def odoo_cmd(db: str, *args: str) -> list[str]:
    """The odoo command line for ``db`` with this repository on the addons path."""
    import odoo  # noqa: PLC0415  (only needed here, after argument parsing)

    base = Path(odoo.__file__).parent / "addons"
    cmd = [sys.executable, "-m", "odoo", f"--addons-path={base},{REPO}", "-d", db]
    rc = Path(os.environ.get("ODOO_RC", Path.home() / ".odoorc"))
    if rc.exists():
        cmd[3:3] = ["-c", str(rc)]
    return [*cmd, *args]


def export_pot(db: str) -> polib.POFile:
    """Export the addon's terms from ``db`` (where the addon is installed or installable)."""
    with tempfile.TemporaryDirectory() as tmp:
        pot_path = Path(tmp) / "bank_sync_aggregator.pot"
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
        subprocess.run(
            odoo_cmd(db, "-i", "bank_sync_aggregator", "--stop-after-init", "--http-port=0"),
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            odoo_cmd(
                db,
                f"--i18n-export={pot_path}",
                "--modules=bank_sync_aggregator",
                "--stop-after-init",
                "--http-port=0",
            ),
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        return polib.pofile(str(pot_path))


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="existing database to export from")
    args = parser.parse_args()
    db = args.db or f"bsa_i18n_{os.getpid()}"
    if not args.db:
        subprocess.run(["createdb", "-T", TEMPLATE, db], check=True)
    try:
        pot = export_pot(db)
    finally:
        if not args.db:
            subprocess.run(["dropdb", "--if-exists", db], check=False)
    I18N.mkdir(exist_ok=True)
    pot.save(str(I18N / "bank_sync_aggregator.pot"))
    fr_path = I18N / "fr.po"
    fr = polib.pofile(str(fr_path)) if fr_path.exists() else polib.POFile()
    fr.metadata = {
        **pot.metadata,
        "Language": "fr",
        "Plural-Forms": "nplurals=2; plural=(n > 1);",
        "Content-Type": "text/plain; charset=UTF-8",
    }
    fr.merge(pot)
    # polib's merge keeps obsolete entries; a term the code no longer has is dropped.
    for entry in [e for e in fr if e.obsolete]:
        fr.remove(entry)
    fr.save(str(fr_path))
    missing = [e.msgid for e in fr if not e.msgstr or "fuzzy" in e.flags]
    print(f"{len(pot)} terms; {len(missing)} without a French translation")
    for msgid in missing:
        print(f"  - {msgid!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
