from odoo import fields, models


class ResCompany(models.Model):
    _inherit = "res.company"

    bank_sync_enabled = fields.Boolean(
        string="Bank synchronisation",
        help="Import bank operations automatically through a licensed aggregator.",
    )
    bank_sync_provider_ids = fields.One2many("bank.sync.provider", "company_id")
    # Health alerts: who is told, and when a problem is worth telling.
    bank_sync_alert_user_ids = fields.Many2many(
        "res.users",
        "res_company_bank_sync_alert_user_rel",
        string="Bank synchronisation alerts to",
        help="Who receives the alerts (activity and e-mail) and the consent reminders. Empty: "
        "the company's accounting managers.",
    )
    bank_sync_failure_alert_days = fields.Integer(
        string="Alert after failed days",
        default=3,
        help="A bank that is temporarily unavailable alerts only after this many consecutive "
        "days without a successful synchronisation. Actions needed from you alert at once.",
    )
    bank_sync_stall_days = fields.Integer(
        string="Alert after days without operations",
        default=7,
        help="An account that usually receives operations but has brought none for this many "
        "days raises an alert, even when its connection says OK.",
    )
    bank_sync_auto_reconcile = fields.Boolean(
        string="Reconcile exact matches",
        default=True,
        help="Imported operations that quote an open invoice or bill and pay exactly what is "
        "left of it (or pay the only open item of that amount of a known partner) are "
        "reconciled as they arrive. Anything less sure is only suggested.",
    )

    def _get_bank_sync_aggregator(self):
        """The company's active aggregator settings (empty when none)."""
        self.ensure_one()
        return self.env["bank.sync.provider"].search(
            [("company_id", "=", self.id), ("active", "=", True)], limit=1
        )

    def _bank_sync_set_aggregator_kind(self, kind):
        """Make ``kind`` the company's aggregator.

        The previous aggregator's connections are disconnected (revoked there when possible)
        and kept with their history; its settings are archived, so that switching back finds
        them again.
        """
        self.ensure_one()
        Aggregator = self.env["bank.sync.provider"].sudo().with_context(active_test=False)
        current = self._get_bank_sync_aggregator().sudo()
        if current.kind == kind:
            return current
        if current:
            live = current.connection_ids.filtered(lambda c: c.state != "disconnected")
            live._switch_away_from_aggregator()
            current.active = False
        target = Aggregator.search(
            [("company_id", "=", self.id), ("kind", "=", kind)], order="id desc", limit=1
        )
        if target:
            target.active = True
        else:
            target = Aggregator.create({"company_id": self.id, "kind": kind})
        return target

    def _bank_sync_alert_users(self):
        """The users told about this company's bank connections."""
        self.ensure_one()
        users = self.bank_sync_alert_user_ids.filtered(lambda u: u.active and not u.share)
        if users:
            return users
        managers = self.env.ref("account.group_account_manager").sudo().users
        return managers.filtered(lambda u: u.active and not u.share and self in u.company_ids)
