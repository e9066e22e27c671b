"""Aggregator webhooks over real HTTP: the Bridge emulator posts signed events to Odoo's
controller, which verifies the raw body, records each event once, answers at once, and leaves
the synchronisation to the background job."""

import json
import logging
from datetime import datetime, timedelta, timezone
from unittest.mock import patch

from odoo import fields
from odoo.addons.account.tests.common import AccountTestInvoicingCommon
from odoo.addons.base.tests.test_ir_cron import CronMixinCase
from odoo.exceptions import AccessError
from odoo.tests import HttpCase, tagged

from bank_sync_bridge import crypto
from bank_sync_bridge.providers import bridgeapi
from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator

from .common_bank_sync import LocalEmulatorsMixin, company_user, encryption_keys

WEBHOOK_CRON = "bank_sync_aggregator.ir_cron_process_webhook_events"


class BridgeCase(LocalEmulatorsMixin, AccountTestInvoicingCommon, HttpCase, CronMixinCase):
    """A company on Bridge (the emulator), one connection, one account linked to a journal."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.startClassPatcher(encryption_keys())
        cls.emulator = BridgeEmulator().start()
        cls.addClassCleanup(cls.emulator.stop)
        cls.company = cls.company_data["company"]
        cls.company.bank_sync_enabled = True
        cls.aggregator = cls.env["bank.sync.provider"].create(
            {
                "name": "Bridge",
                "kind": "bridgeapi",
                "company_id": cls.company.id,
                "base_url": cls.emulator.base_url,
                "client_id": cls.emulator.client_id,
                "client_secret": cls.emulator.client_secret,
                "webhook_secrets": "whsec-current",
            }
        )
        item = cls.emulator.connect_item(cls.aggregator._get_user_ref(), login="success")
        cls.item_id = item.id
        client = cls.aggregator._get_client()
        cls.connection = cls.aggregator._upsert_connection(client.get_connection(str(item.id)))
        cls.connection._upsert_accounts(client.list_accounts(str(item.id)))
        cls.account = cls.connection.account_ids[:1]
        cls.account.currency_id.active = True
        journal = cls.env["account.journal"].create(
            {
                "name": "Bridge bank",
                "code": "BRWH",
                "type": "bank",
                "company_id": cls.company.id,
                "currency_id": cls.account.currency_id.id,
            }
        )
        cls.account.write({"journal_id": journal.id, "history_start_date": "2025-01-01"})

    def setUp(self):
        super().setUp()
        self.url = f"{self.base_url()}/bank_sync/webhook/{self.aggregator.id}"
        self.emulator.register_webhook(self.url, ["whsec-current"])
        self.emulator.outbox.clear()


@tagged("post_install", "-at_install")
class TestWebhooksController(BridgeCase):
    # ------------------------------------------------------------------ helpers

    def account_updated(self, **overrides):
        return self.emulator.event(
            "item.account.updated",
            {
                "account_id": int(self.account.remote_id),
                "item_id": self.item_id,
                "user_uuid": "ignored-by-odoo",
                "nb_new_transactions": 2,
                **overrides,
            },
        )

    def events(self):
        return self.env["bank.sync.webhook.event"].search(
            [("provider_id", "=", self.aggregator.id)]
        )

    def post_raw(self, body, signature):
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["BridgeApi-Signature"] = signature
        return self.url_open(self.url, data=body, headers=headers)

    # ------------------------------------------------------------------ signature cases

    def test_valid_delivery_is_recorded_answered_at_once_and_synced_in_background(self):
        # The address to register at Bridge is shown on the aggregator form.
        self.assertTrue(
            self.aggregator.webhook_url.endswith(f"/bank_sync/webhook/{self.aggregator.id}")
        )
        with self.capture_triggers(WEBHOOK_CRON) as triggers:
            (delivery,) = self.emulator.send_webhook(self.account_updated())
        self.assertEqual(delivery.status, 200)
        event = self.events()
        self.assertEqual(len(event), 1)
        self.assertEqual(
            (event.event_type, event.state, event.delivery_count),
            ("item.account.updated", "pending", 1),
        )
        self.assertEqual(event.account_remote_ids, self.account.remote_id)
        self.assertEqual(len(triggers.records), 1, "the background job is woken at once")
        self.assertFalse(self.account.sync_requested, "nothing synchronised in the request")

        # The background job: re-reads the connection, then asks for the account's sync.
        with self.capture_triggers("bank_sync_aggregator.ir_cron_bank_sync") as sync_triggers:
            self.env["bank.sync.webhook.event"]._cron_process_webhook_events()
        self.assertEqual(event.state, "done", event.result)
        self.assertEqual(event.connection_id, self.connection)
        self.assertTrue(self.account.sync_requested)
        self.assertTrue(sync_triggers.records)
        self.assertEqual(self.connection.state, "ok")

    def test_rotated_secret_old_and_new_are_both_accepted_during_the_rotation(self):
        self.aggregator.webhook_secrets = "whsec-new,whsec-current"
        self.env.flush_all()  # the controller reads the database, in another cursor
        self.emulator.rotate_webhook_secret("whsec-new")  # signs with both
        (both,) = self.emulator.send_webhook(self.account_updated(nb_new_transactions=1))
        self.assertEqual(both.status, 200)
        self.emulator.end_rotation()  # only the new secret signs now
        (new_only,) = self.emulator.send_webhook(self.account_updated(nb_new_transactions=3))
        self.assertEqual(new_only.status, 200)
        self.assertEqual(len(self.events()), 2)

        # Once the rotation is over at our end too, the old secret no longer opens the door.
        self.aggregator.webhook_secrets = "whsec-new"
        self.env.flush_all()
        body = json.dumps(self.account_updated(nb_new_transactions=4)).encode()
        response = self.post_raw(body, self.emulator.sign(body, ["whsec-current"]))
        self.assertEqual(response.status_code, 401)
        self.assertEqual(len(self.events()), 2)

    def test_invalid_or_missing_signature_is_refused_and_nothing_recorded(self):
        with self.capture_triggers(WEBHOOK_CRON) as triggers:
            (bad,) = self.emulator.send_webhook(self.account_updated(), signature="invalid")
            (missing,) = self.emulator.send_webhook(self.account_updated(), signature="missing")
        self.assertEqual((bad.status, missing.status), (401, 401))
        # A body altered after signing fails too, even with a genuine signature.
        body = json.dumps(self.account_updated(), separators=(",", ":")).encode()
        signature = self.emulator.sign(body)
        response = self.post_raw(
            body.replace(b'"nb_new_transactions":2', b'"nb_new_transactions":9'), signature
        )
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.json(), {"error": "invalid signature"})
        self.assertFalse(self.events())
        self.assertFalse(triggers.records)

    def test_a_replayed_old_delivery_is_refused_even_with_a_valid_signature(self):
        old = self.emulator.event(
            "item.account.updated",
            {"account_id": int(self.account.remote_id), "item_id": self.item_id},
            timestamp=datetime.now(timezone.utc) - timedelta(hours=3),
        )
        (delivery,) = self.emulator.send_webhook(old)
        self.assertEqual(delivery.status, 401)
        self.assertFalse(self.events())

    def test_duplicate_delivery_is_recorded_and_processed_once(self):
        delivered = self.account_updated()
        deliveries = self.emulator.send_webhook(delivered, copies=2)
        self.assertEqual([d.status for d in deliveries], [200, 200])
        event = self.events()
        self.assertEqual(len(event), 1)
        self.assertEqual(event.delivery_count, 2)
        body = json.dumps(delivered).encode()  # the same event, serialised differently
        again = self.post_raw(body, self.emulator.sign(body))
        self.assertEqual(again.json(), {"received": 0, "duplicates": 1})
        self.env["bank.sync.webhook.event"]._cron_process_webhook_events()
        self.assertEqual(event.state, "done")
        runs_before = self.env["bank.sync.webhook.event"].search_count([("state", "=", "done")])
        self.env["bank.sync.webhook.event"]._cron_process_webhook_events()
        self.assertEqual(
            self.env["bank.sync.webhook.event"].search_count([("state", "=", "done")]),
            runs_before,
        )

    def test_unknown_event_type_is_accepted_and_ignored(self):
        (future,) = self.emulator.send_webhook(
            self.emulator.event("item.something_new", {"item_id": self.item_id})
        )
        self.assertEqual(future.status, 200, "a new vendor event never makes deliveries fail")
        self.assertFalse(self.events())
        # Bridge's dashboard test event is recorded (it proves the setup works) and ignored.
        (test_event,) = self.emulator.send_webhook(
            self.emulator.event("TEST_EVENT", {"hello": "world"})
        )
        self.assertEqual(test_event.status, 200)
        self.env["bank.sync.webhook.event"]._cron_process_webhook_events()
        event = self.events()
        self.assertEqual((event.event_type, event.state), ("TEST_EVENT", "ignored"))
        self.assertFalse(self.account.sync_requested)

    def test_connect_events_queued_by_the_aggregator_arrive_out_of_order_and_twice(self):
        self.emulator.refresh_item(self.item_id, trigger="scheduler")
        deliveries = self.emulator.deliver_webhooks(reverse=True, duplicate=True)
        self.assertTrue(deliveries)
        self.assertTrue(all(d.status == 200 for d in deliveries))
        events = self.events()
        self.assertEqual(len(events), len(deliveries) // 2)
        self.assertTrue(all(e.delivery_count == 2 for e in events))
        self.env["bank.sync.webhook.event"]._cron_process_webhook_events()
        self.assertEqual(set(events.mapped("state")), {"done"})

    def test_a_refresh_needing_strong_authentication_alerts_through_the_webhook(self):
        self.emulator.set_item_status(self.item_id, 1010, "otp_required")
        # The emulator lives for the whole class: the next tests find the item healthy again.
        self.addCleanup(self.emulator.set_item_status, self.item_id, 0, "ok")
        self.emulator.refresh_item(self.item_id, trigger="scheduler")
        deliveries = self.emulator.deliver_webhooks()
        self.assertTrue(deliveries and all(d.status == 200 for d in deliveries))
        self.env["bank.sync.webhook.event"]._cron_process_webhook_events()
        self.assertEqual((self.connection.state, self.connection.reason), ("action_needed", "sca"))
        self.assertEqual(self.connection.health_incident, "action_needed:sca")
        alert = self.env.ref("bank_sync_aggregator.mail_activity_type_connection_alert")
        self.assertTrue(
            self.connection.activity_ids.filtered(lambda a: a.activity_type_id == alert)
        )
        self.assertFalse(self.account.sync_requested, "nothing to import until reconnected")

    def test_handled_events_are_forgotten_after_three_months_failed_ones_kept(self):
        Event = self.env["bank.sync.webhook.event"]
        old = fields.Datetime.now() - timedelta(days=91)
        events = Event.create(
            [
                {
                    "provider_id": self.aggregator.id,
                    "event_id": f"gc-{state}",
                    "event_type": "item.refreshed",
                    "state": state,
                    "received_at": old,
                }
                for state in ("done", "ignored", "failed", "pending")
            ]
        )
        recent = Event.create({"provider_id": self.aggregator.id, "event_id": "gc-recent"})
        recent.state = "done"
        Event._gc_handled_events()
        self.assertEqual(
            set(events.exists().mapped("state")), {"failed", "pending"}, "kept for a person"
        )
        self.assertTrue(recent.exists())

    def test_deleted_item_marks_the_connection_disconnected_with_an_alert(self):
        (delivery,) = self.emulator.send_webhook(
            self.emulator.event("item.deleted", {"item_id": self.item_id, "user_uuid": "x"})
        )
        self.assertEqual(delivery.status, 200)
        self.env["bank.sync.webhook.event"]._cron_process_webhook_events()
        self.assertEqual(self.events().state, "done")
        self.assertEqual(self.connection.state, "disconnected")
        self.assertEqual(self.connection.health_incident, "disconnected")

    def test_unknown_aggregator_and_sandbox_are_refused(self):
        body = json.dumps(self.account_updated()).encode()
        signature = self.emulator.sign(body)
        response = self.url_open(
            f"{self.base_url()}/bank_sync/webhook/999999",
            data=body,
            headers={"BridgeApi-Signature": signature},
        )
        self.assertEqual(response.status_code, 404)
        other_company = self.setup_other_company()["company"]
        sandbox = self.env["bank.sync.provider"].create(
            {"name": "Sandbox", "kind": "sandbox", "company_id": other_company.id}
        )
        response = self.url_open(
            f"{self.base_url()}/bank_sync/webhook/{sandbox.id}",
            data=body,
            headers={"BridgeApi-Signature": signature},
        )
        self.assertEqual(response.status_code, 401)

    def linxo_aggregator(self):
        other_company = self.setup_other_company()["company"]
        return self.env["bank.sync.provider"].create(
            {
                "name": "Linxo",
                "kind": "linxo",
                "company_id": other_company.id,
                "client_id": "linxo-client",
                "client_secret": "linxo-secret",
            }
        )

    def linxo_event(self):
        return json.dumps(
            {
                "id": "evt-42",
                "event_type": "UPDATED",
                "resource_type": "CONNECTIONS",
                "resource": "/connections/c-1",
                "new_transactions": True,
                "creation_date": int(datetime.now(timezone.utc).timestamp()),
            }
        ).encode()

    def test_linxo_deliveries_must_know_the_url_token(self):
        # Linxo signs nothing: the address registered at Linxo carries a random token of the
        # settings' own, which signs nothing either.
        linxo = self.linxo_aggregator()
        self.env.flush_all()
        token = linxo.webhook_token
        self.assertGreaterEqual(len(token), 32)
        self.assertTrue(linxo.webhook_url.endswith(f"/bank_sync/webhook/{linxo.id}?token={token}"))
        url = f"{self.base_url()}/bank_sync/webhook/{linxo.id}"
        body = self.linxo_event()
        headers = {"Content-Type": "application/json"}
        self.assertEqual(self.url_open(url, data=body, headers=headers).status_code, 401)
        for guess in ("guess", "linxo-secret", token[:-1]):
            wrong = self.url_open(f"{url}?token={guess}", data=body, headers=headers)
            self.assertEqual(wrong.status_code, 401, guess)
        right = self.url_open(f"{url}?token={token}", data=body, headers=headers)
        self.assertEqual(right.status_code, 200)
        event = self.env["bank.sync.webhook.event"].search([("provider_id", "=", linxo.id)])
        self.assertEqual(
            (event.event_id, event.event_type, event.connection_remote_id),
            ("evt-42", "connection.new_transactions", "c-1"),
        )
        # A new token (after a leak) replaces the old one at once.
        linxo.action_new_webhook_token()
        self.env.flush_all()
        self.assertNotEqual(linxo.webhook_token, token)
        again = self.url_open(f"{url}?token={token}", data=body, headers=headers)
        self.assertEqual(again.status_code, 401)

    def test_a_non_ascii_linxo_token_is_a_clear_refusal(self):
        linxo = self.linxo_aggregator()
        self.env.flush_all()
        url = f"{self.base_url()}/bank_sync/webhook/{linxo.id}?token=caf%C3%A9-%E2%82%AC"
        response = self.url_open(url, data=self.linxo_event())
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"error": "invalid token"})

    def test_the_linxo_token_stays_out_of_the_access_log(self):
        linxo = self.linxo_aggregator()
        self.env.flush_all()
        token = linxo.webhook_token
        access_log = []
        handler = logging.Handler()
        handler.emit = lambda record: access_log.append(record.getMessage())
        werkzeug_logger = logging.getLogger("werkzeug")
        werkzeug_logger.addHandler(handler)
        try:
            response = self.url_open(
                f"{self.base_url()}/bank_sync/webhook/{linxo.id}?token={token}",
                data=self.linxo_event(),
            )
        finally:
            werkzeug_logger.removeHandler(handler)
        self.assertEqual(response.status_code, 200)
        logged = "\n".join(access_log)
        self.assertIn(f"/bank_sync/webhook/{linxo.id}?token=<hidden>", logged)
        self.assertNotIn(token, logged)

    def test_the_webhook_address_is_for_administrators_only(self):
        linxo = self.linxo_aggregator()
        manager = company_user(self.env, "webhook.manager", linxo.company_id)
        as_manager = linxo.with_user(manager)
        for field in ("webhook_url", "webhook_token"):
            with self.assertRaises(AccessError):
                as_manager.read([field])
        arch = as_manager.get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertNotIn('name="webhook_url"', arch)

    def test_aggregator_settings_made_before_the_token_get_one_of_their_own(self):
        linxo = self.linxo_aggregator()
        aggregators = linxo | self.aggregator
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE bank_sync_provider SET webhook_token = NULL WHERE id IN %s",
            [tuple(aggregators.ids)],
        )
        self.env.invalidate_all()
        # What upgrading the module runs.
        self.env["bank.sync.provider"].init()
        tokens = aggregators.mapped("webhook_token")
        self.assertTrue(all(tokens))
        self.assertEqual(len(set(tokens)), 2)

    # ------------------------------------------------------------------ hostile bodies

    def test_a_body_too_large_is_refused_before_it_is_read(self):
        verified = []
        original = bridgeapi.verify_signature

        def counting_verify(*args, **kwargs):
            verified.append(args)
            return original(*args, **kwargs)

        big = json.dumps({"type": "item.refreshed", "padding": "x" * 300_000}).encode()
        signature = self.emulator.sign(big)
        with patch.object(bridgeapi, "verify_signature", counting_verify):
            response = self.post_raw(big, signature)
            self.assertEqual(response.status_code, 413)
            # Without a length (chunked), the size cannot be known before reading: refused too.
            chunked = self.url_open(
                self.url,
                data=iter([big[:1000], big[1000:]]),
                headers={"BridgeApi-Signature": signature},
            )
            self.assertEqual(chunked.status_code, 411)
            self.assertFalse(verified, "the body was hashed before being refused")
            # An ordinary delivery still goes through.
            (delivery,) = self.emulator.send_webhook(self.account_updated())
        self.assertEqual(delivery.status, 200)
        self.assertEqual(len(verified), 1)
        self.assertEqual(len(self.events()), 1)

    def test_deeply_nested_json_is_a_clear_refusal(self):
        nested = b"[" * 1000 + b"]" * 1000
        body = b'{"type": "item.account.updated", "content": ' + nested + b"}"
        response = self.post_raw(body, self.emulator.sign(body))
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"error": "unreadable"})
        self.assertFalse(self.events())

    def test_an_unreadable_encryption_key_answers_a_generic_error(self):
        body = json.dumps(self.account_updated()).encode()
        signature = self.emulator.sign(body)
        for keys in ("", crypto.generate_key()):  # removed, or rotated away
            with self.subTest(keys=bool(keys)), encryption_keys(keys):
                response = self.post_raw(body, signature)
                self.assertEqual(response.status_code, 503)
                self.assertEqual(response.json(), {"error": "unavailable"})
                self.assertNotIn("bank_sync_encryption_keys", response.text)
        self.assertFalse(self.events())


@tagged("post_install", "-at_install")
class TestReconnectLink(BridgeCase):
    """The alert e-mail's button: log in, then the aggregator's page on the same item."""

    def test_managers_are_sent_to_bridge_connect_on_the_same_item(self):
        manager = company_user(self.env, "health.manager", self.company)
        self.assertIn(f"/bank_sync/reconnect/{self.connection.id}", self.connection.reconnect_url)
        self.authenticate(manager.login, manager.login)
        response = self.url_open(
            f"/bank_sync/reconnect/{self.connection.id}", allow_redirects=False
        )
        self.assertIn(response.status_code, (302, 303))
        location = response.headers["Location"]
        self.assertTrue(location.startswith(self.emulator.base_url), location)
        session_id = location.rstrip("/").rpartition("/")[2]
        self.assertEqual(self.emulator.sessions[session_id]["item_id"], self.item_id)

    def test_users_who_may_not_reconnect_are_told_so(self):
        accountant = company_user(
            self.env,
            "health.accountant",
            self.company,
            groups="account.group_account_invoice,base.group_user",
        )
        self.authenticate(accountant.login, accountant.login)
        response = self.url_open(
            f"/bank_sync/reconnect/{self.connection.id}", allow_redirects=False
        )
        self.assertEqual(response.status_code, 403)
        self.assertIn("cannot be reconnected", response.text)
        stranger = self.url_open("/bank_sync/reconnect/999999", allow_redirects=False)
        self.assertEqual(stranger.status_code, 404)


@tagged("post_install", "-at_install")
class TestRateLimitedDailyImport(BridgeCase):
    """The daily job under Bridge's published limits: spread, and a 429 backs off."""

    def test_accounts_beyond_a_users_minute_budget_wait_for_the_next_minute(self):
        Account = self.env["bank.sync.account"]
        accounts = Account.browse([self.account.id] * 1)
        batch, next_at = Account._rate_limited_batch(accounts, batch_size=20)
        self.assertEqual(batch, self.account)
        self.assertIsNone(next_at)
        # 25 accounts of one Bridge user: 60 requests a minute fit 19 of them (3 requests
        # each, plus the token); the rest start a minute later.
        many = Account.create(
            [
                {"connection_id": self.connection.id, "remote_id": f"rl-{n}", "name": f"RL {n}"}
                for n in range(25)
            ]
        )
        batch, next_at = Account._rate_limited_batch(many, batch_size=50)
        self.assertEqual(len(batch), 19)
        self.assertEqual(batch, many[:19], "in the order they were due")
        self.assertAlmostEqual((next_at - fields.Datetime.now()).total_seconds(), 60, delta=2)

    def test_a_429_backs_off_and_resumes_instead_of_failing(self):
        self.emulator.force_rate_limit(count=20, retry_after=0)
        self.addCleanup(self.emulator.clear_faults)
        cron = self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")
        with self.capture_triggers(cron.id) as triggers:
            self.env["bank.sync.account"]._cron_sync()
        run = self.account.run_ids[:1]
        self.assertEqual(run.error_type, "RateLimited")
        self.assertEqual(run.state, "partial", "continuing in the background, not failed")
        self.assertIn("resumes at", run.note)
        self.assertTrue(self.account.sync_requested)
        wait = (self.account.sync_not_before - fields.Datetime.now()).total_seconds()
        self.assertAlmostEqual(wait, 30, delta=3)
        self.assertTrue(any(t.call_at == self.account.sync_not_before for t in triggers.records))
        self.assertEqual(self.connection.state, "ok", "a rate limit is not a broken bank")
        self.assertFalse(self.connection.activity_ids)

        # Called again too early (another trigger), the account keeps waiting.
        self.env["bank.sync.account"]._cron_sync()
        self.assertEqual(len(self.account.run_ids), 1)

        # Once the aggregator lets us in again, the import resumes and completes.
        self.emulator.clear_faults()
        self.account.sync_not_before = fields.Datetime.now() - timedelta(seconds=1)
        self.env["bank.sync.account"]._cron_sync()
        self.assertEqual(self.account.run_ids[:1].state, "done", self.account.run_ids[:1].error)
        self.assertFalse(self.account.sync_requested)

    def test_sync_now_met_by_a_429_continues_later_instead_of_failing(self):
        self.emulator.force_rate_limit(count=20, retry_after=0)
        self.addCleanup(self.emulator.clear_faults)
        cron = self.env.ref("bank_sync_aggregator.ir_cron_bank_sync")
        with self.capture_triggers(cron.id) as triggers:
            action = self.account.action_sync_now()
        run = self.account.run_ids[:1]
        self.assertEqual(run.trigger, "manual")
        self.assertEqual(run.state, "partial", "the user has nothing to fix")
        self.assertIn("resumes at", run.note)
        params = action["params"]
        self.assertEqual(params["type"], "warning")
        self.assertIn("resumes at", params["message"])
        self.assertTrue(self.account.sync_requested)
        self.assertTrue(any(t.call_at == self.account.sync_not_before for t in triggers.records))
        self.assertEqual(self.connection.state, "ok")

        # When the aggregator lets us in again, the background job finishes the import.
        self.emulator.clear_faults()
        self.account.sync_not_before = fields.Datetime.now() - timedelta(seconds=1)
        self.env["bank.sync.account"]._cron_sync()
        self.assertEqual(self.account.run_ids[:1].state, "done", self.account.run_ids[:1].error)
        lines = self.env["account.bank.statement.line"].search_count(
            [("journal_id", "=", self.account.journal_id.id)]
        )
        self.assertEqual(lines, self.account.run_ids[:1].created_count)
        self.assertTrue(lines)

    def test_a_429_that_persists_waits_for_the_next_day_quietly(self):
        self.emulator.force_rate_limit(count=200, retry_after=0)
        self.addCleanup(self.emulator.clear_faults)
        for _attempt in range(6):
            self.account.sync_not_before = False
            self.account.sync_requested = True
            self.env["bank.sync.account"]._cron_sync()
        last = self.account.run_ids[:1]
        self.assertEqual(last.state, "partial")
        self.assertIn(
            "next daily import",
            last.note,
            [(r.id, r.state, r.error_type) for r in self.account.run_ids],
        )
        self.assertFalse(self.account.sync_requested)
        self.assertEqual(self.connection.state, "ok")
