from datetime import datetime, timedelta, timezone

from odoo import api, fields, models


class BankSyncRequestNonce(models.Model):
    """The nonces of the signed requests this Odoo accepted (the bridge service's pushes),
    kept while their signature could still pass: a request is accepted once, a replay of it
    within the signature's tolerance is refused."""

    _name = "bank.sync.request.nonce"
    _description = "Bank Synchronisation Request Nonce"
    _log_access = False

    # Who signed the request ("bridge_service:<client id>"): nonces are unique per signer.
    scope = fields.Char(required=True, readonly=True)
    nonce = fields.Char(required=True, readonly=True)
    # When the request's timestamp stops passing the signature check: the row is useless after.
    expires_at = fields.Datetime(required=True, readonly=True, index=True)

    _sql_constraints = [
        ("scope_nonce_uniq", "UNIQUE(scope, nonce)", "A request nonce is accepted once."),
    ]

    @api.model
    def _use(self, scope, nonce, timestamp, tolerance):
        """Record ``nonce`` as used by ``scope``; False when it already was (a replay).

        ``timestamp`` (epoch seconds) and ``tolerance`` (seconds) are the signed request's:
        the nonce is kept until no request with that timestamp can pass any more. One
        statement, so that two deliveries of the same request at once are settled by the
        unique index (the second waits for the first and gets nothing back).
        """
        now = datetime.now(timezone.utc).timestamp()
        expires_at = datetime.fromtimestamp(max(timestamp, now), tz=timezone.utc).replace(
            tzinfo=None
        ) + timedelta(seconds=tolerance)
        self.env.cr.execute(
            """
            INSERT INTO bank_sync_request_nonce (scope, nonce, expires_at)
                 VALUES (%s, %s, %s)
            ON CONFLICT (scope, nonce) DO NOTHING
              RETURNING id
            """,
            (scope, nonce, expires_at),
        )
        return bool(self.env.cr.fetchone())

    @api.autovacuum
    def _gc_expired(self):
        """Forget the nonces whose requests can no longer pass the signature check."""
        self.env.cr.execute(
            "DELETE FROM bank_sync_request_nonce WHERE expires_at < %s",
            (fields.Datetime.now(),),
        )
