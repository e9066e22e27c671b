"""Canonical data model shared by every provider, the sync logic and the Odoo addon.

All records are frozen dataclasses. Amounts are :class:`~decimal.Decimal` (never float), signed
from the account holder's point of view: negative is money going out. Currencies are ISO 4217
codes in upper case. Datetimes are timezone-aware (UTC unless the vendor says otherwise);
dates that a bank books on are plain :class:`~datetime.date`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


class AccountType(str, enum.Enum):
    """Kind of remote account; cards and loans have their own balance sign rules."""

    CHECKING = "checking"
    SAVINGS = "savings"
    CARD = "card"
    LOAN = "loan"
    OTHER = "other"


class ConnectionState(str, enum.Enum):
    """Health of one bank login at the aggregator, as the user should understand it."""

    OK = "ok"
    SYNCING = "syncing"
    ACTION_NEEDED = "action_needed"
    TEMPORARY_FAILURE = "temporary_failure"
    DISCONNECTED = "disconnected"


class ActionReason(str, enum.Enum):
    """Why a connection needs the user (only meaningful with ``ACTION_NEEDED``)."""

    SCA = "sca"
    CREDENTIALS = "credentials"
    BANK_ACTION = "bank_action"
    PRO_VALIDATION = "pro_validation"
    CONSENT_EXPIRED = "consent_expired"
    UNSUPPORTED = "unsupported"


class TransactionStatus(str, enum.Enum):
    """Booked operations belong in the books; pending ones are provisional."""

    BOOKED = "booked"
    PENDING = "pending"


@dataclass(frozen=True)
class Institution:
    """A bank (Bridge "provider", Linxo "provider") that users can connect to."""

    remote_id: str
    name: str
    country: str
    logo_url: str | None = None
    group_name: str | None = None
    bic: str | None = None
    #: Larger is more requested; lists are sorted on it, most requested first.
    popularity: int = 0


@dataclass(frozen=True)
class Connection:
    """One bank login at one institution (Bridge "item", Linxo "connection")."""

    remote_id: str
    institution_id: str | None
    institution_name: str | None
    state: ConnectionState
    reason: ActionReason | None = None
    #: The aggregator's own explanation, in the language asked for when it supports it.
    message: str | None = None
    #: Raw vendor status (e.g. Bridge ``1010/otp_required``) kept for support and logs.
    vendor_status: str | None = None
    consent_expires_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    logo_url: str | None = None


@dataclass(frozen=True)
class Account:
    """One remote account inside a connection."""

    remote_id: str
    connection_id: str
    label: str
    currency: str
    type: AccountType = AccountType.CHECKING
    masked_number: str | None = None
    iban: str | None = None
    balance: Decimal | None = None
    balance_date: datetime | None = None
    #: False when the aggregator no longer shares this account's data.
    active: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Transaction:
    """One bank operation as the aggregator reports it."""

    remote_id: str
    account_id: str
    booking_date: date
    amount: Decimal
    currency: str
    label: str
    value_date: date | None = None
    transaction_date: date | None = None
    foreign_amount: Decimal | None = None
    foreign_currency: str | None = None
    counterparty_name: str | None = None
    counterparty_account: str | None = None
    bank_reference: str | None = None
    operation_type: str | None = None
    #: The bank's full wording when it says more than the label (the raw label, the payer's
    #: remittance information): where invoice numbers are quoted.
    remittance: str | None = None
    status: TransactionStatus = TransactionStatus.BOOKED
    deleted: bool = False
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def is_pending(self) -> bool:
        """True while the bank has not booked the operation yet."""
        return self.status is TransactionStatus.PENDING


@dataclass(frozen=True)
class Cursor:
    """Opaque resume point of a transaction stream, owned by the provider that made it.

    ``kind`` names the provider's scheme (``"updated_at"``, ``"date"``, ``"page"``...) and
    ``value`` is what the provider needs to resume. Stored as a string by the addon through
    :meth:`dumps` / :meth:`loads`.
    """

    kind: str
    value: Mapping[str, Any]

    def dumps(self) -> str:
        """Serialise for storage (stable key order)."""
        return json.dumps({"kind": self.kind, "value": dict(self.value)}, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> Cursor | None:
        """Inverse of :meth:`dumps`; ``None`` or empty text gives ``None``."""
        if not text:
            return None
        data = json.loads(text)
        return cls(kind=data["kind"], value=data["value"])


@dataclass(frozen=True)
class TransactionPage:
    """One page of a transaction stream.

    ``cursor`` is the point to resume from once this page (and every page before it) has been
    stored: persisting it together with the page's lines never loses nor repeats an operation.
    ``last`` is True on the final page; its cursor is the one to keep for the next run.
    """

    transactions: tuple[Transaction, ...]
    cursor: Cursor | None
    last: bool = False


@dataclass(frozen=True)
class ConnectSession:
    """A hosted page the user must be sent to (new connection or re-authentication)."""

    url: str
    session_id: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ConnectResult:
    """What the hosted page's return to our callback URL says.

    The callback is a hint only (the user may close the tab): callers confirm the connection's
    state by reading it from the aggregator.
    """

    state: str
    success: bool
    connection_id: str | None = None
    #: Where the user stopped (Bridge ``step``), or the vendor's error code.
    step: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """One verified aggregator event, normalised."""

    event_id: str
    type: str
    connection_id: str | None = None
    account_ids: tuple[str, ...] = ()
    user_ref: str | None = None
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Balance:
    """A balance at a point in time, used by the balance check."""

    amount: Decimal
    currency: str
    at: datetime | None = None
