from odoo import api, models
from odoo.addons.bank_sync_aggregator.sync import reconcile

#: The matcher's suggestions a synchronised line opens with in OCA's widget, ready to validate:
#: those whose documents the bank's wording quotes, in the line's currency. A line whose best
#: suggestion rests on an amount or a partner alone opens empty, as OCA leaves it.
PRESELECTED_RULES = frozenset(
    [
        "reference",
        "references_sum",
        "reference_completed",
        "reference_partial",
        "references_sum_partial",
    ]
)


class AccountBankStatementLine(models.Model):
    _inherit = "account.bank.statement.line"

    @api.depends("reconcile_data", "is_reconciled")
    def _compute_reconcile_data_info(self):
        # The matcher decides for all the lines read at once (one read of the open items),
        # not once per line; never during an import (the engine's own matching decides).
        waiting = self.filtered(
            lambda line: (
                line.id
                and line.bank_sync_account_id
                and not line.is_reconciled
                and not line.reconcile_data
            )
        )
        decisions = {}
        if not self.env.context.get("bank_sync_engine"):
            for company in waiting.company_id:
                lines = waiting.filtered(lambda line, company=company: line.company_id == company)
                decisions.update(reconcile.decide(lines.sudo()))
        context = {"bank_sync_decisions": decisions} if decisions else {}
        return super(
            AccountBankStatementLine, self.with_context(**context)
        )._compute_reconcile_data_info()

    def _default_reconcile_data(self, from_unreconcile=False):
        """As OCA opens a line, with the documents it quotes already chosen (when neither
        OCA's own matching models nor a person chose anything): the person checks and
        validates, nothing is reconciled until then. Only a choice that settles the whole
        line is made (the documents capped at what the line pays, as OCA caps a person's
        choice); one that would leave part of the line on the partner's account is not."""
        result = super()._default_reconcile_data(from_unreconcile=from_unreconcile)
        if (
            from_unreconcile
            or self.is_reconciled
            or not self.bank_sync_account_id
            or self.env.context.get("bank_sync_engine")
        ):
            return result
        if any(data["kind"] not in ("liquidity", "suspense") for data in result["data"]):
            return result
        items = self._bank_sync_preselected_items()
        if not items:
            return result
        data = [data for data in result["data"] if data["kind"] == "liquidity"]
        auxiliary_id = result["reconcile_auxiliary_id"]
        currency = self._get_reconcile_currency()
        # What is left to settle, with the line's sign, in the widget's currency.
        pending = sum(self._get_amount_currency(line, currency) for line in data)
        # Those going against the line first (a credit note quoted with its invoice): the
        # line's amount caps the last one only.
        items = items.sorted(lambda item: (item.amount_residual > 0) == (pending > 0))
        for item in items:
            if currency.is_zero(pending):
                return result  # settled before the last document: not this choice
            auxiliary_id, lines = self._get_reconcile_line(
                item,
                "other",
                is_counterpart=True,
                max_amount=currency.round(pending),
                reconcile_auxiliary_id=auxiliary_id,
                move=True,
            )
            pending += sum(self._get_amount_currency(line, currency) for line in lines)
            data += lines
        if not currency.is_zero(pending):
            return result
        return self._recompute_suspense_line(data, auxiliary_id, self.manual_reference)

    def _bank_sync_preselected_items(self):
        """The open items of the matcher's best suggestion for this line, when the wording
        quotes them and no other suggestion is as good; else no item."""
        decisions = self.env.context.get("bank_sync_decisions")
        if decisions is None or self.id not in decisions:
            decisions = reconcile.decide(self.sudo())
        decision = decisions.get(self.id)
        if not decision:
            return self.env["account.move.line"]
        ranked = ([decision.apply] if decision.apply else []) + list(decision.suggestions)
        best = ranked[0] if ranked else None
        if (
            not best
            or best.rule not in PRESELECTED_RULES
            or any(other.score >= best.score for other in ranked[1:])
        ):
            return self.env["account.move.line"]
        # Only items the user may read are chosen for them.
        items = self.env["account.move.line"].browse(best.item_ids).exists()
        if len(items._filtered_access("read")) != len(items):
            return self.env["account.move.line"]
        return items
