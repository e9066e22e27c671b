from odoo import api, fields, models
from odoo.tools import format_datetime

from ..utils import RATE_LIMITED

RUN_TRIGGERS = [
    ("cron", "Daily import"),
    ("manual", "Sync now"),
    ("forced", "Forced synchronisation"),
    ("webhook", "Aggregator notification"),
]
RUN_STATES = [
    ("running", "Running"),
    ("partial", "Continuing in background"),
    ("done", "Done"),
    ("skipped", "Not started (another import was running)"),
    ("failed", "Failed"),
]


class BankSyncRun(models.Model):
    """One synchronisation of one account: when, which window, what it did, how it ended."""

    _name = "bank.sync.run"
    _description = "Bank Synchronisation Run"
    _order = "id desc"
    _rec_name = "start_date"
    _check_company_auto = True

    account_id = fields.Many2one(
        "bank.sync.account", required=True, ondelete="cascade", index=True, readonly=True
    )
    connection_id = fields.Many2one(
        related="account_id.connection_id", store=True, index=True, string="Connection"
    )
    journal_id = fields.Many2one("account.journal", readonly=True, index="btree_not_null")
    company_id = fields.Many2one(related="account_id.company_id", store=True, index=True)
    currency_id = fields.Many2one(related="account_id.currency_id")
    trigger = fields.Selection(RUN_TRIGGERS, required=True, readonly=True)
    state = fields.Selection(RUN_STATES, required=True, default="running", readonly=True)
    start_date = fields.Datetime(
        string="Started", required=True, default=fields.Datetime.now, readonly=True
    )
    end_date = fields.Datetime(string="Ended", readonly=True)
    duration = fields.Float(string="Duration (s)", readonly=True, digits=(16, 2))
    # The window read: a stored cursor, or dates (always the dates of a forced run).
    window_basis = fields.Selection(
        [
            ("cursor", "Resumed from the last position"),
            ("overlap", "Last booked date with an overlap"),
            ("history", "From the history start date"),
            ("forced", "Chosen by the user"),
        ],
        string="Window",
        readonly=True,
    )
    date_from = fields.Date(string="From", readonly=True)
    date_to = fields.Date(string="To", readonly=True)
    # How many answers of the aggregator the run read (technical).
    pages = fields.Integer(string="Pages read", readonly=True)
    fetched_count = fields.Integer(string="Fetched", readonly=True)
    created_count = fields.Integer(string="Created", readonly=True)
    updated_count = fields.Integer(string="Updated", readonly=True)
    adopted_count = fields.Integer(
        string="Matched with lines typed by hand",
        readonly=True,
        help="Operations already entered by hand in the journal: the typed line was kept and "
        "marked as the bank's operation instead of importing a duplicate.",
    )
    skipped_count = fields.Integer(
        string="Unchanged",
        readonly=True,
        help="Operations read again that were already in the journal unchanged, or still pending "
        "at the bank: nothing to do.",
    )
    pending_count = fields.Integer(string="Pending", readonly=True)
    ignored_count = fields.Integer(string="Ignored", readonly=True)
    deleted_count = fields.Integer(string="Deleted", readonly=True)
    review_count = fields.Integer(string="To review", readonly=True)
    # Operations of the page a "Sync now" stopped in that it already handled: when the
    # background part reads that page again they are not counted as skipped (technical).
    reread_count = fields.Integer(string="Handled before a stop", readonly=True)
    reconciled_count = fields.Integer(
        string="Reconciled", readonly=True, help="Imported operations reconciled automatically."
    )
    suggested_count = fields.Integer(
        string="With a suggestion",
        readonly=True,
        help="Imported operations left to reconcile for which an open item is suggested.",
    )
    balance_checked = fields.Boolean(readonly=True)
    balance_aggregator = fields.Monetary(
        string="Bank balance", currency_field="currency_id", readonly=True
    )
    balance_journal = fields.Monetary(
        string="Journal balance", currency_field="currency_id", readonly=True
    )
    balance_difference = fields.Monetary(
        string="Balance difference", currency_field="currency_id", readonly=True
    )
    error = fields.Text(readonly=True)
    # Exception class from the package (RateLimited, ActionRequired...), for support.
    error_type = fields.Char(readonly=True)
    # The error says trying again later may succeed by itself (the package's ``retryable``):
    # the background job then retries the run's window (bank.sync.account._schedule_retries).
    error_retryable = fields.Boolean(string="May pass by itself", readonly=True)
    note = fields.Text(readonly=True)

    @api.depends("account_id", "start_date", "trigger")
    @api.depends_context("lang", "tz")
    def _compute_display_name(self):
        # The trigger in the reader's language, the start in their time zone and date format.
        triggers = dict(self._fields["trigger"]._description_selection(self.env))
        for run in self:
            started = format_datetime(self.env, run.start_date) if run.start_date else ""
            run.display_name = (
                f"{run.account_id.display_name} - {triggers.get(run.trigger, '')} {started}"
            ).strip()

    def _notification(self, summary=None, close=False):
        """What "Sync now" tells the user (after ``summary``, what was started): imported
        counts, background rest, errors; then the view reloads (``close``: a wizard's window
        closes instead)."""
        created = sum(self.mapped("created_count")) + sum(self.mapped("adopted_count"))
        parts = [summary] if summary else []
        parts.append(self.env._("%(count)s new operation(s) imported.", count=created))
        if any(run.state == "partial" for run in self):
            parts.append(
                self.env._(
                    "The import continues in the background: follow it in the "
                    "synchronisation history."
                )
            )
        slowed = self.filtered(lambda r: r.state == "partial" and r.error_type == RATE_LIMITED)
        for run in slowed:
            parts.append(f"{run.account_id.display_name}: {run.note}")
        failed = self.filtered(lambda r: r.state == "failed")
        for run in failed:
            parts.append(f"{run.account_id.display_name}: {run.error}")
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Bank synchronisation"),
                "message": "\n".join(parts),
                "type": "danger" if failed else ("warning" if slowed else "success"),
                "sticky": bool(failed),
                "next": {"type": "ir.actions.act_window_close"}
                if close
                else {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    @api.model
    def _count_by(self, field_name, records):
        """How many runs each of ``records`` has through ``field_name``: ``{record: count}``
        (the stat buttons of connections and journals)."""
        return dict(self._read_group([(field_name, "in", records.ids)], [field_name], ["__count"]))

    @api.model
    def _action_for(self, domain):
        """The run history window, filtered on ``domain``."""
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "bank_sync_aggregator.bank_sync_run_action"
        )
        action["domain"] = domain
        return action
