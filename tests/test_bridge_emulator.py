"""Conformance of the Bridge emulator with what Bridge publishes.

The expected field names, shapes, statuses and error codes below are copied by hand from
``docs/aggregators.md`` §1 (Bridge API 2025-01-15), not from the emulator, so
that the emulator cannot drift into agreeing with a wrong client. These tests talk raw HTTP
(``requests``), never through our client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bank_sync_bridge.testing import AdjustableClock, BridgeEmulator

START = datetime(2025, 3, 3, 6, 0, tzinfo=timezone.utc)

# -- shapes from docs/aggregators.md §1 ------------------------------------------------------
# 1.2: token answer and user resource
TOKEN_KEYS = {"access_token", "expires_at", "user"}
USER_KEYS = {"uuid", "external_user_id"}
# 1.3: connect session answer and callback parameters
CONNECT_SESSION_KEYS = {"id", "url"}
CALLBACK_KEYS_SUCCESS = {"user_uuid", "item_id", "success", "source", "context"}
CALLBACK_STEPS = {
    "highlighted_banks",
    "sub_banks_list",
    "link_iban_error",
    "bank_creds_form",
    "edit_bank_creds_form",
    "otp_form",
    "sync_in_progress",
    "sync_pending",
    "sync_success",
    "sync_error",
    "pro_validation_form",
    "email_validation_form",
}
# 1.4: item fields (1.12 example)
ITEM_REQUIRED = {"id", "status", "status_code_description", "provider_id"}
ITEM_OPTIONAL = {
    "status_code_info",
    "account_types",
    "created_at",
    "last_successful_refresh",
    "last_try_refresh",
    "authentication_expires_at",
}
ITEM_STATUSES = {0, -2, -3, 402, 429, 1003, 1005, 1007, 1009, 1010, 1099, 1100}
# 1.5: account fields (official v3 example) and loan details
ACCOUNT_REQUIRED = {
    "id",
    "name",
    "balance",
    "updated_at",
    "type",
    "currency_code",
    "item_id",
    "provider_id",
    "data_access",
    "pro",
}
ACCOUNT_OPTIONAL = {
    "accounting_balance",
    "instant_balance",
    "last_refresh_status",
    "iban",
    "iban_filled_manually",
    "loan_details",
}
LOAN_DETAILS_KEYS = {
    "next_payment_date",
    "next_payment_amount",
    "maturity_date",
    "opening_date",
    "interest_rate",
    "type",
    "borrowed_capital",
    "repaid_capital",
    "remaining_capital",
}
ACCOUNT_TYPES = {
    "checking",
    "savings",
    "brokerage",
    "card",
    "loan",
    "shared_saving_plan",
    "pending",
    "life_insurance",
    "special",
    "unknown",
}
# 1.6: transaction fields (v3 example + typings) and the page envelope
TRANSACTION_REQUIRED = {
    "id",
    "clean_description",
    "provider_description",
    "amount",
    "date",
    "updated_at",
    "currency_code",
    "account_id",
    "deleted",
    "future",
}
TRANSACTION_OPTIONAL = {
    "booking_date",
    "transaction_date",
    "value_date",
    "category_id",
    "operation_type",
}
PAGE_KEYS = {"resources", "generated_at", "pagination"}
PAGINATION_KEYS = {"next_uri"}
# 1.7: provider fields (migration guide)
PROVIDER_REQUIRED = {
    "id",
    "name",
    "country_code",
    "images",
    "capabilities",
    "aggregation_metadata",
    "health_status",
    "tags",
}
PROVIDER_OPTIONAL = {"group_name", "payment_metadata"}
# 1.8: webhook envelope and content per event type
WEBHOOK_KEYS = {"type", "timestamp", "content"}
WEBHOOK_CONTENT = {
    "user.deleted": {"user_uuid"},
    "item.created": {"item_id", "user_uuid"},
    "item.refreshed": {
        "item_id",
        "user_uuid",
        "status_code",
        "status_code_info",
        "full_refresh",
        "refresh_trigger",
        "account_types",
        "authentication_expires_at",
    },
    "item.deleted": {"item_id", "user_uuid"},
    "item.account.created": {"account_id", "item_id", "user_uuid", "balance"},
    "item.account.updated": {
        "account_id",
        "item_id",
        "user_uuid",
        "balance",
        "nb_new_transactions",
        "nb_updated_transactions",
        "nb_deleted_transactions",
    },
}
# 1.9: error body
ERROR_REQUIRED = {"code", "message"}
ERROR_OPTIONAL = {"property"}

UPDATED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
V1_SIGNATURE_RE = re.compile(r"^v1=[0-9a-f]{64}(,v1=[0-9a-f]{64})?$")


def assert_shape(resource: dict[str, Any], required: set[str], optional: set[str]) -> None:
    """Every required key, nothing unknown, and no null (v3 leaves null fields out)."""
    keys = set(resource)
    assert required <= keys, f"missing {required - keys}"
    assert keys <= required | optional, f"unexpected {keys - required - optional}"
    assert all(value is not None for value in resource.values()), resource


def assert_error(response: requests.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert_shape(body, ERROR_REQUIRED, ERROR_OPTIONAL)
    if code is not None:
        assert body["code"] == code


class Api:
    """Raw HTTP against the emulator, with Bridge's headers."""

    def __init__(self, emu: BridgeEmulator) -> None:
        self.emu = emu
        self.session = requests.Session()
        self.headers = {
            "Bridge-Version": "2025-01-15",
            "Client-Id": emu.client_id,
            "Client-Secret": emu.client_secret,
        }
        self.token: str | None = None

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(self.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(kwargs.pop("headers", {}))
        return self.session.request(
            method, self.emu.base_url + path, headers=headers, timeout=5, **kwargs
        )

    def login(self, external_user_id: str) -> dict[str, Any]:
        response = self.call(
            "POST",
            "/v3/aggregation/authorization/token",
            json={"external_user_id": external_user_id},
        )
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        return response.json()


@pytest.fixture
def clock() -> AdjustableClock:
    return AdjustableClock(START, frozen=True)


@pytest.fixture
def emu(clock: AdjustableClock) -> Iterator[BridgeEmulator]:
    with BridgeEmulator(clock=clock, seed=7) as emulator:
        yield emulator


@pytest.fixture
def api(emu: BridgeEmulator) -> Api:
    return Api(emu)


def all_transactions(api: Api, path: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    next_uri: str | None = path
    while next_uri:
        page = api.call("GET", next_uri).json()
        seen.extend(page["resources"])
        next_uri = page["pagination"]["next_uri"]
    return seen


def test_users_and_tokens_have_bridge_shapes_and_two_hour_life(
    emu: BridgeEmulator, api: Api, clock: AdjustableClock
) -> None:
    created = api.call("POST", "/v3/aggregation/users", json={"external_user_id": "co-1"})
    assert created.status_code == 201
    assert set(created.json()) == USER_KEYS
    assert_error(api.call("POST", "/v3/aggregation/users", json={"external_user_id": "co-1"}), 409)
    token = api.login("co-1")
    assert set(token) == TOKEN_KEYS
    assert set(token["user"]) == USER_KEYS
    expires = datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
    assert expires - clock() == timedelta(hours=2)
    assert api.call("GET", "/v3/aggregation/items").status_code == 200
    clock.advance(hours=2)
    assert_error(api.call("GET", "/v3/aggregation/items"), 401)
    uuid = created.json()["uuid"]
    api.token = None
    assert api.call("GET", f"/v3/aggregation/users/{uuid}").json() == created.json()
    assert api.call("DELETE", f"/v3/aggregation/users/{uuid}").status_code == 204
    assert_error(api.call("GET", f"/v3/aggregation/users/{uuid}"), 404)


def test_refuses_what_bridge_refuses(emu: BridgeEmulator, api: Api) -> None:
    response = api.session.get(emu.base_url + "/v3/providers", timeout=5)
    assert_error(response, 400)  # no Bridge-Version
    assert_error(api.call("GET", "/v3/providers", headers={"Bridge-Version": "2021-06-01"}), 400)
    assert_error(
        api.call("GET", "/v3/providers", headers={"Client-Secret": "wrong"}),
        401,
        "invalid_client_credentials",
    )
    assert_error(
        api.call(
            "POST",
            "/v3/aggregation/users",
            data=b'{"external_user_id": "x"}',
            headers={"Content-Type": "text/plain"},
        ),
        415,
    )
    assert_error(api.call("GET", "/v3/aggregation/items"), 401)  # no user token
    api.token = "forged"
    assert_error(api.call("GET", "/v3/aggregation/items"), 401)


def test_connect_session_hosted_page_redirects_with_bridge_parameters(
    emu: BridgeEmulator, api: Api
) -> None:
    emu.create_user("co-1")
    api.login("co-1")
    session = api.call(
        "POST",
        "/v3/aggregation/connect-sessions",
        json={
            "callback_url": "https://erp.example/bank/callback",
            "context": "state-123",
            "user_email": "compta@example.fr",
            "country_code": "FR",
        },
    )
    assert session.status_code == 201
    assert set(session.json()) == CONNECT_SESSION_KEYS
    url = session.json()["url"]
    assert url.startswith(emu.base_url + "/")
    page = api.session.get(url, timeout=5)
    assert page.status_code == 200
    assert "<form" in page.text
    assert "Demo Bank" in page.text
    done = api.session.post(
        url, data={"login": "success", "provider_id": "574"}, allow_redirects=False, timeout=5
    )
    assert done.status_code in {302, 303}
    location = urlsplit(done.headers["Location"])
    assert location.netloc == "erp.example"
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert set(params) == CALLBACK_KEYS_SUCCESS
    assert params["success"] == "true"
    assert params["source"] == "connect"
    assert params["context"] == "state-123"
    # A session is single use.
    assert api.session.get(url, timeout=5).status_code == 404

    again = api.call(
        "POST",
        "/v3/aggregation/connect-sessions",
        json={"callback_url": "https://erp.example/cb", "item_id": int(params["item_id"])},
    )
    failed = api.session.post(
        again.json()["url"], data={"login": "1010"}, allow_redirects=False, timeout=5
    )
    failure = {k: v[0] for k, v in parse_qs(urlsplit(failed.headers["Location"]).query).items()}
    assert failure["success"] == "false"
    assert failure["step"] in CALLBACK_STEPS
    assert failure["item_id"] == params["item_id"]
    assert_error(
        api.call("POST", "/v3/aggregation/connect-sessions", json={"context": "not valid!"}), 400
    )


def test_items_accounts_and_statuses_have_v3_shapes(emu: BridgeEmulator, api: Api) -> None:
    item = emu.connect_item("co-1", login="success")
    api.login("co-1")
    items = api.call("GET", "/v3/aggregation/items").json()
    assert set(items) == {"resources", "pagination"}
    for status in sorted(ITEM_STATUSES):
        emu.set_item_status(item.id, status)
        english = api.call("GET", f"/v3/aggregation/items/{item.id}").json()
        french = api.call(
            "GET", f"/v3/aggregation/items/{item.id}", headers={"Accept-Language": "fr"}
        ).json()
        assert_shape(english, ITEM_REQUIRED, ITEM_OPTIONAL)
        assert english["status"] == status
        assert english["status_code_description"] != french["status_code_description"]
    accounts = api.call("GET", f"/v3/aggregation/accounts?item_id={item.id}").json()["resources"]
    assert len(accounts) >= 4
    types = set()
    for account in accounts:
        assert_shape(account, ACCOUNT_REQUIRED, ACCOUNT_OPTIONAL)
        assert isinstance(account["balance"], int | float)
        assert UPDATED_AT_RE.match(account["updated_at"])
        types.add(account["type"])
        if "loan_details" in account:
            assert set(account["loan_details"]) <= LOAN_DETAILS_KEYS
    assert types <= ACCOUNT_TYPES
    assert {"checking", "card", "savings", "loan"} <= types
    single = api.call("GET", f"/v3/aggregation/accounts/{accounts[0]['id']}")
    assert single.json() == accounts[0]
    assert api.call("POST", f"/v3/aggregation/items/{item.id}/refresh", json={}).status_code == 202
    assert api.call("DELETE", f"/v3/aggregation/items/{item.id}").status_code == 204
    assert_error(api.call("GET", f"/v3/aggregation/items/{item.id}"), 404)
    assert api.call("GET", "/v3/aggregation/accounts").json()["resources"] == []


def test_transactions_page_by_relative_next_uri_and_refuse_forged_cursors(
    emu: BridgeEmulator, api: Api
) -> None:
    item = emu.connect_item("co-1", login="success")
    api.login("co-1")
    first = api.call("GET", "/v3/aggregation/transactions?limit=10").json()
    assert set(first) == PAGE_KEYS
    assert set(first["pagination"]) == PAGINATION_KEYS
    next_uri = first["pagination"]["next_uri"]
    assert next_uri.startswith("/v3/aggregation/transactions?")
    assert "after=" in next_uri
    assert "limit=10" in next_uri
    for tx in first["resources"]:
        assert_shape(tx, TRANSACTION_REQUIRED, TRANSACTION_OPTIONAL)
        assert isinstance(tx["id"], int)
        assert isinstance(tx["amount"], int | float)
        assert UPDATED_AT_RE.match(tx["updated_at"])
        for key in ("date", "booking_date", "value_date", "transaction_date"):
            assert key not in tx or DATE_RE.match(tx[key])
    everything = all_transactions(api, "/v3/aggregation/transactions?limit=10")
    ids = [tx["id"] for tx in everything]
    assert len(ids) == len(set(ids))
    expected = sum(len(emu.transactions(a.id)) for a in emu.accounts(item.id))
    assert len(ids) == expected
    # Any future (pending) line has no booking date yet; the loaded card has some.
    assert any(tx["future"] for tx in everything)
    assert all("booking_date" not in tx for tx in everything if tx["future"])

    cursor = parse_qs(urlsplit(next_uri).query)["after"][0]
    assert_error(api.call("GET", "/v3/aggregation/transactions?after=Zm9yZ2Vk&limit=10"), 400)
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    assert_error(api.call("GET", f"/v3/aggregation/transactions?after={tampered}"), 400)
    # A cursor is bound to its query: reusing it with other filters is refused.
    assert_error(
        api.call(
            "GET", f"/v3/aggregation/transactions?after={cursor}&limit=10&min_date=2025-01-01"
        ),
        400,
    )
    assert_error(api.call("GET", "/v3/aggregation/transactions?limit=501"), 400)


def test_transaction_filters_and_since(
    emu: BridgeEmulator, api: Api, clock: AdjustableClock
) -> None:
    item = emu.connect_item("co-1", login="success")
    account = emu.accounts(item.id)[0]
    api.login("co-1")
    path = f"/v3/aggregation/transactions?account_id={account.id}&limit=500"
    mine = all_transactions(api, path)
    assert {tx["account_id"] for tx in mine} == {account.id}
    window = all_transactions(api, path + "&min_date=2025-02-15&max_date=2025-02-28")
    assert window
    assert all("2025-02-15" <= tx["date"] <= "2025-02-28" for tx in window)
    high_water = max(tx["updated_at"] for tx in mine)
    assert all_transactions(api, path + f"&since={high_water}") == []
    clock.advance(seconds=5)
    changed = emu.change_transaction(mine[0]["id"], label="Edf Pro")
    gone = emu.delete_transaction(mine[1]["id"])
    fresh = all_transactions(api, path + f"&since={high_water}")
    assert {tx["id"] for tx in fresh} == {changed.id, gone.id}
    assert next(tx for tx in fresh if tx["id"] == gone.id)["deleted"] is True


def test_pagination_boundaries(clock: AdjustableClock) -> None:
    with BridgeEmulator(clock=clock) as emu:
        account = emu.add_account_with_transactions(20, seed=1, user_ref="co-1")
        api = Api(emu)
        api.login("co-1")
        page = api.call("GET", f"/v3/aggregation/transactions?account_id={account.id}&limit=20")
        assert len(page.json()["resources"]) == 20
        assert page.json()["pagination"]["next_uri"] is None  # exactly one full page
    with BridgeEmulator(clock=clock, empty_last_page=True) as emu:
        account = emu.add_account_with_transactions(20, seed=1, user_ref="co-1")
        api = Api(emu)
        api.login("co-1")
        page = api.call("GET", f"/v3/aggregation/transactions?account_id={account.id}&limit=20")
        last = api.call("GET", page.json()["pagination"]["next_uri"]).json()
        assert last["resources"] == []
        assert last["pagination"]["next_uri"] is None


def test_providers_search_and_country(emu: BridgeEmulator, api: Api) -> None:
    everything = api.call("GET", "/v3/providers?limit=500").json()["resources"]
    for provider in everything:
        assert_shape(provider, PROVIDER_REQUIRED, PROVIDER_OPTIONAL)
        assert "logo" in provider["images"]
        assert "status" in provider["health_status"]["aggregation"]
        assert "aggregation" in provider["capabilities"]
    assert {p["id"] for p in everything} >= {574}
    found = api.call("GET", "/v3/providers?name=societe%20generale&country_code=FR").json()
    # Accent-insensitive, and the group's banks come along (Boursorama belongs to SG).
    assert [p["name"] for p in found["resources"]] == ["Société Générale", "Boursorama Banque"]
    assert api.call("GET", "/v3/providers?name=DEUTSCHE&country_code=FR").json()["resources"] == []
    belgian = api.call("GET", "/v3/providers?country_code=BE").json()["resources"]
    assert belgian
    assert {p["country_code"] for p in belgian} == {"BE"}
    demo = api.call("GET", "/v3/providers/574").json()
    assert demo["name"] == "Demo Bank"


def test_published_rate_limits(emu: BridgeEmulator, api: Api, clock: AdjustableClock) -> None:
    emu.create_user("co-1")
    for _ in range(10):
        api.login("co-1")
    assert_error(
        api.call("POST", "/v3/aggregation/authorization/token", json={"external_user_id": "co-1"}),
        429,
    )
    for _ in range(60):
        assert api.call("GET", "/v3/aggregation/items").status_code == 200
    limited = api.call("GET", "/v3/aggregation/items")
    assert_error(limited, 429)
    assert float(limited.headers["Retry-After"]) > 0
    clock.advance(seconds=61)
    assert api.call("GET", "/v3/aggregation/items").status_code == 200


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str | None]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers.get("BridgeApi-Signature")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[bytes, str | None]]]]:
    received: list[tuple[bytes, str | None]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/bridge", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhooks_envelope_and_signatures(
    emu: BridgeEmulator, receiver: tuple[str, list[tuple[bytes, str | None]]]
) -> None:
    url, received = receiver
    emu.register_webhook(url, ["secret-one"])
    item = emu.connect_item("co-1", login="success")
    emu.refresh_item(item.id)
    emu.delete_transaction(emu.transactions(emu.accounts(item.id)[0].id)[0].id)
    emu.deliver_webhooks()
    types = []
    for body, signature in received:
        event = json.loads(body)
        assert set(event) == WEBHOOK_KEYS
        assert isinstance(event["timestamp"], int)
        assert set(event["content"]) == WEBHOOK_CONTENT[event["type"]]
        assert signature is not None
        assert V1_SIGNATURE_RE.match(signature)
        expected = hmac.new(b"secret-one", body, hashlib.sha256).hexdigest()
        assert signature == f"v1={expected}"
        types.append(event["type"])
    assert types[:2] == ["item.created", "item.refreshed"]
    assert {"item.account.created", "item.account.updated"} <= set(types)

    received.clear()
    emu.rotate_webhook_secret("secret-two")
    emu.send_webhook(emu.event("TEST_EVENT", {}), copies=2)
    emu.send_webhook(emu.event("TEST_EVENT", {}), signature="invalid")
    (body, both), (body2, again), (body3, bad) = received
    assert body == body2
    assert both == again
    assert both is not None
    assert both.split(",") == [
        "v1=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        for key in (b"secret-two", b"secret-one")
    ]
    assert bad is not None
    assert hmac.new(b"secret-two", body3, hashlib.sha256).hexdigest() not in bad
    with pytest.raises(ValueError):
        emu.register_webhook("https://example.com/hook", ["s"])


