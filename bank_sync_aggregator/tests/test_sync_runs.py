"""The synchronisation history and Sync now: runs named in the reader's language and time
zone, the last run searchable, a Sync now that stops inside a page ending in its own run, and
a long import that keeps PostgreSQL's view of the journal current."""

import warnings
from datetime import datetime

from odoo.addons.bank_sync_aggregator.sync.pages import BUDGET_BATCH
from odoo.tests import tagged

from .common_bank_sync import load_french
from .common_sync import SyncCase, day


@tagged("post_install", "-at_install")
class TestSyncRuns(SyncCase):
    """Runs in the reader's language and time zone, Sync now ending in its own run."""

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
        # The registry does not warn about the dependency (it would at every start).
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
