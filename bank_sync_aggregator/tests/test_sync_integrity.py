"""Nothing lost, nothing hidden, on the Bridge emulator over HTTP.

- The first import covers the whole history however it is started and wherever it stops, and
  its opening line is the bank's balance at the history start, from a balance read known to
  count exactly the operations in the journal: the balance check then compares the journal
  with the bank, not with itself.
- Lines that carry the accountant's work (a reconciliation, even partial, a write-off, a note)
  are never rewritten nor deleted by the bank's changes: they are flagged once, with words that
  say what happened.
- The bank's changes that Odoo cannot write in place (a date across a year end, a date in
  another month's statement) are applied correctly.
- Operations that become visible late (stamped before what was already read) are found.
"""

import traceback
from datetime import date, timedelta
from decimal import Decimal

from odoo import Command, fields
from odoo.addons.bank_sync_aggregator.sync import run as run_module
from odoo.addons.bank_sync_aggregator.sync.balance import RECENT_REREAD_DAYS
from odoo.addons.bank_sync_aggregator.sync.pages import BUDGET_BATCH
from odoo.exceptions import UserError
from odoo.tests import tagged

from .common_sync import BridgeSyncCase


class BeforeEachBalanceRead:
    """The real client; ``happen()`` runs at the aggregator just before its next balance
    read (``list_accounts``), once: an operation booked between the last page of a first
    import and the balance."""

    def __init__(self, client, happen):
        self.client = client
        self.happen = happen

    def __getattr__(self, name):
        return getattr(self.client, name)

    def list_accounts(self, connection_id):
        happen, self.happen = self.happen, None
        if happen:
            happen()
        return self.client.list_accounts(connection_id)


class IntegrityCase(BridgeSyncCase):
    """Helpers that read the bank (the emulator) independently of what was imported."""

    def remote_id(self, account):
        return int(account.remote_id)

    def bank_balance_at_history_start(self, account):
        """The bank's balance the evening before the history start: its balance now minus its
        booked operations since, as the emulator holds them."""
        remote_id = self.remote_id(account)
        booked = [
            tx.amount
            for tx in self.emulator.transactions(remote_id, include_deleted=False)
            if not tx.future and tx.date >= account.history_start_date
        ]
        return self.emulator.state.accounts[remote_id].balance - sum(booked, Decimal(0))

    def line_for(self, account, tx_id):
        """The journal's line of the bank's operation ``tx_id``."""
        return self.lines(account).filtered(
            lambda line: (line.transaction_details or {}).get("id") == tx_id
        )

    def opening(self, account):
        return self.lines(account).filtered(lambda line: line.bank_sync_status == "opening")

    def assert_books_match_the_bank(self, account):
        """The journal holds exactly the bank's operations, and starts at the bank's balance
        at the history start: every later difference would show."""
        self.exact(account)
        opening = self.opening(account)
        self.assertEqual(len(opening), 1)
        self.assertAlmostEqual(
            opening.amount, float(self.bank_balance_at_history_start(account)), places=2
        )
        self.assertEqual(opening.date, account.history_start_date - timedelta(days=1))
        check = account.last_run_id
        self.assertTrue(check.balance_checked, check.note)
        self.assertEqual(check.balance_difference, 0.0, check.note)

    def synced_account(self):
        account = self.bridge_account()
        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        return account

    def line_of(self, account, amount_below=-20.0):
        """A booked debit of the journal and its operation at the bank."""
        line = self.lines(account).filtered(
            lambda line: line.bank_sync_status == "booked" and line.amount <= amount_below
        )[:1]
        self.assertTrue(line)
        return line, int(line.transaction_details["id"])

    def vendor_bill(self, amount):
        return self.init_invoice(
            "in_invoice", partner=self.partner_a, amounts=[amount], taxes=[], post=True
        )

    def split_suspense(self, line, account, amount, partner=None):
        """What a reconciliation screen does to a line: ``amount`` of its suspense item goes
        to ``account``; returns that new journal item."""
        move = line.move_id
        _liquidity, suspense, _other = line._seek_for_lines()
        sign = 1 if suspense.balance > 0 else -1
        rest = suspense.balance - sign * amount
        move.with_context(skip_readonly_check=True).write(
            {
                "line_ids": [
                    Command.update(
                        suspense.id,
                        {
                            "debit": max(rest, 0.0),
                            "credit": max(-rest, 0.0),
                            "amount_currency": rest,
                        },
                    ),
                    Command.create(
                        {
                            "account_id": account.id,
                            "partner_id": (partner or line.partner_id).id,
                            "name": line.payment_ref,
                            "debit": amount if sign > 0 else 0.0,
                            "credit": amount if sign < 0 else 0.0,
                            "amount_currency": sign * amount,
                            "currency_id": suspense.currency_id.id,
                        }
                    ),
                ]
            }
        )
        return move.line_ids.filtered(lambda item: item.account_id == account)


