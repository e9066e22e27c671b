"""The fault matrix against the Bridge and Linxo emulators, over real HTTP on 127.0.0.1.

Every fault ends with a clear run state, no half-written page, and a next run that converges to
exactly the aggregator's operations.
"""

from datetime import timedelta

from odoo import fields
from odoo.addons.base.tests.test_ir_cron import CronMixinCase
from odoo.tests import tagged

from bank_sync_bridge.providers import MemoryTokenStore
from bank_sync_bridge.providers.linxo import LinxoProvider
from bank_sync_bridge.testing import AdjustableClock
from bank_sync_bridge.testing.linxo_emulator import LinxoEmulator

from .common_sync import BridgeSyncCase, Sleeps, SyncCase

TRANSACTIONS = "/v3/aggregation/transactions"


class FaultAfterPages:
    """The real client; once ``after`` pages were handed over, a fault is scripted on the
    emulator so that the next page's HTTP call meets it."""

    def __init__(self, client, script, after=1):
        self.client = client
        self.script = script
        self.after = after

    def __getattr__(self, name):
        return getattr(self.client, name)

    def iter_transactions(self, *args, **kwargs):
        for number, page in enumerate(self.client.iter_transactions(*args, **kwargs), 1):
            yield page
            if number == self.after:
                self.script()


@tagged("post_install", "-at_install")
class TestSyncFaultsBridge(BridgeSyncCase, CronMixinCase):
    """Bridge: HTTP faults, token expiry and the operations the bank changes."""

    def run_with_fault_on_second_page(self, kind, count=2, **script_kwargs):
        # count=2: the first attempt and the client's one retry both meet the fault.
        account = self.bridge_account()
        client = FaultAfterPages(
            self.client(),
            lambda: self.emulator.script_faults(kind, count, path=TRANSACTIONS, **script_kwargs),
        )
        run = self.sync(account, trigger="cron", client=client)
        return account, run

    def assert_first_page_only_then_converges(self, account, run, error_type):
        self.assertEqual(run.state, "failed")
        self.assertEqual(run.error_type, error_type)
        self.assertTrue(run.error)
        self.assertEqual(run.pages, 1, "the failing page was rolled back whole")
        lines = self.lines(account)
        self.assertEqual(len(lines), 10, "exactly the stored page, nothing half-written")
        self.assertTrue(account.sync_cursor, "the cursor of the stored page is kept")
        self.assertFalse(lines.filtered(lambda line: line.bank_sync_status == "opening"))
        # Nobody has to press anything: the background job tries again in 15 minutes.
        self.assertIn("Retried automatically", run.note)
        self.assertTrue(account.sync_requested)
        wait = (account.sync_not_before - fields.Datetime.now()).total_seconds()
        self.assertAlmostEqual(wait, 900, delta=5)
        rerun = self.sync(account, trigger="cron", client=self.client())
        self.assertEqual(rerun.state, "done", rerun.error)
        self.assertEqual(rerun.window_basis, "cursor")
        self.exact(account)
        previous = account.run_ids.filtered(lambda r: r.state == "running")
        self.assertFalse(previous, "no run is left running")

    def test_server_error_mid_stream(self):
        account, run = self.run_with_fault_on_second_page("500")
        self.assertIn("went wrong", run.error, "the aggregator's own message is shown")
        self.assertEqual(account.connection_id.state, "temporary_failure")
        self.assert_first_page_only_then_converges(account, run, "ProviderUnavailable")

    def test_timeout_mid_stream(self):
        account, run = self.run_with_fault_on_second_page("timeout", delay=1.0)
        self.assert_first_page_only_then_converges(account, run, "ConnectionFailed")

    def test_malformed_json_mid_stream(self):
        account, run = self.run_with_fault_on_second_page("malformed_json")
        self.assert_first_page_only_then_converges(account, run, "ProviderUnavailable")

    def test_truncated_page_mid_stream(self):
        account, run = self.run_with_fault_on_second_page("truncated")
        self.assert_first_page_only_then_converges(account, run, "ProviderUnavailable")

    def test_rate_limit_with_retry_after_is_waited_out(self):
        account = self.bridge_account()
        self.emulator.force_rate_limit(1, retry_after=2)
        run = self.sync(account, trigger="cron", client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertIn(2.0, self.sleeps, "the client waited as long as Retry-After said")
        self.exact(account)

    def test_an_outage_is_retried_three_times_then_left_to_the_next_day(self):
        account = self.bridge_account()
        self.emulator.script_faults("503", 100, path=TRANSACTIONS)
        cron = self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")
        waits = []
        with self.capture_triggers(cron.id) as triggers:
            for _attempt in range(4):
                run = self.sync(account, trigger="cron", client=self.client())
                self.assertEqual((run.state, run.error_type), ("failed", "ProviderUnavailable"))
                if account.sync_not_before:
                    waits.append(
                        round((account.sync_not_before - fields.Datetime.now()).total_seconds())
                    )
                    account.sync_not_before = False
        self.assertEqual(len(waits), 3, waits)
        for wait, expected in zip(waits, (900, 3600, 14400), strict=True):
            self.assertAlmostEqual(wait, expected, delta=5)
        self.assertEqual(len(triggers.records), 3, "the background job is woken for each retry")
        self.assertIn("next daily import", run.note)
        # Once the aggregator is back, the account converges to its operations.
        self.converges_once_back(account)

    def test_a_failed_forced_sync_is_retried_on_its_own_window(self):
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        date_from, date_to = (
            self.history_start + timedelta(days=10),
            self.history_start + timedelta(days=40),
        )
        self.emulator.script_faults("503", 2, path=TRANSACTIONS)
        run = self.sync(
            account, trigger="forced", client=self.client(), date_from=date_from, date_to=date_to
        )
        self.assertEqual((run.state, run.error_type), ("failed", "ProviderUnavailable"))
        self.assertIn("Retried automatically", run.note)
        self.assertEqual(account.sync_requested_trigger, "forced")
        # What the background job then does for this account: the same window, not the cursor.
        retry = self.sync(account, trigger=account.sync_requested_trigger, client=self.client())
        self.assertEqual(retry.state, "done", retry.error)
        self.assertEqual(retry.window_basis, "forced")
        self.assertEqual((retry.date_from, retry.date_to), (date_from, date_to))
        self.exact(account)

    def test_rate_limit_that_persists_resumes_later_cleanly(self):
        account = self.bridge_account()
        self.emulator.force_rate_limit(10, retry_after=30)
        run = self.sync(account, trigger="cron", client=self.client())
        self.assertEqual((run.state, run.error_type), ("partial", "RateLimited"))
        self.assertIn("resumes at", run.note)
        self.assertTrue(account.sync_not_before)
        self.assertFalse(self.lines(account))
        self.assertFalse(account.sync_cursor)
        self.converges_once_back(account)

    def test_expired_token_is_renewed_without_the_user(self):
        account = self.bridge_account()
        client = self.client()
        self.assertEqual(self.sync(account, client=client).state, "done")
        self.emulator.expire_tokens()
        self.emulator.add_transaction(int(account.remote_id), "-42.00", "Late fee")
        run = self.sync(account, client=client)
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.created_count, 1)
        self.exact(account)

    def test_changed_operations_follow_the_bank(self):
        """Pending booked under a new id, deletion, label change, date shift."""
        account = self.bridge_account()
        remote_id = int(account.remote_id)
        pending = self.emulator.add_transaction(remote_id, "-19.99", "CB CINEMA", pending=True)
        first = self.sync(account, client=self.client())
        self.assertEqual(first.state, "done", first.error)
        self.assertEqual(first.pending_count, 1)
        self.assertFalse(self.lines(account).filtered(lambda line: line.amount == -19.99))
        booked = [tx for tx in self.emulator.transactions(remote_id) if not tx.future]
        deleted, renamed, shifted = booked[-1], booked[-2], booked[-3]
        self.emulator.book_pending(pending.id, new_id=True)
        self.emulator.delete_transaction(deleted.id)
        self.emulator.change_transaction(renamed.id, label="Loyer bureau mars")
        self.emulator.change_transaction(shifted.id, shift_days=-2)

        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(
            (run.created_count, run.deleted_count, run.updated_count), (1, 1, 2), run.note
        )
        lines = self.exact(account)
        self.assertEqual(len(lines.filtered(lambda line: line.amount == -19.99)), 1)
        self.assertIn("Loyer bureau mars", lines.mapped("payment_ref"))


