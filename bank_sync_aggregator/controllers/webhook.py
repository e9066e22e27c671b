import hmac
import logging
from datetime import datetime, timedelta, timezone

from odoo import http
from odoo.http import request

_logger = logging.getLogger(__name__)

#: Where aggregators post their events, one URL per aggregator settings record (each company
#: has its own aggregator contract, hence its own webhook secret).
WEBHOOK_ROUTE = "/bank_sync/webhook"
#: A delivery signed longer ago than this is refused: a captured request replayed later must
#: not pass even though its signature is genuine. The timestamp is inside the signed body.
REPLAY_TOLERANCE = timedelta(hours=1)
#: Aggregators that sign nothing (Linxo documents no signature, only TLS and IP filtering):
#: the webhook URL registered with them carries one of the webhook secrets as ``?token=``, so
#: a delivery that does not know it is refused like a bad signature.
URL_TOKEN_KINDS = frozenset({"linxo"})


class BankSyncWebhookController(http.Controller):
    @http.route(
        f"{WEBHOOK_ROUTE}/<int:provider_id>",
        type="http",
        auth="public",
        methods=["POST"],
        csrf=False,
        save_session=False,
    )
    def bank_sync_webhook(self, provider_id, **_params):
        """Verify, record once, answer at once; the work happens in the background.

        The signature is checked on the raw body as received, before anything is parsed.
        Answers: 200 (recorded, or already recorded), 401 (bad signature or replay), 400
        (unreadable), 404 (no such aggregator, or webhooks not configured).
        """
        body = request.httprequest.get_data()
        env = request.env(su=True)
        provider = env["bank.sync.provider"].browse(provider_id).exists()
        if not provider or not provider.active:
            return self._answer({"error": "unknown"}, 404)
        secrets = env["bank.sync.webhook.event"]._provider_secrets(provider)
        headers = dict(request.httprequest.headers.items())
        from bank_sync_bridge.errors import (  # noqa: PLC0415
            BankSyncError,
            SignatureVerificationError,
        )

        if provider.kind in URL_TOKEN_KINDS:
            token = (request.httprequest.args.get("token") or "").encode()
            # Compare with every secret, without stopping early (constant time per secret).
            matches = [hmac.compare_digest(token, secret.encode()) for secret in secrets]
            if not token or not any(matches):
                _logger.warning(
                    "Refused a webhook for aggregator settings %s: missing or wrong URL token",
                    provider.id,
                )
                return self._answer({"error": "invalid signature"}, 401)
        try:
            events = provider._get_provider().parse_webhook(body, headers, secrets)
        except SignatureVerificationError as error:
            # Logged without the body or the header: neither helps and both come from outside.
            _logger.warning(
                "Refused a webhook for aggregator settings %s: %s", provider.id, error.message
            )
            return self._answer({"error": "invalid signature"}, 401)
        except (BankSyncError, ValueError, KeyError, TypeError) as error:
            _logger.warning("Unreadable webhook for aggregator settings %s: %s", provider.id, error)
            return self._answer({"error": "unreadable"}, 400)
        now = datetime.now(timezone.utc)
        for event in events:
            sent = event.occurred_at
            if sent is not None and sent.tzinfo is None:
                sent = sent.replace(tzinfo=timezone.utc)
            if sent is not None and abs(now - sent) > REPLAY_TOLERANCE:
                _logger.warning(
                    "Refused a webhook for aggregator settings %s: sent at %s, too far from now "
                    "(replayed?)",
                    provider.id,
                    sent.isoformat(),
                )
                return self._answer({"error": "stale delivery"}, 401)
        new, duplicates = env["bank.sync.webhook.event"]._record_events(provider, events)
        if new:
            env.ref("bank_sync_aggregator.ir_cron_process_webhook_events")._trigger()
        return self._answer({"received": len(new), "duplicates": len(duplicates)}, 200)

    def _answer(self, payload, status):
        return request.make_json_response(payload, status=status)
