"""The Bridge emulator's data model: users, tokens, items, accounts, transactions, providers.

Kept apart from the HTTP layer (:mod:`bank_sync_bridge.testing.bridge_emulator`) so that the
scenario control used by tests, the demo and the benchmarks works on plain objects, and so the
JSON shapes live in one place (the ``to_json`` methods), written from the field lists of
``docs/aggregators.md`` §1 (Bridge API version 2025-01-15, ``/v3`` paths).

Bridge v3 leaves null fields out of its answers: every ``to_json`` below drops ``None`` values.
Amounts are held as :class:`~decimal.Decimal` and written as JSON numbers, like Bridge does.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from ..iban import french_iban

BRIDGE_VERSION = "2025-01-15"
#: How an operation's flags are spelt (docs/aggregators.md §1.6): ``v3``, the names of the
#: third-party v3 typings (``deleted``, ``future``), or ``published``, the names of Bridge's own
#: published transaction resource (``is_deleted``, ``is_future``, ``show_client_side``).
TRANSACTION_FLAGS = ("v3", "published")
DEMO_BANK_ID = 574
#: PSD2 strong authentication stays valid this long after a successful login.
SCA_VALIDITY = timedelta(days=180)
TOKEN_VALIDITY = timedelta(hours=2)

# (English, French) explanations by status, in the spirit of Bridge's
# ``status_code_description``; the wording is ours.
STATUS_DESCRIPTIONS: dict[int, tuple[str, str]] = {
    0: ("Your bank account is up to date.", "Votre compte bancaire est à jour."),
    -2: (
        "Your bank account is being synchronised for the first time.",
        "Votre compte bancaire est en cours de première synchronisation.",
    ),
    -3: (
        "Your new bank credentials are being checked.",
        "Vos nouveaux identifiants bancaires sont en cours de vérification.",
    ),
    402: (
        "Your bank credentials are wrong or your access is blocked. Please enter them again.",
        (
            "Vos identifiants bancaires sont incorrects ou votre accès est bloqué. "
            "Merci de les saisir à nouveau."
        ),
    ),
    429: (
        (
            "Your bank asks you to do something on its website or app (for example accept "
            "new terms) before your accounts can be synchronised."
        ),
        (
            "Votre banque vous demande une action sur son site ou son application (par "
            "exemple accepter de nouvelles conditions) avant de pouvoir synchroniser vos comptes."
        ),
    ),
    1003: (
        "Your bank's website is unavailable for the moment. We will try again later.",
        "Le site de votre banque est momentanément indisponible. Nous réessaierons plus tard.",
    ),
    1005: (
        "This connection is not supported (closed account or unsupported access).",
        "Cette connexion n'est pas prise en charge (compte clôturé ou accès non supporté).",
    ),
    1007: (
        "Synchronisation with this bank is temporarily disabled.",
        "La synchronisation avec cette banque est temporairement désactivée.",
    ),
    1009: (
        "The balance changed but no new transaction was found.",
        "Le solde a changé mais aucune nouvelle opération n'a été trouvée.",
    ),
    1010: (
        "A strong authentication is needed to synchronise this account.",
        "Une authentification forte est nécessaire pour synchroniser ce compte.",
    ),
    1099: (
        "This bank is being migrated; synchronisation will resume soon.",
        "Cette banque est en cours de migration ; la synchronisation reprendra bientôt.",
    ),
    1100: (
        "Professional accounts were found: please validate them to share their data.",
        (
            "Des comptes professionnels ont été trouvés : merci de les valider pour partager "
            "leurs données."
        ),
    ),
}

#: The ``status_code_info`` a Demo Bank login gives when it names only the status.
DEFAULT_STATUS_INFO: dict[int, str] = {
    0: "ok",
    402: "invalid_creds",
    429: "tos_to_validate",
    1003: "bank_is_down",
    1005: "otp_not_supported",
    1010: "otp_required",
}

#: Statuses that stay until the user goes through Connect again.
STICKY_STATUSES = frozenset({402, 429, 1005, 1010, 1100})

#: Where the hosted page says the user stopped (callback ``step``) for each outcome.
CALLBACK_STEPS: dict[int, str] = {
    402: "bank_creds_form",
    1010: "otp_form",
    1100: "pro_validation_form",
}


def ms_iso(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, the way Bridge writes ``updated_at``."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def truncate_ms(moment: datetime) -> datetime:
    """Drop sub-millisecond digits so that a stamp survives a round trip through JSON."""
    return moment.replace(microsecond=(moment.microsecond // 1000) * 1000)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch (sort key of the transaction index)."""
    return int(moment.timestamp() * 1000)


