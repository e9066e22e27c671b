"""Random days in the life of a synchronised account, on the Bridge emulator over HTTP.

Each sequence mixes what happens in real life: Sync now (often stopped by its time budget),
the background job, forced ranges, a worker killed in the middle of a page, the aggregator
failing, the bank adding (late, back-dated, pending), changing, booking and deleting
operations, time passing. After each run that converges (the background job with the
aggregator answering, until nothing is left to do), the journal must hold exactly the bank's
booked operations since the history start, and its balance must be the bank's because its
opening line is the bank's balance at the history start, computed here from the bank alone:
the balance check compares the journal with the bank, not with itself.

The sequences are seeded: a failure names its seed and its steps, and replays the same.
"""

import random
from datetime import timedelta
from decimal import Decimal
from unittest.mock import patch

from odoo import fields
from odoo.addons.bank_sync_aggregator.sync.balance import compare_with_bank
from odoo.addons.bank_sync_aggregator.sync.run import AccountSynchroniser
from odoo.tests import tagged

from .test_sync_integrity import IntegrityCase

TRANSACTIONS = "/v3/aggregation/transactions"
LABELS = ("CB BOULANGERIE", "PRLV SEPA EDF", "VIR SEPA CLIENT", "CB STATION", "FRAIS TENUE")


class WorkerKilled(BaseException):
    """The worker process dies: nothing of the page in progress is kept (like SIGKILL, its
    transaction is rolled back to the last page stored), and no code of ours runs after it."""


