"""The bridge service's HTTP API, independent of any web framework.

:class:`ServiceApp` turns a :class:`Request` into a :class:`Response`; :mod:`.server` feeds it
from the standard library's HTTP server. Three kinds of routes:

- public: ``GET /health``, ``GET /openapi.json``, ``GET /docs``;
- aggregator webhooks: ``POST /webhooks/{kind}``, verified by the aggregator's signature on the
  raw body, stored once per event id, answered 202 at once, routed to the owning tenant;
- tenant API under ``/v1``: signed by the tenant (see
  :func:`~bank_sync_bridge.providers.bridge_service.sign_request`), rate limited per tenant,
  and scoped to one aggregator user per tenant company (header ``X-Bank-Sync-Company``).

Isolation: the service records which aggregator user (tenant + company) owns each connection
and account when it learns of them (connect completed, connections or accounts listed) and
checks that ownership on every call naming one; an id owned by someone else is "not found".
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .. import __version__
from ..crypto import SecretBox, SecretKeyError
from ..errors import (
    AccessDenied,
    ActionRequired,
    AuthenticationError,
    BankSyncError,
    InvalidRequest,
    NotFound,
    RateLimited,
    SignatureVerificationError,
)
from ..model import Cursor, TransactionPage, WebhookEvent
from ..providers import ProviderConfig, get_provider
from ..providers.base import Provider
from ..providers.bridge_service import COMPANY_HEADER, PATH_HEADER, to_wire
from ..signing import (
    CLIENT_HEADER,
    DEFAULT_TOLERANCE,
    canonical_path,
    sign_request,
    verify_request,
)
from . import admin
from .callbacks import (
    CallbackRefused,
    Resolver,
    check_callback_url,
    post_to_callback,
    system_resolver,
)
from .logs import LOGGER_NAME
from .openapi import build_openapi, render_docs
from .ratelimit import FailureLimiter, RateLimiter
from .store import Store, Transaction

#: Providers kept in memory (one per aggregator user recently served).
PROVIDER_CACHE_SIZE = 256

#: (client id, address) pairs remembered as having signed correctly, and for how long: a
#: client id whose failure budget strangers spent still passes from those addresses.
TRUSTED_SOURCES_SIZE = 10_000
TRUSTED_SOURCE_SECONDS = 86_400.0

#: Aggregators that sign no webhook: their deliveries must carry a secret URL token instead.
URL_TOKEN_KINDS = frozenset({"linxo"})

#: Path of the sandbox's hosted connect page when the operator runs the sandbox.
SANDBOX_PAGE = "/sandbox/connect"

#: Deepest nesting of arrays and objects accepted in a JSON body (tenants' requests and
#: aggregators' webhooks alike; theirs nest a handful of levels).
MAX_JSON_DEPTH = 64

_COMPANY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class ServiceSettings:
    """Tunable limits of the service (defaults suit one operator on one machine)."""

    #: Seconds a signed request is acceptable (and its nonce remembered).
    replay_window: float = DEFAULT_TOLERANCE
    #: Per-tenant average calls per second to the API, and the burst allowed.
    rate_per_second: float = 10.0
    burst: float = 60.0
    #: All tenants together (None: no global limit), to stay under the aggregator's quota.
    global_rate_per_second: float | None = None
    global_burst: float = 100.0
    #: Failed authentications allowed per client id and per source address: a burst, then
    #: ``auth_failure_rate`` per second; beyond, 429 before any database read, decryption or
    #: HMAC. A client id out of budget still passes from an address it signed from correctly.
    auth_failure_burst: float = 20.0
    auth_failure_rate: float = 0.2
    #: Reverse proxies in front of the service that append the caller's address to
    #: X-Forwarded-For; with 0 (the default) the header, which anyone can write, is ignored.
    trusted_proxies: int = 0
    #: Largest request body accepted (webhooks included); larger ones get 413.
    max_body_bytes: int = 1_000_000
    #: Largest request line and headers together, and most header lines (431 beyond).
    max_header_bytes: int = 16_384
    max_headers: int = 100
    #: Seconds a client has for a request's line and headers (from the connection's opening,
    #: or from the first byte of a later request), then for its body: a slow client is cut off
    #: (408) rather than holding a thread (see :mod:`.server`).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    #: Seconds a kept-alive connection may stay idle between requests, and to send an answer.
    keepalive_timeout: float = 15.0
    send_timeout: float = 30.0
    #: Connections served at once, one thread each; one more gets 503 at once.
    max_connections: int = 64
    #: Callback deliveries: attempts before giving up (events stay pollable), and timeout.
    delivery_max_attempts: int = 8
    delivery_timeout: float = 5.0
    #: Seconds the aggregator configuration is cached (the CLI may change it meanwhile).
    config_ttl: float = 5.0
    #: The URL browsers reach the service at (the sandbox's hosted page lives there); the
    #: server's own address when not set.
    public_url: str | None = None
    #: Tests and benchmarks on one machine only: tenants' callback URLs may then lead to the
    #: loopback (127.0.0.0/8, ::1), and use plain http there. Every other address that is not
    #: public stays refused, and so does plain http anywhere else.
    test_mode: bool = False


@dataclass
class Request:
    """One HTTP request as the app needs it (``target`` is the raw path and query)."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""
    remote: str = ""
    #: Path parameters of the matched route.
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = {k.lower(): v for k, v in self.headers.items()}
        parts = urlsplit(self.target)
        self.path = unquote(parts.path)
        self.raw_path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

    def header(self, name: str) -> str:
        """A header's value ('' when absent)."""
        return self.headers.get(name.lower(), "")