def json_number(value: Decimal) -> float:
    """A Decimal as a JSON number.

    Python writes a float with the shortest text that reads back to it, so a two-decimal amount
    comes out exactly as the bank wrote it (``-84.2``); clients must still parse it as Decimal.
    """
    return float(value)


def compact(data: dict[str, Any]) -> dict[str, Any]:
    """Bridge v3 leaves null fields out of its answers."""
    return {key: value for key, value in data.items() if value is not None}


@dataclass
class EmuUser:
    """A Bridge user (one per customer of the application)."""

    uuid: str
    external_user_id: str | None
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The v3 user resource."""
        return compact({"uuid": self.uuid, "external_user_id": self.external_user_id})


@dataclass
class EmuItem:
    """A bank login (Bridge "item") and its scripted future."""

    id: int
    user_uuid: str
    provider_id: int
    status: int
    status_code_info: str | None
    created_at: datetime
    account_types: str = "payment"
    last_successful_refresh: datetime | None = None
    last_try_refresh: datetime | None = None
    authentication_expires_at: datetime | None = None
    #: Outcomes of the next refreshes, from a chained Demo Bank login (``success.1010``).
    next_outcomes: list[tuple[int, str | None]] = field(default_factory=list)

    def to_json(self, language: str = "en") -> dict[str, Any]:
        """The v3 item resource, with the description in ``language`` (``en`` or ``fr``)."""
        english, french = STATUS_DESCRIPTIONS.get(
            self.status, ("Unknown status.", "Statut inconnu.")
        )
        return compact(
            {
                "id": self.id,
                "status": self.status,
                "status_code_info": self.status_code_info,
                "status_code_description": french if language == "fr" else english,
                "provider_id": self.provider_id,
                "account_types": self.account_types,
                "created_at": ms_iso(self.created_at),
                "last_successful_refresh": ms_iso(self.last_successful_refresh)
                if self.last_successful_refresh
                else None,
                "last_try_refresh": ms_iso(self.last_try_refresh)
                if self.last_try_refresh
                else None,
                "authentication_expires_at": ms_iso(self.authentication_expires_at)
                if self.authentication_expires_at
                else None,
            }
        )


@dataclass
class EmuAccount:
    """A bank account inside an item."""

    id: int
    item_id: int
    user_uuid: str
    provider_id: int
    name: str
    type: str
    currency_code: str
    balance: Decimal
    updated_at: datetime
    iban: str | None = None
    pro: bool = False
    data_access: str = "enabled"
    accounting_balance: Decimal | None = None
    instant_balance: Decimal | None = None
    last_refresh_status: str | None = "succeeded"
    loan_details: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The v3 account resource."""
        return compact(
            {
                "id": self.id,
                "name": self.name,
                "balance": json_number(self.balance),
                "accounting_balance": json_number(self.accounting_balance)
                if self.accounting_balance is not None
                else None,
                "instant_balance": json_number(self.instant_balance)
                if self.instant_balance is not None
                else None,
                "updated_at": ms_iso(self.updated_at),
                "last_refresh_status": self.last_refresh_status,
                "type": self.type,
                "currency_code": self.currency_code,
                "item_id": self.item_id,
                "provider_id": self.provider_id,
                "data_access": self.data_access,
                "pro": self.pro,
                "iban": self.iban,
                "iban_filled_manually": False if self.iban else None,
                "loan_details": self.loan_details,
            }
        )


