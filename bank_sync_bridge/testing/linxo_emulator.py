"""A local Linxo Connect: a real HTTP server on 127.0.0.1 that behaves like the vendor.

What it emulates (``docs/aggregators.md`` §2): the "Linxo Connect Accounts" API in its current
version, **v3** (or **v2.1** with ``api_version="v2.1"``), its OAuth2 server and its widget. One
server plays the three services under distinct path prefixes (§2.1):

=============  ===================================  =========================================
service        emulator base                        what it serves
=============  ===================================  =========================================
auth           ``{base_url}/auth``                  ``POST /token`` (both OAuth2 grants)
API            ``{base_url}/api/v3`` (or ``v2.1``)  users, connections, accounts, transactions,
                                                    providers
widget         ``{base_url}/embed``                 ``POST /widget_session``, the hosted pages
                                                    ``/widget/add_connection`` and
                                                    ``/widget/edit_credentials``
=============  ===================================  =========================================

Endpoints, by service:

- auth: ``POST /token`` with the ``client_credentials`` grant (scope ``users_create``) and the
  ``password`` grant (§2.2);
- API: ``POST /users``, ``GET /users/me``, ``GET/DELETE /users/{id}``, ``GET /connections``
  (and ``GET/DELETE /connections/{id}``), ``GET /accounts`` (and ``/{id}``),
  ``GET /transactions`` with ``page``/``limit`` and a date window, ``GET /providers``
  (§2.4, §2.6), in v3's shapes or v2.1's (§2.9);
- widget: ``POST /widget_session`` and the hosted ``add_connection`` and ``edit_credentials``
  pages with test logins (:data:`TEST_LOGINS`), redirecting to ``redirect_uri`` (§2.3);
- webhook bodies (§2.7), sent only when a test asks (:meth:`LinxoEmulator.send_webhook`), never
  signed; event queues are not emulated.

Where Linxo publishes nothing (❓ in docs/aggregators.md), the emulator makes a choice and says
so next to the code: operations are served oldest first; the widget's return adds
``connection_id`` and ``status`` on a finished flow and OAuth-style ``error`` /
``error_description`` on a cancelled or failed one, keeping any query the caller put in
``redirect_uri`` (its ``state``); channel failures other than ``AUTH_FAILED`` are named
``SCA_REQUIRED``, ``USER_ACTION_REQUIRED`` and ``BANK_UNAVAILABLE``; a wrong user password is
``400 invalid_grant`` as in RFC 6749; every answer carries an ``X-Request-Id``.

Scenario control is the Python API shared with the Bridge emulator
(:class:`~bank_sync_bridge.testing._server.EmulatorServer`: clock, faults, rate limits, token and
consent expiry, operations that change) plus Linxo's own (users, connections and their statuses,
forecasts and cancelled operations, webhooks, large data sets), and the ``/__emulator__/``
endpoints for a separate process.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import math
import re
import secrets
import sys
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import requests

from ..providers._common import fold, with_query
from ..providers.base import ProviderConfig
from ._server import (
    EmulatorError,
    EmulatorReply,
    EmulatorRequest,
    EmulatorServer,
    clock_from,
    command_line,
    post_to_loopback,
    serve_until_interrupted,
)
from .clock import AdjustableClock
from .linxo_data import (
    LOGO_URL,
    PROVIDERS,
    ProviderSeed,
    generate_iban,
    generate_operations,
)

_logger = logging.getLogger(__name__)

#: Linxo's servers stamp date-only values at midnight in this zone (docs/aggregators.md §2.6).
PARIS = ZoneInfo("Europe/Paris")

#: Largest ``limit`` Linxo accepts on list endpoints (docs/aggregators.md §2.6, 🟡).
MAX_LIMIT = 500

#: The user token's scopes asked by integrations (docs/aggregators.md §2.2, 🟡).
USER_SCOPES = (
    "profile profile_edit accounts_manage connections_manage connections_sync transactions_read"
)

#: Widget test logins in the style of Bridge's Demo Bank. Any other login succeeds, as on
#: the "Linxo Test Bank" where any login/password works (docs/aggregators.md §2.8).
#: login -> (final connection status, REDIRECT channel status)
TEST_LOGINS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "success": ("SUCCESS", "SUCCESS"),
        "partial": ("PARTIAL_SUCCESS", "SUCCESS"),
        "wrong_credentials": ("FAILED", "AUTH_FAILED"),
        "sca_required": ("FAILED", "SCA_REQUIRED"),
        "action_at_bank": ("FAILED", "USER_ACTION_REQUIRED"),
        "bank_down": ("FAILED", "BANK_UNAVAILABLE"),
        "closed_account": ("CLOSED", "SUCCESS"),
    }
)

#: Connection ``status`` values (docs/aggregators.md §2.4, 🟡).
CONNECTION_STATUSES = ("RUNNING", "SUCCESS", "PARTIAL_SUCCESS", "FAILED", "CLOSED", "NONE")


def paris_midnight(day: date) -> int:
    """Unix seconds of ``day`` 00:00 in Europe/Paris, how Linxo stamps date-only values."""
    return int(datetime.combine(day, dt_time(0), tzinfo=PARIS).timestamp())


def paris_iso(day: date) -> str:
    """ISO-8601 with offset of ``day`` 00:00 in Europe/Paris (v3 ``enrichments.date``)."""
    return datetime.combine(day, dt_time(0), tzinfo=PARIS).isoformat()


# --------------------------------------------------------------------------------------------
# State records (mutable: the emulator's scenario API changes them under its lock)
# --------------------------------------------------------------------------------------------


@dataclass
class EmulatedUser:
    """A Linxo "technical" user created by the integrating application."""

    id: str
    email: str
    password: str = field(repr=False)
    client_id: str
    creation_date: int


@dataclass
class EmulatedChannel:
    """One channel of a connection (REDIRECT = PSD2 API, EMBEDDED = scraping)."""

    channel_definition_id: str
    mode: str
    status: str
    expires: int | None = None
    last_success_date: int | None = None
    last_end_date: int | None = None
    account_types: tuple[str, ...] = ()


@dataclass
class EmulatedConnection:
    """One bank login; ``final_*`` is where a RUNNING sync lands at ``sync_done_at``."""

    id: str
    user_id: str
    provider: ProviderSeed
    status: str
    creation_date: int
    channels: list[EmulatedChannel]
    final_status: str = "SUCCESS"
    final_channel_status: str = "SUCCESS"
    sync_done_at: float = 0.0

    @property
    def redirect_channel(self) -> EmulatedChannel:
        """The PSD2 channel whose ``expires`` is the consent end."""
        return self.channels[0]


@dataclass
class EmulatedAccount:
    """One bank account of a connection."""

    id: str
    connection_id: str
    user_id: str
    name: str
    type: str
    currency: str
    iban: str | None
    account_number: str
    balance: Decimal
    balance_date: int
    status: str
    creation_date: int


@dataclass
class EmulatedTransaction:
    """One bank operation; ``seq`` keeps a stable order among operations of the same day."""

    id: str
    account_id: str
    seq: int
    booking_date: date
    value_date: date
    amount: Decimal
    currency: str
    label: str
    notes: str
    type: str
    status: str = "BOOKED"
    origin: str = "TRANSACTION"
    category_id: str = "UNCATEGORIZED"
    import_date: int = 0


@dataclass
class LinxoRequest(EmulatorRequest):
    """A request as Linxo's handlers see it."""

    def form(self) -> dict[str, str]:
        """JSON or form-encoded body as a flat dict (Linxo's docs use both,
        docs/aggregators.md §2.2)."""
        if not self.body:
            return {}
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            try:
                data = json.loads(self.body)
            except ValueError:
                raise EmulatorError(400, "invalid_request", "Malformed JSON body") from None
            if not isinstance(data, dict):
                raise EmulatorError(400, "invalid_request", "JSON body must be an object")
            return {str(k): str(v) for k, v in data.items() if v is not None}
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


