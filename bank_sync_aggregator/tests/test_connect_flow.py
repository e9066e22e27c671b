import time
from datetime import timedelta
from urllib.parse import urlsplit

from odoo import fields
from odoo.exceptions import UserError
from odoo.tests import HttpCase, tagged

from bank_sync_bridge import signing

from .common_bank_sync import (
    BOOKKEEPER_GROUPS,
    BankSyncCommon,
    company_user,
    connection_of,
    parse_form,
    query_of,
)

CONNECTIONS_URL = "/odoo/action-bank_sync_aggregator.bank_sync_connection_action/"


@tagged("post_install", "-at_install")
class TestConnectFlow(BankSyncCommon, HttpCase):
    """The whole "add a bank" flow, through real HTTP on this Odoo: wizard, the sandbox's hosted
    page served by Odoo, the callback, and the records a user then sees."""

    def setUp(self):
        super().setUp()
        self.authenticate("accountman", "accountman")

    # -- helpers ---------------------------------------------------------------------------

    def _wizard(self):
        wizard = self.env["bank.sync.connect.wizard"].create({})
        wizard.write({"accept_terms": True, "allow_transfer": True})
        wizard.action_next()
        return wizard

    def _hosted_url(self, bank_name="BNP Paribas"):
        wizard = self._wizard()
        line = wizard.line_ids.filtered(lambda line: line.name == bank_name)
        action = line.action_choose()
        self.assertEqual(action["type"], "ir.actions.act_url")
        return action["url"]

    def _through_hosted_page(self, url, login="success", action="connect"):
        """Open the hosted page like a browser, submit it, return the callback's response."""
        page = self.url_open(url)
        self.assertEqual(page.status_code, 200, page.text[:500])
        form_action, form, _selects = parse_form(page.text)
        post_url = form_action or urlsplit(url).path
        form.update(login=login, password="secret", action=action)
        submitted = self.url_open(post_url, data=form, allow_redirects=False)
        self.assertEqual(submitted.status_code, 303, submitted.text[:500])
        callback = submitted.headers["Location"]
        self.assertIn("/bank_sync/callback/", callback)
        return callback, self.url_open(callback, allow_redirects=False)

    # -- tests -----------------------------------------------------------------------------

    def test_consent_is_required(self):
        wizard = self.env["bank.sync.connect.wizard"].create({"accept_terms": True})
        with self.assertRaisesRegex(UserError, "Tick both boxes"):
            wizard.action_next()
        self.assertEqual(wizard.step, "consent")
        with self.assertRaises(UserError):
            wizard.action_skip_bank()

    def test_bank_picker_most_requested_first_and_search(self):
        wizard = self._wizard()
        names = wizard.line_ids.mapped("name")
        self.assertEqual(names[0], "BNP Paribas")
        self.assertTrue(wizard.line_ids[0].most_requested)
        self.assertFalse(wizard.line_ids[-1].most_requested)
        wizard.search = "EPARGNE"  # accents and case do not matter
        wizard.action_search()
        self.assertEqual(wizard.line_ids.mapped("name"), ["Caisse d'Épargne"])
        wizard.search = False
        wizard.country_id = self.env.ref("base.be")
        wizard.action_search()
        self.assertEqual(wizard.line_ids.mapped("name"), ["BNP Paribas Fortis"])

    def test_sandbox_flow_creates_connection_and_accounts(self):
        callback, response = self._through_hosted_page(self._hosted_url())
        self.assertEqual(response.status_code, 303, response.text[:500])
        location = response.headers["Location"]
        connection = connection_of(self.env, location)
        # A bank just added: its accounts are linked in one step, on the screen that follows.
        self.assertEqual(
            location,
            f"{CONNECTIONS_URL}{connection.id}"
            "/action-bank_sync_aggregator.bank_sync_link_all_wizard_action",
        )
        self.assertEqual(connection.institution_name, "BNP Paribas")
        self.assertEqual(connection.state, "ok")
        self.assertEqual(connection.provider_id, self.aggregator)
        self.assertEqual(connection.company_id, self.company)
        self.assertGreater(connection.consent_expiry, fields.Datetime.now() + timedelta(days=170))
        self.assertEqual(
            sorted(connection.account_ids.mapped("account_type")),
            ["card", "checking", "loan", "savings"],
        )
        checking = connection.account_ids.filtered(lambda a: a.account_type == "checking")
        self.assertTrue(checking.iban.startswith("FR76"))
        self.assertEqual(checking.currency_id.name, "EUR")
        self.assertFalse(checking.journal_id, "nothing is synchronised before the user links it")
        self.assertIn("Connection added", connection.message_ids[:1].body)

        # The same return a second time (back button, replay) is refused, nothing is added.
        replay = self.url_open(callback, allow_redirects=False)
        self.assertEqual(replay.status_code, 400)
        self.assertIn("not valid", replay.text)
        self.assertEqual(self.env["bank.sync.connection"].search_count([]), 1)

    def test_wrong_password_and_cancel_show_the_reason(self):
        _callback, response = self._through_hosted_page(self._hosted_url(), login="wrong_password")
        self.assertEqual(response.status_code, 200)
        self.assertIn("was not completed", response.text)
        self.assertIn("Sandbox (demo) reports", response.text)
        _callback, response = self._through_hosted_page(self._hosted_url(), action="cancel")
        self.assertEqual(response.status_code, 200)
        self.assertIn("was not completed", response.text)
        self.assertFalse(self.env["bank.sync.connection"].search([]))

    def test_a_refused_login_can_be_tried_again_on_the_same_bank(self):
        Session = self.env["bank.sync.connect.session"].sudo()
        _callback, response = self._through_hosted_page(
            self._hosted_url("Crédit Agricole"), login="wrong_password"
        )
        self.assertIn("was not completed", response.text)
        self.assertIn("Try again", response.text)
        # The button posts the finished session back to Odoo (with the CSRF token).
        action, form, _selects = parse_form(response.text)
        self.assertEqual(action, "/bank_sync/retry")
        finished = Session.search([])
        self.assertEqual(form["session_id"], str(finished.id))
        retried = self.url_open(action, data=form, allow_redirects=False)
        self.assertEqual(retried.status_code, 303, retried.text[:500])
        # Straight to the aggregator's page for the same bank, with a new session: no consent
        # step, no bank picker.
        hosted = retried.headers["Location"]
        self.assertIn("/bank_sync/sandbox/connect", hosted)
        new_session = Session.search([]) - finished
        self.assertEqual(len(new_session), 1)
        self.assertEqual(new_session.institution_id, finished.institution_id)
        self.assertFalse(new_session.used_at)
        state = query_of(hosted)["state"]
        self.assertEqual(Session._read_state(state)["nonce"], new_session.nonce)
        page = self.url_open(hosted)
        self.assertEqual(page.status_code, 200)
        self.assertIn("Crédit Agricole", page.text)
        # This time the bank accepts: the connection is made for that bank, once.
        callback, response = self._through_hosted_page(hosted)
        self.assertEqual(response.status_code, 303, response.text[:500])
        connection = connection_of(self.env, response.headers["Location"])
        self.assertEqual(connection.institution_name, "Crédit Agricole")
        replay = self.url_open(callback, allow_redirects=False)
        self.assertEqual(replay.status_code, 400)
        # "Try again" opens one new visit: posted again, or on the login that succeeded, it
        # opens no second login at the aggregator.
        for session in (finished, new_session):
            again = self.url_open(
                action, data=dict(form, session_id=session.id), allow_redirects=False
            )
            self.assertEqual(again.status_code, 400)
            self.assertIn("cannot be tried again", again.text)
        self.assertEqual(len(Session.search([])), 2)
        # Nobody else retries someone's session.
        company_user(self.env, "other_retrier", self.company)
        self.authenticate("other_retrier", "other_retrier")
        page = self.url_open("/odoo")  # a CSRF token of this user's session
        other = self.url_open(
            action,
            data={"session_id": finished.id, "csrf_token": self._csrf_of(page)},
            allow_redirects=False,
        )
        self.assertEqual(other.status_code, 404)
        self.assertEqual(len(Session.search([])), 2)

    def _csrf_of(self, page):
        return page.text.split('csrf_token: "', 1)[1].split('"', 1)[0]

    def test_forged_state_is_refused(self):
        client = self.aggregator._get_client()
        Session = self.env["bank.sync.connect.session"]
        genuine = Session._make_state(self.aggregator)
        payload = {"d": Session._database_tag(), "c": self.company.id, "u": self.env.uid}
        payload["p"] = self.aggregator.id
        forged = signing.make_state("not the database secret", payload, 600)
        tampered = genuine[:-2] + ("AB" if genuine[-2:] != "AB" else "CD")
        # A genuine signature whose session was never opened here is refused as well.
        for state in (forged, tampered, genuine):
            session = client.start_connect(
                callback_url=self.aggregator._get_callback_url(),
                state=state,
                institution_id="CMCIFRPP",
            )
            _callback, response = self._through_hosted_page(session.url)
            self.assertEqual(response.status_code, 400)
            self.assertIn("not valid", response.text)
        self.assertFalse(self.env["bank.sync.connection"].search([]))

    def test_expired_state_is_refused(self):
        Session = self.env["bank.sync.connect.session"]
        payload = {"d": Session._database_tag(), "c": self.company.id, "u": self.env.uid}
        payload["p"] = self.aggregator.id
        expired = signing.make_state(Session._signing_key(), payload, 60, now=time.time() - 3600)
        session = self.aggregator._get_client().start_connect(
            callback_url=self.aggregator._get_callback_url(),
            state=expired,
            institution_id="CMCIFRPP",
        )
        _callback, response = self._through_hosted_page(session.url)
        self.assertEqual(response.status_code, 400)
        self.assertIn("expired", response.text)

    def test_state_of_another_user_is_refused(self):
        url = self._hosted_url()
        company_user(self.env, "other_manager", self.company)
        page = self.url_open(url)
        _action, form, _selects = parse_form(page.text)
        form.update(login="success", action="connect")
        callback = self.url_open(urlsplit(url).path, data=form, allow_redirects=False)
        self.authenticate("other_manager", "other_manager")
        response = self.url_open(callback.headers["Location"], allow_redirects=False)
        self.assertEqual(response.status_code, 400)
        self.assertFalse(self.env["bank.sync.connection"].search([]))

    def test_tampered_hosted_page_link_is_refused(self):
        url = self._hosted_url()
        response = self.url_open(url.replace("callback_url=http", "callback_url=https"))
        self.assertEqual(response.status_code, 400)
        self.assertIn("invalid or was altered", response.text)

    def test_reconnect_keeps_the_same_connection_and_links(self):
        _callback, response = self._through_hosted_page(self._hosted_url())
        connection = self.env["bank.sync.connection"].search([])
        journal = self.company_data["default_journal_bank"]
        checking = connection.account_ids.filtered(lambda a: a.account_type == "checking")
        checking.journal_id = journal
        action = connection.action_reconnect()
        _callback, response = self._through_hosted_page(action["url"])
        self.assertEqual(response.status_code, 303, response.text[:500])
        # A renewal goes back to the connection itself.
        self.assertEqual(response.headers["Location"], f"{CONNECTIONS_URL}{connection.id}")
        self.assertEqual(self.env["bank.sync.connection"].search([]), connection)
        self.assertEqual(checking.journal_id, journal)
        self.assertIn("renewed", " ".join(connection.message_ids.mapped("body")))

    def test_the_sandbox_page_only_leads_back_to_this_odoo(self):
        # A link signed with this database's key (as only this Odoo can make) but sending the
        # user elsewhere: the page refuses it rather than redirecting to another site.
        client = self.aggregator._get_client()
        state = self.env["bank.sync.connect.session"]._make_state(self.aggregator)
        for callback_url in (
            "https://attacker.example/bank_sync/callback/1",
            self.aggregator._get_callback_url() + "/../../web/login",
        ):
            session = client.start_connect(
                callback_url=callback_url, state=state, institution_id="BNPAFRPP"
            )
            page = self.url_open(session.url)
            self.assertEqual(page.status_code, 400)
            self.assertIn("does not lead back to this Odoo", page.text)
            form = dict(query_of(session.url), login="success", action="connect")
            submitted = self.url_open(urlsplit(session.url).path, data=form, allow_redirects=False)
            self.assertEqual(submitted.status_code, 400)
            self.assertNotIn("Location", submitted.headers)

    def test_only_accounting_managers_open_the_sandbox_page(self):
        url = self._hosted_url()
        company_user(self.env, "bookkeeper", self.company, groups=BOOKKEEPER_GROUPS)
        self.authenticate("bookkeeper", "bookkeeper")
        self.assertEqual(self.url_open(url).status_code, 404)

    def test_sandbox_page_needs_the_sandbox(self):
        url = self._hosted_url()
        self.company._bank_sync_set_aggregator_kind("linxo")
        self.assertEqual(self.url_open(url).status_code, 404)
