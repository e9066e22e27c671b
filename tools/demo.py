#!/usr/bin/env python3
"""``make demo``: the addon doing its job on this machine's Odoo 18 and PostgreSQL.

It creates a database (a copy of the template that ``tools/addon_tests.sh`` builds, or a fresh
one), installs the addon with the French chart of accounts for a French company, switches the
sandbox aggregator on in the Accounting settings, starts an Odoo server on 127.0.0.1 and adds a
bank through the same HTTP requests a browser makes (connect wizard, the sandbox's hosted login
page, the signed callback), links the bank's accounts to journals with the link wizard, runs
"Sync now" and the background job, then prints what landed in the books and how to open the
database in a browser. The database is left in place; the server is stopped.

Between linking and syncing, the company's books get the customer invoices and vendor bills
that the bank's operations pay (``tools/reconcile_books.py``), with the usual traps: a
partial payment, two invoices paid by one transfer, an amount that two open invoices share, a
transfer quoting no number, a number with a typo. After the sync, one line says how many of
those operations were reconciled automatically, how many got a suggestion, and how many were
reconciled with anything else than what they really pay (the demo knows: it made the books).

Usage: ``python3 tools/demo.py [--db NAME] [--no-french] [--bank BIC] [--login SCENARIO]``.
Exit code 0 on success, 1 on a failure (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    # The addon imports bank_sync_bridge: this repository is the package's home.
    sys.path.insert(0, str(REPO))

# isort: split
from tools.odoo_setup import (  # noqa: E402  (after the repository is on the path)
    MODULE,
    TEMPLATE_DB,
    OdooSetupError,
    build_template,
    copy_template,
    db_exists,
    drop_db,
    environment,
    free_port,
    load_odoo,
    odoo_args,
    odoo_server,
    run_odoo,
)

ADMIN_PASSWORD = "admin"  # noqa: S105  (a local demo database, said to the user)
BROWSER_PORT = 8069
CONNECTIONS_PATH = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action"
SANDBOX_CREDENTIAL = "demo"  # the sandbox checks no password


class DemoError(OdooSetupError):
    """A failure of the demo explained to the user (printed without a traceback)."""


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


class Steps:
    """Numbered steps with their durations."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.number = 0
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        print(f"\n[{self.number}/{self.total}] {title}", flush=True)
        began = time.monotonic()
        yield
        print(f"      ({time.monotonic() - began:.1f} s)", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def say(text: str = "") -> None:
    print(f"      {text}" if text else "", flush=True)


def money(value: float | Decimal, currency: str = "EUR") -> str:
    return f"{Decimal(str(value)).quantize(Decimal('0.01')):>12,} {currency}"


# --------------------------------------------------------------------------------------------
# Odoo over HTTP, as the web client talks to it
# --------------------------------------------------------------------------------------------


class FirstForm(HTMLParser):
    """The first ``<form>`` of a page: its action and its named inputs, as a browser posts."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action") or ""
            self._in_form = True
        elif tag == "input" and self._in_form and values.get("name"):
            self.fields[str(values["name"])] = values.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def parse_first_form(html: str) -> tuple[str | None, dict[str, str]]:
    """``(action, fields)`` of the first form in ``html`` (action None when there is none)."""
    parser = FirstForm()
    parser.feed(html)
    return parser.action, parser.fields


def page_text(html: str, limit: int = 400) -> str:
    """The readable text of an HTML page, for an error message."""
    body = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", " ", html)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()
    return text[:limit]


class WebClient:
    """JSON-RPC and page requests with one session cookie, like a browser tab."""

    def __init__(self, base_url: str) -> None:
        import requests  # noqa: PLC0415

        self.base_url = base_url
        self.http = requests.Session()
        self._next_id = 0

    def rpc(self, path: str, params: dict[str, Any], timeout: float = 60) -> Any:
        self._next_id += 1
        payload = {"jsonrpc": "2.0", "method": "call", "id": self._next_id, "params": params}
        response = self.http.post(self.base_url + path, json=payload, timeout=timeout)
        if response.status_code != 200:
            raise DemoError(
                f"{path} answered HTTP {response.status_code}: {page_text(response.text)}"
            )
        data = response.json()
        if "error" in data:
            error = data["error"].get("data") or {}
            raise DemoError(f"{path}: {error.get('message') or data['error'].get('message')}")
        return data["result"]

    def call(self, model: str, method: str, *args: Any, timeout: float = 60, **kwargs: Any) -> Any:
        params = {"model": model, "method": method, "args": list(args), "kwargs": kwargs}
        return self.rpc(f"/web/dataset/call_kw/{model}/{method}", params, timeout=timeout)

    def button(
        self,
        model: str,
        method: str,
        ids: list[int],
        context: dict | None = None,
        timeout: float = 60,
    ) -> Any:
        """What clicking a button of type "object" sends."""
        params = {
            "model": model,
            "method": method,
            "args": [ids],
            "kwargs": {"context": context or {}},
        }
        return self.rpc(f"/web/dataset/call_button/{model}/{method}", params, timeout=timeout)


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make demo",
        description="Create an Odoo database, connect a sandbox bank through the real flow, "
        "synchronise it and show what was imported.",
    )
    parser.add_argument("--db", default="bank_sync_demo", help="database (replaced if it exists)")
    parser.add_argument(
        "--no-french",
        action="store_true",
        help="keep the template's company and generic chart instead of a French company",
    )
    parser.add_argument("--bank", default="BNPAFRPP", help="sandbox bank id (default BNP Paribas)")
    parser.add_argument(
        "--login",
        default="success",
        help="login typed on the sandbox page: it picks the scenario (success, sca_required, "
        "wrong_password, data_incidents, multi_currency...)",
    )
    parser.add_argument(
        "--since",
        type=date.fromisoformat,
        help="import operations booked from this date (default: the link wizard's, 1 January)",
    )
    return parser.parse_args(argv)


COMPANY = {
    "name": "Atelier Lumière SARL",
    "street": "12 rue de la République",
    "zip": "69002",
    "city": "Lyon",
    "email": "compta@atelier-lumiere.example",
    "company_registry": "81234567800021",
}


def prepare_database(odoo: Any, args: argparse.Namespace, log: Path) -> None:
    """Step 1: the database, a copy of the template (built first when missing)."""
    db = args.db
    if db_exists(odoo, db):
        drop_db(odoo, db)
        say(f"The database {db} existed (an earlier demo): it was dropped and is created again.")
    if not db_exists(odoo, TEMPLATE_DB):
        say(f"Building the template {TEMPLATE_DB} (Accounting, no demo data), once: ~1 minute.")
        build_template(odoo, log)
    copy_template(odoo, TEMPLATE_DB, db)
    say(f"{db} created as a copy of {TEMPLATE_DB} (Odoo 18 with Accounting, French chart).")


def install(odoo: Any, args: argparse.Namespace, log: Path) -> None:
    """Step 2: install the addon (the template has the French chart's module already)."""
    modules = [MODULE]
    run_odoo(
        [*odoo_args(odoo, args.db), "-i", ",".join(modules), "--stop-after-init", "--http-port=0"],
        log,
        f"Installing {', '.join(modules)}",
    )
    say(f"Installed: {', '.join(modules)}.")


def setup_company(odoo: Any, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Step 3: the company, its contacts, the admin password and the sandbox aggregator."""
    from bank_sync_bridge.providers.sandbox_data import (  # noqa: PLC0415
        CUSTOMERS,
        SUPPLIERS,
        counterparty_iban,
    )

    with environment(odoo, args.db) as env:
        # A copied database must not share the template's uuid (our states are bound to it).
        env["ir.config_parameter"].init(force=True)
        eur = env.ref("base.EUR")
        eur.active = True
        admin = env.ref("base.user_admin")
        if args.no_french:
            company = env.ref("base.main_company")
        else:
            # chart_template_load: the key account itself uses to stop a new French company
            # from installing every French extra (Peppol, Chorus Pro...) on the spot; they
            # need libraries (phonenumbers) that neither the addon nor the demo needs.
            company = (
                env["res.company"]
                .with_context(chart_template_load=True)
                .create(dict(COMPANY, country_id=env.ref("base.fr").id, currency_id=eur.id))
            )
            env["account.chart.template"].try_loading("fr", company, install_demo=False)
            # The administrator works in this company only, as at a real customer's: no company
            # switcher, no empty "My Company" books next to the French ones.
            admin.write({"company_ids": [odoo.Command.set(company.ids)], "company_id": company.id})
        admin.write({"password": ADMIN_PASSWORD})
        # The company's customers and suppliers, as its books already know them, with the IBAN
        # they pay from or are paid to: the sync finds an operation's partner by it.
        partners = [
            {
                "name": name,
                "is_company": True,
                "bank_ids": [odoo.Command.create({"acc_number": counterparty_iban(name, country)})],
            }
            for name, country in CUSTOMERS
        ]
        partners += [
            {
                "name": name,
                "is_company": True,
                "bank_ids": [odoo.Command.create({"acc_number": counterparty_iban(name)})],
            }
            for name in SUPPLIERS
        ]
        env["res.partner"].create(partners)
        env["ir.config_parameter"].set_param("web.base.url", f"http://127.0.0.1:{port}")

        # The Accounting settings, as the administrator saves them.
        user_env = env(user=admin.id, context={"allowed_company_ids": [company.id]})
        settings = user_env["res.config.settings"].create(
            {"bank_sync_enabled": True, "bank_sync_provider_kind": "sandbox"}
        )
        settings.execute()
        aggregator = company._get_bank_sync_aggregator()
        if not aggregator or aggregator.kind != "sandbox":
            raise DemoError("Saving the settings did not activate the sandbox aggregator")
        bank_journal = env["account.journal"].search(
            [("type", "=", "bank"), ("company_id", "=", company.id)], order="id", limit=1
        )
        chart = company.chart_template
        say(
            f'Company "{company.name}" ({company.country_id.name or "no country"}, '
            f"{company.currency_id.name}, chart {chart}), admin password set to "
            f"{ADMIN_PASSWORD!r}."
        )
        say(f"{len(partners)} customers and suppliers added, with their IBAN.")
        say(
            f"Accounting settings saved: bank synchronisation on, aggregator "
            f'"{aggregator.name}" (aggregator settings #{aggregator.id}).'
        )
        return {
            "company_id": company.id,
            "company_name": company.name,
            "bank_journal_id": bank_journal.id,
            "bank_journal_currency": (bank_journal.currency_id or company.currency_id).name,
        }


def connect_bank(web: WebClient, args: argparse.Namespace, db: str) -> int:
    """Step 5: the "Add a bank" flow over HTTP; returns the new connection's id."""
    session = web.rpc(
        "/web/session/authenticate", {"db": db, "login": "admin", "password": ADMIN_PASSWORD}
    )
    if not session.get("uid"):
        raise DemoError("Logging in as admin failed")
    say(f"Logged in as admin on {web.base_url} (JSON-RPC, like the web client).")
    wizard_id = web.call(
        "bank.sync.connect.wizard", "create", [{"accept_terms": True, "allow_transfer": True}]
    )[0]
    web.button("bank.sync.connect.wizard", "action_next", [wizard_id])
    banks = web.call(
        "bank.sync.connect.wizard.line",
        "search_read",
        [("wizard_id", "=", wizard_id)],
        ["name", "remote_id", "most_requested"],
    )
    say(
        "Wizard: consent given, most requested banks: "
        + ", ".join(bank["name"] for bank in banks if bank["most_requested"])
    )
    chosen = next((bank for bank in banks if bank["remote_id"] == args.bank), None)
    if chosen is None:
        known = ", ".join(f"{bank['remote_id']} ({bank['name']})" for bank in banks)
        raise DemoError(f"The bank {args.bank} is not offered. Banks: {known}")
    action = web.button("bank.sync.connect.wizard.line", "action_choose", [chosen["id"]])
    if not isinstance(action, dict) or action.get("type") != "ir.actions.act_url":
        raise DemoError(f"Choosing the bank did not open the aggregator's page: {action!r}")
    hosted_url = action["url"]

    page = web.http.get(hosted_url, timeout=30)
    if page.status_code != 200:
        raise DemoError(f"The hosted page answered {page.status_code}: {page_text(page.text)}")
    form_action, fields = parse_first_form(page.text)
    if form_action is None or "sig" not in fields:
        raise DemoError(f"No signed login form on the hosted page: {page_text(page.text)}")
    say(f"GET  {urlsplit(hosted_url).path} -> 200, the sandbox login page of {chosen['name']}")
    post_url = urljoin(hosted_url, form_action) if form_action else hosted_url.split("?")[0]
    fields.update(login=args.login, password=SANDBOX_CREDENTIAL, action="connect")
    submitted = web.http.post(post_url, data=fields, allow_redirects=False, timeout=30)
    if submitted.status_code not in (301, 302, 303) or "Location" not in submitted.headers:
        raise DemoError(
            f"Submitting the login form answered {submitted.status_code}: "
            f"{page_text(submitted.text)}"
        )
    callback = submitted.headers["Location"]
    say(f'POST {urlsplit(post_url).path} (login "{args.login}") -> {submitted.status_code}')
    say(f"     -> {urlsplit(callback).path}?state=<signed>&success=...&sandbox_sig=...")
    back = web.http.get(callback, allow_redirects=False, timeout=60)
    location = back.headers.get("Location", "")
    # The connection, or (a bank just added) the screen that links its accounts in one step.
    match = re.search(re.escape(CONNECTIONS_PATH) + r"/(\d+)(?:/action-[\w.]+)?$", location)
    if back.status_code not in (302, 303) or not match:
        raise DemoError(
            f"Odoo's callback answered {back.status_code}: {page_text(back.text)}\n"
            f"(with --login {args.login}; the default login 'success' connects)"
        )
    say(f"GET  {urlsplit(callback).path} -> {back.status_code}: state checked, session closed")
    say(f"     -> {location}")
    return int(match.group(1))


def link_accounts(
    web: WebClient, connection_id: int, ctx: dict[str, Any], args: argparse.Namespace
) -> list[dict]:
    """Step 6: each account through the link wizard (existing journal by IBAN, else new)."""
    context = {"allowed_company_ids": [ctx["company_id"]]}
    accounts = web.call(
        "bank.sync.account",
        "search_read",
        [("connection_id", "=", connection_id)],
        ["name", "account_type", "iban", "currency_code", "balance"],
        order="id",
        context=context,
    )
    checking = next((a for a in accounts if a["account_type"] == "checking" and a["iban"]), None)
    if checking and ctx["bank_journal_currency"] != checking["currency_code"]:
        say(
            f'The company\'s "Bank" journal is in {ctx["bank_journal_currency"]}, the current '
            f"account in {checking['currency_code']}: every account gets a new journal."
        )
    elif checking and ctx["bank_journal_id"]:
        # As when the company set its books up: its "Bank" journal carries the current
        # account's IBAN. The wizard finds it by that IBAN instead of creating a journal.
        web.call(
            "account.journal",
            "write",
            [ctx["bank_journal_id"]],
            {"bank_acc_number": checking["iban"]},
            context=context,
        )
        say(f'Demo set-up: the company\'s "Bank" journal was given the IBAN {checking["iban"]}.')
    linked = []
    for account in accounts:
        wizard_vals = {"history_start_date": args.since.isoformat()} if args.since else {}
        wizard_id = web.call(
            "bank.sync.link.wizard",
            "create",
            [wizard_vals],
            context=dict(context, default_account_id=account["id"]),
        )[0]
        wizard = web.call(
            "bank.sync.link.wizard",
            "read",
            [wizard_id],
            ["mode", "journal_id", "new_journal_name", "history_start_date"],
            context=context,
        )[0]
        # The wizard answers with a notification; the link itself is on the account.
        web.button("bank.sync.link.wizard", "action_link", [wizard_id], context)
        journal_id = web.call(
            "bank.sync.account", "read", [account["id"]], ["journal_id"], context=context
        )[0]["journal_id"][0]
        journal = web.call(
            "account.journal", "read", [journal_id], ["name", "code"], context=context
        )[0]
        how = "existing journal, found by IBAN" if wizard["mode"] == "existing" else "new journal"
        say(
            f"{account['name'][:34]:<34} -> {journal['name']} ({journal['code']}), {how}; "
            f"history from {wizard['history_start_date']}"
        )
        linked.append(dict(account, journal_id=journal["id"]))
    return linked


def book_documents(odoo: Any, db: str, connection_id: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """Step 7: the customer invoices and vendor bills the current account's operations pay,
    with the traps (``tools/reconcile_books.py``); returns the truth to judge matching by."""
    from bank_sync_bridge.sync import sync_key  # noqa: PLC0415
    from tools.reconcile_books import book, plan_books  # noqa: PLC0415

    with environment(odoo, db, company=ctx["company_id"]) as env:
        connection = env["bank.sync.connection"].browse(connection_id)
        account = connection.account_ids.filtered(
            lambda a: a.account_type == "checking" and a.currency_code == "EUR"
        )[:1]
        if not account:
            raise DemoError("The bank shares no euro current account: no books to close")
        client = connection.provider_id._get_client()
        start = account.history_start_date
        operations = [
            tx
            for page in client.iter_transactions(account.remote_id, date_from=start)
            for tx in page.transactions
            if not (tx.deleted or tx.is_pending or (start and tx.booking_date < start))
        ]
        documents, truths = plan_books(operations)
        company = env["res.company"].browse(ctx["company_id"])
        moves = book(env, company, documents)
        kind, remote = connection.provider_id.kind, account.remote_id
        cases = Counter(truth.case for truth in truths)
        invoices = sum(1 for doc in documents if doc.move_type == "out_invoice")
        say(
            f"{invoices} customer invoices and {len(documents) - invoices} vendor bills posted, "
            f"paid by {len(truths)} of the {len(operations)} operations of {account.name}."
        )
        say(
            "Traps: "
            + ", ".join(
                f"{cases[case]} {TRAP_WORDS[case][cases[case] > 1]}"
                for case in TRAP_WORDS
                if cases.get(case)
            )
            + "."
        )
        return {
            "truths": truths,
            "moves": moves,
            "key_of": lambda remote_id: sync_key(kind, remote, remote_id),
        }


#: How the demo names each case of tools/reconcile_books.py (one, several).
TRAP_WORDS = {
    "grouped": ("transfer paying two invoices", "transfers paying two invoices"),
    "partial": ("partial payment", "partial payments"),
    "ambiguous": ("amount two open invoices share", "amounts two open invoices share"),
    "no_reference": ("transfer quoting no number", "transfers quoting no number"),
    "no_reference_grouped": (
        "transfer paying two invoices without quoting them",
        "transfers paying two invoices without quoting them",
    ),
    "typo": ("number quoted with a typo", "numbers quoted with a typo"),
    "foreign_currency": ("invoice in another currency", "invoices in another currency"),
    "shared_number": (
        "supplier number another supplier uses too",
        "supplier numbers another supplier uses too",
    ),
}


def matching_summary(odoo: Any, db: str, connection_id: int, ctx: dict[str, Any], books) -> int:
    """Step 10: what matching did against the truth the demo made; returns the wrong ones."""
    from tools.reconcile_books import judge  # noqa: PLC0415

    with environment(odoo, db, company=ctx["company_id"]) as env:
        lines = env["account.bank.statement.line"].search(
            [("bank_sync_account_id.connection_id", "=", connection_id)], order="date, id"
        )
        verdict = judge(env, lines, books["truths"], books["moves"], books["key_of"])
        env.cr.rollback()  # the match windows opened to read the suggestions
    for case, counts in sorted(verdict.by_case.items()):
        say(
            f"  {case:<21} {counts['operations']:>4} operations: {counts['auto']:>4} reconciled"
            f" automatically, first suggestion right for {counts['top1']}"
        )
    for wrong in verdict.wrong_lines:
        say(f"  WRONG        {wrong}")
    print()
    say(
        f"{verdict.auto} of {verdict.paying} operations reconciled automatically, "
        f"{verdict.suggested} with a suggestion, {verdict.wrong} wrong"
    )
    say(
        "The rest: Accounting > Dashboard, the bank journal's card, its bank operations with "
        'the filter "Not reconciled"; each one\'s "Match with an open item" lists its '
        "suggestions, best first"
    )
    say(
        f"  (http://localhost:{BROWSER_PORT}/odoo/action-bank_sync_aggregator.account_bank_statement_line_action)"
    )
    return verdict.wrong


def synchronise(web: WebClient, connection_id: int, ctx: dict[str, Any]) -> None:
    """Step 8: "Sync now" on the connection, then the background job until it is done."""
    context = {"allowed_company_ids": [ctx["company_id"]]}
    began = time.monotonic()
    notification = web.button(
        "bank.sync.connection", "action_sync_now", [connection_id], context, timeout=600
    )
    message = (notification or {}).get("params", {}).get("message", "")
    say(f'"Sync now" ({time.monotonic() - began:.1f} s): ' + message.replace("\n", " / "))
    cron = web.call(
        "ir.model.data", "check_object_reference", "bank_sync_aggregator", "ir_cron_bank_sync"
    )[1]
    for _round in range(20):
        waiting = web.call(
            "bank.sync.account",
            "search_count",
            [("connection_id", "=", connection_id), ("sync_requested", "=", True)],
            context=context,
        )
        if not waiting:
            break
        began = time.monotonic()
        web.button("ir.cron", "method_direct_trigger", [cron], timeout=600)
        say(
            f"Background job (ir.cron, run now): {waiting} account(s) continued "
            f"({time.monotonic() - began:.1f} s)"
        )
    else:
        raise DemoError("The background import did not finish after 20 rounds")


def report(odoo: Any, db: str, connection_id: int, ctx: dict[str, Any]) -> bool:
    """Step 9: what is in the books, account by account; True when every account is complete
    and its balance agrees with the bank's."""
    all_agree = True
    with environment(odoo, db, company=ctx["company_id"]) as env:
        connection = env["bank.sync.connection"].browse(connection_id)
        synced = connection.last_sync_date
        expiry = connection.consent_expiry
        state = dict(connection._fields["state"]._description_selection(env))[connection.state]
        say(
            f"Connection: {connection.institution_name}, state {state}, consent until "
            + (f"{expiry:%Y-%m-%d}" if expiry else "(no end date)")
        )
        say(f"  last synchronised {f'{synced:%Y-%m-%d %H:%M} UTC' if synced else 'never'}")
        if connection.state != "ok" and connection.message:
            say(f"  the aggregator says: {connection.message}")
        # The balances straight from the aggregator, not the copy the addon stored.
        client = connection.provider_id._get_client()
        try:
            remote = {a.remote_id: a for a in client.list_accounts(connection.remote_id)}
        except Exception as error:
            raise DemoError(
                f"The aggregator's balances could not be read: {getattr(error, 'message', error)}"
            ) from error
        for account in connection.account_ids.sorted("id"):
            all_agree &= report_account(env, client, account, remote[account.remote_id])
    return all_agree


def report_account(env: Any, client: Any, account: Any, bank: Any) -> bool:
    """Print one account's import; True when it is complete and its balance agrees."""
    from bank_sync_bridge.sync import ledger_balance, sync_key  # noqa: PLC0415

    journal = account.journal_id
    lines = env["account.bank.statement.line"].search(
        [("bank_sync_account_id", "=", account.id)], order="date, id"
    )
    booked = lines.filtered(lambda line: line.bank_sync_status == "booked")
    opening = lines - booked
    env.cr.execute(
        """
        SELECT COALESCE(SUM(l.amount), 0) FROM account_bank_statement_line l
          JOIN account_move m ON m.id = l.move_id
         WHERE l.journal_id = %s AND m.state = 'posted'
        """,
        [journal.id],
    )
    in_odoo = Decimal(str(round(env.cr.fetchone()[0], 2)))
    expected = ledger_balance(bank.balance, bank.type)
    runs = account.run_ids.sorted("id")
    print()
    say(f"{account.display_name}  [{account.account_type}]")
    say(f"  journal      {journal.name} ({journal.code}), IBAN {account.iban or '-'}")
    period = f" from {booked[:1].date} to {booked[-1:].date}" if booked else ""
    say(
        f"  imported     {len(booked)} statement lines{period}"
        + (f", plus an opening line of {opening[:1].amount:,.2f}" if opening else "")
    )
    # Exactly once: the aggregator's booked operations since the history start, read again
    # here, against the lines' sync keys (on a first sync the opening line makes the balances
    # agree by construction, so the balance alone would prove nothing).
    try:
        at_bank, pending = remote_operations(client, account)
    except Exception as error:
        say(f"  at the bank  operations unreadable: {getattr(error, 'message', error)}")
        exactly_once = False
    else:
        kind = account.connection_id.provider_id.kind
        wanted = {sync_key(kind, account.remote_id, remote_id) for remote_id in at_bank}
        keys = booked.mapped("bank_sync_key")
        exactly_once = set(keys) == wanted and len(keys) == len(wanted)
        say(
            f"  at the bank  {len(at_bank)} booked operations since "
            f"{account.history_start_date}: "
            + (
                "each imported exactly once"
                if exactly_once
                else f"{len(wanted - set(keys))} missing, {len(set(keys) - wanted)} unknown, "
                f"{len(keys) - len(set(keys))} duplicated"
            )
            + (f"; {pending} pending, not in the books until booked" if pending else "")
        )
    to_review = len(lines.filtered("bank_sync_to_review"))
    say(
        f"  ready        {len(lines.filtered(lambda line: not line.is_reconciled))} lines "
        f"to reconcile, {len(booked.filtered('partner_id'))} with their partner found"
        + (f", {to_review} flagged for review" if to_review else "")
    )
    say(
        f"  runs         {len(runs)}: "
        + ", ".join(
            f"{r.trigger} {r.state} ({r.fetched_count} fetched, {r.created_count} created)"
            for r in runs
        )
    )
    say(f"  balance      in Odoo     {money(in_odoo)}")
    owed = f"  (in the books: {money(expected).strip()})" if expected != bank.balance else ""
    say(f"               at the bank {money(bank.balance)}{owed}")
    verdict = "they agree" if in_odoo == expected else f"DIFFERENCE {in_odoo - expected}"
    addon_check = (
        f"the addon's own check after the sync: difference {account.balance_difference:.2f}"
        if account.balance_check_date
        else "the addon did not check this balance"
    )
    say(f"               -> {verdict} ({addon_check})")
    failed = runs.filtered(lambda run: run.state == "failed")
    for run in failed:
        say(f"  FAILED RUN   {run.error}")
    for line in sample_lines(booked):
        partner = (line.partner_id.name or "-")[:26]
        say(f"    {line.date}  {partner:<26} {line.payment_ref[:46]:<46} {line.amount:>11,.2f}")
    return in_odoo == expected and exactly_once and not failed


def remote_operations(client: Any, account: Any) -> tuple[set[str], int]:
    """Ids of the aggregator's booked, not deleted operations of ``account`` since its history
    start, and the number of its pending ones."""
    start = account.history_start_date
    booked: set[str] = set()
    pending = 0
    for page in client.iter_transactions(account.remote_id, date_from=start):
        for tx in page.transactions:
            if tx.deleted or (start and tx.booking_date < start):
                continue
            if tx.is_pending:
                pending += 1
            else:
                booked.add(tx.remote_id)
    return booked, pending


def sample_lines(booked: Any) -> Any:
    """A few telling lines: the latest customer receipt and supplier payment whose partner was
    found, the latest line without a partner, and the latest two lines."""
    found = booked.filtered("partner_id")
    picks = (
        found.filtered(lambda line: line.amount > 0)[-1:]
        | found.filtered(lambda line: line.amount < 0)[-1:]
        | (booked - found)[-1:]
        | booked[-2:]
    )
    return picks.sorted(lambda line: (line.date, line.id))


def check_db_name(db: str) -> None:
    """Refuse the template and names that are not plain."""
    if db == TEMPLATE_DB or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", db):
        raise DemoError(
            f"{db!r} cannot be the demo database (it is the test template, or not a "
            "plain name): choose another one with --db"
        )


def exit_code(agree: bool, wrong: int) -> int:
    """0 when the books agree with the bank and matching reconciled nothing wrongly."""
    if wrong:
        print(
            f"\nDEMO FAILED: {wrong} operation(s) reconciled automatically with something else "
            "than what they pay (see above).",
            file=sys.stderr,
        )
        return 1
    if not agree:
        print(
            "\nDEMO FAILED: a synchronisation failed, an operation is missing or counted twice, "
            "or a journal balance differs from the bank's (see above).",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Path(tempfile.gettempdir()) / f"{args.db}_demo.log"
    log.write_text("", encoding="utf-8")
    steps = Steps(10)
    print(
        "Bank synchronisation demo: the addon on this machine's Odoo 18, sandbox aggregator.\n"
        f"(Odoo's own log: {log})"
    )
    try:
        check_db_name(args.db)
        odoo = load_odoo()
        odoo.tools.config.parse_config(odoo_args(odoo, args.db))
        # The library's log goes to the file with the subprocesses', not to the screen.
        logging.basicConfig(filename=log, level=logging.INFO, force=True)
        port = free_port()
        with steps.step(f"Database {args.db}"):
            prepare_database(odoo, args, log)
        with steps.step("Install the addon"):
            install(odoo, args, log)
        with steps.step("Company, contacts, sandbox aggregator (Odoo as a library)"):
            ctx = setup_company(odoo, args, port)
        server_args = [*odoo_args(odoo, args.db), f"--db-filter=^{re.escape(args.db)}$"]
        with contextlib.ExitStack() as running:
            with steps.step(f"Odoo server on http://127.0.0.1:{port}"):
                running.enter_context(odoo_server(server_args, log, port))
                say("Started (workers=0, no cron thread); stopped at the end of the demo.")
            web = WebClient(f"http://127.0.0.1:{port}")
            with steps.step("Add a bank: wizard, hosted login page, callback (over HTTP)"):
                connection_id = connect_bank(web, args, args.db)
            with steps.step("Link the accounts to journals (link wizard, over HTTP)"):
                link_accounts(web, connection_id, ctx, args)
            with steps.step("The invoices and bills those operations pay (Odoo as a library)"):
                books = book_documents(odoo, args.db, connection_id, ctx)
            with steps.step("Synchronise: Sync now, then the background job (over HTTP)"):
                synchronise(web, connection_id, ctx)
        with steps.step("What was imported (read from the database)"):
            agree = report(odoo, args.db, connection_id, ctx)
        with steps.step("Matching against the truth (read from the database)"):
            wrong = matching_summary(odoo, args.db, connection_id, ctx, books)
        with environment(odoo, args.db) as env:
            env["ir.config_parameter"].set_param("web.base.url", f"http://localhost:{BROWSER_PORT}")
    except OdooSetupError as error:
        print(f"\nDEMO FAILED: {error}", file=sys.stderr)
        print(f"Odoo's log: {log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\nDEMO INTERRUPTED: the server was stopped; {args.db} is incomplete.", file=sys.stderr
        )
        return 1
    except Exception as error:  # an Odoo or addon error: its message, the traceback in the log
        logging.getLogger("demo").exception("The demo failed")
        print(f"\nDEMO FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"The traceback is at the end of {log}", file=sys.stderr)
        return 1
    addons = odoo_args(odoo, args.db)
    rc = [f"-c {a[2:]}" for a in addons if a.startswith("-c")]
    print(
        f"""
Finished in {steps.elapsed():.0f} s. The database {args.db} stays; to open it in a browser:

  PYTHONPATH={REPO} {sys.executable} -m odoo {" ".join(rc)} \\
      --addons-path={Path(odoo.__file__).parent / "addons"},{REPO} \\
      -d {args.db} --db-filter='^{args.db}$' --http-port={BROWSER_PORT}

  then http://localhost:{BROWSER_PORT}/odoo   login admin, password {ADMIN_PASSWORD}
  (Invoicing > Bank: the bank journals' cards, the connections, the synchronisations; a
  journal's statement lines are ready to reconcile). Drop it with: dropdb {args.db}"""
    )
    return exit_code(agree, wrong)


if __name__ == "__main__":
    sys.exit(main())
