from odoo import models


class AccountMove(models.Model):
    _inherit = "account.move"

    def write(self, vals):
        result = super().write(vals)
        if "state" in vals:
            # A bank operation's entry posted, cancelled or reset to draft counts in the
            # journal's balance or no longer: the balance check follows at once.
            lines = self.statement_line_id
            if lines:
                lines._bank_sync_recheck_balance(lines.journal_id)
        return result