@dataclass
class EmuTransaction:
    """One operation; ``updated_at`` moves whenever anything about it changes."""

    id: int
    account_id: int
    user_uuid: str
    amount: Decimal
    clean_description: str
    provider_description: str
    date: date
    updated_at: datetime
    currency_code: str = "EUR"
    booking_date: date | None = None
    transaction_date: date | None = None
    value_date: date | None = None
    category_id: int | None = None
    operation_type: str | None = None
    deleted: bool = False
    future: bool = False
    #: False on a deferred-card line that the monthly total on the current account repeats.
    show_client_side: bool = True

    def to_json(self, flags: str = "v3") -> dict[str, Any]:
        """The v3 transaction resource, its flags spelt as ``flags`` says (see
        :data:`TRANSACTION_FLAGS`)."""
        if flags == "v3":
            named = {"deleted": self.deleted, "future": self.future}
            # Not in the v3 typings: sent only on the lines it hides, so that a client reading
            # v3 names still meets it.
            if not self.show_client_side:
                named["show_client_side"] = False
        else:
            named = {
                "is_deleted": self.deleted,
                "is_future": self.future,
                "show_client_side": self.show_client_side,
            }
        return compact(
            {
                "id": self.id,
                "clean_description": self.clean_description,
                "provider_description": self.provider_description,
                "amount": json_number(self.amount),
                "date": self.date.isoformat(),
                "booking_date": self.booking_date.isoformat() if self.booking_date else None,
                "transaction_date": self.transaction_date.isoformat()
                if self.transaction_date
                else None,
                "value_date": self.value_date.isoformat() if self.value_date else None,
                "updated_at": ms_iso(self.updated_at),
                "currency_code": self.currency_code,
                "account_id": self.account_id,
                "category_id": self.category_id,
                "operation_type": self.operation_type,
                **named,
            }
        )


@dataclass(frozen=True)
class EmuProvider:
    """A bank as ``GET /v3/providers`` lists it."""

    id: int
    name: str
    country_code: str
    group_name: str | None = None
    keywords: tuple[str, ...] = ()
    segment: tuple[str, ...] = ("personal", "professional")

    def to_json(self) -> dict[str, Any]:
        """The v3 provider resource (shape from Bridge's 2025 migration guide)."""
        return compact(
            {
                "id": self.id,
                "name": self.name,
                "country_code": self.country_code,
                "group_name": self.group_name,
                "images": {"logo": f"https://web.bridgeapi.io/img/banks/{self.id}.png"},
                "capabilities": ["aggregation"],
                "aggregation_metadata": {"release_status": "active"},
                "health_status": {
                    "aggregation": {"status": "healthy"},
                    "single_payment": {"status": "healthy"},
                },
                "tags": {"segment": list(self.segment), "keywords": list(self.keywords)},
            }
        )


#: The emulator's banks, most requested first. 574 is Bridge's documented sandbox Demo Bank;
#: the other ids are the emulator's own, not Bridge's production ids.
DEFAULT_PROVIDERS: tuple[EmuProvider, ...] = (
    EmuProvider(DEMO_BANK_ID, "Demo Bank", "FR", keywords=("sandbox", "test")),
    EmuProvider(6, "BNP Paribas", "FR", "BNP Paribas", ("bnp",)),
    EmuProvider(3, "Crédit Agricole Île-de-France", "FR", "Crédit Agricole", ("ca", "cadif")),
    EmuProvider(4, "Société Générale", "FR", "Société Générale", ("sg", "sogé")),
    EmuProvider(5, "LCL", "FR", "Crédit Agricole", ("le crédit lyonnais",)),
    EmuProvider(7, "Caisse d'Épargne Île-de-France", "FR", "BPCE", ("cera", "cepargne")),
    EmuProvider(8, "Banque Populaire Rives de Paris", "FR", "BPCE", ("bred",)),
    EmuProvider(9, "Crédit Mutuel", "FR", "Crédit Mutuel Alliance Fédérale", ("cm",)),
    EmuProvider(10, "CIC", "FR", "Crédit Mutuel Alliance Fédérale"),
    EmuProvider(11, "La Banque Postale", "FR", "La Banque Postale", ("lbp", "postale")),
    EmuProvider(12, "Boursorama Banque", "FR", "Société Générale", ("boursobank",)),
    EmuProvider(13, "Qonto", "FR", None, ("néobanque",), ("professional",)),
    EmuProvider(14, "Shine", "FR", None, ("néobanque",), ("professional",)),
    EmuProvider(15, "Hello bank!", "FR", "BNP Paribas"),
    EmuProvider(16, "Crédit Coopératif", "FR", "BPCE", ("associations",)),
    EmuProvider(101, "ING Belgique", "BE", "ING"),
    EmuProvider(102, "Banco Santander", "ES", "Santander"),
    EmuProvider(103, "Deutsche Bank", "DE", "Deutsche Bank"),
)

