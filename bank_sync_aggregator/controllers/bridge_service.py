import logging

from odoo import http
from odoo.http import request

from ..models.bank_sync_provider_bridge_service import EVENTS_CALLBACK_ROUTE

_logger = logging.getLogger(__name__)


class BankSyncBridgeServiceController(http.Controller):
    @http.route(
        f"{EVENTS_CALLBACK_ROUTE}/<int:provider_id>",
        type="http",
        auth="public",
        methods=["POST"],
        csrf=False,
        save_session=False,
    )
    def bank_sync_bridge_service_events(self, provider_id, **_params):
        """The bridge service pushing this tenant's events, signed with the tenant secret.

        The signature must cover this very request (method, path, raw body) and be recent;
        anything else is refused with 401 before the body is read. Each event is recorded
        once for the company it names and handled in the background, like a webhook.
        """
        from bank_sync_bridge import signing  # noqa: PLC0415
        from bank_sync_bridge.errors import BankSyncError  # noqa: PLC0415
        from bank_sync_bridge.providers.bridge_service import (  # noqa: PLC0415
            parse_events_document,
        )

        env = request.env(su=True)
        provider = env["bank.sync.provider"].browse(provider_id).exists()
        if not provider or not provider.active or provider.kind != "bridge_service":
            return self._answer({"error": "unknown"}, 404)
        try:
            secret = provider._get_credentials().get("client_secret")
        except Exception:  # a key removed from the configuration: no secret to check with
            _logger.warning(
                "No usable bridge service secret for aggregator settings %s", provider.id
            )
            secret = None
        if not secret:
            return self._answer({"error": "not configured"}, 404)
        body = request.httprequest.get_data()
        # The path as this Odoo received it, never the sender's word for it: a delivery
        # signed for another URL (another database or company) does not verify here.
        path = signing.canonical_path(request.httprequest.full_path)
        try:
            signing.verify_request(
                [secret], "POST", path, body, dict(request.httprequest.headers.items())
            )
        except BankSyncError as error:
            _logger.warning(
                "Refused a bridge service delivery for aggregator settings %s: %s",
                provider.id,
                error.message,
            )
            return self._answer({"error": "invalid signature"}, 401)
        try:
            events = parse_events_document(body)
        except BankSyncError:
            return self._answer({"error": "unreadable"}, 400)
        providers = env["bank.sync.provider"].search(
            [
                ("kind", "=", "bridge_service"),
                ("active", "=", True),
                ("client_id", "=", provider.client_id),
            ]
        )
        new = env["bank.sync.webhook.event"]
        for target in providers:
            new |= target._bridge_service_record(events)
        if new:
            env.ref("bank_sync_aggregator.ir_cron_process_webhook_events")._trigger()
        return self._answer({"received": len(events), "new": len(new)}, 200)

    def _answer(self, payload, status):
        return request.make_json_response(payload, status=status)
