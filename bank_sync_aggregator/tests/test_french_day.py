"""An accountant's day in French, in a real browser (tours in
static/tests/tours/bank_sync_french_day_tour.js): each step waits for the French words the user
reads. Odoo skips these tests when no Chrome or Chromium is installed (tools/addon_tests.sh
installs Debian's chromium when it can)."""

from datetime import timedelta
from urllib.parse import urlsplit

from odoo import fields
from odoo.tests import HttpCase, tagged

from .common_bank_sync import (
    BOOKKEEPER_GROUPS,
    BankSyncCommon,
    company_user,
    connection_of,
    load_french,
    parse_form,
    run_tour_until_the_aggregator,
)

CONNECTIONS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action"
SETTINGS_URL = "/odoo/action-account.action_account_config"


@tagged("post_install", "-at_install")
class TestFrenchDayBrowser(BankSyncCommon, HttpCase):
    """A French company whose bank synchronisation is still off, its accounting manager (who
    also administers the settings) and its bookkeeper, both working in French."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        load_french(cls.env)
        # The test company's books hold cash basis taxes: the settings refuse to load with the
        # option off, as they would for a real company.
        cls.company.write({"bank_sync_enabled": False, "tax_exigibility": True})
        cls.manager = company_user(
            cls.env,
            "fr_manager",
            cls.company,
            groups="base.group_user,base.group_partner_manager,base.group_system,"
            "account.group_account_manager",
            lang="fr_FR",
        )
        cls.bookkeeper = company_user(
            cls.env,
            "fr_bookkeeper",
            cls.company,
            groups=BOOKKEEPER_GROUPS,
            lang="fr_FR",
        )

    def _record_hosted_pages(self):
        """The aggregator pages opened meanwhile (the browser leaves Odoo for them)."""
        Session = type(self.env["bank.sync.connect.session"])
        original = Session._open
        opened = []

        def _open(records, *args, **kwargs):
            url = original(records, *args, **kwargs)
            opened.append(url)
            return url

        self.patch(Session, "_open", _open)
        return opened

    def _run_until_the_aggregator(self, tour, url, login):
        run_tour_until_the_aggregator(self, tour, url, login)

    def _log_in_at_the_bank(self, hosted_url, login):
        """The hosted page, as the same user (not Odoo's web client, so not a tour): returns
        where the bank sends the user back."""
        self.authenticate(login, login)
        page = self.url_open(hosted_url)
        self.assertEqual(page.status_code, 200, page.text[:300])
        self.assertIn("Identifiant", page.text, "the bank's page speaks French too")
        action, form, _selects = parse_form(page.text)
        form.update(login="success", password="secret", action="connect")
        post_url = action or urlsplit(hosted_url).path
        submitted = self.url_open(post_url, data=form, allow_redirects=False)
        self.assertEqual(submitted.status_code, 303, submitted.text[:300])
        back = self.url_open(submitted.headers["Location"], allow_redirects=False)
        self.assertEqual(back.status_code, 303, back.text[:300])
        return back.headers["Location"]

    def test_an_accounting_manager_s_day_in_french(self):
        login = self.manager.login
        self.start_tour(SETTINGS_URL, "bank_sync_fr_settings_on", login=login, timeout=180)
        self.assertTrue(self.company.bank_sync_enabled)
        self.assertEqual(self.company._get_bank_sync_aggregator().kind, "sandbox")

        opened = self._record_hosted_pages()
        self._run_until_the_aggregator("bank_sync_fr_add_bank", CONNECTIONS_URL, login)
        self.assertEqual(len(opened), 1, "one visit to the aggregator, for the bank chosen")
        back = self._log_in_at_the_bank(opened[0], login)
        connection = connection_of(self.env, back)
        self.assertEqual(connection.institution_name, "Crédit Agricole")
        self.assertIn("bank_sync_link_all_wizard_action", back)

        self.start_tour(back, "bank_sync_fr_link_all", login=login, timeout=180)
        accounts = connection.account_ids
        loan = accounts.filtered(lambda a: a.account_type == "loan")
        self.assertFalse(loan.journal_id)
        self.assertEqual(len(accounts.journal_id), 3)
        self.assertTrue(all((accounts - loan).mapped("sync_requested")))

        # The first import runs in the background job.
        self.env["bank.sync.account"]._cron_sync()
        checking = accounts.filtered(lambda a: a.account_type == "checking")
        self.assertEqual(checking.last_run_state, "done")
        Line = self.env["account.bank.statement.line"]
        self.assertTrue(Line.search_count([("journal_id", "=", checking.journal_id.id)]))

        self.start_tour(
            f"{CONNECTIONS_URL}/{connection.id}", "bank_sync_fr_day", login=login, timeout=300
        )
        self.assertLessEqual({"manual", "forced"}, set(checking.run_ids.mapped("trigger")))
        self.assertTrue(self.env["bank.sync.ignored"].search([("account_id", "=", checking.id)]))
        self.assertFalse(self.company.bank_sync_enabled)
        self.assertEqual(connection.state, "ok", "switching off keeps the connection")

    def test_a_bookkeeper_sees_the_card_and_the_lines_to_review(self):
        self.company.bank_sync_enabled = True
        connection = self._connect_sandbox(self.aggregator, bank="AGRIFRPP")
        checking = connection.account_ids.filtered(lambda a: a.account_type == "checking")
        journal = self.env["account.journal"].create(
            {"name": "Banque Crédit Agricole", "type": "bank", "company_id": self.company.id}
        )
        month_ago = fields.Date.context_today(journal) - timedelta(days=30)
        checking._link_journal(month_ago, journal=journal)
        self.env["bank.sync.account"]._cron_sync()
        self.assertEqual(checking.last_run_state, "done")
        line = self.env["account.bank.statement.line"].search(
            [("journal_id", "=", journal.id), ("bank_sync_account_id", "=", checking.id)], limit=1
        )
        # What the engine does when the bank changes an operation already worked on.
        line.write({"payment_ref": "VIREMENT MODIFIE PAR LA BANQUE", "bank_sync_to_review": True})
        self.start_tour(
            "/odoo/accounting", "bank_sync_fr_bookkeeper", login=self.bookkeeper.login, timeout=180
        )
