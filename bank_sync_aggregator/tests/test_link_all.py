from odoo import fields
from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from .common_bank_sync import BOOKKEEPER_GROUPS, BankSyncCommon, company_user


@tagged("post_install", "-at_install")
class TestLinkAllAccounts(BankSyncCommon):
    """Linking every account of a new connection in one step: a journal proposed for each,
    one history start date, one confirmation."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Crédit Mutuel's demo login with a US dollar account under the current account's IBAN:
        # current (EUR), current (USD), savings, card, loan.
        cls.connection = cls._connect_sandbox(
            cls.aggregator, bank="CMCIFRPP", login="multi_currency"
        )
        accounts = cls.connection.account_ids
        cls.usd = accounts.filtered(lambda a: a.currency_id.name == "USD")
        cls.checking = accounts.filtered(lambda a: a.account_type == "checking") - cls.usd
        cls.savings = accounts.filtered(lambda a: a.account_type == "savings")
        cls.card = accounts.filtered(lambda a: a.account_type == "card")
        cls.loan = accounts.filtered(lambda a: a.account_type == "loan")
        # The company's books already hold the current account, with its IBAN, in euros.
        cls.main_journal = cls.env["account.journal"].create(
            {
                "name": "CIC compte courant",
                "type": "bank",
                "company_id": cls.company.id,
                "bank_acc_number": cls.checking.iban,
            }
        )

    def _open(self, env=None):
        """The screen as the connection opens it (after adding the bank, or its button)."""
        env = env or self.env
        action = env["bank.sync.connection"].browse(self.connection.id).action_open_link_all()
        self.assertEqual(action["res_model"], "bank.sync.link.all.wizard")
        return env[action["res_model"]].with_context(**action["context"]).create({})

    def _line(self, wizard, account):
        return wizard.line_ids.filtered(lambda line: line.account_id == account)

    def test_one_screen_proposes_a_journal_for_every_account(self):
        self.assertEqual(len(self.connection.account_ids), 5)
        wizard = self._open()
        self.assertEqual(wizard.connection_id, self.connection)
        self.assertEqual(wizard.line_ids.account_id, self.connection.account_ids)
        today = fields.Date.context_today(wizard)
        self.assertEqual(wizard.history_start_date, today.replace(month=1, day=1))
        # Same IBAN and currency: the existing journal.
        main = self._line(wizard, self.checking)
        self.assertEqual((main.choice, main.journal_id), ("existing", self.main_journal))
        # Same IBAN but in dollars: a new journal, as for the accounts Odoo has no journal for.
        for account in self.usd | self.savings | self.card | self.loan:
            line = self._line(wizard, account)
            self.assertEqual((line.choice, line.journal_id.id), ("new", False), account.name)
            self.assertEqual(line.new_journal_name, f"CIC - {account.name}")

    def test_the_url_after_adding_a_bank_opens_the_screen_for_its_connection(self):
        # /odoo/action-<connections>/<id>/action-<link all>: the web client gives the id as
        # the active id.
        Wizard = self.env["bank.sync.link.all.wizard"].with_context(active_id=self.connection.id)
        wizard = Wizard.create({})
        self.assertEqual(wizard.connection_id, self.connection)
        self.assertEqual(len(wizard.line_ids), 5)
        # Accounts already linked are not proposed again.
        self.savings.journal_id = self.company_data["default_journal_bank"]
        self.assertNotIn(self.savings, Wizard.create({}).line_ids.account_id)

    def test_made_without_its_lines_it_proposes_them(self):
        # As an RPC client or code makes it: the connection only.
        wizard = self.env["bank.sync.link.all.wizard"].create({"connection_id": self.connection.id})
        self.assertEqual(wizard.line_ids.account_id, self.connection.account_ids)
        self.assertEqual(self._line(wizard, self.checking).journal_id, self.main_journal)

    def test_confirming_links_every_account_in_one_step(self):
        wizard = self._open()
        wizard.history_start_date = "2025-01-01"
        self._line(wizard, self.usd).choice = "skip"
        self._line(wizard, self.card).new_journal_name = "Carte Business"
        action = wizard.action_link_all()

        self.assertEqual(self.checking.journal_id, self.main_journal)
        self.assertEqual(self.card.journal_id.name, "Carte Business")
        self.assertEqual(self.savings.journal_id.name, f"CIC - {self.savings.name}")
        self.assertEqual(
            self.savings.journal_id.bank_account_id.sanitized_acc_number, self.savings.iban
        )
        self.assertEqual(self.loan.journal_id.type, "bank")
        self.assertFalse(self.usd.journal_id, "Don't synchronise leaves the account unlinked")
        linked = self.checking | self.savings | self.card | self.loan
        self.assertEqual(
            set(linked.mapped("history_start_date")), {fields.Date.to_date("2025-01-01")}
        )
        self.assertEqual(len(linked.journal_id), 4)
        self.assertTrue(all(linked.mapped("sync_requested")), "the first import is on its way")
        self.assertFalse(self.usd.sync_requested)
        # Back to the connection, which now asks to link only the account left out.
        self.assertEqual(action["params"]["title"], "Accounts linked")
        self.assertIn("4 account(s) linked", action["params"]["message"])
        self.assertEqual(
            (action["params"]["next"]["res_model"], action["params"]["next"]["res_id"]),
            ("bank.sync.connection", self.connection.id),
        )
        self.assertEqual(self.connection.unlinked_account_count, 1)
        # The other account can still be linked on its own.
        single = self.env["bank.sync.link.wizard"].create({"account_id": self.usd.id})
        self.assertEqual(single.mode, "new")

    def test_a_journal_is_chosen_for_one_account_only(self):
        wizard = self._open()
        line = self._line(wizard, self.savings)
        line.write({"choice": "existing", "journal_id": self.main_journal.id})
        with self.assertRaisesRegex(UserError, "chosen for several accounts"):
            wizard.action_link_all()
        line.write({"journal_id": False})
        with self.assertRaisesRegex(UserError, "Choose the journal of"):
            wizard.action_link_all()
        wizard.history_start_date = "2999-01-01"
        line.choice = "skip"
        with self.assertRaisesRegex(UserError, "future"):
            wizard.action_link_all()

    def test_only_the_company_accounting_managers_link(self):
        bookkeeper = company_user(
            self.env,
            "link_all_bookkeeper",
            self.company,
            groups=BOOKKEEPER_GROUPS,
        )
        other_company = self.setup_other_company()["company"]
        other_manager = company_user(self.env, "link_all_other_manager", other_company)
        manager = company_user(
            self.env,
            "link_all_manager",
            self.company,
            groups="base.group_user,base.group_partner_manager,account.group_account_manager",
        )
        for user in (bookkeeper, other_manager):
            env = self.env(user=user, context={"allowed_company_ids": user.company_ids.ids})
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self._open(env)
            # Nor by calling the confirmation on a screen made for the company.
            wizard = (
                self.env["bank.sync.link.all.wizard"]
                .with_user(user)
                .sudo()
                .create(
                    {
                        "connection_id": self.connection.id,
                        "line_ids": [
                            fields.Command.create({"account_id": self.savings.id, "choice": "new"})
                        ],
                    }
                )
            )
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                wizard.sudo(False).with_env(env).action_link_all()
        env = self.env(user=manager, context={"allowed_company_ids": self.company.ids})
        self._open(env).action_link_all()
        self.assertEqual(self.checking.journal_id, self.main_journal)
