import hmac
import logging
import re
from datetime import datetime, timedelta, timezone

from odoo import http
from odoo.exceptions import UserError
from odoo.http import request

from bank_sync_bridge.errors import BankSyncError, SignatureVerificationError

from ..const import URL_TOKEN_KINDS, WEBHOOK_ROUTE

_logger = logging.getLogger(__name__)

#: A delivery signed longer ago than this is refused: a captured request replayed later must
#: not pass even though its signature is genuine. The timestamp is inside the signed body.
REPLAY_TOLERANCE = timedelta(hours=1)
#: The largest body the public routes read (aggregators' events are a few kilobytes): anything
#: bigger is refused with 413 before it is read, let alone hashed or parsed (Odoo's own limit
#: is 128 MiB).
MAX_BODY_BYTES = 256 * 1024
#: How the public addresses that machines post to are served (webhooks, the bridge service's
#: events): anyone may call them, the body's signature decides; no CSRF token, no session; and
#: a body over MAX_BODY_BYTES is refused before it is read.
PUBLIC_POST = {
    "type": "http",
    "auth": "public",
    "methods": ["POST"],
    "csrf": False,
    "save_session": False,
    "max_content_length": MAX_BODY_BYTES,
}
#: The deepest JSON nesting accepted (events nest a few levels): deeper bodies are refused
#: with 400 before parsing, which would otherwise exhaust Python's recursion limit.
MAX_JSON_DEPTH = 32
#: What a webhook token looks like (new_webhook_token: URL-safe base64).
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: The characters that open or close strings, arrays and objects in JSON (and escapes).
_JSON_STRUCTURE = re.compile(rb'[\\"\[\]{}]')


def json_too_deep(body, limit=MAX_JSON_DEPTH):
    """Whether the JSON text ``body`` nests arrays and objects deeper than ``limit``.

    One pass over the structural characters (brackets inside strings do not count), in
    linear time whatever the body.
    """
    depth = 0
    in_string = False
    escaped = -1  # the position of the character a backslash escapes
    for match in _JSON_STRUCTURE.finditer(body):
        position = match.start()
        char = match.group()
        if position == escaped:
            continue
        if in_string:
            if char == b"\\":
                escaped = position + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


def answer(payload, status):
    """A JSON answer for the aggregator (or service) calling a public route."""
    return request.make_json_response(payload, status=status)


class Refused(Exception):
    """A delivery refused with ``status`` and a short ``error`` for the caller (the details
    go to the server log only, never to an anonymous caller)."""

    def __init__(self, status, error):
        super().__init__(error)
        self.status = status
        self.error = error

    def answer(self):
        return answer({"error": self.error}, self.status)


def read_public_body(route_name):
    """The body of a public route's request, checked before anything else reads it.

    At most :data:`MAX_BODY_BYTES`, from the declared length, before anything is read (else
    413); a body without a length (chunked transfer) could be of any size and is refused too
    (411: aggregators, the bridge service and the proxies in front of Odoo send the length of
    such small bodies); JSON nested at most :data:`MAX_JSON_DEPTH` deep (else 400).
    """
    httprequest = request.httprequest
    length = httprequest.content_length
    if length is None and "chunked" in (httprequest.headers.get("Transfer-Encoding") or "").lower():
        _logger.warning("Refused a %s body without a length", route_name)
        raise Refused(411, "length required")
    if length is not None and length > MAX_BODY_BYTES:
        _logger.warning("Refused a %s body of %s bytes", route_name, length)
        raise Refused(413, "too large")
    body = httprequest.get_data()
    if json_too_deep(body):
        _logger.warning("Refused a %s body nested too deep", route_name)
        raise Refused(400, "unreadable")
    return body


