from odoo import fields, models


class BankSyncToken(models.Model):
    """Short-lived aggregator tokens, encrypted, kept between runs and workers."""

    _name = "bank.sync.token"
    _description = "Bank Synchronisation Token Cache"
    _log_access = False

    provider_id = fields.Many2one("bank.sync.provider", required=True, ondelete="cascade")
    key = fields.Char(required=True)
    value_encrypted = fields.Char(groups="base.group_system")

    _sql_constraints = [
        ("provider_key_uniq", "UNIQUE(provider_id, key)", "One cached token per key."),
    ]

    def _find(self, aggregator, key):
        return self.search([("provider_id", "=", aggregator.id), ("key", "=", key)], limit=1)

    def _store(self, aggregator, key, value_encrypted):
        # An upsert, so that two workers refreshing the same token never violate the
        # unique constraint; the last one wins, both tokens being valid.
        self.env.cr.execute(
            """
            INSERT INTO bank_sync_token (provider_id, key, value_encrypted)
                 VALUES (%s, %s, %s)
            ON CONFLICT (provider_id, key) DO UPDATE SET value_encrypted = EXCLUDED.value_encrypted
            """,
            (aggregator.id, key, value_encrypted),
        )
        self.invalidate_model(["value_encrypted"])
