"""Conformance: the Linxo emulator's raw HTTP answers against docs/aggregators.md §2.

These tests do not use our client: they speak plain HTTP with ``requests`` and compare the
JSON with field names and shapes copied from docs/aggregators.md (section numbers beside each set),
so the emulator cannot drift into agreeing with a wrong client. A field that page lists
must be there with the documented type; extra fields are allowed (the vendor has more).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from bank_sync_bridge.testing import AdjustableClock, LinxoEmulator
from bank_sync_bridge.testing.linxo_emulator import submit_widget

PARIS = ZoneInfo("Europe/Paris")

# docs/aggregators.md §2.2: token answer.
TOKEN_KEYS = {"access_token", "token_type", "expires_in"}
# docs/aggregators.md §2.2 and §2.10: Linxo (OAuth) error body.
ERROR_KEYS = {"error", "error_description"}
# docs/aggregators.md §2.2: the current user (v2.1 fixture fields).
USER_KEYS = {"id", "email", "first_name", "last_name", "creation_date", "email_verified"}
# docs/aggregators.md §2.4 connection (v2.1 fixture); v3 renames logo_url to
# provider_logo_url (§2.9).
CONNECTION_KEYS = {
    "id",
    "provider_id",
    "name",
    "status",
    "creation_date",
    "auto_sync",
    "owner",
    "consent_per_account",
    "user_id",
    "channels",
}
CONNECTION_STATUSES = {"RUNNING", "SUCCESS", "PARTIAL_SUCCESS", "FAILED", "CLOSED", "NONE"}
# docs/aggregators.md §2.4 channels[]; ``expires`` on the REDIRECT channel (consent end, §2.5).
CHANNEL_KEYS = {
    "channel_definition_id",
    "mode",
    "status",
    "credentials",
    "account_types",
    "channel_definition_unavailable",
}
# docs/aggregators.md §2.4 account.
ACCOUNT_KEYS = {
    "id",
    "connection_id",
    "name",
    "account_number",
    "iban",
    "currency",
    "balance",
    "balance_date",
    "type",
    "status",
    "creation_date",
    "owner",
    "usage",
}
ACCOUNT_TYPES = {"CHECKINGS", "SAVINGS", "LOAN", "CREDIT_CARD"}
ACCOUNT_STATUSES = {
    "ACTIVE",
    "MANUAL",
    "ERROR",
    "NOT_FOUND",
    "CLOSED",
    "SUSPENDED",
    "PENDING_CONSENT",
}
# docs/aggregators.md §2.6: v3 transaction fields.
TRANSACTION_KEYS_V3 = {
    "id",
    "account_id",
    "amount",
    "type",
    "status",
    "origin",
    "notes",
    "enrichments",
}
# docs/aggregators.md §2.6: v2.1 transaction fields.
TRANSACTION_KEYS_V21 = {
    "id",
    "account_id",
    "amount",
    "currency",
    "label",
    "notes",
    "remittance_information",
    "type",
    "origin",
    "status",
    "category_id",
    "date",
    "booking_date",
    "value_date",
    "import_date",
    "source",
}
# docs/aggregators.md §2.6 enumerations.
TRANSACTION_TYPES = {
    "CREDIT",
    "DEBIT",
    "INTEREST",
    "DIVIDEND",
    "BANK_FEE",
    "DEPOSIT",
    "ATM",
    "POINT_OF_SALE",
    "CREDIT_CARD_PAYMENT",
    "INTERNAL_TRANSFER",
    "POTENTIAL_TRANSFER",
    "CHECK",
    "ELECTRONIC_PAYMENT",
    "CASH",
    "DIRECT_DEPOSIT",
    "DIRECT_DEBIT",
    "REPEATING_PAYMENT",
    "OTHER",
}
TRANSACTION_ORIGINS = {"ORIGINAL", "UPCOMING", "TRANSACTION", "RECURRING", "SCHEDULED"}
TRANSACTION_STATUSES = {
    "BOOKED",
    "PENDING",
    "OTHER",
    "EXPIRED",
    "REJECTED",
    "CANCELLED",
    "REFUNDED",
}
# docs/aggregators.md §2.7 webhook body.
WEBHOOK_KEYS = {
    "id",
    "event_type",
    "resource_type",
    "creation_date",
    "channel_definition_id",
    "resource",
    "new_transactions",
}
DECIMAL_STRING = re.compile(r"^-?\d+\.\d{2}$")


class Session:
    """A plain-HTTP Linxo integration, written from docs/aggregators.md only."""

    def __init__(self, emu: LinxoEmulator) -> None:
        self.emu = emu
        self.http = requests.Session()

    def token(self, **body: str) -> requests.Response:
        payload = {
            "provider": "linxoConnect",
            "client_id": self.emu.client_id,
            "client_secret": self.emu.client_secret,
            **body,
        }
        return self.http.post(f"{self.emu.auth_url}/token", json=payload, timeout=5)

    def get(self, path: str, token: str, **params: Any) -> requests.Response:
        return self.http.get(
            f"{self.emu.api_url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )


@pytest.fixture(params=["v3", "v2.1"])
def world(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """An emulator with one user, one successful connection, and tokens, per API version."""
    clock = AdjustableClock(datetime(2026, 3, 16, 8, 0, tzinfo=timezone.utc), frozen=True)
    with LinxoEmulator(clock=clock, api_version=request.param) as emu:
        http = Session(emu)
        client = http.token(grant_type="client_credentials", scope="users_create").json()
        created = http.http.post(
            f"{emu.api_url}/users",
            json={"email": "asso@example.org", "password": "pa55word!"},
            headers={"Authorization": f"Bearer {client['access_token']}"},
            timeout=5,
        )
        user = http.token(
            grant_type="password", username="asso@example.org", password="pa55word!"
        ).json()
        user_id = created.headers["Location"].rsplit("/", 1)[1]
        connection_id = emu.create_connection(user_id)
        yield {
            "emu": emu,
            "http": http,
            "created": created,
            "client_token": client["access_token"],
            "token": user["access_token"],
            "user_id": user_id,
            "connection_id": connection_id,
            "version": request.param,
        }


def _list(world: dict[str, Any], body: Any, key: str) -> list[dict[str, Any]]:
    """docs/aggregators.md §2.4, §2.9: v3 wraps lists in an object, v2.1 sends bare arrays."""
    if world["version"] == "v3":
        assert set(body) == {key}
        body = body[key]
    assert isinstance(body, list)
    return body


def test_token_answers_and_errors(world: dict[str, Any]) -> None:
    http: Session = world["http"]
    answer = http.token(grant_type="client_credentials", scope="users_create")
    assert answer.status_code == 200 and set(answer.json()) >= TOKEN_KEYS
    assert answer.json()["token_type"] == "Bearer"
    assert isinstance(answer.json()["expires_in"], int)

    wrong = requests.post(
        f"{world['emu'].auth_url}/token",
        json={"client_id": "nobody", "client_secret": "x", "grant_type": "client_credentials"},
        timeout=5,
    )
    assert wrong.status_code == 401
    assert set(wrong.json()) == ERROR_KEYS and wrong.json()["error"] == "invalid_client"
    for partial in ({"client_id": "nobody"}, {"client_id": world["emu"].client_id}):
        missing_secret = requests.post(
            f"{world['emu'].auth_url}/token",
            json={**partial, "grant_type": "client_credentials"},
            timeout=5,
        )
        assert missing_secret.status_code == 401
    bad_password = http.token(grant_type="password", username="asso@example.org", password="no")
    assert bad_password.status_code == 400 and bad_password.json()["error"] == "invalid_grant"
    # Form-encoded bodies work too (the docs' examples post forms, docs/aggregators.md §2.2).
    form = requests.post(
        f"{world['emu'].auth_url}/token",
        data={
            "client_id": world["emu"].client_id,
            "client_secret": world["emu"].client_secret,
            "grant_type": "client_credentials",
        },
        timeout=5,
    )
    assert form.status_code == 200


def test_users(world: dict[str, Any]) -> None:
    created = world["created"]
    assert created.status_code == 201
    # docs/aggregators.md §2.2: the id is in Location.
    assert re.search(r"/users/\d+$", created.headers["Location"])
    me = world["http"].get("/users/me", world["token"])
    assert set(me.json()) >= USER_KEYS and me.json()["email"] == "asso@example.org"
    # A user token cannot create users; a client token cannot read data.
    refused = world["http"].get("/users/me", world["client_token"])
    assert refused.status_code == 403 and set(refused.json()) == ERROR_KEYS
    again = requests.post(
        f"{world['emu'].api_url}/users",
        json={"email": "asso@example.org", "password": "pa55word!"},
        headers={"Authorization": f"Bearer {world['client_token']}"},
        timeout=5,
    )
    assert again.status_code == 409


def test_connections(world: dict[str, Any]) -> None:
    http: Session = world["http"]
    params = {"user_id": world["user_id"]} if world["version"] == "v3" else {}
    body = http.get("/connections", world["token"], **params).json()
    (connection,) = _list(world, body, "connections")
    logo_key = "provider_logo_url" if world["version"] == "v3" else "logo_url"
    assert CONNECTION_KEYS | {logo_key} <= set(connection)
    assert connection["status"] in CONNECTION_STATUSES
    assert isinstance(connection["id"], str) and isinstance(connection["provider_id"], str)
    assert isinstance(connection["creation_date"], int)
    modes = {c["mode"] for c in connection["channels"]}
    assert modes <= {"REDIRECT", "EMBEDDED"}
    for channel in connection["channels"]:
        assert set(channel) >= CHANNEL_KEYS
    redirect = next(c for c in connection["channels"] if c["mode"] == "REDIRECT")
    assert isinstance(redirect["expires"], int)
    single = http.get(f"/connections/{connection['id']}", world["token"]).json()
    assert single == connection
    if world["version"] == "v3":  # docs/aggregators.md §2.4: v3 needs ?user_id=
        missing = http.get("/connections", world["token"])
        assert missing.status_code == 400 and set(missing.json()) == ERROR_KEYS


def test_accounts(world: dict[str, Any]) -> None:
    http: Session = world["http"]
    params = {"user_id": world["user_id"]} if world["version"] == "v3" else {}
    accounts = _list(world, http.get("/accounts", world["token"], **params).json(), "accounts")
    assert len(accounts) == 2
    for account in accounts:
        assert set(account) >= ACCOUNT_KEYS
        assert account["type"] in ACCOUNT_TYPES and account["status"] in ACCOUNT_STATUSES
        assert isinstance(account["balance_date"], int)
        if world["version"] == "v3":
            # docs/aggregators.md §2.4: v3 {"amount": {"amount": "2441.46", "currency": "EUR"}}
            assert set(account["balance"]) == {"amount"}
            assert set(account["balance"]["amount"]) == {"amount", "currency"}
            assert DECIMAL_STRING.match(account["balance"]["amount"]["amount"])
        else:
            assert isinstance(account["balance"], float | int)
    single = http.get(f"/accounts/{accounts[0]['id']}", world["token"]).json()
    assert single == accounts[0]


def test_transactions_shapes_dates_and_paging(world: dict[str, Any]) -> None:
    http: Session = world["http"]
    emu: LinxoEmulator = world["emu"]
    account_id = emu.account_ids(world["connection_id"])[0]
    if world["version"] == "v3":
        # docs/aggregators.md §2.6: account_ids, ISO-8601 window with offset, user_id required.
        window = {
            "user_id": world["user_id"],
            "account_ids": account_id,
            "start_date": "2026-01-01T00:00:00+01:00",
            "end_date": "2026-03-16T00:00:00+01:00",
        }
    else:
        # docs/aggregators.md §2.6: account_id, unix seconds.
        window = {
            "account_id": account_id,
            "start_date": int(datetime(2026, 1, 1, tzinfo=PARIS).timestamp()),
            "end_date": int(datetime(2026, 3, 16, tzinfo=PARIS).timestamp()),
        }
    body = http.get("/transactions", world["token"], page=1, limit=500, **window).json()
    rows = _list(world, body, "transactions")
    assert len(rows) == 41  # 40 generated + today's pending; the forecast is 5 days ahead
    for row in rows:
        assert row["type"] in TRANSACTION_TYPES
        assert row["origin"] in TRANSACTION_ORIGINS and row["status"] in TRANSACTION_STATUSES
        if world["version"] == "v3":
            assert set(row) >= TRANSACTION_KEYS_V3
            assert set(row["amount"]) == {"amount", "currency"}
            assert DECIMAL_STRING.match(row["amount"]["amount"])  # text, docs/aggregators.md §2.6
            assert {"display_label", "date"} <= set(row["enrichments"])
            day = datetime.fromisoformat(row["enrichments"]["date"])
            assert day.utcoffset() is not None and (day.hour, day.minute) == (0, 0)
        else:
            assert set(row) >= TRANSACTION_KEYS_V21
            assert isinstance(row["amount"], float | int)  # a JSON number, docs/aggregators.md §2.6
            assert isinstance(row["remittance_information"], list)
        # docs/aggregators.md §2.6: unix seconds of midnight Paris (not UTC).
        stamp = datetime.fromtimestamp(row["booking_date"], PARIS)
        assert (stamp.hour, stamp.minute) == (0, 0)
    assert sorted(r["status"] for r in rows).count("PENDING") == 1
    assert date(2026, 1, 1) <= datetime.fromtimestamp(rows[0]["date"], PARIS).date()

    # Paging: page/limit, a page past the end is empty, bad values are 400
    # (docs/aggregators.md §2.6).
    def page(number: int) -> list[dict[str, Any]]:
        answer = http.get("/transactions", world["token"], page=number, limit=20, **window)
        return _list(world, answer.json(), "transactions")

    assert [len(page(n)) for n in (1, 2, 3, 4)] == [20, 20, 1, 0]
    assert {r["id"] for n in (1, 2, 3) for r in page(n)} == {r["id"] for r in rows}
    for bad in ({"page": 0}, {"page": "abc"}, {"limit": 501}, {"limit": 0}):
        answer = http.get(
            "/transactions", world["token"], **{**window, "page": 1, "limit": 10, **bad}
        )
        assert answer.status_code == 400 and set(answer.json()) == ERROR_KEYS


def test_providers(world: dict[str, Any]) -> None:
    http: Session = world["http"]
    body = http.get("/providers", world["client_token"], limit=250).json()
    providers = _list(world, body, "providers")
    assert len(providers) > 10
    for provider in providers:
        assert {"id", "name", "logo_url"} <= set(provider)
        # docs/aggregators.md §2.4: logos at
        # static.oxlin.io/common/pictures/providers_logos/<id>.png
        assert provider["logo_url"].endswith(f"/providers_logos/{provider['id']}.png")


def test_widget_session_page_and_redirect(world: dict[str, Any]) -> None:
    emu: LinxoEmulator = world["emu"]
    answer = requests.post(
        f"{emu.widget_url}/widget_session",
        data={
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "access_token": world["token"],
        },
        timeout=5,
    )
    assert answer.status_code == 200 and "session_id" in answer.json()  # docs/aggregators.md §2.3
    page_url = (
        f"{emu.widget_url}/widget/add_connection?session_id={answer.json()['session_id']}"
        "&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fback%3Fmine%3D1"
    )
    page = requests.get(page_url, timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert '<form method="post"' in page.text
    location = submit_widget(page_url)
    assert re.fullmatch(
        r"http://127\.0\.0\.1:9/back\?mine=1&connection_id=\d+&status=SUCCESS", location
    )
    refused = requests.get(
        f"{emu.widget_url}/widget/add_connection?session_id=nope&redirect_uri=http://x", timeout=5
    )
    assert refused.status_code == 400
    # The user token is required; the application's token is not a user.
    no_user = requests.post(
        f"{emu.widget_url}/widget_session",
        data={
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "access_token": world["client_token"],
        },
        timeout=5,
    )
    assert no_user.status_code == 401


def test_expired_token_rate_limit_and_request_ids(world: dict[str, Any]) -> None:
    http: Session = world["http"]
    emu: LinxoEmulator = world["emu"]
    ok = http.get("/users/me", world["token"])
    assert ok.headers["X-Request-Id"]
    emu.force_rate_limit(1, retry_after=3)
    limited = http.get("/users/me", world["token"])
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    emu.clock.advance(seconds=emu.token_lifetime + 1)
    expired = http.get("/users/me", world["token"])
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_token"


def test_webhook_body(world: dict[str, Any]) -> None:
    body = json.loads(world["emu"].webhook_body(world["connection_id"]))
    assert set(body) == WEBHOOK_KEYS
    assert (body["event_type"], body["resource_type"]) == ("UPDATED", "CONNECTIONS")
    assert body["new_transactions"] is True and isinstance(body["creation_date"], int)
