"""Package-only demo of the sandbox aggregator: ``python3 -m bank_sync_bridge.demo``.

It walks through what the Odoo addon will do, without Odoo: pick a bank, log in on the sandbox's
hosted page (the scenario is chosen by the login, see :mod:`bank_sync_bridge.providers.sandbox`),
list the accounts, read the latest operations, check the balances, then follow the connection for
a few simulated days with the incremental cursor. The Odoo demo comes later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TextIO
from urllib.parse import parse_qsl, urlsplit

from .errors import BankSyncError
from .model import Account, AccountType, Cursor, Transaction
from .providers.base import MemoryTokenStore, ProviderConfig
from .providers.sandbox import SandboxProvider

_TYPE_NAMES = {
    AccountType.CHECKING: "current",
    AccountType.SAVINGS: "savings",
    AccountType.CARD: "card",
    AccountType.LOAN: "loan",
    AccountType.OTHER: "other",
}


class _SimulatedClock:
    """Wall-clock "now" at start, moved forward by whole days to show what changes."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _money(amount: Decimal | None, currency: str = "EUR") -> str:
    return "-" if amount is None else f"{amount:>12,.2f} {currency}"


def _read_all(
    provider: SandboxProvider, account: Account, cursor: Cursor | None = None
) -> tuple[list[Transaction], Cursor | None]:
    out: list[Transaction] = []
    final = None
    for page in provider.iter_transactions(account.remote_id, cursor=cursor):
        out.extend(page.transactions)
        final = page.cursor
    return out, final


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bank_sync_bridge.demo",
        description="Connect a sandbox bank and show its accounts and operations "
        "(package only; the Odoo demo comes later).",
    )
    parser.add_argument("--bank", default="BNPAFRPP", help="bank id (default: BNP Paribas)")
    parser.add_argument(
        "--login",
        default="data_incidents",
        help="login typed on the hosted page; it picks the scenario (e.g. success, "
        "sca_required, wrong_password, bank_down, consent_expiring_3, data_incidents)",
    )
    parser.add_argument("--locale", default="en", choices=("en", "fr"))
    parser.add_argument("--seed", type=int, default=0, help="data seed (same seed, same data)")
    parser.add_argument("--last", type=int, default=12, help="operations to show (default 12)")
    parser.add_argument("--days", type=int, default=3, help="simulated days to follow")
    return parser.parse_args(argv)


