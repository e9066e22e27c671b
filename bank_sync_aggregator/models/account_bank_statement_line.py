from odoo import api, fields, models, tools

from ..rights import check_rights

# One key per journal, whoever writes it: the engine, a concurrent worker, a retried page.
# PostgreSQL, not the ORM, refuses the second line; lines typed by hand (NULL key) are free.
SYNC_KEY_INDEX = "account_bank_statement_line_bank_sync_key_uniq"

# The balance check after every sync leaves out the journal's moves that are not posted (a
# handful): without this small index, finding them read the whole account_move table, which
# made the check grow with the size of the books (90 ms on a 50,000-line journal, 32 with it).
UNPOSTED_MOVE_INDEX = "account_move_bank_sync_unposted_idx"


class AccountBankStatementLine(models.Model):
    _inherit = "account.bank.statement.line"

    # Identity of the operation at the aggregator (see bank_sync_bridge.sync.sync_key).
    bank_sync_key = fields.Char(string="Synchronisation key", readonly=True, copy=False)
    bank_sync_account_id = fields.Many2one(
        "bank.sync.account",
        string="Synchronised account",
        readonly=True,
        copy=False,
        index="btree_not_null",
        ondelete="set null",
    )
    # The bank's own dates: a lock date may move the accounting date of the line, these stay.
    bank_sync_booking_date = fields.Date(string="Booking date", readonly=True, copy=False)
    bank_sync_value_date = fields.Date(string="Value date", readonly=True, copy=False)
    bank_sync_status = fields.Selection(
        [
            ("booked", "Booked"),
            ("opening", "Opening balance"),
            ("deleted", "Deleted by the bank"),
        ],
        string="Bank status",
        readonly=True,
        copy=False,
    )
    # Set when the aggregator changed or deleted an operation that is already reconciled, or
    # when a synced operation may be the twin of several existing lines: a person decides.
    bank_sync_to_review = fields.Boolean(string="To review", readonly=True, copy=False)
    bank_sync_review_note = fields.Text(string="Review note", readonly=True, copy=False)

    def init(self):
        res = super().init()
        if not tools.index_exists(self.env.cr, SYNC_KEY_INDEX):
            self.env.cr.execute(
                """
                CREATE UNIQUE INDEX account_bank_statement_line_bank_sync_key_uniq
                    ON account_bank_statement_line (journal_id, bank_sync_key)
                 WHERE bank_sync_key IS NOT NULL
                """
            )
        tools.create_index(
            self.env.cr,
            UNPOSTED_MOVE_INDEX,
            "account_move",
            ["journal_id"],
            where="state != 'posted'",
        )
        return res

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_bank_sync_mark_reviewed(self):
        """The accountant has looked at the bank's change: clear the flag (whoever may edit
        the company's statement lines)."""
        check_rights(self, None)
        self.write({"bank_sync_to_review": False})
        return True

    # -------------------------------------------------------------------------
    # Business
    # -------------------------------------------------------------------------

    @api.model
    def _bank_sync_partner_index(self, company, ibans, names):
        """Partners identified by counterparty IBAN or exact name, in two queries per page.

        Returns ``(by_iban, by_name)`` dicts of partner ids; a name shared by several partners
        identifies none of them.
        """
        by_iban, by_name = {}, {}
        company_domain = [("company_id", "in", [False, company.id])]
        if ibans:
            banks = (
                self.env["res.partner.bank"]
                .sudo()
                .search_fetch(
                    [("sanitized_acc_number", "in", list(ibans)), *company_domain],
                    ["sanitized_acc_number", "partner_id"],
                )
            )
            for bank in banks:
                by_iban.setdefault(bank.sanitized_acc_number, bank.partner_id.id)
        if names:
            partners = self.env["res.partner"].search_fetch(
                [("name", "in", list(names)), ("parent_id", "=", False), *company_domain],
                ["name"],
            )
            seen = {}
            for partner in partners:
                seen.setdefault(partner.name, []).append(partner.id)
            by_name = {name: ids[0] for name, ids in seen.items() if len(ids) == 1}
        return by_iban, by_name
