"""What any logged-in user can call over RPC, and what it may do.

Any public method of a model (no leading underscore, not ``@api.private``) can be called over
``/web/dataset/call_kw`` by any logged-in user, portal users included, on any ids: a button
hidden with ``groups=`` protects nothing. These tests walk the addon's whole RPC surface, found
by introspection, and call every method the way the web client does, as users who must not
act on the company: each call is refused before anything happens (no row written, no request
to the aggregator, here the Bridge emulator, a real HTTP server that logs every request), or
the method is on the commented list of harmless ones. A public method added later without
being classified here makes the suite fail.
"""

import logging
from datetime import timedelta

from odoo import api, fields, models
from odoo.addons.account.tests.common import AccountTestInvoicingCommon
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.service.model import get_public_method
from odoo.tests import tagged
from odoo.tools import SQL

from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator

from .common_bank_sync import BOOKKEEPER_GROUPS, LocalEmulatorsMixin, company_user, encryption_keys

_logger = logging.getLogger(__name__)

ADDON = "bank_sync_aggregator"
#: The core models the addon extends with methods of its own.
EXTENDED_MODELS = (
    "account.journal",
    "account.bank.statement.line",
    "res.company",
    "res.config.settings",
)

#: Public methods that read secrets, write, or call an aggregator, and who may call them:
#: "admin" an administrator (Settings) who is an accounting manager of the record's company,
#: "manager" an accounting manager of the record's company (for the statement line: whoever
#: may edit the company's statement lines, which this addon grants accounting managers),
#: "bookkeeper" an accounting user (Invoicing / Billing) of the record's company.
GUARDED = {
    ("bank.sync.provider", "action_clear_secrets"): "admin",
    ("bank.sync.provider", "action_new_webhook_token"): "admin",
    ("bank.sync.provider", "action_bridge_service_register_callback"): "admin",
    ("bank.sync.provider", "action_bridge_service_remove_callback"): "admin",
    ("bank.sync.provider", "action_bridge_service_test"): "manager",
    ("bank.sync.connection", "action_reconnect"): "manager",
    ("bank.sync.connection", "action_refresh_from_aggregator"): "manager",
    ("bank.sync.connection", "action_sync_now"): "manager",
    ("bank.sync.connection", "action_disconnect"): "manager",
    ("bank.sync.connection", "action_open_link_all"): "manager",
    ("bank.sync.account", "action_sync_now"): "manager",
    ("bank.sync.account", "action_unlink_journal"): "manager",
    ("account.journal", "action_bank_sync_now"): "manager",
    ("account.journal", "action_bank_sync_reconnect"): "manager",
    ("account.bank.statement.line", "action_bank_sync_mark_reviewed"): "manager",
    ("account.bank.statement.line", "action_bank_sync_match"): "bookkeeper",
    ("account.bank.statement.line", "action_bank_sync_suggestions"): "bookkeeper",
    # Odoo's own action (its access rights on statement lines decide: this addon grants them
    # to accounting managers), which also clears what this addon recorded about a match.
    ("account.bank.statement.line", "action_undo_reconciliation"): "manager",
    ("account.journal", "action_bank_sync_match"): "bookkeeper",
    ("bank.sync.match.wizard.candidate", "action_reconcile"): "bookkeeper",
    ("bank.sync.connect.wizard", "action_next"): "manager",
    ("bank.sync.connect.wizard", "action_search"): "manager",
    ("bank.sync.connect.wizard", "action_skip_bank"): "manager",
    ("bank.sync.connect.wizard.line", "action_choose"): "manager",
    ("bank.sync.force.wizard", "action_force"): "manager",
    ("bank.sync.delete.wizard", "action_delete"): "manager",
    ("bank.sync.link.wizard", "action_link"): "manager",
    ("bank.sync.link.all.wizard", "action_link_all"): "manager",
    # The settings are Odoo's administrators' (their access rights say so); switching the
    # aggregator disconnects the company's banks, so the accounting manager right is needed too.
    ("res.config.settings", "set_values"): "admin",
    ("res.config.settings", "action_bank_sync_open_aggregator"): "admin",
}

