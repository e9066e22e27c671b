from odoo import Command, api, fields, models
from odoo.exceptions import UserError
from odoo.tools.misc import formatLang

from ..rights import ACCOUNTING_USER, check_can_reconcile, check_rights
from ..sync import reconcile

#: What each kind of suggestion says about itself (bank_sync_bridge.matching's rules).
CANDIDATE_RULES = [
    ("reference", "Number quoted, same amount"),
    ("references_sum", "Numbers quoted, same total"),
    ("partner_amount", "Partner's open item of that amount"),
    ("reference_completed", "Number quoted, with another open item of the partner: same total"),
    ("reference_currency", "Number quoted, invoiced in another currency"),
    ("reference_partial", "Number quoted, another amount"),
    ("references_sum_partial", "Numbers quoted, another total"),
    ("partner_sum", "Two open items of the partner: same total"),
    ("amount", "Same amount"),
]


class BankSyncMatchWizard(models.TransientModel):
    """The open items a bank line may settle, best first, each with why it was picked: the
    accountant reconciles with one in one click, in full or, by explicit choice, in part."""

    _name = "bank.sync.match.wizard"
    _description = "Match a Bank Line with an Open Item"

    line_id = fields.Many2one("account.bank.statement.line", required=True, readonly=True)
    company_id = fields.Many2one(related="line_id.company_id")
    currency_id = fields.Many2one(related="line_id.currency_id")
    amount = fields.Monetary(related="line_id.amount", currency_field="currency_id")
    payment_ref = fields.Char(related="line_id.payment_ref", string="Label")
    partner_id = fields.Many2one(related="line_id.partner_id")
    candidate_ids = fields.One2many(
        "bank.sync.match.wizard.candidate",
        "wizard_id",
        compute="_compute_candidate_ids",
        store=True,
        readonly=False,
        precompute=True,
    )
    has_candidates = fields.Boolean(string="Has suggestions", compute="_compute_has_candidates")

    @api.model_create_multi
    def create(self, vals_list):
        # Created over RPC on any line: the caller must be one who may match it, before its
        # suggestions are computed (a stored computed field: as the superuser).
        lines = self.env["account.bank.statement.line"].browse(
            [vals.get("line_id") for vals in vals_list if vals.get("line_id")]
        )
        check_rights(lines, ACCOUNTING_USER, operation="read")
        return super().create(vals_list)

    @api.depends("line_id")
    def _compute_candidate_ids(self):
        for wizard in self:
            decision = reconcile.decide(wizard.line_id.sudo()).get(wizard.line_id.id)
            candidates = []
            if decision:
                ranked = ([decision.apply] if decision.apply else []) + list(decision.suggestions)
                for rank, candidate in enumerate(ranked, 1):
                    candidates.append(
                        Command.create(
                            {
                                "sequence": rank,
                                "rule": candidate.rule,
                                "item_ids": [Command.set(list(candidate.item_ids))],
                                "quoted": ", ".join(candidate.quoted),
                                "difference": float(candidate.difference),
                            }
                        )
                    )
            wizard.candidate_ids = [Command.clear(), *candidates]

    @api.depends("candidate_ids")
    def _compute_has_candidates(self):
        for wizard in self:
            wizard.has_candidates = bool(wizard.candidate_ids)


