"""A local Bridge API (version 2025-01-15, ``/v3``) served over real HTTP on 127.0.0.1.

What it emulates (``docs/aggregators.md`` §1): Bridge's aggregation API, version 2025-01-15,
under Bridge's own paths:

- ``POST/GET /v3/aggregation/users``, ``GET/DELETE /v3/aggregation/users/{uuid}``,
  ``POST /v3/aggregation/authorization/token`` (user tokens, two hours);
- ``POST /v3/aggregation/connect-sessions`` and the hosted Connect page
  (``/connect/session/{id}``) with Demo Bank logins, redirecting to ``callback_url``;
- ``GET /v3/aggregation/items``, ``GET/DELETE /v3/aggregation/items/{id}``,
  ``POST /v3/aggregation/items/{id}/refresh``;
- ``GET /v3/aggregation/accounts`` (and ``/{id}``), ``GET /v3/aggregation/transactions``
  (and ``/{id}``) with ``since``, ``min_date``/``max_date``, ``account_id``, ``limit`` and
  ``after`` cursors in a relative ``next_uri``;
- ``GET /v3/providers`` (and ``/{id}``);
- signed webhooks (``BridgeApi-Signature``), sent when a test asks.

It checks what Bridge checks (``Bridge-Version``, application credentials, user tokens and their
two-hour life, JSON content type, pagination cursors, the three published rate limits) and
answers with Bridge's status codes, error bodies and v3 JSON shapes (null fields left out).
Operations' flags are spelt the v3 typings' way or Bridge's published way
(``transaction_flags``). Everything time-related runs on an
:class:`~bank_sync_bridge.testing.clock.AdjustableClock`.

Start it from a test::

    with BridgeEmulator() as emu:
        user = emu.create_user("company-1")
        item = emu.connect_item(user.uuid, login="success.1010")
        provider = BridgeProvider(ProviderConfig("company-1", base_url=emu.base_url,
                                                 credentials=emu.credentials))

or from a shell, for the demo and the benchmarks::

    python3 -m bank_sync_bridge.testing.bridge_emulator --port 8765 --user demo --transactions 50000

Scenario control is the Python API shared with the Linxo emulator
(:class:`~bank_sync_bridge.testing._server.EmulatorServer`: clock, faults, rate limits, token and
consent expiry, operations that change) plus Bridge's own (users, items and their statuses,
webhooks, large data sets), and the ``/__emulator__/`` endpoints for a separate process.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import random
import re
import secrets
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ..providers._common import fold
from ._server import (
    LOOPBACK_HOSTS,
    EmulatorError,
    EmulatorReply,
    EmulatorRequest,
    EmulatorServer,
    WebhookDelivery,
    clock_from,
    command_line,
    post_to_loopback,
    serve_until_interrupted,
)
from .bridge_data import (
    BRIDGE_VERSION,
    CALLBACK_STEPS,
    DEMO_BANK_ID,
    TRANSACTION_FLAGS,
    BridgeState,
    CursorError,
    DemoLogin,
    EmuAccount,
    EmuItem,
    EmuTransaction,
    EmuUser,
    SlidingWindowLimiter,
    json_number,
    ms_iso,
)
from .clock import AdjustableClock

WEBHOOK_EVENT_TYPES = (
    "item.created",
    "item.refreshed",
    "item.deleted",
    "item.account.created",
    "item.account.updated",
    "item.account.deleted",
    "user.deleted",
    "TEST_EVENT",
)
_CONTEXT_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
_MAX_LIMIT = 500
_DEFAULT_LIMIT = 50
_CONNECT_PREFIX = "/connect/session/"


@dataclass
class BridgeRequest(EmulatorRequest):
    """A request as Bridge's handlers see it: the user of its token, once checked."""

    user: EmuUser | None = None

    @property
    def language(self) -> str:
        """``fr`` when the caller asks for French first, else ``en``."""
        wanted = self.headers.get("Accept-Language", "").strip().lower()
        return "fr" if wanted.startswith("fr") else "en"

    def json(self) -> dict[str, Any]:
        """The JSON body (an object); a 422 in Bridge's shape otherwise."""
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except ValueError:
            raise EmulatorError(
                422, "invalid_body", "The request body is not valid JSON."
            ) from None
        if not isinstance(data, dict):
            raise EmulatorError(422, "invalid_body", "The request body must be a JSON object.")
        return data


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., EmulatorReply]
    scope: str  # "app" (client credentials), "user" (+ bearer token)


