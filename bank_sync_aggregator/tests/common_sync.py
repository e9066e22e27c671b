"""Fixtures shared by the synchronisation tests: a company with a chart of accounts, the
sandbox aggregator on a frozen clock, a connection and its accounts linked to bank journals."""

from datetime import date, datetime, timedelta, timezone

from odoo import Command, fields

from bank_sync_bridge.providers import MemoryTokenStore, ProviderConfig
from bank_sync_bridge.providers.bridgeapi import BridgeProvider
from bank_sync_bridge.providers.sandbox import make_connection_id
from bank_sync_bridge.sync import sync_key
from bank_sync_bridge.testing import AdjustableClock
from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator

from .common_bank_sync import BankSyncCompanyCase

#: "Now" for the sandbox's frozen clock: this morning after the bank's overnight batch (the
#: same day as Odoo's own "today", which validates ranges and plans windows).
NOW = datetime.now(timezone.utc).replace(hour=9, minute=0, second=0, microsecond=0)
TODAY = NOW.date()


class SyncCase(BankSyncCompanyCase):
    """A company using the sandbox aggregator on a frozen clock (``cls.aggregator``), with
    helpers to link and sync accounts."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.aggregator = cls.env["bank.sync.provider"].create(
            {"name": "Sandbox", "kind": "sandbox", "company_id": cls.company.id, "sandbox_seed": 7}
        )
        cls.clock = AdjustableClock(NOW, frozen=True)

    def setUp(self):
        super().setUp()
        self.clock.set(NOW)

    # ------------------------------------------------------------------ helpers

    def aggregator_client(self, **options):
        """The client the addon builds for the company's aggregator, on the test's clock."""
        return self.aggregator._get_client(clock=self.clock, **options)

    def use_test_clock(self):
        """Make every client the addon builds (Sync now, cron, wizards) use the test's clock."""
        original = type(self.aggregator)._get_client
        clock = self.clock
        self.patch(
            type(self.aggregator),
            "_get_client",
            lambda rec, **kwargs: original(rec, **dict(kwargs, clock=clock)),
        )

    def make_connection(self, scenario="success", connected_at=None, nonce="a1b2c3"):
        """A sandbox connection as the connect flow leaves it, with its accounts (connected
        this morning: the scenario's incidents show after tomorrow's 06:00 batch)."""
        connected_at = connected_at or NOW - timedelta(hours=2)
        remote_id = make_connection_id(
            self.aggregator._get_user_ref(), "BNPAFRPP", scenario, connected_at, nonce
        )
        client = self.aggregator_client()
        connection = self.aggregator._upsert_connection(client.get_connection(remote_id))
        connection._upsert_accounts(client.list_accounts(remote_id))
        return connection

    def link(self, account, history_start=None, journal=None, **vals):
        """Link ``account`` to a new (empty) bank journal."""
        journal = journal or self.env["account.journal"].create(
            {
                "name": f"Bank {account.account_type} {account.id}",
                "code": f"S{account.id % 1000:03d}",
                "type": "bank",
                "company_id": self.company.id,
            }
        )
        account.write(
            dict(
                vals,
                journal_id=journal.id,
                history_start_date=history_start or TODAY - timedelta(days=30),
            )
        )
        return journal

    def checking(self, connection):
        return connection.account_ids.filtered(lambda a: a.account_type == "checking")

    def sync(self, account, trigger="manual", **kwargs):
        if kwargs.get("client") is None:
            kwargs["client"] = self.aggregator_client()
        return account._sync_account(trigger, **kwargs)

    def ignore_wizard(self, account, date_from, date_to):
        """The deletion wizard on ``account``'s lines of that range, "ignore permanently" on."""
        return self.env["bank.sync.delete.wizard"].create(
            {
                "scope": "selected",
                "account_ids": [Command.set(account.ids)],
                "date_from": date_from,
                "date_to": date_to,
                "ignore_permanently": True,
            }
        )

    def lines(self, account):
        """The account's lines in the journal it is linked to."""
        domain = [("bank_sync_account_id", "=", account.id)]
        if account.journal_id:
            domain.append(("journal_id", "=", account.journal_id.id))
        return self.env["account.bank.statement.line"].search(domain)

    def remote_booked(self, account, date_from=None, client=None):
        """The aggregator's booked, not deleted operations of ``account`` from ``date_from``."""
        result = {}
        client = client or self.aggregator_client()
        for page in client.iter_transactions(account.remote_id, date_from=date_from):
            for tx in page.transactions:
                if not tx.is_pending and not tx.deleted:
                    result[tx.remote_id] = tx
        return result

    def assert_exactly_remote(self, account, date_from, client=None):
        """The journal holds exactly the aggregator's booked operations, once each."""
        kind = account.connection_id.provider_id.kind
        remote = self.remote_booked(account, date_from, client)
        lines = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")
        expected = {sync_key(kind, account.remote_id, rid): tx for rid, tx in remote.items()}
        self.assertEqual(len(lines), len(set(lines.mapped("bank_sync_key"))), "duplicate lines")
        extra = lines.filtered(lambda line: line.bank_sync_key not in expected)
        missing = set(expected) - set(lines.mapped("bank_sync_key"))
        self.assertFalse(
            extra or missing,
            "the journal differs from the aggregator: lines the aggregator does not have "
            f"{[(line.date, line.amount, line.transaction_details) for line in extra]}; "
            f"operations missing {[vars(expected[key]) for key in missing]}",
        )
        for line in lines:
            tx = expected[line.bank_sync_key]
            self.assertEqual(line.payment_ref, tx.label)
            self.assertAlmostEqual(line.amount, float(tx.amount), places=2)
            self.assertEqual(line.bank_sync_booking_date, tx.booking_date)
            self.assertEqual(line.date, tx.booking_date)
        return lines