@tagged("post_install", "-at_install")
class TestFirstImport(IntegrityCase):
    def test_a_first_sync_now_stopped_inside_its_first_page_still_imports_the_whole_history(self):
        account = self.bridge_account()
        # Bridge lists by update time: today's direct debit, stamped before the rest, comes
        # first, so the lines a short Sync now creates include the most recent date.
        self.emulator.add_transaction(
            self.remote_id(account), "-64.90", "PRLV SEPA EDF", stamped_ago=timedelta(days=2)
        )
        run = self.sync(account, client=self.client(page_size=500), time_budget=0.0001)
        self.assertEqual(run.state, "partial")
        self.assertEqual(run.created_count, BUDGET_BATCH)
        self.assertFalse(self.opening(account), "no opening line from a partial import")
        self.assertTrue(account.sync_requested)

        # The background job takes the import over (as the cron does for this account).
        rest = self.sync(
            account, trigger=account.sync_requested_trigger, client=self.client(page_size=500)
        )
        self.assertEqual(rest, run, "the same run completes")
        self.assertEqual(rest.state, "done", rest.error)
        self.assertEqual(rest.window_basis, "history", "read again from the history start")
        self.assert_books_match_the_bank(account)
        # And nothing more to find the next day.
        again = self.sync(account, client=self.client())
        self.assertEqual((again.created_count, again.balance_difference), (0, 0.0), again.note)

    def test_an_operation_booked_while_the_balance_is_read_is_counted_once(self):
        account = self.bridge_account()
        booked = []

        def book():
            booked.append(
                self.emulator.add_transaction(self.remote_id(account), "-120.00", "CB STATION")
            )

        run = self.sync(account, client=BeforeEachBalanceRead(self.client(page_size=500), book))
        self.assertEqual(run.state, "done", run.error)
        self.assertTrue(booked)
        self.assertEqual(len(self.lines(account).filtered(lambda line: line.amount == -120.0)), 1)
        self.assert_books_match_the_bank(account)
        again = self.sync(account, client=self.client())
        self.assertEqual(again.created_count, 0)
        self.assertEqual(again.balance_difference, 0.0, again.note)

    def test_relinking_to_another_journal_imports_its_history_there(self):
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        first_journal = account.journal_id
        journal = self.env["account.journal"].create(
            {"name": "Banque (nouveau)", "code": "BNEW", "type": "bank"}
        )
        self.link(account, history_start=self.history_start, journal=journal)
        self.assertNotEqual(account.journal_id, first_journal)
        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.window_basis, "history")
        self.assert_books_match_the_bank(account)