class LinxoEmulator(EmulatorServer):
    """Linxo Connect on 127.0.0.1: start it with ``with LinxoEmulator() as emu:``.

    ``clients`` maps OAuth client ids to secrets (default one client, see
    :attr:`client_id`/:attr:`client_secret`). ``clock`` is shared with the client under test
    so both agree on token and consent expiry. ``sync_delay`` is how long (emulated seconds)
    a new connection stays RUNNING. ``transactions_per_account`` sizes generated accounts.
    """

    request_class = LinxoRequest
    thread_name = "linxo-emulator"
    server_version = "LinxoEmulator/1.0"
    server_error_words = ("server_error", "The server failed to answer")

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: AdjustableClock | None = None,
        seed: int | str = 1,
        api_version: str = "v3",
        clients: Mapping[str, str] | None = None,
        token_lifetime: int = 3600,
        consent_days: int = 90,
        sync_delay: float = 0.0,
        transactions_per_account: int = 40,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        if api_version not in ("v3", "v2.1"):
            raise ValueError("api_version must be 'v3' or 'v2.1'")
        super().__init__(host=host, port=port, clock=clock)
        self.seed = seed
        self.api_version = api_version
        self.clients: dict[str, str] = dict(clients or {"emulator-client": "emulator-secret"})
        self.token_lifetime = token_lifetime
        self.consent_days = consent_days
        self.sync_delay = sync_delay
        self.transactions_per_account = transactions_per_account
        #: ``(max_requests, per_seconds)`` per access token on the API, or None (Linxo
        #: publishes no limit, docs/aggregators.md §2.10).
        self.rate_limit = rate_limit
        #: Webhook bodies generated by finished syncs, waiting for :meth:`deliver_events`.
        self.pending_events: list[dict[str, Any]] = []
        self.webhook_url: str | None = None
        self._ids = itertools.count(1)
        self._users: dict[str, EmulatedUser] = {}
        self._tokens: dict[str, dict[str, Any]] = {}
        self._widget_sessions: dict[str, dict[str, Any]] = {}
        self._connections: dict[str, EmulatedConnection] = {}
        self._accounts: dict[str, EmulatedAccount] = {}
        self._transactions: dict[str, list[EmulatedTransaction]] = {}
        self._tx_index: dict[str, EmulatedTransaction] = {}
        self._date_keys: dict[str, list[int]] = {}
        self._midnights: dict[date, int] = {}
        self._iso_midnights: dict[date, str] = {}
        self._hits: dict[str, deque[float]] = {}

    @property
    def auth_url(self) -> str:
        """Base of the OAuth2 server (``{auth}/token``)."""
        return f"{self.base_url}/auth"

    @property
    def api_url(self) -> str:
        """Base of the versioned API (``{api}/users``, ``{api}/transactions``...)."""
        return f"{self.base_url}/api/{self.api_version}"

    @property
    def widget_url(self) -> str:
        """Base of the widget ("embed") service."""
        return f"{self.base_url}/embed"

    @property
    def client_id(self) -> str:
        """The first configured OAuth client id."""
        return next(iter(self.clients))

    @property
    def client_secret(self) -> str:
        """The secret of :attr:`client_id`."""
        return self.clients[self.client_id]

    @property
    def admin_secret(self) -> str:
        """The ``/__emulator__/`` endpoints want the first client's secret."""
        return self.client_secret

    def provider_config(self, user_ref: str, **options: Any) -> ProviderConfig:
        """A :class:`ProviderConfig` pointing a ``LinxoProvider`` at this emulator."""
        merged: dict[str, Any] = {
            "auth_url": self.auth_url,
            "widget_url": self.widget_url,
            "api_version": self.api_version,
        }
        merged.update(options)
        return ProviderConfig(
            user_ref=user_ref,
            base_url=self.api_url,
            credentials={"client_id": self.client_id, "client_secret": self.client_secret},
            options=merged,
            timeout=5.0,
        )

    # ---- helpers -------------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.timestamp()

    def _new_id(self, base: int) -> str:
        return str(base + next(self._ids))

    def _today(self) -> date:
        return self.clock.now().astimezone(PARIS).date()

    # ---- scenario control: users, connections, accounts ------------------------------------

    def create_user(self, email: str, password: str, client_id: str | None = None) -> str:
        """Create a user directly (as ``POST /users`` would); returns its id."""
        with self.lock:
            if any(u.email == email for u in self._users.values()):
                raise ValueError(f"user {email} exists")
            user = EmulatedUser(
                id=self._new_id(3_996_000),
                email=email,
                password=password,
                client_id=client_id or self.client_id,
                creation_date=int(self._now()),
            )
            self._users[user.id] = user
            return user.id

    def find_user(self, email: str) -> str | None:
        """Id of the user with ``email``, or None."""
        with self.lock:
            return next((u.id for u in self._users.values() if u.email == email), None)

    def user_ids(self) -> list[str]:
        """Ids of every existing user."""
        with self.lock:
            return list(self._users)

    def create_connection(
        self,
        user_id: str,
        *,
        login: str = "success",
        provider_id: str = "9999",
        transactions_per_account: int | None = None,
    ) -> str:
        """Create a connection as the widget would for ``login`` (see :data:`TEST_LOGINS`);
        it stays RUNNING for :attr:`sync_delay` emulated seconds, then lands."""
        with self.lock:
            if user_id not in self._users:
                raise KeyError(user_id)
            provider = next((p for p in PROVIDERS if p.id == provider_id), PROVIDERS[-1])
            final_status, channel_status = TEST_LOGINS.get(login, TEST_LOGINS["success"])
            now = int(self._now())
            conn = EmulatedConnection(
                id=self._new_id(4_471_000),
                user_id=user_id,
                provider=provider,
                status="RUNNING",
                creation_date=now,
                channels=[
                    EmulatedChannel(
                        channel_definition_id=f"{provider.id}01",
                        mode="REDIRECT",
                        status="RUNNING",
                        expires=now + self.consent_days * 86400,
                        account_types=("CHECKINGS", "CREDIT_CARD"),
                    ),
                    EmulatedChannel(
                        channel_definition_id=f"{provider.id}00",
                        mode="EMBEDDED",
                        status="EMPTY",
                        account_types=("CHECKINGS", "SAVINGS", "LOAN", "CREDIT_CARD"),
                    ),
                ],
                final_status=final_status,
                final_channel_status=channel_status,
                sync_done_at=now + self.sync_delay,
            )
            self._connections[conn.id] = conn
            if final_status in ("SUCCESS", "PARTIAL_SUCCESS", "CLOSED"):
                count = (
                    self.transactions_per_account
                    if transactions_per_account is None
                    else transactions_per_account
                )
                self._populate(conn, count, partial=final_status == "PARTIAL_SUCCESS")
                if final_status == "CLOSED":
                    for account in self._accounts.values():
                        if account.connection_id == conn.id:
                            account.status = "CLOSED"
            self._settle(conn)
            return conn.id

    def _populate(self, conn: EmulatedConnection, count: int, *, partial: bool) -> None:
        today = self._today()
        checking = self.add_account(conn.id, name="Compte courant pro", type="CHECKINGS")
        self.add_transactions(
            checking, count, start=today - timedelta(days=60), end=today - timedelta(days=1)
        )
        # One pending card payment and one forecast line, as real feeds have
        # (docs/aggregators.md §2.6).
        self.add_transaction(checking, Decimal("-42.90"), "CB BOULANGERIE", pending=True)
        self.add_forecast(
            checking, Decimal("-350.00"), "URSSAF échéance prévue", on=today + timedelta(days=5)
        )
        savings = self.add_account(conn.id, name="Livret A association", type="SAVINGS")
        self.add_transaction(savings, Decimal("12.34"), "INTERETS", on=today - timedelta(days=3))
        if partial:
            self._accounts[savings].status = "ERROR"

    def add_account(
        self,
        connection_id: str,
        *,
        name: str = "Compte courant",
        type: str = "CHECKINGS",
        currency: str = "EUR",
        iban: str | None = "generate",
        status: str = "ACTIVE",
    ) -> str:
        """Add an account to a connection; returns its id (balance starts at 1000.00)."""
        with self.lock:
            conn = self._connections[connection_id]
            account_id = self._new_id(77_100_000)
            self._accounts[account_id] = EmulatedAccount(
                id=account_id,
                connection_id=connection_id,
                user_id=conn.user_id,
                name=name,
                type=type,
                currency=currency,
                iban=generate_iban(f"{self.seed}:{account_id}") if iban == "generate" else iban,
                account_number=f"0000{account_id}",
                balance=Decimal("1000.00"),
                balance_date=int(self._now()),
                status=status,
                creation_date=int(self._now()),
            )
            self._transactions[account_id] = []
            return account_id

    def account(self, account_id: str) -> EmulatedAccount:
        """The account ``account_id`` as the bank holds it now (KeyError when unknown)."""
        with self.lock:
            return self._accounts[account_id]

    def account_ids(self, connection_id: str) -> list[str]:
        """Ids of a connection's accounts."""
        with self.lock:
            return [a.id for a in self._accounts.values() if a.connection_id == connection_id]

    def set_account_status(self, account_id: str, status: str) -> None:
        """Change an account's status (ACTIVE, ERROR, NOT_FOUND, CLOSED, PENDING_CONSENT...)."""
        with self.lock:
            self._accounts[account_id].status = status

    def set_connection_status(
        self, connection_id: str, status: str, *, channel_status: str | None = None
    ) -> None:
        """Put a connection in ``status`` now (and its REDIRECT channel in
        ``channel_status``), e.g. RUNNING → FAILED."""
        if status not in CONNECTION_STATUSES:
            raise ValueError(status)
        with self.lock:
            conn = self._connections[connection_id]
            conn.status = conn.final_status = status
            # RUNNING set by hand stays so until a test changes it again.
            conn.sync_done_at = math.inf if status == "RUNNING" else self._now()
            channel = conn.redirect_channel
            channel.status = conn.final_channel_status = channel_status or (
                "SUCCESS" if status in ("SUCCESS", "PARTIAL_SUCCESS") else status
            )
            channel.last_end_date = int(self._now())

    def start_sync(
        self,
        connection_id: str,
        *,
        duration: float = 60.0,
        final_status: str = "SUCCESS",
        channel_status: str = "SUCCESS",
    ) -> None:
        """Make a connection RUNNING for ``duration`` emulated seconds, then land."""
        with self.lock:
            conn = self._connections[connection_id]
            conn.status = "RUNNING"
            conn.redirect_channel.status = "RUNNING"
            conn.final_status = final_status
            conn.final_channel_status = channel_status
            conn.sync_done_at = self._now() + duration

    def require_sca(self, connection_id: str) -> None:
        """The bank asks for strong authentication: the last sync failed for it."""
        self.set_connection_status(connection_id, "FAILED", channel_status="SCA_REQUIRED")

    def expire_consent(self, connection_id: str) -> EmulatedConnection:
        """End the PSD2 consent now: the REDIRECT channel's ``expires`` passes."""
        with self.lock:
            conn = self._connections[connection_id]
            conn.redirect_channel.expires = int(self._now()) - 1
            return conn

    def _settle(self, conn: EmulatedConnection) -> None:
        """Apply what emulated time implies: a sync ends, a consent runs out."""
        now = self._now()
        channel = conn.redirect_channel
        if conn.status == "RUNNING" and now >= conn.sync_done_at:
            conn.status = conn.final_status
            channel.status = conn.final_channel_status
            channel.last_end_date = int(now)
            synced = conn.status in ("SUCCESS", "PARTIAL_SUCCESS")
            if synced:
                channel.last_success_date = int(now)
            self.pending_events.append(self._event_body(conn, new_transactions=synced))
        if (
            conn.status in ("SUCCESS", "PARTIAL_SUCCESS")
            and channel.expires is not None
            and channel.expires <= now
        ):
            # The next daily sync after the consent end fails to authenticate at the bank.
            conn.status = "FAILED"
            channel.status = "AUTH_FAILED"
            channel.last_end_date = int(now)

    # ---- scenario control: operations --------------------------------------------------------

    def add_transaction(
        self,
        account_id: str,
        amount: Decimal | str,
        label: str,
        *,
        on: date | None = None,
        pending: bool = False,
        value_date: date | None = None,
        raw_label: str | None = None,
        stamped_ago: timedelta | None = None,
    ) -> EmulatedTransaction:
        """Add one operation booked ``on`` that day (Paris; today by default), or ``pending``
        (status PENDING). A late back-dated one is simply an old day, stamped with today's
        ``import_date`` (``stamped_ago`` earlier: Linxo is read by date, so only the stamp
        moves)."""
        return self._new_transaction(
            account_id,
            amount,
            label,
            on=on,
            status="PENDING" if pending else "BOOKED",
            value_date=value_date,
            notes=raw_label,
            stamped_ago=stamped_ago,
        )

    def add_forecast(
        self,
        account_id: str,
        amount: Decimal | str,
        label: str,
        *,
        on: date,
        origin: str = "UPCOMING",
    ) -> EmulatedTransaction:
        """A forecast line (``origin`` UPCOMING, RECURRING or SCHEDULED) next to the real ones:
        Linxo serves it with the operations; it must never be booked."""
        return self._new_transaction(account_id, amount, label, on=on, origin=origin)

    def _new_transaction(
        self,
        account_id: str,
        amount: Decimal | str,
        label: str,
        *,
        on: date | None = None,
        status: str = "BOOKED",
        value_date: date | None = None,
        origin: str = "TRANSACTION",
        type: str = "OTHER",
        notes: str | None = None,
        stamped_ago: timedelta | None = None,
    ) -> EmulatedTransaction:
        with self.lock:
            account = self._accounts[account_id]
            booked = on or self._today()
            tx = EmulatedTransaction(
                id=self._new_id(5_120_000_000),
                account_id=account_id,
                seq=next(self._ids),
                booking_date=booked,
                value_date=value_date or booked,
                amount=Decimal(amount),
                currency=account.currency,
                label=label,
                notes=notes or label.upper(),
                type=type,
                status=status,
                origin=origin,
                import_date=int(self._now() - (stamped_ago or timedelta(0)).total_seconds()),
            )
            self._insert(tx)
            return tx

    def add_transactions(
        self, account_id: str, count: int, *, start: date, end: date, seed: int | str = ""
    ) -> list[str]:
        """Add ``count`` deterministic operations over ``[start, end]``; returns their ids.

        Tens of thousands are fine (a benchmark account): generation is linear and the
        date index is rebuilt once.
        """
        with self.lock:
            account = self._accounts[account_id]
            ops = generate_operations(
                f"{self.seed}:{account_id}:{seed}", count, start=start, end=end
            )
            now = int(self._now())
            rows = self._transactions[account_id]
            ids = []
            for op in ops:
                seq = next(self._ids)
                tx = EmulatedTransaction(
                    id=str(5_120_000_000 + seq),
                    account_id=account_id,
                    seq=seq,
                    booking_date=op.booking_date,
                    value_date=op.value_date,
                    amount=op.amount,
                    currency=account.currency,
                    label=op.label,
                    notes=op.notes,
                    type=op.type,
                    import_date=now,
                )
                rows.append(tx)
                self._tx_index[tx.id] = tx
                ids.append(tx.id)
            account.balance += sum((op.amount for op in ops), Decimal(0))
            self._date_keys.pop(account_id, None)
            return ids

    def _insert(self, tx: EmulatedTransaction) -> None:
        self._transactions[tx.account_id].append(tx)
        self._tx_index[tx.id] = tx
        self._date_keys.pop(tx.account_id, None)

    def transaction(self, tx_id: str) -> EmulatedTransaction:
        """The stored operation ``tx_id`` (to read or change it in a test)."""
        with self.lock:
            return self._tx_index[tx_id]

    def transaction_ids(self, account_id: str) -> list[str]:
        """Ids of an account's operations, in the order the API serves them."""
        with self.lock:
            return [tx.id for tx in self._sorted(account_id)]

    def book_pending(
        self, tx_id: str, *, new_id: bool = False, on: date | None = None
    ) -> EmulatedTransaction:
        """A pending operation gets booked (``on`` that day): same id, or (``new_id=True``)
        the pending line vanishes and a booked twin appears under a new id. Returns the
        booked operation."""
        with self.lock:
            tx = self._tx_index[tx_id]
            if not new_id:
                tx.status = "BOOKED"
                if on:
                    tx.booking_date = on
                self._date_keys.pop(tx.account_id, None)
                return tx
            self.delete_transaction(tx_id)
            return self._new_transaction(
                tx.account_id,
                tx.amount,
                tx.label,
                on=on or tx.booking_date,
                value_date=tx.value_date,
                type=tx.type,
                notes=tx.notes,
            )

    def cancel_transaction(self, tx_id: str, status: str = "CANCELLED") -> EmulatedTransaction:
        """Mark an operation CANCELLED (or REJECTED/EXPIRED): still served, with that status."""
        with self.lock:
            tx = self._tx_index[tx_id]
            tx.status = status
            return tx

    def delete_transaction(self, tx_id: str) -> EmulatedTransaction:
        """Remove an operation entirely: Linxo has no deletion flag, it silently disappears
        from the feed."""
        with self.lock:
            tx = self._tx_index.pop(tx_id)
            self._transactions[tx.account_id].remove(tx)
            self._date_keys.pop(tx.account_id, None)
            return tx

    def change_transaction(
        self,
        tx_id: str,
        *,
        label: str | None = None,
        raw_label: str | None = None,
        shift_days: int = 0,
    ) -> EmulatedTransaction:
        """The bank changes an operation: its clean ``label`` (Linxo's enrichment improves
        over time), its raw ``notes`` (``raw_label``), or its booking date (banks move it
        between pending and booked)."""
        with self.lock:
            tx = self._tx_index[tx_id]
            if label is not None:
                tx.label = label
            if raw_label is not None:
                tx.notes = raw_label
            if shift_days:
                tx.booking_date += timedelta(days=shift_days)
                self._date_keys.pop(tx.account_id, None)
            return tx

    def _sorted(self, account_id: str) -> list[EmulatedTransaction]:
        rows = self._transactions[account_id]
        if account_id not in self._date_keys:
            rows.sort(key=lambda t: (t.booking_date, t.seq))
            self._date_keys[account_id] = [self._midnight(t.booking_date) for t in rows]
        return rows

    # ---- scenario control: tokens, limits (the clock and faults: EmulatorServer) ------------

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working (as after their ``expires_in``)."""
        with self.lock:
            for token in self._tokens.values():
                token["expires_at"] = 0.0

    def reset_rate_limits(self) -> None:
        """Forget request counts (after a test that deliberately exhausted them)."""
        with self.lock:
            self._hits.clear()

    # ---- events ------------------------------------------------------------------------------

    def _event_body(self, conn: EmulatedConnection, *, new_transactions: bool) -> dict[str, Any]:
        return {
            "id": f"evt-{secrets.token_hex(6)}",
            "event_type": "UPDATED",
            "resource_type": "CONNECTIONS",
            "creation_date": int(self._now()),
            "channel_definition_id": conn.redirect_channel.channel_definition_id,
            "resource": f"/connections/{conn.id}",
            "new_transactions": new_transactions,
        }

    def webhook_body(self, connection_id: str, *, new_transactions: bool = True) -> bytes:
        """The JSON body Linxo would POST for an update of ``connection_id``."""
        with self.lock:
            conn = self._connections[connection_id]
            return json.dumps(self._event_body(conn, new_transactions=new_transactions)).encode()

    def send_webhook(self, body: bytes, url: str | None = None) -> int:
        """POST ``body`` to ``url`` (default :attr:`webhook_url`, loopback only); returns the
        HTTP status. Duplicates and out-of-order deliveries are the caller sending twice or
        in another order. Linxo signs nothing (docs/aggregators.md §2.7), so no signature
        header."""
        target = url or self.webhook_url
        if not target:
            raise ValueError("no webhook URL")
        delivery = post_to_loopback(target, body, {"Content-Type": "application/json"})
        if delivery.status is None:
            raise ConnectionError(f"The webhook could not be delivered: {delivery.error}")
        return delivery.status

    def deliver_events(self) -> list[int]:
        """Send the webhooks of finished syncs (in order) to :attr:`webhook_url`."""
        with self.lock:
            events, self.pending_events = self.pending_events, []
        return [self.send_webhook(json.dumps(event).encode()) for event in events]

    # ---- HTTP dispatch ---------------------------------------------------------------------

    def error_body(self, error: EmulatorError) -> dict[str, Any]:
        """Linxo's OAuth-style error shape ``{error, error_description}``."""
        return {"error": error.code, "error_description": error.message}

    def answer(self, request: EmulatorRequest) -> EmulatorReply:
        """One call on any of the three services; the hosted widget pages are never
        rate-limited (a browser shows them)."""
        assert isinstance(request, LinxoRequest)  # noqa: S101 - request_class guarantees it
        with self.lock:
            if not request.path.startswith("/embed/widget/"):
                forced = self.take_forced_rate_limit()
                if forced is not None:
                    raise forced
            return self._route(request)

    def _json(self, status: int, payload: Any) -> EmulatorReply:
        return EmulatorReply(status, payload)

    _ROUTES: tuple[tuple[str, str, str], ...] = (
        ("POST", r"/auth/token", "_token"),
        ("POST", r"/api/{v}/users", "_create_user"),
        ("GET", r"/api/{v}/users/me", "_get_me"),
        ("GET", r"/api/{v}/users/(?P<id>[^/]+)", "_get_user"),
        ("DELETE", r"/api/{v}/users/(?P<id>[^/]+)", "_delete_user"),
        ("GET", r"/api/{v}/connections", "_list_connections"),
        ("GET", r"/api/{v}/connections/(?P<id>[^/]+)", "_get_connection"),
        ("DELETE", r"/api/{v}/connections/(?P<id>[^/]+)", "_delete_connection"),
        ("GET", r"/api/{v}/accounts", "_list_accounts"),
        ("GET", r"/api/{v}/accounts/(?P<id>[^/]+)", "_get_account"),
        ("GET", r"/api/{v}/transactions", "_list_transactions"),
        ("GET", r"/api/{v}/providers", "_list_providers"),
        ("POST", r"/embed/widget_session", "_widget_session"),
        ("GET", r"/embed/widget/(?P<page>add_connection|edit_credentials)", "_widget_page"),
        ("POST", r"/embed/widget/(?P<page>add_connection|edit_credentials)", "_widget_submit"),
    )

    def _route(self, request: LinxoRequest) -> EmulatorReply:
        version = re.escape(self.api_version)
        path_known = False
        for method, pattern, name in self._ROUTES:
            match = re.fullmatch(pattern.replace("{v}", version), request.path)
            if match is None:
                continue
            path_known = True
            if method == request.method:
                handler: Callable[..., EmulatorReply] = getattr(self, name)
                return handler(request, **match.groupdict())
        if path_known:
            raise EmulatorError(405, "method_not_allowed", "Method not allowed")
        raise EmulatorError(404, "not_found", f"No route for {request.path}")

    # ---- auth ------------------------------------------------------------------------------

    def _client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        """Known client with its exact secret (an unknown id without secret is refused)."""
        expected = self.clients.get(client_id or "")
        return expected is not None and client_secret is not None and client_secret == expected

    def _token(self, request: LinxoRequest) -> EmulatorReply:
        form = request.form()
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret")
        if not self._client_ok(client_id, client_secret):
            raise EmulatorError(401, "invalid_client", "Client authentication failed")
        grant = form.get("grant_type")
        if grant == "client_credentials":
            scope = form.get("scope", "users_create")
            if scope != "users_create":
                raise EmulatorError(400, "invalid_scope", f"Scope not allowed: {scope}")
            return self._issue(kind="client", client_id=client_id, user_id=None, scope=scope)
        if grant == "password":
            username, password = form.get("username"), form.get("password")
            if not username or not password:
                raise EmulatorError(400, "invalid_request", "username and password are required")
            user = next(
                (u for u in self._users.values() if u.email == username),
                None,
            )
            if user is None or user.password != password or user.client_id != client_id:
                raise EmulatorError(400, "invalid_grant", "Bad user credentials")
            return self._issue(
                kind="user", client_id=client_id, user_id=user.id, scope=form.get("scope", "")
            )
        raise EmulatorError(400, "unsupported_grant_type", f"Unsupported grant type: {grant}")

    def _issue(
        self, *, kind: str, client_id: str, user_id: str | None, scope: str
    ) -> EmulatorReply:
        now = self._now()
        # Forget long-dead tokens (kept an hour after expiry so "expired" stays distinct from
        # "unknown" in tests): a long-running emulator must not grow without end.
        for old in [t for t, i in self._tokens.items() if i["expires_at"] < now - 3600]:
            del self._tokens[old]
            self._hits.pop(old, None)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = {
            "kind": kind,
            "client_id": client_id,
            "user_id": user_id,
            "expires_at": self._now() + self.token_lifetime,
        }
        return self._json(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "scope": scope,
            },
        )

    def _bearer(self, request: LinxoRequest, kind: str) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise EmulatorError(401, "invalid_token", "Missing bearer token")
        info = self._tokens.get(token)
        if info is None or info["expires_at"] <= self._now():
            raise EmulatorError(401, "invalid_token", "The access token is invalid or has expired")
        if info["kind"] != kind:
            raise EmulatorError(403, "insufficient_scope", f"This call needs a {kind} token")
        if self.rate_limit is not None:
            max_calls, window = self.rate_limit
            hits = self._hits.setdefault(token, deque())
            now = self._now()
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= max_calls:
                retry = max(1, int(hits[0] + window - now) + 1)
                raise self.too_many_requests("Rate limit exceeded", retry)
            hits.append(now)
        return info

    def _user_scope(self, request: LinxoRequest) -> str:
        """The user of the bearer token, checking v3's mandatory ``user_id`` parameter."""
        info = self._bearer(request, "user")
        user_id = request.query.get("user_id")
        if self.api_version == "v3" and not user_id:
            raise EmulatorError(400, "invalid_request", "user_id is required")
        if user_id and user_id != info["user_id"]:
            raise EmulatorError(403, "forbidden", "user_id does not match the access token")
        return str(info["user_id"])

    # ---- users -------------------------------------------------------------------------------

    def _create_user(self, request: LinxoRequest) -> EmulatorReply:
        info = self._bearer(request, "client")
        form = request.form()
        email, password = form.get("email", ""), form.get("password", "")
        if "@" not in email or len(password) < 8:
            raise EmulatorError(400, "invalid_request", "A valid email and password are required")
        if any(u.email == email for u in self._users.values()):
            raise EmulatorError(409, "conflict", "A user with this email already exists")
        user_id = self.create_user(email, password, client_id=info["client_id"])
        return EmulatorReply(201, headers={"Location": f"{self.api_url}/users/{user_id}"})

    def _user_json(self, user: EmulatedUser) -> dict[str, Any]:
        return {
            "id": user.id,
            "email": user.email,
            "first_name": None,
            "last_name": None,
            "creation_date": user.creation_date,
            "email_verified": False,
        }

    def _get_me(self, request: LinxoRequest) -> EmulatorReply:
        info = self._bearer(request, "user")
        return self._json(200, self._user_json(self._users[info["user_id"]]))

    def _get_user(self, request: LinxoRequest, id: str) -> EmulatorReply:
        info = self._bearer(request, "client")
        user = self._users.get(id)
        if user is None or user.client_id != info["client_id"]:
            raise EmulatorError(404, "not_found", "User not found")
        return self._json(200, self._user_json(user))

    def _delete_user(self, request: LinxoRequest, id: str) -> EmulatorReply:
        info = self._bearer(request, "client")
        user = self._users.get(id)
        if user is None or user.client_id != info["client_id"]:
            raise EmulatorError(404, "not_found", "User not found")
        for conn_id in [c.id for c in self._connections.values() if c.user_id == id]:
            self._drop_connection(conn_id)
        del self._users[id]
        for token in [t for t, i in self._tokens.items() if i["user_id"] == id]:
            del self._tokens[token]
        return EmulatorReply(204)

    # ---- connections ---------------------------------------------------------------------------

    def _connection_json(self, conn: EmulatedConnection) -> dict[str, Any]:
        self._settle(conn)
        logo_key = "provider_logo_url" if self.api_version == "v3" else "logo_url"
        channels = []
        for ch in conn.channels:
            item: dict[str, Any] = {
                "channel_definition_id": ch.channel_definition_id,
                "mode": ch.mode,
                "status": ch.status,
                "credentials": [],
                "account_types": list(ch.account_types),
                "channel_definition_unavailable": False,
            }
            for key in ("expires", "last_success_date", "last_end_date"):
                if getattr(ch, key) is not None:
                    item[key] = getattr(ch, key)
            channels.append(item)
        return {
            "id": conn.id,
            "provider_id": conn.provider.id,
            "name": conn.provider.name,
            "status": conn.status,
            "creation_date": conn.creation_date,
            "auto_sync": True,
            logo_key: LOGO_URL.format(id=conn.provider.id),
            "channels": channels,
            "owner": {"name": "ASSOCIATION DEMO"},
            "consent_per_account": False,
            "user_id": conn.user_id,
        }

    def _wrap(self, key: str, items: list[dict[str, Any]]) -> Any:
        return {key: items} if self.api_version == "v3" else items

    def _owned_connection(self, request: LinxoRequest, connection_id: str) -> EmulatedConnection:
        info = self._bearer(request, "user")
        conn = self._connections.get(connection_id)
        if conn is None or conn.user_id != info["user_id"]:
            raise EmulatorError(404, "not_found", "Connection not found")
        return conn

    def _list_connections(self, request: LinxoRequest) -> EmulatorReply:
        user_id = self._user_scope(request)
        items = [
            self._connection_json(c) for c in self._connections.values() if c.user_id == user_id
        ]
        return self._json(200, self._wrap("connections", items))

    def _get_connection(self, request: LinxoRequest, id: str) -> EmulatorReply:
        return self._json(200, self._connection_json(self._owned_connection(request, id)))

    def _delete_connection(self, request: LinxoRequest, id: str) -> EmulatorReply:
        self._owned_connection(request, id)
        self._drop_connection(id)
        return EmulatorReply(204)

    def _drop_connection(self, connection_id: str) -> None:
        del self._connections[connection_id]
        for account_id in [
            a.id for a in self._accounts.values() if a.connection_id == connection_id
        ]:
            del self._accounts[account_id]
            for tx in self._transactions.pop(account_id, []):
                self._tx_index.pop(tx.id, None)
            self._date_keys.pop(account_id, None)

    # ---- accounts ------------------------------------------------------------------------------

    def _paging(self, request: LinxoRequest, default_limit: int = 100) -> tuple[int, int]:
        try:
            page = int(request.query.get("page") or 1)
            limit = int(request.query.get("limit") or default_limit)
        except ValueError:
            raise EmulatorError(400, "invalid_request", "page and limit must be integers") from None
        if page < 1:
            raise EmulatorError(400, "invalid_request", "page must be 1 or more")
        if not 1 <= limit <= MAX_LIMIT:
            raise EmulatorError(400, "invalid_request", f"limit must be between 1 and {MAX_LIMIT}")
        if request.fault == "repeat_page":
            # A faulty server that ignores ``page`` and serves the first one again: the client
            # must notice instead of looping forever.
            page = 1
        return page, limit

    def _account_json(self, account: EmulatedAccount) -> dict[str, Any]:
        if self.api_version == "v3":
            balance: Any = {
                "amount": {"amount": f"{account.balance:.2f}", "currency": account.currency}
            }
        else:
            balance = float(account.balance)
        return {
            "id": account.id,
            "connection_id": account.connection_id,
            "name": account.name,
            "account_number": account.account_number,
            "iban": account.iban,
            "currency": account.currency,
            "balance": balance,
            "balance_date": account.balance_date,
            "type": account.type,
            "status": account.status,
            "creation_date": account.creation_date,
            "owner": {"name": "ASSOCIATION DEMO"},
            "usage": "PERSONAL",
        }

    def _list_accounts(self, request: LinxoRequest) -> EmulatorReply:
        user_id = self._user_scope(request)
        page, limit = self._paging(request)
        connection_id = request.query.get("connection_id")
        rows = [
            a
            for a in self._accounts.values()
            if a.user_id == user_id and (connection_id is None or a.connection_id == connection_id)
        ]
        window = rows[(page - 1) * limit : page * limit]
        return self._json(200, self._wrap("accounts", [self._account_json(a) for a in window]))

    def _get_account(self, request: LinxoRequest, id: str) -> EmulatorReply:
        info = self._bearer(request, "user")
        account = self._accounts.get(id)
        if account is None or account.user_id != info["user_id"]:
            raise EmulatorError(404, "not_found", "Account not found")
        return self._json(200, self._account_json(account))

    # ---- transactions --------------------------------------------------------------------------

    def _date_param(self, request: LinxoRequest, name: str) -> int | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return None
        if self.api_version == "v3":
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                raise EmulatorError(
                    400, "invalid_request", f"{name} must be an ISO-8601 date-time"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=PARIS)
            return int(parsed.timestamp())
        try:
            return int(raw)
        except ValueError:
            raise EmulatorError(400, "invalid_request", f"{name} must be unix seconds") from None

    def _midnight(self, day: date) -> int:
        # Zone conversions dominate the cost of a 500-line page: remember them per day.
        stamp = self._midnights.get(day)
        if stamp is None:
            stamp = self._midnights[day] = paris_midnight(day)
        return stamp

    def _iso(self, day: date) -> str:
        text = self._iso_midnights.get(day)
        if text is None:
            text = self._iso_midnights[day] = paris_iso(day)
        return text

    def _transaction_json(self, tx: EmulatedTransaction) -> dict[str, Any]:
        booked, valued = self._midnight(tx.booking_date), self._midnight(tx.value_date)
        dates = {
            "date": booked,
            "booking_date": booked,
            "transaction_date": valued,
            "value_date": valued,
            "import_date": tx.import_date,
        }
        remittance = tx.notes.split("\n")
        common: dict[str, Any] = {
            "id": tx.id,
            "account_id": tx.account_id,
            "type": tx.type,
            "origin": tx.origin,
            "status": tx.status,
            "category_id": tx.category_id,
            "notes": tx.notes,
            "remittance_information": remittance,
            "source": {"label": tx.label},
        }
        if self.api_version == "v3":
            return {
                **common,
                "amount": {"amount": f"{tx.amount:.2f}", "currency": tx.currency},
                "label": tx.label,
                **dates,
                "enrichments": {"display_label": tx.label, "date": self._iso(tx.booking_date)},
            }
        return {
            **common,
            "amount": float(tx.amount),
            "currency": tx.currency,
            "label": tx.label,
            **dates,
        }

    def _list_transactions(self, request: LinxoRequest) -> EmulatorReply:
        user_id = self._user_scope(request)
        page, limit = self._paging(request)
        param = "account_ids" if self.api_version == "v3" else "account_id"
        wanted = [v for raw in request.values(param) for v in raw.split(",") if v]
        for account_id in wanted:
            account = self._accounts.get(account_id)
            if account is None or account.user_id != user_id:
                raise EmulatorError(404, "not_found", f"Account {account_id} not found")
        if not wanted:
            wanted = [a.id for a in self._accounts.values() if a.user_id == user_id]
        start = self._date_param(request, "start_date")
        end = self._date_param(request, "end_date")
        rows: list[EmulatedTransaction] = []
        for account_id in wanted:
            ordered = self._sorted(account_id)
            keys = self._date_keys[account_id]
            low = 0 if start is None else bisect_left(keys, start)
            high = len(keys) if end is None else bisect_right(keys, end)
            rows.extend(ordered[low:high])
        window = rows[(page - 1) * limit : page * limit]
        return self._json(
            200, self._wrap("transactions", [self._transaction_json(t) for t in window])
        )

    # ---- providers -------------------------------------------------------------------------

    def _list_providers(self, request: LinxoRequest) -> EmulatorReply:
        # Linxo's provider list needs an application token or a user token; both work here.
        header = request.headers.get("Authorization", "")
        token = header.partition(" ")[2]
        info = self._tokens.get(token)
        if info is None or info["expires_at"] <= self._now():
            raise EmulatorError(401, "invalid_token", "The access token is invalid or has expired")
        page, limit = self._paging(request, default_limit=250)
        query = fold(request.query.get("q") or "")
        country = (request.query.get("country") or "").upper()
        rows = [
            p
            for p in PROVIDERS
            if (not query or query in fold(p.name)) and (not country or p.country == country)
        ]
        window = rows[(page - 1) * limit : page * limit]
        items = [
            {
                "id": p.id,
                "name": p.name,
                "country": p.country,
                "group": p.group,
                "logo_url": LOGO_URL.format(id=p.id),
            }
            for p in window
        ]
        return self._json(200, self._wrap("providers", items))

    # ---- widget ------------------------------------------------------------------------------

    def _widget_session(self, request: LinxoRequest) -> EmulatorReply:
        form = request.form()
        client_id = form.get("client_id", "")
        if not self._client_ok(client_id, form.get("client_secret")):
            raise EmulatorError(401, "invalid_client", "Client authentication failed")
        info = self._tokens.get(form.get("access_token", ""))
        if info is None or info["kind"] != "user" or info["expires_at"] <= self._now():
            raise EmulatorError(401, "invalid_token", "The user access token is invalid or expired")
        now = self._now()
        for stale in [k for k, v in self._widget_sessions.items() if v["expires_at"] < now]:
            del self._widget_sessions[stale]
        session_id = secrets.token_urlsafe(18)
        self._widget_sessions[session_id] = {
            "user_id": info["user_id"],
            # Widget sessions are short-lived (❓ duration not published; 30 minutes here).
            "expires_at": self._now() + 1800,
        }
        link = f"{self.widget_url}/widget/add_connection?session_id={session_id}"
        return self._json(
            200, {"session_id": session_id, "_links": {"add_connection": {"href": link}}}
        )

    def _widget_context(self, values: Mapping[str, str], page: str) -> dict[str, Any]:
        session = self._widget_sessions.get(values.get("session_id", ""))
        if session is None or session["expires_at"] <= self._now():
            raise EmulatorError(400, "invalid_session", "The widget session is invalid or expired")
        redirect_uri = values.get("redirect_uri", "")
        if urlsplit(redirect_uri).scheme not in ("http", "https"):
            raise EmulatorError(400, "invalid_request", "redirect_uri must be an http(s) URL")
        context: dict[str, Any] = {"user_id": session["user_id"], "redirect_uri": redirect_uri}
        if page == "edit_credentials":
            conn = self._connections.get(values.get("connection_id", ""))
            if conn is None or conn.user_id != session["user_id"]:
                raise EmulatorError(404, "not_found", "Connection not found")
            context["connection"] = conn
        return context

    def _widget_page(self, request: LinxoRequest, page: str) -> EmulatorReply:
        values = dict(request.query)
        context = self._widget_context(values, page)
        french = values.get("locale", "en").startswith("fr")
        title = {
            "add_connection": "Ajouter une banque" if french else "Add a bank",
            "edit_credentials": "Mettre à jour l'accès" if french else "Update bank access",
        }[page]
        esc = html.escape
        hidden = "".join(
            f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
            for k, v in values.items()
            if k in ("session_id", "redirect_uri", "connection_id", "locale")
        )
        if page == "add_connection":
            preselected = values.get("provider_id")
            options = "".join(
                f'<option value="{esc(p.id)}"{" selected" if p.id == preselected else ""}>'
                f"{esc(p.name)}</option>"
                for p in PROVIDERS
            )
            bank = f'<label>Bank <select name="provider_id">{options}</select></label>'
        else:
            bank = f"<p>{esc(context['connection'].provider.name)}</p>"
        logins = ", ".join(TEST_LOGINS)
        body = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>Linxo Connect emulator: {esc(title)}</title></head><body>"
            f"<h1>{esc(title)}</h1>"
            f'<form method="post" action="/embed/widget/{page}">{hidden}{bank}'
            '<label>Login <input name="login" autocomplete="off"></label>'
            '<label>Password <input name="password" type="password"></label>'
            '<button name="action" value="connect" type="submit">Connect</button>'
            '<button name="action" value="cancel" type="submit">Cancel</button>'
            f"</form><p>Test logins: {esc(logins)}</p></body></html>"
        )
        return EmulatorReply(200, html=body)

    def _widget_submit(self, request: LinxoRequest, page: str) -> EmulatorReply:
        values = request.form()
        context = self._widget_context(values, page)
        if values.get("action") == "cancel":
            params = {"error": "access_denied", "error_description": "The user cancelled"}
            return _redirect(context["redirect_uri"], params)
        login = values.get("login") or "success"
        if page == "add_connection":
            connection_id = self.create_connection(
                context["user_id"], login=login, provider_id=values.get("provider_id", "9999")
            )
        else:
            conn = context["connection"]
            connection_id = conn.id
            final_status, channel_status = TEST_LOGINS.get(login, TEST_LOGINS["success"])
            if final_status in ("SUCCESS", "PARTIAL_SUCCESS"):
                # A fresh SCA: the consent runs again from today.
                conn.redirect_channel.expires = int(self._now()) + self.consent_days * 86400
            self.start_sync(
                conn.id,
                duration=self.sync_delay,
                final_status=final_status,
                channel_status=channel_status,
            )
            self._settle(conn)
        conn = self._connections[connection_id]
        params = {"connection_id": connection_id, "status": conn.status}
        if conn.status == "FAILED":
            params["error"] = conn.redirect_channel.status
            params["error_description"] = "The bank refused the connection"
        return _redirect(context["redirect_uri"], params)


_HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


def submit_widget(
    url: str,
    *,
    login: str = "success",
    password: str = "any-password",  # noqa: S107 - the test bank accepts any password
    provider_id: str | None = None,
    cancel: bool = False,
    timeout: float = 10.0,
) -> str:
    """Act as the user's browser on a widget page: load ``url`` over HTTP, fill the form with
    a test ``login`` (see :data:`TEST_LOGINS`) and submit it. Returns the URL the widget
    redirects to (the caller's ``redirect_uri`` with the widget's parameters), without
    following it. Raises :class:`requests.HTTPError` when the page refuses (bad session...).
    """
    page = requests.get(url, timeout=timeout)
    page.raise_for_status()
    form = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN_INPUT.findall(page.text)}
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    if action is None:
        raise ValueError("The widget page has no form")
    selected = re.search(r'<option value="([^"]+)" selected>', page.text)
    if provider_id or selected:
        form["provider_id"] = provider_id or (selected.group(1) if selected else "")
    form.update(login=login, password=password, action="cancel" if cancel else "connect")
    parts = urlsplit(url)
    target = urlunsplit((parts.scheme, parts.netloc, action.group(1), "", ""))
    answer = requests.post(target, data=form, allow_redirects=False, timeout=timeout)
    answer.raise_for_status()
    if answer.status_code != 303:
        raise ValueError(f"The widget answered {answer.status_code} instead of redirecting")
    return answer.headers["Location"]


