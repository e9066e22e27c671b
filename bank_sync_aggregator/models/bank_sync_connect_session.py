from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError

from bank_sync_bridge import signing
from bank_sync_bridge.errors import BankSyncError

from ..rights import ACCOUNTING_MANAGER, check_rights
from ..utils import aggregator_errors

#: How long the user has to complete the aggregator's hosted page.
SESSION_LIFETIME = timedelta(minutes=30)
#: How long after a refused bank login its "Try again" still opens the bank's page.
RETRY_LIFETIME = timedelta(hours=1)
#: Scope of the HMAC key, so that our states can never pass for another signed value.
STATE_SCOPE = "bank_sync_aggregator.connect_state"


class BankSyncConnectSession(models.Model):
    """One visit to an aggregator's hosted page, from the wizard to the return.

    The signed ``state`` sent to the aggregator carries this session's nonce; the callback
    accepts a state only if its signature is valid *and* its session is still open, then
    closes it: a state cannot be replayed, even within its lifetime.
    """

    _name = "bank.sync.connect.session"
    _description = "Bank Connection Session"
    _order = "id desc"

    nonce = fields.Char(required=True, readonly=True, index=True, copy=False)
    provider_id = fields.Many2one("bank.sync.provider", required=True, ondelete="cascade")
    company_id = fields.Many2one("res.company", required=True, ondelete="cascade")
    user_id = fields.Many2one("res.users", required=True, ondelete="cascade")
    # Set when renewing an existing connection (reconnect) rather than adding one.
    connection_id = fields.Many2one("bank.sync.connection", ondelete="cascade")
    institution_id = fields.Char()
    expires_at = fields.Datetime(required=True)
    used_at = fields.Datetime(readonly=True)
    # Refused or cancelled with nothing kept at the aggregator: "Try again" may open one new
    # visit for the same bank, once, within RETRY_LIFETIME.
    retry_allowed = fields.Boolean(string="Can be tried again", readonly=True, copy=False)

    _sql_constraints = [
        ("nonce_uniq", "UNIQUE(nonce)", "A connection session nonce is used once."),
    ]

    # -------------------------------------------------------------------------
    # Opening a hosted page
    # -------------------------------------------------------------------------

    @api.model
    def _open(self, aggregator, institution_id=None, connection=None):
        """Start a hosted page session at the aggregator; return its URL."""
        aggregator.ensure_one()
        check_rights(aggregator, ACCOUNTING_MANAGER)
        if not aggregator.active or not aggregator.company_id.bank_sync_enabled:
            raise UserError(
                self.env._(
                    "Bank synchronisation is switched off for %(company)s: switch it on in "
                    "the Accounting settings first.",
                    company=aggregator.company_id.display_name,
                )
            )
        state = self._make_state(aggregator)
        self.sudo().create(
            {
                "nonce": self._read_state(state)["nonce"],
                "provider_id": aggregator.id,
                "company_id": aggregator.company_id.id,
                "user_id": self.env.user.id,
                "connection_id": connection.id if connection else False,
                "institution_id": institution_id or False,
                "expires_at": fields.Datetime.now() + SESSION_LIFETIME,
            }
        )
        locale = (self.env.lang or "en_US").split("_")[0]
        with aggregator_errors(aggregator):
            client = aggregator._get_client()
            if connection:
                hosted = client.start_reconnect(
                    connection.remote_id,
                    callback_url=aggregator._get_callback_url(),
                    state=state,
                    locale=locale,
                )
            else:
                hosted = client.start_connect(
                    callback_url=aggregator._get_callback_url(),
                    state=state,
                    institution_id=institution_id or None,
                    locale=locale,
                    user_email=self.env.user.email or None,
                )
        return hosted.url

    def _retry(self):
        """A new visit to the aggregator's page for the same bank (or the same connection)
        as this finished one, without the consent step again; return its URL. The rights
        are checked again by :meth:`_open`."""
        self.ensure_one()
        # Sessions are the system's records (no access rights for users): read as such, then
        # open the new one as the user.
        finished = self.sudo()
        if not finished.retry_allowed or finished.used_at < fields.Datetime.now() - RETRY_LIFETIME:
            raise UserError(
                self.env._(
                    "This bank login cannot be tried again from here any more: add the bank "
                    "again from the bank connections."
                )
            )
        # One new visit per refusal: a replayed "Try again" opens no second login.
        finished.retry_allowed = False
        return self._open(
            finished.provider_id.with_env(self.env),
            institution_id=finished.institution_id or None,
            connection=finished.connection_id.with_env(self.env) or None,
        )

    # -------------------------------------------------------------------------
    # Signed state
    # -------------------------------------------------------------------------

    @api.model
    def _database_tag(self):
        # A short tag of the database uuid: the state must stay under 100 characters (Bridge's
        # limit), and the signing key already differs per database.
        return (self.env["ir.config_parameter"].sudo().get_param("database.uuid") or "")[:8]

    @api.model
    def _signing_key(self):
        # Derived from database.secret: never leaves the database, differs per database,
        # and is scoped so the same secret signs nothing else of ours.
        secret = self.env["ir.config_parameter"].sudo().get_param("database.secret")
        return f"{STATE_SCOPE}:{secret}"

    @api.model
    def _make_state(self, aggregator):
        """A signed state bound to this database, company, user and aggregator."""
        payload = {
            "d": self._database_tag(),
            "c": aggregator.company_id.id,
            "u": self.env.user.id,
            "p": aggregator.id,
        }
        ttl = int(SESSION_LIFETIME.total_seconds())
        return signing.make_state(self._signing_key(), payload, ttl)

    @api.model
    def _read_state(self, state):
        return signing.read_state(self._signing_key(), state)

    @api.model
    def _consume(self, state):
        """The session a returned ``state`` belongs to, closed so it cannot be used again.

        Raises :class:`UserError` with a message for the user when the state is forged,
        expired, for another database, company, user or aggregator, or already used, and
        :class:`AccessError` when the user is no longer an accounting manager of its company.
        Nothing is asked of the aggregator before: the session is closed first.
        """
        invalid = self.env._(
            "This bank connection link is not valid: it was altered, comes from another "
            "database or user, or was already used. Start again from Odoo."
        )
        try:
            payload = self._read_state(state or "")
        except BankSyncError as error:
            if "expire" in str(error).lower():
                raise UserError(
                    self.env._(
                        "This bank connection link has expired. Start again from Odoo: the "
                        "bank's page must be completed within %(minutes)s minutes.",
                        minutes=int(SESSION_LIFETIME.total_seconds() // 60),
                    )
                ) from error
            raise UserError(invalid) from error
        if (
            payload.get("d") != self._database_tag()
            or payload.get("u") != self.env.user.id
            or payload.get("c") not in self.env.user.company_ids.ids
        ):
            raise UserError(invalid)
        # Closing the session in one statement makes two concurrent returns race safely:
        # only one of them gets the row back.
        self.env.cr.execute(
            """
            UPDATE bank_sync_connect_session
               SET used_at = now() AT TIME ZONE 'UTC'
             WHERE nonce = %s AND used_at IS NULL AND user_id = %s AND company_id = %s
                   AND provider_id = %s
         RETURNING id, expires_at < now() AT TIME ZONE 'UTC'
            """,
            (payload["nonce"], self.env.user.id, payload.get("c"), payload.get("p")),
        )
        row = self.env.cr.fetchone()
        if not row:
            raise UserError(invalid)
        session_id, expired = row
        session = self.sudo().browse(session_id)
        session.invalidate_recordset(["used_at"])
        # Only an accounting manager of the state's company completes it (whichever company
        # the user has selected since); the session is closed anyway.
        in_company = self.with_context(allowed_company_ids=[payload["c"]])
        check_rights(in_company, ACCOUNTING_MANAGER, in_company.env.companies, operation=None)
        if expired:
            raise UserError(
                self.env._("This bank connection link has expired. Start again from Odoo.")
            )
        if not session.provider_id.active:
            raise UserError(
                self.env._(
                    "The company no longer uses %(aggregator)s: this bank connection cannot "
                    "be completed.",
                    aggregator=session.provider_id.name,
                )
            )
        return session

    def _complete(self, result):
        """Record what the aggregator says after a successful hosted page; return the
        connection (read from the aggregator: the callback itself is only a hint)."""
        self.ensure_one()
        aggregator = self.provider_id
        remote_id = result.connection_id or self.connection_id.remote_id
        if not remote_id:
            raise UserError(
                self.env._(
                    "%(aggregator)s did not say which connection was made. Open the bank "
                    'connections and use "Update from the aggregator" in a moment.',
                    aggregator=aggregator.name,
                )
            )
        Connection = self.env["bank.sync.connection"]
        with aggregator_errors(aggregator):
            client = aggregator._get_client()
            # The explanation in every active language: each user reads it in their own.
            remote, messages = Connection._read_remote(client, remote_id)
            accounts = client.list_accounts(remote_id)
        is_new = not aggregator.connection_ids.filtered(lambda c: c.remote_id == remote_id)
        connection = aggregator._upsert_connection(remote)
        connection._upsert_accounts(accounts)
        if is_new:
            # The health policy from the first observation: a connection made in "Action
            # needed" (strong authentication still to do) alerts now, once, not at the first
            # failed import.
            connection._update_health(remote, messages=messages)
        else:
            # A renewal: close the alert if the connection works again, catch up the gap.
            connection._after_reconnect(remote, messages=messages)
        if self.connection_id and self.connection_id != connection:
            # The aggregator made a new connection instead of renewing the old one.
            self.connection_id.message_post(
                body=self.env._(
                    "Renewed as a new connection: %(name)s", name=connection.display_name
                )
            )
        connection.message_post(
            body=(
                self.env._(
                    "Connection added by %(user)s with %(count)s account(s).",
                    user=self.user_id.name,
                    count=len(connection.account_ids),
                )
                if is_new
                else self.env._("Connection renewed by %(user)s.", user=self.user_id.name)
            )
        )
        return connection

    @api.autovacuum
    def _gc_sessions(self):
        limit = fields.Datetime.now() - timedelta(days=2)
        self.sudo().search([("expires_at", "<", limit)]).unlink()
