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
    # What the bank said about the operation when the line last followed it (created, updated,
    # adopted or flagged; bank_sync_bridge.sync.baseline): the next sighting is compared with
    # it, not with the line, so what a person typed on the line is neither taken for a change
    # at the bank nor overwritten while the bank changes nothing.
    bank_sync_baseline = fields.Json(
        string="Operation as last seen at the bank", readonly=True, copy=False
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

    @api.model
    def _bank_sync_user_work(self, line_ids):
        """What the accountant did on each of these lines, in one query: ``{line id: (work,
        ...)}`` for the lines that carry some, with work among ``reconciled``,
        ``partly_reconciled`` (reconciled in part), ``counterpart`` (a journal item on another
        account than the journal's own and its suspense account, not reconciled: a write-off,
        an account chosen by hand) and ``note``.

        The synchronisation never rewrites nor deletes such a line, whatever the bank says
        about its operation, and the deletion wizard leaves it alone.
        """
        if not line_ids:
            return {}
        for model, names in (
            ("account.move", ["narration"]),
            ("account.move.line", ["move_id", "account_id"]),
            ("account.partial.reconcile", ["debit_move_id", "credit_move_id"]),
            ("account.bank.statement.line", ["is_reconciled", "move_id", "journal_id"]),
        ):
            self.env[model].flush_model(names)
        self.env.cr.execute(
            """
            SELECT l.id, l.is_reconciled,
                   EXISTS (
                       SELECT 1 FROM account_move_line aml
                         JOIN account_partial_reconcile apr ON apr.debit_move_id = aml.id
                        WHERE aml.move_id = l.move_id
                   ) OR EXISTS (
                       SELECT 1 FROM account_move_line aml
                         JOIN account_partial_reconcile apr ON apr.credit_move_id = aml.id
                        WHERE aml.move_id = l.move_id
                   ),
                   EXISTS (
                       SELECT 1 FROM account_move_line aml
                        WHERE aml.move_id = l.move_id
                          AND aml.account_id NOT IN (
                              j.default_account_id,
                              COALESCE(j.suspense_account_id, c.account_journal_suspense_account_id)
                          )
                          AND NOT EXISTS (
                              SELECT 1 FROM account_partial_reconcile apr
                               WHERE apr.debit_move_id = aml.id OR apr.credit_move_id = aml.id
                          )
                   ),
                   regexp_replace(COALESCE(m.narration, ''), '<[^>]*>|&nbsp;|\\s', '', 'g') <> ''
              FROM account_bank_statement_line l
              JOIN account_move m ON m.id = l.move_id
              JOIN account_journal j ON j.id = l.journal_id
              JOIN res_company c ON c.id = l.company_id
             WHERE l.id = ANY(%s)
            """,
            [list(line_ids)],
        )
        work = {}
        for line_id, reconciled, matched, counterpart, note in self.env.cr.fetchall():
            done = ("reconciled",) if reconciled else ("partly_reconciled",) if matched else ()
            done += ("counterpart",) * bool(counterpart) + ("note",) * bool(note)
            if done:
                work[line_id] = done
        return work

    @api.model
    def _bank_sync_describe_work(self, work):
        """``work`` (see :meth:`_bank_sync_user_work`) in the reader's words."""
        words = {
            "reconciled": self.env._("reconciled"),
            "partly_reconciled": self.env._("partly reconciled"),
            "counterpart": self.env._("written off or given an account by hand"),
            "note": self.env._("annotated"),
        }
        return ", ".join(words[kind] for kind in work)
