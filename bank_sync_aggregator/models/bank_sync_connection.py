import logging

from odoo import Command, api, fields, models
from odoo.exceptions import UserError
from odoo.tools.misc import format_date

from bank_sync_bridge import errors, health
from bank_sync_bridge.model import ActionReason, ConnectionState

from ..const import RECONNECT_ROUTE
from ..rights import ACCOUNTING_MANAGER, check_rights
from ..utils import aggregator_errors, describe_error, naive_utc, one_by_one

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
    # Not tracked by Odoo, whose chatter shows an empty value as "None": write() logs the
    # reason and the consent's end when they are set (_log_reason_and_consent).
    reason = fields.Selection(ACTION_REASONS, readonly=True)
    # The aggregator's own words, one translation per active language: each refresh reads
    # them in every language (see _read_remote), so everyone reads them in their own.
    message = fields.Text(readonly=True, translate=True)
    # Raw vendor status (e.g. Bridge "1010"), for support.
    vendor_status = fields.Char(readonly=True)
    consent_expiry = fields.Datetime(readonly=True)
    last_sync_date = fields.Datetime(
        string="Last successful sync",
        readonly=True,
        help="When operations were last imported successfully from this connection.",
    )
    account_ids = fields.One2many("bank.sync.account", "connection_id", string="Accounts")
    account_count = fields.Integer(compute="_compute_account_count")
    # Shared accounts not linked to a journal yet: the form asks to link them.
    unlinked_account_count = fields.Integer(compute="_compute_unlinked_account_count")
    run_ids = fields.One2many("bank.sync.run", "connection_id", string="Synchronisations")
    run_count = fields.Integer(compute="_compute_run_count")

    # Health (rules in bank_sync_bridge.health): the failure streak, the open incident, the
    # consent reminders already sent.
    health_failed_days = fields.Integer(
        string="Consecutive failed days",
        readonly=True,
        copy=False,
        help="Days on which this connection was seen failing since it was last OK. Temporary "
        "failures alert the accounting managers only after the number of days set in the "
        "settings.",
    )
    # The last day seen failing: a failure counts once per day.
    health_last_failed_date = fields.Date(readonly=True, copy=False)
    health_failing_since = fields.Date(string="Failing since", readonly=True, copy=False)
    # Key of the incident whose alert went out ("action_needed:sca"...); empty when none is
    # open. One alert per incident: the same problem seen again alerts nobody twice.
    health_incident = fields.Char(readonly=True, copy=False)
    health_alert_date = fields.Datetime(string="Alert sent on", readonly=True, copy=False)
    # The smallest reminder threshold (15, 3, 1 days) already sent for the expiry date in
    # consent_reminder_expiry; both are reset when the consent is renewed.
    consent_reminder_sent = fields.Integer(readonly=True, copy=False)
    consent_reminder_expiry = fields.Datetime(readonly=True, copy=False)
    consent_state = fields.Selection(
        [
            ("none", "No end date"),
            ("ok", "Valid"),
            ("soon", "Expires soon"),
            ("urgent", "Expires in a few days"),
            ("expired", "Expired"),
            ("revoked", "Revoked"),
        ],
        string="Consent",
        compute="_compute_consent_state",
        help="Colour of the consent's end date: the bank asks to renew it every 90 or 180 days.",
    )
    consent_days_left = fields.Integer(compute="_compute_consent_state")
    # Switched off for the company, or importing (a first import, a long one): said on the
    # lists and the form instead of a plain "OK".
    bank_sync_enabled = fields.Boolean(
        related="company_id.bank_sync_enabled", string="Synchronisation on"
    )
    sync_status = fields.Selection(
        [("off", "Synchronisation off"), ("importing", "Import in progress")],
        string="Synchronisation",
        compute="_compute_sync_status",
    )
    sync_progress = fields.Text(string="Import progress", compute="_compute_sync_status")
    # For the e-mails: what is wrong in the reader's language, and the button's link.
    health_problem = fields.Char(compute="_compute_health_problem")
    reconnect_url = fields.Char(compute="_compute_reconnect_url")

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

    @api.depends("institution_name")
    def _compute_display_name(self):
        # The bank's name only: the aggregator's id is technical (shown on the form).
        for connection in self:
            connection.display_name = connection.institution_name or self.env._("Bank")

    @api.depends("account_ids.journal_id", "account_ids.state")
    def _compute_unlinked_account_count(self):
        for connection in self:
            connection.unlinked_account_count = len(
                connection.account_ids.filtered(lambda a: a.state == "active" and not a.journal_id)
            )

    def _compute_run_count(self):
        counts = self.env["bank.sync.run"]._count_by("connection_id", self)
        for connection in self:
            connection.run_count = counts.get(connection, 0)

    @api.depends("state", "reason")
    @api.depends_context("lang")
    def _compute_health_problem(self):
        states = dict(self._fields["state"]._description_selection(self.env))
        reasons = dict(self._fields["reason"]._description_selection(self.env))
        for connection in self:
            if connection.reason and connection.state in ("action_needed", "disconnected"):
                connection.health_problem = reasons.get(connection.reason)
            else:
                connection.health_problem = states.get(connection.state)

    def _compute_reconnect_url(self):
        # Logs in if needed, then opens the aggregator's page on this same connection
        # (controllers/health.py): a link in an e-mail cannot hold a hosted session, which
        # expires within minutes.
        for connection in self:
            connection.reconnect_url = (
                f"{connection.get_base_url()}{RECONNECT_ROUTE}/{connection.id}"
                if connection.id
                else False
            )

    @api.depends("consent_expiry", "state", "active")
    def _compute_consent_state(self):
        now = fields.Datetime.now()
        for connection in self:
            if connection.state == "disconnected" or not connection.active:
                # Deleted: the consent was revoked at the aggregator, whatever its end date.
                connection.consent_state = "revoked"
                connection.consent_days_left = 0
                continue
            expiry = connection.consent_expiry
            connection.consent_state = health.consent_urgency(expiry or None, now).value
            connection.consent_days_left = health.consent_days_left(expiry, now) if expiry else 0

    @api.depends("company_id.bank_sync_enabled", "account_ids.sync_status")
    @api.depends_context("lang")
    def _compute_sync_status(self):
        for connection in self:
            importing = connection.account_ids.filtered(lambda a: a.sync_status == "importing")
            if not connection.bank_sync_enabled:
                connection.sync_status = "off"
            elif importing:
                connection.sync_status = "importing"
            else:
                connection.sync_status = False
            connection.sync_progress = (
                "\n".join(f"{a.name}: {a.sync_progress}" for a in importing)
                if connection.sync_status == "importing"
                else False
            )

    # -------------------------------------------------------------------------
    # CRUD
    # -------------------------------------------------------------------------

    def write(self, vals):
        before = (
            {connection: (connection.reason, connection.consent_expiry) for connection in self}
            if {"reason", "consent_expiry"} & set(vals)
            else {}
        )
        result = super().write(vals)
        for connection, (reason, expiry) in before.items():
            connection._log_reason_and_consent(reason, expiry)
        return result

    def _log_reason_and_consent(self, reason, expiry):
        """Say in the chatter what a new reason or consent end is (never an empty value)."""
        self.ensure_one()
        notes = []
        if self.reason and self.reason != reason:
            reasons = dict(self._fields["reason"]._description_selection(self.env))
            notes.append(self.env._("Reason: %(reason)s", reason=reasons[self.reason]))
        if self.consent_expiry and self.consent_expiry != expiry:
            notes.append(
                self.env._(
                    "Consent valid until %(date)s.",
                    date=format_date(self.env, self.consent_expiry),
                )
            )
        if notes:
            self._message_log(body=" ".join(notes))

    @api.ondelete(at_uninstall=False)
    def _unlink_except_history(self):
        # Imported operations point at their synchronised account: a connection that brought
        # some is disconnected and archived ("Delete connection") rather than deleted, so that
        # its accounts, runs and ignored operations stay with them.
        accounts = self.with_context(active_test=False).account_ids
        if accounts and self.env["account.bank.statement.line"].sudo().search_count(
            [("bank_sync_account_id", "in", accounts.ids)], limit=1
        ):
            raise UserError(
                self.env._(
                    'These bank connections have imported operations: use "Delete connection", '
                    "which revokes them at the aggregator and keeps their history."
                )
            )

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
        check_rights(self, ACCOUNTING_MANAGER)
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
        check_rights(self, ACCOUNTING_MANAGER)
        url = self.env["bank.sync.connect.session"]._open(self.provider_id, connection=self)
        return {"type": "ir.actions.act_url", "url": url, "target": "self"}

    def action_open_link_all(self):
        """The screen that links every account of this connection at once."""
        self.ensure_one()
        check_rights(self, ACCOUNTING_MANAGER)
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "bank_sync_aggregator.bank_sync_link_all_wizard_action"
        )
        action["context"] = {"default_connection_id": self.id}
        return action

    def action_view_accounts(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "bank_sync_aggregator.bank_sync_account_action"
        )
        action["domain"] = [("connection_id", "=", self.id)]
        action["context"] = {"default_connection_id": self.id}
        return action

    def action_view_runs(self):
        self.ensure_one()
        return self.env["bank.sync.run"]._action_for([("connection_id", "=", self.id)])

    def action_sync_now(self):
        """Sync every linked account of these connections (first part now, rest in background)."""
        check_rights(self, ACCOUNTING_MANAGER)
        return self.account_ids._sync_now(self.company_id)

    def action_refresh_from_aggregator(self):
        """Read the connection and its accounts again from the aggregator."""
        check_rights(self, ACCOUNTING_MANAGER)
        for connection in self:
            with aggregator_errors(connection.provider_id, bank=connection.display_name):
                client = connection.provider_id._get_client()
                remote, messages = self._read_remote(client, connection.remote_id)
                accounts = client.list_accounts(connection.remote_id)
            before = connection._refresh_snapshot()
            connection.provider_id._upsert_connection(remote)
            connection._upsert_accounts(accounts)
            # What the aggregator says now is an observation like the daily check's: a
            # problem found here alerts at once, a connection working again closes its alert.
            connection._update_health(remote, messages=messages)
            changes = connection._refresh_changes(before)
        if len(self) != 1:
            return True
        # Say what the aggregator answered, even when nothing changed.
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Updated from the aggregator"),
                "message": "\n".join(changes)
                or self.env._("Nothing changed: %(bank)s is up to date.", bank=self.display_name),
                "type": "success" if self.state == "ok" else "warning",
                "sticky": False,
                # Reload the form so that it shows the new state and accounts.
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def _refresh_snapshot(self):
        self.ensure_one()
        return {
            "state": self.state,
            "message": self.message or "",
            "accounts": {a.remote_id: a.state for a in self.account_ids},
        }

    def _refresh_changes(self, before):
        """Sentences saying what an update from the aggregator changed."""
        self.ensure_one()
        changes = []
        states = dict(self._fields["state"]._description_selection(self.env))
        if self.state != before["state"]:
            changes.append(
                self.env._(
                    "State: %(old)s → %(new)s.",
                    old=states.get(before["state"]),
                    new=states.get(self.state),
                )
            )
        if (self.message or "") != before["message"] and self.message:
            changes.append(self.env._("Message: %(message)s", message=self.message))
        accounts = {a.remote_id: a.state for a in self.account_ids}
        added = len(set(accounts) - set(before["accounts"]))
        stopped = sum(
            1
            for remote_id, state in accounts.items()
            if state == "inactive" and before["accounts"].get(remote_id) == "active"
        )
        if added:
            changes.append(self.env._("%(count)s new account(s).", count=added))
        if stopped:
            changes.append(self.env._("%(count)s account(s) no longer shared.", count=stopped))
        return changes

    # -------------------------------------------------------------------------
    # Business: what the aggregator says
    # -------------------------------------------------------------------------

    @api.model
    def _read_remote(self, client, remote_id):
        """Read a connection from the aggregator once per active language.

        Returns ``(remote, messages)``: the :class:`bank_sync_bridge.model.Connection` read in
        the current user's language, and its explanation by Odoo language code
        (``{"en_US": ..., "fr_FR": ...}``). One call per distinct aggregator locale ("fr" for
        fr_FR and fr_BE): the aggregators translate their explanation themselves (Bridge
        through ``Accept-Language``), so it must be asked for in each language. Called only
        when the state is refreshed (callback, update button, daily check, webhook, a failed
        import), never to display a page.
        """
        langs = [code for code, _name in self.env["res.lang"].get_installed()]
        if "en_US" not in langs:
            langs.append("en_US")  # the value every missing translation falls back to
        current = self.env.lang or "en_US"
        if current not in langs:
            langs.append(current)
        langs.sort(key=lambda code: code != current)  # the user's language first
        by_locale = {}
        for lang in langs:
            locale = _locale(lang)
            if locale not in by_locale:
                by_locale[locale] = client.get_connection(remote_id, locale=locale)
        messages = {lang: by_locale[_locale(lang)].message or False for lang in langs}
        return by_locale[_locale(current)], messages

    def _write_message(self, messages):
        """Store the aggregator's explanation: ``messages`` by language (from
        :meth:`_read_remote`), or one text (or False) for every language."""
        langs = {code for code, _name in self.env["res.lang"].get_installed()} | {"en_US"}
        if not isinstance(messages, dict):
            messages = dict.fromkeys(langs, messages or False)
        fallback = messages.get("en_US") or next((m for m in messages.values() if m), False)
        wanted = {lang: messages.get(lang) or fallback for lang in langs}
        for connection in self:
            current = {lang: connection.with_context(lang=lang).message or False for lang in wanted}
            if current == wanted:
                continue
            # Emptied first, so that no translation of an older explanation survives.
            connection.write({"message": False})
            if not fallback:
                continue
            connection.with_context(lang="en_US").write({"message": wanted["en_US"]})
            for lang, text in wanted.items():
                if lang != "en_US":
                    connection.with_context(lang=lang).write({"message": text})

    @api.model
    def _values_from_remote(self, remote):
        """Field values of a :class:`bank_sync_bridge.model.Connection`."""
        vals = {
            "remote_id": remote.remote_id,
            "state": remote.state.value,
            "reason": remote.reason.value if remote.reason else False,
            "message": remote.message or False,
            "vendor_status": remote.vendor_status or False,
            "consent_expiry": naive_utc(remote.consent_expires_at),
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
            aggregator = connection.provider_id
            if aggregator.active:
                with aggregator_errors(aggregator, bank=connection.display_name):
                    aggregator._get_client().delete_connection(connection.remote_id)
                continue
            try:
                aggregator._get_client().delete_connection(connection.remote_id)
            except Exception as error:
                # The company left this aggregator (and maybe its contract): say it on the
                # connection rather than blocking the clean-up.
                connection.message_post(
                    body=self.env._(
                        "The connection could not be revoked at %(aggregator)s: %(detail)s",
                        aggregator=aggregator.name,
                        detail=describe_error(aggregator, error, bank=connection.display_name),
                    )
                )

    def _switch_away_from_aggregator(self):
        """The company chose another aggregator: revoke what can be, keep everything here."""
        for connection in self:
            note = self.env._(
                "Disconnected because the company now uses another aggregator. Imported "
                "operations are kept."
            )
            try:
                connection.provider_id._get_client().delete_connection(connection.remote_id)
            except Exception as error:
                note += " " + self.env._(
                    "It could not be revoked at %(aggregator)s: %(detail)s",
                    aggregator=connection.provider_id.name,
                    detail=describe_error(
                        connection.provider_id, error, bank=connection.display_name
                    ),
                )
            connection._mark_disconnected(note)

    def _mark_disconnected(self, note):
        self.write({"state": "disconnected", "reason": False})
        self.account_ids.write({"journal_id": False, "state": "inactive"})
        for connection in self:
            connection.message_post(body=note)

    # -------------------------------------------------------------------------
    # Health: observations, alerts, consent reminders
    # -------------------------------------------------------------------------

    def _update_health(self, connection_data, messages=None):
        """Apply a new observation of this connection and alert or resolve accordingly.

        ``connection_data`` is a :class:`bank_sync_bridge.model.Connection` read from the
        aggregator, or a dict of field values (at least ``state``). The state, reason and
        message are written (``messages``, the explanation by language from
        :meth:`_read_remote`, replaces the single message of ``connection_data``); the alert
        policy of :func:`bank_sync_bridge.health.assess_connection` decides whether the
        accounting managers get an activity and an e-mail now (once per incident) or whether
        the open incident is over.
        """
        self.ensure_one()
        if isinstance(connection_data, dict):
            vals = dict(connection_data)
        else:
            vals = self._values_from_remote(connection_data)
        vals.pop("remote_id", None)
        if messages is None and "message" in vals:
            messages = vals["message"]
        vals.pop("message", None)
        state = ConnectionState(vals.get("state") or self.state)
        reason_code = vals.get("reason", self.reason)
        reason = ActionReason(reason_code) if reason_code else None
        if vals.get("consent_expiry"):
            # Stored to the second: compare what will be stored, or every observation of a
            # millisecond timestamp (Bridge) would look like a renewal and repeat reminders.
            vals["consent_expiry"] = fields.Datetime.to_datetime(vals["consent_expiry"]).replace(
                microsecond=0
            )
        if "consent_expiry" in vals and vals["consent_expiry"] != self.consent_reminder_expiry:
            # A renewed (or first known) consent: its reminders start afresh.
            vals.update(consent_reminder_expiry=vals["consent_expiry"], consent_reminder_sent=0)
        record = health.HealthRecord(
            failed_days=self.health_failed_days,
            last_failed_day=self.health_last_failed_date or None,
            failing_since=self.health_failing_since or None,
            incident=self.health_incident or None,
        )
        decision = health.assess_connection(
            record,
            state,
            reason,
            fields.Date.context_today(self),
            failure_alert_days=self.company_id.bank_sync_failure_alert_days
            or health.DEFAULT_FAILURE_ALERT_DAYS,
        )
        new = decision.record
        vals.update(
            health_failed_days=new.failed_days,
            health_last_failed_date=new.last_failed_day or False,
            health_failing_since=new.failing_since or False,
            health_incident=new.incident or False,
        )
        if decision.raise_alert:
            vals["health_alert_date"] = fields.Datetime.now()
        self.write(vals)
        if messages is not None:
            self._write_message(messages)
        if decision.resolved:
            self._health_resolve_alert(decision.resolved, superseded=bool(decision.raise_alert))
        if decision.raise_alert:
            self._health_raise_alert(decision.raise_alert)
        return decision

    def _record_sync_error(self, error):
        """Turn an error of the package met while synchronising into a health observation.

        A rate limit is not news about the bank (the run backs off and resumes), so it changes
        nothing; an action required by the user alerts at once; anything else counts as a
        temporary failure, alerted only when it lasts.
        """
        self.ensure_one()
        if isinstance(error, errors.RateLimited):
            return None
        if isinstance(error, errors.ActionRequired):
            vals = {"state": "action_needed", "reason": error.reason.value}
        elif self.state in ("action_needed", "disconnected"):
            # The user's action is still awaited: a failure on top of it changes nothing.
            return None
        else:
            vals = {"state": "temporary_failure", "reason": False}
        if isinstance(error, errors.BankSyncError):
            vals["message"] = error.message
        if (self.state, self.reason or False) == (vals["state"], vals["reason"]) and self.message:
            # Still the same problem: its explanation is already there in every language, so
            # repeated failures cost no further call.
            vals.pop("message", None)
            return self._update_health(vals)
        return self._update_health(vals, messages=self._explain_error(vals["state"]))

    def _explain_error(self, state):
        """The aggregator's own explanation of the problem, by language, or None.

        The package's error messages are in English only: the connection's explanation is
        read again in every language, and kept only when the aggregator agrees that the
        connection is in ``state`` (a failed call on a working connection keeps the error's
        own words).
        """
        try:
            remote, messages = self._read_remote(self.provider_id._get_client(), self.remote_id)
        except Exception as error:  # the aggregator may well be what failed
            _logger.info("Explanation of connection %s not read again: %s", self.id, error)
            return None
        if remote.state.value != state or not any(messages.values()):
            return None
        return messages

    def _record_sync_success(self):
        """An import just succeeded: a temporary failure is over (alert resolved, if any)."""
        self.ensure_one()
        if self.state == "temporary_failure":
            return self._update_health({"state": "ok", "reason": False, "message": False})
        return None

    def _refresh_health_from_aggregator(self):
        """Read each connection's state from its aggregator and apply it (daily check).

        The check itself failing is an observation too: the aggregator or the bank being
        unreachable is a temporary failure; a rate limit is skipped until the next check.
        """
        for connection in self:
            client = connection.provider_id._get_client()
            try:
                remote, messages = self._read_remote(client, connection.remote_id)
            except Exception as error:  # every failure is an observation, none is raised
                connection._record_sync_error(error)
                continue
            connection._update_health(remote, messages=messages)

    def _health_alert_users(self):
        """Who is told: the company's chosen recipients, else its accounting managers."""
        self.ensure_one()
        return self.company_id._bank_sync_alert_users()

    def _health_incident_summary(self, incident):
        if incident == health.INCIDENT_TEMPORARY_FAILURE:
            return self.env._(
                "%(bank)s: no synchronisation for %(days)s days",
                bank=self.institution_name or self.remote_id,
                days=self.health_failed_days,
            )
        if incident == health.INCIDENT_DISCONNECTED:
            return self.env._(
                "%(bank)s: the bank connection was closed",
                bank=self.institution_name or self.remote_id,
            )
        return self.env._(
            "%(bank)s: the bank connection needs your action",
            bank=self.institution_name or self.remote_id,
        )

    def _health_raise_alert(self, incident):
        """An activity for each alert recipient and one e-mail, in each recipient's language."""
        self.ensure_one()
        users = self._health_alert_users()
        summary = self._health_incident_summary(incident)
        for user in users:
            # The activity's summary and note are stored text: write them in its reader's
            # language (the aggregator's explanation included).
            mine = self.with_context(lang=user.lang or "en_US")
            reasons = dict(mine._fields["reason"]._description_selection(mine.env))
            mine.with_context(mail_activity_quick_update=True).activity_schedule(
                "bank_sync_aggregator.mail_activity_type_connection_alert",
                summary=mine._health_incident_summary(incident),
                note=mine.message or reasons.get(self.reason, ""),
                user_id=user.id,
            )
        self._health_send_mail(
            "bank_sync_aggregator.mail_template_connection_alert", users.partner_id
        )
        self._message_log(body=self.env._("Alert sent: %(summary)s", summary=summary))

    def _health_resolve_alert(self, incident, superseded=False):
        """Close the incident's activities; the chatter keeps the trace."""
        self.ensure_one()
        if superseded:
            feedback = self.env._("Replaced by a new problem on the same connection.")
        else:
            feedback = self.env._("Resolved automatically: the connection works again.")
        self.activity_feedback(
            ["bank_sync_aggregator.mail_activity_type_connection_alert"], feedback=feedback
        )
        if not superseded:
            self._message_log(body=feedback)

    def _health_send_mail(self, template_xmlid, partners, render_context=None, record=None):
        """Send ``template_xmlid`` about ``record`` (default: this connection) to ``partners``,
        each in their own language (the template has no language of its own)."""
        template = self.env.ref(template_xmlid)
        record = record or self
        mails = self.env["mail.mail"]
        by_lang = {}
        for partner in partners.filtered("email"):
            by_lang.setdefault(partner.lang or "en_US", self.env["res.partner"])
            by_lang[partner.lang or "en_US"] |= partner
        for lang, group in by_lang.items():
            mail_id = template.with_context(lang=lang, **(render_context or {})).send_mail(
                record.id,
                email_values={"recipient_ids": [Command.set(group.ids)]},
            )
            mails |= mails.browse(mail_id)
        return mails

    def _check_consent_reminders(self):
        """E-mail the reminder due (15, 3 or 1 days before the consent ends), each once."""
        now = fields.Datetime.now()
        for connection in self.filtered("consent_expiry"):
            last_sent = connection.consent_reminder_sent or None
            if connection.consent_reminder_expiry != connection.consent_expiry:
                last_sent = None
            due = health.due_consent_reminder(connection.consent_expiry, now, last_sent)
            if due is None:
                continue
            days_left = health.consent_days_left(connection.consent_expiry, now)
            connection._health_send_mail(
                "bank_sync_aggregator.mail_template_consent_expiring",
                connection._health_alert_users().partner_id,
                render_context={"days_left": days_left},
            )
            connection.write(
                {"consent_reminder_sent": due, "consent_reminder_expiry": connection.consent_expiry}
            )
            connection._message_log(
                body=self.env._(
                    "Consent reminder sent: it expires in %(days)s day(s).", days=days_left
                )
            )

    # -------------------------------------------------------------------------
    # Background work: events, reconnections, the daily health check
    # -------------------------------------------------------------------------

    def _sync_after_event(self, accounts=None):
        """After an aggregator event: re-read the connection, then synchronise its linked
        accounts (or just ``accounts``) when it works. Returns a note for the event log."""
        self.ensure_one()
        self._refresh_health_from_aggregator()
        if self.state != "ok":
            return self.env._(
                "Connection state updated (%(state)s); nothing to synchronise.",
                state=dict(self._fields["state"]._description_selection(self.env))[self.state],
            )
        Account = self.env["bank.sync.account"]
        targets = (accounts or self.account_ids).filtered_domain(Account._domain_syncable())
        if not targets:
            return self.env._("No linked account to synchronise.")
        targets._request_sync("webhook")
        return self.env._("Synchronisation of %(count)s account(s) started.", count=len(targets))

    def _after_reconnect(self, remote, messages=None):
        """After the user renewed this connection on the aggregator's page (callback).

        Every account keeps its journal (same connection, same remote ids); the alert closes
        when the aggregator says the connection works, and the operations missed meanwhile
        are imported in the background: the engine resumes from each account's stored
        cursor, which never moved past what was imported.
        """
        self.ensure_one()
        self._update_health(remote, messages=messages)
        if self.state not in ("ok", "syncing"):
            return self.env["bank.sync.account"]
        linked = self.account_ids.filtered_domain(self.env["bank.sync.account"]._domain_syncable())
        if linked:
            linked._request_sync("manual")
        return linked

    @api.model
    def _cron_check_health(self):
        """Daily health check: connection states (temporary-failure escalation), consent
        reminders, and accounts that stopped receiving operations."""
        connections = self.search(
            [
                ("state", "!=", "disconnected"),
                ("provider_id.active", "=", True),
                ("company_id.bank_sync_enabled", "=", True),
            ]
        )
        one_by_one(
            connections,
            lambda connection: connection._check_health(),
            lambda connection, _error: _logger.exception(
                "Health check of bank connection %s failed", connection.id
            ),
        )

    def _check_health(self):
        """The daily check of one connection: its state read again, the consent reminder
        due, its accounts that went silent."""
        self.ensure_one()
        self._refresh_health_from_aggregator()
        self._check_consent_reminders()
        self.account_ids._check_stall()


def _locale(lang):
    """The aggregators' locale ("fr") of an Odoo language code ("fr_FR")."""
    return (lang or "en_US").split("_")[0]
