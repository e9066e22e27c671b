"""What the screens say during an accountant's day is true: a repaired balance, an import in
progress, synchronisation switched off, a deleted connection, the chatter, operation types,
and what each wizard did."""

import json
from datetime import timedelta

from lxml import etree

from odoo.exceptions import UserError
from odoo.tests import tagged

from .common_bank_sync import load_french
from .common_sync import NOW, SyncCase, day


@tagged("post_install", "-at_install")
class TestDayStates(SyncCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        load_french(cls.env)

    def setUp(self):
        super().setUp()
        self.use_test_clock()
        self.connection = self.make_connection()
        self.account = self.checking(self.connection)

    def card(self, journal):
        journal.invalidate_recordset(["kanban_dashboard"])
        return json.loads(journal.kanban_dashboard)

    def balance_alerts(self):
        return self.env["mail.activity"].search(
            [
                ("res_model", "=", "bank.sync.connection"),
                ("res_id", "=", self.connection.id),
                ("activity_type_id", "=", self.env.ref("mail.mail_activity_data_warning").id),
            ]
        )

    # -- a repaired difference clears itself ------------------------------------------------------

    def test_a_difference_repaired_by_hand_clears_without_waiting_for_the_bank(self):
        journal = self.link(self.account)
        run = self.sync(self.account)
        self.assertEqual(run.balance_difference, 0.0, run.note)
        line = self.lines(self.account).filtered(lambda line: line.bank_sync_status == "booked")[:1]
        # The same operation typed by hand: the account shows the difference at once...
        typed_twice = self.env["account.bank.statement.line"].create(
            {"journal_id": journal.id, "date": line.date, "payment_ref": "x", "amount": line.amount}
        )
        self.assertAlmostEqual(self.account.balance_difference, line.amount, places=2)
        # ...the next synchronisation alerts...
        self.sync(self.account)
        self.assertTrue(self.balance_alerts())
        # ...cancelling its entry puts the journal right at once, alert included...
        typed_twice.move_id.button_cancel()
        self.assertEqual(self.account.balance_difference, 0.0)
        self.assertFalse(self.balance_alerts())
        typed_twice.move_id.button_draft()
        typed_twice.move_id.action_post()
        self.assertAlmostEqual(self.account.balance_difference, line.amount, places=2)
        # ...and so does deleting the typed line.
        typed_twice.unlink()
        self.assertEqual(self.account.balance_difference, 0.0)

    def test_after_an_unfinished_import_a_repair_waits_for_the_bank(self):
        """A run that ended partial or failed imported operations the bank's last balance may
        not count yet: a change by hand then closes no alert (the figures would be stale); the
        next complete synchronisation reads the bank and decides."""
        journal = self.link(self.account)
        self.sync(self.account)
        line = self.lines(self.account).filtered(lambda line: line.bank_sync_status == "booked")[:1]
        typed_twice = self.env["account.bank.statement.line"].create(
            {"journal_id": journal.id, "date": line.date, "payment_ref": "x", "amount": line.amount}
        )
        self.sync(self.account)
        self.assertTrue(self.balance_alerts())
        checked = self.account.balance_check_date
        self.env["bank.sync.run"].create(
            {
                "account_id": self.account.id,
                "journal_id": journal.id,
                "trigger": "cron",
                "state": "failed",
                "end_date": NOW.replace(tzinfo=None),
            }
        )
        typed_twice.move_id.button_cancel()
        self.assertTrue(self.balance_alerts(), "no alert closed on a stale balance")
        self.assertAlmostEqual(self.account.balance_difference, line.amount, places=2)
        self.assertEqual(self.account.balance_check_date, checked)
        self.assertEqual(self.sync(self.account).state, "done")
        self.assertEqual(self.account.balance_difference, 0.0)
        self.assertFalse(self.balance_alerts())

    def test_delete_wizard_says_what_it_did_and_the_balance_follows(self):
        self.link(self.account)
        self.sync(self.account)
        # Ignored for good: still in the bank's balance, expected off the journal.
        wizard = self.ignore_wizard(self.account, day(-30), day(-20))
        count = len(wizard.line_ids)
        self.assertTrue(count)
        action = wizard.action_delete()
        message = action["params"]["message"]
        self.assertIn(f"{count} operation(s) deleted; they will never be imported again", message)
        self.assertIn("the journal agrees with the bank's balance", message)
        self.assertEqual(action["params"]["next"], {"type": "ir.actions.act_window_close"})
        self.assertEqual(self.account.balance_difference, 0.0)
        # Deleted without ignoring: the journal now lacks them, and says so.
        wizard = self.ignore_wizard(self.account, day(-19), day(-10))
        wizard.ignore_permanently = False
        missing = sum(wizard.line_ids.mapped("amount"))
        self.assertTrue(missing)
        message = wizard.action_delete()["params"]["message"]
        self.assertIn("a forced synchronisation of these dates would import them again", message)
        self.assertIn("still differs from the bank's balance", message)
        self.assertAlmostEqual(self.account.balance_difference, -missing, places=2)

    # -- an import in progress ---------------------------------------------------------------------

    def test_a_first_import_shows_its_progress_not_ok(self):
        journal = self.link(self.account, history_start=day(-60))
        # Linked, nothing imported yet.
        self.assertEqual(self.account.sync_status, "importing")
        self.assertIn("Waiting for the first operations", self.account.sync_progress)
        self.assertEqual(self.connection.sync_status, "importing")
        self.assertTrue(self.card(journal)["bank_sync_importing"])
        # A first part imported, the rest in the background.
        client = self.aggregator_client()
        client.page_size = 10
        run = self.sync(self.account, client=client, time_budget=0.0001)
        self.assertEqual(run.state, "partial")
        lines = self.lines(self.account).filtered(lambda line: line.bank_sync_status == "booked")
        self.account.invalidate_recordset(["sync_status", "sync_progress"])
        self.assertEqual(self.account.sync_status, "importing")
        self.assertIn(f"{len(lines)} operation(s) imported so far", self.account.sync_progress)
        self.assertIn(self.account.name, self.connection.sync_progress)
        card = self.card(journal)
        self.assertTrue(card["bank_sync_importing"])
        self.assertIn("imported so far", card["bank_sync_progress"])
        journal.invalidate_recordset(["bank_sync_status", "bank_sync_progress"])
        self.assertEqual(journal.bank_sync_status, "importing")
        self.assertIn("imported so far", journal.bank_sync_progress)
        # The card's badge says so instead of a green "OK".
        kanban = self.env.ref("bank_sync_aggregator.account_journal_view_kanban_dashboard")
        badge = etree.fromstring(kanban.arch).xpath("//span[@name='bank_sync_importing']")[0]
        self.assertIn("bank_sync_importing", badge.get("t-elif"))
        self.assertIn("Import in progress", "".join(badge.itertext()))
        # Done: up to date, no progress any more.
        rest = self.sync(self.account, trigger="cron", client=client)
        self.assertEqual(rest.state, "done", rest.error)
        self.account.invalidate_recordset(["sync_status", "sync_progress"])
        self.assertEqual(self.account.sync_status, "up_to_date")
        self.assertFalse(self.connection.sync_status)
        self.assertFalse(self.card(journal)["bank_sync_importing"])

    # -- synchronisation switched off --------------------------------------------------------------

    def test_sync_now_while_off_says_where_to_switch_it_on(self):
        journal = self.link(self.account)
        self.company.bank_sync_enabled = False
        for record in (self.account, journal, self.connection):
            action = (
                record.action_bank_sync_now
                if record._name == "account.journal"
                else record.action_sync_now
            )
            with self.subTest(model=record._name), self.assertRaises(UserError) as caught:
                action()
            message = str(caught.exception)
            self.assertIn("Bank synchronisation is switched off for", message)
            self.assertIn("Settings > Invoicing, section Bank synchronisation", message)
            self.assertNotIn("None of these accounts", message)
        # The lists say it too.
        self.assertEqual(self.account.sync_status, "off")
        self.assertEqual(self.connection.sync_status, "off")
        for model in ("bank.sync.connection", "bank.sync.account"):
            arch = self.env[model].get_views([(False, "list")])["views"]["list"]["arch"]
            self.assertTrue(etree.fromstring(arch).xpath("//field[@name='sync_status']"))

    # -- a deleted connection, the chatter, operation types ----------------------------------------

    def test_a_deleted_connection_has_no_valid_consent(self):
        self.connection.consent_expiry = NOW.replace(tzinfo=None) + timedelta(days=60)
        self.assertEqual(self.connection.consent_state, "ok")
        self.connection.action_disconnect()
        self.assertEqual(self.connection.consent_state, "revoked")
        labels = dict(
            self.connection._fields["consent_state"]._description_selection(
                self.env(context=dict(self.env.context, lang="fr_FR"))
            )
        )
        self.assertEqual(labels["revoked"], "Révoqué")

    def test_the_chatter_never_shows_an_empty_state(self):
        self.connection.write({"state": "action_needed", "reason": "sca"})
        self.env.flush_all()
        self.connection.write(
            {
                "state": "ok",
                "reason": False,
                "consent_expiry": NOW.replace(tzinfo=None) + timedelta(days=90),
            }
        )
        self.env.flush_all()
        self.env.cr.precommit.run()
        messages = self.connection.message_ids
        for value in messages.tracking_value_ids:
            formatted = value._tracking_value_format()[0]
            with self.subTest(field=value.field_id.name):
                self.assertTrue(formatted["oldValue"]["value"])
                self.assertTrue(formatted["newValue"]["value"])
        bodies = " ".join(messages.mapped("body"))
        self.assertIn("Reason: Strong authentication required", bodies)
        self.assertIn("Consent valid until", bodies)
        self.assertNotIn(":", bodies.split("Consent valid until")[1].split("<")[0])

    def test_operation_types_are_words_in_the_users_language(self):
        self.link(self.account)
        self.sync(self.account)
        lines = self.lines(self.account).filtered("transaction_type")
        self.assertTrue(lines)
        self.assertTrue(all(lines.mapped("bank_sync_operation_type")))
        Line = self.env["account.bank.statement.line"]
        codes = {"DIRECT_DEBIT": "direct_debit", "POINT_OF_SALE": "card", "check": "cheque"}
        for code, kind in codes.items():
            line = Line.new({"transaction_type": code})
            self.assertEqual(line.bank_sync_operation_type, kind)
        self.assertEqual(Line.new({"transaction_type": "??"}).bank_sync_operation_type, "other")
        french = dict(
            Line._fields["bank_sync_operation_type"]._description_selection(
                self.env(context=dict(self.env.context, lang="fr_FR"))
            )
        )
        self.assertEqual(french["direct_debit"], "Prélèvement")
        action = self.env.ref("bank_sync_aggregator.account_bank_statement_line_action")
        arch = Line.get_views([(action.view_ids[0].view_id.id, "list")])["views"]["list"]["arch"]
        columns = etree.fromstring(arch).xpath("//field/@name")
        self.assertIn("bank_sync_operation_type", columns)
        self.assertNotIn("transaction_type", columns)

    # -- the force wizard says what it started -----------------------------------------------------

    def test_force_wizard_says_what_it_started(self):
        self.link(self.account)
        self.sync(self.account)
        wizard = self.env["bank.sync.force.wizard"].create(
            {
                "scope": "selected",
                "account_ids": [(6, 0, self.account.ids)],
                "date_from": day(-10),
                "date_to": day(-1),
            }
        )
        action = wizard.action_force()
        message = action["params"]["message"]
        self.assertIn("Forced synchronisation from", message)
        self.assertIn("started for 1 account(s)", message)
        self.assertIn("new operation(s) imported", message)
        self.assertEqual(action["params"]["next"], {"type": "ir.actions.act_window_close"})

    # -- words -------------------------------------------------------------------------------------

    def test_technical_words_only_in_developer_mode_and_consent_ends_without_time(self):
        def arch(model, view_type):
            views = self.env[model].get_views([(False, view_type)])["views"]
            return etree.fromstring(views[view_type]["arch"])

        self.assertFalse(self.env.user.has_group("base.group_no_one"))
        for view_type in ("list", "form"):
            run_view = arch("bank.sync.run", view_type)
            for name in ("pages", "skipped_count", "remote_id"):
                self.assertFalse(run_view.xpath(f"//field[@name='{name}']"), (view_type, name))
            for model in ("bank.sync.connection", "bank.sync.account"):
                expiry = arch(model, view_type).xpath("//field[@name='consent_expiry']")
                self.assertTrue(expiry)
                self.assertEqual({field.get("widget") for field in expiry}, {"date"})
        # Shown to everyone, but explained.
        adopted = self.env["bank.sync.run"]._fields["adopted_count"]
        self.assertIn("entered by hand", adopted.help)
        self.assertNotIn("Adopted", adopted.string)