@dataclass
class Response:
    """One HTTP response."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable type, human message."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Tenant:
    """An authenticated tenant (``secret`` decrypted, for signing its callbacks)."""

    id: int
    client_id: str
    secret: str = field(repr=False)
    callback_url: str | None = None


@dataclass(frozen=True)
class Caller:
    """The tenant company a ``/v1`` call acts for, and its aggregator user."""

    tenant: Tenant
    company: str
    user_ref: str


@dataclass
class _Context:
    """What one request's log line says about it."""

    request_id: str
    client_id: str | None = None
    company: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class DbTokenStore:
    """A :class:`~bank_sync_bridge.providers.base.TokenStore` in the service database,
    encrypted, so that every service process shares the aggregator users' tokens."""

    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box

    def get(self, key: str) -> Mapping[str, Any] | None:
        """The cached token data for ``key``, or None."""
        with self._store.transaction(write=False) as tx:
            row = tx.one("SELECT value_enc FROM provider_tokens WHERE key = ?", (key,))
        return json.loads(self._box.decrypt(row[0])) if row else None

    def set(self, key: str, value: Mapping[str, Any]) -> None:
        """Remember token data for ``key``."""
        encrypted = self._box.encrypt(json.dumps(dict(value), default=str))
        with self._store.transaction() as tx:
            tx.execute(
                "INSERT INTO provider_tokens (key, value_enc, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value_enc = excluded.value_enc, "
                "updated_at = excluded.updated_at",
                (key, encrypted, time.time()),
            )


Handler = Callable[[Request, _Context], Response]