@tagged("post_install", "-at_install")
class TestSyncLinxo(SyncCase):
    """Linxo: page-numbered windows, string amounts, Paris dates; faults and changes."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.aggregator.write({"name": "Linxo", "kind": "linxo"})
        cls.linxo_clock = AdjustableClock()
        cls.emulator = LinxoEmulator(clock=cls.linxo_clock, transactions_per_account=25).start()
        cls.addClassCleanup(cls.emulator.stop)

    def setUp(self):
        super().setUp()
        self.sleeps = Sleeps()
        self.client = LinxoProvider(
            self.emulator.provider_config(f"company-{self.company.id}", page_size=10),
            clock=self.linxo_clock,
            sleep=self.sleeps,
            token_store=MemoryTokenStore(),
        )

    def linxo_account(self):
        connection_id = self.emulator.create_connection(self.client.user_id)
        self.linxo_clock.advance(minutes=10)  # the first synchronisation at Linxo lands
        connection = self.aggregator._upsert_connection(self.client.get_connection(connection_id))
        connection._upsert_accounts(self.client.list_accounts(connection_id))
        account = connection.account_ids.filtered(lambda a: a.account_type == "checking")[:1]
        self.link(account, history_start=self.history_start)
        return account

    @property
    def history_start(self):
        return fields.Date.context_today(self.env.user) - timedelta(days=120)

    def test_first_sync_then_changes_and_a_server_error(self):
        account = self.linxo_account()
        run = self.sync(account, client=self.client)
        self.assertEqual(run.state, "done", run.error)
        self.assertGreater(run.pages, 1)
        self.assert_exactly_remote(account, self.history_start, self.client)
        self.assertEqual(run.balance_difference, 0.0, run.note)

        # The two most recent operations: inside the window a daily run re-reads.
        ids = sorted(
            (
                tx_id
                for tx_id in self.emulator.transaction_ids(account.remote_id)
                if self.emulator.transaction(tx_id).status == "BOOKED"
                and self.emulator.transaction(tx_id).origin == "TRANSACTION"
            ),
            key=lambda tx_id: self.emulator.transaction(tx_id).booking_date,
        )
        self.emulator.change_transaction(ids[-1], label="Abonnement logiciel")
        self.emulator.cancel_transaction(ids[-2])
        today = fields.Date.context_today(self.env.user)
        self.emulator.add_transaction(account.remote_id, "-15.00", "Frais de tenue", on=today)
        self.emulator.script_faults("500", 10, path="/transactions")
        failed = self.sync(account, client=self.client)
        self.assertEqual((failed.state, failed.error_type), ("failed", "ProviderUnavailable"))
        self.emulator.clear_faults()
        again = self.sync(account, client=self.client)
        self.assertEqual(again.state, "done", again.error)
        self.assertEqual((again.updated_count, again.deleted_count), (1, 1), again.note)
        lines = self.assert_exactly_remote(account, self.history_start, self.client)
        self.assertIn("Abonnement logiciel", lines.mapped("payment_ref"))
