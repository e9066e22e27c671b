import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
from urllib.parse import urlsplit

from odoo import api, fields, models, tools
from odoo.exceptions import AccessError, UserError, ValidationError

from ..rights import ADMINISTRATOR, check_rights

_logger = logging.getLogger(__name__)

#: Name of the option in Odoo's configuration file (and of the environment variable, upper
#: case) that holds the encryption keys, newest first, comma separated. Never in the database:
#: a dump of the database alone must not reveal the aggregator credentials.
ENCRYPTION_KEYS_OPTION = "bank_sync_encryption_keys"

#: Route of the sandbox's hosted page, served by this Odoo (controllers/main.py).
SANDBOX_HOSTED_ROUTE = "/bank_sync/sandbox/connect"
#: Route where every aggregator's hosted page sends the user back.
CALLBACK_ROUTE = "/bank_sync/callback"

#: The aggregators a company can choose from (one at a time).
AGGREGATOR_KINDS = [
    ("sandbox", "Sandbox (demo)"),
    ("bridgeapi", "Bridge"),
    ("linxo", "Linxo"),
    ("bridge_service", "Bridge service"),
]

#: Aggregators that sign nothing (Linxo documents no signature, only TLS and IP filtering): the
#: webhook address registered with them carries the aggregator's random ``webhook_token``.
URL_TOKEN_KINDS = frozenset({"linxo"})

#: secret field -> (stored encrypted field, key in ProviderConfig.credentials)
SECRET_FIELDS = {
    "client_secret": ("client_secret_encrypted", "client_secret"),
    "webhook_secrets": ("webhook_secrets_encrypted", "webhook_secrets"),
    "service_secret": ("service_secret_encrypted", "service_secret"),
}


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


class OdooTokenStore:
    """A :class:`bank_sync_bridge.providers.base.TokenStore` kept in ``bank.sync.token``.

    Aggregator access tokens live for hours: keeping them across cron runs and workers spares
    the aggregator a login per account. They are secrets, so they are encrypted like the
    credentials.
    """

    def __init__(self, aggregator):
        self._aggregator = aggregator
        # The sandbox keeps only demo memory (which demo connections exist): nothing secret,
        # and it must work without any key configured.
        self._plain = aggregator.kind == "sandbox"

    def get(self, key):
        """The cached token data for ``key``, or None."""
        token = self._aggregator.env["bank.sync.token"].sudo()._find(self._aggregator, key)
        if not token or not token.value_encrypted:
            return None
        try:
            if self._plain:
                return json.loads(token.value_encrypted)
            return json.loads(self._aggregator._decrypt(token.value_encrypted))
        except (UserError, ValueError):
            # A rotated-away key or a corrupt row only costs a new login.
            return None

    def set(self, key, value):
        """Remember token data for ``key``."""
        text = json.dumps(dict(value), default=str)
        stored = text if self._plain else self._aggregator._encrypt(text)
        self._aggregator.env["bank.sync.token"].sudo()._store(self._aggregator, key, stored)


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
            url = f"{aggregator._get_base_url()}/bank_sync/webhook/{aggregator.id}"
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
    # Constraints and CRUD
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
        from bank_sync_bridge import crypto  # noqa: PLC0415 (loaded where needed only)

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
        from bank_sync_bridge import crypto  # noqa: PLC0415

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
        """Decrypted credentials for the aggregator (never log or display them)."""
        self.ensure_one()
        stored = self.sudo()
        credentials = {}
        if stored.client_id:
            credentials["client_id"] = stored.client_id
        for encrypted_field, key in SECRET_FIELDS.values():
            if stored[encrypted_field]:
                credentials[key] = self._decrypt(stored[encrypted_field])
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

    def _get_client_options(self):
        self.ensure_one()
        options = {"environment": self.environment}
        if self.kind == "sandbox":
            options["hosted_url"] = self._get_base_url() + SANDBOX_HOSTED_ROUTE
            options["seed"] = self.sandbox_seed or self.company_id.id
        return options

    def _get_token_store(self):
        from bank_sync_bridge.providers import MemoryTokenStore  # noqa: PLC0415

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

    def _get_client(self, **kwargs):
        """The package's client of this aggregator (``bank_sync_bridge.providers``).

        Extra keyword arguments (``clock``, ``session``...) go to the client's constructor.
        """
        self.ensure_one()
        from bank_sync_bridge.providers import ProviderConfig, get_provider  # noqa: PLC0415

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
