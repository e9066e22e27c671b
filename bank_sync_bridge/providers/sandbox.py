"""The built-in demo aggregator: French banks, two years of business operations, scripted incidents.

The sandbox runs in-process with no network and no contract. It is *stateless*: everything about
a connection is derived from its remote id, the seed (``config.options["seed"]``, default 0) and
the clock, so any number of processes (Odoo workers) agree on it. A connection id reads::

    sbx-<bank id>-<scenario>-<connected at, YYYYMMDDHHMM UTC>-<nonce><owner check>

and an account id is ``<connection id>-<checking|savings|card|loan|usd>``. The owner check ties
the id to ``config.user_ref``: another user's id is answered with :class:`NotFound`.

Each connection has a current account (French IBAN), a savings account, a deferred-debit card
(negative balance: money owed) and a loan (negative balance), with two years of operations
before the connection and new ones every day after it. A balance is always the account's opening
balance (``Account.raw["opening_balance"]``, at ``raw["history_start"]``) plus its booked, not
deleted operations.

Hosted page and scenarios
-------------------------
:meth:`SandboxProvider.start_connect` returns the URL of a hosted page (``options["hosted_url"]``,
served by the application with :meth:`~SandboxProvider.render_hosted_page` and
:meth:`~SandboxProvider.submit_hosted_page`). Its query is signed with an HMAC keyed by
``credentials["session_key"]``, so nobody can turn it into a redirect to a forged callback.
Give every installation its own key (the Odoo addon derives one from its database secret):
without one, each process draws a random key of its own, with a warning, so that links work
only in the process that made them and no key is ever public. The page posts back to itself
(or to ``form_action``) the signed fields as hidden inputs plus ``login``, ``password``,
``action`` (``connect`` or ``cancel``) and ``bank`` (only when the link named no bank). The
callback carries ``state``, ``success``, ``connection_id`` or ``step``/``error``/``message``,
and its own signature ``sandbox_sig`` that :meth:`~SandboxProvider.complete_connect` checks;
the application's own query parameters on the callback URL are kept.

The LOGIN typed on the page picks the scenario (the password is not checked; an unknown login
behaves like ``success``):

``success``
    A healthy connection; consent runs 180 days from the connection (or the last reconnection).
``sca_required``
    The bank wants strong authentication: the connection is ACTION_NEEDED/SCA and listing
    operations raises :class:`ActionRequired` until the user reconnects.
``wrong_password``
    The bank refuses the credentials: the callback reports ``success=false`` with
    ``step=bank_creds_form``, ``error=wrong_password`` and a message; no connection is created.
``password_changed``
    Works at first; one day after the connection the bank refuses the stored credentials
    (ACTION_NEEDED/CREDENTIALS) until the user reconnects.
``consent_expiring_<N>``
    Consent expires N days after the connection; from then on the connection is
    ACTION_NEEDED/CONSENT_EXPIRED and listing operations raises :class:`ActionRequired`.
``bank_down``
    The bank is unavailable for two days after the connection: TEMPORARY_FAILURE, and listing
    operations raises :class:`ProviderUnavailable`; it then recovers on its own.
``pending_booked_same_id``
    A card payment pending at connection time (``CB AMAZON MKTP``) is booked two days later
    under the same id, with a new booking date.
``pending_booked_new_id``
    A pending card payment (``CB TOTALENERGIES``) disappears two days later (reported with
    ``deleted=True``) and a booked twin with a new id takes its place.
``deleted_operation``
    An operation booked the day before the connection is deleted by the bank one day later.
``label_change``
    An operation booked the day before the connection is renamed by the bank one day later.
``late_backdated``
    A cheque remittance dated five days before the connection appears only one day after it.
``data_incidents``
    All five data incidents above at once.
``multi_currency``
    Not an incident: a fifth account in US dollars under the current account's IBAN, whose
    monthly conversions land on the euro account with their foreign amount.

Every incident's change becomes visible at 06:00 UTC on its day, like the bank's overnight
batch. Ordinary operations move too: card payments are pending when made and booked later under
the same id.

Reconnection and connection lists need memory that the id cannot carry. When the caller passes a
``token_store`` (the addon stores it in its database), the sandbox records there the connections
created, reconnections (which clear SCA/credential incidents and renew consent) and deletions;
without one, :meth:`~SandboxProvider.list_connections` returns ``[]`` and a reconnection changes
nothing.

Transactions cursor
-------------------
Pages are sorted; each page's ``Cursor(kind="sandbox")`` resumes right after it, over the same
snapshot. The last page's cursor, given to a later run, returns every operation that appeared,
changed, was booked or was deleted since that snapshot (like an ``updated_at`` cursor), plus,
when that run stopped at an end date before today, everything booked after that date.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import hmac
import html
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

from ..errors import (
    ActionRequired,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    SignatureVerificationError,
)
from ..model import (
    Account,
    ActionReason,
    Connection,
    ConnectionState,
    ConnectResult,
    ConnectSession,
    Cursor,
    Institution,
    Transaction,
    TransactionPage,
    WebhookEvent,
)
from ._common import utc_now, with_query
from .base import ProviderConfig, TokenStore
from .sandbox_data import (
    BANKS,
    BOOKING_HOUR,
    IncidentSpec,
    SandboxAccountData,
    SandboxBank,
    bank_by_id,
    booked_total,
    fold,
    generate_accounts,
    visible_operations,
)

_logger = logging.getLogger(__name__)

#: Where the application serves the hosted page unless ``options["hosted_url"]`` says otherwise.
DEFAULT_HOSTED_URL = "http://127.0.0.1/bank_sync/sandbox/connect"
#: Derives a connection's nonce from the page it was made on, so that the same page submitted
#: twice gives the same connection, whatever the signing key. It signs nothing and is not a
#: secret: the nonce only tells a user's connections apart (the id's owner check binds it).
#: Its value keeps the connection ids that earlier versions derived.
_NONCE_DERIVATION_KEY = b"bank-sync-sandbox-demo-key-not-secret"
#: How long a hosted-page link stays valid.
SESSION_TTL = timedelta(minutes=30)
CONSENT_DAYS = 180
BANK_DOWN_FOR = timedelta(days=2)
PASSWORD_CHANGED_AFTER = timedelta(days=1)
DEFAULT_PAGE_SIZE = 200
CURSOR_KIND = "sandbox"

#: Demo logins and what they do, shown on the hosted page (English, French).
DEMO_LOGINS: tuple[tuple[str, str, str], ...] = (
    ("success", "Everything works", "Tout fonctionne"),
    ("sca_required", "Strong authentication required", "Authentification forte requise"),
    ("wrong_password", "Wrong password", "Mot de passe erroné"),
    ("password_changed", "Password changed after one day", "Mot de passe changé après un jour"),
    ("consent_expiring_3", "Consent expires in 3 days", "Consentement expirant dans 3 jours"),
    ("bank_down", "Bank unavailable for two days", "Banque indisponible deux jours"),
    (
        "pending_booked_same_id",
        "Pending payment booked later, same id",
        "Paiement en attente comptabilisé plus tard, même identifiant",
    ),
    (
        "pending_booked_new_id",
        "Pending payment booked later, new id",
        "Paiement en attente comptabilisé plus tard, nouvel identifiant",
    ),
    ("deleted_operation", "The bank deletes an operation", "La banque supprime une opération"),
    ("label_change", "The bank renames an operation", "La banque renomme une opération"),
    (
        "late_backdated",
        "A back-dated operation appears late",
        "Une opération antidatée apparaît en retard",
    ),
    ("data_incidents", "All data incidents at once", "Tous les incidents de données"),
    (
        "multi_currency",
        "A US dollar account under the same IBAN",
        "Un compte en dollars sous le même IBAN",
    ),
)
_FIXED_SCENARIOS = frozenset(login for login, _en, _fr in DEMO_LOGINS) - {"consent_expiring_3"}
_CONSENT_RE = re.compile(r"^consent_expiring_(\d{1,4})$")
_CONNECTION_RE = re.compile(
    r"^sbx-(?P<bank>[A-Z0-9]{8,11})-(?P<scenario>[a-z0-9_]+)-(?P<at>\d{12})"
    r"-(?P<nonce>[0-9a-f]{6})(?P<check>[0-9a-f]{6})$"
)
#: Account id suffixes (``<connection id>-<suffix>``); ``usd`` only with ``multi_currency``.
_ACCOUNT_SUFFIXES = frozenset({"checking", "savings", "card", "loan", "usd"})
_SIGNED_PAGE_FIELDS = (
    "mode",
    "callback_url",
    "state",
    "locale",
    "user",
    "exp",
    "institution_id",
    "connection_id",
)
_SIGNED_CALLBACK_FIELDS = ("state", "success", "connection_id", "step", "error", "message")
_CALLBACK_SIGNATURE = "sandbox_sig"

_MESSAGES: dict[str, tuple[str, str]] = {
    "ok": (
        "Connected. Bank consent valid until {date}.",
        "Connectée. Consentement bancaire valable jusqu'au {date}.",
    ),
    "sca_required": (
        (
            "Your bank asks you to confirm your identity (strong authentication). "
            "Reconnect to resume the synchronisation."
        ),
        (
            "Votre banque demande de confirmer votre identité (authentification forte). "
            "Reconnectez-vous pour reprendre la synchronisation."
        ),
    ),
    "wrong_credentials": (
        "Your bank refused the stored login or password. Reconnect with your new credentials.",
        (
            "Votre banque a refusé l'identifiant ou le mot de passe enregistré. "
            "Reconnectez-vous avec vos nouveaux identifiants."
        ),
    ),
    "consent_expired": (
        "Your consent to share bank data expired on {date}. Reconnect to renew it.",
        (
            "Votre consentement au partage des données bancaires a expiré le {date}. "
            "Reconnectez-vous pour le renouveler."
        ),
    ),
    "bank_unavailable": (
        "{bank} is temporarily unavailable. The next synchronisation will try again.",
        "{bank} est momentanément indisponible. La prochaine synchronisation réessaiera.",
    ),
    "wrong_password": (
        "The bank refused the login or password.",
        "La banque a refusé l'identifiant ou le mot de passe.",
    ),
    "choose_bank": (
        "Choose your bank in the list.",
        "Choisissez votre banque dans la liste.",
    ),
    "cancelled": (
        "You cancelled the connection to your bank.",
        "Vous avez annulé la connexion à votre banque.",
    ),
}


def normalise_locale(locale: str | None) -> str:
    """``"fr"`` for any French locale (``fr``, ``fr_FR``, ``fr-BE``), else ``"en"``."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


