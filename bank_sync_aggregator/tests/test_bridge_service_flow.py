"""The ``bridge_service`` aggregator kind end to end, through a REAL service process.

The bridge service runs as its own process (``python3 -m bank_sync_bridge.service`` on
127.0.0.1, a free port, a temporary SQLite file), its tenant registered through its command
line; the operator's aggregator contract is the Bridge emulator (a real HTTP server on
127.0.0.1) whose signed webhooks arrive at the service. This Odoo is the tenant: connect
through the Bridge Connect page the service hands back, callback, accounts, sync (exactly
once), reconnect, the service's events (polled and pushed) triggering a sync, delete.
"""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from unittest.mock import patch
from urllib.parse import urlsplit

import requests

from odoo import Command, fields
from odoo.addons.account.tests.common import AccountTestInvoicingCommon
from odoo.addons.base.tests.test_ir_cron import CronMixinCase
from odoo.exceptions import AccessError, UserError
from odoo.tests import HttpCase, freeze_time, new_test_user, tagged

import bank_sync_bridge
from bank_sync_bridge import signing
from bank_sync_bridge.errors import NotFound
from bank_sync_bridge.model import WebhookEvent
from bank_sync_bridge.providers.bridge_service import to_wire
from bank_sync_bridge.sync import sync_key
from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator

from .common_bank_sync import (
    MANAGER_GROUPS,
    LocalEmulatorsMixin,
    company_user,
    connection_of,
    encryption_keys,
    parse_form,
)

WEBHOOK_SECRET = "bridge-webhook-secret-of-the-operator"
WEBHOOK_CRON = "bank_sync_aggregator.ir_cron_process_webhook_events"
SYNC_CRON = "bank_sync_aggregator.ir_cron_bank_sync"
REPOSITORY = Path(bank_sync_bridge.__file__).resolve().parents[1]


