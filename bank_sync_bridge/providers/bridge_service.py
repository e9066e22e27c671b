"""Client of a remote bridge service (:mod:`bank_sync_bridge.service`).

An operator runs the service with its own aggregator contract; each Odoo database is one tenant
of it, identified by a client id and a secret. This provider speaks the service's HTTP API and
implements the :class:`~bank_sync_bridge.providers.base.Provider` protocol, so the addon uses a
remote service exactly like a direct aggregator.

Every request is signed with :func:`bank_sync_bridge.signing.sign_request`: a fresh timestamp
and nonce per attempt, so that retries are never mistaken for replays. ``config.user_ref`` names
the Odoo company (header ``X-Bank-Sync-Company``, covered by the signature): the service derives
one aggregator user per tenant company from it.

The JSON shapes of the model's records on the wire are defined here (:func:`to_wire`,
:func:`from_wire`) because both sides need them and the addon must never import the service.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote, urlencode

import requests

from .. import signing
from ..errors import (
    ActionRequired,
    AuthenticationError,
    BankSyncError,
    InvalidRequest,
    NotFound,
)
from ..http import HttpClient
from ..model import (
    Account,
    ActionReason,
    Connection,
    ConnectResult,
    ConnectSession,
    Cursor,
    Institution,
    Transaction,
    TransactionPage,
    WebhookEvent,
)
from .base import Clock, ProviderConfig

#: Header naming the Odoo company (the service maps it to one aggregator user of the tenant).
COMPANY_HEADER = signing.COMPANY_HEADER

#: Safety cap on pages of one transaction stream (a service bug must not loop forever).
MAX_PAGES = 10_000

_T = TypeVar("_T")


# --------------------------------------------------------------------------- wire format
def to_wire(record: Any) -> Any:  # noqa: PLR0911 - one branch per wire type
    """JSON-ready form of a model record (or list/tuple of them, or a plain value).

    Decimals travel as strings (no float rounding), dates and datetimes as ISO 8601, enums as
    their value; ``raw`` payloads are kept since Odoo stores them with the statement line.
    """
    if record is None or (
        isinstance(record, (str, int, float)) and not isinstance(record, enum.Enum)
    ):
        return record  # the common case first: most fields are plain values
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_wire(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, enum.Enum):
        return record.value
    if isinstance(record, Decimal):
        return str(record)
    if isinstance(record, (datetime, date)):
        return record.isoformat()
    if isinstance(record, Mapping):
        return {str(k): to_wire(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [to_wire(v) for v in record]
    return record


def _from_wire_value(tp: Any, value: Any) -> Any:  # noqa: PLR0911 - one branch per type
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _from_wire_value(inner[0], value)
    if origin is tuple:
        return tuple(_from_wire_value(get_args(tp)[0], v) for v in value)
    if origin is list:
        return [_from_wire_value(get_args(tp)[0], v) for v in value]
    if origin in (Mapping, dict) or tp is Any:
        return value
    if tp is Decimal:
        return Decimal(str(value))
    if tp is datetime:
        return datetime.fromisoformat(value)
    if tp is date:
        return date.fromisoformat(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if dataclasses.is_dataclass(tp):
        return from_wire(tp, value)
    return value


def from_wire(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """Rebuild a model record of ``cls`` from :func:`to_wire`'s output (unknown keys ignored,
    so that a newer service can add fields without breaking older clients)."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"Malformed {cls.__name__} from the bridge service")
    hints = get_type_hints(cls)
    kwargs = {
        f.name: _from_wire_value(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in data
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # missing required field, bad enum value...
        raise InvalidRequest(f"Malformed {cls.__name__} from the bridge service: {exc}") from exc


#: HTTP error body ``error`` values the service sends, and the exception each one means
#: (others are mapped from the HTTP status by :func:`~bank_sync_bridge.errors.error_from_response`).
ERROR_TYPES: dict[str, type[BankSyncError]] = {
    "signature": AuthenticationError,
    "not_found": NotFound,
    "invalid_request": InvalidRequest,
}


def remap_service_error(error: BankSyncError) -> BankSyncError:
    """The exception the service meant, rebuilt from its JSON error body.

    The service sends ``{"error": <type>, "message", "code", "reason", "request_id"}``; an
    ``ActionRequired`` keeps its reason so the addon can tell the user what to do. Errors the
    status already says right (429 with its ``retry_after``, 5xx) are returned unchanged.
    """
    body = error.body
    if not isinstance(body, Mapping):
        return error
    message = str(body.get("message") or error.message)
    kwargs: dict[str, Any] = {
        "status": error.status,
        "code": body.get("code"),
        "request_id": body.get("request_id") or error.request_id,
        "body": body,
    }
    reason = body.get("reason")
    if reason in {r.value for r in ActionReason}:
        return ActionRequired(message, reason=ActionReason(reason), **kwargs)
    cls = ERROR_TYPES.get(str(body.get("error") or ""))
    if cls is None or type(error) is cls:
        return error
    return cls(message, **kwargs)


# --------------------------------------------------------------------------- signing
#: Header of a callback delivery naming the path (and query) its signature covers.
PATH_HEADER = "X-BSB-Path"


class _SignedAuth(requests.auth.AuthBase):
    """Signs each prepared request just before it is sent (so every retry is signed anew),
    the company header it carries included."""

    def __init__(self, client_id: str, secret: str, clock: Clock) -> None:
        self._client_id = client_id
        self._secret = secret
        self._clock = clock

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        request.headers.update(
            signing.sign_request(
                self._secret,
                request.method or "GET",
                request.path_url,
                body,
                self._clock(),
                client_id=self._client_id,
                company=request.headers.get(COMPANY_HEADER),
            )
        )
        return request


class BridgeServiceProvider:
    """A :class:`~bank_sync_bridge.providers.base.Provider` backed by a remote bridge service.

    ``config.base_url`` is the service's URL, ``config.credentials`` holds ``client_id`` and
    ``client_secret`` (the tenant's), and ``config.user_ref`` the Odoo company's stable id.
    """

    kind = "bridge_service"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
        session: requests.Session | None = None,
        **_: Any,
    ) -> None:
        if not config.base_url:
            raise InvalidRequest("The bridge service URL is missing")
        client_id = config.credentials.get("client_id")
        secret = config.credentials.get("client_secret")
        if not client_id or not secret:
            raise InvalidRequest("The bridge service client id and secret are both required")
        if not config.user_ref:
            raise InvalidRequest("The company reference (user_ref) is missing")
        self.config = config
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._secret = secret
        # requests applies ``session.auth`` while preparing every attempt, so each retry made
        # by the HTTP wrapper carries a fresh timestamp and nonce (never a replay).
        http_session = session or requests.Session()
        http_session.auth = _SignedAuth(client_id, secret, self._clock)
        self._http = HttpClient(
            config.base_url,
            timeout=config.timeout,
            session=http_session,
            secret_values=[secret],
            **({"sleep": sleep} if sleep is not None else {}),
        )

    # -- plumbing -------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        url = path + (("?" + urlencode(query)) if query else "")
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = {COMPANY_HEADER: self.config.user_ref}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method, url, data=data, headers=headers, idempotent=idempotent
            )
        except BankSyncError as error:
            remapped = remap_service_error(error)
            if remapped is error:
                raise
            raise remapped from None
        return response.body

    # -- Provider protocol ----------------------------------------------------------------
    def list_institutions(
        self, *, search: str = "", country: str | None = None, limit: int = 50
    ) -> list[Institution]:
        """Banks of the operator's aggregator matching ``search`` in ``country``."""
        data = self._call(
            "GET",
            "/v1/institutions",
            params={"search": search, "country": country, "limit": limit},
        )
        return [from_wire(Institution, item) for item in data["institutions"]]

    def start_connect(
        self,
        *,
        callback_url: str,
        state: str,
        institution_id: str | None = None,
        locale: str = "en",
        user_email: str | None = None,
    ) -> ConnectSession:
        """Open the aggregator's hosted page for a new connection, through the service."""
        data = self._call(
            "POST",
            "/v1/connect-sessions",
            body={
                "callback_url": callback_url,
                "state": state,
                "institution_id": institution_id,
                "locale": locale,
                "user_email": user_email,
            },
            idempotent=False,
        )
        return from_wire(ConnectSession, data)

    def start_reconnect(
        self, connection_id: str, *, callback_url: str, state: str, locale: str = "en"
    ) -> ConnectSession:
        """Open the hosted page on an existing connection of this company."""
        data = self._call(
            "POST",
            f"/v1/connections/{_segment(connection_id)}/reconnect-sessions",
            body={"callback_url": callback_url, "state": state, "locale": locale},
            idempotent=False,
        )
        return from_wire(ConnectSession, data)

    def complete_connect(self, params: Mapping[str, str]) -> ConnectResult:
        """Hand the hosted page's return parameters to the service, which checks them and
        records the new connection as this company's."""
        data = self._call(
            "POST",
            "/v1/connect/complete",
            body={"params": dict(params)},
            idempotent=False,
        )
        return from_wire(ConnectResult, data)

    def get_connection(self, connection_id: str, *, locale: str = "en") -> Connection:
        """The connection's current state, with the aggregator's message in ``locale``."""
        data = self._call(
            "GET", f"/v1/connections/{_segment(connection_id)}", params={"locale": locale}
        )
        return from_wire(Connection, data)

    def list_connections(self, *, locale: str = "en") -> list[Connection]:
        """Every connection of this company."""
        data = self._call("GET", "/v1/connections", params={"locale": locale})
        return [from_wire(Connection, item) for item in data["connections"]]

    def list_accounts(self, connection_id: str | None = None) -> list[Account]:
        """Accounts of one connection, or of every connection of this company."""
        data = self._call("GET", "/v1/accounts", params={"connection_id": connection_id})
        return [from_wire(Account, item) for item in data["accounts"]]

    def fetch_transaction_page(
        self,
        account_id: str,
        *,
        cursor: Cursor | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> TransactionPage:
        """One page of an account's operations (the service pages the aggregator's stream)."""
        data = self._call(
            "GET",
            f"/v1/accounts/{_segment(account_id)}/transactions",
            params={
                "cursor": cursor.dumps() if cursor else None,
                "date_from": date_from.isoformat() if date_from else None,
                "date_to": date_to.isoformat() if date_to else None,
            },
        )
        return TransactionPage(
            transactions=tuple(from_wire(Transaction, t) for t in data["transactions"]),
            cursor=Cursor.loads(data.get("cursor")),
            last=bool(data.get("last")),
        )

    def iter_transactions(
        self,
        account_id: str,
        *,
        cursor: Cursor | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Iterator[TransactionPage]:
        """Stream an account's operations page by page, following the service's cursors."""
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = self.fetch_transaction_page(
                account_id, cursor=cursor, date_from=date_from, date_to=date_to
            )
            yield page
            if page.last or page.cursor is None:
                return
            key = page.cursor.dumps()
            if key in seen:
                raise BankSyncError("The bridge service returned the same transaction cursor twice")
            seen.add(key)
            cursor = page.cursor
        raise BankSyncError(f"More than {MAX_PAGES} transaction pages: stopped for safety")

    def refresh_connection(self, connection_id: str) -> Connection:
        """Ask the aggregator, through the service, to refresh the connection now."""
        data = self._call(
            "POST", f"/v1/connections/{_segment(connection_id)}/refresh", idempotent=False
        )
        return from_wire(Connection, data)

    def delete_connection(self, connection_id: str) -> None:
        """Revoke the connection at the aggregator (a missing one is not an error)."""
        self._call("DELETE", f"/v1/connections/{_segment(connection_id)}", idempotent=True)

    def delete_user(self) -> None:
        """Delete this company's aggregator user and everything it holds."""
        self._call("DELETE", "/v1/user", idempotent=True)

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str], secrets: list[str]
    ) -> list[WebhookEvent]:
        """Verify and parse a delivery the service made to the registered callback URL.

        The service signs deliveries with the tenant secret, like requests; ``secrets`` are
        the secrets to accept (the current one, and the previous one while it is being
        rotated). The path the signature covers is the one the service posted to, named in
        the ``X-BSB-Path`` header (a proxy may rewrite the path the receiver sees); the
        timestamp must be within five minutes. Nonces are not remembered here: a replayed
        delivery only repeats events, which the addon stores once per event id.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        signing.verify_request(
            list(secrets) or [self._secret],
            "POST",
            lowered.get(PATH_HEADER.lower(), ""),
            body,
            headers,
            now=self._clock(),
        )
        return parse_events_document(body)

    # -- service extras (not in the Provider protocol) ------------------------------------
    def poll_events(self, after: int = 0, *, limit: int = 100) -> tuple[list[WebhookEvent], int]:
        """Events routed to this tenant with an id above ``after``, and the id to poll from
        next time (store it only once the events are handled)."""
        data = self._call("GET", "/v1/events", params={"after": after, "limit": limit})
        events = [_event_from_wire(item) for item in data["events"]]
        return events, int(data.get("last_id") or after)

    def set_callback_url(self, url: str | None) -> None:
        """Register (or with ``None`` remove) the URL the service posts this tenant's events
        to, signed with the tenant secret."""
        if url:
            self._call("PUT", "/v1/callback", body={"url": url}, idempotent=True)
        else:
            self._call("DELETE", "/v1/callback", idempotent=True)

    def health(self) -> Mapping[str, Any]:
        """The service's ``/health`` answer (unsigned); useful for a "test connection" button."""
        return self._call("GET", "/health")


def _segment(value: str) -> str:
    """A remote id as one URL path segment (ids are opaque: quote everything)."""
    return quote(str(value), safe="")


def _event_from_wire(item: Mapping[str, Any]) -> WebhookEvent:
    event = from_wire(WebhookEvent, item)
    # The service adds its own fields next to the event's; keep them in ``raw``.
    extra = {k: item[k] for k in ("id", "company", "received_at") if k in item}
    return dataclasses.replace(event, raw={**dict(event.raw), **extra})


def parse_events_document(body: bytes) -> list[WebhookEvent]:
    """Parse the ``{"events": [...]}`` document the service sends (poll and callback)."""
    try:
        data = json.loads(body)
        items = data["events"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest("Malformed event delivery from the bridge service") from exc
    return [_event_from_wire(item) for item in items]