@tagged("post_install", "-at_install")
class TestProtectedLines(IntegrityCase):
    """The bank deletes or changes an operation after the accountant worked on its line."""

    def assert_kept_and_flagged_once(self, account, line, words):
        new = self.emulator.add_transaction(self.remote_id(account), "-12.00", "FRAIS TENUE")
        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertTrue(line.exists(), "the accountant's work is never deleted")
        self.assertTrue(line.bank_sync_to_review)
        self.assertIn(words, line.bank_sync_review_note)
        self.assertEqual(run.review_count, 1)
        self.assertEqual(run.created_count, 1, "the account is not blocked")
        self.assertTrue(self.line_for(account, new.id))
        again = self.sync(account, client=self.client())
        self.assertEqual(again.state, "done", again.error)
        self.assertEqual(again.review_count, 0, "asked once, not every run")
        return run

    def test_a_partly_reconciled_line_deleted_by_the_bank_is_kept_and_flagged(self):
        account = self.synced_account()
        line, tx_id = self.line_of(account, amount_below=-50.0)
        bill = self.vendor_bill(round(-line.amount * 0.4, 2))
        payable = bill.line_ids.filtered(lambda item: item.account_type == "liability_payable")
        part = self.split_suspense(line, payable.account_id, -payable.balance, self.partner_a)
        (part + payable).reconcile()
        self.assertFalse(line.is_reconciled, "partly reconciled")
        self.emulator.delete_transaction(tx_id)

        self.assert_kept_and_flagged_once(account, line, "partly reconciled")
        self.assertEqual(line.bank_sync_status, "deleted")
        self.assertNotIn("is reconciled", line.bank_sync_review_note)
        self.assertEqual(bill.payment_state, "paid", "the user's reconciliation stays")

    def test_a_partly_written_off_line_deleted_by_the_bank_keeps_the_write_off(self):
        account = self.synced_account()
        line, tx_id = self.line_of(account, amount_below=-30.0)
        expense = self.company_data["default_account_expense"]
        write_off = self.split_suspense(line, expense, 10.0)
        self.emulator.delete_transaction(tx_id)

        self.assert_kept_and_flagged_once(account, line, "written off or given an account")
        self.assertTrue(write_off.exists())

    def test_a_line_with_a_note_changed_by_the_bank_is_not_rewritten(self):
        account = self.synced_account()
        line, tx_id = self.line_of(account)
        line.move_id.narration = "<p>Vu avec le fournisseur : facture 2026-118</p>"
        label = line.payment_ref
        self.emulator.change_transaction(tx_id, label="Libellé corrigé par la banque")

        self.assert_kept_and_flagged_once(account, line, "annotated")
        self.assertEqual(line.payment_ref, label)
        self.assertIn("Libellé corrigé par la banque", line.bank_sync_review_note)

    def test_the_deletion_wizard_leaves_the_accountants_work_alone(self):
        account = self.synced_account()
        booked = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")
        written_off, noted, plain = booked.sorted("amount")[:3]
        self.split_suspense(written_off, self.company_data["default_account_expense"], 5.0)
        noted.move_id.narration = "<p>À voir avec l'expert-comptable</p>"
        wizard = self.ignore_wizard(account, self.history_start, fields.Date.today())
        self.assertIn(plain, wizard.line_ids)
        self.assertNotIn(written_off, wizard.line_ids)
        self.assertNotIn(noted, wizard.line_ids)
        wizard.action_delete()
        self.assertFalse(plain.exists())
        self.assertTrue(written_off.exists() and noted.exists())

    def test_a_plain_line_follows_the_bank_across_a_year_end(self):
        self.history_days = (fields.Date.context_today(self.env.user) - date(2025, 12, 1)).days
        account = self.synced_account()
        tx = self.emulator.add_transaction(
            self.remote_id(account), "-45.00", "PRLV ASSURANCE", on=date(2025, 12, 31)
        )
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        line = self.line_for(account, tx.id)
        self.assertIn("/2025/", line.move_id.name)
        self.emulator.change_transaction(tx.id, shift_days=1)

        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.review_count, 0, run.note)
        self.assertEqual(run.updated_count, 1)
        moved = self.line_for(account, tx.id)
        self.assertEqual(len(moved), 1)
        self.assertEqual(moved.date, date(2026, 1, 1))
        self.assertIn("/2026/", moved.move_id.name, "numbered in its new year")
        self.assertFalse(moved.bank_sync_to_review)
        self.exact(account)
        self.assertEqual(run.balance_difference, 0.0, run.note)

    def test_a_change_into_a_locked_period_is_flagged_once_with_the_right_words(self):
        account = self.synced_account()
        line, tx_id = self.line_of(account)
        # The accountant closed the period up to the day before (as if every line until then
        # were reconciled: Odoo asks for that before it accepts a lock date).
        self.env.cr.execute(
            "UPDATE res_company SET fiscalyear_lock_date = %s WHERE id = %s",
            [line.date - timedelta(days=1), self.company.id],
        )
        self.company.invalidate_recordset(["fiscalyear_lock_date"])
        self.emulator.change_transaction(tx_id, shift_days=-3)

        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.review_count, 1)
        self.assertIn("could not be applied", line.bank_sync_review_note)
        self.assertNotIn("reconciled", line.bank_sync_review_note)
        again = self.sync(account, client=self.client())
        self.assertEqual(again.review_count, 0, "flagged once")

    def test_with_monthly_statements_a_line_moves_to_its_new_month(self):
        account = self.bridge_account(statement_grouping="month")
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        today = fields.Date.context_today(self.env.user)
        end_of_last_month = today.replace(day=1) - timedelta(days=1)
        tx = self.emulator.add_transaction(
            self.remote_id(account), "-30.00", "CB LIBRAIRIE", on=end_of_last_month
        )
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        line = self.line_for(account, tx.id)
        old_statement = line.statement_id
        self.assertEqual(old_statement.reference[-7:], end_of_last_month.strftime("%Y-%m"))
        self.emulator.change_transaction(tx.id, shift_days=1)

        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        line = self.line_for(account, tx.id)
        self.assertEqual(line.date, today.replace(day=1))
        self.assertEqual(line.statement_id.reference[-7:], today.strftime("%Y-%m"))
        self.assertNotIn(line, old_statement.line_ids)


