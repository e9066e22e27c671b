from lxml import etree

from odoo.exceptions import UserError
from odoo.tests import HttpCase, new_test_user, tagged

from .common_bank_sync import BankSyncCommon, load_french


@tagged("post_install", "-at_install")
class TestScreens(BankSyncCommon, HttpCase):
    """The connection, account and wizard screens as users meet them, checked on the rendered
    views and on what the actions return."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.connection = cls._connect_sandbox(cls.aggregator)
        cls.checking = cls.connection.account_ids.filtered(lambda a: a.account_type == "checking")

    def _arch(self, model, view_type, user=None):
        env = self.env(user=user) if user else self.env
        arch = env[model].get_views([(False, view_type)])["views"][view_type]["arch"]
        return etree.fromstring(arch)

    # -- after connecting: link your accounts, first sync at once ----------------------------------

    def test_connection_form_asks_to_link_and_link_starts_the_first_sync(self):
        self.assertEqual(
            self.connection.unlinked_account_count, len(self.connection.account_ids), "all unlinked"
        )
        form = self._arch("bank.sync.connection", "form")
        banner = form.xpath("//div[@name='link_call_to_action']")
        self.assertTrue(banner)
        self.assertIn("Now link your accounts", etree.tostring(banner[0], encoding="unicode"))
        embedded = form.xpath("//field[@name='account_ids']/list")[0]
        self.assertTrue(embedded.xpath(".//button[@name='action_open_link_wizard']"))

        wizard = (
            self.env["bank.sync.link.wizard"]
            .with_context(default_account_id=self.checking.id)
            .create(
                {"mode": "existing", "journal_id": self.company_data["default_journal_bank"].id}
            )
        )
        action = wizard.action_link()
        self.assertEqual(action["tag"], "display_notification")
        self.assertIn("first synchronisation has started", action["params"]["message"])
        self.assertEqual(action["params"]["next"]["res_model"], "account.journal")
        # The engine's background queue has the account, and its job is triggered now.
        self.assertTrue(self.checking.sync_requested)
        cron = self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")
        self.assertTrue(self.env["ir.cron.trigger"].search([("cron_id", "=", cron.id)]))
        self.assertEqual(
            self.connection.unlinked_account_count, len(self.connection.account_ids) - 1
        )

    # -- synchronisation switched off --------------------------------------------------------------

    def test_sync_off_refuses_add_a_bank_and_sync_now_says_why(self):
        self.checking.journal_id = self.company_data["default_journal_bank"]
        self.company.bank_sync_enabled = False
        with self.assertRaisesRegex(UserError, "switched off.*Settings"):
            self.env["bank.sync.connect.wizard"].create({})
        with self.assertRaisesRegex(UserError, "switched off for") as caught:
            self.checking.action_sync_now()
        self.assertNotIn("None of these accounts", str(caught.exception))
        self.company.bank_sync_enabled = True
        self.checking.journal_id = False
        with self.assertRaisesRegex(UserError, "not linked to a journal yet"):
            self.checking.action_sync_now()

    # -- wording and states ------------------------------------------------------------------------

    def test_reconnect_wording_and_connection_state_on_accounts(self):
        for model in ("bank.sync.connection",):
            for view_type in ("list", "form"):
                arch = etree.tostring(self._arch(model, view_type), encoding="unicode")
                self.assertNotIn('string="Renew"', arch)
                self.assertIn('string="Reconnect"', arch)
        # A temporary failure gets no highlighted Reconnect: the primary one is for action needed.
        form = self._arch("bank.sync.connection", "form")
        primary = form.xpath(
            "//header/button[@name='action_reconnect'][contains(@class, 'btn-primary')]"
        )
        self.assertEqual(primary[0].get("invisible"), "state != 'action_needed'")
        account_list = self._arch("bank.sync.account", "list")
        state = account_list.xpath("//field[@name='connection_state']")[0]
        self.assertNotEqual(state.get("optional"), "hide")
        self.assertTrue(
            self._arch("bank.sync.account", "form").xpath("//field[@name='connection_state']")
        )

        reader = new_test_user(
            self.env,
            "bsreader",
            groups="account.group_account_readonly",
            company_id=self.company.id,
        )
        for model in ("bank.sync.connection", "bank.sync.account"):
            reader_form = etree.tostring(self._arch(model, "form", reader), encoding="unicode")
            self.assertIn("Ask an accounting manager to reconnect", reader_form)
            manager_form = etree.tostring(self._arch(model, "form"), encoding="unicode")
            self.assertNotIn("Ask an accounting manager to reconnect", manager_form)

    # -- cancelled reconnect -----------------------------------------------------------------------

    def test_cancelled_reconnect_says_the_connection_is_unchanged(self):
        self.authenticate("accountman", "accountman")
        # Imported here: a test class at the top of this module would run again with its tests.
        from .test_connect_flow import TestConnectFlow  # noqa: PLC0415

        action = self.connection.action_reconnect()
        _callback, response = TestConnectFlow._through_hosted_page(
            self, action["url"], action="cancel"
        )
        self.assertEqual(response.status_code, 200)
        self.assertIn("was not reconnected", response.text)
        self.assertIn("is unchanged", response.text)
        self.assertNotIn("No bank connection was added", response.text)
        self.assertNotIn("..", response.text.replace("...", ""))
        self.assertEqual(self.connection.state, "ok")

    # -- logo --------------------------------------------------------------------------------------

    def test_logo_is_an_image(self):
        form = self._arch("bank.sync.connection", "form")
        logo = form.xpath("//field[@name='institution_logo']")
        self.assertEqual([node.get("widget") for node in logo], ["image_url"])

    # -- bank picker -------------------------------------------------------------------------------

    def test_bank_picker_search_on_enter_groups_and_match_reason(self):
        wizard = self.env["bank.sync.connect.wizard"].create(
            {"accept_terms": True, "allow_transfer": True}
        )
        wizard.action_next()
        self.assertEqual(len(wizard.top_line_ids), 8)
        self.assertEqual(wizard.top_line_ids[0].name, "BNP Paribas")
        # Typing then Enter filters the loaded banks at once (the field's onchange), on the
        # bank's name and its group: no Search button needed.
        wizard.search = "societe"
        labels = wizard.shown_line_ids.mapped("display_label")
        self.assertEqual(labels, ["Société Générale", "Boursorama Banque (Société Générale group)"])
        self.assertEqual(len(wizard.line_ids), len(wizard.line_ids.exists()))
        # The Search button asks the aggregator and shows its whole answer.
        wizard.search = "epargne"
        wizard.action_search()
        self.assertEqual(wizard.shown_line_ids, wizard.line_ids)
        self.assertEqual(wizard.shown_line_ids.mapped("name"), ["Caisse d'Épargne"])
        action = wizard.shown_line_ids.action_choose()
        self.assertEqual(action["type"], "ir.actions.act_url")
        session = self.env["bank.sync.connect.session"].sudo().search([], order="id desc", limit=1)
        self.assertEqual(session.institution_id, "CEPAFRPP")
        star = self._arch("bank.sync.connect.wizard", "form").xpath(
            "//field[@name='shown_line_ids']//field[@name='most_requested']"
        )[0]
        self.assertNotEqual(star.get("nolabel"), "1")
        self.assertEqual(star.get("string"), "Most requested")

    # -- bank name first ---------------------------------------------------------------------------

    def test_lists_show_the_bank_first_and_names_have_no_technical_id(self):
        self.assertEqual(self.connection.display_name, "BNP Paribas")
        first = self._arch("bank.sync.connection", "list").xpath("//field")[0]
        self.assertEqual(first.get("name"), "institution_name")
        # The aggregator's ids are technical: developer mode only.
        for model in ("bank.sync.connection", "bank.sync.account"):
            for view_type in ("list", "form"):
                arch = self._arch(model, view_type)
                self.assertFalse(arch.xpath("//field[@name='remote_id']"), (model, view_type))
        first = self._arch("bank.sync.account", "list").xpath("//field")[0]
        self.assertEqual(first.get("name"), "connection_id")

    # -- update from the aggregator ----------------------------------------------------------------

    def test_update_from_the_aggregator_says_what_changed(self):
        self.connection.write({"state": "action_needed", "reason": "sca"})
        action = self.connection.action_refresh_from_aggregator()
        self.assertEqual(action["tag"], "display_notification")
        self.assertIn("Action needed", action["params"]["message"])
        self.assertIn("OK", action["params"]["message"])
        action = self.connection.action_refresh_from_aggregator()
        self.assertIn("Nothing changed", action["params"]["message"])

    # -- aggregator named in the user's language ---------------------------------------------------

    def test_aggregator_named_in_the_users_language(self):
        load_french(self.env)
        wizard = self.env["bank.sync.connect.wizard"].with_context(lang="fr_FR").create({})
        self.assertEqual(wizard.provider_name, "Bac à sable (démo)")
        with self.assertRaisesRegex(UserError, "Bac à sable"):
            wizard.action_next()
        connection_list = self._arch("bank.sync.connection", "list")
        self.assertTrue(connection_list.xpath("//field[@name='provider_kind']"))
        self.assertFalse(connection_list.xpath("//field[@name='provider_id']"))
