import logging
from datetime import timezone

from odoo import api, fields, models
from odoo.exceptions import UserError

_logger = logging.getLogger(__name__)

CONNECTION_STATES = [
    ("ok", "OK"),
    ("syncing", "Synchronising"),
    ("action_needed", "Action needed"),
    ("temporary_failure", "Temporary failure"),
    ("disconnected", "Disconnected"),
]
ACTION_REASONS = [
    ("sca", "Strong authentication required"),
    ("credentials", "Bank credentials to update"),
    ("bank_action", "Action required on the bank's website"),
    ("pro_validation", "Professional account to validate"),
    ("consent_expired", "Consent expired"),
    ("unsupported", "Not supported by the aggregator"),
]


class BankSyncConnection(models.Model):
    _name = "bank.sync.connection"
    _description = "Bank Connection"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _order = "company_id, institution_name, id"
    _rec_name = "institution_name"
    _check_company_auto = True

    active = fields.Boolean(default=True)
    provider_id = fields.Many2one(
        "bank.sync.provider",
        string="Aggregator",
        required=True,
        ondelete="restrict",
        check_company=True,
        index=True,
    )
    provider_kind = fields.Selection(related="provider_id.kind", string="Aggregator type")
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company, index=True
    )
    # Ids at the aggregator (Bridge "item", Linxo "connection"; Bridge "provider").
    remote_id = fields.Char(string="Connection ID", required=True, readonly=True, copy=False)
    institution_id = fields.Char(string="Bank ID", readonly=True)
    institution_name = fields.Char(string="Bank", readonly=True)
    institution_logo = fields.Char(string="Logo URL", readonly=True)
    state = fields.Selection(
        CONNECTION_STATES, required=True, default="ok", tracking=True, readonly=True
    )
    reason = fields.Selection(ACTION_REASONS, tracking=True, readonly=True)
    # The aggregator's own words, in the user's language when it supports it.
    message = fields.Text(readonly=True)
    # Raw vendor status (e.g. Bridge "1010"), for support.
    vendor_status = fields.Char(readonly=True)
    consent_expiry = fields.Datetime(readonly=True, tracking=True)
    last_sync_date = fields.Datetime(
        string="Last successful sync",
        readonly=True,
        help="When operations were last imported successfully from this connection.",
    )
    account_ids = fields.One2many("bank.sync.account", "connection_id", string="Accounts")
    account_count = fields.Integer(compute="_compute_account_count")

    _sql_constraints = [
        (
            "provider_remote_uniq",
            "UNIQUE(provider_id, remote_id)",
            "This bank connection is already registered.",
        ),
    ]

    # -------------------------------------------------------------------------
    # Computes
    # -------------------------------------------------------------------------

    @api.depends("account_ids")
    def _compute_account_count(self):
        for connection in self:
            connection.account_count = len(connection.account_ids)

    @api.depends("institution_name", "remote_id")
    def _compute_display_name(self):
        for connection in self:
            connection.display_name = (
                f"{connection.institution_name or self.env._('Bank')} ({connection.remote_id})"
            )

    # -------------------------------------------------------------------------
    # CRUD
    # -------------------------------------------------------------------------

    @api.ondelete(at_uninstall=False)
    def _unlink_revoke_at_aggregator(self):
        # The aggregator must stop reading the bank before we forget the connection, or a
        # consent would stay alive with nobody to see it.
        self._revoke_at_aggregator()

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_disconnect(self):
        """Revoke the connections at the aggregator and stop synchronising them.

        Imported operations and the connection's history stay; the journals are unlinked so
        they can be linked to a new connection.
        """
        self._revoke_at_aggregator()
        self._mark_disconnected(
            self.env._("Connection deleted by %(user)s.", user=self.env.user.name)
        )
        self.action_archive()
        return True

    def action_reconnect(self):
        """Open the aggregator's page on this same connection (renew consent, new password);
        its accounts and their journals stay linked."""
        self.ensure_one()
        url = self.env["bank.sync.connect.session"]._open(self.provider_id, connection=self)
        return {"type": "ir.actions.act_url", "url": url, "target": "self"}

    def action_view_accounts(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "bank_sync_aggregator.bank_sync_account_action"
        )
        action["domain"] = [("connection_id", "=", self.id)]
        action["context"] = {"default_connection_id": self.id}
        return action

    def action_refresh_from_aggregator(self):
        """Read the connection and its accounts again from the aggregator."""
        for connection in self:
            provider = connection.provider_id._get_provider()
            try:
                remote = provider.get_connection(
                    connection.remote_id, locale=connection._get_locale()
                )
                accounts = provider.list_accounts(connection.remote_id)
            except Exception as error:
                raise UserError(connection._format_provider_error(error)) from error
            connection.provider_id._upsert_connection(remote)
            connection._upsert_accounts(accounts)
        return True

    # -------------------------------------------------------------------------
    # Business
    # -------------------------------------------------------------------------

    def _get_locale(self):
        return (self.env.lang or "en_US").split("_")[0]

    @api.model
    def _values_from_remote(self, remote):
        """Field values of a :class:`bank_sync_bridge.model.Connection`."""
        vals = {
            "remote_id": remote.remote_id,
            "state": remote.state.value,
            "reason": remote.reason.value if remote.reason else False,
            "message": remote.message or False,
            "vendor_status": remote.vendor_status or False,
            "consent_expiry": _naive_utc(remote.consent_expires_at),
        }
        if remote.institution_id:
            vals["institution_id"] = remote.institution_id
        if remote.institution_name:
            vals["institution_name"] = remote.institution_name
        if remote.logo_url:
            vals["institution_logo"] = remote.logo_url
        return vals

    def _upsert_accounts(self, remote_accounts):
        """Create or update the accounts of this connection from the aggregator's list.

        Accounts that the aggregator no longer lists become inactive (never deleted: their
        journals and imported history stay).
        """
        self.ensure_one()
        Account = self.env["bank.sync.account"]
        existing = {account.remote_id: account for account in self.account_ids}
        to_create = []
        seen = set()
        for remote in remote_accounts:
            if remote.connection_id and remote.connection_id != self.remote_id:
                continue
            seen.add(remote.remote_id)
            vals = Account._values_from_remote(remote)
            if remote.remote_id in existing:
                existing[remote.remote_id].write(vals)
            else:
                to_create.append(dict(vals, connection_id=self.id))
        created = Account.create(to_create) if to_create else Account
        gone = self.account_ids.filtered(
            lambda account: account.remote_id not in seen and account.state != "inactive"
        )
        gone.write({"state": "inactive"})
        return created

    def _revoke_at_aggregator(self):
        for connection in self:
            try:
                connection.provider_id._get_provider().delete_connection(connection.remote_id)
            except Exception as error:
                if connection.provider_id.active:
                    raise UserError(connection._format_provider_error(error)) from error
                # The company left this aggregator (and maybe its contract): say it on the
                # connection rather than blocking the clean-up.
                connection.message_post(
                    body=self.env._(
                        "The connection could not be revoked at %(aggregator)s: %(detail)s",
                        aggregator=connection.provider_id.name,
                        detail=connection._format_provider_error(error),
                    )
                )

    def _switch_away_from_provider(self):
        """The company chose another aggregator: revoke what can be, keep everything here."""
        for connection in self:
            note = self.env._(
                "Disconnected because the company now uses another aggregator. Imported "
                "operations are kept."
            )
            try:
                connection.provider_id._get_provider().delete_connection(connection.remote_id)
            except Exception as error:
                note += " " + self.env._(
                    "It could not be revoked at %(aggregator)s: %(detail)s",
                    aggregator=connection.provider_id.name,
                    detail=connection._format_provider_error(error),
                )
            connection._mark_disconnected(note)

    def _mark_disconnected(self, note):
        self.write({"state": "disconnected", "reason": False})
        self.account_ids.write({"journal_id": False, "state": "inactive"})
        for connection in self:
            connection.message_post(body=note)

    def _format_provider_error(self, error):
        """A message for the user from an error of the package (never a secret)."""
        self.ensure_one()
        return self._describe_provider_error(self.provider_id, error, bank=self.display_name)

    @api.model
    def _describe_provider_error(self, provider, error, bank=None):
        """A message for the user from an error raised while talking to ``provider``."""
        from bank_sync_bridge.errors import BankSyncError  # noqa: PLC0415

        if isinstance(error, UserError):
            return error.args[0]
        if isinstance(error, BankSyncError):
            # The package's messages are written for people and never carry a secret.
            detail = error.message
        else:
            _logger.exception("Unexpected error from the aggregator %s", provider.kind)
            detail = self.env._("unexpected error, see the server log")
        if bank:
            return self.env._(
                "%(aggregator)s could not complete the request for %(bank)s: %(detail)s",
                aggregator=provider.name,
                bank=bank,
                detail=detail,
            )
        return self.env._(
            "%(aggregator)s could not complete the request: %(detail)s",
            aggregator=provider.name,
            detail=detail,
        )


def _naive_utc(value):
    """Odoo stores naive UTC datetimes."""
    if not value:
        return False
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value
