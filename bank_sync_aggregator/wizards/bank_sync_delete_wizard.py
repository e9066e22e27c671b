from odoo import api, fields, models
from odoo.exceptions import UserError


class BankSyncDeleteWizard(models.TransientModel):
    """Delete imported operations still waiting to be reconciled, optionally for good."""

    _name = "bank.sync.delete.wizard"
    _description = "Delete Imported Bank Operations"

    scope = fields.Selection(
        [("selected", "Selected accounts"), ("all", "All accounts")],
        required=True,
        default=lambda self: "selected" if self._default_account_ids() else "all",
    )
    account_ids = fields.Many2many(
        "bank.sync.account",
        string="Accounts",
        default=lambda self: self._default_account_ids(),
    )
    date_from = fields.Date(string="From", required=True)
    date_to = fields.Date(string="To", required=True, default=fields.Date.context_today)
    ignore_permanently = fields.Boolean(
        help="These operations are never imported again, even by a forced synchronisation."
    )
    line_count = fields.Integer(string="Operations to delete", compute="_compute_line_ids")
    line_ids = fields.Many2many("account.bank.statement.line", compute="_compute_line_ids")

    @api.model
    def _default_account_ids(self):
        context = self.env.context
        if context.get("active_model") == "bank.sync.account":
            return self.env["bank.sync.account"].browse(context.get("active_ids", []))
        if context.get("active_model") == "account.journal":
            journals = self.env["account.journal"].browse(context.get("active_ids", []))
            return journals.bank_sync_account_ids
        return self.env["bank.sync.account"]

    @api.depends("scope", "account_ids", "date_from", "date_to")
    def _compute_line_ids(self):
        for wizard in self:
            lines = wizard._find_lines() if wizard.date_from and wizard.date_to else None
            wizard.line_ids = lines
            wizard.line_count = len(lines or [])

    def _find_lines(self):
        """Imported lines of the range that nothing is reconciled with, not even partly."""
        domain = [
            ("bank_sync_account_id", "!=", False),
            ("bank_sync_status", "=", "booked"),
            ("is_reconciled", "=", False),
            ("date", ">=", self.date_from),
            ("date", "<=", self.date_to),
        ]
        if self.scope == "selected":
            domain.append(("bank_sync_account_id", "in", self.account_ids.ids))
        lines = self.env["account.bank.statement.line"].search(domain)
        return lines.filtered(
            lambda line: (
                not (
                    line.move_id.line_ids.matched_debit_ids
                    or line.move_id.line_ids.matched_credit_ids
                )
            )
        )

    def action_delete(self):
        self.ensure_one()
        if self.date_from > self.date_to:
            raise UserError(
                self.env._(
                    "The start date (%(start)s) is after the end date (%(end)s).",
                    start=fields.Date.to_string(self.date_from),
                    end=fields.Date.to_string(self.date_to),
                )
            )
        if self.scope == "selected" and not self.account_ids:
            raise UserError(self.env._("Choose at least one account."))
        lines = self._find_lines()
        if not lines:
            raise UserError(
                self.env._("No imported operation waiting to be reconciled in this range.")
            )
        if self.ignore_permanently:
            self.env["bank.sync.ignored"].sudo().create(
                [
                    {
                        "account_id": line.bank_sync_account_id.id,
                        "journal_id": line.journal_id.id,
                        "currency_id": line.currency_id.id,
                        "key": line.bank_sync_key,
                        "date": line.bank_sync_booking_date or line.date,
                        "amount": line.amount,
                        "label": line.payment_ref,
                        "user_id": self.env.uid,
                    }
                    for line in lines
                ]
            )
        count = len(lines)
        lines.unlink()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Bank synchronisation"),
                "message": self.env._("%(count)s operation(s) deleted.", count=count),
                "type": "success",
                "next": {"type": "ir.actions.act_window_close"},
            },
        }
