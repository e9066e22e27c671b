from odoo import Command, fields
from odoo.exceptions import AccessError
from odoo.tests import new_test_user, tagged

from .common_bank_sync import BOOKKEEPER_GROUPS, MANAGER_GROUPS, BankSyncCommon


@tagged("post_install", "-at_install")
class TestSecurity(BankSyncCommon):
    """Who sees and does what: managers configure, accounting users see, others see nothing;
    each company sees only its own data."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.connection = cls._connect_sandbox(cls.aggregator)
        cls.account = cls.connection.account_ids.filtered(lambda a: a.account_type == "checking")
        cls.account.journal_id = cls.company_data["default_journal_bank"]

        cls.other_company = cls.setup_other_company()["company"]
        cls.other_company.bank_sync_enabled = True
        cls.other_aggregator = cls.other_company._bank_sync_set_aggregator_kind("sandbox")
        cls.other_connection = cls._connect_sandbox(cls.other_aggregator, bank="SOGEFRPP")

        def user(login, groups, companies=cls.company):
            return new_test_user(
                cls.env,
                login=login,
                groups=groups,
                company_id=companies[0].id,
                company_ids=[Command.set(companies.ids)],
            )

        cls.manager = user("bs_manager", MANAGER_GROUPS)
        cls.billing = user("bs_billing", BOOKKEEPER_GROUPS)
        cls.auditor = user("bs_auditor", "base.group_user,account.group_account_readonly")
        cls.employee = user("bs_employee", "base.group_user")
        cls.portal = user("bs_portal", "base.group_portal")
        cls.other_manager = user(
            "bs_other_manager",
            MANAGER_GROUPS,
            companies=cls.other_company,
        )

    def _env(self, user):
        return self.env(user=user, context={"allowed_company_ids": user.company_ids.ids})

    def test_manager_configures(self):
        env = self._env(self.manager)
        connection = env["bank.sync.connection"].browse(self.connection.id)
        self.assertEqual(connection.state, "ok")
        account = env["bank.sync.account"].browse(self.account.id)
        account.history_start_date = "2025-01-01"
        savings = self.connection.account_ids.filtered("iban")[1:2]
        wizard = env["bank.sync.link.wizard"].create(
            {
                "account_id": savings.id,
                "mode": "new",
                "new_journal_name": "Livret de l'association",
                "history_start_date": "2025-02-01",
            }
        )
        self.assertTrue(wizard.exists())
        aggregator = env["bank.sync.provider"].browse(self.aggregator.id)
        aggregator.write({"sandbox_seed": 7, "client_id": "manager-client"})
        connect = env["bank.sync.connect.wizard"].create({})
        self.assertTrue(connect.provider_id)

        # What the manager wrote is stored, and the manager reads it back.
        env.invalidate_all()
        self.assertEqual(account.history_start_date, fields.Date.to_date("2025-01-01"))
        self.assertEqual(
            (wizard.account_id, wizard.mode, wizard.new_journal_name, wizard.history_start_date),
            (savings, "new", "Livret de l'association", fields.Date.to_date("2025-02-01")),
        )
        self.assertEqual((aggregator.sandbox_seed, aggregator.client_id), (7, "manager-client"))
        self.assertEqual(connect.provider_id, aggregator)

        # What only an administrator, or another company, may write is refused and left as it was.
        for field in ("client_secret", "client_secret_encrypted"):
            with self.assertRaises(AccessError, msg=field):
                aggregator.write({field: "sk-typed-by-a-manager"})
        with self.assertRaises(AccessError):
            env["bank.sync.connection"].browse(self.other_connection.id).write(
                {"institution_name": "Not mine"}
            )
        self.env.invalidate_all()
        self.assertFalse(self.aggregator.sudo().client_secret_encrypted)
        self.assertNotEqual(self.other_connection.institution_name, "Not mine")

    def test_accounting_users_see_states_not_configure(self):
        for user in (self.billing, self.auditor):
            env = self._env(user)
            connection = env["bank.sync.connection"].browse(self.connection.id)
            self.assertEqual(connection.state, "ok", user.login)
            self.assertEqual(
                env["account.journal"]
                .browse(self.account.journal_id.id)
                .bank_sync_connection_state,
                "ok",
            )
            self.assertEqual(env["bank.sync.account"].search([]).connection_id, connection)
            with self.assertRaises(AccessError):
                connection.write({"institution_name": "Hacked"})
            with self.assertRaises(AccessError):
                env["bank.sync.account"].browse(self.account.id).journal_id = False
            with self.assertRaises(AccessError):
                env["bank.sync.connect.wizard"].create({})
            with self.assertRaises(AccessError):
                env["bank.sync.provider"].browse(self.aggregator.id).kind = "linxo"

    def test_others_see_nothing(self):
        for user in (self.employee, self.portal):
            env = self._env(user)
            for model in ("bank.sync.provider", "bank.sync.connection", "bank.sync.account"):
                with self.assertRaises(AccessError, msg=f"{user.login} on {model}"):
                    env[model].search([])

    def test_companies_are_isolated(self):
        env = self._env(self.manager)
        self.assertEqual(env["bank.sync.connection"].search([]), self.connection)
        self.assertNotIn(self.other_connection.account_ids, env["bank.sync.account"].search([]))
        with self.assertRaises(AccessError):
            env["bank.sync.connection"].browse(self.other_connection.id).read(["state"])
        with self.assertRaises(AccessError):
            env["bank.sync.provider"].browse(self.other_aggregator.id).read(["kind"])
        other_env = self._env(self.other_manager)
        self.assertEqual(other_env["bank.sync.connection"].search([]), self.other_connection)
        with self.assertRaises(AccessError):
            other_env["bank.sync.account"].browse(self.account.id).read(["balance"])

    def test_connect_sessions_belong_to_their_user(self):
        url_env = self._env(self.manager)
        url_env["bank.sync.connect.session"]._open(
            url_env["bank.sync.provider"].browse(self.aggregator.id), institution_id="BNPAFRPP"
        )
        session = self.env["bank.sync.connect.session"].sudo().search([], limit=1)
        self.assertEqual(session.user_id, self.manager)
        self.assertTrue(url_env["bank.sync.connect.session"].search([]))
        other = self.env(user=self.cls_second_manager())
        self.assertFalse(other["bank.sync.connect.session"].search([]))

    @classmethod
    def cls_second_manager(cls):
        return new_test_user(
            cls.env,
            login="bs_manager_2",
            groups=MANAGER_GROUPS,
            company_id=cls.company.id,
        )

    def test_secret_fields_only_in_administrators_views(self):
        # An accounting manager's form has no secret field at all; an administrator's masks it.
        manager_arch = self._env(self.manager)["bank.sync.provider"].get_views([(False, "form")])
        for field in ("client_secret", "webhook_secrets", "service_secret"):
            self.assertNotIn(f'name="{field}"', manager_arch["views"]["form"]["arch"])
        self.assertIn('name="client_id"', manager_arch["views"]["form"]["arch"])
        admin = self.manager.copy({"login": "bs_admin"})
        admin.groups_id = [Command.link(self.env.ref("base.group_system").id)]
        admin_arch = self._env(admin)["bank.sync.provider"].get_views([(False, "form")])
        self.assertRegex(
            admin_arch["views"]["form"]["arch"], r'name="client_secret"[^>]*password="True"'
        )

    def test_screens_open_for_each_role(self):
        for user in (self.manager, self.billing, self.auditor):
            env = self._env(user)
            for model in ("bank.sync.connection", "bank.sync.account"):
                views = env[model].get_views([(False, "list"), (False, "form"), (False, "search")])
                self.assertEqual(set(views["views"]), {"list", "form", "search"}, user.login)
            journal_form = env["account.journal"].get_views([(False, "form")])
            self.assertIn("bank_sync_connection_state", journal_form["views"]["form"]["arch"])

    def test_manager_may_handle_statement_lines(self):
        # Odoo CE's accounting Administrator is not in account.group_account_basic, which owns
        # statement lines: this module grants it explicitly (and nothing more of "basic").
        self.assertFalse(self.manager.has_group("account.group_account_basic"))
        env = self._env(self.manager)
        line = env["account.bank.statement.line"].create(
            {
                "journal_id": self.account.journal_id.id,
                "date": "2025-03-01",
                "payment_ref": "Manual line",
                "amount": 10.0,
            }
        )
        line.payment_ref = "Manual line, edited"
        line.unlink()
        with self.assertRaises(AccessError):
            self._env(self.billing)["account.bank.statement.line"].create(
                {
                    "journal_id": self.account.journal_id.id,
                    "date": "2025-03-01",
                    "payment_ref": "Not allowed",
                    "amount": 1.0,
                }
            )
