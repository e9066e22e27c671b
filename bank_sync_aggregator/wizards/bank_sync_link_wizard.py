from odoo import api, fields, models
from odoo.exceptions import UserError

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
            parts = [account.institution_name, account.name]
            wizard.new_journal_name = " - ".join(part for part in parts if part)[:64]

    def action_link(self):
        self.ensure_one()
        wizard = self.sudo()
        check_rights(
            self, ACCOUNTING_MANAGER, wizard.account_id.company_id | wizard.journal_id.company_id
        )
        account = self.account_id
        if account.state != "active":
            raise UserError(
                self.env._(
                    "The aggregator no longer shares %(account)s: it cannot be linked.",
                    account=account.display_name,
                )
            )
        if self.history_start_date > fields.Date.context_today(self):
            raise UserError(self.env._("The history start date cannot be in the future."))
        if self.mode == "existing":
            if not self.journal_id:
                raise UserError(self.env._("Choose the journal to link, or create a new one."))
            journal = self.journal_id
        else:
            journal = self._create_journal()
        account.write({"journal_id": journal.id, "history_start_date": self.history_start_date})
        syncable = account.filtered_domain(account._domain_syncable())
        if syncable:
            # The first import starts now in the background (the engine's queue), not
            # tomorrow morning.
            syncable._request_sync("manual")
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

    def _create_journal(self):
        account = self.account_id
        name = (self.new_journal_name or "").strip()
        if not name:
            raise UserError(self.env._("Give the new journal a name."))
        company = account.company_id
        vals = {
            "name": name,
            "type": "bank",
            "company_id": company.id,
            "bank_statements_source": "bank_sync",
        }
        if account.currency_id and account.currency_id != company.currency_id:
            vals["currency_id"] = account.currency_id.id
        if account.iban:
            # create() turns bank_acc_number into the journal's res.partner.bank (reusing an
            # existing one with the same number for the company).
            vals["bank_acc_number"] = account.iban
        return self.env["account.journal"].with_company(company).create(vals)