class Sleeps(list):
    """An injectable ``sleep`` that records the delays instead of waiting."""

    def __bool__(self):
        # Callers write ``sleep or time.sleep``: an empty record must still be used.
        return True

    def __call__(self, seconds):
        self.append(seconds)


class BridgeSyncCase(SyncCase):
    """The company's aggregator is Bridge, reached over HTTP on the local Bridge emulator
    (``cls.emulator``), through the package's real client."""

    #: How many days of history the linked accounts import (the Demo Bank's operations
    #: span the last 60 days).
    history_days = 90

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.aggregator.write({"name": "Bridge", "kind": "bridgeapi"})
        cls.emulator = BridgeEmulator().start()
        cls.addClassCleanup(cls.emulator.stop)

    def setUp(self):
        super().setUp()
        # Scripted faults and forced 429s of a failed test must not leak into the next one.
        self.emulator.reset_rate_limits()
        self.emulator.clear_faults()
        self.sleeps = Sleeps()
        self.user_ref = f"company-{self.company.id}-{self._testMethodName}"[:60]
        # Tokens are kept between runs, as Odoo keeps them (bank.sync.token).
        self.token_store = MemoryTokenStore()

    def client(self, page_size=10, timeout=0.4, **options):
        return BridgeProvider(
            ProviderConfig(
                self.user_ref,
                base_url=self.emulator.base_url,
                credentials=self.emulator.credentials,
                options={"page_size": page_size, "max_retries": 1, **options},
                timeout=timeout,
            ),
            clock=self.emulator.clock,
            sleep=self.sleeps,
            token_store=self.token_store,
        )

    def bridge_account(self, **link_values):
        """A Demo Bank item's current account, linked to a new journal."""
        item = self.emulator.connect_item(self.user_ref, login="success")
        client = self.client()
        connection = self.aggregator._upsert_connection(client.get_connection(str(item.id)))
        connection._upsert_accounts(client.list_accounts(str(item.id)))
        account = connection.account_ids.filtered(lambda a: a.account_type == "checking")[:1]
        self.link(account, history_start=self.history_start, **link_values)
        return account

    @property
    def history_start(self):
        return fields.Date.context_today(self.env.user) - timedelta(days=self.history_days)

    def exact(self, account):
        """The journal holds exactly the bank's booked operations since the account's history
        start."""
        start = account.history_start_date or self.history_start
        return self.assert_exactly_remote(account, start, self.client(page_size=500))

    def converges_once_back(self, account):
        """The aggregator answers again: the next run gives exactly its operations."""
        self.emulator.clear_faults()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        return self.exact(account)


def day(offset):
    """``TODAY`` shifted by ``offset`` days."""
    return TODAY + timedelta(days=offset)


__all__ = ["NOW", "TODAY", "BridgeSyncCase", "Sleeps", "SyncCase", "date", "day"]