# French business operations used to fill accounts: (clean label, raw bank label, sign,
# typical amount in cents, operation type). Raw labels mimic what French banks print.
_OPERATIONS: tuple[tuple[str, str, int, int, str], ...] = (
    ("Prlv Edf", "PRLV SEPA EDF SA ECH/{d} REF {r}", -1, 8420, "direct_debit"),
    ("Prlv Orange", "PRLV SEPA ORANGE SA {r}", -1, 4599, "direct_debit"),
    ("Prlv Urssaf", "PRLV SEPA URSSAF IDF ECH/{d} {r}", -1, 118000, "direct_debit"),
    ("Prlv Dgfip Tva", "PRLV SEPA DGFIP TVA {r}", -1, 241300, "direct_debit"),
    (
        "Vir Client Dupont Sarl",
        "VIR SEPA RECU /DE DUPONT SARL /MOTIF FACT {r}",
        1,
        154000,
        "transfer",
    ),
    (
        "Vir Client Martin Et Fils",
        "VIR SEPA RECU /DE MARTIN ET FILS /REF {r}",
        1,
        98050,
        "transfer",
    ),
    ("Vir Loyer Sci Horizon", "VIR SEPA EMIS /A SCI HORIZON /LOYER {d}", -1, 185000, "transfer"),
    ("Carrefour", "CB CARREFOUR MARKET {d} CARTE 4974XXXXXXXX{c}", -1, 6237, "card"),
    ("Total Energies", "CB TOTALENERGIES STATION {d} CARTE 4974XXXXXXXX{c}", -1, 7210, "card"),
    ("Sncf", "CB SNCF INTERNET {d} CARTE 4974XXXXXXXX{c}", -1, 12900, "card"),
    ("Amazon", "CB AMAZON PAYMENTS {d} CARTE 4974XXXXXXXX{c}", -1, 3499, "card"),
    ("Remise Cheques", "REMISE CHEQUES N {r} 3 CHQ", 1, 42075, "check"),
    ("Frais Bancaires", "COMMISSION TENUE DE COMPTE {d}", -1, 1800, "bank_fees"),
    ("Stripe Payout", "VIR SEPA RECU /DE STRIPE PAYMENTS EUROPE /PAYOUT {r}", 1, 63412, "transfer"),
    ("Retrait Dab", "RETRAIT DAB {d} BNP PARIS 12", -1, 6000, "withdrawal"),
)


class CursorError(ValueError):
    """A pagination cursor that the emulator did not issue for this query."""


