from odoo import fields, models

from ..sync import balance


class BankSyncIgnored(models.Model):
    """An operation the user deleted and asked never to import again (even by a forced sync)."""

    _name = "bank.sync.ignored"
    _description = "Ignored Bank Operation"
    _order = "date desc, id desc"
    _rec_name = "label"
    _check_company_auto = True

    account_id = fields.Many2one(
        "bank.sync.account", required=True, ondelete="cascade", index=True, readonly=True
    )
    company_id = fields.Many2one(related="account_id.company_id", store=True, index=True)
    journal_id = fields.Many2one("account.journal", readonly=True)
    currency_id = fields.Many2one("res.currency", readonly=True)
    # Same key as the statement line had (bank_sync_bridge.sync.sync_key).
    key = fields.Char(required=True, readonly=True, index=True)
    date = fields.Date(readonly=True)
    amount = fields.Monetary(currency_field="currency_id", readonly=True)
    label = fields.Char(readonly=True)
    user_id = fields.Many2one(
        "res.users", string="Ignored by", default=lambda self: self.env.user, readonly=True
    )

    _sql_constraints = [
        ("account_key_uniq", "UNIQUE(account_id, key)", "This operation is already ignored."),
    ]

    def unlink(self):
        # The bank's balance counts the operation again as one the journal should hold.
        accounts = self.account_id
        result = super().unlink()
        balance.recheck_after_change(accounts)
        return result
