import logging

from odoo import http
from odoo.http import request

from bank_sync_bridge import signing
from bank_sync_bridge.errors import BankSyncError
from bank_sync_bridge.providers.bridge_service import parse_events_document

from ..const import EVENTS_CALLBACK_ROUTE
from .webhook import PUBLIC_POST, Refused, answer, read_public_body

_logger = logging.getLogger(__name__)


class BankSyncBridgeServiceController(http.Controller):
    @http.route(f"{EVENTS_CALLBACK_ROUTE}/<int:aggregator_id>", **PUBLIC_POST)
    def bank_sync_bridge_service_events(self, aggregator_id, **_params):
        """The bridge service pushing this tenant's events, signed with the tenant secret.

        The signature must cover this very request (method, path, raw body), be recent and
        carry a nonce not seen before; anything else is refused with 401 before the body is
        parsed (a body over the size limit with 413, before it is read). Each event is
        recorded once, for the company it names only, and handled in the background, like a
        webhook.
        """
        env = request.env(su=True)
        try:
            body = read_public_body("bridge service delivery")
            aggregator = env["bank.sync.provider"].browse(aggregator_id).exists()
            if not aggregator or not aggregator.active or aggregator.kind != "bridge_service":
                raise Refused(404, "unknown")
            self._verify_signature(aggregator, body)
            try:
                events = parse_events_document(body)
            except (BankSyncError, ValueError, KeyError, TypeError, AttributeError) as error:
                raise Refused(400, "unreadable") from error
        except Refused as refused:
            return refused.answer()
        # The service posts the events of every company of this database on its tenant to one
        # address: each of them records the events that name it (see
        # _bridge_service_events_for_me for those that name none).
        aggregators = env["bank.sync.provider"].search(
            [
                ("kind", "=", "bridge_service"),
                ("active", "=", True),
                ("client_id", "=", aggregator.client_id),
            ]
        )
        new = env["bank.sync.webhook.event"]
        for target in aggregators:
            new |= target._bridge_service_record(events)
        if new:
            env.ref("bank_sync_aggregator.ir_cron_process_webhook_events")._trigger()
        return answer({"received": len(events), "new": len(new)}, 200)

    def _verify_signature(self, aggregator, body):
        """Refuse a delivery not signed for this request with the tenant secret, or replayed
        (its nonce was accepted before, within the signature's tolerance)."""
        try:
            secret = aggregator._get_credentials().get("client_secret")
        except Exception as error:  # a key removed from the configuration: nothing to check with
            _logger.warning(
                "No usable bridge service secret for aggregator settings %s", aggregator.id
            )
            raise Refused(404, "not configured") from error
        if not secret:
            raise Refused(404, "not configured")
        # The path as this Odoo received it, never the sender's word for it: a delivery
        # signed for another URL (another database or company) does not verify here.
        path = signing.canonical_path(request.httprequest.full_path)
        try:
            verified = signing.verify_request(
                [secret], "POST", path, body, dict(request.httprequest.headers.items())
            )
        except BankSyncError as error:
            _logger.warning(
                "Refused a bridge service delivery for aggregator settings %s: %s",
                aggregator.id,
                error.message,
            )
            raise Refused(401, "invalid signature") from error
        if (
            not request.env["bank.sync.request.nonce"]
            .sudo()
            ._use(
                f"bridge_service:{aggregator.client_id}",
                verified.nonce,
                verified.timestamp,
                signing.DEFAULT_TOLERANCE,
            )
        ):
            _logger.warning(
                "Refused a bridge service delivery for aggregator settings %s: its nonce was "
                "already used (replayed?)",
                aggregator.id,
            )
            raise Refused(401, "replayed")