def test_scripted_faults_and_forced_rate_limit(emu: BridgeEmulator, api: Api) -> None:
    emu.script_faults("500", 1)
    assert_error(api.call("GET", "/v3/providers"), 500)
    assert api.call("GET", "/v3/providers").status_code == 200
    emu.script_faults("malformed_json")
    broken = api.call("GET", "/v3/providers")
    with pytest.raises(ValueError):
        broken.json()
    emu.force_rate_limit(1, retry_after=None)
    limited = api.call("GET", "/v3/providers")
    assert_error(limited, 429)
    assert "Retry-After" not in limited.headers
    emu.script_faults("timeout", delay=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.session.get(emu.base_url + "/v3/providers", headers=api.headers, timeout=0.2)


def test_large_data_set_is_deterministic_and_fast(clock: AdjustableClock) -> None:
    started = time.perf_counter()
    with BridgeEmulator(clock=clock) as first, BridgeEmulator(clock=clock) as second:
        a = first.add_account_with_transactions(20_000, seed=42, user_ref="bench")
        b = second.add_account_with_transactions(20_000, seed=42, user_ref="bench")
        left = [(t.id, t.amount, t.clean_description, t.date) for t in first.transactions(a.id)]
        right = [(t.id, t.amount, t.clean_description, t.date) for t in second.transactions(b.id)]
    assert len(left) == 20_000
    assert left == right
    assert time.perf_counter() - started < 5


def test_admin_endpoints_steer_an_emulator_from_another_process(
    emu: BridgeEmulator, api: Api, clock: AdjustableClock
) -> None:
    admin = {"Client-Secret": emu.client_secret}
    refused = requests.post(emu.base_url + "/__emulator__/tokens/expire", timeout=5)
    assert refused.status_code == 401
    moved = requests.post(
        emu.base_url + "/__emulator__/clock/advance",
        json={"seconds": 3600},
        headers=admin,
        timeout=5,
    )
    assert moved.json()["now"] == "2025-03-03T07:00:00.000Z"
    item = emu.connect_item("co-1", login="success.1010")
    api.login("co-1")
    refreshed = requests.post(
        emu.base_url + "/__emulator__/items/refresh",
        json={"item_id": item.id},
        headers=admin,
        timeout=5,
    )
    assert refreshed.json()["status"] == 1010
    requests.post(
        emu.base_url + "/__emulator__/faults", json={"kind": "503"}, headers=admin, timeout=5
    )
    assert api.call("GET", "/v3/aggregation/items").status_code == 503
    requests.post(emu.base_url + "/__emulator__/tokens/expire", headers=admin, timeout=5)
    assert api.call("GET", "/v3/aggregation/items").status_code == 401
    state = requests.get(emu.base_url + "/__emulator__/state", headers=admin, timeout=5).json()
    assert [u["external_user_id"] for u in state["users"]] == ["co-1"]


def test_command_line_serves_a_prepared_emulator() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bank_sync_bridge.testing.bridge_emulator",
            "--port",
            "0",
            "--user",
            "demo",
            "--transactions",
            "1000",
            "--frozen-clock",
            "2025-03-03T06:00:00+00:00",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert base_url, line
        emu_like = type(
            "Target",
            (),
            {
                "base_url": base_url.group(0),
                "client_id": "emulator_client_id",
                "client_secret": "emulator_client_secret",
            },
        )
        api = Api(emu_like)  # type: ignore[arg-type]
        api.login("demo")
        accounts = api.call("GET", "/v3/aggregation/accounts").json()["resources"]
        assert len(accounts) == 6
        big = max(accounts, key=lambda a: a["id"])
        page = api.call("GET", f"/v3/aggregation/transactions?account_id={big['id']}&limit=500")
        assert len(page.json()["resources"]) == 500
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_queued_webhooks_can_arrive_reversed_and_twice(
    emu: BridgeEmulator, receiver: tuple[str, list[tuple[bytes, str | None]]]
) -> None:
    url, received = receiver
    emu.register_webhook(url, ["s3cret"])
    item = emu.connect_item("co-1")
    queued = [event["type"] for event in emu.outbox]
    assert queued[:2] == ["item.created", "item.refreshed"]
    emu.deliver_webhooks(reverse=True, duplicate=True)
    arrived = [json.loads(body)["type"] for body, _ in received]
    assert arrived == [kind for kind in reversed(queued) for _ in (1, 2)]
    assert emu.outbox == []
    assert all(d.status == 200 for d in emu.deliveries)
    emu.deliveries.clear()
    emu.delete_transaction(emu.transactions(emu.accounts(item.id)[0].id)[0].id)
    (event,) = emu.outbox
    assert event["content"]["nb_deleted_transactions"] == 1


def test_application_limit_spans_users(clock: AdjustableClock) -> None:
    # The published figure is 2000 per 5 minutes; a lowered one shows the same rule cheaply.
    with BridgeEmulator(clock=clock, app_limit=6) as emu:
        first, second = Api(emu), Api(emu)
        emu.create_user("co-1")
        emu.create_user("co-2")
        first.login("co-1")
        second.login("co-2")
        for api in (first, second, first, second):
            assert api.call("GET", "/v3/aggregation/items").status_code == 200
        assert_error(second.call("GET", "/v3/providers"), 429)
        clock.advance(minutes=5)
        assert first.call("GET", "/v3/providers").status_code == 200
