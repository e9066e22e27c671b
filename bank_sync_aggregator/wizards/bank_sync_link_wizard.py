from odoo import api, fields, models

from ..rights import ACCOUNTING_MANAGER, check_rights


class BankSyncLinkWizard(models.TransientModel):
    """Link a synchronised account to an existing bank journal, or to a new one."""

    _name = "bank.sync.link.wizard"
    _description = "Link a Synchronised Account to a Journal"

    account_id = fields.Many2one("bank.sync.account", required=True, readonly=True)
    company_id = fields.Many2one(related="account_id.company_id")
    currency_id = fields.Many2one(related="account_id.currency_id")
    iban = fields.Char(related="account_id.iban")
    mode = fields.Selection(
        [("existing", "An existing journal"), ("new", "A new journal")],
        string="Link to",
        required=True,
        compute="_compute_journal",
        store=True,
        readonly=False,
        precompute=True,
    )
    journal_id = fields.Many2one(
        "account.journal",
        compute="_compute_journal",
        store=True,
        readonly=False,
        precompute=True,
        domain="[('type', '=', 'bank'), ('company_id', '=', company_id),"
        " ('bank_sync_account_ids', '=', False)]",
    )
    new_journal_name = fields.Char(
        compute="_compute_new_journal_name", store=True, readonly=False, precompute=True
    )
    history_start_date = fields.Date(
        required=True,
        default=lambda self: fields.Date.context_today(self).replace(month=1, day=1),
        help="Operations booked from this date are imported on the first synchronisation.",
    )

    @api.depends("account_id")
    def _compute_journal(self):
        for wizard in self:
            journal = wizard.account_id._find_matching_journal()
            wizard.journal_id = journal
            wizard.mode = "existing" if journal else "new"

    @api.depends("account_id")
    def _compute_new_journal_name(self):
        for wizard in self:
            account = wizard.account_id
            wizard.new_journal_name = account._new_journal_name() if account else False

    def action_link(self):
        self.ensure_one()
        wizard = self.sudo()
        check_rights(
            self, ACCOUNTING_MANAGER, wizard.account_id.company_id | wizard.journal_id.company_id
        )
        account = self.account_id
        journal = account._link_journal(
            self.history_start_date,
            journal=self.journal_id if self.mode == "existing" else None,
            new_journal_name=self.new_journal_name,
        )
        syncable = account._start_first_import()
        if syncable:
            message = self.env._(
                "%(account)s is linked to the journal %(journal)s. The first synchronisation "
                "has started in the background: its operations appear in the journal within "
                "a few minutes.",
                account=account.display_name,
                journal=journal.display_name,
            )
        else:
            message = self.env._(
                "%(account)s is linked to the journal %(journal)s. Its operations will be "
                "imported once the bank connection works and synchronisation is switched on "
                "in the Accounting settings.",
                account=account.display_name,
                journal=journal.display_name,
            )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Account linked"),
                "message": message,
                "type": "success" if syncable else "warning",
                "sticky": False,
                "next": {
                    "type": "ir.actions.act_window",
                    "res_model": "account.journal",
                    "res_id": journal.id,
                    "view_mode": "form",
                    "views": [[False, "form"]],
                },
            },
        }
