from odoo import fields, models
from odoo.exceptions import UserError
from odoo.tools.misc import format_date

from ..rights import ACCOUNTING_MANAGER, check_rights
from ..sync.balance import history_extension_refusal
from ..sync.run import SYNC_NOW_BUDGET


class BankSyncForceWizard(models.TransientModel):
    """Re-read one account or all accounts over a date range (to recover a gap)."""

    _name = "bank.sync.force.wizard"
    _inherit = ["bank.sync.range.mixin"]
    _description = "Force a Bank Synchronisation"

    # Only linked, active accounts can be read again: the list and "all" say so.
    scope = fields.Selection([("selected", "Selected accounts"), ("all", "All linked accounts")])
    account_ids = fields.Many2many(
        domain="[('journal_id', '!=', False), ('state', '=', 'active')]",
    )
    date_from = fields.Date(default=lambda self: fields.Date.context_today(self).replace(day=1))

    def _get_accounts(self):
        Account = self.env["bank.sync.account"]
        if self.scope == "all":
            return Account.search(Account._domain_syncable())
        return self.account_ids.filtered_domain(Account._domain_syncable())

    def _check_range(self):
        """Refuse dates in the future too, first (the package would say it in English)."""
        today = fields.Date.context_today(self)
        if self.date_from > today or self.date_to > today:
            raise UserError(
                self.env._(
                    "The dates must not be in the future: the bank cannot have booked "
                    "operations after today (%(today)s).",
                    today=fields.Date.to_string(today),
                )
            )
        return super()._check_range()

    def action_force(self):
        self.ensure_one()
        check_rights(self, ACCOUNTING_MANAGER, self.sudo().account_ids.company_id)
        self._check_range()
        accounts = self._get_accounts()
        if not accounts:
            raise UserError(self.env._("Choose at least one account linked to a journal."))
        for account in accounts:
            refusal = history_extension_refusal(account.sudo(), self.date_from)
            if refusal:
                raise UserError(refusal)
        runs = accounts._sync_accounts(
            "forced",
            date_from=self.date_from,
            date_to=self.date_to,
            time_budget=SYNC_NOW_BUDGET,
        )
        return runs._notification(
            self.env._(
                "Forced synchronisation from %(date_from)s to %(date_to)s started for "
                "%(count)s account(s).",
                date_from=format_date(self.env, self.date_from),
                date_to=format_date(self.env, self.date_to),
                count=len(accounts),
            ),
            close=True,
        )