class CursorSigner:
    """Issues and checks the opaque ``after`` cursors of list endpoints.

    A cursor carries the keyset position and a fingerprint of the query's filters, signed with
    a per-emulator key: a forged, altered or re-targeted cursor is refused with a 400.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, position: list[Any], query_fingerprint: str) -> str:
        """An opaque cursor for ``position`` within the query of ``query_fingerprint``."""
        payload = json.dumps({"p": position, "q": query_fingerprint}, separators=(",", ":"))
        raw = payload.encode()
        mac = hmac.new(self._key, raw, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(raw + mac).decode().rstrip("=")

    def read(self, cursor: str, query_fingerprint: str) -> list[Any]:
        """The position inside ``cursor``; :class:`CursorError` when it cannot be trusted."""
        try:
            blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError) as exc:
            raise CursorError("after is not a valid cursor") from exc
        raw, mac = blob[:-12], blob[-12:]
        expected = hmac.new(self._key, raw, hashlib.sha256).digest()[:12]
        if len(blob) <= 12 or not hmac.compare_digest(mac, expected):
            raise CursorError("after is not a valid cursor")
        data = json.loads(raw)
        if data.get("q") != query_fingerprint:
            raise CursorError("after does not belong to this query")
        return list(data["p"])


class SlidingWindowLimiter:
    """Counts requests per key over a sliding window of the emulator's clock."""

    def __init__(self, limit: int, window: timedelta) -> None:
        self.limit = limit
        self.window = window.total_seconds()
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float) -> float | None:
        """Record one request; returns None when allowed, else seconds until one frees up."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.001, hits[0] + self.window - now)
        hits.append(now)
        return None

    def reset(self) -> None:
        """Forget every count (tests that change the clock a lot start afresh)."""
        self._hits.clear()


class TransactionIndex:
    """One user's transactions, sorted by ``(updated_at, id)`` for keyset pagination.

    That order makes the ``since`` filter a binary search, keeps pages stable while operations
    change (a changed operation moves to the end, where the same stream meets it again) and
    lets an account of tens of thousands of operations page in constant time per page.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, EmuTransaction] = {}
        self._keys: list[tuple[int, int]] = []

    def add(self, tx: EmuTransaction) -> None:
        """Insert a new operation."""
        self.by_id[tx.id] = tx
        bisect.insort(self._keys, (to_ms(tx.updated_at), tx.id))

    def add_many(self, txs: Iterable[EmuTransaction]) -> None:
        """Insert many operations at once (one sort instead of many inserts)."""
        for tx in txs:
            self.by_id[tx.id] = tx
            self._keys.append((to_ms(tx.updated_at), tx.id))
        self._keys.sort()

    def touch(self, tx: EmuTransaction, updated_at: datetime) -> None:
        """Move ``tx`` to its new ``updated_at`` after a change."""
        old = (to_ms(tx.updated_at), tx.id)
        position = bisect.bisect_left(self._keys, old)
        if position < len(self._keys) and self._keys[position] == old:
            del self._keys[position]
        tx.updated_at = updated_at
        bisect.insort(self._keys, (to_ms(updated_at), tx.id))

    def remove_accounts(self, account_ids: set[int]) -> None:
        """Forget every operation of these accounts (item or account removed)."""
        for tx_id in [i for i, tx in self.by_id.items() if tx.account_id in account_ids]:
            del self.by_id[tx_id]
        self._keys = [key for key in self._keys if key[1] in self.by_id]

    def iter_from(
        self, after: tuple[int, int] | None, since_ms: int | None, inclusive: bool
    ) -> Iterator[EmuTransaction]:
        """Operations in key order, strictly after ``after`` and updated after ``since_ms``."""
        start = 0
        if since_ms is not None:
            start = bisect.bisect_left(
                self._keys, (since_ms, -1) if inclusive else (since_ms + 1, -1)
            )
        if after is not None:
            start = max(start, bisect.bisect_right(self._keys, after))
        for key in self._keys[start:]:
            yield self.by_id[key[1]]

    def __len__(self) -> int:
        return len(self.by_id)


@dataclass
class DemoLogin:
    """What a Demo Bank login asks for: the connect outcome, then the next refreshes'."""

    first: tuple[int, str | None]
    then: list[tuple[int, str | None]]

    @classmethod
    def parse(cls, login: str) -> DemoLogin:
        """Read ``success``, ``402``, ``1010``, ``1005_CLOSED_ACCOUNT``, ``success.1010``...

        Raises ValueError for a login that names no scenario, as the hosted page must say so.
        """
        steps = [cls._outcome(part) for part in login.strip().split(".") if part]
        if not steps:
            raise ValueError("Empty Demo Bank login")
        return cls(first=steps[0], then=steps[1:])

    @staticmethod
    def _outcome(part: str) -> tuple[int, str | None]:
        word = part.strip().lower()
        if word in {"success", "otp", "app2app"}:
            return 0, "ok"
        if word in {"otp_fail", "app2app_expiry"}:
            # The strong authentication was not completed: the item waits for it.
            return 1010, "otp_required"
        code, _, info = word.partition("_")
        try:
            status = int(code)
        except ValueError:
            raise ValueError(f"Unknown Demo Bank scenario: {part!r}") from None
        if status not in STATUS_DESCRIPTIONS:
            raise ValueError(f"Unknown Demo Bank status: {status}")
        return status, info or DEFAULT_STATUS_INFO.get(status)