class ServiceProcess:
    """A bridge service process on 127.0.0.1 with its own SQLite store and key file."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.sqlite_path = self.directory / "service.sqlite3"
        self.database_url = f"sqlite:///{self.sqlite_path}"
        self.log_path = self.directory / "service.log"
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith("BANK_SYNC_")
        }
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])
        )
        self.command = [
            sys.executable,
            "-m",
            "bank_sync_bridge.service",
            "--database-url",
            self.database_url,
        ]
        self.process = None
        self.url = None

    def cli(self, *args, stdin=None):
        """Run one administration command of the service; its standard output."""
        done = subprocess.run(
            [*self.command, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.directory,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"service {args[:2]} failed: {done.stderr}")
        return done.stdout

    def start(self):
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bank_sync_bridge.service",
                    "--database-url",
                    self.database_url,
                    "--log-level",
                    "INFO",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    # A test run makes many calls quickly: the operator's limit is not under test.
                    "--rate",
                    "1000",
                    "--burst",
                    "1000",
                    # This Odoo listens on 127.0.0.1 over plain http: a callback the service
                    # refuses outside its test mode.
                    "--test-mode",
                ],
                cwd=self.directory,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            for line in self.log_path.read_text().splitlines():
                if '"url"' in line:
                    self.url = json.loads(line)["url"]
                    return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the service did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self):
        return self.log_path.read_text()


@tagged("post_install", "-at_install")
class TestBridgeServiceFlow(
    LocalEmulatorsMixin, AccountTestInvoicingCommon, HttpCase, CronMixinCase
):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.startClassPatcher(encryption_keys())
        directory = tempfile.mkdtemp(prefix="bank_sync_service_")
        cls.addClassCleanup(shutil.rmtree, directory, ignore_errors=True)
        cls.emulator = BridgeEmulator(seed=5).start()
        cls.addClassCleanup(cls.emulator.stop)

        # The operator: one tenant for this database, the Bridge contract, the service up.
        cls.service = ServiceProcess(directory)
        added = cls.service.cli("tenant", "add", "Odoo tests")
        cls.tenant_id = re.search(r"client_id:\s+(\S+)", added).group(1)
        cls.tenant_secret = re.search(r"client_secret:\s+(\S+)", added).group(1)
        cls.service.cli(
            "aggregator",
            "set",
            "--kind",
            "bridgeapi",
            "--base-url",
            cls.emulator.base_url,
            "--credentials-stdin",
            "--webhook-secret",
            WEBHOOK_SECRET,
            stdin=json.dumps(cls.emulator.credentials),
        )
        cls.service.start()
        cls.addClassCleanup(cls.service.stop)
        cls.emulator.register_webhook(f"{cls.service.url}/webhooks/bridgeapi", [WEBHOOK_SECRET])

        # The Odoo administrator: the settings the operator handed over.
        cls.env.ref("base.EUR").active = True
        cls.company = cls.company_data["company"]
        cls.company.country_id = cls.env.ref("base.fr")
        cls.company.bank_sync_enabled = True
        cls.aggregator = cls.company._bank_sync_set_aggregator_kind("bridge_service")
        cls.aggregator.write(
            {
                "base_url": cls.service.url,
                "client_id": cls.tenant_id,
                "service_secret": cls.tenant_secret,
            }
        )

    def setUp(self):
        super().setUp()
        self.authenticate("accountman", "accountman")
        self.emulator.outbox.clear()

    # ------------------------------------------------------------------ helpers

    def through_connect_page(self, url, login="success"):
        """Fill Bridge's Connect page like the browser, then follow the redirect to Odoo's
        callback; returns the callback's answer."""
        self.assertTrue(url.startswith(self.emulator.base_url), url)
        page = requests.get(url, timeout=10)
        self.assertEqual(page.status_code, 200)
        self.assertIn("<form", page.text)
        submitted = requests.post(
            url,
            data={"login": login, "password": "demo", "action": "connect", "provider_id": "574"},
            allow_redirects=False,
            timeout=10,
        )
        self.assertEqual(submitted.status_code, 303, submitted.text[:300])
        callback = submitted.headers["Location"]
        self.assertTrue(
            callback.startswith(self.aggregator._get_callback_url()),
            "Bridge sends the user back to this Odoo, not to the service",
        )
        return self.url_open(callback, allow_redirects=False)

    def connect(self):
        wizard = self.env["bank.sync.connect.wizard"].create({})
        wizard.write({"accept_terms": True, "allow_transfer": True})
        wizard.action_next()
        # The banks are the operator's aggregator's, listed through the service.
        line = wizard.line_ids.filtered(lambda line: line.remote_id == "574")
        self.assertEqual(len(line), 1, wizard.line_ids.mapped("name"))
        response = self.through_connect_page(line.action_choose()["url"])
        self.assertEqual(response.status_code, 303, response.text[:500])
        return connection_of(self.env, response.headers["Location"])

    def link_checking(self, connection):
        account = connection.account_ids.filtered(lambda a: a.account_type == "checking")[:1]
        self.assertTrue(account, connection.account_ids.mapped("account_type"))
        account.currency_id.active = True
        journal = self.env["account.journal"].create(
            {
                "name": "Bank via the bridge service",
                "code": "BSVC",
                "type": "bank",
                "company_id": self.company.id,
                "currency_id": account.currency_id.id,
            }
        )
        account.write(
            {
                "journal_id": journal.id,
                "history_start_date": fields.Date.today() - timedelta(days=365),
            }
        )
        return account

    def lines(self, account):
        return self.env["account.bank.statement.line"].search(
            [("bank_sync_account_id", "=", account.id)]
        )

    def booked_at_bank(self, account):
        """The sync keys of what Bridge holds as booked for ``account`` in the window."""
        start = account.history_start_date
        return {
            sync_key("bridge_service", account.remote_id, str(tx.id))
            for tx in self.emulator.transactions(int(account.remote_id), include_deleted=False)
            if not tx.future and tx.date >= start
        }

    def wait_for_callbacks(self, timeout=20):
        """Wait until the service has posted every event due to this Odoo (answered 2xx).

        Read from the service's own store: the test must not use its database cursor while
        this Odoo's HTTP thread handles the service's request on the same test cursor.
        """
        deadline = time.monotonic() + timeout
        states = {}
        while time.monotonic() < deadline:
            with closing(sqlite3.connect(self.service.sqlite_path, timeout=5)) as db:
                states = dict(
                    db.execute(
                        "SELECT delivery_state, count(*) FROM events GROUP BY delivery_state"
                    ).fetchall()
                )
            if states.get("delivered") and not states.get("pending"):
                return states
            time.sleep(0.2)
        raise AssertionError(f"the service did not deliver: {states} {self.service.log()[-1500:]}")

    # ------------------------------------------------------------------ tests

    def test_settings_test_connection_and_secret_kept_encrypted(self):
        action = self.aggregator.action_bridge_service_test()
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn("accepts this database's credentials", action["params"]["message"])
        stored = self.aggregator.sudo().service_secret_encrypted
        self.assertTrue(stored)
        self.assertNotIn(self.tenant_secret, stored)
        # Write-only: nobody reads the secret back, and the service never logs it.
        self.assertFalse(self.aggregator.sudo().service_secret)
        self.assertNotIn(self.tenant_secret, self.service.log())
        # An accounting manager who is not an administrator tests the connection without
        # being able to read the secret in any form.
        manager = new_test_user(
            self.env,
            login="bank_manager_not_admin",
            groups=MANAGER_GROUPS,
            company_id=self.company.id,
            company_ids=self.company.ids,
        )
        as_manager = self.aggregator.with_user(manager)
        for field in ("service_secret", "service_secret_encrypted"):
            with self.assertRaises(AccessError):
                as_manager.read([field])
        self.assertEqual(as_manager.action_bridge_service_test()["params"]["type"], "success")
        # The client is built with the company as the aggregator user.
        client = self.aggregator._get_client()
        self.assertEqual(client.config.user_ref, self.aggregator._get_user_ref())

    def test_wrong_tenant_secret_is_a_clear_error(self):
        self.aggregator.service_secret = "not-the-tenant-secret"
        with self.assertRaisesRegex(UserError, r"refused this database's credentials \(HTTP 401\)"):
            self.aggregator.action_bridge_service_test()
        # In the user's language.
        self.env["res.lang"]._activate_lang("fr_FR")
        with self.assertRaisesRegex(UserError, r"a refusé les identifiants de cette base"):
            self.aggregator.with_context(lang="fr_FR").action_bridge_service_test()
        # Every flow says the same in words, never a traceback.
        wizard = self.env["bank.sync.connect.wizard"].create({})
        wizard.write({"accept_terms": True, "allow_transfer": True})
        with self.assertRaisesRegex(UserError, "Bridge service could not complete the request"):
            wizard.action_next()
        # The event poll of a company with a wrong secret fails quietly (logged), moving nothing.
        self.assertFalse(self.env["bank.sync.provider"]._cron_poll_bridge_service())
        self.assertEqual(self.aggregator.bridge_service_last_event_id, 0)
        self.assertFalse(self.aggregator.bridge_service_last_poll)
        # A missing secret: clear as well.
        self.aggregator.sudo().service_secret_encrypted = False
        with self.assertRaisesRegex(UserError, "missing: the bridge service secret"):
            self.aggregator.action_bridge_service_test()
        self.assertNotIn("not-the-tenant-secret", self.service.log())

    def test_unreachable_service_is_a_clear_error(self):
        # The client's retries back off without waiting in this test.
        original = type(self.aggregator)._get_client
        self.patch(
            type(self.aggregator),
            "_get_client",
            lambda rec, **kwargs: original(rec, **dict(kwargs, sleep=lambda _seconds: None)),
        )
        with socket_closed_port() as port:
            self.aggregator.base_url = f"http://127.0.0.1:{port}"
            with self.assertRaisesRegex(UserError, "does not answer"):
                self.aggregator.action_bridge_service_test()

    def test_full_flow_through_the_service(self):
        # -- connect: Bridge's page (handed back by the service), callback into this Odoo.
        connection = self.connect()
        self.assertEqual(connection.provider_id, self.aggregator)
        self.assertEqual(connection.state, "ok")
        self.assertEqual(connection.institution_id, "574")
        item_id = int(connection.remote_id)
        self.assertEqual(
            sorted(connection.account_ids.mapped("remote_id")),
            sorted(str(a.id) for a in self.emulator.accounts(item_id)),
        )
        # One Bridge user per tenant company, named by the service after tenant and company.
        self.assertTrue(self.emulator.user(f"{self.tenant_id}.{self.aggregator._get_user_ref()}"))

        # -- link an account to a journal and synchronise: exactly Bridge's booked operations.
        account = self.link_checking(connection)
        run = account._sync_account("manual")
        self.assertEqual(run.state, "done", run.error)
        expected = self.booked_at_bank(account)
        self.assertTrue(expected, "the demo account has operations to import")
        booked = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")
        self.assertEqual(set(booked.mapped("bank_sync_key")), expected)
        self.assertEqual(len(booked), len(expected))
        # A second run imports nothing again.
        all_lines = self.lines(account)
        again = account._sync_account("manual")
        self.assertEqual(again.state, "done", again.error)
        self.assertEqual(again.created_count, 0)
        self.assertEqual(self.lines(account), all_lines)

        # -- reconnect on the same connection: same record, journal still linked.
        response = self.through_connect_page(connection.action_reconnect()["url"])
        self.assertEqual(response.status_code, 303, response.text[:500])
        self.assertEqual(
            self.env["bank.sync.connection"].search([("provider_id", "=", self.aggregator.id)]),
            connection,
        )
        self.assertEqual(account.journal_id.code, "BSVC")
        self.assertIn("renewed", " ".join(connection.message_ids.mapped("body")))

        # -- the service's events trigger a sync: a new operation at the bank, Bridge's
        # webhooks reach the service, this Odoo polls them and the background jobs import it.
        new_tx = self.emulator.add_transaction(int(account.remote_id), "-42.50", "BOULANGERIE")
        self.emulator.refresh_item(item_id)
        deliveries = self.emulator.deliver_webhooks()
        self.assertTrue(deliveries)
        self.assertEqual({d.status for d in deliveries}, {202})
        Event = self.env["bank.sync.webhook.event"]
        # Another company of this database on the same tenant reads the same event stream
        # but records none of this company's events.
        other = self.env["res.company"].create({"name": "Other company on the service"})
        other.bank_sync_enabled = True
        other_aggregator = other.sudo()._bank_sync_set_aggregator_kind("bridge_service")
        other_aggregator.write(
            {
                "base_url": self.service.url,
                "client_id": self.tenant_id,
                "service_secret": self.tenant_secret,
            }
        )
        with self.capture_triggers(WEBHOOK_CRON) as woken:
            new_events = self.env["bank.sync.provider"]._cron_poll_bridge_service()
        self.assertTrue(new_events)
        self.assertEqual(new_events.provider_id, self.aggregator)
        self.assertEqual(
            other_aggregator.bridge_service_last_event_id,
            self.aggregator.bridge_service_last_event_id,
        )
        self.assertFalse(Event.search([("provider_id", "=", other_aggregator.id)]))
        self.assertEqual(
            set(new_events.mapped("connection_remote_id")) - {False}, {connection.remote_id}
        )
        self.assertEqual(len(woken.records), 1, "the event job is woken at once")
        self.assertGreater(self.aggregator.bridge_service_last_event_id, 0)
        # Polling again reads nothing new (the last event id is stored).
        self.assertFalse(self.env["bank.sync.provider"]._cron_poll_bridge_service())
        with self.capture_triggers(SYNC_CRON) as sync_woken:
            Event._cron_process_webhook_events()
        self.assertTrue(sync_woken.records)
        self.assertTrue(account.sync_requested)
        self.env["bank.sync.account"]._cron_sync()
        new_key = sync_key("bridge_service", account.remote_id, str(new_tx.id))
        new_line = self.lines(account).filtered(lambda line: line.bank_sync_key == new_key)
        self.assertEqual(len(new_line), 1)
        self.assertAlmostEqual(new_line.amount, -42.5)
        self.assertFalse(account.sync_requested)

        # -- the service can also push the events at once, signed with the tenant secret.
        self.aggregator.action_bridge_service_register_callback()
        self.addCleanup(self.aggregator.action_bridge_service_remove_callback)
        pushed_tx = self.emulator.add_transaction(int(account.remote_id), "-7.10", "PRESSE")
        # From the delivery on, this thread keeps off the database until the service's post
        # to this Odoo is answered (both would share the test cursor).
        with self.capture_triggers(WEBHOOK_CRON) as woken:
            self.emulator.deliver_webhooks()
            self.wait_for_callbacks()
        pushed = Event.search(
            [
                ("provider_id", "=", self.aggregator.id),
                ("account_remote_ids", "=", account.remote_id),
                ("state", "=", "pending"),
            ]
        )
        self.assertTrue(pushed, "the pushed event is recorded, to be handled in the background")
        self.assertTrue(woken.records)
        Event._cron_process_webhook_events()
        self.env["bank.sync.account"]._cron_sync()
        self.assertEqual(
            len(
                self.lines(account).filtered(
                    lambda line: (
                        line.bank_sync_key
                        == sync_key("bridge_service", account.remote_id, str(pushed_tx.id))
                    )
                )
            ),
            1,
        )

        # -- delete: revoked at the service (and Bridge), kept here with its history.
        connection.action_disconnect()
        self.assertEqual(connection.state, "disconnected")
        self.assertFalse(account.journal_id)
        with self.assertRaises(NotFound):
            self.aggregator._get_client().get_connection(str(item_id))
        with self.assertRaises(KeyError):
            self.emulator.item(item_id)  # the service revoked it at Bridge too
        self.assertTrue(self.lines(account), "imported operations are kept")

    def test_sandbox_behind_a_service_hosted_page_served_by_the_service(self):
        # A second operator running the service with its defaults: the built-in sandbox,
        # whose hosted page the service itself serves.
        directory = tempfile.mkdtemp(prefix="bank_sync_service_sandbox_")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        sandbox_service = ServiceProcess(directory)
        added = sandbox_service.cli("tenant", "add", "Odoo tests (sandbox)")
        sandbox_service.start()
        self.addCleanup(sandbox_service.stop)
        self.aggregator.write(
            {
                "base_url": sandbox_service.url,
                "client_id": re.search(r"client_id:\s+(\S+)", added).group(1),
                "service_secret": re.search(r"client_secret:\s+(\S+)", added).group(1),
            }
        )
        wizard = self.env["bank.sync.connect.wizard"].create({})
        wizard.write({"accept_terms": True, "allow_transfer": True})
        wizard.action_next()
        line = wizard.line_ids.filtered(lambda line: line.name == "BNP Paribas")
        url = line.action_choose()["url"]
        self.assertTrue(url.startswith(f"{sandbox_service.url}/sandbox/connect"), url)
        page = requests.get(url, timeout=10)
        self.assertEqual(page.status_code, 200)
        form_action, form, _selects = parse_form(page.text)
        form.update(login="success", password="secret", action="connect")
        submitted = requests.post(
            urlsplit(url)._replace(path=form_action or urlsplit(url).path, query="").geturl(),
            data=form,
            allow_redirects=False,
            timeout=10,
        )
        self.assertEqual(submitted.status_code, 303, submitted.text[:300])
        response = self.url_open(submitted.headers["Location"], allow_redirects=False)
        self.assertEqual(response.status_code, 303, response.text[:500])
        connection = connection_of(self.env, response.headers["Location"])
        self.assertEqual(connection.institution_name, "BNP Paribas")
        self.assertEqual(
            sorted(connection.account_ids.mapped("account_type")),
            ["card", "checking", "loan", "savings"],
        )
        account = self.link_checking(connection)
        run = account._sync_account("manual")
        self.assertEqual(run.state, "done", run.error)
        remote = {
            sync_key("bridge_service", account.remote_id, tx.remote_id)
            for page in self.aggregator._get_client().iter_transactions(
                account.remote_id, date_from=account.history_start_date
            )
            for tx in page.transactions
            if not tx.is_pending and not tx.deleted
        }
        booked = self.lines(account).filtered(lambda line: line.bank_sync_status == "booked")
        self.assertTrue(remote)
        self.assertEqual(set(booked.mapped("bank_sync_key")), remote)
        self.assertEqual(len(booked), len(remote))
        self.assertEqual(account._sync_account("manual").created_count, 0)

    def test_pushed_events_must_be_signed_for_this_url(self):
        url = self.aggregator._get_bridge_service_callback_url()
        path = urlsplit(url).path
        body = json.dumps({"events": []}).encode()
        headers = {"Content-Type": "application/json"}
        unsigned = self.url_open(url, data=body, headers=headers)
        self.assertEqual(unsigned.status_code, 401)
        wrong = signing.sign_request("not-the-secret", "POST", path, body)
        self.assertEqual(
            self.url_open(url, data=body, headers={**headers, **wrong}).status_code, 401
        )
        # Genuine signature, but for another URL (e.g. another company's): refused too.
        elsewhere = signing.sign_request(self.tenant_secret, "POST", path + "0", body)
        answer = self.url_open(url, data=body, headers={**headers, **elsewhere})
        self.assertEqual(answer.status_code, 401)
        good = signing.sign_request(self.tenant_secret, "POST", path, body)
        answer = self.url_open(url, data=body, headers={**headers, **good})
        self.assertEqual(answer.status_code, 200, answer.text)
        self.assertEqual(answer.json(), {"received": 0, "new": 0})


