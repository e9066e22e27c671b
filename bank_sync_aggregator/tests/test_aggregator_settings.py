from unittest.mock import patch

from psycopg2 import IntegrityError

from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.modules.neutralize import get_neutralization_queries
from odoo.tests import Form, new_test_user, tagged
from odoo.tools import mute_logger

from .common_bank_sync import MANAGER_GROUPS, BankSyncCommon, encryption_keys

#: Two valid Fernet keys (test only): the newest first, as in the configuration file.
NEW_KEY = "QYTYC4lG1LHLAaICEs8NxcFS8TByp1uVcKdlm3hu9Ow="
OLD_KEY = "ZoFwo8bZTu6bl0V-yAOGPo31lvOIlYeIf82wqqbawgk="


@tagged("post_install", "-at_install")
class TestAggregatorSettings(BankSyncCommon):
    """Choosing the aggregator, its exclusivity per company, and the secrets' protection."""

    def _with_keys(self, keys):
        return encryption_keys(keys)

    def _bridge(self):
        return self.company._bank_sync_set_aggregator_kind("bridgeapi")

    # -- choosing the aggregator -----------------------------------------------------------

    def test_settings_switch_and_aggregator_choice(self):
        settings = self.env["res.config.settings"].create({})
        self.assertTrue(settings.bank_sync_enabled)
        self.assertEqual(settings.bank_sync_provider_kind, "sandbox")
        settings.bank_sync_provider_kind = "linxo"
        settings.execute()
        aggregator = self.company._get_bank_sync_aggregator()
        self.assertEqual(aggregator.kind, "linxo")
        self.assertEqual(aggregator.name, "Linxo")
        self.assertFalse(self.aggregator.active, "the sandbox settings are kept, archived")
        # Switching back finds the same settings again.
        self.env["res.config.settings"].create({"bank_sync_provider_kind": "sandbox"}).execute()
        self.assertEqual(self.company._get_bank_sync_aggregator(), self.aggregator)

    def test_switching_aggregator_disconnects_and_keeps_connections(self):
        connection = self._connect_sandbox(self.aggregator)
        account = connection.account_ids[:1]
        account.journal_id = self.company_data["default_journal_bank"]
        settings = self.env["res.config.settings"].create({"bank_sync_provider_kind": "bridgeapi"})
        self.assertIn("disconnect the 1 bank connection", settings.bank_sync_switch_warning)
        settings.execute()
        self.assertEqual(connection.state, "disconnected")
        self.assertTrue(connection.exists())
        self.assertFalse(account.journal_id)
        self.assertIn("another aggregator", connection.message_ids[:1].body)
        # Revoked at the sandbox too.
        client = self.aggregator._get_client()
        self.assertNotIn(connection.remote_id, [c.remote_id for c in client.list_connections()])

    def test_settings_form_warns_before_switching(self):
        self._connect_sandbox(self.aggregator)
        with Form(self.env["res.config.settings"].sudo()) as settings:
            self.assertTrue(settings.bank_sync_enabled)
            self.assertFalse(settings.bank_sync_switch_warning)
            settings.bank_sync_provider_kind = "linxo"
            self.assertIn("Sandbox (demo)", settings.bank_sync_switch_warning)
            settings.bank_sync_provider_kind = "sandbox"
            self.assertFalse(settings.bank_sync_switch_warning)

    def test_one_active_aggregator_per_company(self):
        Aggregator = self.env["bank.sync.provider"]
        with self.assertRaisesRegex(ValidationError, "Only one aggregator can be active"):
            Aggregator.create({"kind": "linxo", "company_id": self.company.id})
        archived = Aggregator.create(
            {"kind": "linxo", "company_id": self.company.id, "active": False}
        )
        with self.assertRaisesRegex(ValidationError, "Only one aggregator can be active"):
            archived.active = True
        # The database refuses it too, whatever the code path.
        with self.assertRaises(IntegrityError), mute_logger("odoo.sql_db"), self.cr.savepoint():
            self.cr.execute(
                "UPDATE bank_sync_provider SET active = true WHERE id = %s", [archived.id]
            )
        # Another company has its own.
        other = self.setup_other_company()["company"]
        other_aggregator = Aggregator.create({"kind": "bridgeapi", "company_id": other.id})
        self.assertEqual(other._get_bank_sync_aggregator(), other_aggregator)

    def test_sandbox_client_options(self):
        client = self.aggregator._get_client()
        self.assertEqual(client.kind, "sandbox")
        uuid = self.env["ir.config_parameter"].sudo().get_param("database.uuid")
        self.assertEqual(client.config.user_ref, f"{uuid}-{self.company.id}")
        self.assertEqual(
            client.config.options["hosted_url"],
            self.company.get_base_url() + "/bank_sync/sandbox/connect",
        )
        self.assertEqual(client.config.options["seed"], self.company.id)
        self.assertNotIn("bank-sync-sandbox-demo-key", repr(client.config))

    # -- secrets ---------------------------------------------------------------------------

    def test_secret_without_key_is_a_clear_error(self):
        bridge = self._bridge()
        with (
            self._with_keys(""),
            patch.dict("os.environ", {"BANK_SYNC_ENCRYPTION_KEYS": ""}),
            self.assertRaisesRegex(UserError, "bank_sync_encryption_keys"),
        ):
            bridge.sudo().client_secret = "s3cr3t"
        self.assertFalse(bridge.sudo().client_secret_encrypted)

    def test_secrets_encrypted_write_only_and_rotated(self):
        bridge = self._bridge().sudo()
        with self._with_keys(OLD_KEY):
            bridge.write({"client_id": "app-id", "client_secret": "s3cr3t"})
        stored = bridge.client_secret_encrypted
        self.assertTrue(stored.startswith("bsb1:"))
        self.assertNotIn("s3cr3t", stored)
        bridge.invalidate_recordset()
        self.assertFalse(bridge.client_secret, "a secret is never read back")
        self.assertTrue(bridge.has_client_secret)
        with self._with_keys(f"{NEW_KEY},{OLD_KEY}"):
            credentials = bridge._get_credentials()
        self.assertEqual(credentials, {"client_id": "app-id", "client_secret": "s3cr3t"})
        with self._with_keys(NEW_KEY), self.assertRaisesRegex(UserError, "cannot be decrypted"):
            bridge._get_credentials()
        # An empty value leaves the secret unchanged; the explicit action forgets it.
        with self._with_keys(NEW_KEY):
            bridge.write({"client_secret": False})
        self.assertEqual(bridge.client_secret_encrypted, stored)
        bridge.action_clear_secrets()
        self.assertFalse(bridge.client_secret_encrypted)

    def test_sandbox_takes_no_secret(self):
        with self._with_keys(NEW_KEY), self.assertRaisesRegex(UserError, "needs no secret"):
            self.aggregator.sudo().client_secret = "s3cr3t"

    def test_secrets_hidden_from_accounting_managers(self):
        bridge = self._bridge()
        with self._with_keys(NEW_KEY):
            bridge.sudo().client_secret = "s3cr3t"
        manager = new_test_user(
            self.env,
            login="acc_manager_only",
            groups=MANAGER_GROUPS,
            company_id=self.company.id,
        )
        as_manager = bridge.with_user(manager)
        self.assertEqual(as_manager.kind, "bridgeapi")
        for field in ("client_secret_encrypted", "client_secret"):
            with self.assertRaises(AccessError):
                as_manager.read([field])
        # Not even through the form's field list.
        self.assertNotIn("client_secret", as_manager.fields_get())

    # -- neutralisation --------------------------------------------------------------------

    def test_neutralize_blanks_secrets_and_switches_to_sandbox(self):
        bridge = self._bridge().sudo()
        with self._with_keys(NEW_KEY):
            bridge.write(
                {
                    "client_id": "app-id",
                    "client_secret": "s3cr3t",
                    "webhook_secrets": "whsec",
                    "base_url": "https://api.bridgeapi.io",
                }
            )
        Connection = self.env["bank.sync.connection"]
        real = Connection.create(
            {"provider_id": bridge.id, "company_id": self.company.id, "remote_id": "item-1"}
        )
        demo = Connection.create(
            {"provider_id": self.aggregator.id, "company_id": self.company.id, "remote_id": "sbx-1"}
        )
        self.env.flush_all()
        queries = list(get_neutralization_queries(["bank_sync_aggregator"]))
        self.assertEqual(len(queries), 1)
        self.cr.execute(queries[0])
        self.env.invalidate_all()
        aggregators = (
            self.env["bank.sync.provider"]
            .sudo()
            .with_context(active_test=False)
            .search([("company_id", "=", self.company.id)])
        )
        self.assertEqual(set(aggregators.mapped("kind")), {"sandbox"})
        for field in ("client_id", "client_secret_encrypted", "webhook_secrets_encrypted"):
            self.assertFalse(any(aggregators.mapped(field)), field)
        self.assertFalse(bridge.base_url)
        self.assertEqual(real.state, "disconnected")
        self.assertEqual(demo.state, "ok", "sandbox connections keep working")
        self.assertFalse(self.env["bank.sync.token"].sudo().search_count([]))