class BankSyncMatchWizardCandidate(models.TransientModel):
    """One suggestion of :class:`BankSyncMatchWizard`."""

    _name = "bank.sync.match.wizard.candidate"
    _description = "Open Item Suggested for a Bank Line"
    _order = "sequence"

    wizard_id = fields.Many2one("bank.sync.match.wizard", required=True, ondelete="cascade")
    sequence = fields.Integer()
    currency_id = fields.Many2one(related="wizard_id.currency_id")
    rule = fields.Selection(CANDIDATE_RULES, string="Why", readonly=True)
    # The open journal items (an invoice's receivable line...) this suggestion settles.
    item_ids = fields.Many2many("account.move.line", string="Open items", readonly=True)
    documents = fields.Char(compute="_compute_description")
    partner_id = fields.Many2one("res.partner", compute="_compute_description")
    # The documents' currency: the line's, or another one for ``reference_currency``.
    residual_currency_id = fields.Many2one(
        "res.currency", string="Documents' currency", compute="_compute_description"
    )
    residual = fields.Monetary(
        string="Left to pay", currency_field="residual_currency_id", compute="_compute_description"
    )
    # What the documents still ask minus what the line pays (0 when they agree exactly).
    difference = fields.Monetary(currency_field="currency_id", readonly=True)
    quoted = fields.Char(string="Quoted in the bank's wording", readonly=True)
    reason = fields.Char(compute="_compute_description")

    @api.depends("item_ids", "rule", "difference", "quoted")
    def _compute_description(self):
        rules = dict(self._fields["rule"]._description_selection(self.env))
        for candidate in self:
            # As the user: a candidate made over RPC with any item ids reveals nothing the
            # user may not read.
            items = candidate.item_ids
            candidate.documents = ", ".join(items.move_id.mapped("name"))
            candidate.partner_id = items.partner_id.commercial_partner_id[:1]
            candidate.residual_currency_id = items.currency_id[:1] or candidate.currency_id
            candidate.residual = sum(items.mapped("amount_residual_currency"))
            reason = rules.get(candidate.rule, "")
            if candidate.rule == "reference_currency" and items:
                reason = candidate._currency_outcome(reason)
            elif not candidate.currency_id.is_zero(candidate.difference):
                reason = self.env._(
                    "%(reason)s (difference: %(difference)s)",
                    reason=reason,
                    difference=formatLang(
                        self.env, candidate.difference, currency_obj=candidate.currency_id
                    ),
                )
            candidate.reason = reason

    def _currency_outcome(self, reason):
        """``reason``, with what *Reconcile* does with documents in another currency: settle
        them in full (Odoo booking the exchange difference), or pay part of them."""
        line, items = self.wizard_id.line_id, self.item_ids
        try:
            settlement = reconcile.settlement_of(line, items)
        except UserError as error:
            return f"{reason}: {error.args[0]}"
        if not settlement:
            return reason
        currency, paid, residual, exact = settlement
        if exact:
            return self.env._(
                "%(reason)s: settled in full, the exchange difference (%(difference)s) booked",
                reason=reason,
                difference=formatLang(
                    self.env, abs(self.difference), currency_obj=self.currency_id
                ),
            )
        if abs(paid) < abs(residual):
            return self.env._(
                "%(reason)s: pays %(paid)s of the %(residual)s left, at the rate of the day",
                reason=reason,
                paid=formatLang(self.env, abs(paid), currency_obj=currency),
                residual=formatLang(self.env, abs(residual), currency_obj=currency),
            )
        return self.env._(
            "%(reason)s: settled in full, the rest of the operation left to reconcile",
            reason=reason,
        )

    def action_reconcile(self):
        """Reconcile the bank line with this suggestion: in full when the amounts agree, in
        part otherwise (the accountant chose it knowing the difference)."""
        self.ensure_one()
        line = self.wizard_id.line_id
        check_can_reconcile(line)
        if line.is_reconciled:
            raise UserError(self.env._("This bank line is already reconciled."))
        # Only what the matcher proposes for this line now: open items of its company and
        # currency (an item reconciled meanwhile, or any other id sent, is refused).
        decision = reconcile.decide(line.sudo()).get(line.id)
        proposed = {c.item_ids for c in (decision.suggestions if decision else ())}
        if decision and decision.apply:
            proposed.add(decision.apply.item_ids)
        if tuple(sorted(self.item_ids.ids)) not in proposed:
            raise UserError(
                self.env._("This suggestion no longer holds (reconciled meanwhile?): match again.")
            )
        items = self.item_ids.sudo()
        documents = ", ".join(items.move_id.mapped("name"))
        reconcile.reconcile_with(line.sudo(), items.ids)
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Reconciled"),
                "message": self.env._(
                    "%(line)s is reconciled with %(documents)s.",
                    line=line.payment_ref,
                    documents=documents,
                ),
                "type": "success",
                "next": {"type": "ir.actions.act_window_close"},
            },
        }