@tagged("post_install", "-at_install")
class TestSyncConvergence(IntegrityCase):
    SEEDS = (11, 23, 37, 53, 71)
    STEPS = 20

    def test_random_sequences_converge_to_the_bank(self):
        self.checks = 0
        every_step = []
        for seed in self.SEEDS:
            with self.subTest(seed=seed):
                self.steps = []
                self.rng = random.Random(seed)
                self.account = self.bridge_account()
                self.remote = int(self.account.remote_id)
                for _step in range(self.STEPS):
                    action = self.rng.choice(
                        (
                            self.sync_now,
                            self.background_job,
                            self.background_job,
                            self.forced_range,
                            self.killed_worker,
                            self.aggregator_fails,
                            self.bank_adds,
                            self.bank_adds,
                            self.bank_changes,
                            self.bank_deletes,
                            self.bank_books_pending,
                            self.time_passes,
                        )
                    )
                    self.steps.append(action.__name__)
                    # Real days leave minutes between runs: the aggregator's per-minute
                    # limits are not what this test is about (test_sync_faults is).
                    self.emulator.reset_rate_limits()
                    action()
                self.converge()
                every_step += self.steps
        # The sequences did exercise what they claim to.
        self.assertGreater(self.checks, 2 * len(self.SEEDS))
        for happened in ("(killed)", "aggregator_fails", "forced_range", "bank_deletes"):
            self.assertIn(happened, every_step)

    # ------------------------------------------------------------------ the checks

    def converge(self):
        """The aggregator answers again and the background job runs until nothing is left;
        then the books are exactly the bank's."""
        self.emulator.clear_faults()
        for _attempt in range(6):
            self.emulator.reset_rate_limits()
            run = self.sync(self.account, trigger="cron", client=self.client(page_size=20))
            # (the retry of a failed forced range is no daily import: one more run)
            if run.state == "done" and run.trigger != "forced" and not self.account.sync_requested:
                break
        self.assertEqual(run.state, "done", f"{self.steps}: {run.error}")
        self.steps.append("converged")
        self.assert_converged(run)

    def assert_converged(self, run):
        self.checks += 1
        context = f"steps {self.steps}"
        try:
            self.exact(self.account)
        except AssertionError as error:
            raise AssertionError(f"{context}: {error}") from None
        opening = self.opening(self.account)
        self.assertEqual(len(opening), 1, context)
        at_start = self.bank_balance_at_history_start(self.account)
        self.assertAlmostEqual(opening.amount, float(at_start), places=2, msg=context)
        self.assertTrue(run.balance_checked, context)
        self.assertEqual(run.balance_difference, 0.0, f"{context}: {run.note}")
        # The check compares with the bank: a cent more or less at the bank would show.
        bank = self.emulator.state.accounts[self.remote].balance
        self.assertTrue(compare_with_bank(self.account, bank)[0].ok, context)
        for wrong in (bank + Decimal("0.01"), bank - Decimal("0.01")):
            self.assertFalse(compare_with_bank(self.account, wrong)[0].ok, context)

    # ------------------------------------------------------------------ what Odoo does

    def sync_now(self):
        run = self.sync(
            self.account,
            client=self.client(page_size=self.rng.choice((5, 20, 500))),
            time_budget=self.rng.choice((0.0001, 0.0001, None)),
        )
        self.assertIn(run.state, ("done", "partial", "failed", "skipped"), self.steps)
        if run.state == "done" and not self.account.sync_requested:
            self.assert_converged(run)

    def background_job(self):
        trigger = self.account.sync_requested_trigger or "cron"
        run = self.sync(self.account, trigger=trigger, client=self.client(page_size=20))
        if run.state == "done" and not self.account.sync_requested and run.trigger != "forced":
            self.assert_converged(run)

    def forced_range(self):
        today = fields.Date.context_today(self.env.user)
        start = self.history_start + timedelta(days=self.rng.randrange(80))
        end = min(start + timedelta(days=self.rng.randrange(1, 40)), today)
        run = self.sync(
            self.account,
            trigger="forced",
            client=self.client(page_size=20),
            date_from=start,
            date_to=end,
        )
        self.assertIn(run.state, ("done", "partial", "failed"), self.steps)

    def killed_worker(self):
        """The background job's worker dies in the middle of a page."""
        calls = {"count": 0, "at": self.rng.randrange(1, 4)}
        create_lines = AccountSynchroniser._create_lines

        def dies_midway(synchroniser, operations):
            calls["count"] += 1
            if calls["count"] == calls["at"]:
                create_lines(synchroniser, operations[: len(operations) // 2])
                raise WorkerKilled
            return create_lines(synchroniser, operations)

        with patch.object(AccountSynchroniser, "_create_lines", dies_midway):
            try:
                self.sync(self.account, trigger="cron", client=self.client(page_size=5))
            except WorkerKilled:
                self.steps.append("(killed)")

    def aggregator_fails(self):
        kind = self.rng.choice(("500", "503", "malformed_json"))
        self.emulator.script_faults(kind, self.rng.randrange(1, 4), path=TRANSACTIONS)

    # ------------------------------------------------------------------ what the bank does

    def today(self):
        return fields.Date.context_today(self.env.user)

    def bank_adds(self):
        for _n in range(self.rng.randrange(1, 4)):
            kind = self.rng.choice(("today", "back_dated", "late", "pending"))
            amount = Decimal(self.rng.randrange(-30000, 30000) or 100).scaleb(-2)
            label = self.rng.choice(LABELS)
            if kind == "today":
                self.emulator.add_transaction(self.remote, amount, label)
            elif kind == "back_dated":
                days = self.rng.randrange(1, 85)
                self.emulator.add_transaction(
                    self.remote, amount, label, on=self.today() - timedelta(days=days)
                )
            elif kind == "late":
                # Published hours after its stamp (within a day), or days after (then found by
                # the balance check reading the recent weeks again).
                stamped = self.rng.choice(
                    (timedelta(minutes=5), timedelta(hours=6), timedelta(days=2))
                )
                self.emulator.add_transaction(
                    self.remote,
                    amount,
                    label,
                    on=self.today() - timedelta(days=self.rng.randrange(0, 20)),
                    stamped_ago=stamped,
                )
            else:
                self.emulator.add_transaction(self.remote, amount, label, pending=True)

    def booked(self):
        return [
            tx
            for tx in self.emulator.transactions(self.remote, include_deleted=False)
            if not tx.future and tx.date > self.history_start + timedelta(days=3)
        ]

    def bank_changes(self):
        booked = self.booked()
        if not booked:
            return
        tx = self.rng.choice(booked)
        if self.rng.random() < 0.5:
            self.emulator.change_transaction(tx.id, label=f"{tx.clean_description} (corrigé)")
        else:
            shift = self.rng.choice((-2, -1, 1, 2))
            if tx.date + timedelta(days=shift) <= self.today():
                self.emulator.change_transaction(tx.id, shift_days=shift)

    def bank_deletes(self):
        booked = self.booked()
        if booked:
            self.emulator.delete_transaction(self.rng.choice(booked).id)

    def bank_books_pending(self):
        pending = [
            tx for tx in self.emulator.transactions(self.remote, include_deleted=False) if tx.future
        ]
        if pending:
            self.emulator.book_pending(
                self.rng.choice(pending).id, new_id=self.rng.random() < 0.5, on=self.today()
            )

    def time_passes(self):
        self.emulator.advance(minutes=self.rng.randrange(1, 120))