#: Public methods that change nothing and call nobody: each returns a window action (or opens
#: a wizard) whose records the access rights and record rules then restrict as for any list.
HARMLESS = {
    ("bank.sync.provider", "action_view_connections"),
    ("bank.sync.connection", "action_view_accounts"),
    ("bank.sync.connection", "action_view_runs"),
    ("bank.sync.account", "action_open_link_wizard"),
    ("bank.sync.account", "action_view_runs"),
    ("account.journal", "action_open_bank_sync_connection"),
    ("account.journal", "action_open_bank_sync_lines"),
    ("account.journal", "action_view_bank_sync_runs"),
    # The journal's "Transactions": a window action on its statement lines.
    ("account.journal", "open_action"),
}

#: Tables besides the addon's own whose rows an action could touch.
WATCHED_TABLES = (
    "account_bank_statement",
    "account_bank_statement_line",
    "account_move",
    "account_journal",
    "res_partner_bank",
    "res_company",
    "ir_cron_trigger",
    "mail_message",
    "mail_activity",
    "mail_mail",
)


def rpc_surface(env):
    """``{(model, method)}``: the public methods the addon defines or overrides, on its own
    models and on the core models it extends, that ``/web/dataset/call_kw`` accepts.

    The ORM's own methods (create, write, unlink, default_get...) are left out: the access
    rights and record rules guard them, and their own test below checks that.
    """
    surface = set()
    for name in env.registry:
        Model = env[name]
        if Model._original_module != ADDON and name not in EXTENDED_MODELS:
            continue
        if Model._abstract:
            continue  # a mixin's methods are walked on the models that use it
        for klass in type(Model).mro():
            if not klass.__module__.startswith(f"odoo.addons.{ADDON}."):
                continue
            for attr, value in vars(klass).items():
                if attr.startswith("_") or not callable(value) or hasattr(models.BaseModel, attr):
                    continue
                try:
                    get_public_method(Model, attr)
                except AccessError:
                    continue  # @api.private: not callable over RPC
                surface.add((name, attr))
    return surface


