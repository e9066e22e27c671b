"""Screenshots of the main screens in French (`make screenshots`), not a test of the suite.

Tagged ``bank_sync_screenshots`` and not ``standard``: only ``make screenshots`` runs it, on a
throwaway database (tools/addon_tests.sh), with Odoo's test browser. The pictures go to
``$BANK_SYNC_SCREENSHOTS`` (the repository's ``screenshots/``, ignored by git).
"""

import base64
import json
import os
from pathlib import Path

from odoo.tests import HttpCase, tagged
from odoo.tests.common import ChromeBrowser

from .common_bank_sync import BankSyncCommon, company_user, load_french

CONNECTIONS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action"
LINK_ALL_ACTION = "bank_sync_aggregator.bank_sync_link_all_wizard_action"

#: Waits until an element matching ``selector`` (and holding ``text``) is shown, scrolls to it,
#: lets the page settle; true when found.
WAIT_FOR = """
(async (selector, text) => {
    const find = () => [...document.querySelectorAll(selector)].find(
        (el) => el.offsetParent !== null && (!text || el.textContent.includes(text))
    );
    const start = Date.now();
    while (!find()) {
        if (Date.now() - start > 30000) { return false; }
        await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const found = find();
    (found.closest(".o_kanban_record, .o_setting_box") || found).scrollIntoView({ block: "start" });
    await new Promise((resolve) => setTimeout(resolve, 800));
    return true;
})(%s, %s)
"""


@tagged("-standard", "bank_sync_screenshots", "post_install", "-at_install")
class TestScreenshots(BankSyncCommon, HttpCase):
    """A French company with the sandbox: a bank just added, then linked and synchronised."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        load_french(cls.env, everything=True)  # Odoo's own screens in French too
        cls.company.tax_exigibility = True  # the settings open (cash basis taxes in the books)
        cls.manager = company_user(
            cls.env,
            "ecrans",
            cls.company,
            groups="base.group_user,base.group_partner_manager,base.group_system,"
            "account.group_account_manager",
            lang="fr_FR",
            name="Camille Comptable",
        )
        cls.connection = cls._connect_sandbox(cls.aggregator, bank="AGRIFRPP")

    def _shoot(self, name, url, selector, text=""):
        """Open ``url``, wait for ``selector`` (holding ``text``), save ``name``.png."""
        browser = self.screen_browser
        browser.navigate_to(self.base_url() + url, wait_stop=True)
        found = browser._websocket_request(
            "Runtime.evaluate",
            params={
                "expression": WAIT_FOR % (json.dumps(selector), json.dumps(text)),
                "awaitPromise": True,
                "returnByValue": True,
            },
            timeout=60,
        )["result"].get("value")
        shot = browser._websocket_request("Page.captureScreenshot", timeout=30)
        path = self.screen_folder / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        self._logger.info("Screenshot %s", path)
        self.assertTrue(found, f"{name}: {selector} {text} not shown at {url} (see {path})")

    def test_screenshots_in_french(self):
        folder = Path(os.environ.get("BANK_SYNC_SCREENSHOTS") or "screenshots").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.screen_folder = folder
        self.screen_browser = browser = ChromeBrowser(self)
        try:
            self.authenticate(self.manager.login, self.manager.login, browser=browser)
            connection_url = f"{CONNECTIONS_URL}/{self.connection.id}"
            # Back from the bank: the screen that links every account.
            self._shoot(
                "01_linking_screen",
                f"{connection_url}/action-{LINK_ALL_ACTION}",
                ".o_form_view h1",
                "Rattacher les comptes",
            )
            wizard = (
                self.env["bank.sync.link.all.wizard"]
                .with_user(self.manager)
                .create({"connection_id": self.connection.id})
            )
            loan = wizard.line_ids.filtered(lambda line: line.account_id.account_type == "loan")
            loan.choice = "skip"
            wizard.action_link_all()
            self.env["bank.sync.account"]._cron_sync()
            line = self.env["account.bank.statement.line"].search(
                [("bank_sync_account_id", "in", self.connection.account_ids.ids)], limit=1
            )
            line.bank_sync_to_review = True
            self.env.flush_all()

            screens = [
                (
                    "02_settings",
                    "/odoo/action-account.action_account_config",
                    ".o_setting_box",
                    "Synchronisation bancaire",
                ),
                ("03_connection_form", connection_url, ".o_form_view h1", "Crédit Agricole"),
                (
                    "04_accounts",
                    "/odoo/action-bank_sync_aggregator.bank_sync_account_action",
                    ".o_list_view .o_data_row",
                    "Compte courant",
                ),
                (
                    "05_journal_card",
                    "/odoo/accounting",
                    "div[name=bank_sync_status]",
                    "Dernière synchronisation",
                ),
                (
                    "06_run_history",
                    "/odoo/action-bank_sync_aggregator.bank_sync_run_action",
                    ".o_list_view .o_data_row",
                    "Terminée",
                ),
                (
                    "07_lines_to_review",
                    "/odoo/action-bank_sync_aggregator.account_bank_statement_line_action_bank_sync_review",
                    ".o_list_view .o_data_row",
                    "",
                ),
            ]
            for name, url, selector, text in screens:
                self._shoot(name, url, selector, text)
        finally:
            browser.stop()
            self._wait_remaining_requests()
