"""Linxo Connect ("Linxo Connect Accounts" API) behind the :class:`Provider` protocol.

Linxo has three services, each with its own base URL (``docs/aggregators.md`` §2.1):

- **auth** (``options["auth_url"]``): OAuth2 ``POST /token``;
- **API** (``config.base_url``, e.g. ``https://api.linxo.com/v3``): users, connections,
  accounts, transactions, providers;
- **widget** (``options["widget_url"]``): the hosted pages where the user picks a bank and
  logs in (``POST /widget_session``, ``GET /widget/add_connection``, ``/widget/edit_credentials``).

Identity: the application's OAuth client (``credentials["client_id"]``/``["client_secret"]``)
creates one Linxo "technical" user per Odoo company (``config.user_ref``) with a generated
e-mail and password. That password is a secret: it is kept in the :class:`TokenStore` (the
addon encrypts it at rest) and registered with the HTTP layer's redactor so it never reaches a
log. The user's own token (OAuth ``password`` grant) reads the data; it is cached until it
expires and renewed once on a 401.

Versions. Linxo has published v2 (2018), v2.1 (Oxlin) and v3 (current since late 2025) with
breaking changes. This client targets **v3** and reads v2.1 answers too
(``options["api_version"] = "v2.1"``). Where a field comes from is said next to the code that
reads it; ❓ marks what the public material does not confirm (see ``docs/aggregators.md`` §2
and §5).

Options (all optional): ``api_version`` (``v3``), ``environment`` (``production`` or
``sandbox``: default hosts), ``auth_url``, ``widget_url``, ``page_size`` (≤ 500, default 500),
``max_pages`` (safety cap, default 2000), ``overlap_days`` (re-read window of the next run,
default 10), ``history_days`` (first window, default 90), ``user_email_domain``,
``max_retries``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from ..errors import (
    AccessDenied,
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
from ._common import HttpProvider, fold, page_size_option, with_query
from .base import ProviderConfig

_logger = logging.getLogger(__name__)

#: Linxo's servers work in Paris time: a date-only value is midnight Europe/Paris
#: (docs/aggregators.md §2.6).
PARIS = ZoneInfo("Europe/Paris")

#: Default hosts per environment (docs/aggregators.md §2.1; the v3 auth host is ❓: Oxlin's).
DEFAULT_HOSTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "production": MappingProxyType(
            {
                "api": "https://api.linxo.com/v3",
                "auth": "https://auth.oxlin.io",
                "widget": "https://embed.linxo-connect.io",
            }
        ),
        "sandbox": MappingProxyType(
            {
                "api": "https://sandbox-api.linxo.com/v3",
                "auth": "https://sandbox-auth.oxlin.io",
                "widget": "https://embed.linxo-connect.io",
            }
        ),
    }
)

#: Scopes of the user token (docs/aggregators.md §2.2, 🟡 from the algoan connector).
USER_SCOPES = (
    "profile profile_edit accounts_manage connections_manage connections_sync transactions_read"
)

#: Largest page Linxo serves (docs/aggregators.md §2.6, 🟡).
MAX_PAGE_SIZE = 500

#: Cursor scheme of this provider: a Paris date window plus the next page to read.
CURSOR_KIND = "linxo_window"

#: Account ``type`` (v2.1 and v3, 🟡) → our account type.
ACCOUNT_TYPES: Mapping[str, AccountType] = MappingProxyType(
    {
        "CHECKINGS": AccountType.CHECKING,
        "SAVINGS": AccountType.SAVINGS,
        "LOAN": AccountType.LOAN,
        "CREDIT_CARD": AccountType.CARD,
    }
)

#: Account ``status`` values whose data is still shared (assoconnect's status list, 🟡):
#: ``ERROR`` is a failed last import and ``SUSPENDED`` a check by Linxo, both temporary.
ACTIVE_ACCOUNT_STATUSES = frozenset({"ACTIVE", "ERROR", "SUSPENDED"})

#: Transaction ``origin`` values that are forecasts, not bank operations
#: (docs/aggregators.md §2.6, 🟡).
FORECAST_ORIGINS = frozenset({"UPCOMING", "RECURRING", "SCHEDULED"})

#: Transaction ``status`` values meaning the operation will never be booked
#: (docs/aggregators.md §2.6, 🟡).
DELETED_STATUSES = frozenset({"CANCELLED", "REJECTED", "EXPIRED"})

#: Channel statuses meaning "fine" (v2.1 fixture: ``SUCCESS``, ``EMPTY``) or "in progress".
_QUIET_CHANNEL_STATUSES = frozenset({"SUCCESS", "EMPTY", "RUNNING", "NONE"})

#: Why a FAILED connection needs its owner, from its channels' status. ``AUTH_FAILED`` is the
#: documented channel event ✅; the other codes are ❓ (no public list of channel statuses).
_CHANNEL_ACTIONS: Mapping[str, ActionReason] = MappingProxyType(
    {
        "AUTH_FAILED": ActionReason.CREDENTIALS,
        "SCA_REQUIRED": ActionReason.SCA,
        "USER_ACTION_REQUIRED": ActionReason.BANK_ACTION,
        "CONSENT_EXPIRED": ActionReason.CONSENT_EXPIRED,
    }
)

#: Linxo sends no human explanation with a status, so we carry our own, in English and
#: French (like assoconnect's translation catalogue does). Key: status or channel code.
MESSAGES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "SUCCESS": (
            "The bank connection is up to date.",
            "La connexion bancaire est à jour.",
        ),
        "PARTIAL_SUCCESS": (
            "Some accounts of this bank could not be synchronised; the others are up to date.",
            (
                "Certains comptes de cette banque n'ont pas pu être synchronisés ; les autres "
                "sont à jour."
            ),
        ),
        "RUNNING": (
            "Linxo is synchronising this bank connection.",
            "Linxo synchronise cette connexion bancaire.",
        ),
        "NONE": (
            "This bank connection has not been synchronised yet.",
            "Cette connexion bancaire n'a pas encore été synchronisée.",
        ),
        "CLOSED": (
            "This bank connection is closed.",
            "Cette connexion bancaire est fermée.",
        ),
        "AUTH_FAILED": (
            "The bank refused the login: please enter your bank credentials again.",
            "La banque a refusé l'identification : merci de saisir à nouveau vos identifiants.",
        ),
        "SCA_REQUIRED": (
            "Your bank asks for strong authentication: please reconnect to confirm your access.",
            "Votre banque demande une authentification forte : merci de vous reconnecter.",
        ),
        "USER_ACTION_REQUIRED": (
            "Your bank asks you to do something on its website or app before synchronising.",
            "Votre banque vous demande une action sur son site ou son application.",
        ),
        "CONSENT_EXPIRED": (
            "Your consent to share this bank's data has expired: please reconnect.",
            (
                "Votre consentement au partage des données de cette banque a expiré : merci de "
                "vous reconnecter."
            ),
        ),
        "FAILED": (
            "The last synchronisation with the bank failed; Linxo will try again.",
            "La dernière synchronisation avec la banque a échoué ; Linxo réessaiera.",
        ),
        "UNKNOWN": (
            "Linxo reported an unknown connection status.",
            "Linxo a signalé un état de connexion inconnu.",
        ),
    }
)


def _message(code: str, locale: str) -> str:
    english, french = MESSAGES.get(code, MESSAGES["UNKNOWN"])
    return french if locale.lower().startswith("fr") else english


def paris_date(timestamp: Any) -> date | None:
    """Date of a Linxo unix timestamp, read in Europe/Paris (not UTC: midnight Paris is the
    previous day in UTC, docs/aggregators.md §2.6)."""
    if timestamp is None or timestamp == "":
        return None
    try:
        return datetime.fromtimestamp(int(timestamp), PARIS).date()
    except (TypeError, ValueError, OverflowError):
        raise ProviderUnavailable(f"Linxo sent an unreadable date: {timestamp!r}") from None


def _utc(timestamp: Any) -> datetime | None:
    if timestamp is None or timestamp == "":
        return None
    try:
        return datetime.fromtimestamp(int(timestamp), timezone.utc)
    except (TypeError, ValueError, OverflowError):
        raise ProviderUnavailable(f"Linxo sent an unreadable timestamp: {timestamp!r}") from None


def _decimal(value: Any) -> Decimal:
    """Exact amount from a v3 string or a v2.1 JSON number (already a Decimal: the HTTP layer
    parses JSON numbers as decimals, so no float ever rounds a cent)."""
    if isinstance(value, bool) or value is None:
        raise ProviderUnavailable(f"Linxo sent an unreadable amount: {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ProviderUnavailable(f"Linxo sent an unreadable amount: {value!r}") from None
    if not amount.is_finite():
        raise ProviderUnavailable(f"Linxo sent an unreadable amount: {value!r}")
    return amount


class LinxoProvider(HttpProvider):
    """Linxo Connect client for one Odoo company (one Linxo user).

    :param config: ``credentials`` needs ``client_id`` and ``client_secret``; see the module
        docstring for ``options``.
    :param clock: "now" as an aware datetime (token and consent expiry, today's date).
    :param sleep: how to wait between retries (tests inject a recorder).
    :param token_store: keeps the Linxo user's credentials and tokens between calls.
    :param session: a :class:`requests.Session` to reuse.
    """

    kind = "linxo"
    vendor = "Linxo"

    def _read_options(self, config: ProviderConfig, options: Mapping[str, Any]) -> str:
        self.api_version = str(options.get("api_version", "v3"))
        if self.api_version not in ("v3", "v2.1"):
            raise InvalidRequest(f"Unsupported Linxo API version: {self.api_version}")
        hosts = DEFAULT_HOSTS.get(str(options.get("environment", "production")))
        if hosts is None:
            raise InvalidRequest("The Linxo environment must be 'production' or 'sandbox'.")
        self.api_url = (config.base_url or hosts["api"]).rstrip("/")
        self.auth_url = str(options.get("auth_url") or hosts["auth"]).rstrip("/")
        self.widget_url = str(options.get("widget_url") or hosts["widget"]).rstrip("/")
        self.page_size = page_size_option(options, "Linxo", MAX_PAGE_SIZE)
        self.max_pages = int(options.get("max_pages", 2000))
        self.overlap_days = int(options.get("overlap_days", 10))
        self.history_days = int(options.get("history_days", 90))
        self.user_email_domain = str(options.get("user_email_domain", "bank-sync.invalid"))
        self._user: dict[str, Any] | None = None
        return self.api_url

    def __repr__(self) -> str:
        return f"LinxoProvider(user_ref={self.config.user_ref!r}, api={self.api_url!r})"

    # ---- token store keys --------------------------------------------------------------------

    @property
    def _user_key(self) -> str:
        return f"linxo:{self.client_id}:user:{self.config.user_ref}"

    @property
    def _user_token_key(self) -> str:
        return f"{self._user_key}:token"

    @property
    def _client_token_key(self) -> str:
        return f"linxo:{self.client_id}:client-token"

    # ---- OAuth2 ------------------------------------------------------------------------------

    def _request_token(self, body: dict[str, str]) -> Mapping[str, Any]:
        """``POST {auth}/token``; JSON body as in the algoan connector (🟡)."""
        payload = {
            "provider": "linxoConnect",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            **body,
        }
        try:
            # Asking for a token twice is harmless, so a lost answer may be retried.
            response = self._http.post(f"{self.auth_url}/token", json=payload, idempotent=True)
        except (AuthenticationError, AccessDenied, InvalidRequest) as exc:
            if exc.code == "invalid_client":
                message = "Linxo refused the application's client id or client secret."
            elif body.get("grant_type") == "password" and (
                exc.code == "invalid_grant" or not isinstance(exc, InvalidRequest)
            ):
                # RFC 6749 says 400 invalid_grant; Linxo's own status is unpublished (401 and
                # 403 are seen in integrations), so all three mean the same here.
                message = "Linxo refused the stored password of this company's Linxo user."
            else:
                raise
            raise AuthenticationError(
                message, status=exc.status, code=exc.code, request_id=exc.request_id
            ) from None
        data = response.json_object()
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable(
                "Linxo's token answer has no access_token.", request_id=response.request_id
            )
        self._http.redactor.add(token)
        lifetime = int(data.get("expires_in") or 3600)
        # Renew a little early so a token never expires between check and use.
        expires_at = self.clock() + timedelta(seconds=max(0, lifetime - 30))
        return {"access_token": token, "expires_at": expires_at.isoformat()}

    def _cached_token(self, key: str) -> str | None:
        cached = self.token_store.get(key)
        if not cached or not cached.get("access_token"):
            return None
        try:
            expires_at = datetime.fromisoformat(str(cached["expires_at"]))
        except (KeyError, ValueError):
            return None
        if expires_at <= self.clock():
            return None
        token = str(cached["access_token"])
        self._http.redactor.add(token)
        return token

    def _client_token(self, *, renew: bool = False) -> str:
        """The application token: client credentials, scope ``users_create``
        (docs/aggregators.md §2.2 ✅)."""
        token = None if renew else self._cached_token(self._client_token_key)
        if token is None:
            data = self._request_token(
                {"grant_type": "client_credentials", "scope": "users_create"}
            )
            self.token_store.set(self._client_token_key, data)
            token = str(data["access_token"])
        return token

    def _user_token(self, *, renew: bool = False) -> str:
        """The Linxo user's token (password grant, docs/aggregators.md §2.2 🟡), creating the user
        if needed."""
        token = None if renew else self._cached_token(self._user_token_key)
        if token is None:
            user = self._ensure_user()
            data = self._request_token(
                {
                    "grant_type": "password",
                    "username": user["email"],
                    "password": user["password"],
                    "scope": USER_SCOPES,
                }
            )
            self.token_store.set(self._user_token_key, data)
            token = str(data["access_token"])
        return token

    # ---- the Linxo user ----------------------------------------------------------------------

    def _stored_user(self) -> dict[str, Any] | None:
        record = self.token_store.get(self._user_key)
        if not record or not record.get("email") or not record.get("password"):
            return None
        self._http.redactor.add(str(record["password"]))
        return dict(record)

    def _ensure_user(self) -> dict[str, Any]:
        """The stored Linxo user of this company, created at Linxo the first time.

        The generated password is stored *before* ``POST /users`` so that a crash between the
        two never leaves a Linxo user whose password nobody knows; the next attempt finds the
        record, gets 409 (user exists) and carries on with it.
        """
        if self._user is not None:
            return self._user  # complete records never change: no store read per call
        user = self._stored_user()
        if user is None:
            slug = re.sub(r"[^a-z0-9]+", "-", self.config.user_ref.lower()).strip("-")[:40]
            user = {
                # A random part: two databases may share a user_ref ("1") and one client.
                "email": (
                    f"odoo-{slug or 'company'}-{secrets.token_hex(5)}@{self.user_email_domain}"
                ),
                "password": secrets.token_urlsafe(24),
                "user_id": None,
            }
            self._http.redactor.add(user["password"])
            self.token_store.set(self._user_key, user)
        if not user.get("user_id"):
            user["user_id"] = self._create_remote_user(user)
            self.token_store.set(self._user_key, user)
        self._user = user
        return user

    def _create_remote_user(self, user: Mapping[str, Any]) -> str:
        body = {"email": user["email"], "password": user["password"]}
        try:
            response = self._with_client_token(
                lambda token: self._http.post(
                    "/users", json=body, headers=self._bearer(token), expected=(200, 201)
                )
            )
        except InvalidRequest as exc:
            if exc.status != 409:
                raise
            # Created by an earlier attempt whose answer was lost: read its id as that user.
            data = self._request_token(
                {
                    "grant_type": "password",
                    "username": str(user["email"]),
                    "password": str(user["password"]),
                    "scope": USER_SCOPES,
                }
            )
            self.token_store.set(self._user_token_key, data)
            me = self._http.get("/users/me", headers=self._bearer(str(data["access_token"])))
            return str(me.json_object()["id"])
        # 201 with the new user's URL in Location; the id is its last segment (🟡).
        location = response.headers.get("Location", "")
        user_id = location.rstrip("/").rpartition("/")[2]
        if not user_id and isinstance(response.body, Mapping):
            user_id = str(response.body.get("id") or "")
        if not user_id:
            raise ProviderUnavailable(
                "Linxo created the user but did not say its id.", request_id=response.request_id
            )
        return user_id

    @property
    def user_id(self) -> str:
        """The Linxo id of this company's user (created at Linxo on first use)."""
        return str(self._ensure_user()["user_id"])

    # ---- calls -------------------------------------------------------------------------------

    @staticmethod
    def _bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def _with_client_token(self, call: Callable[[str], HttpResponse]) -> HttpResponse:
        try:
            return call(self._client_token())
        except AuthenticationError:
            # The cached token was revoked or expired early: renew once, never loop.
            return call(self._client_token(renew=True))

    def _client_get(self, path: str, params: Mapping[str, Any]) -> HttpResponse:
        """A GET with the application token (renewed once on a 401)."""
        return self._with_client_token(
            lambda token: self._http.get(path, params=params, headers=self._bearer(token))
        )

    def _api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        expected: tuple[int, ...] | None = None,
    ) -> HttpResponse:
        """One API call with the user's token, renewed once on a 401."""

        def call(token: str) -> HttpResponse:
            return self._http.request(
                method, path, params=params, headers=self._bearer(token), expected=expected
            )

        try:
            return call(self._user_token())
        except AuthenticationError:
            # Revoked or expired before its announced end: renew once, never loop.
            return call(self._user_token(renew=True))

    def _user_params(self, **params: Any) -> dict[str, Any]:
        """v3 requires ``user_id`` on list calls (assoconnect v3 client, 🟡); v2.1 did not."""
        clean = {k: v for k, v in params.items() if v is not None}
        if self.api_version == "v3":
            clean["user_id"] = self.user_id
        return clean

    def _items(self, response: HttpResponse, key: str) -> list[Mapping[str, Any]]:
        """Items of a list answer: v3 wraps them (``{"accounts": [...]}``), v2.1 did not."""
        body = response.body
        if isinstance(body, Mapping):
            body = body.get(key)
        if not isinstance(body, list) or not all(isinstance(i, Mapping) for i in body):
            raise ProviderUnavailable(
                f"Linxo sent an unexpected answer: a list of {key} was expected.",
                status=response.status,
                request_id=response.request_id,
            )
        return body

    # ---- institutions ------------------------------------------------------------------------

    def list_institutions(
        self, *, search: str = "", country: str | None = None, limit: int = 50
    ) -> list[Institution]:
        """Banks from ``GET /providers`` (🟡), in Linxo's order, filtered by name and
        country. ``q`` and ``country`` query parameters are ❓: the filter is applied here too,
        so a server ignoring them still gives the right list."""
        filters: dict[str, Any] = {"limit": MAX_PAGE_SIZE}
        if search:
            filters["q"] = search
        if country:
            filters["country"] = country.upper()
        items: list[Mapping[str, Any]] = []
        for page in range(1, self.max_pages + 1):
            params = {**filters, "page": page}
            response = self._client_get("/providers", params)
            batch = self._items(response, "providers")
            items.extend(batch)
            if len(batch) < MAX_PAGE_SIZE:
                break
        else:
            raise ProviderUnavailable(
                f"Linxo kept sending bank pages after {self.max_pages} pages; stopped."
            )
        wanted = fold(search.strip())
        result: list[Institution] = []
        for rank, item in enumerate(items):
            name = str(item.get("name") or "")
            item_country = str(item.get("country") or item.get("country_code") or "").upper()
            if wanted and wanted not in fold(name):
                continue
            if country and item_country and item_country != country.upper():
                continue
            remote_id = str(item.get("id") or item.get("provider_id") or "")
            result.append(
                Institution(
                    remote_id=remote_id,
                    name=name,
                    country=item_country or "FR",
                    # v2.1 fixtures say logo_url; v3 connections renamed it provider_logo_url.
                    logo_url=item.get("logo_url") or item.get("provider_logo_url"),
                    group_name=item.get("group"),
                    # Linxo gives no popularity figure: its own order stands for it.
                    popularity=len(items) - rank,
                )
            )
        return result[:limit]

    # ---- widget ------------------------------------------------------------------------------

    def _widget_session(self) -> str:
        """``POST {widget}/widget_session`` with the user token (form fields, as in Linxo's
        docs example ✅); answers ``{"session_id": ...}`` ✅."""

        def post(token: str) -> HttpResponse:
            form = {
                "client_id": self.client_id,
                "client_secret": self._client_secret,
                "access_token": token,
            }
            return self._http.post(f"{self.widget_url}/widget_session", data=form, idempotent=True)

        try:
            response = post(self._user_token())
        except AuthenticationError:
            # The cached user token was refused: renew it once, never loop.
            response = post(self._user_token(renew=True))
        session_id = response.json_object().get("session_id")
        if not session_id:
            raise ProviderUnavailable(
                "Linxo did not open a widget session.", request_id=response.request_id
            )
        return str(session_id)

    def _widget_url(
        self, page: str, session_id: str, callback_url: str, state: str, **extra: str | None
    ) -> str:
        # The widget's return parameters are not published (❓): our state travels inside the
        # redirect URI itself, which any OAuth-style redirect keeps.
        redirect_uri = with_query(callback_url, {"state": state})
        params = {"session_id": session_id, "redirect_uri": redirect_uri, **extra}
        return with_query(f"{self.widget_url}/widget/{page}", params)

    def start_connect(
        self,
        *,
        callback_url: str,
        state: str,
        institution_id: str | None = None,
        locale: str = "en",
        user_email: str | None = None,
    ) -> ConnectSession:
        """The widget's ``add_connection`` page ✅ for this company's Linxo user.

        ``provider_id`` (preselected bank) is ❓; ``user_email`` is unused: Linxo users are
        technical users owned by the application.
        """
        session_id = self._widget_session()
        url = self._widget_url(
            "add_connection",
            session_id,
            callback_url,
            state,
            locale=locale[:2],
            provider_id=institution_id,
        )
        return ConnectSession(url=url, session_id=session_id)

    def start_reconnect(
        self, connection_id: str, *, callback_url: str, state: str, locale: str = "en"
    ) -> ConnectSession:
        """The widget's ``edit_credentials`` page ✅ on an existing connection (new password,
        SCA renewal); the ``connection_id`` parameter name is ❓."""
        session_id = self._widget_session()
        url = self._widget_url(
            "edit_credentials",
            session_id,
            callback_url,
            state,
            connection_id=connection_id,
            locale=locale[:2],
        )
        return ConnectSession(url=url, session_id=session_id)

    def complete_connect(self, params: Mapping[str, str]) -> ConnectResult:
        """Read the widget's return: ``connection_id`` (🟡, the algoan connector expects it),
        ``status`` and OAuth-style ``error``/``error_description`` (❓). A hint only: callers
        confirm with :meth:`get_connection`."""
        error = params.get("error") or None
        status = params.get("status") or None
        connection_id = params.get("connection_id") or None
        success = (
            error is None
            and connection_id is not None
            and status in (None, "SUCCESS", "PARTIAL_SUCCESS", "RUNNING")
        )
        message = params.get("error_description") or None
        if message is None and status is not None:
            message = _message(status if error is None else error, "en")
        return ConnectResult(
            state=params.get("state", ""),
            success=success,
            connection_id=connection_id,
            step=error or status,
            message=message,
        )

    # ---- connections ---------------------------------------------------------------------------

    def _to_connection(self, raw: Mapping[str, Any], locale: str) -> Connection:
        status = str(raw.get("status") or "NONE")
        channels = [c for c in raw.get("channels") or [] if isinstance(c, Mapping)]
        # The REDIRECT (PSD2) channel's ``expires`` (unix s, v2.1 fixture 🟡) is the consent end.
        redirect = next((c for c in channels if c.get("mode") == "REDIRECT"), None)
        consent_end = _utc(redirect.get("expires")) if redirect else None
        successes = [_utc(c.get("last_success_date")) for c in channels]
        last_success = max((d for d in successes if d is not None), default=None)
        channel_code = next(
            (
                str(c.get("status"))
                for c in channels
                if c.get("status") and str(c.get("status")) not in _QUIET_CHANNEL_STATUSES
            ),
            None,
        )
        reason: ActionReason | None = None
        code = status
        if status == "CLOSED":
            state = ConnectionState.DISCONNECTED
        elif status in ("RUNNING", "NONE"):
            state = ConnectionState.SYNCING
        elif consent_end is not None and consent_end <= self.clock():
            state, reason, code = (
                ConnectionState.ACTION_NEEDED,
                ActionReason.CONSENT_EXPIRED,
                "CONSENT_EXPIRED",
            )
        elif status == "FAILED":
            reason = _CHANNEL_ACTIONS.get(channel_code or "")
            if reason is None:
                # Bank down, Linxo-side error...: temporary until proven otherwise.
                state = ConnectionState.TEMPORARY_FAILURE
            else:
                state, code = ConnectionState.ACTION_NEEDED, str(channel_code)
        elif status in ("SUCCESS", "PARTIAL_SUCCESS"):
            state = ConnectionState.OK
        else:
            state, code = ConnectionState.TEMPORARY_FAILURE, "UNKNOWN"
        vendor_status = f"{status}/{channel_code}" if channel_code else status
        return Connection(
            remote_id=str(raw.get("id")),
            institution_id=str(raw["provider_id"]) if raw.get("provider_id") else None,
            institution_name=raw.get("name"),
            state=state,
            reason=reason,
            message=_message(code, locale),
            vendor_status=vendor_status,
            consent_expires_at=consent_end,
            last_refreshed_at=last_success,
            # v3 ``provider_logo_url``; v2.1 ``logo_url`` (docs/aggregators.md §2.9).
            logo_url=raw.get("provider_logo_url") or raw.get("logo_url"),
        )

    def get_connection(self, connection_id: str, *, locale: str = "en") -> Connection:
        """``GET /connections/{id}`` (🟡) mapped onto our states."""
        response = self._api("GET", f"/connections/{connection_id}")
        return self._to_connection(response.json_object(), locale)

    def list_connections(self, *, locale: str = "en") -> list[Connection]:
        """``GET /connections`` (v3: ``?user_id=``, wrapped list, 🟡)."""
        response = self._api("GET", "/connections", params=self._user_params())
        return [self._to_connection(c, locale) for c in self._items(response, "connections")]

    def refresh_connection(self, connection_id: str) -> Connection:
        """Linxo syncs connections by itself (``auto_sync``) and publishes no endpoint to
        trigger one (docs/aggregators.md §2.4 ❓), so this reads the connection's current state."""
        return self.get_connection(connection_id)

    def delete_connection(self, connection_id: str) -> None:
        """``DELETE /connections/{id}`` (❓ path not seen in public code); gone is fine."""
        try:
            self._api("DELETE", f"/connections/{connection_id}", expected=(200, 202, 204))
        except NotFound:
            _logger.info("Linxo connection %s was already gone", connection_id)

    def delete_user(self) -> None:
        """``DELETE /users/{id}`` (🟡) with the application token, then forget the user's
        password and tokens. A user already gone at Linxo is not an error."""
        user = self._stored_user()
        if user is not None and user.get("user_id"):
            user_id = str(user["user_id"])
            try:
                self._with_client_token(
                    lambda token: self._http.delete(
                        f"/users/{user_id}", headers=self._bearer(token), expected=(200, 204)
                    )
                )
            except NotFound:
                _logger.info("Linxo user of %s was already gone", self.config.user_ref)
        self.token_store.set(self._user_token_key, {})
        self.token_store.set(self._user_key, {})
        self._user = None

    # ---- accounts ----------------------------------------------------------------------------

    def _to_account(self, raw: Mapping[str, Any]) -> Account:
        balance_raw = raw.get("balance")
        currency = raw.get("currency")
        balance: Decimal | None = None
        if isinstance(balance_raw, Mapping):
            # v3: {"amount": {"amount": "2441.46", "currency": "EUR"}} (🟡)
            inner = balance_raw.get("amount")
            if isinstance(inner, Mapping):
                balance = _decimal(inner.get("amount"))
                currency = currency or inner.get("currency")
        elif balance_raw is not None:
            balance = _decimal(balance_raw)  # v2.1: a JSON number
        number = str(raw.get("account_number") or "")
        account = Account(
            remote_id=str(raw.get("id")),
            connection_id=str(raw.get("connection_id") or ""),
            label=str(raw.get("name") or number or raw.get("id")),
            currency=str(currency or "EUR").upper(),
            type=ACCOUNT_TYPES.get(str(raw.get("type")), AccountType.OTHER),
            masked_number=f"•••• {number[-4:]}" if len(number) >= 4 else (number or None),
            iban=(str(raw["iban"]).replace(" ", "") if raw.get("iban") else None),
            balance=balance,
            balance_date=_utc(raw.get("balance_date")),
            active=str(raw.get("status") or "ACTIVE") in ACTIVE_ACCOUNT_STATUSES,
            raw=dict(raw),
        )
        self._account_currencies[account.remote_id] = account.currency
        return account

    def list_accounts(self, connection_id: str | None = None) -> list[Account]:
        """``GET /accounts`` (filters ``connection_id``, ``page``, ``limit``, 🟡), every page."""
        accounts: list[Account] = []
        for page in range(1, self.max_pages + 1):
            params = self._user_params(connection_id=connection_id, page=page, limit=self.page_size)
            items = self._items(self._api("GET", "/accounts", params=params), "accounts")
            accounts.extend(self._to_account(a) for a in items)
            if len(items) < self.page_size:
                return accounts
        raise ProviderUnavailable(
            f"Linxo kept sending account pages after {self.max_pages} pages; stopped."
        )

    # ---- transactions ------------------------------------------------------------------------

    def _today(self) -> date:
        return self.clock().astimezone(PARIS).date()

    def _window_params(self, start: date, end: date) -> dict[str, Any]:
        """Date filters: v3 ISO-8601 with the Paris offset, v2.1 unix seconds
        (docs/aggregators.md §2.6 🟡).
        Both bounds are midnight Paris, and Linxo's bound is inclusive (a line dated
        ``end`` is stamped exactly at that midnight), as assoconnect's v3 client relies on."""
        start_at = datetime.combine(start, datetime.min.time(), tzinfo=PARIS)
        end_at = datetime.combine(end, datetime.min.time(), tzinfo=PARIS)
        if self.api_version == "v3":
            return {"start_date": start_at.isoformat(), "end_date": end_at.isoformat()}
        return {"start_date": int(start_at.timestamp()), "end_date": int(end_at.timestamp())}

    def _transactions_page(
        self, account_id: str, start: date, end: date, page: int
    ) -> list[Mapping[str, Any]]:
        # v3 ``account_ids`` (one value; PHP-style arrays are not understood,
        # docs/aggregators.md §2.6), v2.1 ``account_id``.
        account_param = "account_ids" if self.api_version == "v3" else "account_id"
        params = self._user_params(
            **{account_param: account_id},
            **self._window_params(start, end),
            page=page,
            limit=self.page_size,
        )
        return self._items(self._api("GET", "/transactions", params=params), "transactions")

    def _currency_of(self, account_id: str) -> str:
        if account_id not in self._account_currencies:
            self._to_account(self._api("GET", f"/accounts/{account_id}").json_object())
        return self._account_currencies[account_id]

    def _to_transaction(self, raw: Mapping[str, Any], account_id: str) -> Transaction | None:
        """One operation, or None for a forecast line (``origin`` UPCOMING/RECURRING/SCHEDULED,
        docs/aggregators.md §2.6 🟡) that is not a bank operation."""
        if str(raw.get("origin") or "") in FORECAST_ORIGINS:
            return None
        amount_raw = raw.get("amount")
        if isinstance(amount_raw, Mapping):
            # v3: {"amount": "-79.99", "currency": "EUR"}, a string (🟡)
            amount = _decimal(amount_raw.get("amount"))
            currency = amount_raw.get("currency") or raw.get("currency")
        else:
            amount = _decimal(amount_raw)  # v2.1: a JSON number, negative = debit
            currency = raw.get("currency")
        enrichments = raw.get("enrichments")
        enrichments = enrichments if isinstance(enrichments, Mapping) else {}
        booking = None
        if enrichments.get("date"):
            # v3 enrichments.date, ISO with the Paris offset (🟡): assoconnect's v3 date.
            try:
                booking = datetime.fromisoformat(str(enrichments["date"])).astimezone(PARIS)
            except ValueError:
                raise ProviderUnavailable(
                    f"Linxo sent an unreadable date: {enrichments['date']!r}"
                ) from None
            booking_date: date | None = booking.date()
        else:
            # v2.1: ``booking_date`` falling back to ``date``, unix seconds, Paris (🟡).
            booking_date = paris_date(raw.get("booking_date")) or paris_date(raw.get("date"))
        if booking_date is None:
            raise ProviderUnavailable(f"Linxo sent operation {raw.get('id')} without a date.")
        notes = str(raw.get("notes") or "")
        # v3 enrichments.display_label is *the* label (assoconnect); v2.1 ``label``.
        label = (
            enrichments.get("display_label")
            or raw.get("label")
            or notes.split("\n", 1)[0]
            or str(raw.get("type") or "")
        )
        status = str(raw.get("status") or "BOOKED")
        return Transaction(
            remote_id=str(raw.get("id")),
            account_id=str(raw.get("account_id") or account_id),
            booking_date=booking_date,
            amount=amount,
            currency=str(currency or self._currency_of(account_id)).upper(),
            label=str(label),
            value_date=paris_date(raw.get("value_date")),
            transaction_date=paris_date(raw.get("transaction_date")),
            # ``check_number`` (v2.1 fixture 🟡) is the one bank reference Linxo exposes.
            bank_reference=str(raw["check_number"]) if raw.get("check_number") else None,
            operation_type=str(raw["type"]) if raw.get("type") else None,
            # The bank's notes carry the whole wording when the label is Linxo's summary.
            remittance=notes if notes and notes != label else None,
            status=TransactionStatus.PENDING if status == "PENDING" else TransactionStatus.BOOKED,
            deleted=status in DELETED_STATUSES,
            # ``import_date`` (unix, 🟡) is when Linxo imported the line: the closest thing
            # to an update stamp that Linxo offers.
            updated_at=_utc(raw.get("import_date")),
            raw=dict(raw),
        )

    def _window_cursor(self, start: date, end: date | None, page: int) -> Cursor:
        return Cursor(
            kind=CURSOR_KIND,
            value={
                "date_from": start.isoformat(),
                "date_to": end.isoformat() if end else None,
                "page": page,
            },
        )

    def iter_transactions(
        self,
        account_id: str,
        *,
        cursor: Cursor | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Iterator[TransactionPage]:
        """Operations of a Paris date window, ``page``/``limit`` paging
        (docs/aggregators.md §2.6 🟡).

        Pages are read until one is empty or shorter than ``limit``. Each page's cursor is
        the same window and the next page number, so a crash resumes where it stopped (one
        page earlier, in case lines vanished from the pages already read). The
        final cursor is open-ended and starts ``overlap_days`` before the window's end: Linxo
        has no change feed, so the next run re-reads those days to catch late-booked lines,
        date shifts and status changes (docs/aggregators.md §4). Forecast lines are skipped;
        CANCELLED/REJECTED/EXPIRED come back flagged ``deleted``.
        """
        today = self._today()
        page = 1
        if cursor is not None:
            if cursor.kind != CURSOR_KIND:
                raise InvalidRequest(f"This cursor does not belong to Linxo ({cursor.kind}).")
            try:
                start = date.fromisoformat(str(cursor.value["date_from"]))
                stored_end = cursor.value.get("date_to")
                end = date.fromisoformat(str(stored_end)) if stored_end else date_to
                page = int(cursor.value.get("page", 1))
            except (KeyError, ValueError, TypeError):
                raise InvalidRequest("The stored Linxo cursor is unreadable.") from None
        else:
            start = date_from or today - timedelta(days=self.history_days)
            end = date_to
        window_end = min(end, today) if end else today
        start = min(start, window_end)
        if page < 1:
            raise InvalidRequest("The stored Linxo cursor has an invalid page number.")
        if page > 1:
            # Page numbers are positions, not ids: an operation removed from an earlier page
            # since the cursor was stored shifts the rest up by one, and resuming at the exact
            # page would skip it. Reading one page again costs little (lines are deduplicated
            # by id downstream) and covers up to a page of such removals.
            page -= 1
        previous_ids: tuple[str, ...] | None = None
        for _ in range(self.max_pages):
            items = self._transactions_page(account_id, start, window_end, page)
            ids = tuple(str(item.get("id")) for item in items)
            if ids and ids == previous_ids:
                # Page-based paging has no cursor to repeat; the same page twice is how a
                # looping server shows, and following it would never end.
                raise ProviderUnavailable(
                    f"Linxo returned the same page of operations twice (page {page}); stopped."
                )
            previous_ids = ids
            parsed = (self._to_transaction(item, account_id) for item in items)
            transactions = tuple(t for t in parsed if t is not None)
            if len(items) < self.page_size:
                overlap_start = max(start, window_end - timedelta(days=self.overlap_days))
                yield TransactionPage(
                    transactions, self._window_cursor(overlap_start, None, 1), last=True
                )
                return
            page += 1
            yield TransactionPage(transactions, self._window_cursor(start, window_end, page))
        raise ProviderUnavailable(
            f"Linxo kept sending pages of operations after {self.max_pages} pages; stopped. "
            "The next run resumes from the last stored page."
        )

    # ---- events ------------------------------------------------------------------------------

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str], secrets: list[str]
    ) -> list[WebhookEvent]:
        """Parse a Linxo webhook delivery (one event object, or a list of them).

        Linxo documents no signature (docs/aggregators.md §2.7 ❓): deliveries are trusted through
        HTTPS, optional mutual TLS and IP filtering set up outside this code, so ``headers``
        and ``secrets`` are not used, and callers must re-read the connection from the API
        instead of trusting the body. Known events: ``event_type`` ``UPDATED`` on
        ``resource_type`` ``CONNECTIONS`` ✅ → ``connection.updated``, or
        ``connection.new_transactions`` when ``new_transactions`` is true ✅. ``CREATED`` and
        ``DELETED`` are announced by Linxo for later and mapped the same way. Any other type
        is ignored (not returned).
        """
        try:
            payload = json.loads(body)
        except ValueError:
            raise InvalidRequest("The Linxo webhook body is not JSON.") from None
        events = payload if isinstance(payload, list) else [payload]
        result: list[WebhookEvent] = []
        for event in events:
            if not isinstance(event, Mapping):
                continue
            resource_type = str(event.get("resource_type") or "")
            event_type = str(event.get("event_type") or "")
            if resource_type != "CONNECTIONS" or event_type not in (
                "UPDATED",
                "CREATED",
                "DELETED",
            ):
                _logger.info("Ignoring Linxo event type %s/%s", resource_type, event_type)
                continue
            name = event_type.lower()
            if event_type == "UPDATED" and event.get("new_transactions") is True:
                name = "new_transactions"
            # ``resource`` is the connection's URI or id (❓ form): keep the last segment.
            resource = str(event.get("resource") or "")
            connection_id = resource.rstrip("/").rpartition("/")[2] or None
            result.append(
                WebhookEvent(
                    event_id=str(event.get("id") or ""),
                    type=f"connection.{name}",
                    connection_id=connection_id,
                    occurred_at=_utc(event.get("creation_date")),
                    raw=dict(event),
                )
            )
        return result


__all__ = ["CURSOR_KIND", "LinxoProvider", "paris_date"]