class _RedactWebhookTokens(logging.Filter):
    """Keep the webhook token of Linxo's address out of Odoo's access log (the werkzeug
    logger writes each request line, query string included)."""

    _TOKEN = re.compile(rf"({re.escape(WEBHOOK_ROUTE)}/\d+\?(?:[^\s\"]*&)?token=)[^&\s\"]*")

    def filter(self, record):
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and WEBHOOK_ROUTE in arg for arg in record.args
        ):
            record.args = tuple(
                self._TOKEN.sub(r"\1<hidden>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


logging.getLogger("werkzeug").addFilter(_RedactWebhookTokens())


class BankSyncWebhookController(http.Controller):
    @http.route(f"{WEBHOOK_ROUTE}/<int:aggregator_id>", **PUBLIC_POST)
    def bank_sync_webhook(self, aggregator_id, **_params):
        """Verify, record once, answer at once; the work happens in the background.

        The signature is checked on the raw body as received, before anything is parsed.
        Answers: 200 (recorded, or already recorded), 401 (bad signature, token or replay),
        400 (unreadable), 404 (no such aggregator), 411 and 413 (body without a length, or too
        large), 503 (this Odoo's encryption keys cannot read the secrets: the details are in
        the server log only).
        """
        env = request.env(su=True)
        try:
            body = read_public_body("webhook")
            aggregator = env["bank.sync.provider"].browse(aggregator_id).exists()
            if not aggregator or not aggregator.active:
                raise Refused(404, "unknown")
            if aggregator.kind in URL_TOKEN_KINDS:
                self._check_url_token(aggregator)
            events = self._verified_events(aggregator, body)
        except Refused as refused:
            return refused.answer()
        new, duplicates = env["bank.sync.webhook.event"]._record_events(aggregator, events)
        if new:
            env.ref("bank_sync_aggregator.ir_cron_process_webhook_events")._trigger()
        return answer({"received": len(new), "duplicates": len(duplicates)}, 200)

    def _verified_events(self, aggregator, body):
        """The events of a delivery whose signature and timestamp are verified."""
        try:
            secrets = request.env["bank.sync.webhook.event"].sudo()._webhook_secrets(aggregator)
            client = aggregator._get_client()
        except UserError as error:
            # A missing or rotated-away encryption key: the caller learns nothing of it.
            _logger.warning(
                "Webhook for aggregator settings %s not handled: %s", aggregator.id, error.args[0]
            )
            raise Refused(503, "unavailable") from error
        headers = dict(request.httprequest.headers.items())
        try:
            events = client.parse_webhook(body, headers, secrets)
        except SignatureVerificationError as error:
            # Logged without the body or the header: neither helps and both come from outside.
            _logger.warning(
                "Refused a webhook for aggregator settings %s: %s", aggregator.id, error.message
            )
            raise Refused(401, "invalid signature") from error
        except (BankSyncError, ValueError, KeyError, TypeError, RecursionError) as error:
            _logger.warning(
                "Unreadable webhook for aggregator settings %s: %s",
                aggregator.id,
                type(error).__name__,
            )
            raise Refused(400, "unreadable") from error
        now = datetime.now(timezone.utc)
        for event in events:
            sent = event.occurred_at
            if sent is not None and sent.tzinfo is None:
                sent = sent.replace(tzinfo=timezone.utc)
            if sent is not None and abs(now - sent) > REPLAY_TOLERANCE:
                _logger.warning(
                    "Refused a webhook for aggregator settings %s: sent at %s, too far from now "
                    "(replayed?)",
                    aggregator.id,
                    sent.isoformat(),
                )
                raise Refused(401, "stale delivery")
        return events

    def _check_url_token(self, aggregator):
        """Refuse a delivery whose address does not carry the aggregator's webhook token.

        The token only says "this address was given to the aggregator"; it signs nothing and
        is no credential (the events are hints: the connection is read again from the
        aggregator). Compared in constant time; never logged.
        """
        token = request.httprequest.args.get("token") or ""
        if not _TOKEN_PATTERN.fullmatch(token):
            _logger.warning(
                "Refused a webhook for aggregator settings %s: missing or malformed URL token",
                aggregator.id,
            )
            raise Refused(400 if token else 401, "invalid token")
        expected = aggregator.sudo().webhook_token or ""
        if not expected or not hmac.compare_digest(token, expected):
            _logger.warning(
                "Refused a webhook for aggregator settings %s: wrong URL token", aggregator.id
            )
            raise Refused(401, "invalid token")
