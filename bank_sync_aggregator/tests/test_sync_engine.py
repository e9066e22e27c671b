from datetime import timedelta

import psycopg2

from odoo import fields
from odoo.addons.base.tests.test_ir_cron import CronMixinCase
from odoo.exceptions import UserError
from odoo.tests import tagged
from odoo.tools import mute_logger

from bank_sync_bridge.errors import InvalidRequest, ProviderUnavailable
from bank_sync_bridge.model import Cursor
from bank_sync_bridge.sync import sync_key

from .common_sync import NOW, TODAY, SyncCase, day


class BankMaintenance(ProviderUnavailable):
    """An error of the aggregator's family that passes by itself, named nowhere in the addon."""


class FailingClient:
    """The real client, whose read of the operations fails with ``error``."""

    def __init__(self, client, error):
        self.client = client
        self.error = error

    def __getattr__(self, name):
        return getattr(self.client, name)

    def iter_transactions(self, *args, **kwargs):
        raise self.error


@tagged("post_install", "-at_install")
class TestSyncEngine(SyncCase, CronMixinCase):
    """The daily import against the sandbox aggregator: exactly the bank's operations, once."""

    def test_first_sync_imports_exactly_the_booked_operations_ready_to_reconcile(self):
        connection = self.make_connection()
        account = self.checking(connection)
        journal = self.link(account)
        run = self.sync(account)

        self.assertEqual(run.state, "done", run.error)
        self.assertEqual((run.window_basis, run.date_from), ("history", day(-30)))
        lines = self.assert_exactly_remote(account, day(-30))
        self.assertTrue(lines)
        self.assertEqual(run.created_count, len(lines) + 1)  # + the opening line
        self.assertEqual(run.fetched_count, run.created_count - 1 + run.pending_count)
        self.assertEqual(lines.journal_id, journal)
        self.assertEqual(run.journal_id, journal)
        self.assertTrue(account.sync_cursor, "the cursor is stored with the lines")
        self.assertEqual(account.last_run_id, run)
        self.assertTrue(connection.last_sync_date)
        # Everything reconciliation needs is on the line.
        remote = self.remote_booked(account, day(-30))
        transfer = lines.filtered(lambda line: line.partner_name and line.account_number)[:1]
        self.assertTrue(transfer, "the sandbox has transfers with a counterparty")
        tx = next(t for t in remote.values() if t.label == transfer.payment_ref)
        self.assertEqual(transfer.partner_name, tx.counterparty_name)
        self.assertEqual(transfer.account_number, tx.counterparty_account)
        self.assertEqual(transfer.ref or False, tx.bank_reference or False)
        self.assertEqual(transfer.transaction_type or False, tx.operation_type or False)
        self.assertEqual(transfer.bank_sync_value_date, tx.value_date)
        self.assertEqual(transfer.transaction_details.get("id"), tx.raw.get("id"))
        self.assertFalse(lines.filtered("is_reconciled"), "imported lines wait for reconciliation")
        # The opening line makes the journal's balance the bank's; the check agrees.
        opening = self.lines(account).filtered(lambda line: line.bank_sync_status == "opening")
        self.assertEqual(len(opening), 1)
        self.assertLess(opening.date, min(lines.mapped("date")))
        balance = sum(self.lines(account).mapped("amount"))
        self.assertAlmostEqual(balance, account.balance, places=2)
        self.assertTrue(run.balance_checked)
        self.assertEqual(run.balance_difference, 0.0)
        self.assertEqual(account.balance_difference, 0.0)

    def test_second_run_adds_nothing_and_the_database_refuses_duplicates(self):
        account = self.checking(self.make_connection())
        self.link(account)
        first = self.sync(account)
        count = len(self.lines(account))
        second = self.sync(account)
        self.assertEqual(second.state, "done", second.error)
        self.assertEqual(second.window_basis, "cursor")
        self.assertEqual(second.created_count, 0)
        self.assertEqual(len(self.lines(account)), count)
        self.assertGreater(first.created_count, 0)
        # No code path can add a second line with the same key in the journal.
        line = self.lines(account)[0]
        with (
            mute_logger("odoo.sql_db"),
            self.assertRaises(psycopg2.IntegrityError),
            self.cr.savepoint(),
        ):
            self.env["account.bank.statement.line"].create(
                {
                    "journal_id": line.journal_id.id,
                    "payment_ref": "copy",
                    "amount": 1.0,
                    "bank_sync_key": line.bank_sync_key,
                }
            )

    def test_bank_changes_are_followed_while_unreconciled_and_reviewed_once_reconciled(self):
        """Label change, deletion, pending booked with the same or a new id, late back-dated
        operation: after the bank's overnight batch, the journal is the bank again."""
        account = self.checking(self.make_connection("data_incidents"))
        self.link(account)
        self.assertEqual(self.sync(account).state, "done")
        before = {line.bank_sync_key: line.payment_ref for line in self.lines(account)}

        self.clock.advance(days=2)
        run = self.sync(account)
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.window_basis, "cursor")
        lines = self.assert_exactly_remote(account, day(-30))
        renamed = lines.filtered(
            lambda line: (
                line.bank_sync_key in before and before[line.bank_sync_key] != line.payment_ref
            )
        )
        self.assertEqual(len(renamed), 1, "the renamed operation updated its line")
        self.assertGreaterEqual(run.updated_count, 1)
        self.assertEqual(run.deleted_count, 1)
        self.assertGreaterEqual(run.created_count, 2)  # booked pending + late cheque
        remote = self.remote_booked(account, day(-30)).values()
        for label in ("CB AMAZON MKTP", "CB TOTALENERGIES"):
            matching = lines.filtered(lambda line, lbl=label: lbl in line.payment_ref)
            booked = [tx for tx in remote if label in tx.label]
            self.assertTrue(booked, f"{label} is booked now")
            self.assertEqual(len(matching), len(booked), f"{label}: one line per booked one")

    def test_change_of_a_reconciled_operation_is_flagged_not_applied(self):
        account = self.checking(self.make_connection("data_incidents"))
        self.link(account)
        self.sync(account)
        before = {line.bank_sync_key: line for line in self.lines(account)}
        self.clock.advance(days=2)
        # Find which operations the bank will change, then reconcile their lines first.
        changed_keys = self._keys_changed_overnight(account)
        self.assertTrue(changed_keys)
        targets = self.env["account.bank.statement.line"].concat(
            *(before[key] for key in changed_keys)
        )
        for line in targets:
            self._reconcile_with_an_entry(line)
        labels = {line.id: line.payment_ref for line in targets}
        run = self.sync(account)
        self.assertEqual(run.state, "done", run.error)
        for line in targets:
            self.assertTrue(line.exists(), "a reconciled line is never deleted by the sync")
            self.assertEqual(line.payment_ref, labels[line.id])
            self.assertTrue(line.bank_sync_to_review)
            self.assertTrue(line.bank_sync_review_note)
        self.assertEqual(run.review_count, len(targets))
        deleted = targets.filtered(lambda line: line.bank_sync_status == "deleted")
        self.assertEqual(len(deleted), 1)

    def _keys_changed_overnight(self, account):
        client = self.aggregator_client()
        keys = set()
        for page in client.iter_transactions(
            account.remote_id, cursor=self._cursor(account), date_from=None
        ):
            for tx in page.transactions:
                key = sync_key("sandbox", account.remote_id, tx.remote_id)
                line = self.lines(account).filtered(lambda line, k=key: line.bank_sync_key == k)
                if line and (tx.deleted or tx.label != line.payment_ref):
                    keys.add(key)
        return keys

    def _cursor(self, account):
        return Cursor.loads(account.sync_cursor)

    def _reconcile_with_an_entry(self, line):
        """Reconcile ``line`` the CE way: its suspense item against a receivable entry."""
        partner = self.partner_a
        receivable = partner.property_account_receivable_id
        move = self.env["account.move"].create(
            {
                "move_type": "entry",
                "date": line.date,
                "line_ids": [
                    (0, 0, {"account_id": receivable.id, "partner_id": partner.id,
                            "debit": max(line.amount, 0), "credit": max(-line.amount, 0)}),
                    (0, 0, {"account_id": self.company_data["default_account_revenue"].id,
                            "debit": max(-line.amount, 0), "credit": max(line.amount, 0)}),
                ],
            }
        )  # fmt: skip
        move.action_post()
        _liquidity, suspense, _other = line.with_context(
            skip_account_move_synchronization=True
        )._seek_for_lines()
        suspense.with_context(skip_account_move_synchronization=True).write(
            {"account_id": receivable.id, "partner_id": partner.id}
        )
        (suspense + move.line_ids.filtered(lambda item: item.account_id == receivable)).reconcile()
        self.assertTrue(line.is_reconciled)

    def test_partner_is_found_by_counterparty_iban_or_exact_name(self):
        account = self.checking(self.make_connection())
        self.link(account)
        remote = list(self.remote_booked(account, day(-30)).values())
        with_iban = next(tx for tx in remote if tx.counterparty_account and tx.counterparty_name)
        by_iban = self.env["res.partner"].create({"name": "Known by IBAN only"})
        self.env["res.partner.bank"].create(
            {"partner_id": by_iban.id, "acc_number": with_iban.counterparty_account}
        )
        named = next(
            tx
            for tx in remote
            if tx.counterparty_name
            and tx.counterparty_account != with_iban.counterparty_account
            and tx.counterparty_name != with_iban.counterparty_name
        )
        by_name = self.env["res.partner"].create({"name": named.counterparty_name})
        self.sync(account)
        lines = self.lines(account)
        iban_lines = lines.filtered(
            lambda line: line.account_number == with_iban.counterparty_account
        )
        self.assertTrue(iban_lines)
        self.assertEqual(iban_lines.partner_id, by_iban)
        name_lines = lines.filtered(
            lambda line: (
                line.partner_name == named.counterparty_name
                and line.account_number != with_iban.counterparty_account
            )
        )
        self.assertEqual(name_lines.partner_id, by_name)
        self.assertFalse(
            (lines - iban_lines - name_lines).filtered(
                lambda line: line.partner_id in (by_iban | by_name)
            )
        )

    def test_lines_entered_by_hand_adopt_their_synced_twin(self):
        account = self.checking(self.make_connection())
        journal = self.link(account)
        remote = sorted(self.remote_booked(account, day(-30)).values(), key=lambda t: t.remote_id)
        # One typed a day early with a short label; two identical lines for another operation.
        unique = next(
            tx for tx in remote if sum(1 for other in remote if other.amount == tx.amount) == 1
        )
        StLine = self.env["account.bank.statement.line"]
        typed = StLine.create(
            {
                "journal_id": journal.id,
                "date": unique.booking_date - timedelta(days=1),
                "payment_ref": "",
                "amount": float(unique.amount),
            }
        )
        other = next(
            tx
            for tx in remote
            if tx is not unique and sum(1 for o in remote if o.amount == tx.amount) == 1
        )
        doubtful = StLine.create(
            [
                {
                    "journal_id": journal.id,
                    "date": other.booking_date,
                    "payment_ref": other.label,
                    "amount": float(other.amount),
                }
            ]
            * 2
        )
        run = self.sync(account)
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.adopted_count, 1)
        self.assertEqual(typed.bank_sync_account_id, account)
        self.assertEqual(typed.payment_ref, "", "adopting keeps what the user typed")
        synced_twin = self.lines(account).filtered(lambda line: line.amount == float(other.amount))
        self.assertEqual(len(synced_twin), 1)
        self.assertTrue(synced_twin.bank_sync_to_review)
        for line_id in doubtful.ids:
            self.assertIn(str(line_id), synced_twin.bank_sync_review_note)
        self.assertEqual(
            len(StLine.search([("journal_id", "=", journal.id)])), len(remote) + 2,
            "one line per operation, plus the two doubtful lines typed by hand",
        )  # fmt: skip
        self.assertFalse(
            self.lines(account).filtered(lambda line: line.bank_sync_status == "opening"),
            "a journal that had lines gets no opening line",
        )

    def test_statements_per_month_hold_their_lines_and_balances(self):
        account = self.checking(self.make_connection())
        journal = self.link(account, history_start=day(-45), statement_grouping="month")
        self.sync(account)
        statements = self.env["account.bank.statement"].search([("journal_id", "=", journal.id)])
        booked = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")
        months = {line.date.strftime("%Y-%m") for line in booked}
        self.assertEqual(len(statements), len(months))
        for statement in statements:
            self.assertEqual(
                {line.date.strftime("%Y-%m") for line in statement.line_ids},
                {statement.reference.rsplit(":", 1)[1]},
            )
            self.assertAlmostEqual(
                statement.balance_end - statement.balance_start,
                sum(statement.line_ids.mapped("amount")),
                places=2,
            )
        self.assertEqual(statements.line_ids, booked)

    def test_card_and_loan_balances_agree_with_their_signs(self):
        connection = self.make_connection()
        for kind in ("card", "loan", "savings"):
            account = connection.account_ids.filtered(lambda a, k=kind: a.account_type == k)
            self.link(account, history_start=day(-60))
            run = self.sync(account)
            self.assertEqual(run.state, "done", run.error)
            self.assertTrue(run.balance_checked, kind)
            self.assertEqual(run.balance_difference, 0.0, kind)
            self.assertLessEqual(run.balance_aggregator, 0.0 if kind != "savings" else 1e12)
        # A difference is reported, not hidden: an operation typed by hand a second time.
        account = connection.account_ids.filtered(lambda a: a.account_type == "card")
        line = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")[:1]
        typed = self.env["account.bank.statement.line"].create(
            {"journal_id": account.journal_id.id, "date": line.date, "amount": line.amount}
        )
        run = self.sync(account)
        self.assertAlmostEqual(run.balance_difference, line.amount, places=2)
        self.assertIn("differs", run.note)
        # A line the journal lost is found again by reading the recent weeks again.
        typed.unlink()
        key = line.bank_sync_key
        line.unlink()
        run = self.sync(account)
        self.assertIn("were read again", run.note)
        self.assertEqual(run.balance_difference, 0.0, run.note)
        restored = self.lines(account).filtered(lambda restored: restored.bank_sync_key == key)
        self.assertEqual(len(restored), 1)

    def test_history_start_is_respected_and_a_future_one_fails_clearly(self):
        account = self.checking(self.make_connection())
        self.link(account, history_start=day(-10))
        self.sync(account)
        self.assertTrue(self.lines(account))
        booked = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")
        self.assertGreaterEqual(min(booked.mapped("date")), day(-10))
        other = self.make_connection(nonce="d4e5f6")
        account2 = self.checking(other)
        self.link(account2, history_start=day(5))
        run = self.sync(account2)
        self.assertEqual(run.state, "failed")
        self.assertIn("in the future", run.error)
        self.assertFalse(self.lines(account2))

    def test_sync_now_imports_a_first_part_and_leaves_the_rest_to_the_background(self):
        account = self.checking(self.make_connection())
        self.link(account, history_start=day(-60))
        client = self.aggregator_client()
        client.page_size = 10
        with self.capture_triggers("bank_sync_aggregator.ir_cron_bank_sync") as capture:
            run = self.sync(account, client=client, time_budget=0.0001)
        self.assertEqual(run.state, "partial")
        # Whole pages only, and not all of them (the budget has a floor of half a second).
        total = len(self.remote_booked(account, day(-60)))
        self.assertEqual(run.created_count % 10, 0)
        self.assertTrue(0 < run.created_count < total, run.created_count)
        self.assertTrue(account.sync_requested)
        self.assertTrue(capture.records, "the background job is woken up for the rest")
        # The background job takes it from the stored cursor.
        rest = self.sync(account, trigger="cron", client=client)
        self.assertEqual(rest.state, "done", rest.error)
        self.assertEqual(rest.window_basis, "cursor")
        self.assertFalse(account.sync_requested)
        self.assert_exactly_remote(account, day(-60))

    def test_sync_now_button_reports_to_the_user(self):
        account = self.checking(self.make_connection())
        self.link(account)
        self.use_test_clock()
        action = account.action_sync_now()
        self.assertEqual(action["tag"], "display_notification")
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn(str(account.last_run_id.created_count), action["params"]["message"])
        journal_action = account.journal_id.action_bank_sync_now()
        self.assertIn("0 new operation", journal_action["params"]["message"])
        self.assertEqual(account.journal_id.bank_sync_run_count, 2)
        self.assertEqual(account.connection_id.run_count, 2)
        unlinked = account.connection_id.account_ids.filtered(lambda a: not a.journal_id)[:1]
        with self.assertRaises(UserError):
            unlinked.action_sync_now()

    def test_daily_job_runs_in_batches_reports_progress_and_survives_a_failure(self):
        good = self.make_connection()
        broken = self.make_connection("bank_down", connected_at=NOW - timedelta(hours=2))
        accounts = self.checking(good) | self.checking(broken)
        accounts |= good.account_ids.filtered(lambda a: a.account_type == "savings")
        for account in accounts:
            self.link(account, history_start=day(-5))
        self.use_test_clock()
        cron = self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")
        cron_env, progress = cron._add_progress()
        Account = self.env["bank.sync.account"].with_env(cron_env.env)
        with self.capture_triggers(cron.id) as capture:
            first = Account._cron_sync(batch_size=2)
        self.assertEqual(len(first), 2)
        self.assertEqual((progress.done, progress.remaining), (2, 1))
        self.assertTrue(capture.records)
        second = Account._cron_sync(batch_size=2)
        self.assertEqual(len(second), 1)
        self.assertEqual((progress.done, progress.remaining), (1, 0))
        self.assertFalse(Account._cron_sync(batch_size=2), "nothing left today")
        runs = accounts.run_ids
        self.assertEqual(set(runs.mapped("trigger")), {"cron"})
        failed = runs.filtered(lambda r: r.state == "failed")
        self.assertEqual(failed.account_id, self.checking(broken))
        self.assertEqual(failed.error_type, "ProviderUnavailable")
        self.assertEqual(broken.state, "temporary_failure")
        self.assertEqual(len(runs.filtered(lambda r: r.state == "done")), 2)
        self.assertFalse(self.lines(self.checking(broken)), "nothing half-written")
        # The failed window is retried by itself a quarter of an hour later.
        self.assertIn("Retried automatically", failed.note)
        retry_at = self.checking(broken).sync_not_before
        self.assertAlmostEqual((retry_at - fields.Datetime.now()).total_seconds(), 900, delta=5)
        # Later, the bank is back and the background job imports it.
        self.clock.advance(days=3)
        self.env["bank.sync.account"].browse(accounts.ids).write(
            {
                "sync_last_attempt": fields.Datetime.now() - timedelta(days=1),
                "sync_not_before": fields.Datetime.now() - timedelta(seconds=1),
            }
        )
        Account._cron_sync(batch_size=5)
        self.assertEqual(self.checking(broken).last_run_id.state, "done")
        self.assertTrue(self.lines(self.checking(broken)))

    def test_a_failure_that_needs_the_user_is_not_retried_by_itself(self):
        account = self.checking(self.make_connection("sca_required"))
        self.link(account, history_start=day(-5))
        self.use_test_clock()
        run = self.sync(account, trigger="cron")
        self.assertEqual((run.state, run.error_type), ("failed", "ActionRequired"))
        self.assertFalse(account.sync_requested, "only the user's reconnection can fix it")
        self.assertFalse(account.sync_not_before)
        self.assertNotIn("Retried automatically", run.note or "")

    def test_the_retry_follows_what_the_error_says_of_itself(self):
        account = self.checking(self.make_connection())
        self.link(account, history_start=day(-5))
        maintenance = BankMaintenance("The bank is closed for maintenance.")
        run = self.sync(
            account, trigger="cron", client=FailingClient(self.aggregator_client(), maintenance)
        )
        self.assertEqual((run.state, run.error_type), ("failed", "BankMaintenance"))
        self.assertTrue(run.error_retryable)
        self.assertIn("Retried automatically", run.note)
        self.assertTrue(account.sync_requested)
        self.assertTrue(account.sync_not_before)

        account.write({"sync_requested": False, "sync_not_before": False})
        refused = InvalidRequest("The request was refused.", status=400)
        run = self.sync(
            account, trigger="cron", client=FailingClient(self.aggregator_client(), refused)
        )
        self.assertEqual(run.state, "failed")
        self.assertFalse(run.error_retryable)
        self.assertNotIn("Retried automatically", run.note or "")
        self.assertFalse(account.sync_requested, "trying again would fail the same way")

    def test_an_impossible_window_fails_the_run_not_the_bank_connection(self):
        connection = self.make_connection()
        account = self.checking(connection)
        self.link(account, history_start=day(5))
        run = self.sync(account, trigger="cron")
        self.assertEqual((run.state, run.error_type), ("failed", "SyncPlanError"))
        self.assertIn("in the future", run.error)
        # Our own plan failed, not the bank: no failure counted, no alert.
        self.assertEqual(connection.state, "ok")
        self.assertFalse(connection.health_failed_days)
        self.assertFalse(connection.health_incident)
        self.assertFalse(run.error_retryable)
        self.assertFalse(account.sync_requested, "the dates must change, not the time")

    def test_a_webhook_request_is_synced_by_the_background_job_and_says_so(self):
        account = self.checking(self.make_connection())
        self.link(account)
        self.use_test_clock()
        with self.capture_triggers("bank_sync_aggregator.ir_cron_bank_sync") as capture:
            account._request_sync("webhook")
        self.assertTrue(capture.records, "the background job is woken up")
        self.assertTrue(account.sync_requested)
        self.env["bank.sync.account"]._cron_sync()
        run = account.last_run_id
        self.assertEqual((run.trigger, run.state), ("webhook", "done"), run.error)
        self.assertFalse(account.sync_requested)
        self.assertTrue(self.lines(account))

    def test_forced_sync_wizard_validates_its_range_and_reimports_a_gap(self):
        account = self.checking(self.make_connection())
        self.link(account)
        self.sync(account)
        Wizard = self.env["bank.sync.force.wizard"].with_context(
            active_model="bank.sync.account", active_ids=account.ids
        )
        inverted = Wizard.create({"date_from": day(-1), "date_to": day(-5)})
        with self.assertRaisesRegex(UserError, "after the end date"):
            inverted.action_force()
        future = Wizard.create({"date_from": day(-1), "date_to": day(3)})
        with self.assertRaisesRegex(UserError, "future"):
            future.action_force()
        # A gap: lines deleted without "ignore" come back with a forced sync over the range.
        gap = self.lines(account).filtered(
            lambda line: day(-20) <= line.date <= day(-10) and line.bank_sync_status == "booked"
        )
        self.assertTrue(gap)
        gap.unlink()
        self.use_test_clock()
        action = Wizard.create({"date_from": day(-20), "date_to": day(-10)}).action_force()
        self.assertEqual(action["params"]["type"], "success")
        run = account.last_run_id
        self.assertEqual((run.trigger, run.window_basis), ("forced", "forced"))
        self.assertEqual((run.date_from, run.date_to), (day(-20), day(-10)))
        self.assertEqual(run.created_count, len(gap))
        self.assertFalse(account.sync_forced_state, "a finished forced run leaves no state")
        self.assert_exactly_remote(account, day(-30))

    def test_a_long_forced_sync_continues_in_the_background_on_its_window(self):
        account = self.checking(self.make_connection())
        self.link(account, history_start=day(-60))
        self.sync(account)
        gap = self.lines(account).filtered(
            lambda line: day(-50) <= line.date <= day(-20) and line.bank_sync_status == "booked"
        )
        gap.unlink()
        client = self.aggregator_client()
        client.page_size = 10
        first = self.sync(
            account,
            trigger="forced",
            client=client,
            date_from=day(-50),
            date_to=day(-20),
            time_budget=0.0001,
        )
        self.assertEqual(first.state, "partial")
        self.assertTrue(account.sync_forced_state)
        self.use_test_clock()
        self.env["bank.sync.account"]._cron_sync()
        rest = account.last_run_id
        self.assertEqual((rest.trigger, rest.state), ("forced", "done"), rest.error)
        self.assertEqual((rest.date_from, rest.date_to), (day(-50), day(-20)))
        self.assertEqual(rest, first, "the background part completes the same run")
        self.assertEqual(rest.created_count, len(gap))
        self.assertFalse(account.sync_forced_state)
        self.assert_exactly_remote(account, day(-60))

    def test_deleted_and_ignored_operations_never_come_back(self):
        account = self.checking(self.make_connection())
        self.link(account)
        self.sync(account)
        reconciled = self.lines(account).filtered(
            lambda line: line.date <= day(-20) and line.bank_sync_status == "booked"
        )[:1]
        self._reconcile_with_an_entry(reconciled)
        wizard = self.ignore_wizard(account, day(-30), day(-20))
        doomed = wizard.line_ids
        self.assertTrue(doomed)
        self.assertNotIn(reconciled, doomed, "reconciled lines are not offered for deletion")
        keys = set(doomed.mapped("bank_sync_key"))
        wizard.action_delete()
        self.assertTrue(reconciled.exists())
        ignored = self.env["bank.sync.ignored"].search([("account_id", "=", account.id)])
        self.assertEqual(set(ignored.mapped("key")), keys)
        # Neither the daily import nor a forced one brings them back.
        self.sync(account)
        run = self.sync(account, trigger="forced", date_from=day(-30), date_to=day(-20))
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.ignored_count, len(keys))
        self.assertFalse(set(self.lines(account).mapped("bank_sync_key")) & keys)
        with self.assertRaisesRegex(UserError, "No imported operation"):
            self.env["bank.sync.delete.wizard"].create(
                {"scope": "all", "date_from": day(-30), "date_to": day(-20)}
            ).action_delete()

    def test_unlinked_or_disconnected_accounts_are_not_synced_by_the_daily_job(self):
        connection = self.make_connection()
        account = self.checking(connection)
        self.link(account)
        account.journal_id = False
        self.assertFalse(self.env["bank.sync.account"]._cron_sync())
        self.assertEqual(TODAY, NOW.date())
