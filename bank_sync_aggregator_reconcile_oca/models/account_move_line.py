from odoo import api, fields, models
from odoo.addons.bank_sync_aggregator.sync import reconcile


class AccountMoveLine(models.Model):
    _inherit = "account.move.line"

    # The suspense side of a bank statement line still waiting for its counterpart. With a
    # reconcilable suspense account (the French chart's 471000), OCA's widget offers every
    # such item as a candidate for every other bank line: thousands of them, burying the
    # invoices. Its candidate list leaves them out.
    bank_sync_waiting_bank_line = fields.Boolean(
        string="Bank line waiting for its counterpart",
        compute="_compute_bank_sync_waiting_bank_line",
        search="_search_bank_sync_waiting_bank_line",
    )

    @api.depends("statement_line_id", "account_id")
    def _compute_bank_sync_waiting_bank_line(self):
        for item in self:
            journal = item.statement_line_id.journal_id
            item.bank_sync_waiting_bank_line = bool(
                journal and item.account_id == journal.suspense_account_id
            )

    def _search_bank_sync_waiting_bank_line(self, operator, value):
        if operator not in ("=", "!="):
            return NotImplemented
        suspense = self.env["account.journal"].sudo().search([]).suspense_account_id
        waiting = [("statement_line_id", "!=", False), ("account_id", "in", suspense.ids)]
        if (operator == "=") == bool(value):
            return waiting
        return ["|", ("statement_line_id", "=", False), ("account_id", "not in", suspense.ids)]

    @api.model
    def web_search_read(self, domain, specification, offset=0, limit=None, order=None, **kw):
        """In OCA's candidate list of a synchronised bank line, the open items the line quotes
        (or that the matcher suggests) come first, best first; then the rest, as OCA orders
        them."""
        line_id = self.env.context.get("bank_sync_line_id")
        if not line_id:
            return super().web_search_read(domain, specification, offset, limit, order, **kw)
        line = self.env["account.bank.statement.line"].browse(line_id).exists()
        # The line's id comes from the client: its suggestions only for who may read it.
        if not line or not line.has_access("read"):
            return super().web_search_read(domain, specification, offset, limit, order, **kw)
        decision = reconcile.decide(line.sudo()).get(line.id) if line.bank_sync_account_id else None
        ranked = []
        for candidate in ([decision.apply] if decision and decision.apply else []) + list(
            decision.suggestions if decision else []
        ):
            ranked += [item_id for item_id in candidate.item_ids if item_id not in ranked]
        first = self.browse(ranked).filtered_domain(domain).ids if ranked else []
        rest_domain = [*domain, ("id", "not in", first)] if first else domain
        if offset >= len(first):
            result = super().web_search_read(
                rest_domain, specification, offset - len(first), limit, order, **kw
            )
            result["length"] += len(first)
            return result
        shown = first[offset : offset + limit] if limit else first[offset:]
        more = (limit - len(shown)) if limit else None
        # (asked for at least one, for the count: a limit of 0 would mean no limit)
        result = super().web_search_read(
            rest_domain, specification, 0, max(more, 1) if limit else None, order, **kw
        )
        rest = result["records"][:more] if limit else result["records"]
        result["records"] = self.browse(shown).web_read(specification) + rest
        result["length"] += len(first)
        return result
