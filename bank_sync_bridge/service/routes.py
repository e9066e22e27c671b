"""The bridge service's HTTP API, independent of any web framework.

:class:`Router` turns a :class:`~.messages.Request` into a :class:`~.messages.Response`;
:mod:`.server` feeds it from its HTTP reader. Three kinds of routes:

- public: ``GET /health``, ``GET /openapi.json``, ``GET /docs``;
- aggregator webhooks: ``POST /webhooks/{kind}``, verified by the aggregator's signature on the
  raw body, stored once per event id, answered 202 at once, routed to the owning tenant;
- tenant API under ``/v1``: signed by the tenant (:func:`bank_sync_bridge.signing.sign_request`),
  rate limited per tenant, and scoped to one aggregator user per tenant company (header
  ``X-Bank-Sync-Company``), through :class:`~.tenancy.Tenancy`.

Request bodies and parameters are read here, strictly: JSON nested deeper than
:data:`MAX_JSON_DEPTH` is refused before it is parsed.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..crypto import SecretKeyError
from ..errors import BankSyncError, InvalidRequest, SignatureVerificationError
from ..model import Cursor, TransactionPage
from ..providers.bridge_service import to_wire
from .callbacks import CallbackRefused
from .clock import ServiceClock
from .delivery import EventDelivery
from .logs import LOGGER_NAME
from .messages import (
    ApiError,
    Request,
    RequestContext,
    Response,
    error_response,
    html_response,
    json_response,
)
from .openapi import build_openapi, render_docs
from .provider_pool import SANDBOX_PAGE, ProviderPool, provider_error_answer
from .store import Store
from .tenancy import Caller, Tenancy, Tenant

#: Aggregators that sign no webhook: their deliveries must carry a secret URL token instead.
URL_TOKEN_KINDS = frozenset({"linxo"})

#: Deepest nesting of arrays and objects accepted in a JSON body (tenants' requests and
#: aggregators' webhooks alike; theirs nest a handful of levels).
MAX_JSON_DEPTH = 64

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Handler = Callable[[Request, RequestContext], Response]


class Router:
    """The routes of the API and their handlers (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        providers: ProviderPool,
        tenancy: Tenancy,
        delivery: EventDelivery,
        clock: ServiceClock,
    ) -> None:
        self.store = store
        self.providers = providers
        self.tenancy = tenancy
        self.delivery = delivery
        self.clock = clock
        self.logger = logging.getLogger(LOGGER_NAME)
        self._openapi = json.dumps(build_openapi(__version__), indent=1).encode()
        self._docs = render_docs(build_openapi(__version__)).encode()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"^/health$"), self._health),
            ("GET", re.compile(r"^/openapi\.json$"), self._openapi_json),
            ("GET", re.compile(r"^/docs/?$"), self._docs_page),
            ("POST", re.compile(r"^/webhooks/(?P<kind>[a-z_]+)$"), self._webhook),
            ("GET", re.compile(r"^/sandbox/connect$"), self._sandbox_page),
            ("POST", re.compile(r"^/sandbox/connect$"), self._sandbox_submit),
            ("GET", re.compile(r"^/v1/institutions$"), self._company(self._institutions)),
            ("POST", re.compile(r"^/v1/connect-sessions$"), self._company(self._connect)),
            (
                "POST",
                re.compile(r"^/v1/connections/(?P<id>[^/]+)/reconnect-sessions$"),
                self._company(self._reconnect),
            ),
            ("POST", re.compile(r"^/v1/connect/complete$"), self._company(self._complete)),
            ("GET", re.compile(r"^/v1/connections$"), self._company(self._connections)),
            ("GET", re.compile(r"^/v1/connections/(?P<id>[^/]+)$"), self._company(self._conn)),
            (
                "POST",
                re.compile(r"^/v1/connections/(?P<id>[^/]+)/refresh$"),
                self._company(self._refresh),
            ),
            (
                "DELETE",
                re.compile(r"^/v1/connections/(?P<id>[^/]+)$"),
                self._company(self._delete_connection),
            ),
            ("GET", re.compile(r"^/v1/accounts$"), self._company(self._accounts)),
            (
                "GET",
                re.compile(r"^/v1/accounts/(?P<id>[^/]+)/transactions$"),
                self._company(self._transactions),
            ),
            ("DELETE", re.compile(r"^/v1/user$"), self._company(self._delete_user)),
            ("GET", re.compile(r"^/v1/events$"), self._tenant(self._events)),
            ("PUT", re.compile(r"^/v1/callback$"), self._tenant(self._set_callback)),
            ("DELETE", re.compile(r"^/v1/callback$"), self._tenant(self._remove_callback)),
        ]

    # ------------------------------------------------------------------ dispatch
    def handle(self, request: Request) -> Response:
        """Answer one request; never raises (errors become JSON answers and a log line)."""
        started = self.clock.monotonic()
        supplied = request.header("X-Request-Id")
        ctx = RequestContext(
            request_id=supplied if _REQUEST_ID_RE.match(supplied) else uuid.uuid4().hex
        )
        try:
            response = self._dispatch(request, ctx)
        except ApiError as exc:
            ctx.error = exc.error
            response = error_response(exc, ctx)
        except SecretKeyError:
            # The operator's keys do not open a stored secret: the operator's problem, not the
            # tenant's, and nothing about it is told to the tenant.
            ctx.error = "internal"
            self.logger.exception("secret store", extra={"fields": {"request_id": ctx.request_id}})
            response = error_response(
                ApiError(500, "internal", "The bridge service failed; the operator can see why"),
                ctx,
            )
        except BankSyncError as exc:
            api_error = provider_error_answer(exc)
            ctx.error = api_error.error
            response = error_response(api_error, ctx)
        except Exception:
            ctx.error = "internal"
            self.logger.exception(
                "unhandled error", extra={"fields": {"request_id": ctx.request_id}}
            )
            response = error_response(
                ApiError(500, "internal", "The bridge service failed; the operator can see why"),
                ctx,
            )
        response.headers["X-Request-Id"] = ctx.request_id
        fields: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": request.method,
            "path": request.raw_path,
            "status": response.status,
            "duration_ms": round((self.clock.monotonic() - started) * 1000, 2),
            "remote": request.remote,
        }
        if ctx.client_id:
            fields["client_id"] = ctx.client_id
        if ctx.company:
            fields["company"] = ctx.company
        if ctx.error:
            fields["error"] = ctx.error
        fields.update(ctx.extra)
        self.logger.log(
            logging.WARNING if response.status >= 400 and response.status != 404 else logging.INFO,
            "request",
            extra={"fields": fields},
        )
        return response

    def _dispatch(self, request: Request, ctx: RequestContext) -> Response:
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if not match:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            request.params = match.groupdict()
            return handler(request, ctx)
        if allowed:
            raise ApiError(405, "method_not_allowed", f"Use {', '.join(allowed)} on this path")
        raise ApiError(404, "not_found", "No such endpoint")

    def _tenant(self, handler: Callable[[Request, RequestContext, Tenant], Response]) -> Handler:
        def wrapped(request: Request, ctx: RequestContext) -> Response:
            tenant = self.tenancy.authenticate(request, ctx)
            self.tenancy.rate_limit(tenant)
            return handler(request, ctx, tenant)

        return wrapped

    def _company(self, handler: Callable[[Request, RequestContext, Caller], Response]) -> Handler:
        def wrapped(request: Request, ctx: RequestContext) -> Response:
            tenant = self.tenancy.authenticate(request, ctx)
            caller = self.tenancy.caller(request, ctx, tenant)
            self.tenancy.rate_limit(tenant)
            return handler(request, ctx, caller)

        return wrapped

    # ------------------------------------------------------------------ helpers
    def _provider_for(self, caller: Caller) -> Any:
        """The caller's provider, each call serialised; its aggregator user is recorded first
        so that the aggregator's events about it can be routed."""
        self.tenancy.register(caller)
        return self.providers.serialized(caller.user_ref)

    def _require_connection(self, caller: Caller, connection_id: str) -> None:
        self.tenancy.require_connection(caller, self.providers.config().kind, connection_id)

    # ------------------------------------------------------------------ public routes
    def _health(self, request: Request, ctx: RequestContext) -> Response:
        with self.store.transaction(write=False) as tx:
            tx.one("SELECT 1")
        return json_response(200, {"status": "ok", "version": __version__})

    def _openapi_json(self, request: Request, ctx: RequestContext) -> Response:
        return Response(200, self._openapi, {"Content-Type": "application/json"})

    def _docs_page(self, request: Request, ctx: RequestContext) -> Response:
        return Response(200, self._docs, {"Content-Type": "text/html; charset=utf-8"})

    def _webhook(self, request: Request, ctx: RequestContext) -> Response:
        config = self.providers.config()
        if request.params["kind"] != config.kind:
            raise ApiError(404, "not_found", "This service does not take webhooks of that kind")
        if config.kind in URL_TOKEN_KINDS:
            # The vendor signs nothing: the operator gives it a URL carrying a secret token
            # (``/webhooks/linxo?token=...``), and tenants re-read what an event names anyway.
            token = request.query.get("token", "")
            if not any(hmac.compare_digest(token, s) for s in config.webhook_secrets if s):
                raise ApiError(401, "signature", "The webhook URL token is missing or wrong")
        check_json_depth(request.body)
        provider = self.providers.provider("webhooks")
        try:
            events = provider.parse_webhook(
                request.body, request.headers, list(config.webhook_secrets)
            )
        except SignatureVerificationError:
            raise ApiError(401, "signature", "The webhook signature is not valid") from None
        except (BankSyncError, ValueError, KeyError, TypeError, RecursionError):
            raise ApiError(400, "invalid_request", "The webhook body cannot be read") from None
        stored = self.delivery.store_events(config.kind, events)
        ctx.extra["events"] = len(events)
        ctx.extra["new_events"] = stored
        return json_response(202, {"received": len(events), "new": stored})

    def _sandbox_provider(self) -> Any:
        if self.providers.config().kind != "sandbox":
            raise ApiError(404, "not_found", "This service does not run the sandbox")
        return self.providers.provider("hosted-page")

    def _sandbox_page(self, request: Request, ctx: RequestContext) -> Response:
        """The sandbox's hosted login page (the demo bank's stand-in for Bridge's)."""
        provider = self._sandbox_provider()
        try:
            page = provider.render_hosted_page(request.query, form_action=SANDBOX_PAGE)
        except SignatureVerificationError as exc:
            return html_response(400, exc.message)
        return Response(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def _sandbox_submit(self, request: Request, ctx: RequestContext) -> Response:
        """The hosted page's form: redirect the browser to the tenant's callback URL."""
        provider = self._sandbox_provider()
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        try:
            location = provider.submit_hosted_page(form)
        except (SignatureVerificationError, InvalidRequest) as exc:
            return html_response(400, exc.message)
        return Response(303, b"", {"Location": location, "Content-Type": "text/plain"})

    # ------------------------------------------------------------------ tenant routes
    def _institutions(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        limit = int_param(request, "limit", 50, 1, 500)
        institutions = self._provider_for(caller).list_institutions(
            search=request.query.get("search", ""),
            country=request.query.get("country") or None,
            limit=limit,
        )
        return json_response(200, {"institutions": to_wire(institutions)})

    def _connect(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        body = json_body(request)
        session = self._provider_for(caller).start_connect(
            callback_url=url_field(body, "callback_url"),
            state=str_field(body, "state"),
            institution_id=str_field(body, "institution_id", required=False),
            locale=str_field(body, "locale", required=False) or "en",
            user_email=str_field(body, "user_email", required=False),
        )
        return json_response(201, to_wire(session))

    def _reconnect(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        connection_id = request.params["id"]
        self._require_connection(caller, connection_id)
        body = json_body(request)
        session = self._provider_for(caller).start_reconnect(
            connection_id,
            callback_url=url_field(body, "callback_url"),
            state=str_field(body, "state"),
            locale=str_field(body, "locale", required=False) or "en",
        )
        return json_response(201, to_wire(session))

    def _complete(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        body = json_body(request)
        params = body.get("params")
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise ApiError(400, "invalid_request", "'params' must be an object of strings")
        provider = self._provider_for(caller)
        result = provider.complete_connect(params)
        if result.success and result.connection_id:
            # The callback is only a hint and its parameters come from a browser: read the
            # connection as this company's aggregator user before recording it as theirs.
            connection = provider.get_connection(result.connection_id)
            kind = self.providers.config().kind
            if not self.tenancy.keep_own_connections(caller, kind, [connection]):
                raise ApiError(404, "not_found", "No such connection for this company")
        return json_response(200, to_wire(result))

    def _connections(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        connections = self._provider_for(caller).list_connections(
            locale=request.query.get("locale") or "en"
        )
        mine = self.tenancy.keep_own_connections(caller, self.providers.config().kind, connections)
        return json_response(200, {"connections": to_wire(mine)})

    def _conn(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        connection_id = request.params["id"]
        self._require_connection(caller, connection_id)
        connection = self._provider_for(caller).get_connection(
            connection_id, locale=request.query.get("locale") or "en"
        )
        return json_response(200, to_wire(connection))

    def _refresh(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        connection_id = request.params["id"]
        self._require_connection(caller, connection_id)
        return json_response(
            200, to_wire(self._provider_for(caller).refresh_connection(connection_id))
        )

    def _delete_connection(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        connection_id = request.params["id"]
        # A connection that is not this company's is "already gone" for it: nothing happens,
        # and the answer is the same as for a real deletion (nothing leaks).
        kind = self.providers.config().kind
        if self.tenancy.owns_connection(caller, kind, connection_id):
            self._provider_for(caller).delete_connection(connection_id)
            self.tenancy.forget_connection(kind, connection_id)
        return Response(204)

    def _accounts(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        connection_id = request.query.get("connection_id") or None
        kind = self.providers.config().kind
        if connection_id:
            self._require_connection(caller, connection_id)
        accounts = self._provider_for(caller).list_accounts(connection_id)
        mine = self.tenancy.keep_own_accounts(caller, kind, accounts)
        return json_response(200, {"accounts": to_wire(mine)})

    def _transactions(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        account_id = request.params["id"]
        self.tenancy.require_account(caller, self.providers.config().kind, account_id)
        try:
            cursor = Cursor.loads(request.query.get("cursor"))
        except (ValueError, KeyError, TypeError):
            raise ApiError(
                400, "invalid_request", "The cursor is not one this service made"
            ) from None
        serialized = self._provider_for(caller)
        with serialized.lock:
            pages = iter(
                serialized.provider.iter_transactions(
                    account_id,
                    cursor=cursor,
                    date_from=date_param(request, "date_from"),
                    date_to=date_param(request, "date_to"),
                )
            )
            try:
                page = _next_new_page(pages, cursor)
            finally:
                close = getattr(pages, "close", None)
                if close:
                    close()
        if page is None:
            # The stream ended before any page: nothing new since ``cursor``.
            return json_response(
                200,
                {"transactions": [], "cursor": cursor.dumps() if cursor else None, "last": True},
            )
        return json_response(
            200,
            {
                "transactions": to_wire(page.transactions),
                "cursor": page.cursor.dumps() if page.cursor else None,
                "last": page.last,
            },
        )

    def _delete_user(self, request: Request, ctx: RequestContext, caller: Caller) -> Response:
        self._provider_for(caller).delete_user()
        self.tenancy.forget_user(caller)
        return Response(204)

    def _events(self, request: Request, ctx: RequestContext, tenant: Tenant) -> Response:
        after = int_param(request, "after", 0, 0, 2**62)
        limit = int_param(request, "limit", 100, 1, 500)
        events, last_id = self.delivery.events_after(tenant.id, after, limit)
        return json_response(200, {"events": events, "last_id": last_id})

    def _set_callback(self, request: Request, ctx: RequestContext, tenant: Tenant) -> Response:
        url = url_field(json_body(request), "url")
        try:
            self.delivery.set_callback(tenant.id, url)
        except CallbackRefused as exc:
            raise ApiError(400, "invalid_request", exc.message) from None
        return Response(204)

    def _remove_callback(self, request: Request, ctx: RequestContext, tenant: Tenant) -> Response:
        self.delivery.remove_callback(tenant.id)
        return Response(204)


#: Pages that only re-read what the caller already has, skipped at most this many times.
MAX_REREAD_PAGES = 2


def _next_new_page(
    pages: Iterator[TransactionPage], cursor: Cursor | None
) -> TransactionPage | None:
    """The first page of ``pages`` that moves past ``cursor``.

    Some providers resume a page earlier than the cursor says, for safety (Linxo re-reads the
    previous page in case operations vanished from it): that page ends on the very cursor the
    caller sent, and the caller already holds its lines. The service serves one page per
    request, so it skips such a page instead of serving it again and again.
    """
    for _ in range(MAX_REREAD_PAGES + 1):
        page = next(pages, None)
        if page is None or cursor is None or page.last or page.cursor != cursor:
            return page
    return page


def check_json_depth(body: bytes) -> None:
    """Refuse a body nesting JSON deeper than :data:`MAX_JSON_DEPTH`, before it is parsed:
    Python's parser recurses, and a deep enough document ends in a RecursionError."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return  # the common case: too few brackets to nest that deep, strings or not
    structure = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for char in structure:
        depth += 1 if char in b"[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise ApiError(
                400,
                "invalid_request",
                f"The request body nests JSON deeper than {MAX_JSON_DEPTH} levels",
            )


def json_body(request: Request) -> dict[str, Any]:
    check_json_depth(request.body)
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_request", "The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object")
    return data


def str_field(body: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "invalid_request", f"'{name}' is required")
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise ApiError(400, "invalid_request", f"'{name}' must be a string")
    return value


def url_field(body: Mapping[str, Any], name: str) -> str:
    value = str_field(body, name) or ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError(400, "invalid_request", f"'{name}' must be an http(s) URL")
    return value


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"'{name}' must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_request", f"'{name}' must be between {low} and {high}")
    return value


def date_param(request: Request, name: str) -> date | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"'{name}' must be a date (YYYY-MM-DD)") from None


__all__ = ["MAX_JSON_DEPTH", "Router"]