class _Demo:
    """One run of the demo, writing to ``out``."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.clock = _SimulatedClock(datetime.now(timezone.utc).replace(microsecond=0))
        self.provider = SandboxProvider(
            ProviderConfig(user_ref="demo-company", options={"seed": args.seed}),
            clock=self.clock,
            token_store=MemoryTokenStore(),
        )

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def connect(self) -> str | None:
        """The connect flow, as the browser goes through it; the connection id or None."""
        provider, args = self.provider, self.args
        self.say("Most requested banks:")
        for bank in provider.list_institutions(limit=6):
            self.say(f"  {bank.remote_id:<9} {bank.name}")
        session = provider.start_connect(
            callback_url="http://127.0.0.1/bank_sync/callback",
            state="demo-state",
            institution_id=args.bank,
            locale=args.locale,
        )
        query = _query(session.url)
        provider.render_hosted_page(query)
        back = provider.submit_hosted_page({**query, "login": args.login, "password": "demo"})
        result = provider.complete_connect(_query(back))
        self.say()
        self.say(f"Hosted page: {session.url[:80]}...")
        self.say(f"Logged in as {args.login!r}; the page sent the browser back to the application.")
        if not result.success or not result.connection_id:
            self.say(f"Connection failed ({result.step}): {result.message}")
            return None
        connection = provider.get_connection(result.connection_id, locale=args.locale)
        self.say(f"Connection {connection.remote_id}")
        self.say(f"  bank: {connection.institution_name}   state: {connection.state.value}")
        self.say(f"  {connection.message}")
        return connection.remote_id

    def show_accounts(self, accounts: list[Account]) -> None:
        self.say()
        self.say("Accounts:")
        for account in accounts:
            self.say(
                f"  {_TYPE_NAMES[account.type]:<8} {account.label:<32} "
                f"{account.masked_number or '':<20} {_money(account.balance, account.currency)}"
            )
            if account.iban:
                self.say(f"           IBAN {account.iban}")

    def summary(self, accounts: list[Account], everything: dict[str, list[Transaction]]) -> None:
        self.say()
        self.say("Summary (two years of history):")
        for account in accounts:
            txs = everything[account.remote_id]
            booked = sum((t.amount for t in txs if not t.is_pending and not t.deleted), Decimal(0))
            expected = Decimal(account.raw["opening_balance"]) + booked
            check = "OK" if expected == account.balance else f"MISMATCH ({_money(expected)})"
            pending = sum(1 for t in txs if t.is_pending)
            self.say(
                f"  {_TYPE_NAMES[account.type]:<8} {len(txs):>5} operations, {pending} pending; "
                f"balance check {check}"
            )
        checking = next(a for a in accounts if a.type is AccountType.CHECKING)
        month_ago = self.clock().date() - timedelta(days=30)
        recent = [
            t
            for t in everything[checking.remote_id]
            if t.booking_date >= month_ago and not t.is_pending and not t.deleted
        ]
        money_in = sum((t.amount for t in recent if t.amount > 0), Decimal(0))
        money_out = sum((t.amount for t in recent if t.amount < 0), Decimal(0))
        self.say(
            f"  last 30 days on the current account: in {_money(money_in)}, out {_money(money_out)}"
        )

    def follow(self, connection_id: str, checking: Account, cursor: Cursor | None) -> None:
        """Each simulated morning, the cursor brings only what changed since the last run."""
        for _day in range(max(0, self.args.days)):
            self.clock.current += timedelta(days=1)
            self.say()
            self.say(f"{self.clock().date()}: morning synchronisation")
            try:
                changed, cursor = _read_all(self.provider, checking, cursor)
            except BankSyncError as exc:
                state = self.provider.get_connection(connection_id, locale=self.args.locale)
                self.say(f"  {state.state.value}: {state.message} ({type(exc).__name__})")
                continue
            if not changed:
                self.say("  nothing new")
            for tx in changed:
                what = "deleted" if tx.deleted else ("pending" if tx.is_pending else "booked")
                self.say(f"  {what:<8} {tx.booking_date}  {tx.amount:>11,.2f}  {tx.label[:55]}")

    def run(self) -> int:
        self.say("Bank synchronisation: sandbox demo through the Python package alone.")
        self.say(
            "(The Odoo demo, importing these operations as bank statement lines, comes later.)"
        )
        self.say()
        try:
            connection_id = self.connect()
        except BankSyncError as exc:
            self.say(f"The connection could not start: {exc.message}")
            return 2
        if connection_id is None:
            return 1
        accounts = self.provider.list_accounts(connection_id)
        self.show_accounts(accounts)
        checking = next(a for a in accounts if a.type is AccountType.CHECKING)
        everything: dict[str, list[Transaction]] = {}
        cursor = None
        self.say()
        try:
            for account in accounts:
                everything[account.remote_id], last_cursor = _read_all(self.provider, account)
                if account is checking:
                    cursor = last_cursor
        except BankSyncError as exc:
            self.say(f"Reading operations failed: {exc.message}")
            self.say("The addon will show this on the connection, with a Reconnect button.")
            return 0
        self.say(f"Last {self.args.last} operations of the current account:")
        for tx in everything[checking.remote_id][-self.args.last :]:
            status = "deleted" if tx.deleted else ("pending" if tx.is_pending else "booked ")
            self.say(f"  {tx.booking_date}  {status}  {tx.amount:>11,.2f}  {tx.label[:60]}")
        self.summary(accounts, everything)
        self.follow(connection_id, checking, cursor)
        return 0


def run(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the demo; returns the process exit code (1 when the scripted login failed, 2 on
    bad arguments such as an unknown bank)."""
    return _Demo(_parse_args(argv), out or sys.stdout).run()


def main() -> None:
    """Console entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
