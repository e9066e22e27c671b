"""Connection health through the real flows (the callback, the update button, a failed import):

- the aggregator's explanation is read in each user's own language, whoever refreshed last
  (sandbox tables and the Bridge emulator's ``Accept-Language`` over real HTTP);
- a connection made in "Action needed" alerts right after the callback, once.
"""

from unittest.mock import patch
from urllib.parse import urlsplit

from odoo.tests import HttpCase, tagged

from bank_sync_bridge.providers.sandbox import sandbox_message
from bank_sync_bridge.testing.bridge_data import STATUS_DESCRIPTIONS
from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator

from .common_bank_sync import BankSyncCommon, company_user, encryption_keys, load_french, parse_form

ALERT_TYPE = "bank_sync_aggregator.mail_activity_type_connection_alert"


class ConnectionHealthFlowCase(BankSyncCommon, HttpCase):
    """Sandbox company, French active, an English (accountman) and a French accounting
    manager, both alert recipients."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        load_french(cls.env)
        cls.company.email = "compta@example.com"
        cls.english = cls.env.user
        cls.english.write({"lang": "en_US", "email": "accountman@example.com"})
        cls.french = company_user(
            cls.env, "bernard.health", cls.company, email="bernard@example.com", lang="fr_FR"
        )
        cls.company.bank_sync_alert_user_ids = cls.english | cls.french

    def setUp(self):
        super().setUp()
        keys = encryption_keys()
        keys.start()
        self.addCleanup(keys.stop)

    def message_for(self, connection, user):
        """The explanation as ``user`` reads it (form banner, dashboard card)."""
        return connection.with_user(user).with_context(lang=user.lang).message

    def card_message(self, journal, user):
        """The dashboard card's explanation for ``user``."""
        journal = journal.with_user(user).with_context(lang=user.lang)
        return journal._get_journal_dashboard_data_batched()[journal.id]["bank_sync_message"]

    def link(self, connection):
        account = connection.account_ids.filtered(lambda a: a.account_type == "checking")
        account.currency_id.active = True
        journal = self.env["account.journal"].create(
            {
                "name": f"Bank health {account.id}",
                "code": f"F{account.id % 1000:03d}",
                "type": "bank",
                "company_id": self.company.id,
                "currency_id": account.currency_id.id,
            }
        )
        account.write({"journal_id": journal.id, "history_start_date": "2025-01-01"})
        return account, journal

    def alert_activities(self, connection):
        activity_type = self.env.ref(ALERT_TYPE)
        return connection.activity_ids.filtered(lambda a: a.activity_type_id == activity_type)

    def mails(self, connection):
        return self.env["mail.mail"].search(
            [("model", "=", connection._name), ("res_id", "=", connection.id)]
        )


