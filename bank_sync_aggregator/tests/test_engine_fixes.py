"""What QA saw on the synchronisation history and Sync now, after the fixes."""

import warnings
from datetime import datetime

from odoo.addons.bank_sync_aggregator.models.account_bank_statement_line import (
    UNPOSTED_MOVE_INDEX,
)
from odoo.addons.bank_sync_aggregator.sync.balance import JOURNAL_BALANCE_SQL
from odoo.addons.bank_sync_aggregator.sync.pages import BUDGET_BATCH
from odoo.tests import tagged
from odoo.tools.misc import formatLang

from .common_bank_sync import company_user, load_french
from .common_sync import SyncCase, day


@tagged("post_install", "-at_install")
class TestEngineFixes(SyncCase):
    """Run names in the reader's language and time zone, Sync now ending, balances explained."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        load_french(cls.env)

    def test_run_name_is_in_the_readers_language_and_time_zone(self):
        account = self.checking(self.make_connection())
        self.link(account)
        run = (
            self.env["bank.sync.run"]
            .sudo()
            .create(
                {
                    "account_id": account.id,
                    "trigger": "forced",
                    "state": "done",
                    "start_date": datetime(2026, 11, 22, 13, 56, 7),
                }
            )
        )
        self.env.user.write({"lang": "fr_FR", "tz": "Europe/Paris"})
        name = run.with_context(lang="fr_FR", tz="Europe/Paris").display_name
        self.assertIn("Synchronisation forcée", name)
        self.assertNotIn("Forced synchronisation", name)
        # 13:56 UTC is 14:56 in Paris in November, written the French way.
        self.assertIn("22 nov. 2026, 14:56:07", name)
        self.assertNotIn("2026-11-22 13:56", name)
        english = run.with_context(lang="en_US", tz="UTC").display_name
        self.assertIn("Forced synchronisation", english)

    def test_last_run_is_searchable_and_follows_the_runs_state(self):
        self.assertTrue(
            self.env["bank.sync.account"]._fields["last_run_id"]._description_searchable
        )
        account = self.checking(self.make_connection())
        self.link(account)
        run = self.sync(account)
        Account = self.env["bank.sync.account"]
        self.assertEqual(Account.search([("last_run_id", "=", run.id)]), account)
        self.assertEqual(Account.search([("last_run_state", "=", "done")]) & account, account)
        self.assertNotIn(account, Account.search([("last_run_id", "=", False)]))
        run.sudo().write({"state": "failed"})
        self.assertEqual(account.last_run_state, "failed")
        # The registry no longer warns about the dependency (QA saw it at every start).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            list(Account._fields["last_run_state"].resolve_depends(self.env.registry))
        self.assertFalse([w for w in caught if "should be searchable" in str(w.message)])

    def test_sync_now_stops_inside_a_page_and_its_run_ends_with_the_background_part(self):
        connection = self.make_connection()
        account = self.checking(connection)
        journal = self.link(account, history_start=day(-60))
        client = self.aggregator_client()
        # One page holds every operation: the budget must still stop inside it.
        client.page_size = 500
        streamed = [
            tx
            for page in client.iter_transactions(account.remote_id, date_from=day(-60))
            for tx in page.transactions
        ]
        pending = [tx for tx in streamed if tx.is_pending]
        run = self.sync(account, client=client, time_budget=0.0001)
        self.assertEqual(run.state, "partial")
        self.assertEqual(run.created_count, BUDGET_BATCH)
        self.assertTrue(account.sync_requested)
        self.assertFalse(account.sync_cursor, "the page is read again by the background job")
        # The background job (what the cron runs) finishes the same run.
        self.use_test_clock()
        self.env["bank.sync.account"]._cron_sync()
        self.assertEqual(account.run_ids, run, "one run in the history, not two")
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(run.trigger, "manual")
        self.assertIn("background", run.note)
        lines = self.assert_exactly_remote(account, day(-60))
        self.assertGreater(len(lines), BUDGET_BATCH)
        self.assertEqual(run.created_count, len(self.lines(account)))  # with the opening line
        # The page read twice is counted once: each operation is either imported or skipped.
        self.assertEqual(run.fetched_count, len(streamed))
        self.assertEqual(run.pending_count, len(pending))
        self.assertEqual(run.skipped_count, len(pending), "nothing was already there")
        self.assertTrue(run.balance_checked)
        self.assertEqual(run.balance_difference, 0.0)
        self.assertFalse(account.sync_requested)
        # The journal card shows the last sync and what it brought.
        self.assertTrue(connection.last_sync_date)
        card = journal._get_journal_dashboard_data_batched()[journal.id]
        self.assertTrue(card["bank_sync_last_sync"])
        self.assertEqual(card["bank_sync_new_lines"], run.created_count)
        self.assertEqual(account.last_run_state, "done")

    def test_ignored_operations_are_expected_off_the_balance_and_a_real_gap_alerts_once(self):
        connection = self.make_connection()
        account = self.checking(connection)
        self.link(account)
        self.sync(account)
        manager = company_user(
            self.env,
            "engine_fix_manager",
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

    def test_a_long_import_keeps_the_planners_view_of_the_journal_current(self):
        """Odoo looks up the journal's last move number for every line it creates: with the
        planner believing the growing journal empty, that query reads the journal's whole
        year per line. The import refreshes the statistics as the journal grows."""
        account = self.checking(self.make_connection())
        journal = self.link(account, history_start=day(-365))
        client = self.aggregator_client()
        client.page_size = 100

        def planner_view():
            """(moves in the journal, moves the planner expects there)."""
            self.env.cr.execute(
                "SELECT count(*) FROM account_move WHERE journal_id = %s", [journal.id]
            )
            moves = self.env.cr.fetchone()[0]
            self.env.cr.execute(
                "EXPLAIN (FORMAT JSON) SELECT id FROM account_move WHERE journal_id = %s",
                [journal.id],
            )
            return moves, self.env.cr.fetchone()[0][0]["Plan"]["Plan Rows"]

        during = []
        stream = client.iter_transactions

        def watched(*args, **kwargs):
            for page in stream(*args, **kwargs):
                during.append(planner_view())  # as the engine is about to store this page
                yield page

        client.iter_transactions = watched
        run = self.sync(account, client=client)
        self.assertEqual(run.state, "done", run.error)
        # A year of a busy current account: enough lines for the planner to be misled.
        self.assertGreaterEqual(run.created_count, 500)
        # Already during the import, not only once it is over.
        moves, estimated = during[-1]
        self.assertGreaterEqual(moves, 600)
        self.assertGreater(estimated, moves / 2, f"mid-import: {estimated} of {moves} moves")
        moves, estimated = planner_view()
        self.assertGreater(estimated, moves / 2, f"planner expects {estimated} of {moves} moves")

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
