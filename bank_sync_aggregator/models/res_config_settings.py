from odoo import api, fields, models

from ..const import AGGREGATOR_KINDS
from ..rights import ACCOUNTING_MANAGER, check_rights


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    bank_sync_enabled = fields.Boolean(related="company_id.bank_sync_enabled", readonly=False)
    bank_sync_provider_kind = fields.Selection(
        AGGREGATOR_KINDS,
        string="Aggregator",
        compute="_compute_bank_sync_provider_kind",
        store=True,
        readonly=False,
    )
    bank_sync_provider_id = fields.Many2one(
        "bank.sync.provider", compute="_compute_bank_sync_provider_id"
    )
    bank_sync_switch_warning = fields.Char(compute="_compute_bank_sync_switch_warning")
    # Health alerts
    bank_sync_alert_user_ids = fields.Many2many(
        related="company_id.bank_sync_alert_user_ids", readonly=False
    )
    bank_sync_failure_alert_days = fields.Integer(
        related="company_id.bank_sync_failure_alert_days", readonly=False
    )
    bank_sync_stall_days = fields.Integer(related="company_id.bank_sync_stall_days", readonly=False)
    bank_sync_auto_reconcile = fields.Boolean(
        related="company_id.bank_sync_auto_reconcile", readonly=False
    )

    @api.depends("company_id")
    def _compute_bank_sync_provider_id(self):
        for settings in self:
            settings.bank_sync_provider_id = settings.company_id._get_bank_sync_aggregator()

    @api.depends("company_id")
    def _compute_bank_sync_provider_kind(self):
        for settings in self:
            aggregator = settings.company_id._get_bank_sync_aggregator()
            settings.bank_sync_provider_kind = aggregator.kind or "sandbox"

    @api.depends("bank_sync_provider_kind", "bank_sync_provider_id")
    def _compute_bank_sync_switch_warning(self):
        for settings in self:
            aggregator = settings.bank_sync_provider_id
            live = aggregator.connection_ids.filtered(lambda c: c.state != "disconnected")
            if aggregator and live and settings.bank_sync_provider_kind != aggregator.kind:
                settings.bank_sync_switch_warning = self.env._(
                    "Saving will disconnect the %(count)s bank connection(s) made with "
                    "%(aggregator)s: they are revoked there and kept here, read-only, with "
                    "their imported operations. Add your banks again with the new aggregator.",
                    count=len(live),
                    aggregator=aggregator.name,
                )
            else:
                settings.bank_sync_switch_warning = False

    def set_values(self):
        for settings in self:
            if settings._bank_sync_switches_aggregator():
                # Switching aggregators disconnects the company's banks (as the superuser).
                check_rights(settings, ACCOUNTING_MANAGER, settings.company_id)
        result = super().set_values()
        for settings in self:
            company = settings.company_id
            if company.bank_sync_enabled and settings.bank_sync_provider_kind:
                company._bank_sync_set_aggregator_kind(settings.bank_sync_provider_kind)
        return result

    def _bank_sync_switches_aggregator(self):
        """Whether saving makes another aggregator the company's (disconnecting its banks)."""
        self.ensure_one()
        current = self.company_id.sudo()._get_bank_sync_aggregator()
        return bool(
            self.bank_sync_enabled
            and self.bank_sync_provider_kind
            and current.kind != self.bank_sync_provider_kind
        )

    def action_bank_sync_open_aggregator(self):
        self.ensure_one()
        check_rights(self, ACCOUNTING_MANAGER, self.company_id)
        self.execute()
        aggregator = self.company_id._get_bank_sync_aggregator()
        return {
            "type": "ir.actions.act_window",
            "res_model": "bank.sync.provider",
            "res_id": aggregator.id,
            "view_mode": "form",
            "target": "current",
        }