class BridgeEmulator(EmulatorServer):
    """A Bridge API on 127.0.0.1 with scenario control (see the module docstring).

    ``client_id``/``client_secret`` are the application credentials it accepts. ``clock`` is
    shared with the caller when given (pass a frozen :class:`AdjustableClock` for reproducible
    runs). ``rate_limits=False`` lifts the three published limits (benchmarks); forced 429s
    still work; ``app_limit`` (per 5 minutes), ``user_limit`` and ``token_limit`` (per minute)
    default to Bridge's published figures and can be lowered to test a limit cheaply.
    ``since_inclusive`` decides whether ``since`` keeps operations updated exactly
    at that instant (Bridge does not say; strict is the harder case for clients).
    ``empty_last_page`` makes a full page always point to a next page, which may be empty.
    ``transaction_flags`` spells the operations' flags the ``v3`` way (``deleted``,
    ``future``) or the ``published`` way (``is_deleted``, ``is_future``, ``show_client_side``):
    Bridge has not confirmed which one v3 sends, so clients are tested against both.
    """

    request_class = BridgeRequest
    thread_name = "bridge-emulator"
    server_version = "BridgeEmulator/1.0"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "emulator_client_id",
        client_secret: str = "emulator_client_secret",  # noqa: S107 - a test double's secret
        clock: AdjustableClock | None = None,
        seed: int = 0,
        rate_limits: bool = True,
        app_limit: int = 2000,
        user_limit: int = 60,
        token_limit: int = 10,
        since_inclusive: bool = False,
        empty_last_page: bool = False,
        transaction_flags: str = "v3",
    ) -> None:
        if transaction_flags not in TRANSACTION_FLAGS:
            raise ValueError(f"transaction_flags must be one of {TRANSACTION_FLAGS}")
        super().__init__(host=host, port=port, clock=clock)
        self.client_id = client_id
        self.client_secret = client_secret
        self.rate_limits = rate_limits
        self.since_inclusive = since_inclusive
        self.empty_last_page = empty_last_page
        self.transaction_flags = transaction_flags
        self.state = BridgeState(self.clock, cursor_key=secrets.token_bytes(32), seed=seed)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.deliveries: list[WebhookDelivery] = []
        self.webhook_url: str | None = None
        self.webhook_secrets: list[str] = []
        #: Events waiting for :meth:`deliver_webhooks` (the emulator never calls back by
        #: itself inside a request: a single-threaded receiver would deadlock).
        self.outbox: list[dict[str, Any]] = []
        self._app_limiter = SlidingWindowLimiter(app_limit, timedelta(minutes=5))
        self._user_limiter = SlidingWindowLimiter(user_limit, timedelta(seconds=60))
        self._token_limiter = SlidingWindowLimiter(token_limit, timedelta(seconds=60))
        self._routes = self._build_routes()

    @property
    def credentials(self) -> dict[str, str]:
        """The application credentials in the shape ``ProviderConfig.credentials`` expects."""
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    @property
    def admin_secret(self) -> str:
        """The ``/__emulator__/`` endpoints want the application secret."""
        return self.client_secret

    # -- scenario control: users, items, data -------------------------------------------

    def create_user(self, external_user_id: str | None = None) -> EmuUser:
        """A Bridge user, as ``POST /v3/aggregation/users`` would create it."""
        with self.lock:
            return self.state.create_user(external_user_id)

    def user(self, ref: str) -> EmuUser:
        """The user with this uuid or external user id (KeyError when unknown)."""
        with self.lock:
            found = self.state.find_user(user_uuid=ref) or self.state.find_user(
                external_user_id=ref
            )
        if found is None:
            raise KeyError(ref)
        return found

    def connect_item(
        self, user_ref: str, *, login: str = "success", provider_id: int = DEMO_BANK_ID
    ) -> EmuItem:
        """An item as if the user had gone through Connect with this Demo Bank ``login``.

        The user is created (as external user id ``user_ref``) when it does not exist yet.
        Queues the webhooks Bridge would send.
        """
        with self.lock:
            user = self.state.find_user(user_uuid=user_ref) or self.state.find_user(
                external_user_id=user_ref
            )
            if user is None:
                user = self.state.create_user(user_ref)
            item = self.state.create_item(user.uuid, provider_id, DemoLogin.parse(login))
            self._queue_connect_events(item)
            return item

    def item(self, item_id: int) -> EmuItem:
        """The item (KeyError when unknown)."""
        return self.state.items[item_id]

    def accounts(self, item_id: int) -> list[EmuAccount]:
        """An item's accounts."""
        with self.lock:
            return self.state.accounts_of(item_id)

    def transactions(
        self, account_id: int, *, include_deleted: bool = True
    ) -> list[EmuTransaction]:
        """An account's operations, in date order (what the bank holds right now)."""
        with self.lock:
            account = self.state.accounts[account_id]
            index = self.state.transactions[account.user_uuid]
            txs = [tx for tx in index.by_id.values() if tx.account_id == account_id]
        if not include_deleted:
            txs = [tx for tx in txs if not tx.deleted]
        return sorted(txs, key=lambda tx: (tx.date, tx.id))

    def set_item_status(self, item_id: int, status: int, info: str | None = None) -> EmuItem:
        """Force an item's status (contract tests of every mapped status)."""
        with self.lock:
            item = self.state.items[item_id]
            item.status, item.status_code_info = status, info
            return item

    def refresh_item(self, item_id: int, *, trigger: str = "scheduler") -> EmuItem:
        """Run a refresh as Bridge's daily scheduler would (next scripted outcome)."""
        with self.lock:
            item = self.state.items[item_id]
            self.state.refresh_item(item)
            self._queue_refresh_events(item, trigger)
            return item

    def add_account_with_transactions(
        self,
        n: int = 50_000,
        *,
        seed: int = 0,
        user_ref: str = "bench",
        days: int = 730,
        name: str = "Compte courant (historique)",
        item_id: int | None = None,
    ) -> EmuAccount:
        """A checking account with ``n`` deterministic operations over ``days`` days.

        Tens of thousands of operations take well under a second to build; the same ``seed``
        (and a frozen clock) gives the same ids, amounts and labels every time.
        """
        with self.lock:
            user = self.state.find_user(user_uuid=user_ref) or self.state.find_user(
                external_user_id=user_ref
            )
            if user is None:
                user = self.state.create_user(user_ref)
            if item_id is None:
                item = self.state.create_item(
                    user.uuid, DEMO_BANK_ID, DemoLogin.parse("success"), demo_accounts=False
                )
            else:
                item = self.state.items[item_id]
            account = self.state.add_account(item, name=name)
            self.state.generate_transactions(
                account, n, rng=random.Random(seed), days=days, opening=Decimal("25000.00")
            )
            return account

    # -- scenario control: tokens, consent, limits (the clock and faults: EmulatorServer) --

    def expire_tokens(self) -> None:
        """Every user token issued so far is now expired (next use: 401)."""
        with self.lock:
            self.state.expire_tokens()

    def expire_consent(self, connection_id: int) -> EmuItem:
        """The item's 180-day SCA window ends now; its next refresh ends in 1010."""
        with self.lock:
            item = self.state.items[connection_id]
            item.authentication_expires_at = self.state.now() - timedelta(seconds=1)
            return item

    def reset_rate_limits(self) -> None:
        """Forget request counts (after a test that deliberately exhausted them)."""
        with self.lock:
            for limiter in (self._app_limiter, self._user_limiter, self._token_limiter):
                limiter.reset()

    # -- scenario control: operations that change ---------------------------------------

    def add_transaction(
        self,
        account_id: int,
        amount: Decimal | str,
        label: str,
        *,
        on: date | None = None,
        pending: bool = False,
        value_date: date | None = None,
        raw_label: str | None = None,
        stamped_ago: timedelta | None = None,
    ) -> EmuTransaction:
        """A new operation (``on`` far in the past gives a late, back-dated operation); a
        ``pending`` one comes flagged future, without booking date. ``stamped_ago`` makes it
        visible now with an ``updated_at`` that far in the past, as an operation written at
        the start of a long refresh and published at its end."""
        with self.lock:
            account = self.state.accounts[account_id]
            booked = on or self.state.now().date()
            tx = EmuTransaction(
                id=self.state.new_tx_id(),
                account_id=account.id,
                user_uuid=account.user_uuid,
                amount=Decimal(amount),
                clean_description=label,
                provider_description=raw_label or label.upper(),
                date=booked,
                booking_date=None if pending else booked,
                value_date=value_date,
                currency_code=account.currency_code,
                future=pending,
                updated_at=self.state.now() - (stamped_ago or timedelta(0)),
            )
            self.state.transactions[account.user_uuid].add(tx)
            if not pending:
                account.balance += tx.amount
            self._queue_account_updated(account, new=1)
            return tx

    def book_pending(
        self, tx_id: int, *, new_id: bool = False, on: date | None = None
    ) -> EmuTransaction:
        """A pending (``future``) operation gets booked: in place, or (``new_id=True``) as a new
        operation while the pending one is flagged deleted, as some banks do."""
        with self.lock:
            index, tx = self.state.transaction(tx_id)
            account = self.state.accounts[tx.account_id]
            booked_on = on or tx.date
            if not new_id:
                tx.future = False
                tx.booking_date = booked_on
                tx.date = booked_on
                index.touch(tx, self.state.now())
                account.balance += tx.amount
                self._queue_account_updated(account, updated=1)
                return tx
            tx.deleted = True
            index.touch(tx, self.state.now())
            booked = EmuTransaction(
                id=self.state.new_tx_id(),
                account_id=tx.account_id,
                user_uuid=tx.user_uuid,
                amount=tx.amount,
                clean_description=tx.clean_description,
                provider_description=tx.provider_description,
                date=booked_on,
                booking_date=booked_on,
                value_date=tx.value_date,
                transaction_date=tx.transaction_date,
                currency_code=tx.currency_code,
                category_id=tx.category_id,
                operation_type=tx.operation_type,
                updated_at=self.state.now(),
            )
            index.add(booked)
            account.balance += tx.amount
            self._queue_account_updated(account, new=1, deleted=1)
            return booked

    def mark_card_duplicate(self, tx_id: int) -> EmuTransaction:
        """The monthly total of a deferred-debit card landed on the current account: this card
        line now repeats it and comes back with ``show_client_side`` false."""
        return self._mutate(tx_id, lambda tx: setattr(tx, "show_client_side", False), updated=1)

    def delete_transaction(self, tx_id: int) -> EmuTransaction:
        """The bank withdraws an operation: it comes back flagged ``deleted`` on ``since``,
        and the account's balance no longer counts it."""

        def delete(tx: EmuTransaction) -> None:
            if not tx.deleted and not tx.future:
                self.state.accounts[tx.account_id].balance -= tx.amount
            tx.deleted = True

        return self._mutate(tx_id, delete, deleted=1)

    def change_transaction(
        self,
        tx_id: int,
        *,
        label: str | None = None,
        raw_label: str | None = None,
        shift_days: int = 0,
    ) -> EmuTransaction:
        """The bank (or Bridge's cleaning) changes an operation: its ``clean_description``
        (``label``), its ``provider_description`` (``raw_label``), or its dates."""

        def change(tx: EmuTransaction) -> None:
            if label is not None:
                tx.clean_description = label
            if raw_label is not None:
                tx.provider_description = raw_label
            if shift_days:
                step = timedelta(days=shift_days)
                tx.date += step
                tx.booking_date = tx.booking_date + step if tx.booking_date else None
                tx.value_date = tx.value_date + step if tx.value_date else None

        return self._mutate(tx_id, change, updated=1)

    # -- webhooks -------------------------------------------------------------------------

    def register_webhook(self, url: str, secrets_: Iterable[str]) -> None:
        """Where events go and the secrets that sign them (two during a rotation)."""
        host = urlsplit(url).hostname
        if host not in LOOPBACK_HOSTS:
            # The emulator never sends anything off this machine.
            raise ValueError("The emulator only delivers webhooks to 127.0.0.1")
        keys = list(secrets_)
        if not 1 <= len(keys) <= 2:
            raise ValueError("Bridge signs with one secret, or two during a rotation")
        self.webhook_url, self.webhook_secrets = url, keys

    def rotate_webhook_secret(self, new_secret: str) -> None:
        """Roll the secret: the old one keeps signing next to the new one (24 h at Bridge)."""
        self.webhook_secrets = [new_secret, *self.webhook_secrets[:1]]

    def end_rotation(self) -> None:
        """The rotation window is over: only the newest secret signs."""
        self.webhook_secrets = self.webhook_secrets[:1]

    def event(
        self, type_: str, content: Mapping[str, Any], *, timestamp: datetime | None = None
    ) -> dict[str, Any]:
        """A webhook envelope ``{type, timestamp (epoch ms), content}``."""
        moment = timestamp or self.clock()
        return {
            "type": type_,
            "timestamp": int(moment.timestamp() * 1000),
            "content": dict(content),
        }

    def sign(self, body: bytes, secrets_: Iterable[str] | None = None) -> str:
        """The ``BridgeApi-Signature`` value: ``v1=<hex>`` per secret, comma-separated."""
        keys = list(self.webhook_secrets if secrets_ is None else secrets_)
        return ",".join(
            "v1=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest() for key in keys
        )

    def send_webhook(
        self,
        event: Mapping[str, Any],
        *,
        signature: str = "valid",
        copies: int = 1,
    ) -> list[WebhookDelivery]:
        """POST one event now (``copies`` > 1 sends duplicates). ``signature``: ``valid``,
        ``invalid`` (signed with a wrong secret) or ``missing`` (no header)."""
        if self.webhook_url is None:
            raise RuntimeError("register_webhook() first")
        body = json.dumps(event, separators=(",", ":")).encode()
        header: str | None
        if signature == "valid":
            header = self.sign(body)
        elif signature == "invalid":
            header = self.sign(body, ["not-the-secret"])
        elif signature == "missing":
            header = None
        else:
            raise ValueError("signature must be 'valid', 'invalid' or 'missing'")
        return [self._post_webhook(self.webhook_url, body, header) for _ in range(copies)]

    def deliver_webhooks(
        self, *, reverse: bool = False, duplicate: bool = False
    ) -> list[WebhookDelivery]:
        """Send the queued events (in order, ``reverse``d, and/or each ``duplicate``d)."""
        with self.lock:
            events, self.outbox = self.outbox, []
        if reverse:
            events.reverse()
        results: list[WebhookDelivery] = []
        for event in events:
            results.extend(self.send_webhook(event, copies=2 if duplicate else 1))
        return results

    # -- internals: events ----------------------------------------------------------------

    def _queue(self, type_: str, content: Mapping[str, Any]) -> None:
        if self.webhook_url is not None:
            self.outbox.append(self.event(type_, content))

    def _queue_connect_events(self, item: EmuItem) -> None:
        self._queue("item.created", {"item_id": item.id, "user_uuid": item.user_uuid})
        self._queue_refresh_events(item, "connect", created=True)

    def _queue_refresh_events(self, item: EmuItem, trigger: str, *, created: bool = False) -> None:
        self._queue(
            "item.refreshed",
            {
                "item_id": item.id,
                "user_uuid": item.user_uuid,
                "status_code": item.status,
                "status_code_info": item.status_code_info,
                "full_refresh": trigger == "connect",
                "refresh_trigger": trigger,
                "account_types": item.account_types,
                "authentication_expires_at": ms_iso(item.authentication_expires_at)
                if item.authentication_expires_at
                else None,
            },
        )
        for account in self.state.accounts_of(item.id):
            if created:
                self._queue(
                    "item.account.created",
                    {
                        "account_id": account.id,
                        "item_id": item.id,
                        "user_uuid": item.user_uuid,
                        "balance": json_number(account.balance),
                    },
                )
            else:
                self._queue_account_updated(account)

    def _queue_account_updated(
        self, account: EmuAccount, *, new: int = 0, updated: int = 0, deleted: int = 0
    ) -> None:
        account.updated_at = self.state.now()
        self._queue(
            "item.account.updated",
            {
                "account_id": account.id,
                "item_id": account.item_id,
                "user_uuid": account.user_uuid,
                "balance": json_number(account.balance),
                "nb_new_transactions": new,
                "nb_updated_transactions": updated,
                "nb_deleted_transactions": deleted,
            },
        )

    def _post_webhook(self, url: str, body: bytes, signature: str | None) -> WebhookDelivery:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["BridgeApi-Signature"] = signature
        delivery = post_to_loopback(url, body, headers, signature=signature)
        self.deliveries.append(delivery)
        return delivery

    def _mutate(
        self, tx_id: int, change: Callable[[EmuTransaction], None], **counts: int
    ) -> EmuTransaction:
        with self.lock:
            index, tx = self.state.transaction(tx_id)
            change(tx)
            index.touch(tx, self.state.now())
            self._queue_account_updated(self.state.accounts[tx.account_id], **counts)
            return tx

    # -- HTTP dispatch ------------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        spec: list[tuple[str, str, Callable[..., EmulatorReply], str]] = [
            ("POST", r"/v3/aggregation/users", self._h_create_user, "app"),
            ("GET", r"/v3/aggregation/users", self._h_list_users, "app"),
            ("GET", r"/v3/aggregation/users/(?P<uuid>[0-9a-f-]+)", self._h_get_user, "app"),
            ("DELETE", r"/v3/aggregation/users/(?P<uuid>[0-9a-f-]+)", self._h_delete_user, "app"),
            ("POST", r"/v3/aggregation/authorization/token", self._h_token, "app"),
            ("POST", r"/v3/aggregation/connect-sessions", self._h_connect_session, "user"),
            ("GET", r"/v3/aggregation/items", self._h_list_items, "user"),
            ("GET", r"/v3/aggregation/items/(?P<id>\d+)", self._h_get_item, "user"),
            ("DELETE", r"/v3/aggregation/items/(?P<id>\d+)", self._h_delete_item, "user"),
            ("POST", r"/v3/aggregation/items/(?P<id>\d+)/refresh", self._h_refresh_item, "user"),
            ("GET", r"/v3/aggregation/accounts", self._h_list_accounts, "user"),
            ("GET", r"/v3/aggregation/accounts/(?P<id>\d+)", self._h_get_account, "user"),
            ("GET", r"/v3/aggregation/transactions", self._h_list_transactions, "user"),
            ("GET", r"/v3/aggregation/transactions/(?P<id>\d+)", self._h_get_transaction, "user"),
            ("GET", r"/v3/providers", self._h_list_providers, "app"),
            ("GET", r"/v3/providers/(?P<id>\d+)", self._h_get_provider, "app"),
        ]
        return [_Route(m, re.compile(p + r"/?"), h, s) for m, p, h, s in spec]

    def scripted(self, path: str) -> bool:
        """Faults and the request log are for the API; the hosted Connect page is a browser's."""
        return not path.startswith(_CONNECT_PREFIX.rstrip("/"))

    def error_body(self, error: EmulatorError) -> dict[str, Any]:
        """Bridge's error shape ``{code, property?, message}``."""
        body = {"code": error.code, "property": error.parameter, "message": error.message}
        return {key: value for key, value in body.items() if value is not None}

    def log_fields(self, request: EmulatorRequest) -> dict[str, Any]:
        """The headers Bridge's tests check on every call."""
        return {
            "bridge_version": request.headers.get("Bridge-Version"),
            "accept_language": request.headers.get("Accept-Language"),
            "bearer": request.headers.get("Authorization", "").startswith("Bearer "),
        }

    def answer(self, request: EmulatorRequest) -> EmulatorReply:
        """The hosted Connect page, or one ``/v3`` call: the checks Bridge makes, in its order,
        then the handler."""
        assert isinstance(request, BridgeRequest)  # noqa: S101 - request_class guarantees it
        if request.path.startswith(_CONNECT_PREFIX.rstrip("/")):
            return self.handle_connect_page(request)
        route, params = self._match(request)
        with self.lock:
            self._check_application(request)
            forced = self.take_forced_rate_limit()
            if forced is not None:
                raise forced
            self._limit(self._app_limiter, "app:" + self.client_id)
            if route.scope == "user":
                request.user = self._check_bearer(request)
                self._limit(self._user_limiter, "user:" + request.user.uuid)
            if request.method == "POST":
                content_type = request.headers.get("Content-Type", "")
                if content_type.split(";")[0].strip().lower() != "application/json":
                    raise EmulatorError(
                        415, "unsupported_media_type", "Content-Type must be application/json."
                    )
            reply = route.handler(request, **params)
        pagination = reply.body.get("pagination") if isinstance(reply.body, dict) else None
        if request.fault == "repeat_page" and pagination is not None:
            # A vendor bug worth surviving: the page points back at itself.
            pagination["next_uri"] = request.target
        return reply

    def admin_actions(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], EmulatorReply]]:
        """Bridge's own ``/__emulator__/`` actions: refresh an item, deliver webhooks, state."""
        return {
            ("POST", "items/refresh"): self._admin_refresh,
            ("POST", "webhooks/deliver"): self._admin_deliver,
            ("GET", "state"): self._admin_state,
        }

    def _admin_refresh(self, body: dict[str, Any]) -> EmulatorReply:
        try:
            item = self.refresh_item(int(body["item_id"]))
        except (KeyError, ValueError, TypeError):
            raise EmulatorError(404, "not_found", "No such item.") from None
        return EmulatorReply(200, item.to_json())

    def _admin_deliver(self, body: dict[str, Any]) -> EmulatorReply:
        sent = self.deliver_webhooks(
            reverse=bool(body.get("reverse")), duplicate=bool(body.get("duplicate"))
        )
        return EmulatorReply(200, {"delivered": [d.status for d in sent]})

    def _admin_state(self, body: dict[str, Any]) -> EmulatorReply:
        with self.lock:
            return EmulatorReply(
                200,
                {
                    "now": ms_iso(self.clock()),
                    "users": [u.to_json() for u in self.state.users.values()],
                    "items": [i.to_json() for i in self.state.items.values()],
                    "transactions": sum(len(i) for i in self.state.transactions.values()),
                },
            )

    def _match(self, request: BridgeRequest) -> tuple[_Route, dict[str, str]]:
        path_known = False
        for route in self._routes:
            found = route.pattern.fullmatch(request.path)
            if found is None:
                continue
            path_known = True
            if route.method == request.method:
                return route, found.groupdict()
        if path_known:
            raise EmulatorError(405, "method_not_allowed", f"{request.method} is not allowed here.")
        raise EmulatorError(404, "not_found", "The requested resource does not exist.")

    def _check_application(self, request: BridgeRequest) -> None:
        version = request.headers.get("Bridge-Version")
        if not version:
            raise EmulatorError(
                400,
                "missing_version",
                "The Bridge-Version header is required.",
                parameter="Bridge-Version",
            )
        if version != BRIDGE_VERSION:
            raise EmulatorError(
                400,
                "invalid_version",
                f"Unsupported Bridge-Version {version!r}.",
                parameter="Bridge-Version",
            )
        client_id = request.headers.get("Client-Id", "")
        client_secret = request.headers.get("Client-Secret", "")
        if not (
            hmac.compare_digest(client_id, self.client_id)
            and hmac.compare_digest(client_secret, self.client_secret)
        ):
            raise EmulatorError(
                401, "invalid_client_credentials", "client_id and client_secret are invalid."
            )

    def _check_bearer(self, request: BridgeRequest) -> EmuUser:
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise EmulatorError(
                401, "missing_access_token", "An Authorization: Bearer user token is required."
            )
        user = self.state.user_for_token(token.strip())
        if user is None:
            raise EmulatorError(
                401, "invalid_access_token", "The access token is invalid or expired."
            )
        return user

    def _limit(self, limiter: SlidingWindowLimiter, key: str) -> None:
        if not self.rate_limits:
            return
        wait = limiter.hit(key, self.clock.timestamp())
        if wait is not None:
            raise self.too_many_requests("Too many requests.", wait)

    # -- handlers: users and tokens -----------------------------------------------------

    def _h_create_user(self, request: BridgeRequest) -> EmulatorReply:
        body = request.json()
        external = body.get("external_user_id")
        if external is not None and (
            not isinstance(external, str) or not external or len(external) > 256
        ):
            raise EmulatorError(
                400,
                "invalid_parameter",
                "external_user_id must be a short string.",
                parameter="external_user_id",
            )
        if external and self.state.find_user(external_user_id=external):
            raise EmulatorError(
                409,
                "conflict",
                "A user with this external_user_id already exists.",
                parameter="external_user_id",
            )
        return EmulatorReply(201, self.state.create_user(external).to_json())

    def _h_list_users(self, request: BridgeRequest) -> EmulatorReply:
        users = sorted(self.state.users.values(), key=lambda u: (u.created_at, u.uuid))
        external = request.query.get("external_user_id")
        if external is not None:
            users = [u for u in users if u.external_user_id == external]
        return self._list_page(request, [u.to_json() for u in users], key="uuid")

    def _h_get_user(self, request: BridgeRequest, uuid: str) -> EmulatorReply:
        user = self.state.users.get(uuid)
        if user is None:
            raise EmulatorError(404, "not_found", "User not found.")
        return EmulatorReply(200, user.to_json())

    def _h_delete_user(self, request: BridgeRequest, uuid: str) -> EmulatorReply:
        if uuid not in self.state.users:
            raise EmulatorError(404, "not_found", "User not found.")
        self.state.delete_user(uuid)
        self._queue("user.deleted", {"user_uuid": uuid})
        return EmulatorReply(204)

    def _h_token(self, request: BridgeRequest) -> EmulatorReply:
        body = request.json()
        user_uuid, external = body.get("user_uuid"), body.get("external_user_id")
        if not user_uuid and not external:
            raise EmulatorError(
                400,
                "invalid_parameter",
                "user_uuid or external_user_id is required.",
                parameter="user_uuid",
            )
        user = self.state.find_user(user_uuid=user_uuid, external_user_id=external)
        if user is None:
            raise EmulatorError(404, "not_found", "User not found.")
        self._limit(self._token_limiter, "token:" + user.uuid)
        token = secrets.token_urlsafe(32)
        expires_at = self.state.issue_token(user, token)
        return EmulatorReply(
            200,
            {"access_token": token, "expires_at": ms_iso(expires_at), "user": user.to_json()},
        )

    # -- handlers: connect sessions ------------------------------------------------------

    def _h_connect_session(self, request: BridgeRequest) -> EmulatorReply:
        assert request.user is not None  # noqa: S101 - guaranteed by the "user" scope
        body = request.json()
        callback_url = body.get("callback_url")
        if callback_url is not None:
            parts = urlsplit(str(callback_url))
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise EmulatorError(
                    400,
                    "invalid_parameter",
                    "callback_url must be an absolute URL.",
                    parameter="callback_url",
                )
        context = body.get("context")
        if context is not None and not _CONTEXT_RE.match(str(context)):
            raise EmulatorError(
                400,
                "invalid_parameter",
                "context: at most 100 letters, digits or hyphens.",
                parameter="context",
            )
        item_id = body.get("item_id")
        if item_id is not None:
            item = self.state.items.get(int(item_id)) if str(item_id).isdigit() else None
            if item is None or item.user_uuid != request.user.uuid:
                raise EmulatorError(404, "not_found", "Item not found.", parameter="item_id")
        provider_id = body.get("provider_id")
        if provider_id is not None and int(provider_id) not in self.state.providers:
            raise EmulatorError(
                400, "invalid_parameter", "Unknown provider_id.", parameter="provider_id"
            )
        session_id = str(uuid.uuid4())
        self.sessions[session_id] = {
            "user_uuid": request.user.uuid,
            "callback_url": callback_url,
            "context": context,
            "item_id": int(item_id) if item_id is not None else None,
            "provider_id": int(provider_id) if provider_id is not None else None,
            "country_code": body.get("country_code"),
            "user_email": body.get("user_email"),
            "used": False,
        }
        return EmulatorReply(
            201, {"id": session_id, "url": f"{self.base_url}/connect/session/{session_id}"}
        )

    def handle_connect_page(self, request: BridgeRequest) -> EmulatorReply:
        """The hosted Connect page: a bank picker and a Demo Bank login form.

        POSTing the form runs the login's scenario and redirects to ``callback_url`` with
        ``user_uuid``, ``item_id``, ``success``, ``step`` (failures only), ``source=connect``
        and ``context``, as Bridge Connect does.
        """
        session_id = request.path.rsplit("/", 1)[-1]
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None or session["used"]:
                return EmulatorReply(
                    404,
                    html=_page(
                        "Session expired", "<p>This Bridge Connect session is no longer valid.</p>"
                    ),
                )
            if request.method == "GET":
                return EmulatorReply(200, html=self._connect_form(session))
            form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
            reconnect = session["item_id"] is not None
            if form.get("action") == "cancel":
                session["used"] = True
                step = "edit_bank_creds_form" if reconnect else "bank_creds_form"
                return self._redirect(session, success=False, step=step, item_id=session["item_id"])
            try:
                login = DemoLogin.parse(form.get("login", ""))
            except ValueError as exc:
                return EmulatorReply(200, html=self._connect_form(session, error=str(exc)))
            session["used"] = True
            if reconnect:
                item = self.state.items[session["item_id"]]
                self.state.apply_login(item, login)
                self._queue_refresh_events(item, "connect")
            else:
                provider_id = session["provider_id"] or int(form.get("provider_id") or DEMO_BANK_ID)
                item = self.state.create_item(session["user_uuid"], provider_id, login)
                self._queue_connect_events(item)
            status = login.first[0]
            if status == 0:
                return self._redirect(session, success=True, step=None, item_id=item.id)
            step = CALLBACK_STEPS.get(status, "sync_error")
            if reconnect and step == "bank_creds_form":
                step = "edit_bank_creds_form"
            return self._redirect(session, success=False, step=step, item_id=item.id)

    def _redirect(
        self, session: dict[str, Any], *, success: bool, step: str | None, item_id: int | None
    ) -> EmulatorReply:
        params = {
            "user_uuid": session["user_uuid"],
            "item_id": item_id,
            "success": "true" if success else "false",
            "step": step,
            "source": "connect",
            "context": session["context"],
        }
        query = urlencode({k: v for k, v in params.items() if v is not None})
        if not session["callback_url"]:
            return EmulatorReply(
                200,
                html=_page(
                    "Done", f"<p>You can close this window.</p><pre>{html.escape(query)}</pre>"
                ),
            )
        joiner = "&" if urlsplit(session["callback_url"]).query else "?"
        return EmulatorReply(
            303, headers={"Location": f"{session['callback_url']}{joiner}{query}"}, html=""
        )

    def _connect_form(self, session: dict[str, Any], error: str | None = None) -> str:
        if session["provider_id"] or session["item_id"]:
            provider_id = session["provider_id"] or self.state.items[session["item_id"]].provider_id
            bank_name = html.escape(self.state.providers[provider_id].name)
            bank = (
                f'<input type="hidden" name="provider_id" value="{provider_id}"><p>{bank_name}</p>'
            )
        else:
            country = session["country_code"]
            options = "".join(
                f'<option value="{p.id}">{html.escape(p.name)}</option>'
                for p in self.state.providers.values()
                if not country or p.country_code == country
            )
            bank = f'<label>Bank <select name="provider_id">{options}</select></label>'
        message = f'<p class="error">{html.escape(error)}</p>' if error else ""
        body = (
            f"{message}<form method='post'>{bank}"
            "<label>Login <input name='login' value='success' autocomplete='off'></label>"
            "<label>Password <input name='password' type='password' value='demo'></label>"
            "<p class='hint'>Demo Bank logins: success, 402, 429, 1003, 1010, 1100, "
            "1005_CLOSED_ACCOUNT, success.1010</p>"
            "<button name='action' value='connect'>Connect</button>"
            "<button name='action' value='cancel'>Cancel</button></form>"
        )
        title = "Renew your bank connection" if session["item_id"] else "Connect your bank"
        return _page(title, body)

    # -- handlers: items, accounts, transactions, providers -------------------------------

    def _own_item(self, request: BridgeRequest, item_id: str) -> EmuItem:
        item = self.state.items.get(int(item_id))
        if item is None or request.user is None or item.user_uuid != request.user.uuid:
            raise EmulatorError(404, "not_found", "Item not found.")
        return item

    def _h_list_items(self, request: BridgeRequest) -> EmulatorReply:
        assert request.user is not None  # noqa: S101 - guaranteed by the "user" scope
        items = [i.to_json(request.language) for i in self.state.items_of(request.user.uuid)]
        return self._list_page(request, items, key="id")

    def _h_get_item(self, request: BridgeRequest, id: str) -> EmulatorReply:
        return EmulatorReply(200, self._own_item(request, id).to_json(request.language))

    def _h_delete_item(self, request: BridgeRequest, id: str) -> EmulatorReply:
        item = self._own_item(request, id)
        self.state.delete_item(item.id)
        self._queue("item.deleted", {"item_id": item.id, "user_uuid": item.user_uuid})
        return EmulatorReply(204)

    def _h_refresh_item(self, request: BridgeRequest, id: str) -> EmulatorReply:
        item = self._own_item(request, id)
        self.state.refresh_item(item)
        self._queue_refresh_events(item, "api")
        return EmulatorReply(202)

    def _h_list_accounts(self, request: BridgeRequest) -> EmulatorReply:
        assert request.user is not None  # noqa: S101 - guaranteed by the "user" scope
        item_filter = request.query.get("item_id")
        if item_filter is not None and not item_filter.isdigit():
            raise EmulatorError(
                400, "invalid_parameter", "item_id must be an integer.", parameter="item_id"
            )
        accounts = sorted(
            (
                a
                for a in self.state.accounts.values()
                if a.user_uuid == request.user.uuid
                and (item_filter is None or a.item_id == int(item_filter))
            ),
            key=lambda a: a.id,
        )
        return self._list_page(request, [a.to_json() for a in accounts], key="id")

    def _h_get_account(self, request: BridgeRequest, id: str) -> EmulatorReply:
        account = self.state.accounts.get(int(id))
        if account is None or request.user is None or account.user_uuid != request.user.uuid:
            raise EmulatorError(404, "not_found", "Account not found.")
        return EmulatorReply(200, account.to_json())

    def _h_get_transaction(self, request: BridgeRequest, id: str) -> EmulatorReply:
        assert request.user is not None  # noqa: S101 - guaranteed by the "user" scope
        tx = self.state.transactions[request.user.uuid].by_id.get(int(id))
        if tx is None:
            raise EmulatorError(404, "not_found", "Transaction not found.")
        return EmulatorReply(200, tx.to_json(self.transaction_flags))

    def _h_list_transactions(self, request: BridgeRequest) -> EmulatorReply:
        assert request.user is not None  # noqa: S101 - guaranteed by the "user" scope
        query = request.query
        limit = _limit_param(query)
        since = _datetime_param(query, "since")
        min_date = _date_param(query, "min_date")
        max_date = _date_param(query, "max_date")
        account_id: int | None = None
        if "account_id" in query:
            if not query["account_id"].isdigit():
                raise EmulatorError(
                    400,
                    "invalid_parameter",
                    "account_id must be an integer.",
                    parameter="account_id",
                )
            account_id = int(query["account_id"])
        filters = {
            k: query[k] for k in ("since", "min_date", "max_date", "account_id") if k in query
        }
        fingerprint = _fingerprint(request.user.uuid, "transactions", filters)
        after: tuple[int, int] | None = None
        if "after" in query:
            try:
                position = self.state.cursor_signer.read(query["after"], fingerprint)
                after = (int(position[0]), int(position[1]))
            except (CursorError, IndexError, ValueError, TypeError):
                raise EmulatorError(
                    400, "invalid_parameter", "The after cursor is invalid.", parameter="after"
                ) from None
        index = self.state.transactions[request.user.uuid]
        since_ms = int(since.timestamp() * 1000) if since else None
        page: list[EmuTransaction] = []
        more = False
        for tx in index.iter_from(after, since_ms, self.since_inclusive):
            if account_id is not None and tx.account_id != account_id:
                continue
            if (min_date and tx.date < min_date) or (max_date and tx.date > max_date):
                continue
            if len(page) == limit:
                more = True
                break
            page.append(tx)
        if self.empty_last_page and len(page) == limit:
            more = True  # the vendor may not look ahead: a full page always has a next one
        next_uri = None
        if more and page:
            last = page[-1]
            cursor = self.state.cursor_signer.issue(
                [int(last.updated_at.timestamp() * 1000), last.id], fingerprint
            )
            next_uri = "/v3/aggregation/transactions?" + urlencode(
                {"after": cursor, "limit": limit, **filters}
            )
        return EmulatorReply(
            200,
            {
                "resources": [tx.to_json(self.transaction_flags) for tx in page],
                "generated_at": ms_iso(self.state.now()),
                "pagination": {"next_uri": next_uri},
            },
        )

    def _h_list_providers(self, request: BridgeRequest) -> EmulatorReply:
        name = fold(request.query.get("name", "").strip())
        country = request.query.get("country_code", "").strip().upper()
        found = [
            p.to_json()
            for p in self.state.providers.values()
            if (not country or p.country_code == country)
            and (
                not name
                or name in fold(p.name)
                or any(name in fold(k) for k in (p.group_name or "", *p.keywords))
            )
        ]
        return self._list_page(request, found, key="id", keep_order=True)

    def _h_get_provider(self, request: BridgeRequest, id: str) -> EmulatorReply:
        provider = self.state.providers.get(int(id))
        if provider is None:
            raise EmulatorError(404, "not_found", "Provider not found.")
        return EmulatorReply(200, provider.to_json())

    def _list_page(
        self,
        request: BridgeRequest,
        resources: list[dict[str, Any]],
        *,
        key: str,
        keep_order: bool = False,
    ) -> EmulatorReply:
        """Cursor pagination of a short list (users, items, accounts, providers): position is
        the index in the list, signed with the query's filters."""
        limit = _limit_param(request.query)
        filters = {k: v for k, v in sorted(request.query.items()) if k not in {"after", "limit"}}
        fingerprint = _fingerprint(
            request.user.uuid if request.user else "app", request.path, filters
        )
        start = 0
        if "after" in request.query:
            try:
                start = int(self.state.cursor_signer.read(request.query["after"], fingerprint)[0])
            except (CursorError, IndexError, ValueError, TypeError):
                raise EmulatorError(
                    400, "invalid_parameter", "The after cursor is invalid.", parameter="after"
                ) from None
        page = resources[start : start + limit]
        next_uri = None
        if start + limit < len(resources):
            cursor = self.state.cursor_signer.issue([start + limit], fingerprint)
            next_uri = f"{request.path}?" + urlencode({"after": cursor, "limit": limit, **filters})
        return EmulatorReply(200, {"resources": page, "pagination": {"next_uri": next_uri}})


