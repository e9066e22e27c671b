#!/usr/bin/env python3
"""Install, upgrade and uninstall the addon next to languages, on real databases.

Two scenarios, each on its own copy of the test template (``tools/odoo_setup.py``), each with
a French company on the French chart (``l10n_fr_account``):

- ``french-first``: French is added (Settings > Languages > Add Languages) before the addon is
  installed; the addon then installs with its French terms, and upgrades keeping its data.
- ``addon-first``: the addon is installed first, with a connected bank journal; French, then
  German, are added through the same wizard (the chart's accounts and journals come in French);
  the addon is uninstalled (its tables, columns and indexes go), a language is added again,
  and the addon installs again.

Each step runs in its own Python process, as an administrator's would (``python -m odoo -i``,
``-u``, or Odoo as a library for the wizard and the uninstall button), so every step starts
from what the previous one committed. Prints one line per check and a last summary line; the
exit code is 0 when everything held.

Usage: ``python3 tools/install_check.py [--keep] [SCENARIO ...]`` (``make test-install``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# isort: split
from tools.odoo_setup import (  # noqa: E402  (after the repository is on the path)
    MODULE,
    TEMPLATE_DB,
    OdooSetupError,
    build_template,
    copy_template,
    drop_db,
    environment,
    load_odoo,
    odoo_args,
    run_odoo,
)

FRENCH_COMPANY = "Atelier Lumière SARL"
#: An account of the French chart and its name in French (l10n_fr_account's own data).
CAPITAL_ACCOUNT = ("pcg_1011", "Subscribed capital - uncalled", "Capital souscrit - non appelé")
#: What the addon adds to tables it does not own; all of it must go at uninstall.
ADDED_COLUMNS = (
    ("account_bank_statement_line", "bank_sync_key"),
    ("account_bank_statement_line", "bank_sync_account_id"),
    ("res_company", "bank_sync_enabled"),
)
ADDED_INDEXES = ("account_move_bank_sync_unposted_idx",)
OWN_TABLES = ("bank_sync_connection", "bank_sync_account", "bank_sync_run")


class CheckFailed(OdooSetupError):
    """A check that did not hold."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    print(f"  ok: {what}", flush=True)


# --------------------------------------------------------------------------------------------
# Steps, each run in a fresh process on a database (python3 tools/install_check.py --step ...)
# --------------------------------------------------------------------------------------------


def french_company(env: Any) -> Any:
    return env["res.company"].search([("name", "=", FRENCH_COMPANY)], limit=1)


def step_french_company(env: Any) -> None:
    """A French company on the French chart, as an accountant sets one up."""
    eur = env.ref("base.EUR")
    eur.active = True
    # chart_template_load: stops a new French company from installing every French extra
    # (Peppol, Chorus Pro...) on the spot, as account itself does while loading a chart.
    company = (
        env["res.company"]
        .with_context(chart_template_load=True)
        .create(
            {"name": FRENCH_COMPANY, "country_id": env.ref("base.fr").id, "currency_id": eur.id}
        )
    )
    env["account.chart.template"].try_loading("fr", company, install_demo=False)
    check(company.chart_template == "fr", "the company uses the French chart")


def add_language(env: Any, code: str) -> None:
    """Settings > Languages > Add Languages, as a user does."""
    lang = env["res.lang"].with_context(active_test=False).search([("code", "=", code)])
    wizard = env["base.language.install"].create({"lang_ids": [(6, 0, lang.ids)]})
    wizard.lang_install()
    check(bool(lang.active), f"{code} added through the language wizard")


def step_add_french(env: Any) -> None:
    add_language(env, "fr_FR")


def step_add_german(env: Any) -> None:
    add_language(env, "de_DE")
    sales = env["account.journal"].search(
        [("company_id", "=", french_company(env).id), ("type", "=", "sale")], limit=1
    )
    check(
        sales.with_context(lang="de_DE").name == "Kundenrechnungen",
        "the sales journal reads Kundenrechnungen in German",
    )
    check_chart_in_french(env)


