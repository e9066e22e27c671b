from odoo import api, fields, models
from odoo.exceptions import UserError


class BankSyncRangeMixin(models.AbstractModel):
    """One account, several or all of them, over a date range: what the wizards that act on
    imported operations (force a synchronisation, delete operations) ask the user first."""

    _name = "bank.sync.range.mixin"
    _description = "Bank Accounts and Date Range"

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

    @api.model
    def _default_account_ids(self):
        """The accounts the wizard was opened from: selected accounts or their journals'."""
        context = self.env.context
        if context.get("active_model") == "bank.sync.account":
            return self.env["bank.sync.account"].browse(context.get("active_ids", []))
        if context.get("active_model") == "account.journal":
            journals = self.env["account.journal"].browse(context.get("active_ids", []))
            return journals.bank_sync_account_ids
        return self.env["bank.sync.account"]

    def _check_range(self):
        """Refuse a range that ends before it starts, in the user's language."""
        if self.date_from > self.date_to:
            raise UserError(
                self.env._(
                    "The start date (%(start)s) is after the end date (%(end)s).",
                    start=fields.Date.to_string(self.date_from),
                    end=fields.Date.to_string(self.date_to),
                )
            )
