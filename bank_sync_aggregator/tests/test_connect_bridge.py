from odoo.tests import HttpCase, tagged

from bank_sync_bridge.testing.bridge_data import DEMO_BANK_ID
from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator

from .common_bank_sync import BankSyncCommon, encryption_keys, parse_form

KEY = "QYTYC4lG1LHLAaICEs8NxcFS8TByp1uVcKdlm3hu9Ow="


@tagged("post_install", "-at_install")
class TestConnectBridge(BankSyncCommon, HttpCase):
    """The same flow against the Bridge emulator, a real HTTP server speaking Bridge v3: the
    hosted page is Bridge Connect's, our signed state travels as Bridge's ``context``."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emulator = BridgeEmulator().start()
        cls.addClassCleanup(cls.emulator.stop)

    def setUp(self):
        super().setUp()
        keys = encryption_keys(KEY)
        keys.start()
        self.addCleanup(keys.stop)
        self.bridge = self.company._bank_sync_set_aggregator_kind("bridgeapi")
        self.bridge.sudo().write(
            {
                "base_url": self.emulator.base_url,
                "client_id": self.emulator.client_id,
                "client_secret": self.emulator.client_secret,
            }
        )
        self.authenticate("accountman", "accountman")

    def _connect(self, login):
        wizard = self.env["bank.sync.connect.wizard"].create(
            {"accept_terms": True, "allow_transfer": True}
        )
        wizard.action_next()
        line = wizard.line_ids.filtered(lambda line: line.remote_id == str(DEMO_BANK_ID))
        url = line.action_choose()["url"]
        self.assertTrue(url.startswith(self.emulator.base_url + "/connect/session/"))
        page = self.url_open(url)
        self.assertEqual(page.status_code, 200)
        _action, form, _selects = parse_form(page.text)
        form.update(login=login, password="demo", action="connect")
        submitted = self.url_open(url, data=form, allow_redirects=False)
        self.assertEqual(submitted.status_code, 303, submitted.text[:300])
        callback = submitted.headers["Location"]
        self.assertTrue(callback.startswith(self.bridge._get_callback_url()))
        return self.url_open(callback, allow_redirects=False)

    def test_bridge_connect_flow(self):
        response = self._connect("success")
        self.assertEqual(response.status_code, 303, response.text[:500])
        connection = self.env["bank.sync.connection"].search([("provider_id", "=", self.bridge.id)])
        self.assertEqual(len(connection), 1)
        item = self.emulator.item(int(connection.remote_id))
        self.assertEqual(connection.state, "ok")
        self.assertEqual(connection.institution_id, str(DEMO_BANK_ID))
        remote_accounts = self.emulator.accounts(item.id)
        self.assertEqual(
            sorted(connection.account_ids.mapped("remote_id")),
            sorted(str(account.id) for account in remote_accounts),
        )
        # The company is one Bridge user, identified by our stable reference.
        user = self.emulator.user(self.bridge._get_user_ref())
        self.assertEqual(item.user_uuid, user.uuid)
        # Its tokens are cached encrypted, never in clear.
        tokens = self.env["bank.sync.token"].sudo().search([("provider_id", "=", self.bridge.id)])
        self.assertTrue(tokens)
        self.assertTrue(all(t.value_encrypted.startswith("bsb1:") for t in tokens))

        # Deleting the connection revokes the item at Bridge.
        connection.action_disconnect()
        with self.assertRaises(KeyError):
            self.emulator.item(item.id)

    def test_bridge_strong_authentication_pending(self):
        response = self._connect("1010")
        self.assertEqual(response.status_code, 200)
        self.assertIn("was not completed", response.text)
        connection = self.env["bank.sync.connection"].search([("provider_id", "=", self.bridge.id)])
        self.assertEqual(connection.state, "action_needed")
        self.assertEqual(connection.reason, "sca")