@tagged("post_install", "-at_install")
class TestLateOperations(IntegrityCase):
    """Operations that become visible with an update stamp older than what was read."""

    def test_an_operation_published_minutes_after_its_stamp_is_read(self):
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        late = self.emulator.add_transaction(
            self.remote_id(account), "-89.00", "PRLV TELECOM", stamped_ago=timedelta(minutes=5)
        )
        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.created_count, 1)
        self.assertTrue(self.line_for(account, late.id))
        self.assertEqual(run.balance_difference, 0.0, run.note)
        self.assertNotIn("read again", run.note or "", "found by the incremental read itself")

    def synced_with_a_late_operation(self):
        """A synced account, then an operation of 4 days ago that the bank publishes with an
        ``updated_at`` of 3 days ago, far below the incremental read's overlap."""
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        today = fields.Date.context_today(self.env.user)
        late = self.emulator.add_transaction(
            self.remote_id(account),
            "-230.00",
            "PRLV URSSAF",
            on=today - timedelta(days=4),
            stamped_ago=timedelta(days=3),
        )
        return account, late

    def test_a_difference_with_the_bank_reads_recent_weeks_again_before_alerting(self):
        account, late = self.synced_with_a_late_operation()
        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertTrue(self.line_for(account, late.id))
        self.assertEqual(run.balance_difference, 0.0, run.note)
        self.assertIn(f"last {RECENT_REREAD_DAYS} days were read again", run.note)
        self.assertFalse(
            self.env["mail.activity"].search(
                [
                    ("res_model", "=", "bank.sync.connection"),
                    ("res_id", "=", account.connection_id.id),
                    ("summary", "ilike", "balance"),
                ]
            ),
            "nobody is alerted",
        )
        self.exact(account)

    def test_in_the_daily_job_the_recent_weeks_are_read_again_without_committing_midway(self):
        """The daily job commits after each page; the re-read runs inside a savepoint, where a
        commit ends the savepoint and the balance check after it fails: the alert would never
        be written (and the job would fail on every run)."""
        account, late = self.synced_with_a_late_operation()
        commits = []

        def commit():
            stack = [frame.name for frame in traceback.extract_stack()]
            commits.append("reread_recent" in stack)

        self.patch(self.env.cr, "commit", commit)
        self.patch(run_module, "in_test_mode", lambda: False)
        run = self.sync(account, trigger="cron", client=self.client())
        self.assertTrue(commits, "the daily job commits page by page")
        self.assertNotIn(True, commits, "no commit inside the re-read's savepoint")
        self.assertEqual(run.state, "done", run.error)
        self.assertTrue(self.line_for(account, late.id))
        self.assertTrue(run.balance_checked, run.note)
        self.assertEqual(run.balance_difference, 0.0, run.note)

    def test_an_operation_the_bank_deletes_in_a_locked_period_is_flagged_and_the_rest_imported(
        self,
    ):
        account = self.synced_account()
        line, tx_id = self.line_of(account)
        self.env.cr.execute(
            "UPDATE res_company SET fiscalyear_lock_date = %s WHERE id = %s",
            [line.date, self.company.id],
        )
        self.company.invalidate_recordset(["fiscalyear_lock_date"])
        self.emulator.delete_transaction(tx_id)
        new = self.emulator.add_transaction(self.remote_id(account), "-12.00", "FRAIS TENUE")

        run = self.sync(account, client=self.client())
        self.assertEqual(run.state, "done", run.error)
        self.assertTrue(self.line_for(account, new.id), "the operations after it come in")
        self.assertTrue(line.exists(), "a locked period is not touched")
        self.assertEqual(line.bank_sync_status, "deleted")
        self.assertIn("could not be deleted", line.bank_sync_review_note)
        self.assertEqual(run.review_count, 1)
        again = self.sync(account, client=self.client())
        self.assertEqual(again.state, "done", again.error)
        self.assertEqual(again.review_count, 0, "flagged once")