@tagged("post_install", "-at_install")
class TestRpcSurface(LocalEmulatorsMixin, AccountTestInvoicingCommon):
    """A company on Bridge (the emulator) with a connection, a linked account, an operation to
    review, an (archived) bridge service setting, and the users who must not act on it."""

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
                "kind": "bridgeapi",
                "company_id": cls.company.id,
                "base_url": cls.emulator.base_url,
                "client_id": cls.emulator.client_id,
                "client_secret": cls.emulator.client_secret,
                "webhook_secrets": "whsec-current",
            }
        )
        # The company's former aggregator, a bridge service: its actions call the emulator too
        # (which answers 404 to that protocol, after logging the request).
        cls.service_aggregator = cls.env["bank.sync.provider"].create(
            {
                "kind": "bridge_service",
                "company_id": cls.company.id,
                "active": False,
                "base_url": cls.emulator.base_url,
                "client_id": "tenant-1",
                "service_secret": "tenant-secret",
            }
        )
        item = cls.emulator.connect_item(cls.aggregator._get_user_ref(), login="success")
        client = cls.aggregator._get_client()
        cls.connection = cls.aggregator._upsert_connection(client.get_connection(str(item.id)))
        cls.connection._upsert_accounts(client.list_accounts(str(item.id)))
        cls.account, cls.free_account = cls.connection.account_ids[:2]
        cls.account.currency_id.active = True
        cls.journal = cls.env["account.journal"].create(
            {
                "name": "Bridge bank",
                "code": "BRRPC",
                "type": "bank",
                "company_id": cls.company.id,
                "currency_id": cls.account.currency_id.id,
            }
        )
        today = fields.Date.context_today(cls.env["bank.sync.account"])
        cls.account.write(
            {"journal_id": cls.journal.id, "history_start_date": today - timedelta(days=30)}
        )
        cls.line = cls.env["account.bank.statement.line"].create(
            {
                "journal_id": cls.journal.id,
                "date": today,
                "payment_ref": "CB BOULANGERIE",
                "amount": -4.2,
                "bank_sync_account_id": cls.account.id,
                "bank_sync_key": "rpc-surface-1",
                "bank_sync_status": "booked",
                "bank_sync_to_review": True,
            }
        )
        cls.sync_run = cls.env["bank.sync.run"].create(
            {"account_id": cls.account.id, "trigger": "cron"}
        )
        cls.ignored = cls.env["bank.sync.ignored"].create(
            {"account_id": cls.account.id, "key": "ignored-1", "label": "Ignored"}
        )
        cls.event = cls.env["bank.sync.webhook.event"].create(
            {"provider_id": cls.aggregator.id, "event_id": "evt-1", "event_type": "x"}
        )

        cls.other_company = cls.setup_other_company()["company"]
        cls.other_company.bank_sync_enabled = True
        cls.admin = company_user(
            cls.env,
            "rpc.admin",
            cls.company,
            groups="base.group_user,base.group_partner_manager,base.group_system,"
            "account.group_account_manager",
        )
        # As accounting managers usually are, allowed to create contacts (a journal's IBAN).
        cls.manager = company_user(
            cls.env,
            "rpc.manager",
            cls.company,
            groups="base.group_user,base.group_partner_manager,account.group_account_manager",
        )
        # Those who must not act on the company's bank synchronisation.
        cls.outsiders = {
            "portal": company_user(cls.env, "rpc.portal", cls.company, groups="base.group_portal"),
            "employee": company_user(
                cls.env, "rpc.employee", cls.company, groups="base.group_user"
            ),
            "bookkeeper": company_user(
                cls.env,
                "rpc.bookkeeper",
                cls.company,
                groups=BOOKKEEPER_GROUPS,
            ),
            "auditor": company_user(
                cls.env,
                "rpc.auditor",
                cls.company,
                groups="base.group_user,account.group_account_readonly",
            ),
            "other company's manager": company_user(
                cls.env, "rpc.other.manager", cls.other_company
            ),
        }
        cls.session = (
            cls.env["bank.sync.connect.session"]
            .sudo()
            .create(
                {
                    "nonce": "rpc-surface-nonce",
                    "provider_id": cls.aggregator.id,
                    "company_id": cls.company.id,
                    "user_id": cls.manager.id,
                    "expires_at": fields.Datetime.now() + timedelta(minutes=30),
                }
            )
        )
        cls.token = (
            cls.env["bank.sync.token"]
            .sudo()
            .create({"provider_id": cls.aggregator.id, "key": "rpc-surface"})
        )
        cls.nonce = (
            cls.env["bank.sync.request.nonce"]
            .sudo()
            .create({"scope": "rpc", "nonce": "rpc-nonce-1", "expires_at": fields.Datetime.now()})
        )

    # ------------------------------------------------------------------ helpers

    def as_user(self, user):
        """``user``'s environment, in all their companies, as a web client request has it."""
        return api.Environment(
            self.env.cr, user.id, dict(self.env.context, allowed_company_ids=user.company_ids.ids)
        )

    def target(self, model, method):
        """A record of the company to call ``method`` on (wizards made by its manager)."""
        if method.startswith("action_bridge_service_"):
            return self.service_aggregator
        records = {
            "bank.sync.provider": self.aggregator,
            "bank.sync.connection": self.connection,
            "bank.sync.account": self.account,
            "account.journal": self.journal,
            "account.bank.statement.line": self.line,
        }
        if model in records:
            return records[model]
        return self.make_wizard(model)

    def make_wizard(self, model):
        today = fields.Date.context_today(self.env["bank.sync.account"])
        Wizard = self.env[model].with_context(allowed_company_ids=self.company.ids)
        if model == "bank.sync.connect.wizard":
            return Wizard.create({"accept_terms": True, "allow_transfer": True})
        if model == "bank.sync.connect.wizard.line":
            wizard = self.make_wizard("bank.sync.connect.wizard")
            return Wizard.create({"wizard_id": wizard.id, "remote_id": "574", "name": "Demo"})
        if model in ("bank.sync.force.wizard", "bank.sync.delete.wizard"):
            return Wizard.create(
                {
                    "scope": "selected",
                    "account_ids": [fields.Command.set(self.account.ids)],
                    "date_from": today - timedelta(days=10),
                    "date_to": today,
                    **({"ignore_permanently": True} if "delete" in model else {}),
                }
            )
        if model == "bank.sync.match.wizard.candidate":
            wizard = self.env["bank.sync.match.wizard"].create({"line_id": self.line.id})
            return Wizard.create({"wizard_id": wizard.id, "rule": "amount", "difference": 0.0})
        if model in ("bank.sync.link.wizard", "bank.sync.link.all.wizard"):
            # One account, or every account of the connection (its free one proposed).
            single = model == "bank.sync.link.wizard"
            return Wizard.create(
                {"account_id": self.free_account.id, "mode": "new"}
                if single
                else {"connection_id": self.connection.id}
            )
        if model == "res.config.settings":
            # Saving would switch the company to Linxo, disconnecting its banks.
            return Wizard.create(
                {
                    "company_id": self.company.id,
                    "bank_sync_enabled": True,
                    "bank_sync_provider_kind": "linxo",
                }
            )
        raise AssertionError(f"No record to call {model} methods on: add one to make_wizard")

    def snapshot(self):
        """A digest of every row of the tables an action could touch, and how many requests
        the aggregator received."""
        self.env.flush_all()
        tables = [
            Model._table
            for Model in (self.env[name] for name in self.env.registry)
            if Model._original_module == ADDON and Model._auto and not Model._abstract
        ]
        digests = {}
        for table in sorted({*tables, *WATCHED_TABLES}):
            self.env.cr.execute(
                SQL(
                    "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM %s t",
                    SQL.identifier(table),
                )
            )
            digests[table] = self.env.cr.fetchone()
        return digests, len(self.emulator.requests)

    def call(self, user, model, method, record):
        """Call ``model.method`` on ``record`` as the web client does for ``user``."""
        env = self.as_user(user)
        get_public_method(env[model], method)
        return api.call_kw(env[model], method, [record.ids], {})

    def assert_refused_without_effect(self, user, role, model, method, record):
        before = self.snapshot()
        with self.assertRaises(AccessError, msg=f"{role} called {model}.{method}"):
            self.call(user, model, method, record)
        after = self.snapshot()
        self.assertEqual(
            after[1] - before[1], 0, f"{role}'s {model}.{method} reached the aggregator"
        )
        changed = [table for table in before[0] if before[0][table] != after[0][table]]
        self.assertFalse(changed, f"{role}'s {model}.{method} changed rows of {changed}")
        self.env.invalidate_all()

    # ------------------------------------------------------------------ tests

    def test_every_public_method_is_classified(self):
        surface = rpc_surface(self.env)
        classified = set(GUARDED) | HARMLESS
        self.assertFalse(
            surface - classified,
            "Public methods callable over RPC that nobody classified: check their rights first "
            "(bank_sync_aggregator/rights.py), then add them to GUARDED or HARMLESS.",
        )
        self.assertFalse(classified - surface, "Classified methods that no longer exist")

    def test_outsiders_are_refused_every_action_before_anything_happens(self):
        for role, user in self.outsiders.items():
            for model, method in sorted(GUARDED):
                if GUARDED[model, method] == role:
                    continue  # (a bookkeeper's own action)
                with self.subTest(role=role, method=f"{model}.{method}"):
                    record = self.target(model, method)
                    self.assert_refused_without_effect(user, role, model, method, record)

    def test_accounting_managers_are_refused_the_administrators_actions(self):
        for (model, method), right in sorted(GUARDED.items()):
            if right != "admin":
                continue
            with self.subTest(method=f"{model}.{method}"):
                record = self.target(model, method)
                self.assert_refused_without_effect(self.manager, "manager", model, method, record)

    def test_the_right_role_may_still_do_each_action(self):
        # Each call is undone afterwards (a savepoint); those that revoke the connection at the
        # emulator (deleting it, switching aggregators) come last. Business refusals
        # (UserError) are fine here, access refusals are not.
        users = {
            "admin": self.admin,
            "manager": self.manager,
            "bookkeeper": self.outsiders["bookkeeper"],
        }
        revoking = {"action_disconnect", "set_values", "action_bank_sync_open_aggregator"}
        for model, method in sorted(GUARDED, key=lambda key: (key[1] in revoking, key)):
            with self.subTest(method=f"{model}.{method}"):
                record = self.target(model, method)
                right = GUARDED[model, method]
                with self.env.cr.savepoint() as savepoint:
                    try:
                        self.call(users[right], model, method, record)
                    except AccessError as error:
                        self.fail(f"{right} refused {model}.{method}: {error}")
                    except UserError as error:
                        # A business answer (the emulator does not speak the bridge service's
                        # protocol...): the right was granted, which is what is checked here.
                        _logger.info("%s.%s answered: %s", model, method, error)
                    savepoint.rollback()
                self.env.invalidate_all()

    def test_harmless_methods_only_return_actions(self):
        for role, user in self.outsiders.items():
            for model, method in sorted(HARMLESS):
                with self.subTest(role=role, method=f"{model}.{method}"):
                    before = self.snapshot()
                    try:
                        result = self.call(user, model, method, self.target(model, method))
                    except AccessError:
                        result = None  # the records themselves are out of reach: fine too
                    self.assertEqual(self.snapshot(), before)
                    if result is not None:
                        self.assertIn("type", result)
                    self.env.invalidate_all()

    def test_records_cannot_be_created_changed_or_deleted_by_outsiders(self):
        models_values = {
            "bank.sync.provider": (
                self.aggregator,
                {"kind": "sandbox", "company_id": self.company.id, "active": False},
                {"name": "Hacked"},
            ),
            "bank.sync.connection": (
                self.connection,
                {
                    "provider_id": self.aggregator.id,
                    "company_id": self.company.id,
                    "remote_id": "planted",
                },
                {"institution_name": "Hacked"},
            ),
            "bank.sync.account": (
                self.account,
                {"connection_id": self.connection.id, "remote_id": "planted", "name": "Planted"},
                {"journal_id": False},
            ),
            "bank.sync.run": (
                self.sync_run,
                {"account_id": self.account.id, "trigger": "manual"},
                {"note": "Hacked"},
            ),
            "bank.sync.ignored": (
                self.ignored,
                {"account_id": self.account.id, "key": "planted"},
                {"label": "Hacked"},
            ),
            "bank.sync.webhook.event": (
                self.event,
                {"provider_id": self.aggregator.id, "event_id": "planted"},
                {"event_type": "Hacked"},
            ),
            "bank.sync.token": (
                self.token,
                {"provider_id": self.aggregator.id, "key": "planted"},
                {"key": "hacked"},
            ),
            "bank.sync.connect.session": (
                self.session,
                {
                    "nonce": "planted",
                    "provider_id": self.aggregator.id,
                    "company_id": self.company.id,
                    "user_id": self.manager.id,
                    "expires_at": fields.Datetime.now(),
                },
                {"institution_id": "hacked"},
            ),
            "bank.sync.request.nonce": (
                self.nonce,
                {"scope": "rpc", "nonce": "planted", "expires_at": fields.Datetime.now()},
                {"nonce": "hacked"},
            ),
        }
        persistent = {
            name
            for name in self.env.registry
            if self.env[name]._original_module == ADDON
            and not self.env[name]._abstract
            and not self.env[name]._transient
        }
        self.assertEqual(persistent, set(models_values), "every model of the addon is covered")
        for role, user in self.outsiders.items():
            Model = self.as_user(user)
            for model, (record, create_values, write_values) in models_values.items():
                mine = Model[model].browse(record.id)
                attempts = {
                    "create": (Model[model].create, create_values),
                    "write": (mine.write, write_values),
                    "unlink": (mine.unlink,),
                }
                for operation, (method, *args) in attempts.items():
                    with (
                        self.subTest(role=role, model=model, operation=operation),
                        self.assertRaises(AccessError),
                        self.env.cr.savepoint(),
                    ):
                        method(*args)
                        self.env.flush_all()
                    self.env.invalidate_all()

    # ------------------------------------------------------------------ the actions one by one

    def test_only_administrators_of_the_company_forget_the_secrets(self):
        other_admin = company_user(
            self.env,
            "rpc.other.admin",
            self.other_company,
            groups="base.group_user,base.group_system,account.group_account_manager",
        )
        stored = self.aggregator.sudo()
        for user in (self.manager, self.outsiders["bookkeeper"], other_admin):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self.aggregator.with_env(self.as_user(user)).action_clear_secrets()
            self.assertTrue(stored.client_secret_encrypted)
            self.assertTrue(stored.webhook_secrets_encrypted)
            self.assertTrue(self.token.exists())
        self.aggregator.with_env(self.as_user(self.admin)).action_clear_secrets()
        self.assertFalse(stored.client_secret_encrypted or stored.webhook_secrets_encrypted)
        self.assertFalse(self.token.exists(), "the cached tokens are forgotten too")

    def test_only_accounting_managers_of_the_company_delete_a_connection(self):
        item = self.emulator.connect_item(self.aggregator._get_user_ref(), login="success")
        client = self.aggregator._get_client()
        connection = self.aggregator._upsert_connection(client.get_connection(str(item.id)))
        path = f"/v3/aggregation/items/{item.id}"
        for role in ("bookkeeper", "auditor", "other company's manager"):
            with self.subTest(role=role), self.assertRaises(AccessError):
                connection.with_env(self.as_user(self.outsiders[role])).action_disconnect()
            self.assertFalse(self.emulator.calls(path, "DELETE"), "revoked at Bridge")
            self.assertEqual((connection.state, connection.active), ("ok", True))
        connection.with_env(self.as_user(self.manager)).action_disconnect()
        self.assertEqual(len(self.emulator.calls(path, "DELETE")), 1)
        self.assertEqual((connection.state, connection.active), ("disconnected", False))

    def test_only_administrators_choose_the_api_url(self):
        as_manager = self.aggregator.with_env(self.as_user(self.manager))
        with self.assertRaisesRegex(AccessError, "Only administrators can change the API URL"):
            as_manager.base_url = "https://collector.example"
        with self.assertRaises(AccessError):
            self.env["bank.sync.provider"].with_env(self.as_user(self.manager)).create(
                {
                    "kind": "bridgeapi",
                    "company_id": self.company.id,
                    "active": False,
                    "base_url": "https://collector.example",
                }
            )
        self.assertEqual(self.aggregator.base_url, self.emulator.base_url)
        # The rest of the settings stay the managers'.
        as_manager.write({"client_id": self.emulator.client_id, "terms_url": "https://t.example"})
        # Administrators may, to https, or to plain http on this machine only (emulators).
        as_admin = self.aggregator.with_env(self.as_user(self.admin))
        for allowed in (
            "https://api.bridgeapi.io",
            "http://localhost:8080",
            self.emulator.base_url,
        ):
            as_admin.base_url = allowed
        for refused in (
            "http://collector.example",
            "ftp://api.bridgeapi.io",
            "https://user:password@api.bridgeapi.io",
            "https://",
        ):
            with self.subTest(url=refused), self.assertRaises(ValidationError):
                as_admin.base_url = refused
                self.env.flush_all()

    def test_the_kind_of_aggregator_settings_in_use_cannot_change(self):
        for aggregator in (self.aggregator, self.service_aggregator):  # connections, secrets
            with self.subTest(kind=aggregator.kind), self.assertRaisesRegex(UserError, "settings"):
                aggregator.kind = "sandbox"
        fresh = self.env["bank.sync.provider"].create(
            {"kind": "sandbox", "company_id": self.other_company.id}
        )
        other_manager = self.outsiders["other company's manager"]
        fresh.with_env(self.as_user(other_manager)).kind = "linxo"
        self.assertEqual(fresh.kind, "linxo")
