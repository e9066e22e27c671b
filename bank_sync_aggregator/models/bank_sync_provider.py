"""``bank.sync.provider``: a company's aggregator settings, one active per company.

The settings say which aggregator the company uses (``kind``), keep its credentials encrypted
(write-only fields, :data:`SECRET_FIELDS`), and build the package's client
(:meth:`BankSyncProvider._get_client`) that every other model talks to the aggregator with.

The ``bridge_service`` kind is a remote bank_sync_bridge service that holds the aggregator
contract for many databases, this one being a tenant. Its client is built like the others;
what is its own: the tenant secret (``service_secret``), "Test connection", and the service's
events, polled by a cron (or pushed to controllers/bridge_service.py) into the pipeline of the
direct aggregators' webhooks (``bank.sync.webhook.event``).
"""

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from urllib.parse import urlsplit

from odoo import api, fields, models, tools
from odoo.exceptions import AccessError, UserError, ValidationError

from bank_sync_bridge import crypto
from bank_sync_bridge.errors import AuthenticationError, BankSyncError, ConnectionFailed
from bank_sync_bridge.providers import MemoryTokenStore, ProviderConfig, get_provider

from ..const import (
    AGGREGATOR_KINDS,
    CALLBACK_ROUTE,
    EVENTS_CALLBACK_ROUTE,
    SANDBOX_HOSTED_ROUTE,
    URL_TOKEN_KINDS,
    WEBHOOK_ROUTE,
)
from ..rights import ACCOUNTING_MANAGER, ADMINISTRATOR, check_rights
from ..utils import aggregator_errors, one_by_one
from .bank_sync_token import OdooTokenStore

_logger = logging.getLogger(__name__)

#: Name of the option in Odoo's configuration file (and of the environment variable, upper
#: case) that holds the encryption keys, newest first, comma separated. Never in the database:
#: a dump of the database alone must not reveal the aggregator credentials.
ENCRYPTION_KEYS_OPTION = "bank_sync_encryption_keys"

#: secret field -> (stored encrypted field, key in ProviderConfig.credentials)
SECRET_FIELDS = {
    "client_secret": ("client_secret_encrypted", "client_secret"),
    "webhook_secrets": ("webhook_secrets_encrypted", "webhook_secrets"),
    "service_secret": ("service_secret_encrypted", "service_secret"),
}

#: Events asked of a bridge service per poll; the cron loops until the service has no more.
POLL_PAGE_SIZE = 100
#: Pages read per aggregator and cron run, so one busy tenant cannot hold the cron forever
#: (the rest is read on the next run, from the stored event id).
POLL_MAX_PAGES = 50


def new_webhook_token():
    """A random token for a webhook address (URL-safe, 43 characters)."""
    return secrets.token_urlsafe(32)


def is_local_host(hostname):
    """Whether ``hostname`` is this machine (an emulator or a service next to Odoo)."""
    if not hostname:
        return False
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _configured_keys():
    """The encryption keys from Odoo's configuration or the environment ("" when none)."""
    return tools.config.get(ENCRYPTION_KEYS_OPTION) or os.environ.get(
        ENCRYPTION_KEYS_OPTION.upper(), ""
    )