def _redirect(redirect_uri: str, params: Mapping[str, str]) -> EmulatorReply:
    """303 to ``redirect_uri`` with ``params`` added to whatever query it already has."""
    return EmulatorReply(303, headers={"Location": with_query(redirect_uri, params)})


def _banner(emulator: EmulatorServer) -> Iterator[str]:
    assert isinstance(emulator, LinxoEmulator)  # noqa: S101 - only ever given one
    yield f"Linxo Connect emulator on {emulator.base_url}"
    yield f"  auth:   {emulator.auth_url}"
    yield f"  api:    {emulator.api_url}"
    yield f"  widget: {emulator.widget_url}"
    yield f"  client_id={emulator.client_id} client_secret={emulator.client_secret}"


def main(argv: list[str] | None = None) -> int:
    """Command line: serve until interrupted (for the demo and the benchmarks)."""
    parser = command_line("Local Linxo Connect emulator (127.0.0.1)", port=0)
    parser.add_argument("--seed", default="1")
    parser.add_argument("--api-version", default="v3", choices=("v3", "v2.1"))
    parser.add_argument("--sync-delay", type=float, default=0.0)
    parser.add_argument("--transactions", type=int, default=40, help="per generated account")
    parser.add_argument(
        "--large-user",
        metavar="EMAIL:PASSWORD",
        help="pre-create a user with one connection holding --large operations",
    )
    parser.add_argument("--large", type=int, default=20000)
    args = parser.parse_args(argv)
    emulator = LinxoEmulator(
        host=args.host,
        port=args.port,
        clock=clock_from(args),
        seed=args.seed,
        api_version=args.api_version,
        sync_delay=args.sync_delay,
        transactions_per_account=args.transactions,
    )
    if args.large_user:
        email, _, password = args.large_user.partition(":")
        user_id = emulator.create_user(email, password)
        conn_id = emulator.create_connection(user_id, transactions_per_account=0)
        account_id = emulator.account_ids(conn_id)[0]
        today = emulator.clock.now().astimezone(PARIS).date()
        emulator.add_transactions(
            account_id, args.large, start=today - timedelta(days=3 * 365), end=today
        )
    return serve_until_interrupted(emulator, _banner)


if __name__ == "__main__":
    sys.exit(main())
