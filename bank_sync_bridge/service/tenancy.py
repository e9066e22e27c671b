"""Who is calling, and what is theirs.

- **Authentication.** Every ``/v1`` call is signed by a tenant (:mod:`bank_sync_bridge.signing`):
  the client id names the tenant, whose secret (decrypted) checks the signature, and whose nonce
  is remembered for the replay window. Failures are counted per client id and per source
  address (:class:`~.ratelimit.FailureLimiter`); a caller out of budget is turned away with 429
  before the database read, decryption and HMAC a check costs.
- **Callers.** The ``X-Bank-Sync-Company`` header (covered by the signature) names the tenant's
  company; each company is its own aggregator user, ``<client id>.<company>``.
- **Rate limits.** Calls per tenant, and for all tenants together (the operator's aggregator
  quota).
- **Ownership.** The service records which aggregator user owns each connection when it learns
  of it, and checks that ownership on every call naming one: an id owned by someone else is
  "not found".
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..crypto import SecretBox
from ..errors import SignatureVerificationError
from ..model import Account, Connection
from ..signing import CLIENT_HEADER, COMPANY_HEADER, verify_request
from .clock import ServiceClock
from .messages import ApiError, Request, RequestContext
from .ratelimit import FailureLimiter, RateLimiter
from .settings import ServiceSettings
from .store import Store, Transaction

#: (client id, address) pairs remembered as having signed correctly, and for how long: a
#: client id whose failure budget strangers spent still passes from those addresses.
TRUSTED_SOURCES_SIZE = 10_000
TRUSTED_SOURCE_SECONDS = 86_400.0

#: Aggregator users remembered as registered (beyond, the set starts again).
KNOWN_USERS_SIZE = 100_000

_COMPANY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

#: Called with (transaction, kind, connection id, user ref) when a connection gets its owner.
ClaimHook = Callable[[Transaction, str, str, str], None]


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


class Tenancy:
    """Authentication, callers, rate limits and ownership (see the module docstring).

    :param on_claim: told of each connection that gets its first owner (events that arrived
        before it are handed over then).
    """

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        settings: ServiceSettings,
        *,
        clock: ServiceClock,
        on_claim: ClaimHook | None = None,
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.clock = clock
        self.on_claim = on_claim
        self.limiter = RateLimiter(settings.rate_per_second, settings.burst, clock=clock.monotonic)
        self.global_limiter = (
            RateLimiter(
                settings.global_rate_per_second, settings.global_burst, clock=clock.monotonic
            )
            if settings.global_rate_per_second
            else None
        )
        self.auth_failures = FailureLimiter(
            settings.auth_failure_rate, settings.auth_failure_burst, clock=clock.monotonic
        )
        self._trusted_sources: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._trusted_lock = threading.Lock()
        self._known_users: set[str] = set()
        self._known_lock = threading.Lock()
        self._last_purge = 0.0

    # ------------------------------------------------------------------ authentication
    def authenticate(self, request: Request, ctx: RequestContext) -> Tenant:
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
        return until is not None and until > self.clock.monotonic()

    def _trust_source(self, client_id: str, address: str) -> None:
        with self._trusted_lock:
            until = self.clock.monotonic() + TRUSTED_SOURCE_SECONDS
            self._trusted_sources[(client_id, address)] = until
            self._trusted_sources.move_to_end((client_id, address))
            while len(self._trusted_sources) > TRUSTED_SOURCES_SIZE:
                self._trusted_sources.popitem(last=False)

    def _verify_signature(self, request: Request, ctx: RequestContext, client_id: str) -> Tenant:
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
        now = self.clock.timestamp()
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

    # ------------------------------------------------------------------ callers and limits
    def caller(self, request: Request, ctx: RequestContext, tenant: Tenant) -> Caller:
        """The company ``request`` acts for (its header is covered by the signature)."""
        company = request.header(COMPANY_HEADER)
        if not _COMPANY_RE.match(company):
            raise ApiError(
                400,
                "invalid_request",
                f"The {COMPANY_HEADER} header must name the company "
                "(1 to 64 letters, digits, '_', '.', ':' or '-')",
            )
        ctx.company = company
        return Caller(tenant, company, f"{tenant.client_id}.{company}")

    def rate_limit(self, tenant: Tenant) -> None:
        """429 when the tenant, or all tenants together, call too often."""
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

    def register(self, caller: Caller) -> None:
        """Record the caller's aggregator user (once), so that events can be routed to it."""
        if caller.user_ref in self._known_users:
            return
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO aggregator_users (user_ref, tenant_id, company, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (caller.user_ref, caller.tenant.id, caller.company, self.clock.timestamp()),
            )
        with self._known_lock:
            if len(self._known_users) > KNOWN_USERS_SIZE:
                self._known_users.clear()
            self._known_users.add(caller.user_ref)

    # ------------------------------------------------------------------ ownership
    def keep_own_connections(
        self, caller: Caller, kind: str, connections: list[Connection]
    ) -> list[Connection]:
        """The connections of ``connections`` that are the caller's: those nobody owned yet
        become the caller's (the aggregator listed them for the caller's aggregator user)."""
        with self.store.transaction() as tx:
            return [
                connection
                for connection in connections
                if self.claim_connection(tx, kind, connection.remote_id, caller.user_ref)
            ]

    def claim_connection(
        self, tx: Transaction, kind: str, connection_id: str, user_ref: str
    ) -> bool:
        """Record ``connection_id`` as ``user_ref``'s unless someone else owns it; True when
        ``user_ref`` owns it afterwards."""
        claimed = tx.execute(
            "INSERT INTO connections (kind, connection_id, user_ref, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (kind, connection_id, user_ref, self.clock.timestamp()),
        )
        if claimed:
            if self.on_claim is not None:
                self.on_claim(tx, kind, connection_id, user_ref)
            return True
        row = tx.one(
            "SELECT user_ref FROM connections WHERE kind = ? AND connection_id = ?",
            (kind, connection_id),
        )
        return row is not None and row[0] == user_ref

    def owns_connection(self, caller: Caller, kind: str, connection_id: str) -> bool:
        """Whether the caller's aggregator user owns this (not deleted) connection."""
        with self.store.transaction(write=False) as tx:
            row = tx.one(
                "SELECT user_ref FROM connections WHERE kind = ? AND connection_id = ? "
                "AND deleted_at IS NULL",
                (kind, connection_id),
            )
        return row is not None and row[0] == caller.user_ref

    def require_connection(self, caller: Caller, kind: str, connection_id: str) -> None:
        """404 unless the caller owns the connection."""
        if not self.owns_connection(caller, kind, connection_id):
            # Same answer whether it exists elsewhere or not at all: nothing leaks.
            raise ApiError(404, "not_found", "No such connection for this company")

    def keep_own_accounts(
        self, caller: Caller, kind: str, accounts: list[Account]
    ) -> list[Account]:
        """The accounts of ``accounts`` in the caller's connections, recorded as the caller's."""
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
                    (
                        kind,
                        account.remote_id,
                        account.connection_id,
                        caller.user_ref,
                        self.clock.timestamp(),
                    ),
                )
                mine.append(account)
        return mine

    def require_account(self, caller: Caller, kind: str, account_id: str) -> None:
        """404 unless the account is in one of the caller's (not deleted) connections."""
        with self.store.transaction(write=False) as tx:
            row = tx.one(
                "SELECT a.user_ref FROM accounts a JOIN connections c "
                "ON c.kind = a.kind AND c.connection_id = a.connection_id "
                "WHERE a.kind = ? AND a.account_id = ? AND c.deleted_at IS NULL",
                (kind, account_id),
            )
        if row is None or row[0] != caller.user_ref:
            raise ApiError(404, "not_found", "No such account for this company")

    def forget_connection(self, kind: str, connection_id: str) -> None:
        """The connection was deleted at the aggregator: nobody owns it any more."""
        with self.store.transaction() as tx:
            tx.execute(
                "UPDATE connections SET deleted_at = ? WHERE kind = ? AND connection_id = ?",
                (self.clock.timestamp(), kind, connection_id),
            )

    def forget_user(self, caller: Caller) -> None:
        """The caller's aggregator user was deleted: its connections and accounts with it."""
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM accounts WHERE user_ref = ?", (caller.user_ref,))
            tx.execute(
                "UPDATE connections SET deleted_at = ? WHERE user_ref = ? AND deleted_at IS NULL",
                (self.clock.timestamp(), caller.user_ref),
            )


__all__ = ["Caller", "Tenancy", "Tenant"]
