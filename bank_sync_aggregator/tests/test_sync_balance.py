"""The balance check after each synchronisation: operations ignored for good are expected off
the journal, a real difference alerts the accounting managers once in their language, and the
check does not grow with the size of the books."""

from odoo.addons.bank_sync_aggregator.models.account_bank_statement_line import (
    UNPOSTED_MOVE_INDEX,
)
from odoo.addons.bank_sync_aggregator.sync.balance import JOURNAL_BALANCE_SQL
from odoo.tests import tagged
from odoo.tools.misc import formatLang

from .common_bank_sync import company_user, load_french
from .common_sync import SyncCase, day


@tagged("post_install", "-at_install")
class TestSyncBalance(SyncCase):
    """The journal against the bank's balance, explained and alerted once."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        load_french(cls.env)

    def test_ignored_operations_are_expected_off_the_balance_and_a_real_gap_alerts_once(self):
        connection = self.make_connection()
        account = self.checking(connection)
        self.link(account)
        self.sync(account)
        manager = company_user(
            self.env,
            "balance_manager",
            self.company,
            name="Chef comptable",
            email="chef@example.com",
            lang="fr_FR",
        )
        self.company.bank_sync_alert_user_ids = manager
        wizard = self.ignore_wizard(account, day(-30), day(-20))
        doomed = wizard.line_ids
        ignored_total = sum(doomed.mapped("amount"))
        self.assertTrue(doomed)
        wizard.action_delete()
        run = self.sync(account, trigger="forced", date_from=day(-30), date_to=day(-20))
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.balance_difference, 0.0, run.note)
        self.assertAlmostEqual(run.balance_aggregator, account.balance - ignored_total, places=2)
        self.assertIn("ignored permanently", run.note)
        self.assertNotIn("differs", run.note)
        activities = self.env["mail.activity"].search(
            [("res_model", "=", "bank.sync.connection"), ("res_id", "=", connection.id)]
        )
        self.assertFalse(activities.filtered(lambda a: "balance" in (a.summary or "")))
        # A real difference (an operation typed by hand a second time): an alert, in French
        # with the currency.
        line = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")[:1]
        amount = line.amount
        typed_twice = self.env["account.bank.statement.line"].create(
            {
                "journal_id": account.journal_id.id,
                "date": line.date,
                "payment_ref": line.payment_ref,
                "amount": amount,
            }
        )
        self.env.user.lang = "fr_FR"
        run = self.sync(account.with_context(lang="fr_FR"))
        self.assertAlmostEqual(run.balance_difference, amount, places=2)
        self.assertIn("diffère du solde attendu", run.note)
        # Amounts in the reader's language, with the currency: "1 045,98 €".
        expected = formatLang(
            self.env(context=dict(self.env.context, lang="fr_FR")),
            abs(amount),
            currency_obj=account.currency_id,
        )
        self.assertIn(expected, run.note)
        alert = self.env["mail.activity"].search(
            [
                ("res_model", "=", "bank.sync.connection"),
                ("res_id", "=", connection.id),
                ("user_id", "=", manager.id),
            ]
        )
        self.assertEqual(len(alert), 1)
        self.assertIn("le solde diffère", alert.summary)
        self.assertIn(expected, alert.summary)
        # The same difference the next morning: no second alert.
        self.sync(account)
        self.assertEqual(
            self.env["mail.activity"].search_count(
                [
                    ("res_model", "=", "bank.sync.connection"),
                    ("res_id", "=", connection.id),
                    ("user_id", "=", manager.id),
                ]
            ),
            1,
        )
        # Fixed (the line typed twice deleted): the alert is closed.
        typed_twice.unlink()
        run = self.sync(account)
        self.assertEqual(run.balance_difference, 0.0, run.note)
        self.assertFalse(alert.exists())

    def test_the_balance_check_finds_unposted_moves_without_reading_every_move(self):
        """The check after every sync must not grow with the size of the books."""
        account = self.checking(self.make_connection())
        journal = self.link(account)
        self.sync(account)
        self.env.cr.execute("SET LOCAL enable_seqscan = off")  # as on a big table
        # The very query of the check, as it runs after every sync.
        self.env.cr.execute(f"EXPLAIN {JOURNAL_BALANCE_SQL}", [journal.id, journal.id])
        plan = "\n".join(row[0] for row in self.env.cr.fetchall())
        self.assertIn(UNPOSTED_MOVE_INDEX, plan)