class socket_closed_port:
    """A local port nobody listens on (bound then released)."""

    def __enter__(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc_info):
        return False


@tagged("post_install", "-at_install")
class TestBridgeServicePushes(LocalEmulatorsMixin, AccountTestInvoicingCommon, HttpCase):
    """What this Odoo accepts from a bridge service, without running one: two companies of
    the database on one tenant, deliveries signed here as the service signs them. The
    service's address is the Bridge emulator, whose request log shows whether anything was
    asked of it."""

    TENANT_SECRET = "tenant-secret-of-this-database"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.startClassPatcher(encryption_keys())
        cls.emulator = BridgeEmulator().start()
        cls.addClassCleanup(cls.emulator.stop)
        cls.company = cls.company_data["company"]
        cls.other_company = cls.setup_other_company()["company"]
        cls.aggregators = cls.env["bank.sync.provider"]
        for company in cls.company | cls.other_company:
            company.bank_sync_enabled = True
            cls.aggregators |= cls.env["bank.sync.provider"].create(
                {
                    "kind": "bridge_service",
                    "company_id": company.id,
                    "base_url": cls.emulator.base_url,
                    "client_id": "tenant-1",
                    "service_secret": cls.TENANT_SECRET,
                }
            )
        cls.aggregator, cls.other_aggregator = cls.aggregators

    def push(self, body, headers=None, aggregator=None):
        """Post ``body`` to the events address, signed as the service signs it."""
        url = (aggregator or self.aggregator)._get_bridge_service_callback_url()
        signed = signing.sign_request(self.TENANT_SECRET, "POST", urlsplit(url).path, body)
        headers = {"Content-Type": "application/json", **signed, **(headers or {})}
        return self.url_open(url, data=body, headers=headers), headers

    def document(self, *companies):
        """A delivery of one new event per company reference (None: the event names none)."""
        events = []
        for company in companies:
            self.event_number = getattr(self, "event_number", 0) + 1
            event = WebhookEvent(event_id=f"evt-{self.event_number}", type="item.refreshed")
            events.append(dict(to_wire(event), id=self.event_number, company=company))
        return json.dumps({"events": events}).encode()

    def recorded(self, aggregator):
        return self.env["bank.sync.webhook.event"].search([("provider_id", "=", aggregator.id)])

    def test_a_replayed_delivery_is_refused(self):
        body = self.document(self.aggregator._get_user_ref())
        first, headers = self.push(body)
        self.assertEqual(first.status_code, 200, first.text)
        url = self.aggregator._get_bridge_service_callback_url()
        # The same signed request again, within the signature's five minutes.
        replay = self.url_open(url, data=body, headers=headers)
        self.assertEqual(replay.status_code, 401)
        self.assertEqual(replay.json(), {"error": "replayed"})
        self.assertEqual(len(self.recorded(self.aggregator)), 1)
        # A new delivery (new nonce) of the same document is accepted; its event is known.
        again, _headers = self.push(body)
        self.assertEqual(again.json(), {"received": 1, "new": 0})
        # Nonces are forgotten once their signature could no longer pass.
        Nonce = self.env["bank.sync.request.nonce"]
        self.assertEqual(Nonce.search_count([]), 2)
        with freeze_time(fields.Datetime.now() + timedelta(minutes=6)):
            Nonce._gc_expired()
        self.assertFalse(Nonce.search_count([]))

    def test_events_go_only_to_the_company_they_name(self):
        mine, theirs = (p._get_user_ref() for p in self.aggregators)
        answer, _headers = self.push(self.document(mine, theirs, None))
        self.assertEqual(answer.status_code, 200, answer.text)
        self.assertEqual(self.recorded(self.aggregator).mapped("event_id"), ["evt-1"])
        self.assertEqual(self.recorded(self.other_aggregator).mapped("event_id"), ["evt-2"])
        # With one company left on the tenant, an event naming none is that company's.
        self.other_aggregator.active = False
        answer, _headers = self.push(self.document(None))
        self.assertEqual(answer.json(), {"received": 1, "new": 1})
        self.assertEqual(len(self.recorded(self.aggregator)), 2)
        self.assertEqual(len(self.recorded(self.other_aggregator)), 1)

    def test_a_body_too_large_is_refused_before_it_is_verified(self):
        verified = []
        original = signing.verify_request

        def counting_verify(*args, **kwargs):
            verified.append(args)
            return original(*args, **kwargs)

        big = json.dumps({"events": [], "padding": "x" * 300_000}).encode()
        with patch.object(signing, "verify_request", counting_verify):
            response, headers = self.push(big)
            self.assertEqual(response.status_code, 413)
            url = self.aggregator._get_bridge_service_callback_url()
            chunked = self.url_open(url, data=iter([big[:10], big[10:]]), headers=headers)
            self.assertEqual(chunked.status_code, 411)
            self.assertFalse(verified)
            ordinary, _headers = self.push(self.document())
        self.assertEqual(ordinary.status_code, 200)
        self.assertEqual(len(verified), 1)

    def test_deeply_nested_json_is_a_clear_refusal(self):
        body = b'{"events": [' + b"[" * 1000 + b"]" * 1000 + b"]}"
        response, _headers = self.push(body)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"error": "unreadable"})

    def test_the_callback_checks_the_state_before_asking_the_aggregator(self):
        manager = company_user(
            self.env, "service.manager", self.company, password="service.manager"
        )
        self.authenticate(manager.login, manager.login)
        callback = self.aggregator._get_callback_url()
        requests_before = len(self.emulator.requests)
        forged = self.url_open(f"{callback}?state=forged&item_id=1", allow_redirects=False)
        self.assertEqual(forged.status_code, 400)
        self.assertIn("not valid", forged.text)
        # A genuine state of a user who is no longer an accounting manager: refused as well.
        Session = self.env["bank.sync.connect.session"].with_user(manager)
        state = Session._make_state(self.aggregator.with_user(manager))
        self.env["bank.sync.connect.session"].sudo().create(
            {
                "nonce": Session._read_state(state)["nonce"],
                "provider_id": self.aggregator.id,
                "company_id": self.company.id,
                "user_id": manager.id,
                "expires_at": fields.Datetime.now() + timedelta(minutes=30),
            }
        )
        manager.groups_id = [Command.unlink(self.env.ref("account.group_account_manager").id)]
        self.env.flush_all()
        demoted = self.url_open(f"{callback}?state={state}&item_id=1", allow_redirects=False)
        self.assertEqual(demoted.status_code, 400)
        self.assertIn("not allowed", demoted.text)
        self.assertEqual(len(self.emulator.requests), requests_before, "nothing reached it")
        self.env.invalidate_all()
        session = (
            self.env["bank.sync.connect.session"].sudo().search([("user_id", "=", manager.id)])
        )
        self.assertTrue(session.used_at, "a state is used once, even when refused")
        self.assertFalse(self.env["bank.sync.connection"].search([]))
