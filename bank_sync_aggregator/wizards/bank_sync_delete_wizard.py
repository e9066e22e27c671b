from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools.misc import formatLang

from ..rights import ACCOUNTING_MANAGER, check_rights


class BankSyncDeleteWizard(models.TransientModel):
    """Delete imported operations still waiting to be reconciled, optionally for good."""

    _name = "bank.sync.delete.wizard"
    _inherit = ["bank.sync.range.mixin"]
    _description = "Delete Imported Bank Operations"

    ignore_permanently = fields.Boolean(
        help="These operations are never imported again, even by a forced synchronisation."
    )
    line_count = fields.Integer(string="Operations to delete", compute="_compute_line_ids")
    line_ids = fields.Many2many("account.bank.statement.line", compute="_compute_line_ids")

    @api.depends("scope", "account_ids", "date_from", "date_to")
    def _compute_line_ids(self):
        for wizard in self:
            lines = wizard._find_lines() if wizard.date_from and wizard.date_to else None
            wizard.line_ids = lines
            wizard.line_count = len(lines or [])

    def _find_lines(self):
        """Imported lines of the range that carry none of the accountant's work: not
        reconciled, not even partly, no write-off or account chosen by hand, no note."""
        domain = [
            ("bank_sync_account_id", "!=", False),
            ("bank_sync_status", "=", "booked"),
            ("is_reconciled", "=", False),
            ("date", ">=", self.date_from),
            ("date", "<=", self.date_to),
        ]
        if self.scope == "selected":
            domain.append(("bank_sync_account_id", "in", self.account_ids.ids))
        StLine = self.env["account.bank.statement.line"]
        lines = StLine.search(domain)
        worked = StLine._bank_sync_user_work(lines.ids)
        return lines.filtered(lambda line: line.id not in worked)

    def action_delete(self):
        self.ensure_one()
        check_rights(self, ACCOUNTING_MANAGER, self.sudo().account_ids.company_id)
        self._check_range()
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
        accounts = lines.bank_sync_account_id
        # The balance check follows at once (account.bank.statement.line.unlink).
        lines.unlink()
        if self.ignore_permanently:
            message = self.env._(
                "%(count)s operation(s) deleted; they will never be imported again.",
                count=count,
            )
        else:
            message = self.env._(
                "%(count)s operation(s) deleted; a forced synchronisation of these dates "
                "would import them again.",
                count=count,
            )
        parts = [message] + [
            self.env._(
                "%(account)s: the journal still differs from the bank's balance by %(amount)s.",
                account=account.display_name,
                amount=formatLang(
                    self.env, account.balance_difference, currency_obj=account.currency_id
                ),
            )
            if account.balance_difference
            else self.env._(
                "%(account)s: the journal agrees with the bank's balance.",
                account=account.display_name,
            )
            for account in accounts.sudo().filtered("balance_check_date")
        ]
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Bank synchronisation"),
                "message": "\n".join(parts),
                "type": "success",
                "next": {"type": "ir.actions.act_window_close"},
            },
        }