@tagged("post_install", "-at_install")
class TestConnectionHealthFlowSandbox(ConnectionHealthFlowCase):
    def _callback(self, login):
        """Add a bank as the English manager through the sandbox's hosted page and the
        callback, over HTTP like a browser; return the recorded connection."""
        self.authenticate("accountman", "accountman")
        wizard = self.env["bank.sync.connect.wizard"].create(
            {"accept_terms": True, "allow_transfer": True}
        )
        wizard.action_next()
        line = wizard.line_ids.filtered(lambda line: line.name == "Crédit Agricole")
        url = line.action_choose()["url"]
        page = self.url_open(url)
        self.assertEqual(page.status_code, 200, page.text[:300])
        action, form, _selects = parse_form(page.text)
        form.update(login=login, password="secret", action="connect")
        submitted = self.url_open(action or urlsplit(url).path, data=form, allow_redirects=False)
        self.assertEqual(submitted.status_code, 303, submitted.text[:300])
        response = self.url_open(submitted.headers["Location"], allow_redirects=False)
        self.assertEqual(response.status_code, 303, response.text[:500])
        connection = self.env["bank.sync.connection"].search(
            [("provider_id", "=", self.aggregator.id)], order="id desc", limit=1
        )
        self.assertTrue(connection)
        return connection

    def test_action_needed_connection_alerts_right_after_the_callback_once(self):
        connection = self._callback("sca_required")
        self.assertEqual((connection.state, connection.reason), ("action_needed", "sca"))

        # At once: one activity for each recipient, one e-mail each, before any sync.
        activities = self.alert_activities(connection)
        self.assertEqual(len(activities.filtered(lambda a: a.user_id == self.english)), 1)
        self.assertEqual(len(activities.filtered(lambda a: a.user_id == self.french)), 1)
        mails = self.mails(connection)
        self.assertEqual(
            len(mails.filtered(lambda m: self.english.partner_id in m.recipient_ids)), 1
        )
        self.assertEqual(
            len(mails.filtered(lambda m: self.french.partner_id in m.recipient_ids)), 1
        )
        self.assertEqual(connection.health_incident, "action_needed:sca")

        # Each activity and e-mail speaks its reader's language, the explanation included.
        bank = connection.institution_name
        english_text = sandbox_message("sca_required", "en", bank=bank)
        french_text = sandbox_message("sca_required", "fr", bank=bank)
        mine = activities.filtered(lambda a: a.user_id == self.english)
        theirs = activities.filtered(lambda a: a.user_id == self.french)
        self.assertIn("needs your action", mine.summary)
        self.assertIn(english_text, str(mine.note))
        self.assertNotIn("needs your action", theirs.summary)
        self.assertIn(french_text, str(theirs.note))
        french_mail = mails.filtered(lambda m: self.french.partner_id in m.recipient_ids)
        self.assertIn(french_text, french_mail.body_html)
        self.assertNotIn(english_text, french_mail.body_html)

        # The next refreshes (update button, daily check) see the same problem: no new alert.
        connection.with_user(self.french).action_refresh_from_aggregator()
        connection._refresh_health_from_aggregator()
        self.assertEqual(self.alert_activities(connection), activities)
        self.assertEqual(self.mails(connection), mails)

    def test_each_user_reads_the_explanation_in_their_language_whoever_refreshed(self):
        connection = self._callback("bank_down")
        _account, journal = self.link(connection)
        bank = connection.institution_name
        english_text = sandbox_message("bank_unavailable", "en", bank=bank)
        french_text = sandbox_message("bank_unavailable", "fr", bank=bank)
        self.assertEqual(connection.state, "temporary_failure")

        # Recorded by the English manager's callback: each reads their own language.
        self.assertEqual(self.message_for(connection, self.english), english_text)
        self.assertEqual(self.message_for(connection, self.french), french_text)

        # The French manager clicks "Update from the aggregator": the English one still reads
        # English, on the form and on the dashboard card.
        connection.with_user(self.french).with_context(
            lang="fr_FR"
        ).action_refresh_from_aggregator()
        self.assertEqual(self.message_for(connection, self.english), english_text)
        self.assertEqual(self.message_for(connection, self.french), french_text)
        self.assertEqual(self.card_message(journal, self.english), english_text)
        self.assertEqual(self.card_message(journal, self.french), french_text)

        # The daily check, run without a user, keeps both.
        connection.with_context(lang=None)._refresh_health_from_aggregator()
        self.assertEqual(self.message_for(connection, self.french), french_text)
        self.assertEqual(self.message_for(connection, self.english), english_text)

    def test_a_failed_import_gives_the_explanation_in_each_language(self):
        # A connection seen working, whose import then fails because the bank is down: the
        # package's error is in English only, the aggregator's explanation is read in both.
        connection = self._callback("bank_down")
        account, journal = self.link(connection)
        connection._update_health({"state": "ok", "reason": False, "message": False})
        self.assertFalse(self.message_for(connection, self.french))

        calls = []
        client_class = type(self.aggregator._get_client())
        original = client_class.get_connection

        def counting(client, remote_id, *, locale="en"):
            calls.append(locale)
            return original(client, remote_id, locale=locale)

        with patch.object(client_class, "get_connection", counting):
            run = account.with_user(self.french).with_context(lang="fr_FR")._sync_account("manual")
            self.assertEqual(run.state, "failed")
            self.assertEqual(sorted(calls), ["en", "fr"], "one read per active language")
            bank = connection.institution_name
            self.assertEqual(
                self.card_message(journal, self.french),
                sandbox_message("bank_unavailable", "fr", bank=bank),
            )
            self.assertEqual(
                self.card_message(journal, self.english),
                sandbox_message("bank_unavailable", "en", bank=bank),
            )
            # The same failure again costs no further call and changes nothing.
            account._sync_account("manual")
            self.assertEqual(sorted(calls), ["en", "fr"])


@tagged("post_install", "-at_install")
class TestConnectionHealthFlowBridge(ConnectionHealthFlowCase):
    """Bridge translates its explanation through Accept-Language: the emulator (real HTTP)
    answers in the language asked for."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emulator = BridgeEmulator().start()
        cls.addClassCleanup(cls.emulator.stop)

    def setUp(self):
        super().setUp()
        self.bridge = self.company._bank_sync_set_aggregator_kind("bridgeapi")
        self.bridge.sudo().write(
            {
                "base_url": self.emulator.base_url,
                "client_id": self.emulator.client_id,
                "client_secret": self.emulator.client_secret,
            }
        )

    def test_bridge_explanation_in_each_language_one_call_per_language(self):
        item = self.emulator.connect_item(self.bridge._get_user_ref(), login="1010")
        client = self.bridge._get_client()
        connection = self.bridge._upsert_connection(client.get_connection(str(item.id)))
        connection._upsert_accounts(client.list_accounts(str(item.id)))
        english_text, french_text = STATUS_DESCRIPTIONS[1010]
        path = f"/v3/aggregation/items/{item.id}"
        before = len(self.emulator.calls(path, "GET"))

        connection.with_user(self.french).with_context(
            lang="fr_FR"
        ).action_refresh_from_aggregator()

        calls = self.emulator.calls(path, "GET")[before:]
        self.assertEqual(sorted(c["accept_language"] for c in calls), ["en", "fr"])
        self.assertEqual((connection.state, connection.reason), ("action_needed", "sca"))
        self.assertEqual(self.message_for(connection, self.french), french_text)
        self.assertEqual(self.message_for(connection, self.english), english_text)
        # Found by the update button: alerted at once, in each reader's language.
        activities = self.alert_activities(connection)
        self.assertEqual(activities.user_id, self.english | self.french)
        theirs = activities.filtered(lambda a: a.user_id == self.french)
        self.assertIn(french_text, str(theirs.note))
