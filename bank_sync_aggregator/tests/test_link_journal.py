import json

from psycopg2 import IntegrityError

from odoo.exceptions import UserError, ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common_bank_sync import BankSyncCommon


@tagged("post_install", "-at_install")
class TestLinkJournal(BankSyncCommon):
    """Linking accounts to journals, what the journal shows, deleting and switching off."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.connection = cls._connect_sandbox(cls.aggregator, bank="CMCIFRPP")
        accounts = cls.connection.account_ids
        cls.checking = accounts.filtered(lambda a: a.account_type == "checking")
        cls.savings = accounts.filtered(lambda a: a.account_type == "savings")

    def _link_wizard(self, account):
        return self.env["bank.sync.link.wizard"].create({"account_id": account.id})

    def test_link_proposes_the_journal_with_the_same_iban(self):
        journal = self.env["account.journal"].create(
            {
                "name": "CIC main account",
                "type": "bank",
                "company_id": self.company.id,
                "bank_acc_number": self.checking.iban,
            }
        )
        wizard = self._link_wizard(self.checking)
        self.assertEqual(wizard.mode, "existing")
        self.assertEqual(wizard.journal_id, journal)
        wizard.history_start_date = "2025-01-01"
        wizard.action_link()
        self.assertEqual(self.checking.journal_id, journal)
        self.assertEqual(str(self.checking.history_start_date), "2025-01-01")
        self.assertEqual(journal.bank_sync_account_id, self.checking)
        self.assertEqual(journal.bank_statements_source, "bank_sync")
        self.assertEqual(journal.bank_sync_connection_state, "ok")
        # No second account may use this journal, and the wizard no longer offers it.
        self.assertNotEqual(self._link_wizard(self.savings).journal_id, journal)
        with self.assertRaises(IntegrityError), mute_logger("odoo.sql_db"), self.env.cr.savepoint():
            self.savings.journal_id = journal
            self.savings.flush_recordset()

    def test_link_creates_a_journal_named_after_bank_and_account(self):
        wizard = self._link_wizard(self.savings)
        self.assertEqual(wizard.mode, "new")
        self.assertEqual(wizard.new_journal_name, f"CIC - {self.savings.name}")
        action = wizard.action_link()
        journal = self.env["account.journal"].browse(action["params"]["next"]["res_id"])
        self.assertEqual(journal.type, "bank")
        self.assertEqual(journal.name, f"CIC - {self.savings.name}")
        self.assertEqual(journal.bank_account_id.acc_number.replace(" ", ""), self.savings.iban)
        self.assertEqual(journal.bank_account_id.partner_id, self.company.partner_id)
        self.assertEqual(self.savings.journal_id, journal)
        self.assertIn(
            ("bank_sync", "Bank Synchronisation (Bridge, Linxo)"),
            journal._fields["bank_statements_source"]._description_selection(self.env),
        )

    def test_link_refuses_bad_input(self):
        wizard = self._link_wizard(self.savings)
        wizard.write({"mode": "existing", "journal_id": False})
        with self.assertRaisesRegex(UserError, "Choose the journal"):
            wizard.action_link()
        wizard.write({"mode": "new", "history_start_date": "2999-01-01"})
        with self.assertRaisesRegex(UserError, "future"):
            wizard.action_link()
        usd_journal = self.env["account.journal"].create(
            {
                "name": "USD bank",
                "type": "bank",
                "company_id": self.company.id,
                "currency_id": self.setup_other_currency("USD").id,
            }
        )
        with (
            self.assertRaisesRegex(ValidationError, "link it to a journal in EUR"),
            self.env.cr.savepoint(),
        ):
            self.savings.journal_id = usd_journal
        self.savings.invalidate_recordset()
        self.assertFalse(self.savings.journal_id)

    def test_dashboard_card_shows_the_connection_state(self):
        journal = self.company_data["default_journal_bank"]
        self.checking.journal_id = journal
        self.connection.write({"state": "action_needed", "reason": "sca", "message": "Renew SCA"})
        data = json.loads(journal.kanban_dashboard)
        self.assertTrue(data["bank_sync_linked"])
        self.assertTrue(data["bank_sync_enabled"])
        self.assertEqual(data["bank_sync_state"], "action_needed")
        self.assertEqual(data["bank_sync_state_label"], "Action needed")
        self.assertEqual(data["bank_sync_message"], "Renew SCA")
        # An unlinked bank journal offers to connect a bank instead.
        other_bank = self.env["account.journal"].create(
            {"name": "Other bank", "type": "bank", "company_id": self.company.id}
        )
        other = json.loads(other_bank.kanban_dashboard)
        self.assertFalse(other["bank_sync_linked"])
        self.assertTrue(other["bank_sync_enabled"])

    def test_delete_connection_revokes_and_keeps_history(self):
        journal = self.company_data["default_journal_bank"]
        self.checking.journal_id = journal
        client = self.aggregator._get_client()
        self.assertIn(self.connection.remote_id, [c.remote_id for c in client.list_connections()])
        self.connection.action_disconnect()
        self.assertEqual(self.connection.state, "disconnected")
        self.assertFalse(self.connection.active)
        self.assertTrue(self.connection.exists(), "the connection's history stays")
        self.assertFalse(self.checking.journal_id, "the journal is free for a new connection")
        self.assertTrue(journal.exists())
        self.assertNotIn(
            self.connection.remote_id, [c.remote_id for c in client.list_connections()]
        )
        self.assertIn("deleted", self.connection.message_ids[:1].body)

    def test_unlink_keeps_history(self):
        journal = self.company_data["default_journal_bank"]
        self.checking.journal_id = journal
        self.env["account.bank.statement.line"].create(
            {
                "journal_id": journal.id,
                "date": "2025-03-01",
                "payment_ref": "VIR SEPA CLIENT",
                "amount": 120.0,
                "bank_sync_account_id": self.checking.id,
            }
        )
        with self.assertRaisesRegex(UserError, "Delete connection"):
            self.connection.unlink()
        self.assertTrue(self.checking.exists())
        # A connection that never brought anything may go, revoked at the aggregator first.
        other = self._connect_sandbox(self.aggregator, bank="QNTOFRP1")
        remote_id = other.remote_id
        other.unlink()
        client = self.aggregator._get_client()
        self.assertNotIn(remote_id, [c.remote_id for c in client.list_connections()])

    def test_switching_off_stops_without_deleting(self):
        self.checking.journal_id = self.company_data["default_journal_bank"]
        Account = self.env["bank.sync.account"]
        self.assertEqual(Account.search(Account._domain_syncable()), self.checking)
        settings = self.env["res.config.settings"].create({"bank_sync_enabled": False})
        settings.execute()
        self.assertFalse(self.company.bank_sync_enabled)
        self.assertFalse(Account.search(Account._domain_syncable()))
        self.assertEqual(self.connection.state, "ok")
        self.assertEqual(self.checking.journal_id, self.company_data["default_journal_bank"])
        with self.assertRaisesRegex(UserError, "switched off"):
            self.env["bank.sync.connect.wizard"].create(
                {"accept_terms": True, "allow_transfer": True}
            ).action_skip_bank()