class ServiceApp:
    """The bridge service's request handling.

    :param store: the migrated database.
    :param box: the operator's keys.
    :param clock: wall-clock seconds (signatures, expiry); injectable for tests.
    :param provider_kwargs: extra keyword arguments for every provider built (``clock``...).
    :param resolver: resolves the host names of tenants' callback URLs (the system's resolver
        by default; tests give a fixed table).
    """

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        settings: ServiceSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        provider_kwargs: Mapping[str, Any] | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings or ServiceSettings()
        self.clock = clock
        self.provider_kwargs = dict(provider_kwargs or {})
        self.logger = logging.getLogger(LOGGER_NAME)
        self.limiter = RateLimiter(self.settings.rate_per_second, self.settings.burst)
        self.auth_failures = FailureLimiter(
            self.settings.auth_failure_rate, self.settings.auth_failure_burst
        )
        self._trusted_sources: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._trusted_lock = threading.Lock()
        self.global_limiter = (
            RateLimiter(self.settings.global_rate_per_second, self.settings.global_burst)
            if self.settings.global_rate_per_second
            else None
        )
        self.token_store = DbTokenStore(store, box)
        self.resolver = resolver
        #: Set when an event waits for delivery, so the delivery thread wakes at once.
        self.delivery_wakeup = threading.Event()
        self.public_url = self.settings.public_url
        self._providers: OrderedDict[str, tuple[Provider, threading.Lock]] = OrderedDict()
        self._providers_config: admin.AggregatorConfig | None = None
        self._providers_lock = threading.Lock()
        self._known_users: set[str] = set()
        self._config_lock = threading.Lock()
        self._config: tuple[float, admin.AggregatorConfig] | None = None
        self._last_purge = 0.0
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
        started = time.perf_counter()
        supplied = request.header("X-Request-Id")
        ctx = _Context(request_id=supplied if _REQUEST_ID_RE.match(supplied) else uuid.uuid4().hex)
        try:
            response = self._dispatch(request, ctx)
        except ApiError as exc:
            ctx.error = exc.error
            response = self._error_response(exc, ctx)
        except SecretKeyError:
            # The operator's keys do not open a stored secret: the operator's problem, not the
            # tenant's, and nothing about it is told to the tenant.
            ctx.error = "internal"
            self.logger.exception("secret store", extra={"fields": {"request_id": ctx.request_id}})
            response = self._error_response(
                ApiError(500, "internal", "The bridge service failed; the operator can see why"),
                ctx,
            )
        except BankSyncError as exc:
            api_error = self._from_provider_error(exc)
            ctx.error = api_error.error
            response = self._error_response(api_error, ctx)
        except Exception:
            ctx.error = "internal"
            self.logger.exception(
                "unhandled error", extra={"fields": {"request_id": ctx.request_id}}
            )
            response = self._error_response(
                ApiError(500, "internal", "The bridge service failed; the operator can see why"),
                ctx,
            )
        response.headers["X-Request-Id"] = ctx.request_id
        fields: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": request.method,
            "path": request.raw_path,
            "status": response.status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
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

    def _dispatch(self, request: Request, ctx: _Context) -> Response:
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

    def _tenant(self, handler: Callable[[Request, _Context, Tenant], Response]) -> Handler:
        def wrapped(request: Request, ctx: _Context) -> Response:
            tenant = self._authenticate(request, ctx)
            self._rate_limit(tenant)
            return handler(request, ctx, tenant)

        return wrapped

    def _company(self, handler: Callable[[Request, _Context, Caller], Response]) -> Handler:
        def wrapped(request: Request, ctx: _Context) -> Response:
            tenant = self._authenticate(request, ctx)
            company = request.header(COMPANY_HEADER)
            if not _COMPANY_RE.match(company):
                raise ApiError(
                    400,
                    "invalid_request",
                    f"The {COMPANY_HEADER} header must name the company "
                    "(1 to 64 letters, digits, '_', '.', ':' or '-')",
                )
            ctx.company = company
            self._rate_limit(tenant)
            return handler(request, ctx, Caller(tenant, company, f"{tenant.client_id}.{company}"))

        return wrapped

    # ------------------------------------------------------------------ security
    def _authenticate(self, request: Request, ctx: _Context) -> Tenant:
        """The tenant that signed ``request``; anything else is a 401 (logged, no secret).

        Failures are counted per client id and per source address; a caller out of budget
        gets 429 before the database read, decryption and HMAC a check costs.
        """
        client_id = request.header(CLIENT_HEADER)[:128]
        address = self.client_address(request)
        if address != request.remote:
            ctx.extra["client_address"] = address
        address_key, client_key = f"address:{address}", f"client:{client_id}"
        checked = [address_key]
        if client_id and not self._trusted_source(client_id, address):
            checked.append(client_key)
        wait = max(self.auth_failures.retry_after(key) for key in checked)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                "Too many failed authentications from this client or address; retry later",
                retry_after=wait,
            )
        try:
            tenant = self._verify_signature(request, ctx, client_id)
        except ApiError:
            self.auth_failures.failed(address_key)
            if client_id:
                self.auth_failures.failed(client_key)
            raise
        self._trust_source(client_id, address)
        return tenant

    def client_address(self, request: Request) -> str:
        """The caller's address: the connection's peer, or with ``trusted_proxies`` set, the
        address the outermost trusted proxy saw (its entry in X-Forwarded-For)."""
        hops = self.settings.trusted_proxies
        forwarded = request.header("X-Forwarded-For")
        if hops <= 0 or not forwarded:
            return request.remote
        entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
        candidate = entries[-hops] if len(entries) >= hops else entries[0]
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            return request.remote

    def _trusted_source(self, client_id: str, address: str) -> bool:
        with self._trusted_lock:
            until = self._trusted_sources.get((client_id, address))
        return until is not None and until > time.monotonic()

    def _trust_source(self, client_id: str, address: str) -> None:
        with self._trusted_lock:
            self._trusted_sources[(client_id, address)] = time.monotonic() + TRUSTED_SOURCE_SECONDS
            self._trusted_sources.move_to_end((client_id, address))
            while len(self._trusted_sources) > TRUSTED_SOURCES_SIZE:
                self._trusted_sources.popitem(last=False)

    def _verify_signature(self, request: Request, ctx: _Context, client_id: str) -> Tenant:
        if not client_id:
            raise ApiError(401, "signature", f"The request is not signed (no {CLIENT_HEADER})")
        ctx.client_id = client_id[:64]
        with self.store.transaction(write=False) as tx:
            row = tx.one(
                "SELECT id, secret_enc, callback_url, revoked_at FROM tenants WHERE client_id = ?",
                (client_id,),
            )
        if row is None or row[3] is not None:
            # One message for both: a revoked client learns nothing more than an unknown one.
            raise ApiError(401, "signature", "Unknown or revoked client id")
        secret = self.box.decrypt(row[1])
        now = self.clock()
        try:
            verified = verify_request(
                secret,
                request.method,
                request.target,
                request.body,
                request.headers,
                now=now,
                tolerance_seconds=self.settings.replay_window,
            )
        except SignatureVerificationError as exc:
            raise ApiError(401, "signature", exc.message) from None
        with self.store.transaction() as tx:
            fresh = tx.execute(
                "INSERT INTO seen_nonces (client_id, nonce, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (client_id, verified.nonce, now + 2 * self.settings.replay_window),
            )
            if now - self._last_purge > 60:
                self._last_purge = now
                tx.execute("DELETE FROM seen_nonces WHERE expires_at < ?", (now,))
        if not fresh:
            raise ApiError(401, "signature", "This signed request was already used (replay)")
        return Tenant(row[0], client_id, secret, row[2])

    def _rate_limit(self, tenant: Tenant) -> None:
        wait = self.limiter.check(tenant.client_id)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                "Too many requests for this tenant; retry later",
                retry_after=wait,
            )
        if self.global_limiter is not None:
            # All tenants together stay under the operator's aggregator quota (Bridge: 2000
            # calls per application per 5 minutes), whatever their number.
            wait = self.global_limiter.check("*")
            if wait:
                raise ApiError(
                    429,
                    "rate_limited",
                    "The service's aggregator quota is used up for the moment; retry later",
                    retry_after=wait,
                )

    # ------------------------------------------------------------------ providers
    def aggregator(self) -> admin.AggregatorConfig:
        """The operator's aggregator configuration, cached for ``config_ttl`` seconds."""
        now = time.monotonic()
        with self._config_lock:
            if self._config is None or now - self._config[0] > self.settings.config_ttl:
                self._config = (now, admin.get_aggregator(self.store, self.box))
            return self._config[1]

    def provider(self, user_ref: str) -> Provider:
        """A provider of the operator's aggregator bound to the aggregator user ``user_ref``.

        Providers are kept (a few hundred, least recently used dropped) because they hold
        token caches, HTTP sessions and, for the sandbox, generated data; the cache empties
        when the operator changes the aggregator configuration.
        """
        return self._provider_entry(user_ref)[0]

    def _provider_entry(self, user_ref: str) -> tuple[Provider, threading.Lock]:
        config = self.aggregator()
        with self._providers_lock:
            if config != self._providers_config:
                self._providers.clear()
                self._providers_config = config
            entry = self._providers.get(user_ref)
            if entry is not None:
                self._providers.move_to_end(user_ref)
                return entry
        options = dict(config.options)
        if config.kind == "sandbox" and "hosted_url" not in options and self.public_url:
            # The sandbox's hosted page is served by the service itself.
            options["hosted_url"] = self.public_url.rstrip("/") + SANDBOX_PAGE
        provider = get_provider(
            config.kind,
            ProviderConfig(
                user_ref=user_ref,
                base_url=config.base_url,
                credentials=config.credentials,
                options=options,
            ),
            token_store=self.token_store,
            **self.provider_kwargs,
        )
        with self._providers_lock:
            entry = self._providers.setdefault(user_ref, (provider, threading.Lock()))
            while len(self._providers) > PROVIDER_CACHE_SIZE:
                self._providers.popitem(last=False)
        return entry

    def _provider_for(self, caller: Caller) -> Any:
        """The caller's provider, each call serialised (providers need not be thread-safe,
        and one company's calls never need to run in parallel)."""
        if caller.user_ref not in self._known_users:
            with self.store.transaction() as tx:
                tx.execute(
                    "INSERT INTO aggregator_users (user_ref, tenant_id, company, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (caller.user_ref, caller.tenant.id, caller.company, time.time()),
                )
            with self._providers_lock:
                if len(self._known_users) > 100_000:
                    self._known_users.clear()
                self._known_users.add(caller.user_ref)
        return _Serialized(*self._provider_entry(caller.user_ref))

    @staticmethod
    def _from_provider_error(exc: BankSyncError) -> ApiError:
        """What the tenant is told when the aggregator fails (never the operator's secrets)."""
        code = exc.code
        if isinstance(exc, ActionRequired):
            return ApiError(409, "action_required", exc.message, code=code, reason=exc.reason.value)
        if isinstance(exc, NotFound):
            return ApiError(404, "not_found", exc.message, code=code)
        if isinstance(exc, InvalidRequest | SignatureVerificationError):
            return ApiError(400, "invalid_request", exc.message, code=code)
        if isinstance(exc, RateLimited):
            return ApiError(
                429,
                "rate_limited",
                "The aggregator's rate limit was reached; retry later",
                code=code,
                retry_after=max(1, int(exc.retry_after or 60)),
            )
        if isinstance(exc, AuthenticationError | AccessDenied):
            # The operator's contract is refused: the tenant cannot fix it, the operator can.
            return ApiError(
                502,
                "aggregator_refused",
                "The aggregator refused the service's credentials; the operator must check them",
                code=code,
            )
        return ApiError(503, "provider_unavailable", exc.message, code=code)

    # ------------------------------------------------------------------ ownership
    def _claim_connection(
        self, tx: Transaction, kind: str, connection_id: str, user_ref: str
    ) -> bool:
        """Record ``connection_id`` as ``user_ref``'s unless someone else owns it; True when
        ``user_ref`` owns it afterwards."""
        claimed = tx.execute(
            "INSERT INTO connections (kind, connection_id, user_ref, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (kind, connection_id, user_ref, time.time()),
        )
        if claimed:
            self._adopt_orphan_events(tx, kind, connection_id, user_ref)
            return True
        row = tx.one(
            "SELECT user_ref FROM connections WHERE kind = ? AND connection_id = ?",
            (kind, connection_id),
        )
        return row is not None and row[0] == user_ref

    def _adopt_orphan_events(
        self, tx: Transaction, kind: str, connection_id: str, user_ref: str
    ) -> None:
        """Give a newly claimed connection the events that arrived before anyone owned it.

        Aggregators often announce a connection (Bridge ``item.created``) before the user's
        browser is back in Odoo. Such events are stored without owner; they are moved to the
        end of the stream (new ids) so that a tenant polling "after its last id" sees them.
        """
        orphans = tx.all(
            "SELECT id, event_id, type, payload, received_at FROM events "
            "WHERE kind = ? AND connection_id = ? AND tenant_id IS NULL ORDER BY id",
            (kind, connection_id),
        )
        if not orphans:
            return
        tenant = tx.one(
            "SELECT t.id, t.callback_url FROM aggregator_users a "
            "JOIN tenants t ON t.id = a.tenant_id WHERE a.user_ref = ? AND t.revoked_at IS NULL",
            (user_ref,),
        )
        if tenant is None:
            return
        tx.lock_events()
        pending = bool(tenant[1])
        now = time.time()
        for row_id, event_id, type_, payload, received_at in orphans:
            tx.execute("DELETE FROM events WHERE id = ?", (row_id,))
            tx.execute(
                "INSERT INTO events (kind, event_id, type, tenant_id, user_ref, connection_id, "
                "payload, received_at, delivery_state, next_attempt_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    event_id,
                    type_,
                    tenant[0],
                    user_ref,
                    connection_id,
                    payload,
                    received_at,
                    "pending" if pending else "none",
                    now if pending else None,
                ),
            )
        if pending:
            self.delivery_wakeup.set()

    def _owns_connection(self, caller: Caller, connection_id: str) -> bool:
        kind = self.aggregator().kind
        with self.store.transaction(write=False) as tx:
            row = tx.one(
                "SELECT user_ref FROM connections WHERE kind = ? AND connection_id = ? "
                "AND deleted_at IS NULL",
                (kind, connection_id),
            )
        return row is not None and row[0] == caller.user_ref

    def _require_connection(self, caller: Caller, connection_id: str) -> None:
        if not self._owns_connection(caller, connection_id):
            # Same answer whether it exists elsewhere or not at all: nothing leaks.
            raise ApiError(404, "not_found", "No such connection for this company")

    # ------------------------------------------------------------------ public routes
    def _health(self, request: Request, ctx: _Context) -> Response:
        with self.store.transaction(write=False) as tx:
            tx.one("SELECT 1")
        return _json(200, {"status": "ok", "version": __version__})

    def _openapi_json(self, request: Request, ctx: _Context) -> Response:
        return Response(200, self._openapi, {"Content-Type": "application/json"})

    def _docs_page(self, request: Request, ctx: _Context) -> Response:
        return Response(200, self._docs, {"Content-Type": "text/html; charset=utf-8"})

    def _webhook(self, request: Request, ctx: _Context) -> Response:
        config = self.aggregator()
        if request.params["kind"] != config.kind:
            raise ApiError(404, "not_found", "This service does not take webhooks of that kind")
        if config.kind in URL_TOKEN_KINDS:
            # The vendor signs nothing: the operator gives it a URL carrying a secret token
            # (``/webhooks/linxo?token=...``), and tenants re-read what an event names anyway.
            token = request.query.get("token", "")
            if not any(hmac.compare_digest(token, s) for s in config.webhook_secrets if s):
                raise ApiError(401, "signature", "The webhook URL token is missing or wrong")
        _check_json_depth(request.body)
        provider = self.provider("webhooks")
        try:
            events = provider.parse_webhook(
                request.body, request.headers, list(config.webhook_secrets)
            )
        except SignatureVerificationError:
            raise ApiError(401, "signature", "The webhook signature is not valid") from None
        except (BankSyncError, ValueError, KeyError, TypeError, RecursionError):
            raise ApiError(400, "invalid_request", "The webhook body cannot be read") from None
        stored = self.store_events(config.kind, events)
        ctx.extra["events"] = len(events)
        ctx.extra["new_events"] = stored
        return _json(202, {"received": len(events), "new": stored})

    def _sandbox_provider(self) -> Any:
        if self.aggregator().kind != "sandbox":
            raise ApiError(404, "not_found", "This service does not run the sandbox")
        return self.provider("hosted-page")

    def _sandbox_page(self, request: Request, ctx: _Context) -> Response:
        """The sandbox's hosted login page (the demo bank's stand-in for Bridge's)."""
        provider = self._sandbox_provider()
        try:
            page = provider.render_hosted_page(request.query, form_action=SANDBOX_PAGE)
        except SignatureVerificationError as exc:
            return _html(400, exc.message)
        return Response(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def _sandbox_submit(self, request: Request, ctx: _Context) -> Response:
        """The hosted page's form: redirect the browser to the tenant's callback URL."""
        provider = self._sandbox_provider()
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        try:
            location = provider.submit_hosted_page(form)
        except (SignatureVerificationError, InvalidRequest) as exc:
            return _html(400, exc.message)
        return Response(303, b"", {"Location": location, "Content-Type": "text/plain"})

    def store_events(self, kind: str, events: list[WebhookEvent]) -> int:
        """Store each event once (by event id), routed to its tenant; returns how many were new.

        Routing: the connection's owner, else an account's owner, else the aggregator user
        named by the event. An event nobody owns yet is kept (tenant unknown) and logged.
        """
        new = 0
        wake = False
        now = time.time()
        with self.store.transaction() as tx:
            tx.lock_events()
            for event in events:
                user_ref = self._route(tx, kind, event)
                tenant_row = (
                    tx.one(
                        "SELECT t.id, t.callback_url FROM aggregator_users a "
                        "JOIN tenants t ON t.id = a.tenant_id "
                        "WHERE a.user_ref = ? AND t.revoked_at IS NULL",
                        (user_ref,),
                    )
                    if user_ref
                    else None
                )
                pending = bool(tenant_row and tenant_row[1])
                inserted = tx.execute(
                    "INSERT INTO events (kind, event_id, type, tenant_id, user_ref, "
                    "connection_id, payload, received_at, delivery_state, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        kind,
                        event.event_id,
                        event.type,
                        tenant_row[0] if tenant_row else None,
                        user_ref if tenant_row else None,
                        event.connection_id,
                        json.dumps(to_wire(event), default=str),
                        now,
                        "pending" if pending else "none",
                        now if pending else None,
                    ),
                )
                if inserted:
                    new += 1
                    wake = wake or pending
                    if tenant_row is None:
                        self.logger.warning(
                            "event without owner",
                            extra={"fields": {"event_id": event.event_id, "type": event.type}},
                        )
        if wake:
            self.delivery_wakeup.set()
        return new

    @staticmethod
    def _route(tx: Transaction, kind: str, event: WebhookEvent) -> str | None:
        if event.connection_id:
            row = tx.one(
                "SELECT user_ref FROM connections WHERE kind = ? AND connection_id = ?",
                (kind, str(event.connection_id)),
            )
            if row:
                return str(row[0])
        for account_id in event.account_ids:
            row = tx.one(
                "SELECT user_ref FROM accounts WHERE kind = ? AND account_id = ?",
                (kind, str(account_id)),
            )
            if row:
                return str(row[0])
        if event.user_ref:
            row = tx.one(
                "SELECT user_ref FROM aggregator_users WHERE user_ref = ?", (event.user_ref,)
            )
            if row:
                return str(row[0])
        return None

    # ------------------------------------------------------------------ tenant routes
    def _institutions(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        limit = _int_param(request, "limit", 50, 1, 500)
        institutions = self._provider_for(caller).list_institutions(
            search=request.query.get("search", ""),
            country=request.query.get("country") or None,
            limit=limit,
        )
        return _json(200, {"institutions": to_wire(institutions)})

    def _connect(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        body = _json_body(request)
        session = self._provider_for(caller).start_connect(
            callback_url=_url_field(body, "callback_url"),
            state=_str_field(body, "state"),
            institution_id=_str_field(body, "institution_id", required=False),
            locale=_str_field(body, "locale", required=False) or "en",
            user_email=_str_field(body, "user_email", required=False),
        )
        return _json(201, to_wire(session))

    def _reconnect(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        connection_id = request.params["id"]
        self._require_connection(caller, connection_id)
        body = _json_body(request)
        session = self._provider_for(caller).start_reconnect(
            connection_id,
            callback_url=_url_field(body, "callback_url"),
            state=_str_field(body, "state"),
            locale=_str_field(body, "locale", required=False) or "en",
        )
        return _json(201, to_wire(session))

    def _complete(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        body = _json_body(request)
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
            kind = self.aggregator().kind
            with self.store.transaction() as tx:
                owned = self._claim_connection(tx, kind, connection.remote_id, caller.user_ref)
            if not owned:
                raise ApiError(404, "not_found", "No such connection for this company")
        return _json(200, to_wire(result))

    def _connections(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        connections = self._provider_for(caller).list_connections(
            locale=request.query.get("locale") or "en"
        )
        kind = self.aggregator().kind
        with self.store.transaction() as tx:
            mine = [
                c
                for c in connections
                if self._claim_connection(tx, kind, c.remote_id, caller.user_ref)
            ]
        return _json(200, {"connections": to_wire(mine)})

    def _conn(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        connection_id = request.params["id"]
        self._require_connection(caller, connection_id)
        connection = self._provider_for(caller).get_connection(
            connection_id, locale=request.query.get("locale") or "en"
        )
        return _json(200, to_wire(connection))

    def _refresh(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        connection_id = request.params["id"]
        self._require_connection(caller, connection_id)
        return _json(200, to_wire(self._provider_for(caller).refresh_connection(connection_id)))

    def _delete_connection(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        connection_id = request.params["id"]
        # A connection that is not this company's is "already gone" for it: nothing happens,
        # and the answer is the same as for a real deletion (nothing leaks).
        if self._owns_connection(caller, connection_id):
            self._provider_for(caller).delete_connection(connection_id)
            kind = self.aggregator().kind
            with self.store.transaction() as tx:
                tx.execute(
                    "UPDATE connections SET deleted_at = ? WHERE kind = ? AND connection_id = ?",
                    (time.time(), kind, connection_id),
                )
        return Response(204)

    def _accounts(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        connection_id = request.query.get("connection_id") or None
        kind = self.aggregator().kind
        if connection_id:
            self._require_connection(caller, connection_id)
        accounts = self._provider_for(caller).list_accounts(connection_id)
        mine = []
        with self.store.transaction() as tx:
            for account in accounts:
                owner = tx.one(
                    "SELECT user_ref FROM connections WHERE kind = ? AND connection_id = ? "
                    "AND deleted_at IS NULL",
                    (kind, account.connection_id),
                )
                if not owner or owner[0] != caller.user_ref:
                    continue
                tx.execute(
                    "INSERT INTO accounts (kind, account_id, connection_id, user_ref, created_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (kind, account.remote_id, account.connection_id, caller.user_ref, time.time()),
                )
                mine.append(account)
        return _json(200, {"accounts": to_wire(mine)})

    def _transactions(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        account_id = request.params["id"]
        kind = self.aggregator().kind
        with self.store.transaction(write=False) as tx:
            row = tx.one(
                "SELECT a.user_ref FROM accounts a JOIN connections c "
                "ON c.kind = a.kind AND c.connection_id = a.connection_id "
                "WHERE a.kind = ? AND a.account_id = ? AND c.deleted_at IS NULL",
                (kind, account_id),
            )
        if row is None or row[0] != caller.user_ref:
            raise ApiError(404, "not_found", "No such account for this company")
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
                    date_from=_date_param(request, "date_from"),
                    date_to=_date_param(request, "date_to"),
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
            return _json(
                200,
                {"transactions": [], "cursor": cursor.dumps() if cursor else None, "last": True},
            )
        return _json(
            200,
            {
                "transactions": to_wire(page.transactions),
                "cursor": page.cursor.dumps() if page.cursor else None,
                "last": page.last,
            },
        )

    def _delete_user(self, request: Request, ctx: _Context, caller: Caller) -> Response:
        self._provider_for(caller).delete_user()
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM accounts WHERE user_ref = ?", (caller.user_ref,))
            tx.execute(
                "UPDATE connections SET deleted_at = ? WHERE user_ref = ? AND deleted_at IS NULL",
                (time.time(), caller.user_ref),
            )
        return Response(204)

    def _events(self, request: Request, ctx: _Context, tenant: Tenant) -> Response:
        after = _int_param(request, "after", 0, 0, 2**62)
        limit = _int_param(request, "limit", 100, 1, 500)
        with self.store.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT e.id, e.payload, a.company, e.received_at FROM events e "
                "LEFT JOIN aggregator_users a "
                "ON a.user_ref = e.user_ref AND a.tenant_id = e.tenant_id "
                "WHERE e.tenant_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                (tenant.id, after, limit),
            )
        # An event always names its company: a receiver may hand a company-less one to every
        # company sharing this tenant, so such a row (written by an older version) is skipped.
        events = [_event_item(*row) for row in rows if row[2] is not None]
        return _json(200, {"events": events, "last_id": rows[-1][0] if rows else after})

    def _set_callback(self, request: Request, ctx: _Context, tenant: Tenant) -> Response:
        url = _url_field(_json_body(request), "url")
        try:
            check_callback_url(url, resolver=self.resolver, test_mode=self.settings.test_mode)
        except CallbackRefused as exc:
            raise ApiError(400, "invalid_request", exc.message) from None
        with self.store.transaction() as tx:
            tx.execute("UPDATE tenants SET callback_url = ? WHERE id = ?", (url, tenant.id))
        return Response(204)

    def _remove_callback(self, request: Request, ctx: _Context, tenant: Tenant) -> Response:
        with self.store.transaction() as tx:
            tx.execute("UPDATE tenants SET callback_url = NULL WHERE id = ?", (tenant.id,))
            tx.execute(
                "UPDATE events SET delivery_state = 'none' WHERE tenant_id = ? "
                "AND delivery_state = 'pending'",
                (tenant.id,),
            )
        return Response(204)

    # ------------------------------------------------------------------ callbacks
    def deliver_due(self, limit: int = 50) -> int:
        """Post due events to their tenants' callback URLs; returns how many were delivered.

        Each row is claimed first (a lease), so several service processes never post the same
        event at the same time; a failed post is retried with exponential backoff and given up
        after ``delivery_max_attempts`` (the event stays available to polling).
        """
        now = time.time()
        lease = now + self.settings.delivery_timeout * 4
        with self.store.transaction(write=False) as tx:
            due = tx.all(
                "SELECT e.id, e.next_attempt_at FROM events e "
                "WHERE e.delivery_state = 'pending' AND e.next_attempt_at <= ? "
                "ORDER BY e.id LIMIT ?",
                (now, limit),
            )
        delivered = 0
        for event_id, previous in due:
            with self.store.transaction() as tx:
                claimed = tx.execute(
                    "UPDATE events SET next_attempt_at = ? WHERE id = ? "
                    "AND delivery_state = 'pending' AND next_attempt_at = ?",
                    (lease, event_id, previous),
                )
                row = (
                    tx.one(
                        "SELECT e.payload, a.company, e.received_at, e.attempts, t.client_id, "
                        "t.secret_enc, t.callback_url FROM events e "
                        "JOIN tenants t ON t.id = e.tenant_id "
                        "LEFT JOIN aggregator_users a "
                        "ON a.user_ref = e.user_ref AND a.tenant_id = e.tenant_id "
                        "WHERE e.id = ?",
                        (event_id,),
                    )
                    if claimed
                    else None
                )
            if row is None:
                continue
            payload, company, received_at, attempts, client_id, secret_enc, url = row
            if company is None:
                # Never sent without its company (see _events): given up at once.
                error, url = "no company: never delivered", None
            elif url:
                error = self._post_event(
                    _event_item(event_id, payload, company, received_at),
                    client_id=client_id,
                    secret_enc=secret_enc,
                    url=url,
                )
            else:
                error = "no callback URL"
            with self.store.transaction() as tx:
                if error is None:
                    delivered += 1
                    tx.execute(
                        "UPDATE events SET delivery_state = 'delivered', attempts = ?, "
                        "last_error = NULL WHERE id = ?",
                        (attempts + 1, event_id),
                    )
                else:
                    attempts += 1
                    give_up = attempts >= self.settings.delivery_max_attempts or not url
                    tx.execute(
                        "UPDATE events SET delivery_state = ?, attempts = ?, "
                        "next_attempt_at = ?, last_error = ? WHERE id = ?",
                        (
                            "failed" if give_up else "pending",
                            attempts,
                            time.time() + min(300.0, 2.0**attempts),
                            error[:500],
                            event_id,
                        ),
                    )
        return delivered

    def _post_event(
        self, item: dict[str, Any], *, client_id: str, secret_enc: str, url: str
    ) -> str | None:
        """Post one event, signed with the tenant secret, to the tenant's callback URL (checked
        again, see :mod:`.callbacks`); None on success, else why not.

        Each post (each retry too) has its own ``delivery_id`` and ``sent_at`` in the body,
        equal to the signature's nonce and timestamp: inside the signed material, so that the
        receiver can refuse a replayed post (see the service README).
        """
        delivery_id, sent_at = uuid.uuid4().hex, int(time.time())
        body = json.dumps(
            {"delivery_id": delivery_id, "sent_at": sent_at, "events": [item]},
            separators=(",", ":"),
        ).encode()
        path = canonical_path(url)
        headers = sign_request(
            self.box.decrypt(secret_enc),
            "POST",
            path,
            body,
            sent_at,
            client_id=client_id,
            nonce=delivery_id,
        )
        headers.update({PATH_HEADER: path, "Content-Type": "application/json"})
        try:
            status = post_to_callback(
                url,
                body,
                headers,
                resolver=self.resolver,
                timeout=self.settings.delivery_timeout,
                test_mode=self.settings.test_mode,
            )
        except CallbackRefused as exc:
            # Checked again at each delivery: the name may point elsewhere since it was
            # registered (DNS rebinding), or the URL predates the check.
            outcome = f"refused: {exc.message}"
        except (OSError, ValueError) as exc:
            outcome = f"no answer ({type(exc).__name__})"
        else:
            # A redirect is a failure too: it is never followed.
            outcome = None if 200 <= status < 300 else f"HTTP {status}"
        self.logger.log(
            logging.INFO if outcome is None else logging.WARNING,
            "callback delivery",
            extra={
                "fields": {
                    "client_id": client_id,
                    "event": item["id"],
                    "delivery_id": delivery_id,
                    "outcome": outcome or "delivered",
                }
            },
        )
        return outcome

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _error_response(error: ApiError, ctx: _Context) -> Response:
        body: dict[str, Any] = {
            "error": error.error,
            "message": error.message,
            "request_id": ctx.request_id,
        }
        if error.code:
            body["code"] = error.code
        if error.reason:
            body["reason"] = error.reason
        response = _json(error.status, body)
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response


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


class _Serialized:
    """A provider whose method calls hold its lock (see :meth:`ServiceApp._provider_for`)."""

    def __init__(self, provider: Provider, lock: threading.Lock) -> None:
        self.provider = provider
        self.lock = lock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.provider, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                return method(*args, **kwargs)

        return call


def _json(status: int, data: Any) -> Response:
    return Response(
        status,
        json.dumps(data, separators=(",", ":"), default=str).encode(),
        {"Content-Type": "application/json"},
    )


def _html(status: int, message: str) -> Response:
    body = f"<!DOCTYPE html><html><body><p>{html.escape(message)}</p></body></html>"
    return Response(status, body.encode(), {"Content-Type": "text/html; charset=utf-8"})


def _event_item(event_id: int, payload: str, company: str, received_at: float) -> dict[str, Any]:
    """An event as tenants receive it: the aggregator's event, the service's ``id`` for it
    (unique, the same in every retry and poll), its ``company`` and when the service received
    it (``received_at``, Unix seconds)."""
    item = json.loads(payload)
    item["id"] = event_id
    item["company"] = company
    item["received_at"] = int(received_at)
    return item


def _check_json_depth(body: bytes) -> None:
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


def _json_body(request: Request) -> dict[str, Any]:
    _check_json_depth(request.body)
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_request", "The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object")
    return data


def _str_field(body: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "invalid_request", f"'{name}' is required")
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise ApiError(400, "invalid_request", f"'{name}' must be a string")
    return value


def _url_field(body: Mapping[str, Any], name: str) -> str:
    value = _str_field(body, name) or ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError(400, "invalid_request", f"'{name}' must be an http(s) URL")
    return value


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
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


def _date_param(request: Request, name: str) -> date | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"'{name}' must be a date (YYYY-MM-DD)") from None
