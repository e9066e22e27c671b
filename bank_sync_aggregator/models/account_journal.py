from odoo import api, fields, models
from odoo.tools.misc import format_date, format_datetime

from ..rights import ACCOUNTING_MANAGER, ACCOUNTING_USER, check_rights


class AccountJournal(models.Model):
    # The class name must stay AccountJournal: the Bank Feeds selection is extended through a
    # name-mangled private method of account's own AccountJournal.
    _inherit = "account.journal"

    bank_sync_account_ids = fields.One2many("bank.sync.account", "journal_id")
    bank_sync_account_id = fields.Many2one(
        "bank.sync.account",
        string="Synchronised account",
        compute="_compute_bank_sync_account_id",
        search="_search_bank_sync_account_id",
    )
    bank_sync_connection_id = fields.Many2one(
        related="bank_sync_account_id.connection_id", string="Bank connection"
    )
    bank_sync_connection_state = fields.Selection(
        related="bank_sync_account_id.connection_id.state", string="Connection state"
    )
    # Computed, not related: a related field copies ``translate`` from the connection's
    # message, and Odoo reads every translatable field of a chart-template model (journals
    # among them) as an SQL column when a language is installed
    # (account.chart.template._load_translations): a non-stored one breaks that for everyone.
    bank_sync_connection_message = fields.Text(
        string="Connection message", compute="_compute_bank_sync_connection_message"
    )
    # What the synchronisation is doing (an import in progress with how far it got, off...).
    bank_sync_status = fields.Selection(
        related="bank_sync_account_id.sync_status", string="Synchronisation"
    )
    bank_sync_progress = fields.Char(
        related="bank_sync_account_id.sync_progress", string="Import progress"
    )
    # How many synchronisation runs imported into this journal.
    bank_sync_run_count = fields.Integer(compute="_compute_bank_sync_run_count")

    # -------------------------------------------------------------------------
    # Computes
    # -------------------------------------------------------------------------

    @api.depends("bank_sync_account_ids")
    def _compute_bank_sync_account_id(self):
        for journal in self:
            # At most one, guaranteed by a unique index on bank_sync_account.journal_id.
            journal.bank_sync_account_id = journal.bank_sync_account_ids[:1]

    def _search_bank_sync_account_id(self, operator, value):
        return [("bank_sync_account_ids", operator, value)]

    @api.depends("bank_sync_account_ids.connection_id.message")
    @api.depends_context("lang")
    def _compute_bank_sync_connection_message(self):
        for journal in self:
            # In the reader's language: the connection keeps the aggregator's words in each.
            journal.bank_sync_connection_message = (
                journal.bank_sync_account_id.connection_id.message or False
            )

    def _compute_bank_sync_run_count(self):
        counts = self.env["bank.sync.run"]._count_by("journal_id", self)
        for journal in self:
            journal.bank_sync_run_count = counts.get(journal, 0)

    # -------------------------------------------------------------------------
    # Overrides of account
    # -------------------------------------------------------------------------

    def __get_bank_statements_available_sources(self):
        sources = super().__get_bank_statements_available_sources()
        sources.append(("bank_sync", self.env._("Bank Synchronisation (Bridge, Linxo)")))
        return sources

    def _fill_bank_cash_dashboard_data(self, dashboard_data):
        result = super()._fill_bank_cash_dashboard_data(dashboard_data)
        state_field = self.env["bank.sync.connection"]._fields["state"]
        states = dict(state_field._description_selection(self.env))
        for journal in self.filtered(lambda j: j.type == "bank"):
            account = journal.sudo().bank_sync_account_id
            data = dashboard_data.setdefault(journal.id, {})
            data["bank_sync_linked"] = bool(account)
            data["bank_sync_enabled"] = journal.company_id.bank_sync_enabled
            if account:
                connection = account.connection_id
                data["bank_sync_state"] = connection.state
                data["bank_sync_state_label"] = states.get(connection.state, "")
                data["bank_sync_message"] = connection.message or ""
                # In the reader's time zone and date format, as every other date of the web client.
                data["bank_sync_last_sync"] = (
                    format_datetime(self.env, connection.last_sync_date, dt_format=False)
                    if connection.last_sync_date
                    else ""
                )
                # Health: consent end coloured as it nears, what the last import brought.
                data["bank_sync_consent_state"] = connection.consent_state
                data["bank_sync_consent_expiry"] = (
                    format_date(self.env, connection.consent_expiry)
                    if connection.consent_expiry and connection.consent_state != "revoked"
                    else ""
                )
                # A first or long import shows how far it got, not "OK" with a partial balance.
                data["bank_sync_importing"] = account.sync_status == "importing"
                data["bank_sync_progress"] = account.sync_progress or ""
                last_done = account.run_ids.filtered(lambda r: r.state == "done")[:1]
                data["bank_sync_new_lines"] = last_done.created_count
                data["bank_sync_reconciled"] = last_done.reconciled_count
        return result

    def open_action(self):
        # The card's "Transactions" (and the journal's name) of a synced journal: its imported
        # operations, which have no statement, rather than an empty list of statements.
        if not self.env.context.get("action_name") and self._bank_sync_is_synced():
            return self.action_open_bank_sync_lines()
        return super().open_action()

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_bank_sync_match(self):
        """Match the journal's imported lines still to reconcile with the open items."""
        self.ensure_one()
        check_rights(self, ACCOUNTING_USER, operation="read")
        lines = self.env["account.bank.statement.line"].search(
            [
                ("journal_id", "=", self.id),
                ("bank_sync_account_id", "!=", False),
                ("is_reconciled", "=", False),
            ]
        )
        return lines.action_bank_sync_match()

    def action_bank_sync_now(self):
        """The dashboard card's "Sync now"."""
        check_rights(self, ACCOUNTING_MANAGER)
        return self.bank_sync_account_ids._sync_now(self.company_id)

    def action_bank_sync_reconnect(self):
        """The dashboard card's "Reconnect": the aggregator's page on the same connection."""
        self.ensure_one()
        check_rights(self, ACCOUNTING_MANAGER)
        return self.bank_sync_connection_id.action_reconnect()

    def action_open_bank_sync_connection(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "res_model": "bank.sync.connection",
            "res_id": self.bank_sync_connection_id.id,
            "view_mode": "form",
        }

    def action_open_bank_sync_lines(self):
        """The journal's bank operations (statement lines), newest first."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "bank_sync_aggregator.account_bank_statement_line_action"
        )
        action["name"] = self.env._("Bank operations: %(journal)s", journal=self.display_name)
        action["domain"] = [("journal_id", "=", self.id)]
        action["context"] = {"default_journal_id": self.id, "bank_sync_journal_id": self.id}
        return action

    def action_view_bank_sync_runs(self):
        self.ensure_one()
        return self.env["bank.sync.run"]._action_for([("journal_id", "=", self.id)])

    # -------------------------------------------------------------------------
    # Business
    # -------------------------------------------------------------------------

    def _bank_sync_is_synced(self):
        """Whether this journal's operations come from a bank synchronisation."""
        self.ensure_one()
        return self.type == "bank" and (
            self.bank_statements_source == "bank_sync" or bool(self.sudo().bank_sync_account_ids)
        )
