"""Bridge (Bridge by Bankin', bridgeapi.io), API version 2025-01-15, behind :class:`Provider`.

Facts come from ``docs/aggregators.md`` §1; the confidence noted there
(✅ vendor docs, 🟡 third-party code, ❓ guess) is repeated next to the code that relies on it.

Identity. One Bridge *user* per Odoo company: ``config.user_ref`` is its ``external_user_id``.
The user is found on first need by asking a token for that external id (the documented
``POST /v3/aggregation/authorization/token`` accepts it ✅) and created only when Bridge does
not know it; its ``uuid`` is then remembered in the :class:`TokenStore`. The user token
(valid 2 hours ✅, at most 10 requests per user per minute ✅) is cached there until shortly
before it expires, and renewed once when a call answers 401, which is then retried once.

Every call carries ``Bridge-Version``, the application's ``Client-Id``/``Client-Secret`` and,
for user data, ``Authorization: Bearer``. Transport, retries, 429 back-off and error mapping
are :class:`~bank_sync_bridge.http.HttpClient`'s; JSON numbers are read as Decimal.

Transactions are read from ``GET /v3/aggregation/transactions`` filtered by ``account_id``,
first by date window (``min_date``/``max_date`` 🟡), then incrementally with ``since`` (✅: the
operations created or updated after that ``updated_at``, deleted ones included), following the
relative ``pagination.next_uri`` until it is null. Cursors (kind ``bridge_updated_at``):

- mid-stream: ``{"next_uri": ..., "since": <max updated_at so far>, ...}``; resuming reads the
  stored ``next_uri`` again, so a crash after storing page *n* continues at page *n + 1*;
- final: ``{"since": <largest updated_at seen>}``: Bridge's own advice is to keep the largest
  ``updated_at`` received, not our clock. Each incremental read starts a day before it
  (``options["since_overlap_seconds"]``, :data:`DEFAULT_SINCE_OVERLAP_SECONDS`). Bridge
  documents what ``since`` returns, not when an operation becomes visible: a refresh writes
  operations for minutes and may publish them when it ends, with ``updated_at`` stamps older
  than operations already read. A day covers the longest refreshes and the nightly batch;
  what is read twice is recognised by its sync key and skipped (a day of updates is one page
  for a business account). Later still, the balance check reads recent weeks again by date.

Money safety: the v3 names of an operation's flags, ``deleted`` and ``future``, come from
third-party typings only (🟡); Bridge's own published transaction resource calls them
``is_deleted`` and ``is_future`` and adds ``show_client_side`` (✅, docs/aggregators.md §1.6).
Both spellings are read, so that a field name never books a deleted or future operation, and a
deferred-card line with ``show_client_side`` false (it repeats the monthly total booked on the
current account) is reported as deleted: never booked, and removed if it was.

Options (all optional): ``page_size`` (≤ 500, default 500), ``max_pages`` (safety cap per
stream, default 5000), ``country`` (Connect's preselected country, default ``FR``),
``since_overlap_seconds`` (default 86400), ``max_retries`` (default 3), ``token_margin_seconds``
(renew a token this long before it expires, default 300).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import (
    AuthenticationError,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
)
from ..http import HttpResponse
from ..model import (
    Account,
    AccountType,
    ActionReason,
    Connection,
    ConnectionState,
    ConnectResult,
    ConnectSession,
    Cursor,
    Institution,
    Transaction,
    TransactionPage,
    TransactionStatus,
    WebhookEvent,
)
from ..webhooks import BRIDGE_SIGNATURE_HEADER, header_value, verify_signature
from ._common import HttpProvider, fold, page_size_option
from .base import ProviderConfig

_logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.bridgeapi.io"
#: Sent on every call ✅; Bridge answers 400 without it.
BRIDGE_VERSION = "2025-01-15"
#: Largest ``limit`` of a list call (🟡, third-party clients use 500).
MAX_PAGE_SIZE = 500
CURSOR_KIND = "bridge_updated_at"
TRANSACTIONS_PATH = "/v3/aggregation/transactions"
#: Incremental reads start this long before the largest ``updated_at`` seen (see above: one
#: day, as operations can become visible with stamps older than those already read).
DEFAULT_SINCE_OVERLAP_SECONDS = 24 * 3600

#: Item ``status`` → (state, reason), docs/aggregators.md §1.4 ✅. ``430`` is from older docs only.
ITEM_STATUSES: dict[int, tuple[ConnectionState, ActionReason | None]] = {
    0: (ConnectionState.OK, None),
    -2: (ConnectionState.SYNCING, None),
    -3: (ConnectionState.SYNCING, None),
    402: (ConnectionState.ACTION_NEEDED, ActionReason.CREDENTIALS),
    429: (ConnectionState.ACTION_NEEDED, ActionReason.BANK_ACTION),
    430: (ConnectionState.ACTION_NEEDED, ActionReason.BANK_ACTION),
    1003: (ConnectionState.TEMPORARY_FAILURE, None),
    1005: (ConnectionState.DISCONNECTED, ActionReason.UNSUPPORTED),
    1007: (ConnectionState.TEMPORARY_FAILURE, None),
    # Balance changed without new operations (securities, life insurance): nothing is wrong.
    1009: (ConnectionState.OK, None),
    1010: (ConnectionState.ACTION_NEEDED, ActionReason.SCA),
    1099: (ConnectionState.TEMPORARY_FAILURE, None),
    1100: (ConnectionState.ACTION_NEEDED, ActionReason.PRO_VALIDATION),
}

#: Account ``type`` → ours. v2 enum ✅; v3 is assumed to be its lower-case form ❓. Deferred
#: debit cards and loans keep their own type for the balance sign rules.
ACCOUNT_TYPES: dict[str, AccountType] = {
    "checking": AccountType.CHECKING,
    "savings": AccountType.SAVINGS,
    "card": AccountType.CARD,
    "loan": AccountType.LOAN,
}

#: Webhook types of v3 ✅ (``TEST_EVENT`` from the dashboard's test button 🟡).
WEBHOOK_TYPES = frozenset(
    {
        "item.created",
        "item.refreshed",
        "item.deleted",
        "item.account.created",
        "item.account.updated",
        "item.account.deleted",
        "user.deleted",
        "TEST_EVENT",
    }
)
#: Upper-case names of the 2019 API ✅, read as their current names.
LEGACY_WEBHOOK_TYPES: dict[str, str] = {
    "ITEM_CREATED": "item.created",
    "ITEM_REFRESHED": "item.refreshed",
    "ITEM_ACCOUNT_CREATED": "item.account.created",
    "ITEM_ACCOUNT_UPDATED": "item.account.updated",
}

#: Where the user stopped in Connect (callback ``step`` ✅), said plainly for the chatter.
CONNECT_STEPS: dict[str, str] = {
    "highlighted_banks": "The bank selection was left before choosing a bank.",
    "sub_banks_list": "The bank selection was left before choosing a bank.",
    "list_banks": "The bank selection was left before choosing a bank.",
    "welcome_page": "Bridge Connect was closed on its welcome page.",
    "link_iban_error": "The IBAN could not be linked.",
    "bank_creds_form": "The bank credentials were not accepted or not entered.",
    "edit_bank_creds_form": "The new bank credentials were not accepted or not entered.",
    "otp_form": "The strong authentication (one-time code) was not completed.",
    "sync_in_progress": "The first synchronisation is still running.",
    "sync_pending": "The first synchronisation is still running.",
    "sync_success": "The synchronisation succeeded.",
    "sync_error": "The bank could not be synchronised.",
    "pro_validation_form": "The professional accounts were not validated.",
    "email_validation_form": "The e-mail address was not validated.",
}

#: Our words when the 180-day consent has run out (Bridge has no status for it until the
#: next refresh fails with 1010).
CONSENT_EXPIRED_MESSAGES: dict[str, str] = {
    "en": "The 180-day access granted by your bank has expired: renew the strong authentication.",
    "fr": "L'accès de 180 jours accordé par votre banque a expiré : renouvelez "
    "l'authentification forte.",
}

#: Connect ``context`` ✅: at most 100 letters, digits or hyphens, echoed in the callback.
_CONTEXT_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")


def parse_timestamp(value: Any) -> datetime | None:
    """An aware UTC datetime from Bridge's ISO 8601 text (``...Z``, with or without ms)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ProviderUnavailable(f"Bridge sent an unreadable timestamp: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # Bridge timestamps are UTC ✅
    return moment.astimezone(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    """``2025-03-16T05:12:44.120Z``: the shape of Bridge's ``updated_at`` ✅."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _date(value: Any) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ProviderUnavailable(f"Bridge sent an unreadable date: {value!r}") from None


def _decimal(value: Any) -> Decimal:
    """A JSON number already parsed as Decimal (or an int) → Decimal; never through float."""
    if isinstance(value, bool) or value is None:
        raise ProviderUnavailable(f"Bridge sent an amount that is not a number: {value!r}")
    if isinstance(value, float):
        # Only reachable with a parser that was not told parse_float=Decimal: refuse rather
        # than book a binary rounding error.
        raise ProviderUnavailable("A Bridge amount was parsed as a binary float")
    try:
        return Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ProviderUnavailable(
            f"Bridge sent an amount that is not a number: {value!r}"
        ) from None


def _is_true(value: Any) -> bool:
    """A JSON flag that is set (``true``; ``1`` or ``"true"`` read the same way)."""
    return value is not None and (value == 1 or str(value).lower() == "true")


def _is_false(value: Any) -> bool:
    """A JSON flag that is explicitly cleared (``false``, ``0`` or ``"false"``); absent is not."""
    return value is not None and (value == 0 or str(value).lower() == "false")


#: The two spellings of an operation's flags (docs/aggregators.md §1.6): the third-party v3
#: typings' and Bridge's own published transaction resource's. Either one set is enough.
DELETED_FLAGS = ("deleted", "is_deleted")
FUTURE_FLAGS = ("future", "is_future")


def transaction_flags(raw: Mapping[str, Any]) -> tuple[bool, bool]:
    """``(never to book, not booked yet)`` for one operation, whichever spelling Bridge uses.

    Never to book: deleted by the bank, or a deferred-card line that only repeats the monthly
    total booked on the current account (``show_client_side`` false). Not booked yet: a future
    operation. A name this client does not read must never book a deleted operation, so both
    spellings are read and any of them wins.
    """
    deleted = any(_is_true(raw.get(name)) for name in DELETED_FLAGS)
    duplicate = _is_false(raw.get("show_client_side"))
    future = any(_is_true(raw.get(name)) for name in FUTURE_FLAGS)
    return deleted or duplicate, future


def _language(locale: str | None) -> str:
    """``Accept-Language`` for our locale: French for ``fr``/``fr_FR``, English otherwise."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


def mask_iban(iban: str | None) -> str | None:
    """``FR76 **** 0156``: enough to recognise an account, not enough to use it."""
    if not iban:
        return None
    compact = iban.replace(" ", "")
    return f"{compact[:4]} **** {compact[-4:]}" if len(compact) > 8 else compact


class BridgeProvider(HttpProvider):
    """Bridge API 2025-01-15 client bound to one Bridge user (one Odoo company).

    :param config: ``credentials`` needs ``client_id`` and ``client_secret``; ``user_ref`` is
        the company's ``external_user_id``; ``base_url`` defaults to Bridge's host.
    :param clock: "now" as an aware datetime (token and consent expiry).
    :param sleep: how to wait between retries (tests inject a recorder).
    :param token_store: keeps the user's uuid and token between calls and processes.
    :param session: a :class:`requests.Session` to reuse.
    """

    kind = "bridgeapi"
    vendor = "Bridge"

    def _read_options(self, config: ProviderConfig, options: Mapping[str, Any]) -> str:
        if not config.user_ref:
            raise InvalidRequest("Bridge needs an external user id for this company.")
        self.base_url = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.page_size = page_size_option(options, "Bridge", MAX_PAGE_SIZE)
        self.max_pages = int(options.get("max_pages", 5000))
        self.country = str(options.get("country", "FR")).upper()
        self.since_overlap = timedelta(
            seconds=float(options.get("since_overlap_seconds", DEFAULT_SINCE_OVERLAP_SECONDS))
        )
        self.token_margin = timedelta(seconds=float(options.get("token_margin_seconds", 300)))
        self._providers: dict[str, Mapping[str, Any] | None] = {}
        return self.base_url

    def _default_headers(self) -> dict[str, str]:
        return {
            "Bridge-Version": BRIDGE_VERSION,
            "Client-Id": self.client_id,
            "Client-Secret": self._client_secret,
        }

    def __repr__(self) -> str:
        return f"BridgeProvider(user_ref={self.config.user_ref!r}, base_url={self.base_url!r})"

    # ---- user and token ----------------------------------------------------------------------

    @property
    def _store_key(self) -> str:
        return f"bridgeapi:{self.client_id}:user:{self.config.user_ref}"

    @property
    def user_uuid(self) -> str:
        """The Bridge user's uuid (found or created on first need)."""
        stored = self.token_store.get(self._store_key) or {}
        if not stored.get("user_uuid"):
            self._user_token()
            stored = self.token_store.get(self._store_key) or {}
        return str(stored["user_uuid"])

    def _request_token(self, body: Mapping[str, str]) -> Mapping[str, Any]:
        # Asking twice for a token is harmless, so a lost answer may be retried.
        response = self._http.post(
            "/v3/aggregation/authorization/token", json=dict(body), idempotent=True
        )
        return response.json_object()

    def _create_user(self) -> None:
        """``POST /v3/aggregation/users`` ✅ for this company's external id."""
        try:
            self._http.post(
                "/v3/aggregation/users", json={"external_user_id": self.config.user_ref}
            )
        except InvalidRequest as exc:
            # 409: created in the meantime by another worker; the next token call finds it.
            if exc.status != 409:
                raise

    def _user_token(self, *, renew: bool = False) -> str:
        """A valid user token: cached, or asked for (creating the user when Bridge has none)."""
        stored = dict(self.token_store.get(self._store_key) or {})
        expires_at = parse_timestamp(stored.get("expires_at")) if stored.get("expires_at") else None
        if (
            not renew
            and stored.get("access_token")
            and expires_at is not None
            and expires_at - self.token_margin > self.clock()
        ):
            return str(stored["access_token"])
        if stored.get("user_uuid"):
            body = {"user_uuid": str(stored["user_uuid"])}
        else:
            body = {"external_user_id": self.config.user_ref}
        try:
            answer = self._request_token(body)
        except NotFound:
            # Unknown external id (first use) or user deleted at Bridge: (re)create it.
            self._create_user()
            answer = self._request_token({"external_user_id": self.config.user_ref})
        token = answer.get("access_token")
        user = answer.get("user") or {}
        if not token or not isinstance(user, Mapping) or not user.get("uuid"):
            raise ProviderUnavailable("Bridge's token answer has no access_token or user uuid.")
        self._http.redactor.add(str(token))
        self.token_store.set(
            self._store_key,
            {
                "user_uuid": str(user["uuid"]),
                "access_token": str(token),
                # Without an expiry, assume the documented 2 hours ✅.
                "expires_at": answer.get("expires_at")
                or format_timestamp(self.clock() + timedelta(hours=2)),
            },
        )
        return str(token)

    def _user_call(
        self, method: str, path: str, *, locale: str | None = None, **kwargs: Any
    ) -> HttpResponse:
        """A call with the user's token, renewed once on 401 and retried once (never a loop)."""
        headers = dict(kwargs.pop("headers", None) or {})
        if locale is not None:
            headers["Accept-Language"] = _language(locale)
        for attempt in (1, 2):
            token = self._user_token(renew=attempt == 2)
            headers["Authorization"] = f"Bearer {token}"
            try:
                return self._http.request(method, path, headers=headers, **kwargs)
            except AuthenticationError as exc:
                if attempt == 2 or exc.code == "invalid_client_credentials":
                    raise
                _logger.info("Bridge refused the user token (%s); asking for a new one", exc.code)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _iter_resources(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        *,
        user: bool = True,
        locale: str | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        """Every resource of a list endpoint, following ``next_uri`` (cap + loop detection)."""
        for page, _next_uri in self._iter_pages(path, params, user=user, locale=locale):
            yield from page

    def _iter_pages(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        *,
        user: bool = True,
        locale: str | None = None,
    ) -> Iterator[tuple[list[Mapping[str, Any]], str | None]]:
        """Pages of a list as ``(resources, next_uri)`` until ``next_uri`` is null.

        Stops with :class:`ProviderUnavailable` after ``max_pages`` pages or when Bridge hands
        back an ``after`` cursor it already gave: either would otherwise loop forever.
        """
        seen_cursors: set[str] = set()
        target: str = path
        query = params
        for _ in range(self.max_pages):
            if user:
                response = self._user_call("GET", target, params=query, locale=locale)
            else:
                headers = {"Accept-Language": _language(locale)} if locale else None
                response = self._http.get(target, params=query, headers=headers)
            body = response.json_object()
            resources = body.get("resources")
            if not isinstance(resources, list):
                raise ProviderUnavailable(
                    "Bridge's list answer has no resources.", request_id=response.request_id
                )
            pagination = body.get("pagination") or {}
            next_uri = pagination.get("next_uri") if isinstance(pagination, Mapping) else None
            if next_uri:
                after = parse_qs(urlsplit(str(next_uri)).query).get("after", [""])[0]
                if not after or after in seen_cursors:
                    raise ProviderUnavailable(
                        "Bridge returned a pagination cursor it had already given; the listing "
                        "was stopped to avoid an endless loop.",
                        request_id=response.request_id,
                    )
                seen_cursors.add(after)
            yield [r for r in resources if isinstance(r, Mapping)], next_uri
            if not next_uri:
                return
            target = self._http.next_url(str(next_uri))
            query = None
        raise ProviderUnavailable(
            f"Bridge's listing went on for more than {self.max_pages} pages; it was stopped. "
            "The next run resumes from the last stored page."
        )

    # ---- banks -------------------------------------------------------------------------------

    def _to_institution(self, raw: Mapping[str, Any], popularity: int) -> Institution:
        images = raw.get("images") if isinstance(raw.get("images"), Mapping) else {}
        return Institution(
            remote_id=str(raw["id"]),
            name=str(raw.get("name") or raw["id"]),
            country=str(raw.get("country_code") or ""),
            logo_url=images.get("logo") if images else None,
            group_name=raw.get("group_name"),
            popularity=popularity,
        )

    def list_institutions(
        self, *, search: str = "", country: str | None = None, limit: int = 50
    ) -> list[Institution]:
        """Banks from ``GET /v3/providers`` ✅ (``name``/``country_code`` filters 🟡).

        Bridge's order is kept (it is the dashboard's highlight order, there is no popularity
        field ❓) and turned into ``popularity``. The match is made case- and
        accent-insensitive here, whatever the server's search does: when Bridge's own search
        finds nothing, the country's list is filtered locally.
        """
        needle = fold(search.strip())
        params: dict[str, Any] = {"limit": MAX_PAGE_SIZE}
        if country:
            params["country_code"] = country.upper()
        found: list[Mapping[str, Any]] = []
        if needle:
            found = list(
                self._iter_resources(
                    "/v3/providers", {**params, "name": search.strip()}, user=False
                )
            )
        if not found:
            found = list(self._iter_resources("/v3/providers", params, user=False))
        if needle:
            found = [
                raw
                for raw in found
                if needle in fold(str(raw.get("name") or ""))
                or needle in fold(str(raw.get("group_name") or ""))
                or any(
                    needle in fold(str(k)) for k in ((raw.get("tags") or {}).get("keywords") or [])
                )
            ]
        total = len(found)
        return [self._to_institution(raw, total - index) for index, raw in enumerate(found[:limit])]

    def _provider(self, provider_id: Any) -> Mapping[str, Any] | None:
        """One bank, cached for the life of this object (names and logos rarely change)."""
        if provider_id is None:
            return None
        key = str(provider_id)
        if key not in self._providers:
            try:
                self._providers[key] = self._http.get(f"/v3/providers/{key}").json_object()
            except NotFound:
                self._providers[key] = None
        return self._providers[key]

    # ---- connect -----------------------------------------------------------------------------

    def _connect_session(self, body: dict[str, Any], state: str) -> ConnectSession:
        if not _CONTEXT_RE.match(state):
            raise InvalidRequest(
                "Bridge's context (our state) must be 1 to 100 letters, digits or hyphens."
            )
        response = self._user_call(
            "POST",
            "/v3/aggregation/connect-sessions",
            json={k: v for k, v in body.items() if v is not None},
        )
        answer = response.json_object()
        if not answer.get("url"):
            raise ProviderUnavailable(
                "Bridge's connect session has no url.", request_id=response.request_id
            )
        return ConnectSession(
            url=str(answer["url"]), session_id=str(answer.get("id") or "") or None
        )

    def start_connect(
        self,
        *,
        callback_url: str,
        state: str,
        institution_id: str | None = None,
        locale: str = "en",
        user_email: str | None = None,
    ) -> ConnectSession:
        """``POST /v3/aggregation/connect-sessions`` ✅ for a new item; ``state`` goes in
        ``context`` and comes back in the callback. Bridge documents no language parameter
        for Connect (it follows the browser), so ``locale`` is not sent."""
        return self._connect_session(
            {
                "callback_url": callback_url,
                "context": state,
                "country_code": self.country,
                "provider_id": int(institution_id) if institution_id else None,
                "user_email": user_email,
            },
            state,
        )

    def start_reconnect(
        self, connection_id: str, *, callback_url: str, state: str, locale: str = "en"
    ) -> ConnectSession:
        """A connect session on the existing item (``item_id`` ✅): renew SCA, fix credentials,
        validate professional accounts."""
        return self._connect_session(
            {"callback_url": callback_url, "context": state, "item_id": int(connection_id)},
            state,
        )

    def complete_connect(self, params: Mapping[str, str]) -> ConnectResult:
        """Read the callback's ``user_uuid``, ``item_id``, ``success``, ``step``, ``context`` ✅.

        A callback for another Bridge user than ours is refused (a mixed-up or forged link).
        The callback is only a hint: read the item to know its real state.
        """
        stored = self.token_store.get(self._store_key) or {}
        user_uuid = params.get("user_uuid")
        if user_uuid and stored.get("user_uuid") and user_uuid != stored["user_uuid"]:
            raise InvalidRequest("This Bridge callback belongs to another Bridge user.")
        success = str(params.get("success", "")).lower() == "true"
        step = params.get("step") or None
        message = None if success else CONNECT_STEPS.get(step or "")
        return ConnectResult(
            state=str(params.get("context") or ""),
            success=success,
            connection_id=params.get("item_id") or None,
            step=step,
            message=message,
        )

    # ---- items -------------------------------------------------------------------------------

    def _to_connection(self, raw: Mapping[str, Any], locale: str = "en") -> Connection:
        try:
            status = int(raw["status"])
        except (KeyError, TypeError, ValueError):
            raise ProviderUnavailable(
                f"Bridge sent an item without status: {raw.get('id')}"
            ) from None
        info = raw.get("status_code_info")
        mapped = ITEM_STATUSES.get(status)
        if mapped is None:
            # A code this client does not know yet: nothing the user can act on, so wait.
            _logger.warning("Unknown Bridge item status %s (%s)", status, info)
            mapped = (ConnectionState.TEMPORARY_FAILURE, None)
        state, reason = mapped
        message = raw.get("status_code_description")
        consent_end = parse_timestamp(raw.get("authentication_expires_at"))
        if (
            consent_end is not None
            and consent_end <= self.clock()
            and state in (ConnectionState.OK, ConnectionState.TEMPORARY_FAILURE)
        ):
            # The 180-day SCA window is over ✅: the next refresh would end in 1010.
            state, reason = ConnectionState.ACTION_NEEDED, ActionReason.CONSENT_EXPIRED
            # Bridge's description still describes the last refresh; say what is wrong now.
            message = CONSENT_EXPIRED_MESSAGES[_language(locale)]
        provider = self._provider(raw.get("provider_id"))
        images = (
            provider.get("images")
            if provider and isinstance(provider.get("images"), Mapping)
            else {}
        )
        return Connection(
            remote_id=str(raw["id"]),
            institution_id=str(raw["provider_id"]) if raw.get("provider_id") is not None else None,
            institution_name=provider.get("name") if provider else None,
            state=state,
            reason=reason,
            message=message,
            vendor_status=f"{status}/{info}" if info else str(status),
            consent_expires_at=consent_end,
            last_refreshed_at=parse_timestamp(raw.get("last_successful_refresh")),
            logo_url=images.get("logo") if images else None,
        )

    def get_connection(self, connection_id: str, *, locale: str = "en") -> Connection:
        """``GET /v3/aggregation/items/{id}`` 🟡, with Bridge's explanation in ``locale``."""
        response = self._user_call(
            "GET", f"/v3/aggregation/items/{int(connection_id)}", locale=locale
        )
        return self._to_connection(response.json_object(), locale)

    def list_connections(self, *, locale: str = "en") -> list[Connection]:
        """``GET /v3/aggregation/items`` ✅, every page."""
        return [
            self._to_connection(raw, locale)
            for raw in self._iter_resources("/v3/aggregation/items", {"limit": 100}, locale=locale)
        ]

    def refresh_connection(self, connection_id: str) -> Connection:
        """``POST /v3/aggregation/items/{id}/refresh`` 🟡 (202), then the item as it is now."""
        self._user_call("POST", f"/v3/aggregation/items/{int(connection_id)}/refresh", json={})
        return self.get_connection(connection_id)

    def delete_connection(self, connection_id: str) -> None:
        """``DELETE /v3/aggregation/items/{id}`` 🟡; an item already gone is not an error."""
        try:
            self._user_call("DELETE", f"/v3/aggregation/items/{int(connection_id)}")
        except NotFound:
            _logger.info("Bridge item %s was already deleted", connection_id)

    def delete_user(self) -> None:
        """``DELETE /v3/aggregation/users/{uuid}`` 🟡: the company leaves; Bridge asks for it ✅.

        A user Bridge does not know (never created, or already deleted) is not an error.
        """
        stored = self.token_store.get(self._store_key) or {}
        user_uuid = stored.get("user_uuid")
        if not user_uuid:
            try:
                user_uuid = self._request_token({"external_user_id": self.config.user_ref})["user"][
                    "uuid"
                ]
            except NotFound:
                user_uuid = None
        if user_uuid:
            try:
                self._http.delete(f"/v3/aggregation/users/{user_uuid}")
            except NotFound:
                _logger.info("Bridge user of %s was already deleted", self.config.user_ref)
        self.token_store.set(self._store_key, {})

    # ---- accounts ----------------------------------------------------------------------------

    def _to_account(self, raw: Mapping[str, Any]) -> Account:
        iban = raw.get("iban") or None
        number = raw.get("number") or None
        currency = str(raw.get("currency_code") or "EUR").upper()
        self._account_currencies[str(raw["id"])] = currency
        balance = raw.get("balance")
        return Account(
            remote_id=str(raw["id"]),
            connection_id=str(raw.get("item_id") or ""),
            label=str(raw.get("name") or raw["id"]),
            currency=currency,
            type=ACCOUNT_TYPES.get(str(raw.get("type") or "").lower(), AccountType.OTHER),
            masked_number=mask_iban(str(number)) if number else mask_iban(iban),
            iban=iban,
            balance=_decimal(balance) if balance is not None else None,
            balance_date=parse_timestamp(raw.get("updated_at")),
            # ``data_access`` other than enabled: the user no longer shares it ❓.
            active=str(raw.get("data_access") or "enabled") == "enabled",
            raw=dict(raw),
        )

    def list_accounts(self, connection_id: str | None = None) -> list[Account]:
        """``GET /v3/aggregation/accounts`` ✅, of one item (``item_id`` filter 🟡) or all."""
        params: dict[str, Any] = {"limit": MAX_PAGE_SIZE}
        if connection_id is not None:
            params["item_id"] = int(connection_id)
        return [
            self._to_account(raw)
            for raw in self._iter_resources("/v3/aggregation/accounts", params)
        ]

    def _currency_of(self, account_id: str) -> str:
        if account_id not in self._account_currencies:
            raw = self._user_call(
                "GET", f"/v3/aggregation/accounts/{int(account_id)}"
            ).json_object()
            self._to_account(raw)
        return self._account_currencies[account_id]

    # ---- transactions ------------------------------------------------------------------------

    def _to_transaction(self, raw: Mapping[str, Any], account_id: str) -> Transaction:
        booked_on = _date(raw.get("booking_date")) or _date(raw.get("date"))
        if booked_on is None:
            raise ProviderUnavailable(f"Bridge sent transaction {raw.get('id')} without a date.")
        currency = raw.get("currency_code") or self._currency_of(account_id)
        label = raw.get("clean_description") or raw.get("provider_description") or ""
        raw_label = raw.get("provider_description")
        never_book, future = transaction_flags(raw)
        return Transaction(
            remote_id=str(raw["id"]),
            account_id=str(raw.get("account_id") or account_id),
            booking_date=booked_on,
            amount=_decimal(raw.get("amount")),
            currency=str(currency).upper(),
            label=str(label),
            value_date=_date(raw.get("value_date")),
            transaction_date=_date(raw.get("transaction_date")),
            operation_type=raw.get("operation_type"),
            # The bank's own label (Bridge cleans it into the label) keeps what payers quote.
            remittance=str(raw_label) if raw_label and raw_label != label else None,
            status=TransactionStatus.PENDING if future else TransactionStatus.BOOKED,
            deleted=never_book,
            updated_at=parse_timestamp(raw.get("updated_at")),
            raw=dict(raw),
        )

    @staticmethod
    def _belongs_to(raw: Mapping[str, Any], account_id: str) -> bool:
        """Whether a listed operation is of the account asked for.

        The listing is user-wide and filtered by ``account_id`` (🟡): should a page ever carry
        another account's operation, it must not land in this account's journal.
        """
        other = raw.get("account_id")
        if other is None or str(other) == account_id:
            return True
        _logger.warning("Bridge listed operation %s of account %s; skipped", raw.get("id"), other)
        return False

    def _read_cursor(
        self, cursor: Cursor, account_id: str
    ) -> tuple[str | None, str | None, datetime | None]:
        """``(next_uri to resume at, since to query, largest updated_at already seen)``."""
        if cursor.kind != CURSOR_KIND:
            raise InvalidRequest(f"This cursor does not belong to Bridge ({cursor.kind}).")
        value = dict(cursor.value)
        next_uri = value.get("next_uri")
        try:
            seen = parse_timestamp(value.get("since"))
        except ProviderUnavailable:
            raise InvalidRequest("The stored Bridge cursor's since is unreadable.") from None
        if next_uri:
            parts = urlsplit(str(next_uri))
            resumed_account = parse_qs(parts.query).get("account_id", [""])[0]
            # Bridge keeps the query's filters in next_uri (its example keeps ``since``);
            # when account_id is there it must be ours.
            if parts.path.rstrip("/") != TRANSACTIONS_PATH or resumed_account not in (
                "",
                account_id,
            ):
                raise InvalidRequest("The stored Bridge cursor points to another listing.")
            return str(next_uri), None, seen
        if seen is None:
            raise InvalidRequest("The stored Bridge cursor has neither next_uri nor since.")
        # The overlap widens the query only; the high-water mark stays what was really seen,
        # so runs without news do not drift backwards.
        return None, format_timestamp(seen - self.since_overlap), seen

    def iter_transactions(
        self,
        account_id: str,
        *,
        cursor: Cursor | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Iterator[TransactionPage]:
        """Stream an account's operations, one Bridge page at a time.

        Without a cursor, reads the ``date_from``/``date_to`` window (``min_date``/``max_date``
        on the operation's ``date``); with one, resumes there. Deleted and future (pending)
        operations come flagged, in either spelling (:func:`transaction_flags`); a card line
        that repeats the monthly total (``show_client_side`` false) comes as deleted. Page
        cursors are safe to store with their page; the last page's cursor is
        ``{"since": <largest updated_at seen>}``.
        """
        account_id = str(int(account_id))
        start = TRANSACTIONS_PATH
        params: dict[str, Any] | None = {"account_id": account_id, "limit": self.page_size}
        high_water: datetime | None = None
        if cursor is not None:
            resume_uri, since, high_water = self._read_cursor(cursor, account_id)
            if resume_uri:
                start, params = resume_uri, None
            else:
                params = {**(params or {}), "since": since}
        else:
            if date_from:
                params["min_date"] = date_from.isoformat()
            if date_to:
                params["max_date"] = date_to.isoformat()
        for resources, next_uri in self._iter_pages(start, params):
            transactions = tuple(
                self._to_transaction(raw, account_id)
                for raw in resources
                if self._belongs_to(raw, account_id)
            )
            for tx in transactions:
                if tx.updated_at is not None and (high_water is None or tx.updated_at > high_water):
                    high_water = tx.updated_at
            since = {"since": format_timestamp(high_water)} if high_water else {}
            if next_uri:
                yield TransactionPage(
                    transactions, Cursor(CURSOR_KIND, {"next_uri": str(next_uri), **since})
                )
            else:
                # Nothing ever seen (an empty account read by date): no cursor yet.
                final = Cursor(CURSOR_KIND, since) if since else None
                yield TransactionPage(transactions, final, last=True)

    # ---- webhooks ----------------------------------------------------------------------------

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str], secrets: list[str]
    ) -> list[WebhookEvent]:
        """Verify ``BridgeApi-Signature`` on the raw body (one or two secrets ✅) and read the
        ``{type, timestamp, content}`` envelope ✅.

        Bridge sends no event id, so ours is a hash of type, content and timestamp: the same
        delivery twice gets the same id (deduplicate on it). Unknown types are accepted and
        ignored (an empty list), so a new Bridge event never makes deliveries fail.
        """
        verify_signature(body, header_value(headers, BRIDGE_SIGNATURE_HEADER), secrets)
        try:
            envelope = json.loads(body, parse_float=Decimal)
        except ValueError:
            raise InvalidRequest("The Bridge webhook body is not JSON.") from None
        if not isinstance(envelope, Mapping) or not envelope.get("type"):
            raise InvalidRequest("The Bridge webhook has no event type.")
        event_type = str(envelope["type"])
        event_type = LEGACY_WEBHOOK_TYPES.get(event_type, event_type)
        if event_type not in WEBHOOK_TYPES:
            _logger.info("Ignoring Bridge webhook of unknown type %s", event_type)
            return []
        content = envelope.get("content") if isinstance(envelope.get("content"), Mapping) else {}
        timestamp = envelope.get("timestamp")
        canonical = json.dumps(
            [event_type, content, str(timestamp)],
            sort_keys=True,
            default=str,
            separators=(",", ":"),
        )
        occurred_at = None
        if isinstance(timestamp, int | Decimal) and not isinstance(timestamp, bool):
            occurred_at = datetime.fromtimestamp(float(timestamp) / 1000, tz=timezone.utc)
        account_id = content.get("account_id") if content else None
        item_id = content.get("item_id") if content else None
        return [
            WebhookEvent(
                event_id=hashlib.sha256(canonical.encode()).hexdigest()[:32],
                type=event_type,
                connection_id=str(item_id) if item_id is not None else None,
                account_ids=(str(account_id),) if account_id is not None else (),
                # Bridge identifies the user by its uuid, not by our external id.
                user_ref=str(content["user_uuid"])
                if content and content.get("user_uuid")
                else None,
                occurred_at=occurred_at,
                raw=dict(envelope),
            )
        ]


__all__ = [
    "ACCOUNT_TYPES",
    "BRIDGE_VERSION",
    "CURSOR_KIND",
    "ITEM_STATUSES",
    "BridgeProvider",
    "format_timestamp",
    "mask_iban",
    "parse_timestamp",
    "transaction_flags",
]