def sandbox_message(code: str, locale: str = "en", **params: str) -> str:
    """The sandbox's human message ``code`` in English or French."""
    english, french = _MESSAGES[code]
    return (french if normalise_locale(locale) == "fr" else english).format(**params)


def _format_date(day: date, locale: str) -> str:
    return day.strftime("%d/%m/%Y") if normalise_locale(locale) == "fr" else day.isoformat()


def _iso(instant: datetime) -> str:
    """One fixed ISO format, so that cursor keys compare as strings in time order."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class SandboxConnectionId:
    """A parsed sandbox connection id (see the module docstring for its layout)."""

    remote_id: str
    bank: SandboxBank
    scenario: str
    connected_at: datetime
    tag: str

    @property
    def consent_days(self) -> int:
        """Days of consent granted at connection time."""
        match = _CONSENT_RE.match(self.scenario)
        return int(match.group(1)) if match else CONSENT_DAYS

    @property
    def incidents(self) -> IncidentSpec:
        """The data incidents this scenario scripts."""
        if self.scenario == "data_incidents":
            return IncidentSpec(True, True, True, True, True)
        names = {spec_field.name for spec_field in fields(IncidentSpec)}
        return IncidentSpec(**{self.scenario: True}) if self.scenario in names else IncidentSpec()


@functools.cache
def _process_session_key() -> bytes:
    """A random signing key for this process's hosted-page links, drawn once.

    Only for callers that give no ``credentials["session_key"]``: their links cannot be
    opened by another process (another worker, a restarted server).
    """
    _logger.warning(
        "No sandbox session key configured: hosted-page links are signed with a random key "
        "of this process only. Give each installation its own credentials['session_key']."
    )
    return secrets.token_bytes(32)


def _hmac_of(key: bytes, params: Mapping[str, str], fields: tuple[str, ...]) -> str:
    """HMAC-SHA256 (hex) of ``fields`` of ``params``, in a canonical order."""
    canonical = urlencode(sorted((k, str(params[k])) for k in fields if k in params))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def _owner_check(user_ref: str, bank: str, scenario: str, at: str, nonce: str) -> str:
    return hashlib.sha256(f"{user_ref}|{bank}|{scenario}|{at}|{nonce}".encode()).hexdigest()[:6]


def make_connection_id(
    user_ref: str, bank_id: str, scenario: str, connected_at: datetime, nonce: str
) -> str:
    """Build the id of a sandbox connection (the inverse of :meth:`SandboxProvider.parse_id`)."""
    at = connected_at.astimezone(timezone.utc).strftime("%Y%m%d%H%M")
    check = _owner_check(user_ref, bank_id, scenario, at, nonce)
    return f"sbx-{bank_id}-{scenario}-{at}-{nonce}{check}"


def is_known_scenario(scenario: str) -> bool:
    """Whether ``scenario`` is one of the documented demo logins."""
    return scenario in _FIXED_SCENARIOS or bool(_CONSENT_RE.match(scenario))


class SandboxProvider:
    """The demo aggregator (see the module docstring): a :class:`Provider` with no network."""

    kind = "sandbox"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        clock: Callable[[], datetime] | None = None,
        token_store: TokenStore | None = None,
        **_ignored: Any,
    ) -> None:
        self.config = config
        self.clock = clock or utc_now
        self.token_store = token_store
        try:
            self.seed = int(config.options.get("seed", 0) or 0)
            self.page_size = int(config.options.get("page_size", DEFAULT_PAGE_SIZE))
        except (TypeError, ValueError) as exc:
            raise InvalidRequest("The sandbox seed and page size must be whole numbers") from exc
        if self.page_size < 1:
            raise InvalidRequest("The sandbox page size must be at least 1")
        self.hosted_url = str(config.options.get("hosted_url") or DEFAULT_HOSTED_URL)
        configured = config.credentials.get("session_key")
        self._session_key = configured.encode() if configured else _process_session_key()
        # Generation takes tens of milliseconds; remember the last few results per instance.
        self._cache: dict[tuple[str, date], dict[str, SandboxAccountData]] = {}

    # -- time and ids -------------------------------------------------------------------------

    def now(self) -> datetime:
        """The provider's "now" (aware UTC), from the injected clock."""
        instant = self.clock()
        if instant.tzinfo is None:
            raise InvalidRequest("The sandbox clock must return an aware datetime")
        return instant.astimezone(timezone.utc)

    def parse_id(self, connection_id: str) -> SandboxConnectionId:
        """Parse and check a connection id of this user; :class:`NotFound` otherwise."""
        match = _CONNECTION_RE.match(connection_id or "")
        bank = bank_by_id(match.group("bank")) if match else None
        if not match or bank is None or not is_known_scenario(match.group("scenario")):
            raise NotFound(f"No sandbox connection {connection_id!r}", status=404)
        expected = _owner_check(
            self.config.user_ref,
            match.group("bank"),
            match.group("scenario"),
            match.group("at"),
            match.group("nonce"),
        )
        if not hmac.compare_digest(expected, match.group("check")):
            raise NotFound(f"No sandbox connection {connection_id!r} for this user", status=404)
        connected_at = datetime.strptime(match.group("at"), "%Y%m%d%H%M").replace(
            tzinfo=timezone.utc
        )
        if self._stored(connection_id).get("deleted"):
            raise NotFound(f"The sandbox connection {connection_id!r} was deleted", status=404)
        return SandboxConnectionId(
            remote_id=connection_id,
            bank=bank,
            scenario=match.group("scenario"),
            connected_at=connected_at,
            tag=match.group("nonce") + match.group("check"),
        )

    def _split_account_id(self, account_id: str) -> tuple[SandboxConnectionId, str]:
        connection_id, _sep, suffix = (account_id or "").rpartition("-")
        if suffix not in _ACCOUNT_SUFFIXES:
            raise NotFound(f"No sandbox account {account_id!r}", status=404)
        return self.parse_id(connection_id), suffix

    def _accounts(
        self, conn: SandboxConnectionId, at: datetime | None = None
    ) -> dict[str, SandboxAccountData]:
        """The connection's generated accounts, with operations up to ``at`` (default now)."""
        # Generate to the end of the month: days after "now" stay invisible (every version is
        # dated on or after its own day), and a daily sync then reuses one generation a month.
        day = (at or self.now()).date()
        horizon = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        key = (conn.remote_id, horizon)
        if key not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = generate_accounts(
                key=conn.remote_id,
                seed=self.seed,
                bank=conn.bank,
                id_prefix=conn.remote_id,
                tx_prefix=f"sbx{conn.tag}",
                connected_at=conn.connected_at,
                until=horizon,
                incidents=conn.incidents,
            )
        return self._cache[key]

    # -- memory kept by the caller (optional) -------------------------------------------------

    def _stored(self, connection_id: str) -> Mapping[str, Any]:
        if self.token_store is None:
            return {}
        return self.token_store.get(f"sandbox:connection:{connection_id}") or {}

    def _store(self, connection_id: str, **values: Any) -> None:
        if self.token_store is not None:
            data = {**self._stored(connection_id), **values}
            self.token_store.set(f"sandbox:connection:{connection_id}", data)

    def _known_ids(self, user_ref: str) -> list[str]:
        if self.token_store is None:
            return []
        return list((self.token_store.get(f"sandbox:user:{user_ref}") or {}).get("ids", []))

    def _set_known_ids(self, user_ref: str, ids: list[str]) -> None:
        if self.token_store is not None:
            self.token_store.set(f"sandbox:user:{user_ref}", {"ids": ids})

    # -- institutions -------------------------------------------------------------------------

    def list_institutions(
        self, *, search: str = "", country: str | None = None, limit: int = 50
    ) -> list[Institution]:
        """Demo banks whose name, group or id contain every word of ``search`` (case and accent
        insensitive), in ``country`` when given, the most requested first."""
        words = fold(search).split()
        found = []
        for bank in BANKS:
            if country and bank.country != country.upper():
                continue
            haystack = fold(f"{bank.name} {bank.group or ''} {bank.bic}")
            if all(word in haystack for word in words):
                found.append(bank)
        found.sort(key=lambda bank: (-bank.popularity, fold(bank.name)))
        return [bank.institution() for bank in found[: max(0, limit)]]

    # -- connection state ---------------------------------------------------------------------

    def _state(
        self, conn: SandboxConnectionId, now: datetime
    ) -> tuple[ConnectionState, ActionReason | None, str, datetime, datetime | None]:
        """(state, reason, vendor status, consent expiry, failing since) at ``now``."""
        reconnected_text = self._stored(conn.remote_id).get("reconnected_at")
        reconnected = _parse_iso(reconnected_text) if reconnected_text else None
        expires = conn.connected_at + timedelta(days=conn.consent_days)
        if reconnected is not None:
            expires = max(expires, reconnected + timedelta(days=CONSENT_DAYS))
        if conn.scenario == "sca_required" and reconnected is None:
            return (
                ConnectionState.ACTION_NEEDED,
                ActionReason.SCA,
                "sca_required",
                expires,
                conn.connected_at,
            )
        password_refused_at = conn.connected_at + PASSWORD_CHANGED_AFTER
        if (
            conn.scenario == "password_changed"
            and now >= password_refused_at
            and (reconnected is None or reconnected < password_refused_at)
        ):
            return (
                ConnectionState.ACTION_NEEDED,
                ActionReason.CREDENTIALS,
                "wrong_credentials",
                expires,
                password_refused_at,
            )
        if now >= expires:
            return (
                ConnectionState.ACTION_NEEDED,
                ActionReason.CONSENT_EXPIRED,
                "consent_expired",
                expires,
                expires,
            )
        if conn.scenario == "bank_down" and now < conn.connected_at + BANK_DOWN_FOR:
            return (
                ConnectionState.TEMPORARY_FAILURE,
                None,
                "bank_unavailable",
                expires,
                conn.connected_at,
            )
        return ConnectionState.OK, None, "ok", expires, None

    def _connection(
        self, conn: SandboxConnectionId, locale: str, *, refreshed_now: bool = False
    ) -> Connection:
        now = self.now()
        state, reason, vendor_status, expires, failing_since = self._state(conn, now)
        message = sandbox_message(
            vendor_status,
            locale,
            date=_format_date(expires.date(), locale),
            bank=conn.bank.name,
        )
        # The sandbox "refreshes" every morning with the bank's batch, until something fails.
        last_batch = datetime.combine(now.date(), datetime.min.time(), tzinfo=timezone.utc)
        last_batch += timedelta(hours=BOOKING_HOUR)
        if last_batch > now:
            last_batch -= timedelta(days=1)
        last_refresh: datetime | None = max(conn.connected_at, last_batch)
        if refreshed_now and state is ConnectionState.OK:
            last_refresh = now
        if failing_since is not None:
            last_refresh = (
                min(last_refresh, failing_since) if failing_since > conn.connected_at else None
            )
        return Connection(
            remote_id=conn.remote_id,
            institution_id=conn.bank.bic,
            institution_name=conn.bank.name,
            state=state,
            reason=reason,
            message=message,
            vendor_status=vendor_status,
            consent_expires_at=expires,
            last_refreshed_at=last_refresh,
            logo_url=conn.bank.institution().logo_url,
        )

    def get_connection(self, connection_id: str, *, locale: str = "en") -> Connection:
        """The connection's state at the clock's "now", with its message in ``locale``."""
        return self._connection(self.parse_id(connection_id), locale)

    def list_connections(self, *, locale: str = "en") -> list[Connection]:
        """Connections recorded in the ``token_store`` for this user ([] without a store: the
        sandbox keeps no list of its own)."""
        out = []
        for connection_id in self._known_ids(self.config.user_ref):
            try:
                out.append(self.get_connection(connection_id, locale=locale))
            except NotFound:
                continue  # deleted or belonging to a former user_ref
        return out

    def refresh_connection(self, connection_id: str) -> Connection:
        """Refresh now: the state at "now", with ``last_refreshed_at`` = now when it worked."""
        return self._connection(self.parse_id(connection_id), "en", refreshed_now=True)

    def delete_connection(self, connection_id: str) -> None:
        """Forget the connection (recorded when a ``token_store`` is given); a missing or
        malformed id is not an error."""
        try:
            self.parse_id(connection_id)
        except NotFound:
            return
        self._store(connection_id, deleted=True)
        ids = self._known_ids(self.config.user_ref)
        if connection_id in ids:
            ids.remove(connection_id)
            self._set_known_ids(self.config.user_ref, ids)

    def delete_user(self) -> None:
        """Delete every recorded connection of this user (nothing else is kept anywhere)."""
        for connection_id in self._known_ids(self.config.user_ref):
            self._store(connection_id, deleted=True)
        self._set_known_ids(self.config.user_ref, [])

    # -- accounts and transactions ------------------------------------------------------------

    def list_accounts(self, connection_id: str | None = None) -> list[Account]:
        """The four accounts of a connection (current, savings, deferred card, loan), with
        balances equal to the opening balance plus every booked, not deleted operation."""
        if connection_id is None:
            ids = [c.remote_id for c in self.list_connections()]
            return [account for cid in ids for account in self.list_accounts(cid)]
        conn = self.parse_id(connection_id)
        now = self.now()
        accounts = []
        for data in self._accounts(conn).values():
            balance = data.opening_balance + booked_total(visible_operations(data.operations, now))
            accounts.append(
                Account(
                    remote_id=data.remote_id,
                    connection_id=conn.remote_id,
                    label=data.label,
                    currency=data.currency,
                    type=data.kind,
                    masked_number=data.masked_number,
                    iban=data.iban,
                    balance=balance,
                    balance_date=now,
                    raw={
                        "opening_balance": str(data.opening_balance),
                        "history_start": data.history_start.isoformat(),
                        "bank": conn.bank.bic,
                        "scenario": conn.scenario,
                    },
                )
            )
        return accounts

    def _check_can_read(self, conn: SandboxConnectionId) -> None:
        state, reason, vendor_status, expires, _since = self._state(conn, self.now())
        message = sandbox_message(
            vendor_status, "en", date=expires.date().isoformat(), bank=conn.bank.name
        )
        if state is ConnectionState.ACTION_NEEDED and reason is not None:
            raise ActionRequired(message, reason=reason, code=vendor_status)
        if state is ConnectionState.TEMPORARY_FAILURE:
            raise ProviderUnavailable(message, status=503, code=vendor_status)

    def iter_transactions(
        self,
        account_id: str,
        *,
        cursor: Cursor | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Iterator[TransactionPage]:
        """Pages of the account's operations (see "Transactions cursor" in the module doc).

        Without a cursor: every operation booked in ``[date_from, date_to]`` (both optional)
        as visible now, sorted by booking date. With a page cursor: the rest of that run
        (dates are ignored). With a final cursor: what changed since, sorted by change time,
        within the dates given now. Errors (unknown account, broken connection, bad cursor or
        dates) are raised here, before any page.
        """
        conn, suffix = self._split_account_id(account_id)
        self._check_can_read(conn)
        if date_from and date_to and date_from > date_to:
            raise InvalidRequest(
                f"The start date {date_from.isoformat()} is after the end date "
                f"{date_to.isoformat()}"
            )
        now = self.now()
        if cursor is None:
            plan = {
                "v": 1,
                "account": account_id,
                "mode": "window",
                "since": None,
                "until": _iso(now),
                "date_from": date_from.isoformat() if date_from else None,
                "date_to": date_to.isoformat() if date_to else None,
                "gap": None,
                "after": None,
            }
        else:
            plan = self._plan_from_cursor(cursor, account_id, now, date_from, date_to)
        # A page cursor replays its own snapshot, even if this process's clock is behind it.
        accounts = self._accounts(conn, max(now, _parse_iso(plan["until"])))
        if suffix not in accounts:
            raise NotFound(f"No sandbox account {account_id!r}", status=404)
        return self._pages(accounts[suffix], plan)

    def _plan_from_cursor(
        self,
        cursor: Cursor,
        account_id: str,
        now: datetime,
        date_from: date | None,
        date_to: date | None,
    ) -> dict[str, Any]:
        value = cursor.value if isinstance(cursor.value, Mapping) else {}
        if cursor.kind != CURSOR_KIND or value.get("v") != 1:
            raise InvalidRequest("This cursor was not made by the sandbox aggregator")
        if value.get("account") != account_id:
            raise InvalidRequest("This cursor belongs to another account")
        plan = dict(value)
        try:
            if plan.get("until") is None:
                # A final cursor: a new run over what changed since its snapshot. Dates given
                # now apply to this run (a start date only ever narrows the stream).
                plan.update(mode="changes", until=_iso(now), after=None)
                if date_from and date_from.isoformat() > (plan.get("date_from") or ""):
                    plan["date_from"] = date_from.isoformat()
                plan["date_to"] = date_to.isoformat() if date_to else None
            # A page cursor keeps its own plan: other dates would change the set it pages.
            for field in ("since", "until"):
                if plan.get(field):
                    _parse_iso(plan[field])
            for field in ("date_from", "date_to", "gap"):
                if plan.get(field):
                    date.fromisoformat(plan[field])
            if plan.get("after") is not None:
                plan["after"] = [str(part) for part in plan["after"]]
        except (TypeError, ValueError) as exc:
            raise InvalidRequest("The sandbox cursor is malformed") from exc
        if plan.get("mode") not in ("window", "changes"):
            raise InvalidRequest("The sandbox cursor is malformed")
        return plan

    def _pages(self, data: SandboxAccountData, plan: dict[str, Any]) -> Iterator[TransactionPage]:
        until = _parse_iso(plan["until"])
        since = _parse_iso(plan["since"]) if plan.get("since") else None
        low = date.fromisoformat(plan["date_from"]) if plan.get("date_from") else None
        high = date.fromisoformat(plan["date_to"]) if plan.get("date_to") else None
        # Operations booked after ``gap`` were left out by an earlier run that stopped at
        # that date: send them whatever their age.
        gap = date.fromisoformat(plan["gap"]) if plan.get("gap") else None
        changes = plan["mode"] == "changes"
        keyed: list[tuple[tuple[str, str], Transaction]] = []
        for tx in visible_operations(data.operations, until):
            if (low and tx.booking_date < low) or (high and tx.booking_date > high):
                continue
            assert tx.updated_at is not None  # noqa: S101 - every generated version has one
            if changes:
                changed = since is None or tx.updated_at > since
                if not changed and not (gap and tx.booking_date > gap):
                    continue
                key = (_iso(tx.updated_at), tx.remote_id)
            else:
                key = (tx.booking_date.isoformat(), tx.remote_id)
            keyed.append((key, tx))
        keyed.sort(key=lambda item: item[0])
        start = 0
        if plan.get("after"):
            after = tuple(plan["after"])
            start = bisect.bisect_right([key for key, _tx in keyed], after)
        remaining = keyed[start:]
        # The next run reports what changes after this snapshot, plus, when this run stopped
        # at an end date before today, everything booked after it: a cursor never skips days.
        final = {
            "v": 1,
            "account": data.remote_id,
            "mode": "changes",
            "since": plan["until"],
            "until": None,
            "date_from": plan.get("date_from"),
            "date_to": None,
            "gap": plan["date_to"] if high and high < until.date() else None,
            "after": None,
        }
        if not remaining:
            yield TransactionPage((), Cursor(CURSOR_KIND, final), last=True)
            return
        for offset in range(0, len(remaining), self.page_size):
            chunk = remaining[offset : offset + self.page_size]
            last = offset + self.page_size >= len(remaining)
            value = final if last else {**plan, "after": list(chunk[-1][0])}
            yield TransactionPage(
                tuple(tx for _key, tx in chunk), Cursor(CURSOR_KIND, value), last=last
            )

    # -- hosted page ---------------------------------------------------------------------------

    def _sign(self, params: Mapping[str, str], fields: tuple[str, ...]) -> str:
        return _hmac_of(self._session_key, params, fields)

    def _session(self, params: dict[str, str]) -> ConnectSession:
        expires = self.now() + SESSION_TTL
        params["exp"] = str(int(expires.timestamp()))
        params["sig"] = self._sign(params, _SIGNED_PAGE_FIELDS)
        url = f"{self.hosted_url}?{urlencode(params)}"
        return ConnectSession(url=url, session_id=params["sig"][:16], expires_at=expires)

    @staticmethod
    def _check_callback(callback_url: str, state: str) -> None:
        parts = urlsplit(callback_url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidRequest(
                f"The callback URL must be an absolute http(s) URL: {callback_url!r}"
            )
        if not state:
            raise InvalidRequest("A state value is required to recognise the callback")

    def start_connect(
        self,
        *,
        callback_url: str,
        state: str,
        institution_id: str | None = None,
        locale: str = "en",
        user_email: str | None = None,
    ) -> ConnectSession:
        """A signed link to the sandbox's hosted page for a new connection."""
        self._check_callback(callback_url, state)
        params = {
            "mode": "connect",
            "callback_url": callback_url,
            "state": state,
            "locale": normalise_locale(locale),
            "user": self.config.user_ref,
        }
        if institution_id:
            if bank_by_id(institution_id) is None:
                raise InvalidRequest(f"Unknown sandbox bank {institution_id!r}")
            params["institution_id"] = institution_id
        return self._session(params)

    def start_reconnect(
        self, connection_id: str, *, callback_url: str, state: str, locale: str = "en"
    ) -> ConnectSession:
        """A signed link to the hosted page to re-authenticate ``connection_id`` (same id)."""
        self._check_callback(callback_url, state)
        conn = self.parse_id(connection_id)
        params = {
            "mode": "reconnect",
            "callback_url": callback_url,
            "state": state,
            "locale": normalise_locale(locale),
            "user": self.config.user_ref,
            "institution_id": conn.bank.bic,
            "connection_id": connection_id,
        }
        return self._session(params)

    def verify_page_query(self, query: Mapping[str, str]) -> dict[str, str]:
        """The signed parameters of a hosted-page query or form, once checked.

        Raises :class:`SignatureVerificationError` when the signature is missing or wrong
        (tampered link) or the link has expired.
        """
        signature = str(query.get("sig") or "")
        params = {k: str(query[k]) for k in _SIGNED_PAGE_FIELDS if query.get(k) is not None}
        expected = self._sign(params, _SIGNED_PAGE_FIELDS)
        if not signature or not hmac.compare_digest(signature, expected):
            raise SignatureVerificationError(
                (
                    "This bank connection link is invalid or was altered. "
                    "Start the connection again from the application."
                ),
                code="invalid_signature",
            )
        try:
            expires = datetime.fromtimestamp(int(params.get("exp", "0")), tz=timezone.utc)
        except (ValueError, OverflowError) as exc:
            raise SignatureVerificationError("Malformed link expiry") from exc
        if self.now() >= expires:
            raise SignatureVerificationError(
                (
                    "This bank connection link has expired. "
                    "Start the connection again from the application."
                ),
                code="expired",
            )
        return params

    def render_hosted_page(self, query: Mapping[str, str], *, form_action: str = "") -> str:
        """The hosted login page as self-contained HTML, in the link's language.

        ``form_action`` is where the form posts (default: the same URL). Raises
        :class:`SignatureVerificationError` for a tampered or expired link.
        """
        params = self.verify_page_query(query)
        return _render_page(params, str(query.get("sig", "")), form_action)

    def submit_hosted_page(self, form: Mapping[str, str]) -> str:
        """Handle the hosted page's form and return the URL to send the browser to: the
        callback URL with ``state``, ``success`` and ``connection_id`` or ``step``/``error``."""
        params = self.verify_page_query(form)
        locale = params.get("locale", "en")
        if form.get("action") == "cancel":
            return self._callback_url(params, False, step="bank_creds_form", error="cancelled")
        login = str(form.get("login") or "").strip().lower() or "success"
        scenario = login if is_known_scenario(login) else "success"
        if scenario == "wrong_password":
            return self._callback_url(params, False, step="bank_creds_form", error="wrong_password")
        user_ref = params["user"]
        if params["mode"] == "reconnect":
            connection_id = params["connection_id"]
            self._store(connection_id, reconnected_at=_iso(self.now()))
            return self._callback_url(params, True, connection_id=connection_id)
        # The bank is part of the signed link, or chosen on the page when the link has none.
        bank_id = params.get("institution_id") or str(form.get("bank") or "")
        if bank_by_id(bank_id) is None:
            raise InvalidRequest(sandbox_message("choose_bank", locale), code="unknown_bank")
        # The same page submitted twice gives the same connection (idempotent callbacks).
        page = _hmac_of(_NONCE_DERIVATION_KEY, params, _SIGNED_PAGE_FIELDS)
        nonce = hashlib.sha256(f"{params['exp']}|{page}".encode()).hexdigest()[:6]
        connected_at = self.now().replace(second=0, microsecond=0)
        connection_id = make_connection_id(user_ref, bank_id, scenario, connected_at, nonce)
        ids = self._known_ids(user_ref)
        if connection_id not in ids:
            self._set_known_ids(user_ref, [*ids, connection_id])
        return self._callback_url(params, True, connection_id=connection_id)

    def _callback_url(
        self,
        params: Mapping[str, str],
        success: bool,
        *,
        connection_id: str | None = None,
        step: str | None = None,
        error: str | None = None,
    ) -> str:
        values = {"state": params["state"], "success": "true" if success else "false"}
        if connection_id:
            values["connection_id"] = connection_id
        if step:
            values["step"] = step
        if error:
            values["error"] = error
            values["message"] = sandbox_message(error, params.get("locale", "en"))
        values[_CALLBACK_SIGNATURE] = self._sign(values, _SIGNED_CALLBACK_FIELDS)
        return with_query(params["callback_url"], values)

    def complete_connect(self, params: Mapping[str, str]) -> ConnectResult:
        """Parse and verify the callback's query parameters.

        ``step`` is the error code on failure (``wrong_password``, ``cancelled``) and
        ``message`` the reason in the page's language. A callback that the hosted page did
        not sign raises :class:`SignatureVerificationError`.
        """
        signature = str(params.get(_CALLBACK_SIGNATURE) or "")
        values = {k: str(params[k]) for k in _SIGNED_CALLBACK_FIELDS if params.get(k) is not None}
        expected = self._sign(values, _SIGNED_CALLBACK_FIELDS)
        if not signature or not hmac.compare_digest(signature, expected):
            raise SignatureVerificationError(
                "The bank connection callback is not signed by the sandbox",
                code="invalid_signature",
            )
        success = values.get("success") == "true"
        connection_id = values.get("connection_id")
        if success and connection_id:
            self.parse_id(connection_id)  # raises NotFound for another user's connection
        return ConnectResult(
            state=values.get("state", ""),
            success=success and bool(connection_id),
            connection_id=connection_id,
            step=values.get("error") or values.get("step"),
            message=values.get("message"),
        )

    # -- webhooks -----------------------------------------------------------------------------

    def parse_webhook(
        self, body: bytes, headers: Mapping[str, str], secrets: list[str]
    ) -> list[WebhookEvent]:
        """The sandbox never sends webhooks, so any delivery claiming to be one is refused."""
        raise SignatureVerificationError(
            "The sandbox aggregator sends no webhooks; this delivery cannot be genuine",
            code="no_webhooks",
        )


_PAGE_TEXT: dict[str, tuple[str, str]] = {
    "title": ("Connect your bank", "Connectez votre banque"),
    "title_reconnect": ("Reconnect your bank", "Reconnectez votre banque"),
    "intro": (
        "Sandbox demo bank: no real bank is contacted and nothing you type leaves this page.",
        (
            "Banque de démonstration : aucune vraie banque n'est contactée et rien de ce que vous "
            "saisissez ne quitte cette page."
        ),
    ),
    "bank": ("Bank", "Banque"),
    "login": ("Login (customer number)", "Identifiant (numéro client)"),
    "password": ("Password", "Code secret"),
    "connect": ("Connect", "Se connecter"),
    "cancel": ("Cancel", "Annuler"),
    "logins": (
        "Demo logins (any password works):",
        "Identifiants de démonstration (tout mot de passe convient) :",
    ),
    "consent_any": (
        "consent_expiring_N works with any number of days N.",
        "consent_expiring_N fonctionne avec n'importe quel nombre de jours N.",
    ),
}


def _render_page(params: Mapping[str, str], signature: str, form_action: str) -> str:
    """Self-contained HTML of the hosted login page (all values escaped)."""
    fr = params.get("locale") == "fr"

    def text(key: str) -> str:
        return _PAGE_TEXT[key][1 if fr else 0]

    esc = html.escape
    bank = bank_by_id(params.get("institution_id", ""))
    hidden = (
        "".join(
            f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in params.items()
        )
        + f'<input type="hidden" name="sig" value="{esc(signature)}">'
    )
    if bank is not None:
        logo = bank.institution().logo_url or ""
        bank_block = f'<div class="bank"><img src="{esc(logo)}" alt=""> {esc(bank.name)}</div>'
    else:
        options = "".join(
            f'<option value="{esc(b.bic)}">{esc(b.name)} ({esc(b.country)})</option>' for b in BANKS
        )
        bank_block = (
            f'<label>{esc(text("bank"))}<select name="bank" required>{options}</select></label>'
        )
    logins = "".join(
        f"<li><code>{esc(login)}</code>: {esc(french if fr else english)}</li>"
        for login, english, french in DEMO_LOGINS
    )
    title = text("title_reconnect" if params.get("mode") == "reconnect" else "title")
    return f"""<!DOCTYPE html>
<html lang="{"fr" if fr else "en"}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>
body{{font-family:system-ui,Arial,sans-serif;background:#f3f4f6;margin:0;padding:2rem}}
main{{max-width:28rem;margin:auto;background:#fff;border-radius:12px;padding:1.5rem;
box-shadow:0 2px 8px rgba(0,0,0,.1)}}
.bank{{display:flex;align-items:center;gap:.75rem;font-size:1.25rem;font-weight:600}}
.bank img{{width:40px;height:40px}}
label{{display:block;margin:.75rem 0}} input,select{{display:block;width:100%;padding:.5rem;
box-sizing:border-box;margin-top:.25rem}}
.actions{{display:flex;gap:.5rem;margin-top:1rem}} button{{padding:.5rem 1rem}}
.hint{{color:#555;font-size:.85rem}}
</style></head><body><main>
<h1>{esc(title)}</h1>
<p class="hint">{esc(text("intro"))}</p>
<form method="post" action="{esc(form_action)}">
{hidden}
{bank_block}
<label>{esc(text("login"))}<input name="login" autocomplete="username" value="success"></label>
<label>{esc(text("password"))}<input name="password" type="password"
autocomplete="current-password"></label>
<div class="actions">
<button type="submit" name="action" value="connect">{esc(text("connect"))}</button>
<button type="submit" name="action" value="cancel" formnovalidate>{esc(text("cancel"))}</button>
</div>
</form>
<p class="hint">{esc(text("logins"))}</p><ul class="hint">{logins}</ul>
<p class="hint">{esc(text("consent_any"))}</p>
</main></body></html>
"""


__all__ = [
    "DEFAULT_HOSTED_URL",
    "DEMO_LOGINS",
    "SandboxConnectionId",
    "SandboxProvider",
    "is_known_scenario",
    "make_connection_id",
    "normalise_locale",
    "sandbox_message",
]
