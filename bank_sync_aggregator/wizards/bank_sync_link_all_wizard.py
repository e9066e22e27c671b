from collections import Counter

from odoo import Command, api, fields, models
from odoo.exceptions import UserError

from ..rights import ACCOUNTING_MANAGER, check_rights

CHOICES = [
    ("existing", "An existing journal"),
    ("new", "A new journal"),
    ("skip", "Don't synchronise"),
]


class BankSyncLinkAllWizard(models.TransientModel):
    """Link every account of a new connection in one step: a journal proposed for each (the
    free bank journal with its IBAN and currency, else a new one), or none."""

    _name = "bank.sync.link.all.wizard"
    _description = "Link the Accounts of a Bank Connection"

    connection_id = fields.Many2one(
        "bank.sync.connection",
        required=True,
        readonly=True,
        default=lambda self: self._default_connection_id(),
    )
    company_id = fields.Many2one(related="connection_id.company_id")
    institution_name = fields.Char(related="connection_id.institution_name")
    history_start_date = fields.Date(
        required=True,
        default=lambda self: fields.Date.context_today(self).replace(month=1, day=1),
        help="Operations booked from this date are imported on the first synchronisation.",
    )
    # Proposed from the connection (on the screen, over RPC or from code alike); the user
    # changes each line's choice before confirming.
    line_ids = fields.One2many(
        "bank.sync.link.all.wizard.line",
        "wizard_id",
        string="Accounts",
        compute="_compute_line_ids",
        store=True,
        readonly=False,
        precompute=True,
    )

    @api.model
    def _default_connection_id(self):
        # Opened from the connection's address (after adding a bank): its id is active.
        context = self.env.context
        if context.get("active_model", "bank.sync.connection") == "bank.sync.connection":
            return context.get("active_id")
        return False

    @api.depends("connection_id")
    def _compute_line_ids(self):
        for wizard in self:
            wizard.line_ids = [
                Command.clear(),
                *(Command.create(line) for line in self._propose(wizard.connection_id.account_ids)),
            ]

    @api.model
    def _propose(self, accounts):
        """A line for each active account not linked yet: the free journal of the company
        with its IBAN and currency (each journal proposed once), else a new journal."""
        proposed = self.env["account.journal"]
        lines = []
        for account in accounts.filtered(lambda a: a.state == "active" and not a.journal_id):
            journal = account._find_matching_journal(exclude=proposed)
            proposed |= journal
            lines.append(
                {
                    "account_id": account.id,
                    "choice": "existing" if journal else "new",
                    "journal_id": journal.id,
                    "new_journal_name": account._new_journal_name(),
                }
            )
        return lines

    def action_link_all(self):
        """Link every account as its line says, in one step, then start their first import
        and go back to the connection."""
        self.ensure_one()
        wizard = self.sudo()
        check_rights(
            self,
            ACCOUNTING_MANAGER,
            wizard.connection_id.company_id | wizard.line_ids.journal_id.company_id,
        )
        connection = self.connection_id
        lines = self.line_ids.filtered(lambda line: line.choice != "skip")
        if lines.account_id.connection_id - connection:
            raise UserError(self.env._("Only the accounts of this connection can be linked here."))
        chosen = Counter(
            line.journal_id.id for line in lines if line.choice == "existing" and line.journal_id
        )
        twice = self.env["account.journal"].browse(
            [journal_id for journal_id, count in chosen.items() if count > 1]
        )
        if twice:
            raise UserError(
                self.env._(
                    "The journal %(journal)s is chosen for several accounts: a journal receives "
                    "the operations of one account only.",
                    journal=twice[0].display_name,
                )
            )
        missing = lines.filtered(lambda line: line.choice == "existing" and not line.journal_id)
        if missing:
            raise UserError(
                self.env._(
                    "Choose the journal of %(account)s, or create a new one.",
                    account=missing[0].account_id.display_name,
                )
            )
        linked = self.env["bank.sync.account"]
        for line in lines:
            line.account_id._link_journal(
                self.history_start_date,
                journal=line.journal_id if line.choice == "existing" else None,
                new_journal_name=line.new_journal_name,
            )
            linked |= line.account_id
        syncable = linked._start_first_import()
        if not linked:
            title, kind = self.env._("No account linked"), "warning"
            message = self.env._(
                "No account of %(bank)s is synchronised. You can link them later from the "
                "connection.",
                bank=connection.display_name,
            )
        elif syncable:
            title, kind = self.env._("Accounts linked"), "success"
            message = self.env._(
                "%(count)s account(s) linked. The first synchronisation has started in the "
                "background: the operations appear in the journals within a few minutes.",
                count=len(linked),
            )
        else:
            title, kind = self.env._("Accounts linked"), "warning"
            message = self.env._(
                "%(count)s account(s) linked. Their operations will be imported once the bank "
                "connection works and synchronisation is switched on in the Accounting "
                "settings.",
                count=len(linked),
            )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": title,
                "message": message,
                "type": kind,
                "sticky": False,
                "next": {
                    "type": "ir.actions.act_window",
                    "res_model": "bank.sync.connection",
                    "res_id": connection.id,
                    "view_mode": "form",
                    "views": [[False, "form"]],
                },
            },
        }


class BankSyncLinkAllWizardLine(models.TransientModel):
    _name = "bank.sync.link.all.wizard.line"
    _description = "Account to Link"
    _order = "id"

    wizard_id = fields.Many2one("bank.sync.link.all.wizard", required=True, ondelete="cascade")
    account_id = fields.Many2one("bank.sync.account", required=True, readonly=True)
    company_id = fields.Many2one(related="account_id.company_id")
    account_type = fields.Selection(related="account_id.account_type")
    iban = fields.Char(related="account_id.iban")
    currency_id = fields.Many2one(related="account_id.currency_id")
    balance = fields.Monetary(related="account_id.balance", currency_field="currency_id")
    choice = fields.Selection(CHOICES, string="Link to", required=True, default="new")
    journal_id = fields.Many2one(
        "account.journal",
        domain="[('type', '=', 'bank'), ('company_id', '=', company_id),"
        " ('bank_sync_account_ids', '=', False)]",
    )
    new_journal_name = fields.Char(string="New journal")