@tagged("post_install", "-at_install")
class TestHistoryExtension(IntegrityCase):
    """A forced synchronisation over a range that starts before the history start."""

    #: The Demo Bank's operations span 60 days: a month of them is before the history start.
    history_days = 30

    def force(self, account, date_from, date_to):
        wizard = self.env["bank.sync.force.wizard"].create(
            {
                "scope": "selected",
                "account_ids": [Command.set(account.ids)],
                "date_from": date_from,
                "date_to": date_to,
            }
        )
        self.use_test_clock_for(account)
        wizard.action_force()
        return account.last_run_id

    def use_test_clock_for(self, account):
        """The wizard builds the company's client: point it at the emulator."""
        self.patch(type(self.aggregator), "_get_client", lambda aggregator, **kwargs: self.client())

    def test_the_opening_line_moves_back_with_the_history(self):
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        before = self.opening(account).amount
        earlier = self.history_start - timedelta(days=20)
        # The range even ends before the history start: what lies between is read too.
        run = self.force(account, earlier, self.history_start - timedelta(days=12))
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(account.history_start_date, earlier)
        self.assertNotEqual(self.opening(account).amount, before)
        self.assert_books_match_the_bank(account)
        again = self.sync(account, client=self.client())
        self.assertEqual(again.balance_difference, 0.0, again.note)

    def test_while_an_earlier_range_waits_the_journal_still_equals_the_bank(self):
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        earlier = self.history_start - timedelta(days=25)
        # Stopped after its first lines: the rest waits for the background job.
        first = self.sync(
            account,
            trigger="forced",
            client=self.client(page_size=5),
            date_from=earlier,
            date_to=fields.Date.today(),
            time_budget=0.000001,
        )
        self.assertEqual(first.state, "partial")
        before_start = self.lines(account).filtered(
            lambda line: line.bank_sync_status == "booked" and line.date < self.history_start
        )
        self.assertTrue(before_start)
        daily = self.sync(account, client=self.client())
        self.assertEqual(daily.balance_difference, 0.0, daily.note)

        # A second range, not reaching that far, is read together with the waiting one.
        today = fields.Date.today()
        second = self.sync(
            account,
            trigger="forced",
            client=self.client(),
            date_from=today - timedelta(days=5),
            date_to=today,
        )
        self.assertEqual(second.state, "done", second.error)
        self.assertFalse(account.sync_forced_state)
        self.assertEqual(account.history_start_date, earlier)
        again = self.sync(account, client=self.client())
        self.assertEqual(again.balance_difference, 0.0, again.note)
        self.assert_books_match_the_bank(account)

    def test_a_line_the_bank_moved_before_the_start_is_not_taken_out_of_the_opening_line(self):
        account = self.bridge_account()
        start = self.history_start
        tx = self.emulator.add_transaction(
            self.remote_id(account), "-250.00", "PRLV LOYER", on=start + timedelta(days=1)
        )
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        # The bank back-dates it across the history start; the line follows.
        self.emulator.change_transaction(tx.id, shift_days=-4)
        moved = self.sync(account, client=self.client())
        self.assertEqual(moved.balance_difference, 0.0, moved.note)
        self.assertLess(self.line_for(account, tx.id).date, start)

        run = self.force(account, start - timedelta(days=20), start - timedelta(days=12))
        self.assertEqual(run.state, "done", run.error)
        again = self.sync(account, client=self.client())
        self.assertEqual(again.balance_difference, 0.0, again.note)
        self.assert_books_match_the_bank(account)

    def test_an_opening_line_worked_on_refuses_an_earlier_range(self):
        account = self.bridge_account()
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        self.opening(account).move_id.narration = "<p>Solde repris du bilan</p>"
        with self.assertRaisesRegex(UserError, "reconciled or annotated"):
            self.force(account, self.history_start - timedelta(days=20), fields.Date.today())
        self.assertEqual(account.history_start_date, self.history_start)

    def test_a_journal_with_lines_of_its_own_refuses_an_earlier_range(self):
        account = self.bridge_account()
        self.env["account.bank.statement.line"].create(
            {
                "journal_id": account.journal_id.id,
                "date": self.history_start - timedelta(days=40),
                "payment_ref": "Saisie manuelle",
                "amount": 100.0,
            }
        )
        self.assertEqual(self.sync(account, client=self.client()).state, "done")
        self.assertFalse(self.opening(account))
        with self.assertRaisesRegex(UserError, "already held operations"):
            self.force(account, self.history_start - timedelta(days=20), fields.Date.today())
