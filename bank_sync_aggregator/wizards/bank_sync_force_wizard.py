from odoo import api, fields, models
from odoo.exceptions import UserError


class BankSyncForceWizard(models.TransientModel):
    """Re-read one account or all accounts over a date range (to recover a gap)."""

    _name = "bank.sync.force.wizard"
    _description = "Force a Bank Synchronisation"

    scope = fields.Selection(
        [("selected", "Selected accounts"), ("all", "All linked accounts")],
        required=True,
        default=lambda self: "selected" if self._default_account_ids() else "all",
    )
    account_ids = fields.Many2many(
        "bank.sync.account",
        string="Accounts",
        default=lambda self: self._default_account_ids(),
        domain="[('journal_id', '!=', False), ('state', '=', 'active')]",
    )
    date_from = fields.Date(
        string="From",
        required=True,
        default=lambda self: fields.Date.context_today(self).replace(day=1),
    )
    date_to = fields.Date(string="To", required=True, default=fields.Date.context_today)

    @api.model
    def _default_account_ids(self):
        context = self.env.context
        if context.get("active_model") == "bank.sync.account":
            return self.env["bank.sync.account"].browse(context.get("active_ids", []))
        if context.get("active_model") == "account.journal":
            journals = self.env["account.journal"].browse(context.get("active_ids", []))
            return journals.bank_sync_account_ids
        return self.env["bank.sync.account"]

    def _get_accounts(self):
        Account = self.env["bank.sync.account"]
        if self.scope == "all":
            return Account.search(Account._domain_syncable())
        return self.account_ids.filtered_domain(Account._domain_syncable())

    def _check_range(self):
        """The range's problems in the user's language (the package says them in English)."""
        today = fields.Date.context_today(self)
        if self.date_from > today or self.date_to > today:
            raise UserError(
                self.env._(
                    "The dates must not be in the future: the bank cannot have booked "
                    "operations after today (%(today)s).",
                    today=fields.Date.to_string(today),
                )
            )
        if self.date_from > self.date_to:
            raise UserError(
                self.env._(
                    "The start date (%(start)s) is after the end date (%(end)s).",
                    start=fields.Date.to_string(self.date_from),
                    end=fields.Date.to_string(self.date_to),
                )
            )

    def action_force(self):
        self.ensure_one()
        self._check_range()
        accounts = self._get_accounts()
        if not accounts:
            raise UserError(self.env._("Choose at least one account linked to a journal."))
        from ..models.bank_sync_engine import SYNC_NOW_BUDGET  # noqa: PLC0415

        runs = accounts._sync_accounts(
            "forced",
            date_from=self.date_from,
            date_to=self.date_to,
            time_budget=SYNC_NOW_BUDGET,
        )
        return runs._notification()
