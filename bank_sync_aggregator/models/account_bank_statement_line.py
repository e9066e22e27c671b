from odoo import api, fields, models, tools

from bank_sync_bridge.matching import company_key

from ..rights import ACCOUNTING_USER, check_can_reconcile, check_rights
from ..sync import balance, reconcile

#: Why a line was reconciled automatically (bank_sync_bridge.matching's sure rules).
MATCH_RULES = [
    ("reference", "Document number quoted, same amount"),
    ("references_sum", "Document numbers quoted, same total"),
    ("partner_amount", "Partner's only open item of that amount"),
]
#: What kind of operation the bank says a line is, whatever the aggregator's code for it
#: (``transaction_type``: Bridge's ``operation_type``, Linxo's ``type``, the Sandbox's).
OPERATION_TYPES = [
    ("transfer", "Transfer"),
    ("card", "Card payment"),
    ("card_total", "Deferred card total"),
    ("direct_debit", "Direct debit"),
    ("cheque", "Cheque"),
    ("deposit", "Deposit"),
    ("withdrawal", "Cash withdrawal"),
    ("fee", "Bank fee"),
    ("interest", "Interest"),
    ("loan", "Loan repayment"),
    ("other", "Other"),
]
#: The aggregators' codes (lower case) and the operation type each stands for.
OPERATION_CODES = {
    "transfer": "transfer",
    "credit": "transfer",
    "electronic_payment": "transfer",
    "card": "card",
    "point_of_sale": "card",
    "card_summary": "card_total",
    "direct_debit": "direct_debit",
    "check": "cheque",
    "cheque": "cheque",
    "deposit": "deposit",
    "atm": "withdrawal",
    "withdrawal": "withdrawal",
    "bank_fee": "fee",
    "fee": "fee",
    "interest": "interest",
    "loan_repayment": "loan",
}
#: How the synchronisation found a line's partner.
PARTNER_ORIGINS = [
    ("iban", "Counterparty's bank account"),
    ("name", "Counterparty's name"),
    ("learned", "Earlier reconciliations"),
    ("merchant", "Name in the label"),
]

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
    # The bank's full wording (raw label, remittance information): where payers quote
    # invoice numbers when the label is a summary.
    bank_sync_remittance = fields.Char(string="Bank's wording", readonly=True, copy=False)
    # The bank's operation type in words (``transaction_type`` holds the aggregator's code).
    bank_sync_operation_type = fields.Selection(
        OPERATION_TYPES,
        string="Operation type",
        compute="_compute_bank_sync_operation_type",
        store=True,
    )
    # Who is on the other side (bank_sync_bridge.matching.counterparty_key): a partner found
    # once for a reconciled line is found again for the next operations of the same key.
    bank_sync_counterparty_key = fields.Char(
        string="Counterparty key", readonly=True, copy=False, index="btree_not_null"
    )
    bank_sync_partner_origin = fields.Selection(
        PARTNER_ORIGINS, string="Partner found from", readonly=True, copy=False
    )
    # Set when the synchronisation reconciled the line by itself (cleared when a person
    # reverts the reconciliation): the rule it applied and the documents it paid.
    bank_sync_match_rule = fields.Selection(
        MATCH_RULES, string="Reconciled automatically", readonly=True, copy=False
    )
    bank_sync_match_documents = fields.Char(string="Reconciled with", readonly=True, copy=False)
    bank_sync_match_reason = fields.Text(
        string="Why it was reconciled", compute="_compute_bank_sync_match_reason"
    )

    # -------------------------------------------------------------------------
    # Computes
    # -------------------------------------------------------------------------

    @api.depends("transaction_type")
    def _compute_bank_sync_operation_type(self):
        for line in self:
            code = (line.transaction_type or "").strip().lower()
            line.bank_sync_operation_type = code and OPERATION_CODES.get(code, "other")

    @api.depends("bank_sync_match_rule", "bank_sync_match_documents")
    @api.depends_context("lang")
    def _compute_bank_sync_match_reason(self):
        for line in self:
            documents = line.bank_sync_match_documents
            if line.bank_sync_match_rule == "reference":
                reason = self.env._(
                    "Reconciled automatically with %(documents)s: the bank's wording quotes "
                    "its number and the amount is exactly what was left to pay.",
                    documents=documents,
                )
            elif line.bank_sync_match_rule == "references_sum":
                reason = self.env._(
                    "Reconciled automatically with %(documents)s: the bank's wording quotes "
                    "their numbers and the amount is exactly what was left to pay on them.",
                    documents=documents,
                )
            elif line.bank_sync_match_rule == "partner_amount":
                reason = self.env._(
                    "Reconciled automatically with %(documents)s: it is the partner's only "
                    "open item of exactly this amount, and the wording quotes no other "
                    "number.",
                    documents=documents,
                )
            else:
                reason = False
            line.bank_sync_match_reason = reason

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
    # CRUD: a synced journal changed by hand is compared with its bank again
    # -------------------------------------------------------------------------

    # (A line created by hand is checked when its entry is posted: account.move's write.)

    def write(self, vals):
        if "partner_id" in vals and "bank_sync_partner_origin" not in vals:
            # A partner chosen by a person (or given by a reconciliation) is no guess any
            # more: matching may settle its only open item of the line's amount.
            vals = {**vals, "bank_sync_partner_origin": False}
        moved = self.journal_id if {"amount", "journal_id"} & set(vals) else None
        result = super().write(vals)
        if moved is not None:
            self._bank_sync_recheck_balance(moved | self.journal_id)
        return result

    def unlink(self):
        journals = self.journal_id
        result = super().unlink()
        self._bank_sync_recheck_balance(journals)
        return result

    def _bank_sync_recheck_balance(self, journals):
        """Lines of synced ``journals`` created, changed or deleted outside a synchronisation
        (the delete wizard, a person): the balance check follows at once."""
        if self.env.context.get("bank_sync_engine"):
            return  # the run checks the balance when it ends
        bank_journals = journals.filtered(lambda j: j.type == "bank")
        if not bank_journals:
            return
        accounts = (
            self.env["bank.sync.account"]
            .sudo()
            .search([("journal_id", "in", bank_journals.ids), ("balance_check_date", "!=", False)])
        )
        if accounts:
            balance.recheck_after_change(accounts)

    # -------------------------------------------------------------------------
    # Actions
    # -------------------------------------------------------------------------

    def action_bank_sync_mark_reviewed(self):
        """The accountant has looked at the bank's change: clear the flag (whoever may edit
        the company's statement lines)."""
        check_rights(self, None)
        self.write({"bank_sync_to_review": False})
        return True

    def action_bank_sync_match(self):
        """Match these lines with the company's open items now: sure matches are reconciled,
        the others get suggestions (accounting users of the lines' companies)."""
        check_can_reconcile(self)
        reconciled = suggested = 0
        synced = self.filtered("bank_sync_account_id")
        for company in synced.company_id:
            result = reconcile.match_lines(
                synced.filtered(lambda line, c=company: line.company_id == c).sudo()
            )
            reconciled += result.reconciled
            suggested += result.suggested
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Matching with open items"),
                "message": self.env._(
                    "%(reconciled)s operation(s) reconciled automatically, %(suggested)s with "
                    "a suggestion to check.",
                    reconciled=reconciled,
                    suggested=suggested,
                ),
                "type": "success",
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_bank_sync_suggestions(self):
        """The open items this line may settle, best first, to reconcile in one click."""
        self.ensure_one()
        check_rights(self, ACCOUNTING_USER, operation="read")
        wizard = self.env["bank.sync.match.wizard"].create({"line_id": self.id})
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Match with an open item"),
            "res_model": "bank.sync.match.wizard",
            "res_id": wizard.id,
            "view_mode": "form",
            "target": "new",
        }

    def action_undo_reconciliation(self):
        # Reverted by a person: the line no longer says it was reconciled automatically.
        result = super().action_undo_reconciliation()
        self.filtered("bank_sync_match_rule").sudo().write(
            {"bank_sync_match_rule": False, "bank_sync_match_documents": False}
        )
        return result

    # -------------------------------------------------------------------------
    # Business
    # -------------------------------------------------------------------------

    @api.model
    def _bank_sync_partner_index(self, company, ibans, names, keys=()):
        """Partners identified for a page of operations, a few queries for the page.

        Returns ``(by_iban, by_name, by_key)`` dicts of partner ids: by counterparty IBAN (the
        partners' bank accounts), by exact counterparty name, and by counterparty key
        (:func:`bank_sync_bridge.matching.counterparty_key`), each key with its origin:
        ``learned`` (the lines of that key a person reconciled all went to one partner: what
        matching reconciled by itself teaches nothing, so that one mistake is not repeated) or
        ``merchant`` (one partner's name gives that key: ``CB CARREFOUR 12/11`` finds
        "Carrefour"; a guess, which never settles an item on the amount alone). A bank
        account, name or key shared by several partners identifies none of them.
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
            owners = {}
            for bank in banks:
                owners.setdefault(bank.sanitized_acc_number, set()).add(
                    bank.partner_id.commercial_partner_id.id
                )
            # An account several companies declare (a factor, a group's treasury) names none.
            by_iban = {iban: ids.pop() for iban, ids in owners.items() if len(ids) == 1}
        if names:
            partners = self.env["res.partner"].search_fetch(
                [("name", "in", list(names)), ("parent_id", "=", False), *company_domain],
                ["name"],
            )
            seen = {}
            for partner in partners:
                seen.setdefault(partner.name, []).append(partner.id)
            by_name = {name: ids[0] for name, ids in seen.items() if len(ids) == 1}
        return by_iban, by_name, self._bank_sync_partners_by_key(company, set(keys) - {""})

    @api.model
    def _bank_sync_partners_by_key(self, company, keys):
        """``{key: (partner id, origin)}`` for counterparty keys (see
        :meth:`_bank_sync_partner_index`)."""
        if not keys:
            return {}
        self.env["account.bank.statement.line"].flush_model(
            ["bank_sync_counterparty_key", "partner_id", "is_reconciled", "company_id"]
        )
        self.env.cr.execute(
            """
            SELECT l.bank_sync_counterparty_key,
                   array_agg(DISTINCT COALESCE(p.commercial_partner_id, p.id))
              FROM account_bank_statement_line l
              JOIN res_partner p ON p.id = l.partner_id
             WHERE l.company_id = %s
               AND l.bank_sync_counterparty_key = ANY(%s)
               AND l.is_reconciled
               AND l.bank_sync_match_rule IS NULL
             GROUP BY l.bank_sync_counterparty_key
            """,
            [company.id, list(keys)],
        )
        found = {
            key: (partners[0], "learned")
            for key, partners in self.env.cr.fetchall()
            if len(partners) == 1
        }
        unknown = keys - set(found)
        if unknown:
            # Partners whose name starts like a key, then compared the way keys are made: the
            # key itself, or its first words (a label goes on after the name: "ACME SARL
            # ACOMPTE" names Acme), the longest such name winning, only when it is one.
            partners = self.env["res.partner"].search_fetch(
                [
                    ("parent_id", "=", False),
                    ("company_id", "in", [False, company.id]),
                    *(["|"] * (len(unknown) - 1)),
                    *[("name", "=ilike", f"{key.split()[0]}%") for key in unknown],
                ],
                ["name"],
            )
            named = {}
            for partner in partners:
                named.setdefault(company_key(partner.name), set()).add(partner.id)
            for key in unknown:
                words = key.split()
                for size in range(len(words), 0, -1):
                    ids = named.get(" ".join(words[:size]))
                    if ids:
                        if len(ids) == 1:
                            found[key] = (next(iter(ids)), "merchant")
                        break
        return found

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
