from odoo import fields, models


class ResCompany(models.Model):
    _inherit = "res.company"

    bank_sync_enabled = fields.Boolean(
        string="Bank synchronisation",
        help="Import bank operations automatically through a licensed aggregator.",
    )
    bank_sync_provider_ids = fields.One2many("bank.sync.provider", "company_id")

    def _get_bank_sync_provider(self):
        """The company's active aggregator settings (empty when none)."""
        self.ensure_one()
        return self.env["bank.sync.provider"].search(
            [("company_id", "=", self.id), ("active", "=", True)], limit=1
        )

    def _bank_sync_set_provider_kind(self, kind):
        """Make ``kind`` the company's aggregator.

        The previous aggregator's connections are disconnected (revoked there when possible)
        and kept with their history; its settings are archived, so that switching back finds
        them again.
        """
        self.ensure_one()
        Provider = self.env["bank.sync.provider"].sudo().with_context(active_test=False)
        current = self._get_bank_sync_provider().sudo()
        if current.kind == kind:
            return current
        if current:
            live = current.connection_ids.filtered(lambda c: c.state != "disconnected")
            live._switch_away_from_provider()
            current.active = False
        target = Provider.search(
            [("company_id", "=", self.id), ("kind", "=", kind)], order="id desc", limit=1
        )
        if target:
            target.active = True
        else:
            target = Provider.create({"company_id": self.id, "kind": kind})
        return target
