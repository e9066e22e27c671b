import json

from lxml import etree

from odoo.tests import tagged
from odoo.tools.safe_eval import safe_eval

from .common_bank_sync import BOOKKEEPER_GROUPS, MANAGER_GROUPS, BankSyncCompanyCase, company_user

# Every screen of the addon, as the menus should open it.
DAY_SCREENS = {
    "bank_sync_aggregator.account_journal_action_bank_sync_dashboard": "Bank journals",
    "bank_sync_aggregator.account_bank_statement_line_action_bank_sync_review": "To review",
    "bank_sync_aggregator.bank_sync_run_action": "Synchronisations",
    "bank_sync_aggregator.bank_sync_connection_action": "Connections",
    "bank_sync_aggregator.bank_sync_account_action": "Accounts",
    "bank_sync_aggregator.bank_sync_ignored_action": "Ignored operations",
}


@tagged("post_install", "-at_install")
class TestMenus(BankSyncCompanyCase):
    """A Community database without "Show Full Accounting Features": the accounting manager
    and the bookkeeper reach every screen of the addon through the menus the web client
    shows them (no developer mode, no URL typed by hand)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.manager = company_user(
            cls.env,
            "bsmenumanager",
            cls.company,
            groups=MANAGER_GROUPS,
        )
        cls.bookkeeper = company_user(
            cls.env,
            "bsmenubookkeeper",
            cls.company,
            groups=BOOKKEEPER_GROUPS,
        )

    def _reachable_actions(self, user):
        """The actions of the menus the web client shows ``user``, walking from the apps down
        (a menu under a hidden parent is never reached)."""
        menus = self.env["ir.ui.menu"].with_user(user).load_menus(debug=False)
        reached = set()
        stack = list(menus["root"]["children"])
        while stack:
            menu = menus[stack.pop()]
            stack.extend(menu["children"])
            if menu["action"]:
                model, action_id = menu["action"].split(",")
                reached.add((model, int(action_id)))
        return reached

    def test_community_roles_reach_every_screen_through_the_menus(self):
        for user in (self.manager, self.bookkeeper):
            # The plain Community roles: no full accounting features, no developer mode.
            self.assertFalse(user.has_group("account.group_account_user"))
            self.assertFalse(user.has_group("base.group_no_one"))
            reached = self._reachable_actions(user)
            for xmlid, screen in DAY_SCREENS.items():
                action = self.env.ref(xmlid)
                with self.subTest(user=user.login, screen=screen):
                    self.assertIn((action._name, action.id), reached)
                    # ...and the screen opens for them.
                    self.env[action.res_model].with_user(user).search([], limit=1)
        manager_reached = self._reachable_actions(self.manager)
        aggregators = self.env.ref("bank_sync_aggregator.bank_sync_provider_action")
        self.assertIn((aggregators._name, aggregators.id), manager_reached)
        self.assertNotIn(
            (aggregators._name, aggregators.id), self._reachable_actions(self.bookkeeper)
        )

    def test_bank_journals_menu_shows_the_bank_cards_to_a_bookkeeper(self):
        action = self.env.ref("bank_sync_aggregator.account_journal_action_bank_sync_dashboard")
        self.assertEqual(
            action.view_id, self.env.ref("account.account_journal_dashboard_kanban_view")
        )
        journals = (
            self.env["account.journal"].with_user(self.bookkeeper).search(safe_eval(action.domain))
        )
        self.assertTrue(journals)
        self.assertEqual(set(journals.mapped("type")), {"bank"})
        # The cards' data (balance, state, Sync now...) is computed for the bookkeeper.
        for card in journals.mapped("kanban_dashboard"):
            self.assertIn("bank_sync_linked", json.loads(card))

    def test_settings_block_sits_after_the_bank_settings(self):
        view = self.env.ref("account.res_config_settings_view_form")
        combined = etree.fromstring(view.get_combined_arch())
        block = combined.xpath("//block[@id='bank_sync']")[0]
        self.assertTrue(
            block.getprevious().xpath("self::block[@id='bank_cash'] | block[@id='bank_cash']"),
            "the block follows the Bank & Cash settings",
        )
        # A Community administrator, without full accounting features, sees it.
        admin = company_user(
            self.env,
            "bsmenuadmin",
            self.company,
            groups="base.group_system,account.group_account_manager",
        )
        self.assertFalse(admin.has_group("account.group_account_user"))
        arch = (
            self.env["res.config.settings"]
            .with_user(admin)
            .get_views([(False, "form")])["views"]["form"]["arch"]
        )
        self.assertTrue(etree.fromstring(arch).xpath("//block[@id='bank_sync']"))