def check_chart_in_french(env: Any) -> None:
    company = french_company(env)
    xmlid, english, french = CAPITAL_ACCOUNT
    account = env.ref(f"account.{company.id}_{xmlid}").with_company(company)
    check(account.with_context(lang="fr_FR").name == french, f"account {account.code} in French")
    check(account.with_context(lang="en_US").name == english, f"account {account.code} in English")
    bank = env["account.journal"].search(
        [("company_id", "=", company.id), ("type", "=", "bank")], limit=1
    )
    check(bank.with_context(lang="fr_FR").name == "Banque", "the bank journal reads Banque")


def check_addon_in_french(env: Any) -> None:
    import polib  # noqa: PLC0415  (Odoo's own requirement)

    french = {
        entry.msgid: entry.msgstr
        for entry in polib.pofile(str(REPO / MODULE / "i18n" / "fr.po"))
        if entry.msgstr
    }
    menu = env.ref(f"{MODULE}.bank_sync_connection_menu")
    english = menu.with_context(lang="en_US").name
    check(
        menu.with_context(lang="fr_FR").name == french[english],
        f"the addon's menu in French ({french[english]!r})",
    )


def step_check_after_install(env: Any) -> None:
    check(
        env["ir.module.module"].search([("name", "=", MODULE)]).state == "installed",
        "addon installed",
    )
    check_chart_in_french(env)
    check_addon_in_french(env)
    company = french_company(env)
    company.bank_sync_enabled = True
    aggregator = company._bank_sync_set_aggregator_kind("sandbox")
    check(aggregator.kind == "sandbox", "the company's aggregator is set")


def step_check_after_upgrade(env: Any) -> None:
    company = french_company(env)
    check(company.bank_sync_enabled, "the company's switch kept across the upgrade")
    check(
        company._get_bank_sync_aggregator().kind == "sandbox",
        "the company's aggregator kept across the upgrade",
    )
    check_chart_in_french(env)
    check_addon_in_french(env)


def step_connect_journal(env: Any) -> None:
    """A bank journal linked to a connection that has an aggregator message (what used to
    break language installation)."""
    company = french_company(env)
    company.bank_sync_enabled = True
    aggregator = company._bank_sync_set_aggregator_kind("sandbox")
    connection = env["bank.sync.connection"].create(
        {
            "provider_id": aggregator.id,
            "company_id": company.id,
            "remote_id": "install-check-1",
            "institution_name": "Banque de test",
            "state": "action_needed",
            "message": "Please confirm your identity at the bank.",
        }
    )
    journal = env["account.journal"].search(
        [("company_id", "=", company.id), ("type", "=", "bank")], limit=1
    )
    env["bank.sync.account"].create(
        {
            "connection_id": connection.id,
            "remote_id": "install-check-acc",
            "name": "Compte courant",
            "journal_id": journal.id,
        }
    )
    check(journal.bank_sync_connection_message is not None, "journal linked to a connection")


def step_check_french_added(env: Any) -> None:
    check_chart_in_french(env)
    check_addon_in_french(env)


def step_uninstall(env: Any) -> None:
    env["ir.module.module"].search([("name", "=", MODULE)]).button_immediate_uninstall()


def table_columns(env: Any, table: str) -> set[str]:
    env.cr.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table]
    )
    return {row[0] for row in env.cr.fetchall()}


def step_check_uninstalled(env: Any) -> None:
    module = env["ir.module.module"].search([("name", "=", MODULE)])
    check(module.state == "uninstalled", "addon uninstalled")
    for table, column in ADDED_COLUMNS:
        check(column not in table_columns(env, table), f"column {table}.{column} dropped")
    for index in ADDED_INDEXES:
        env.cr.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [index])
        check(not env.cr.fetchone(), f"index {index} dropped")
    for table in OWN_TABLES:
        check(not table_columns(env, table), f"table {table} dropped")
    check_chart_in_french(env)


def step_add_german_after_uninstall(env: Any) -> None:
    step_add_german(env)


