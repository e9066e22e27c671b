import json

from odoo import fields, models
from odoo.exceptions import UserError


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


class OdooTokenStore:
    """A :class:`bank_sync_bridge.providers.base.TokenStore` kept in ``bank.sync.token``.

    Aggregator access tokens live for hours: keeping them across cron runs and workers spares
    the aggregator a login per account. They are secrets, so they are encrypted like the
    credentials.
    """

    def __init__(self, aggregator):
        self._aggregator = aggregator
        # The sandbox keeps only demo memory (which demo connections exist): nothing secret,
        # and it must work without any key configured.
        self._plain = aggregator.kind == "sandbox"

    def get(self, key):
        """The cached token data for ``key``, or None."""
        token = self._aggregator.env["bank.sync.token"].sudo()._find(self._aggregator, key)
        if not token or not token.value_encrypted:
            return None
        try:
            if self._plain:
                return json.loads(token.value_encrypted)
            return json.loads(self._aggregator._decrypt(token.value_encrypted))
        except (UserError, ValueError):
            # A rotated-away key or a corrupt row only costs a new login.
            return None

    def set(self, key, value):
        """Remember token data for ``key``."""
        text = json.dumps(dict(value), default=str)
        stored = text if self._plain else self._aggregator._encrypt(text)
        self._aggregator.env["bank.sync.token"].sudo()._store(self._aggregator, key, stored)