class BankSyncProvider(models.Model):
    _name = "bank.sync.provider"
    _description = "Bank Synchronisation Aggregator"
    _order = "company_id, active desc, id desc"
    _check_company_auto = True

    name = fields.Char(
        required=True, compute="_compute_name", store=True, readonly=False, precompute=True
    )
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company, ondelete="cascade"
    )
    active = fields.Boolean(default=True)
    kind = fields.Selection(
        AGGREGATOR_KINDS,
        string="Aggregator",
        required=True,
        default="sandbox",
    )
    environment = fields.Selection(
        [("sandbox", "Test"), ("production", "Production")],
        required=True,
        default="sandbox",
        help="Which of the aggregator's environments the credentials belong to.",
    )
    # The client sends the aggregator's secrets and tokens to this address: only the
    # administrators, who alone may see the secrets, may change it (see write()).
    base_url = fields.Char(
        string="API URL",
        help="Leave empty to use the aggregator's own address. Set it to reach a bridge service "
        "or a local emulator. Only administrators can change it.",
    )
    client_id = fields.Char(string="Client ID", groups="account.group_account_manager", copy=False)
    terms_url = fields.Char(
        string="Terms of service URL",
        help="The aggregator's terms, shown to users before they connect a bank.",
    )
    sandbox_seed = fields.Integer(
        help="The sandbox generates the same banks, accounts and operations for the same seed."
    )
    # Secrets: only the encrypted form is stored; the plain fields are write-only so that
    # nobody (not even an administrator through the API) reads a credential back.
    client_secret = fields.Char(
        compute="_compute_secrets",
        inverse="_inverse_client_secret",
        groups="base.group_system",
        help="Left empty when a secret is already stored: type a new one to replace it.",
    )
    webhook_secrets = fields.Char(
        compute="_compute_secrets",
        inverse="_inverse_webhook_secrets",
        groups="base.group_system",
        help="Secrets that sign the aggregator's webhooks, comma separated (several during a "
        "rotation).",
    )
    service_secret = fields.Char(
        string="Bridge service secret",
        compute="_compute_secrets",
        inverse="_inverse_service_secret",
        groups="base.group_system",
        help="The secret the bridge service operator gave for this database.",
    )
    client_secret_encrypted = fields.Char(groups="base.group_system", copy=False)
    webhook_secrets_encrypted = fields.Char(groups="base.group_system", copy=False)
    service_secret_encrypted = fields.Char(groups="base.group_system", copy=False)
    # Whether a secret is stored, shown instead of the secret itself.
    has_client_secret = fields.Boolean(compute="_compute_has_secrets")
    has_webhook_secrets = fields.Boolean(compute="_compute_has_secrets")
    has_service_secret = fields.Boolean(compute="_compute_has_secrets")
    # The random token of the webhook address of aggregators that sign nothing (Linxo): it
    # signs nothing itself, so an address seen in an access log reveals no credential.
    webhook_token = fields.Char(groups="base.group_system", readonly=True, copy=False)
    # Where to register this company's webhooks at the aggregator (controllers/webhook.py).
    webhook_url = fields.Char(
        string="Webhook URL", compute="_compute_webhook_url", groups="base.group_system"
    )
    connection_ids = fields.One2many("bank.sync.connection", "provider_id")
    connection_count = fields.Integer(compute="_compute_connection_count")

    # A bridge service (kind "bridge_service") is polled for its events (_bridge_service_poll).
    bridge_service_last_event_id = fields.Integer(
        string="Last service event",
        readonly=True,
        copy=False,
        help="The bridge service's id of the last event read by this database; the next poll "
        "asks for the events after it.",
    )
    bridge_service_last_poll = fields.Datetime(
        string="Last poll of the service", readonly=True, copy=False
    )

    # -------------------------------------------------------------------------
    # Computes
    # -------------------------------------------------------------------------

    @api.depends("kind")
    def _compute_name(self):
        labels = dict(self._fields["kind"]._description_selection(self.env))
        for aggregator in self:
            aggregator.name = labels.get(aggregator.kind) or aggregator.name

    def _compute_secrets(self):
        for aggregator in self:
            aggregator.client_secret = False
            aggregator.webhook_secrets = False
            aggregator.service_secret = False

    @api.depends("kind", "webhook_token")
    def _compute_webhook_url(self):
        for aggregator in self:
            url = f"{aggregator._get_base_url()}{WEBHOOK_ROUTE}/{aggregator.id}"
            if aggregator.kind in URL_TOKEN_KINDS:
                # Linxo signs nothing: the address it calls carries the aggregator's token.
                url += f"?token={aggregator.sudo().webhook_token or ''}"
            aggregator.webhook_url = (
                url if aggregator.id and aggregator.kind != "sandbox" else False
            )

    def _compute_has_secrets(self):
        for aggregator in self:
            stored = aggregator.sudo()
            aggregator.has_client_secret = bool(stored.client_secret_encrypted)
            aggregator.has_webhook_secrets = bool(stored.webhook_secrets_encrypted)
            aggregator.has_service_secret = bool(stored.service_secret_encrypted)

    def _compute_connection_count(self):
        counts = dict(
            self.env["bank.sync.connection"]
            .with_context(active_test=False)
            ._read_group([("provider_id", "in", self.ids)], ["provider_id"], ["__count"])
        )
        for aggregator in self:
            aggregator.connection_count = counts.get(aggregator, 0)

    def _inverse_client_secret(self):
        self._store_secret("client_secret")

    def _inverse_webhook_secrets(self):
        self._store_secret("webhook_secrets")

    def _inverse_service_secret(self):
        self._store_secret("service_secret")

    def _store_secret(self, field_name):
        encrypted_field = SECRET_FIELDS[field_name][0]
        for aggregator in self:
            value = aggregator[field_name]
            if not value:
                # An empty write-only field means "unchanged"; clearing is an explicit action.
                continue
            if aggregator.kind == "sandbox":
                raise UserError(self.env._("The sandbox needs no secret."))
            aggregator.sudo()[encrypted_field] = aggregator._encrypt(value.strip())

    # -------------------------------------------------------------------------
    # Constraints
    # -------------------------------------------------------------------------

    @api.constrains("active", "company_id")
    def _check_one_active_per_company(self):
        for aggregator in self.filtered("active"):
            others = self.search_count(
                [
                    ("company_id", "=", aggregator.company_id.id),
                    ("active", "=", True),
                    ("id", "!=", aggregator.id),
                ]
            )
            if others:
                raise ValidationError(self._one_active_message(aggregator.company_id))

    def _one_active_message(self, company):
        return self.env._(
            "Only one aggregator can be active for %(company)s: Bridge and Linxo cannot be "
            "used at the same time. Switch aggregators in the Accounting settings.",
            company=company.display_name,
        )

    @api.constrains("base_url")
    def _check_base_url(self):
        for aggregator in self.filtered("base_url"):
            parts = urlsplit(aggregator.base_url.strip())
            local = is_local_host(parts.hostname)
            if (
                not parts.hostname
                or parts.username
                or parts.password
                or not (parts.scheme == "https" or (parts.scheme == "http" and local))
            ):
                raise ValidationError(
                    self.env._(
                        "The API URL must start with https:// and name a host (http:// only "
                        "for an emulator on this machine: 127.0.0.1 or localhost)."
                    )
                )

    # -------------------------------------------------------------------------
    # CRUD
    # -------------------------------------------------------------------------

    def init(self):
        # A partial unique index: archived aggregators of a company keep their settings, but
        # the database itself guarantees one active aggregator per company.
        self.env.cr.execute(
            """
            CREATE UNIQUE INDEX IF NOT EXISTS bank_sync_provider_one_active_per_company
                ON bank_sync_provider (company_id) WHERE active
            """
        )
        self._fill_webhook_tokens()

    def _fill_webhook_tokens(self):
        """Give a webhook token of its own to all settings that have none (on install and
        upgrade: settings made before the token existed)."""
        self.env.cr.execute(
            "SELECT id, kind, active FROM bank_sync_provider WHERE webhook_token IS NULL"
        )
        for provider_id, kind, active in self.env.cr.fetchall():
            self.env.cr.execute(
                "UPDATE bank_sync_provider SET webhook_token = %s WHERE id = %s",
                (new_webhook_token(), provider_id),
            )
            if kind in URL_TOKEN_KINDS and active:
                _logger.warning(
                    "Aggregator settings %s: the webhook address has a new token; an "
                    "administrator must register the address shown on the aggregator form "
                    "at the aggregator again.",
                    provider_id,
                )
        self.invalidate_model(["webhook_token"])

    @api.model_create_multi
    def create(self, vals_list):
        if any(vals.get("base_url") for vals in vals_list):
            self._check_may_change_endpoint()
        # Say it clearly before the unique index refuses it with a database error.
        Company = self.env["res.company"]
        for vals in vals_list:
            if vals.get("active", True):
                company = Company.browse(vals.get("company_id") or self.env.company.id)
                if company._get_bank_sync_aggregator() or (
                    sum(
                        1
                        for other in vals_list
                        if other.get("active", True)
                        and (other.get("company_id") or self.env.company.id) == company.id
                    )
                    > 1
                ):
                    raise ValidationError(self._one_active_message(company))
        aggregators = super().create(vals_list)
        for aggregator in aggregators.sudo():
            aggregator.webhook_token = new_webhook_token()
        return aggregators

    def write(self, vals):
        if "base_url" in vals and any(
            (aggregator.base_url or False) != (vals["base_url"] or False) for aggregator in self
        ):
            self._check_may_change_endpoint()
        if "kind" in vals:
            self._check_may_change_kind(vals["kind"])
        if vals.get("active"):
            for aggregator in self.filtered(lambda p: not p.active):
                if aggregator.company_id._get_bank_sync_aggregator():
                    raise ValidationError(self._one_active_message(aggregator.company_id))
        return super().write(vals)

    def _check_may_change_endpoint(self):
        """Only administrators choose where the client sends the secrets they alone see."""
        if self.env.su or self.env.user.has_group(ADMINISTRATOR):
            return
        raise AccessError(
            self.env._(
                "Only administrators can change the API URL of an aggregator: its secrets and "
                "access tokens are sent there."
            )
        )

    def _check_may_change_kind(self, kind):
        """Settings' secrets and connections belong to their aggregator: switching goes
        through the settings, which archive it and make (or find) one for the other."""
        self.check_access("write")
        for aggregator in self.filtered(lambda p: p.kind != kind):
            stored = aggregator.sudo()
            if (
                any(stored[encrypted] for encrypted, _key in SECRET_FIELDS.values())
                or stored.with_context(active_test=False).connection_ids
            ):
                raise UserError(
                    self.env._(
                        "The aggregator of %(name)s cannot be changed: it has secrets or bank "
                        "connections. Choose another aggregator in the Accounting settings "
                        "instead.",
                        name=aggregator.display_name,
                    )
                )

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_clear_secrets(self):
        """Forget every stored secret of these aggregators (administrators of their company)."""
        check_rights(self, ADMINISTRATOR)
        self.sudo().write({vals[0]: False for vals in SECRET_FIELDS.values()})
        self.env["bank.sync.token"].sudo().search([("provider_id", "in", self.ids)]).unlink()

    def action_new_webhook_token(self):
        """Give the webhook address a new token (administrators), e.g. after it leaked; the
        old address stops working at once, so register the new one at the aggregator."""
        check_rights(self, ADMINISTRATOR)
        for aggregator in self.sudo():
            aggregator.webhook_token = new_webhook_token()
        return True

    def action_view_connections(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "bank_sync_aggregator.bank_sync_connection_action"
        )
        action["domain"] = [("provider_id", "=", self.id)]
        action["context"] = {"default_provider_id": self.id, "active_test": False}
        return action

    def action_bridge_service_test(self):
        """Check the service answers (``/health``) and accepts our signature (a signed call)."""
        self.ensure_one()
        check_rights(self, ACCOUNTING_MANAGER)
        if self.kind != "bridge_service":
            raise UserError(self.env._("Only a bridge service connection can be tested here."))
        with aggregator_errors(self):
            client = self._get_client()
            try:
                health = client.health()
            except BankSyncError as error:
                raise UserError(
                    self.env._(
                        "The bridge service at %(url)s does not answer: %(detail)s. Check the "
                        "URL and that the service is running.",
                        url=self.base_url,
                        detail=error.message,
                    )
                ) from error
            try:
                # A signed, tenant-level call that costs the aggregator nothing.
                client.poll_events(after=self.bridge_service_last_event_id, limit=1)
            except AuthenticationError as error:
                raise UserError(
                    self.env._(
                        "The bridge service refused this database's credentials (HTTP "
                        "%(status)s): the client ID or the secret is wrong, or the operator "
                        "revoked them. Enter them again as the service's operator gave them. "
                        "The service says: %(detail)s",
                        status=error.status or 401,
                        detail=error.message,
                    )
                ) from error
            except ConnectionFailed as error:
                raise UserError(
                    self.env._(
                        "The bridge service at %(url)s does not answer: %(detail)s.",
                        url=self.base_url,
                        detail=error.message,
                    )
                ) from error
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "type": "success",
                "title": self.env._("Bridge service reached"),
                "message": self.env._(
                    "The service (version %(version)s) accepts this database's credentials.",
                    version=health.get("version") or "?",
                ),
                "sticky": False,
            },
        }

    def action_bridge_service_register_callback(self):
        """Ask the service to post this tenant's events to this Odoo at once (signed), on top
        of the periodic poll."""
        self.ensure_one()
        check_rights(self, ADMINISTRATOR)
        with aggregator_errors(self):
            self._get_client().set_callback_url(self._get_bridge_service_callback_url())
        return True

    def action_bridge_service_remove_callback(self):
        """Stop the service's calls to this Odoo (polling still brings the events)."""
        self.ensure_one()
        check_rights(self, ADMINISTRATOR)
        with aggregator_errors(self):
            self._get_client().set_callback_url(None)
        return True

    # -------------------------------------------------------------------------
    # Encryption
    # -------------------------------------------------------------------------

    @api.model
    def _get_crypto(self):
        """The package's cipher, built from the keys in Odoo's configuration."""
        keys = _configured_keys()
        if not keys:
            raise UserError(
                self.env._(
                    "No encryption key is configured for bank synchronisation secrets. Ask "
                    "your administrator to set %(option)s in the Odoo configuration file (or "
                    "the %(env)s environment variable), then try again.",
                    option=ENCRYPTION_KEYS_OPTION,
                    env=ENCRYPTION_KEYS_OPTION.upper(),
                )
            )
        try:
            return crypto.SecretBox.from_config(keys)
        except crypto.SecretKeyError as error:
            raise UserError(
                self.env._(
                    "The bank synchronisation encryption keys in the Odoo configuration are "
                    "invalid: %(detail)s",
                    detail=error.message,
                )
            ) from error

    @api.model
    def _encrypt(self, plain):
        return self._get_crypto().encrypt(plain)

    @api.model
    def _decrypt(self, token):
        box = self._get_crypto()
        try:
            return box.decrypt(token)
        except crypto.SecretKeyError as error:
            raise UserError(
                self.env._(
                    "A stored bank synchronisation secret cannot be decrypted with the "
                    "configured keys (was a key removed?): enter the secret again. %(detail)s",
                    detail=error.message,
                )
            ) from error

    def _get_credentials(self):
        """Decrypted credentials for the client (never log or display them)."""
        self.ensure_one()
        stored = self.sudo()
        credentials = {}
        if stored.client_id:
            credentials["client_id"] = stored.client_id
        for encrypted_field, key in SECRET_FIELDS.values():
            if stored[encrypted_field]:
                credentials[key] = self._decrypt(stored[encrypted_field])
        if self.kind == "bridge_service":
            # The tenant secret is stored in its own field (service_secret); the client speaks
            # of client_id / client_secret.
            return {
                "client_id": credentials.get("client_id", ""),
                "client_secret": credentials.get("service_secret", ""),
            }
        return credentials

    # -------------------------------------------------------------------------
    # The package's client
    # -------------------------------------------------------------------------

    def _get_kind_label(self):
        """The aggregator's kind as users see it, in the environment's language ("Bac à sable
        (démo)" for a French user): the record's name is stored in one language only. Empty
        when there are no settings."""
        if not self:
            return ""
        self.ensure_one()
        labels = dict(self._fields["kind"]._description_selection(self.env))
        return labels.get(self.kind) or self.name

    def _get_user_ref(self):
        """Our stable id for this company at the aggregator (Bridge ``external_user_id``)."""
        self.ensure_one()
        uuid = self.env["ir.config_parameter"].sudo().get_param("database.uuid")
        return f"{uuid}-{self.company_id.id}"

    def _get_base_url(self):
        return self.company_id.get_base_url() if self.company_id else self.get_base_url()

    def _get_callback_url(self):
        self.ensure_one()
        # The aggregator id in the path tells the callback whose client parses the return.
        return f"{self._get_base_url()}{CALLBACK_ROUTE}/{self.id}"

    def _get_bridge_service_callback_url(self):
        self.ensure_one()
        return f"{self._get_base_url()}{EVENTS_CALLBACK_ROUTE}/{self.id}"

    def _get_client_options(self):
        self.ensure_one()
        options = {"environment": self.environment}
        if self.kind == "sandbox":
            options["hosted_url"] = self._get_base_url() + SANDBOX_HOSTED_ROUTE
            options["seed"] = self.sandbox_seed or self.company_id.id
        return options

    def _get_token_store(self):
        if self.kind == "sandbox" or _configured_keys():
            return OdooTokenStore(self)
        # Without a key, tokens cannot be kept encrypted: keep them for this call only.
        return MemoryTokenStore()

    def _get_sandbox_credentials(self):
        # The sandbox signs its hosted page links with this key: derived from the database's
        # own secret, so links cannot be forged from the public demo key.
        secret = self.env["ir.config_parameter"].sudo().get_param("database.secret") or ""
        key = hmac.new(secret.encode(), b"bank_sync_aggregator.sandbox", hashlib.sha256)
        return {"session_key": key.hexdigest()}

    def _check_bridge_service_settings(self):
        """Say in the user's language what is missing, before the client refuses it."""
        self.ensure_one()
        stored = self.sudo()
        missing = []
        if not stored.base_url:
            missing.append(self.env._("the service URL"))
        if not stored.client_id:
            missing.append(self.env._("the client ID"))
        if not stored.service_secret_encrypted:
            missing.append(self.env._("the bridge service secret"))
        if missing:
            raise UserError(
                self.env._(
                    "The bridge service is not fully configured for %(company)s; missing: "
                    "%(missing)s. Enter what the service's operator gave you in the aggregator "
                    "settings.",
                    company=self.company_id.display_name,
                    missing=", ".join(missing),
                )
            )

    def _get_client(self, **kwargs):
        """The package's client of this aggregator (``bank_sync_bridge.providers``).

        Extra keyword arguments (``clock``, ``session``...) go to the client's constructor.
        """
        self.ensure_one()
        if self.kind == "bridge_service":
            self._check_bridge_service_settings()
        config = ProviderConfig(
            user_ref=self._get_user_ref(),
            base_url=self.base_url or None,
            credentials=(
                self._get_sandbox_credentials()
                if self.kind == "sandbox"
                else self._get_credentials()
            ),
            options=self._get_client_options(),
        )
        kwargs.setdefault("token_store", self._get_token_store())
        return get_provider(self.kind, config, **kwargs)

    def _upsert_connection(self, remote):
        """Create or update the local record of a remote :class:`Connection`."""
        self.ensure_one()
        Connection = self.env["bank.sync.connection"].with_context(active_test=False)
        connection = Connection.search(
            [("provider_id", "=", self.id), ("remote_id", "=", remote.remote_id)], limit=1
        )
        vals = Connection._values_from_remote(remote)
        if connection:
            connection.write(dict(vals, active=True))
        else:
            connection = Connection.create(
                dict(vals, provider_id=self.id, company_id=self.company_id.id)
            )
        return connection

    # -------------------------------------------------------------------------
    # Bridge service events
    # -------------------------------------------------------------------------

    def _bridge_service_events_for_me(self, events):
        """The events about this company.

        The service's events are per tenant, and several companies of this database may share
        one tenant (its client id): each event names its company, and only that company
        records it. An event that names no company goes to the only company on the tenant,
        or, when several share it, to none of them (logged): nobody's accounts are
        synchronised on a guess.
        """
        self.ensure_one()
        user_ref = self._get_user_ref()
        unnamed = [event for event in events if event.raw.get("company") is None]
        mine = [event for event in events if event.raw.get("company") == user_ref]
        if unnamed:
            sharing = self.sudo().search_count(
                [
                    ("kind", "=", "bridge_service"),
                    ("active", "=", True),
                    ("client_id", "=", self.sudo().client_id),
                ]
            )
            if sharing == 1 and self.active:
                mine = [event for event in events if event.raw.get("company") in (None, user_ref)]
            else:
                _logger.info(
                    "%s bridge service event(s) naming no company left unrecorded: %s "
                    "companies share the tenant of aggregator settings %s",
                    len(unnamed),
                    sharing,
                    self.id,
                )
        return mine

    def _bridge_service_record(self, events):
        """Record the events of this company once; returns the new ``bank.sync.webhook.event``."""
        self.ensure_one()
        mine = self._bridge_service_events_for_me(events)
        if not mine:
            return self.env["bank.sync.webhook.event"]
        new, _duplicates = self.env["bank.sync.webhook.event"].sudo()._record_events(self, mine)
        return new

    def _bridge_service_poll(self):
        """Read the service's new events into ``bank.sync.webhook.event``; returns the new
        records. The stored event id moves only with the events recorded, in one
        transaction, so a failure re-reads them next time (duplicates are harmless)."""
        self.ensure_one()
        client = self._get_client()
        new = self.env["bank.sync.webhook.event"]
        after = self.bridge_service_last_event_id
        for _page in range(POLL_MAX_PAGES):
            events, last_id = client.poll_events(after=after, limit=POLL_PAGE_SIZE)
            new |= self._bridge_service_record(events)
            if last_id <= after:
                break
            after = last_id
            self.sudo().bridge_service_last_event_id = after
            if len(events) < POLL_PAGE_SIZE:
                break
        self.sudo().bridge_service_last_poll = fields.Datetime.now()
        return new

    @api.model
    def _cron_poll_bridge_service(self):
        """Every few minutes: the events of every company on a bridge service, then the
        event pipeline is woken to synchronise the affected accounts in the background."""
        aggregators = self.sudo().search(
            [
                ("kind", "=", "bridge_service"),
                ("active", "=", True),
                ("company_id.bank_sync_enabled", "=", True),
            ]
        )
        polled = one_by_one(
            aggregators,
            lambda aggregator: aggregator._bridge_service_poll(),
            # An unreachable service or a wrong secret: the package's message, never a secret.
            lambda aggregator, error: _logger.warning(
                "Polling the bridge service for aggregator settings %s failed: %s",
                aggregator.id,
                getattr(error, "message", None) or error,
            ),
        )
        new = self.env["bank.sync.webhook.event"].union(*polled)
        if new:
            self.env.ref("bank_sync_aggregator.ir_cron_process_webhook_events")._trigger()
        return new