def step_check_reinstalled(env: Any) -> None:
    check(
        env["ir.module.module"].search([("name", "=", MODULE)]).state == "installed",
        "addon installed again",
    )
    check_addon_in_french(env)
    check(
        "bank_sync_key" in table_columns(env, "account_bank_statement_line"),
        "its statement line columns are back",
    )


STEPS = {name[5:]: func for name, func in globals().items() if name.startswith("step_")}


def run_step(db: str, name: str) -> int:
    """Entry point of a step's own process."""
    odoo = load_odoo()
    odoo.tools.config.parse_config(odoo_args(odoo, db))
    try:
        with environment(odoo, db) as env:
            STEPS[name](env)
    except OdooSetupError as error:
        print(f"  FAILED: {error}", flush=True)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


class Scenario:
    """One database, a sequence of steps; stops at the first failure."""

    def __init__(self, odoo: Any, name: str, log: Path) -> None:
        self.odoo = odoo
        self.name = name
        self.db = f"bsa_install_{name.replace('-', '_')}_{os.getpid()}"
        self.log = log

    def step(self, name: str) -> None:
        print(f"- {name.replace('_', ' ')}", flush=True)
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        result = subprocess.run(
            [sys.executable, __file__, "--step", name, "--db", self.db],
            check=False,
            capture_output=True,
            text=True,
            env=env,
        )
        with self.log.open("a", encoding="utf-8") as out:
            out.write(result.stderr)
        print(result.stdout, end="", flush=True)
        if result.returncode:
            tail = "\n".join(result.stderr.strip().splitlines()[-12:])
            raise CheckFailed(f"step {name!r} failed (exit {result.returncode}):\n{tail}")

    def odoo_cli(self, what: str, *args: str) -> None:
        print(f"- {what}", flush=True)
        run_odoo([*odoo_args(self.odoo, self.db), *args, "--stop-after-init"], self.log, what)
        print("  ok: done without an error in Odoo's log", flush=True)


def french_first(scenario: Scenario) -> None:
    scenario.step("french_company")
    scenario.step("add_french")
    scenario.odoo_cli("install the addon on a database that has French", "-i", MODULE)
    scenario.step("check_after_install")
    scenario.odoo_cli("upgrade the addon", "-u", MODULE)
    scenario.step("check_after_upgrade")


def addon_first(scenario: Scenario) -> None:
    scenario.step("french_company")
    scenario.odoo_cli("install the addon (English only)", "-i", MODULE)
    scenario.step("connect_journal")
    scenario.step("add_french")
    scenario.step("check_french_added")
    scenario.step("add_german")
    scenario.step("uninstall")
    scenario.step("check_uninstalled")
    scenario.step("add_german_after_uninstall")
    scenario.odoo_cli("install the addon again", "-i", MODULE)
    scenario.step("check_reinstalled")


SCENARIOS = {"french-first": french_first, "addon-first": addon_first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"among {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_step(args.db, args.step)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    try:
        odoo = load_odoo()
    except OdooSetupError as error:
        print(f"SKIPPED: install checks not run: {error}")
        return 0
    log = Path(tempfile.gettempdir()) / f"bsa_install_check_{os.getpid()}.log"
    odoo.tools.config.parse_config(odoo_args(odoo, TEMPLATE_DB))
    build_template(odoo, log)
    passed = 0
    names = args.scenarios or list(SCENARIOS)
    started = time.monotonic()
    for name in names:
        scenario = Scenario(odoo, name, log)
        print(f"\n{name} ({scenario.db})", flush=True)
        copy_template(odoo, TEMPLATE_DB, scenario.db)
        try:
            SCENARIOS[name](scenario)
            passed += 1
        except OdooSetupError as error:
            print(f"  FAILED: {error}", flush=True)
        finally:
            if not args.keep:
                drop_db(odoo, scenario.db)
    elapsed = time.monotonic() - started
    print(f"\ninstall checks: {passed} of {len(names)} scenarios passed in {elapsed:.0f} s")
    return 0 if passed == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
