"""Connection health on real Odoo + PostgreSQL with the sandbox aggregator: alerts (activity and
e-mail, in English and French), consent reminders, temporary-failure escalation, stalls, reconnect.

Time is moved with freezegun, which both Odoo and the sandbox (stateless, clock-driven) obey.
"""

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

from freezegun import freeze_time

from odoo.addons.account.tests.common import AccountTestInvoicingCommon
from odoo.addons.base.tests.test_ir_cron import CronMixinCase
from odoo.tests import Form, new_test_user, tagged

from bank_sync_bridge.errors import ActionRequired, ProviderUnavailable, RateLimited
from bank_sync_bridge.model import ActionReason
from bank_sync_bridge.providers.sandbox import make_connection_id

from .common_bank_sync import company_user, encryption_keys, load_french

#: A Thursday morning, after the sandbox bank's overnight batch.
START = datetime(2025, 3, 20, 9, 0)
ALERT_TYPE = "bank_sync_aggregator.mail_activity_type_connection_alert"
STALL_TYPE = "bank_sync_aggregator.mail_activity_type_account_stalled"


@tagged("post_install", "-at_install")
class TestConnectionHealth(AccountTestInvoicingCommon, CronMixinCase):
    # The connect session's expiry is checked by PostgreSQL's clock, which freezegun cannot
    # move: the reconnect flow runs on real time.
    REAL_TIME_TESTS = ("test_reconnect_renews_the_same_connection_keeps_links_and_catches_up",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        load_french(cls.env)
        cls.company = cls.company_data["company"]
        cls.company.write({"bank_sync_enabled": True, "email": "compta@example.com"})
        cls.aggregator = cls.env["bank.sync.provider"].create(
            {"kind": "sandbox", "name": "Sandbox", "company_id": cls.company.id}
        )
        cls.alice = company_user(cls.env, "alice.health", cls.company, email="alice@example.com")
        cls.bernard = company_user(
            cls.env, "bernard.health", cls.company, email="bernard@example.com", lang="fr_FR"
        )
        cls.company.bank_sync_alert_user_ids = cls.alice | cls.bernard

    def setUp(self):
        super().setUp()
        # A key so that the sandbox's memory (reconnections) is kept, encrypted, in the database.
        keys = encryption_keys()
        keys.start()
        self.addCleanup(keys.stop)
        if self._testMethodName not in self.REAL_TIME_TESTS:
            frozen = freeze_time(START)
            self.clock = frozen.start()
            self.addCleanup(frozen.stop)

    # ------------------------------------------------------------------ helpers

    def connect(self, scenario, nonce="a1b2c3"):
        """A sandbox connection made a minute ago with ``scenario``, as the callback records it."""
        remote_id = make_connection_id(
            self.aggregator._get_user_ref(),
            "BNPAFRPP",
            scenario,
            datetime.now(timezone.utc) - timedelta(minutes=1),
            nonce,
        )
        client = self.aggregator._get_client()
        connection = self.aggregator._upsert_connection(client.get_connection(remote_id))
        connection._upsert_accounts(client.list_accounts(remote_id))
        return connection

    def link(self, account):
        account.currency_id.active = True
        journal = self.env["account.journal"].create(
            {
                "name": f"Bank health {account.id}",
                "code": f"H{account.id % 1000:03d}",
                "type": "bank",
                "company_id": self.company.id,
                "currency_id": account.currency_id.id,
            }
        )
        account.write({"journal_id": journal.id, "history_start_date": START.date()})
        return journal

    def move_to(self, instant):
        self.clock.move_to(instant)

    def alert_activities(self, connection, xmlid=ALERT_TYPE):
        activity_type = self.env.ref(xmlid)
        return connection.activity_ids.filtered(lambda a: a.activity_type_id == activity_type)

    def mails(self, record):
        return self.env["mail.mail"].search(
            [("model", "=", record._name), ("res_id", "=", record.id)], order="id"
        )

    def mail_to(self, mails, user):
        found = mails.filtered(lambda m: user.partner_id in m.recipient_ids)
        self.assertEqual(len(found), 1, f"one e-mail to {user.name}")
        return found

    # ------------------------------------------------------------------ alert policy

    def test_action_needed_alerts_at_once_once_per_incident_in_each_language(self):
        connection = self.connect("sca_required")
        connection._refresh_health_from_aggregator()

        self.assertEqual((connection.state, connection.reason), ("action_needed", "sca"))
        activities = self.alert_activities(connection)
        self.assertEqual(activities.user_id, self.alice | self.bernard)
        self.assertIn("needs your action", activities[0].summary)
        mails = self.mails(connection)
        self.assertEqual(len(mails), 2, "one e-mail per language")

        english = self.mail_to(mails, self.alice)
        self.assertEqual(
            english.subject, f"Bank synchronisation stopped: {connection.institution_name}"
        )
        self.assertIn("Strong authentication required", english.body_html)
        self.assertIn("Reconnect the bank", english.body_html)
        self.assertIn(f"/bank_sync/reconnect/{connection.id}", english.body_html)
        self.assertIn(connection.message, english.body_html)

        french = self.mail_to(mails, self.bernard)
        self.assertEqual(
            french.subject, f"Synchronisation bancaire interrompue : {connection.institution_name}"
        )
        self.assertIn("Authentification forte requise", french.body_html)
        self.assertIn("Reconnecter la banque", french.body_html)
        self.assertIn(f"/bank_sync/reconnect/{connection.id}", french.body_html)
        self.assertNotIn("Reconnect the bank", french.body_html)

        # The same problem seen again the next days alerts nobody twice.
        for days in (1, 2):
            self.move_to(START + timedelta(days=days))
            connection._refresh_health_from_aggregator()
        self.assertEqual(len(self.alert_activities(connection)), 2)
        self.assertEqual(len(self.mails(connection)), 2)
        self.assertEqual(connection.health_failed_days, 3)

    def test_alert_is_resolved_automatically_when_the_connection_works_again(self):
        connection = self.connect("password_changed")
        connection._refresh_health_from_aggregator()
        self.assertEqual(connection.state, "ok")
        self.assertFalse(self.alert_activities(connection))

        self.move_to(START + timedelta(days=1, hours=1))  # the bank now refuses the password
        connection._refresh_health_from_aggregator()
        self.assertEqual((connection.state, connection.reason), ("action_needed", "credentials"))
        self.assertEqual(len(self.alert_activities(connection)), 2)
        self.assertEqual(connection.health_incident, "action_needed:credentials")

        connection._update_health({"state": "ok", "reason": False, "message": False})
        self.assertFalse(self.alert_activities(connection), "activities closed")
        self.assertFalse(connection.health_incident)
        self.assertEqual(connection.health_failed_days, 0)
        done = connection.message_ids.filtered(lambda m: "works again" in (m.body or ""))
        self.assertTrue(done, "the chatter says the problem was solved")

    def test_temporary_failure_alerts_only_after_the_configured_number_of_days(self):
        # The sandbox bank is down for two days. With the default (3 days), nobody is told.
        connection = self.connect("bank_down")
        for hours in (0, 12, 24, 36):
            self.move_to(START + timedelta(hours=hours))
            connection._refresh_health_from_aggregator()
        self.assertEqual(connection.state, "temporary_failure")
        self.assertEqual(connection.health_failed_days, 2)
        self.assertFalse(self.alert_activities(connection))
        self.assertFalse(self.mails(connection))
        self.move_to(START + timedelta(days=2, hours=1))
        connection._refresh_health_from_aggregator()
        self.assertEqual(connection.state, "ok")
        self.assertEqual(connection.health_failed_days, 0)

        # With two days configured, the second failed day alerts, once.
        self.company.bank_sync_failure_alert_days = 2
        self.move_to(START)
        other = self.connect("bank_down", nonce="d4e5f6")
        other._refresh_health_from_aggregator()
        self.assertFalse(self.alert_activities(other))
        self.move_to(START + timedelta(days=1))
        other._refresh_health_from_aggregator()
        other._refresh_health_from_aggregator()
        activities = self.alert_activities(other)
        self.assertEqual(len(activities), 2)
        self.assertIn("no synchronisation for 2 days", activities[0].summary)
        english = self.mail_to(self.mails(other), self.alice)
        self.assertIn("No synchronisation has succeeded for", english.body_html)
        french = self.mail_to(self.mails(other), self.bernard)
        self.assertIn("Aucune synchronisation", french.body_html)
        self.move_to(START + timedelta(days=2, hours=1))
        other._refresh_health_from_aggregator()
        self.assertFalse(self.alert_activities(other))

    def test_sync_errors_feed_the_same_policy_and_a_rate_limit_is_never_an_alert(self):
        connection = self.connect("success")
        self.assertIsNone(connection._record_sync_error(RateLimited("slow down", retry_after=30)))
        self.assertEqual(connection.state, "ok")
        self.assertEqual(connection.health_failed_days, 0)

        connection._record_sync_error(ProviderUnavailable("Bank unreachable", status=503))
        self.assertEqual(connection.state, "temporary_failure")
        self.assertEqual(connection.message, "Bank unreachable")
        self.assertFalse(self.alert_activities(connection))

        connection._record_sync_error(
            ActionRequired("Validate your pro accounts", reason=ActionReason.PRO_VALIDATION)
        )
        self.assertEqual((connection.state, connection.reason), ("action_needed", "pro_validation"))
        self.assertEqual(len(self.alert_activities(connection)), 2)

    def test_the_daily_import_reports_failures_to_the_health_policy(self):
        # The bank is down: the run fails, the connection says why, nobody is alarmed yet.
        connection = self.connect("bank_down")
        account = connection.account_ids.filtered(lambda a: a.account_type == "checking")
        self.link(account)
        run = account._sync_account("cron")
        self.assertEqual(run.state, "failed")
        self.assertEqual(connection.state, "temporary_failure")
        self.assertEqual(connection.health_failed_days, 1)
        self.assertFalse(self.alert_activities(connection))
        # Once the bank is back, the next import succeeds and the failure streak is over.
        self.move_to(START + timedelta(days=2, hours=1))
        run = account._sync_account("cron")
        self.assertEqual(run.state, "done", run.error)
        self.assertEqual(connection.state, "ok")
        self.assertEqual(connection.health_failed_days, 0)

        # Strong authentication needed: the first failed import alerts at once.
        sca = self.connect("sca_required", nonce="5ca5ca")
        sca_account = sca.account_ids.filtered(lambda a: a.account_type == "checking")
        self.link(sca_account)
        self.assertEqual(sca_account._sync_account("cron").state, "failed")
        self.assertEqual((sca.state, sca.reason), ("action_needed", "sca"))
        self.assertEqual(len(self.alert_activities(sca)), 2)

    def test_the_aggregators_explanation_is_kept_in_every_language(self):
        # The check runs without a user: the explanation is kept in each active language,
        # and every reader (screen or e-mail) gets their own.
        self.company.partner_id.lang = "fr_FR"
        connection = self.connect("sca_required")
        connection._refresh_health_from_aggregator()
        french_text = connection.with_context(lang="fr_FR").message
        english_text = connection.with_context(lang="en_US").message
        self.assertIn("authentification", french_text.lower())
        self.assertIn("strong authentication", english_text.lower())
        french = self.mail_to(self.mails(connection), self.bernard)
        self.assertIn(french_text, french.body_html)
        english = self.mail_to(self.mails(connection), self.alice)
        self.assertIn(english_text, english.body_html)

    def test_alerts_go_to_the_accounting_managers_when_no_recipient_is_set(self):
        self.company.bank_sync_alert_user_ids = False
        outsider = new_test_user(
            self.env, "outsider.health", groups="account.group_account_invoice,base.group_user"
        )
        connection = self.connect("sca_required")
        connection._refresh_health_from_aggregator()
        users = self.alert_activities(connection).user_id
        self.assertIn(self.alice, users)
        self.assertIn(self.bernard, users)
        self.assertNotIn(outsider, users)
        self.assertTrue(all(u.has_group("account.group_account_manager") for u in users))

    def test_alert_settings_are_set_in_the_accounting_settings(self):
        self.env.user.company_id = self.company
        with Form(self.env["res.config.settings"].with_company(self.company)) as settings:
            settings.bank_sync_failure_alert_days = 5
            settings.bank_sync_stall_days = 12
            settings.bank_sync_alert_user_ids.clear()
            settings.bank_sync_alert_user_ids.add(self.bernard)
        self.assertEqual(self.company.bank_sync_failure_alert_days, 5)
        self.assertEqual(self.company.bank_sync_stall_days, 12)
        self.assertEqual(self.company._bank_sync_alert_users(), self.bernard)

    # ------------------------------------------------------------------ consent

    def test_consent_reminders_at_15_3_and_1_days_each_once_with_a_moving_clock(self):
        connection = self.connect("consent_expiring_20")
        expiry = connection.consent_expiry
        self.assertEqual(connection.consent_state, "ok")
        sent = []
        colours = {}
        for day in range(22):
            for hour in (6, 18):  # the health check may run twice a day: nothing is repeated
                self.move_to(START.replace(hour=hour) + timedelta(days=day))
                connection.invalidate_recordset(["consent_state", "consent_days_left"])
                colours[connection.consent_days_left] = connection.consent_state
                before = self.mails(connection)
                connection._check_consent_reminders()
                for mail in self.mails(connection) - before:
                    sent.append((connection.consent_days_left, mail))
        self.assertEqual(
            [days for days, mail in sent if self.alice.partner_id in mail.recipient_ids],
            [15, 3, 1],
        )
        self.assertEqual(len(sent), 6, "each reminder once, to each of the two recipients")
        self.assertEqual(
            (colours[16], colours[15], colours[3], colours[1]), ("ok", "soon", "urgent", "urgent")
        )
        self.assertEqual(colours[-1], "expired")

        three_days = [mail for days, mail in sent if days == 3]
        english = next(m for m in three_days if self.alice.partner_id in m.recipient_ids)
        self.assertEqual(
            english.subject,
            f"Bank consent for {connection.institution_name} expires in 3 day(s)",
        )
        self.assertIn("Renew the consent", english.body_html)
        french = next(m for m in three_days if self.bernard.partner_id in m.recipient_ids)
        self.assertEqual(
            french.subject,
            f"Le consentement bancaire pour {connection.institution_name} expire dans 3 jour(s)",
        )
        self.assertIn("Renouveler le consentement", french.body_html)
        self.assertEqual(connection.consent_expiry, expiry)

    def test_a_renewed_consent_gets_its_reminders_again(self):
        connection = self.connect("consent_expiring_10")
        self.move_to(START + timedelta(days=7, hours=1))
        connection._check_consent_reminders()
        self.assertEqual(connection.consent_reminder_sent, 3)
        # The same end date seen again (with milliseconds, as Bridge sends it) is no renewal.
        same = connection.consent_expiry + timedelta(microseconds=123000)
        connection._update_health({"state": "ok", "consent_expiry": same})
        self.assertEqual(connection.consent_reminder_sent, 3)
        renewed = connection.consent_expiry + timedelta(days=180)
        connection._update_health({"state": "ok", "consent_expiry": renewed})
        self.assertEqual(connection.consent_reminder_sent, 0)
        self.move_to(renewed - timedelta(days=14))
        connection._check_consent_reminders()
        self.assertEqual(connection.consent_reminder_sent, 15)

    def test_reminders_go_to_the_configured_recipients_only(self):
        self.company.bank_sync_alert_user_ids = self.bernard
        connection = self.connect("consent_expiring_15")
        connection._check_consent_reminders()
        mails = self.mails(connection)
        self.assertEqual(len(mails), 1)
        self.assertEqual(mails.recipient_ids, self.bernard.partner_id)

    # ------------------------------------------------------------------ stall

    def _statement_lines(self, journal, days):
        self.env["account.bank.statement.line"].create(
            [
                {
                    "journal_id": journal.id,
                    "date": START.date() - timedelta(days=d),
                    "amount": 10.0 + d,
                    "payment_ref": f"Operation {d}",
                }
                for d in days
            ]
        )

    def test_a_busy_account_that_goes_silent_raises_one_alert_until_operations_return(self):
        connection = self.connect("success")
        account = connection.account_ids.filtered(lambda a: a.account_type == "checking")
        journal = self.link(account)
        self._statement_lines(journal, range(9, 80, 2))  # every other day until 9 days ago

        account._check_stall()
        self.assertEqual(account.stall_alert_date, START.date())
        activities = self.alert_activities(connection, STALL_TYPE)
        self.assertEqual(len(activities), 2)
        self.assertIn("no operations for 9 days", activities[0].summary)
        mails = self.mails(account)
        english = self.mail_to(mails, self.alice)
        self.assertEqual(
            english.subject, f"No bank operations for 9 days on {account.display_name}"
        )
        french = self.mail_to(mails, self.bernard)
        self.assertEqual(
            french.subject, f"Aucune opération bancaire depuis 9 jours sur {account.display_name}"
        )

        self.move_to(START + timedelta(days=1))
        account._check_stall()
        self.assertEqual(len(self.mails(account)), 2, "one alert per silence")

        self._statement_lines(journal, [0])  # an operation arrives (yesterday, now)
        account._check_stall()
        self.assertFalse(account.stall_alert_date)
        self.assertFalse(self.alert_activities(connection, STALL_TYPE))

    def test_stall_threshold_is_configurable_and_quiet_accounts_never_stall(self):
        connection = self.connect("success")
        by_type = {account.account_type: account for account in connection.account_ids}
        checking, savings = by_type["checking"], by_type["savings"]
        self._statement_lines(self.link(checking), range(9, 80, 2))
        self._statement_lines(self.link(savings), (20, 50, 80))  # a few transfers a quarter
        self.company.bank_sync_stall_days = 10
        (checking | savings)._check_stall()
        self.assertFalse(checking.stall_alert_date)
        self.assertFalse(savings.stall_alert_date)
        self.move_to(START + timedelta(days=1))
        (checking | savings)._check_stall()
        self.assertTrue(checking.stall_alert_date)
        self.assertFalse(savings.stall_alert_date)

    def test_daily_health_cron_checks_every_connection(self):
        broken = self.connect("sca_required")
        expiring = self.connect("consent_expiring_3", nonce="0f0f0f")
        self.env.ref("bank_sync_aggregator.ir_cron_bank_sync_health").method_direct_trigger()
        self.assertEqual(len(self.alert_activities(broken)), 2)
        self.assertEqual(len(self.mails(expiring)), 2)
        self.assertEqual(expiring.consent_reminder_sent, 3)

    def test_journal_dashboard_card_shows_consent_and_offers_reconnect(self):
        connection = self.connect("consent_expiring_10")
        account = connection.account_ids.filtered(lambda a: a.account_type == "checking")
        journal = self.link(account)
        card = journal._get_journal_dashboard_data_batched()[journal.id]
        self.assertEqual(card["bank_sync_state"], "ok")
        self.assertEqual(card["bank_sync_consent_state"], "soon")
        self.assertTrue(card["bank_sync_consent_expiry"])
        self.move_to(START + timedelta(days=8))
        connection.invalidate_recordset(["consent_state"])
        card = journal._get_journal_dashboard_data_batched()[journal.id]
        self.assertEqual(card["bank_sync_consent_state"], "urgent")
        dashboard = self.env.ref("account.account_journal_dashboard_kanban_view")
        arch = journal.with_user(self.alice).get_views([(dashboard.id, "kanban")])["views"][
            "kanban"
        ]["arch"]
        self.assertIn("action_bank_sync_reconnect", arch)
        action = journal.with_user(self.alice).action_bank_sync_reconnect()
        self.assertIn(connection.remote_id, action["url"], "the same connection is renewed")

    # ------------------------------------------------------------------ reconnect

    def test_reconnect_renews_the_same_connection_keeps_links_and_catches_up(self):
        connection = self.connect("sca_required")
        accounts = connection.account_ids
        checking = accounts.filtered(lambda a: a.account_type == "checking")
        journal = self.link(checking)
        connection._refresh_health_from_aggregator()
        self.assertEqual(len(self.alert_activities(connection)), 2)

        action = connection.with_user(self.alice).action_reconnect()
        self.assertEqual(action["type"], "ir.actions.act_url")
        query = dict(parse_qsl(urlsplit(action["url"]).query))
        self.assertEqual(query["mode"], "reconnect")
        self.assertEqual(query["connection_id"], connection.remote_id)

        client = self.aggregator._get_client()
        callback = client.submit_hosted_page(dict(query, login="success"))
        result = client.complete_connect(dict(parse_qsl(urlsplit(callback).query)))
        sync_cron = self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")
        with self.capture_triggers(sync_cron.id) as triggers:
            session = (
                self.env["bank.sync.connect.session"].with_user(self.alice)._consume(result.state)
            )
            renewed = session._complete(result)

        self.assertEqual(renewed, connection, "the same connection, not a new one")
        self.assertEqual(connection.account_ids, accounts)
        self.assertEqual(checking.journal_id, journal, "the account stays linked")
        self.assertEqual(connection.state, "ok")
        self.assertFalse(self.alert_activities(connection), "the alert is over")
        self.assertTrue(checking.sync_requested, "the gap is caught up in the background")
        self.assertTrue(triggers.records)