class BridgeState:
    """Everything the emulator knows, with the operations tests and handlers perform on it.

    Not thread-safe by itself: the emulator serialises access with one lock.
    """

    def __init__(self, clock: Callable[[], datetime], *, cursor_key: bytes, seed: int = 0) -> None:
        self.clock = clock
        self.cursor_signer = CursorSigner(cursor_key)
        self.users: dict[str, EmuUser] = {}
        self.tokens: dict[str, tuple[str, datetime]] = {}
        #: Life of new user tokens (2 h at Bridge); zero makes every token dead on arrival.
        self.token_validity = TOKEN_VALIDITY
        self.items: dict[int, EmuItem] = {}
        self.accounts: dict[int, EmuAccount] = {}
        self.transactions: dict[str, TransactionIndex] = {}
        self.providers: dict[int, EmuProvider] = {p.id: p for p in DEFAULT_PROVIDERS}
        self._random = random.Random(seed)
        self._uuid_random = random.Random(seed + 1)
        self._next_item_id = 9_100_000
        self._next_account_id = 48_170_000
        self._next_tx_id = 38_000_412_000_000

    # -- clock and ids ------------------------------------------------------------------

    def now(self) -> datetime:
        """The emulator's current instant, to the millisecond."""
        return truncate_ms(self.clock())

    def new_uuid(self) -> str:
        """A deterministic UUID4-shaped id (reproducible data sets)."""
        return str(uuid.UUID(int=self._uuid_random.getrandbits(128), version=4))

    def new_tx_id(self) -> int:
        """The next int64 transaction id."""
        self._next_tx_id += 1
        return self._next_tx_id

    # -- users and tokens ---------------------------------------------------------------

    def create_user(self, external_user_id: str | None) -> EmuUser:
        """A new user; the caller checks ``external_user_id`` uniqueness (409)."""
        user = EmuUser(self.new_uuid(), external_user_id, self.now())
        self.users[user.uuid] = user
        self.transactions[user.uuid] = TransactionIndex()
        return user

    def find_user(
        self, *, user_uuid: str | None = None, external_user_id: str | None = None
    ) -> EmuUser | None:
        """The user with this uuid or external id, if any."""
        if user_uuid:
            return self.users.get(user_uuid)
        for user in self.users.values():
            if external_user_id is not None and user.external_user_id == external_user_id:
                return user
        return None

    def delete_user(self, user_uuid: str) -> list[int]:
        """Remove a user and everything it holds; returns the ids of its deleted items."""
        self.users.pop(user_uuid, None)
        self.transactions.pop(user_uuid, None)
        item_ids = [item.id for item in self.items.values() if item.user_uuid == user_uuid]
        for item_id in item_ids:
            self.delete_item(item_id)
        self.tokens = {t: v for t, v in self.tokens.items() if v[0] != user_uuid}
        return item_ids

    def issue_token(self, user: EmuUser, token: str) -> datetime:
        """Record ``token`` for ``user``; returns its expiry (2 hours on the emulator clock)."""
        expires_at = self.now() + self.token_validity
        self.tokens[token] = (user.uuid, expires_at)
        return expires_at

    def user_for_token(self, token: str) -> EmuUser | None:
        """The user of a valid, unexpired token."""
        entry = self.tokens.get(token)
        if entry is None or entry[1] <= self.now():
            return None
        return self.users.get(entry[0])

    def expire_tokens(self) -> None:
        """Make every issued token expired (the next call with one gets a 401)."""
        past = self.now() - timedelta(seconds=1)
        self.tokens = {token: (user, past) for token, (user, _) in self.tokens.items()}

    # -- items --------------------------------------------------------------------------

    def create_item(
        self, user_uuid: str, provider_id: int, login: DemoLogin, *, demo_accounts: bool = True
    ) -> EmuItem:
        """A new item as Bridge Connect leaves it once the Demo Bank login ran (with Demo
        Bank's accounts unless ``demo_accounts`` is False)."""
        self._next_item_id += 1
        now = self.now()
        item = EmuItem(
            id=self._next_item_id,
            user_uuid=user_uuid,
            provider_id=provider_id,
            status=-2,
            status_code_info=None,
            created_at=now,
        )
        self.items[item.id] = item
        self.apply_login(item, login, demo_accounts=demo_accounts)
        return item

    def apply_login(self, item: EmuItem, login: DemoLogin, *, demo_accounts: bool = True) -> None:
        """The outcome of a (re-)authentication on ``item``."""
        status, info = login.first
        now = self.now()
        item.next_outcomes = list(login.then)
        item.last_try_refresh = now
        item.status, item.status_code_info = status, info
        if status in {0, 1100}:
            # A successful login (pro accounts included) renews the 180-day SCA window.
            item.last_successful_refresh = now
            item.authentication_expires_at = now + SCA_VALIDITY
            if demo_accounts and not self.accounts_of(item.id):
                self.fill_demo_accounts(item)

    def refresh_item(self, item: EmuItem) -> None:
        """A refresh (API, scheduler): runs the next scripted outcome and the SCA clock."""
        now = self.now()
        item.last_try_refresh = now
        if item.authentication_expires_at and item.authentication_expires_at <= now:
            item.status, item.status_code_info = 1010, "otp_required"
            return
        if item.next_outcomes:
            item.status, item.status_code_info = item.next_outcomes.pop(0)
        elif item.status not in STICKY_STATUSES:
            # Temporary failures (1003, 1007, 1099) and first syncs end on the next run.
            item.status, item.status_code_info = 0, "ok"
        if item.status == 0:
            item.last_successful_refresh = now
            for account in self.accounts_of(item.id):
                account.updated_at = now

    def delete_item(self, item_id: int) -> EmuItem | None:
        """Remove an item, its accounts and their operations."""
        item = self.items.pop(item_id, None)
        if item is None:
            return None
        account_ids = {a.id for a in self.accounts_of(item_id)}
        for account_id in account_ids:
            del self.accounts[account_id]
        index = self.transactions.get(item.user_uuid)
        if index is not None and account_ids:
            index.remove_accounts(account_ids)
        return item

    def items_of(self, user_uuid: str) -> list[EmuItem]:
        """A user's items, oldest first."""
        return sorted(
            (i for i in self.items.values() if i.user_uuid == user_uuid), key=lambda i: i.id
        )

    # -- accounts -----------------------------------------------------------------------

    def accounts_of(self, item_id: int) -> list[EmuAccount]:
        """An item's accounts, in id order."""
        return sorted(
            (a for a in self.accounts.values() if a.item_id == item_id), key=lambda a: a.id
        )

    def add_account(
        self,
        item: EmuItem,
        *,
        name: str,
        type_: str = "checking",
        currency_code: str = "EUR",
        balance: Decimal = Decimal("0"),
        iban: str | None = None,
        pro: bool = False,
        loan_details: dict[str, Any] | None = None,
    ) -> EmuAccount:
        """A new account on ``item``."""
        self._next_account_id += 1
        account = EmuAccount(
            id=self._next_account_id,
            item_id=item.id,
            user_uuid=item.user_uuid,
            provider_id=item.provider_id,
            name=name,
            type=type_,
            currency_code=currency_code,
            balance=balance,
            updated_at=self.now(),
            iban=iban,
            pro=pro,
            loan_details=loan_details,
        )
        self.accounts[account.id] = account
        return account

    def fill_demo_accounts(self, item: EmuItem) -> None:
        """What Demo Bank's ``success`` login holds, scaled down: two checking accounts (one
        professional), a deferred-debit card, a savings book and a loan, with operations."""
        rng = random.Random(item.id)
        today = self.now().date()
        checking = self.add_account(
            item, name="Compte courant", iban=french_iban("30004", "00819", f"{item.id}1")
        )
        pro = self.add_account(
            item,
            name="Compte professionnel",
            pro=True,
            iban=french_iban("30004", "00819", f"{item.id}2"),
        )
        card = self.add_account(item, name="Carte Visa Business", type_="card")
        savings = self.add_account(
            item,
            name="Livret A",
            type_="savings",
            iban=french_iban("30004", "00819", f"{item.id}3"),
        )
        self.add_account(
            item,
            name="Prêt professionnel",
            type_="loan",
            balance=Decimal("-48250.00"),
            loan_details={
                "next_payment_date": (today + timedelta(days=12)).isoformat(),
                "next_payment_amount": 912.4,
                "maturity_date": (today + timedelta(days=1500)).isoformat(),
                "opening_date": (today - timedelta(days=700)).isoformat(),
                "interest_rate": 2.35,
                "type": "professional",
                "borrowed_capital": 70000.0,
                "repaid_capital": 21750.0,
                "remaining_capital": 48250.0,
            },
        )
        self.generate_transactions(checking, 30, rng=rng, days=60, opening=Decimal("8450.00"))
        self.generate_transactions(pro, 30, rng=rng, days=60, opening=Decimal("18200.00"))
        self.generate_transactions(card, 6, rng=rng, days=25, card=True, future_share=0.5)
        self.generate_transactions(savings, 2, rng=rng, days=90, opening=Decimal("9100.00"))

    # -- transactions -------------------------------------------------------------------

    def generate_transactions(
        self,
        account: EmuAccount,
        count: int,
        *,
        rng: random.Random,
        days: int,
        opening: Decimal = Decimal("0"),
        card: bool = False,
        future_share: float = 0.0,
    ) -> list[EmuTransaction]:
        """``count`` realistic operations over the last ``days`` days, deterministic for ``rng``.

        Fast enough for benchmarks (tens of thousands per second): no per-row sort.
        """
        now = self.now()
        today = now.date()
        txs: list[EmuTransaction] = []
        card_ops = [op for op in _OPERATIONS if op[4] == "card"]
        total = Decimal("0")
        for n in range(count):
            clean, raw, sign, cents, op_type = rng.choice(card_ops if card else _OPERATIONS)
            amount = Decimal(sign * max(1, int(cents * rng.uniform(0.3, 1.7)))).scaleb(-2)
            booked = today - timedelta(days=rng.randrange(days or 1))
            future = rng.random() < future_share
            value = booked - timedelta(days=rng.choice((0, 0, 1, 2)))
            reference = f"{rng.randrange(10**6):06d}"
            tx = EmuTransaction(
                id=self.new_tx_id(),
                account_id=account.id,
                user_uuid=account.user_uuid,
                amount=amount,
                clean_description=clean,
                provider_description=raw.format(d=booked.strftime("%d%m%y"), r=reference, c="1234"),
                date=booked,
                booking_date=None if future else booked,
                value_date=value,
                transaction_date=value if op_type == "card" else None,
                currency_code=account.currency_code,
                category_id=rng.choice((None, 200, 270, 315, 79)),
                operation_type=op_type,
                future=future,
                # Distinct stamps, all in the past, in generation order: deterministic pages.
                updated_at=now - timedelta(milliseconds=count - n),
            )
            txs.append(tx)
            if not future:
                total += amount
        self.transactions[account.user_uuid].add_many(txs)
        account.balance = opening + total
        account.accounting_balance = account.balance
        account.instant_balance = account.balance + sum(
            (tx.amount for tx in txs if tx.future), Decimal("0")
        )
        return txs

    def transaction(self, tx_id: int) -> tuple[TransactionIndex, EmuTransaction]:
        """The index holding ``tx_id`` and the operation (KeyError when unknown)."""
        for index in self.transactions.values():
            tx = index.by_id.get(tx_id)
            if tx is not None:
                return index, tx
        raise KeyError(tx_id)