def _limit_param(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return _DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_LIMIT:
        raise EmulatorError(
            400,
            "invalid_parameter",
            f"limit must be between 1 and {_MAX_LIMIT}.",
            parameter="limit",
        )
    return int(raw)


def _date_param(query: Mapping[str, str], name: str) -> date | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise EmulatorError(
            400, "invalid_parameter", f"{name} must be a YYYY-MM-DD date.", parameter=name
        ) from None


def _datetime_param(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise EmulatorError(
            400, "invalid_parameter", f"{name} must be an ISO 8601 timestamp.", parameter=name
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def _fingerprint(owner: str, what: str, filters: Mapping[str, str]) -> str:
    text = json.dumps([owner, what, sorted(filters.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Bridge Connect (emulator) - {html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}"
        "label{display:block;margin:.6em 0}.error{color:#b00}.hint{color:#666;font-size:.85em}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: serve an emulator until interrupted (demo, benchmarks)."""
    parser = command_line("Local Bridge API (2025-01-15) emulator", port=8765)
    parser.add_argument("--client-id", default="emulator_client_id")
    parser.add_argument("--client-secret", default="emulator_client_secret")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        help="external_user_id to create with a Demo Bank item (repeatable)",
    )
    parser.add_argument("--login", default="success", help="Demo Bank login of those items")
    parser.add_argument(
        "--transactions",
        type=int,
        default=0,
        help="add an account with this many operations to the first --user",
    )
    parser.add_argument(
        "--no-rate-limits", action="store_true", help="lift the published limits (benchmarks)"
    )
    parser.add_argument(
        "--transaction-flags",
        choices=TRANSACTION_FLAGS,
        default="v3",
        help="spell operations' flags as v3 typings (deleted) or Bridge's published resource "
        "(is_deleted, show_client_side)",
    )
    args = parser.parse_args(argv)
    emulator = BridgeEmulator(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        clock=clock_from(args),
        seed=args.seed,
        rate_limits=not args.no_rate_limits,
        transaction_flags=args.transaction_flags,
    )
    for external in args.user:
        emulator.connect_item(external, login=args.login)
    if args.transactions and args.user:
        emulator.add_account_with_transactions(
            args.transactions, seed=args.seed, user_ref=args.user[0]
        )
    return serve_until_interrupted(
        emulator, lambda emu: [f"Bridge emulator on {emu.base_url} (client id {args.client_id})"]
    )


if __name__ == "__main__":
    sys.exit(main())
