"""The bridge service over real HTTP on 127.0.0.1, driven through BridgeServiceProvider.

The service runs in a thread with a real store (SQLite file, and a throwaway PostgreSQL
database) and the operator's aggregator: the in-process sandbox, or the Linxo emulator (a real
HTTP server) for webhooks. Every tenant call goes through the client the Odoo addon uses.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from bank_sync_bridge.crypto import SecretBox, generate_key
from bank_sync_bridge.errors import (
    ActionRequired,
    AuthenticationError,
    InvalidRequest,
    NotFound,
    RateLimited,
    SignatureVerificationError,
)
from bank_sync_bridge.model import ActionReason, ConnectionState
from bank_sync_bridge.providers import ProviderConfig, get_provider
from bank_sync_bridge.providers.bridge_service import BridgeServiceProvider
from bank_sync_bridge.providers.sandbox import SandboxProvider
from bank_sync_bridge.service import admin
from bank_sync_bridge.service.app import ServiceApp, ServiceSettings
from bank_sync_bridge.service.logs import LOGGER_NAME, JsonFormatter
from bank_sync_bridge.service.server import ServiceServer
from bank_sync_bridge.service.store import Store
from bank_sync_bridge.signing import sign_request
from bank_sync_bridge.testing.linxo_emulator import LinxoEmulator

CALLBACK = "http://127.0.0.1:9/odoo/bank_sync/callback"


# ----------------------------------------------------------------------------- fixtures
def _postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg2", reason="no PostgreSQL driver: pip install -e '.[test]'")
    if shutil.which("createdb") is None:
        pytest.skip("PostgreSQL's client tools (createdb) are not installed")
    name = f"bsb_service_test_{secrets.token_hex(4)}"
    created = subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-p", "5432", name],
        capture_output=True,
        check=False,
    )
    if created.returncode:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 unavailable: {created.stderr.decode()[:200]}")
    try:
        yield f"postgresql://127.0.0.1:5432/{name}"
    finally:
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-p", "5432", "--if-exists", name],
            capture_output=True,
            check=False,
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh service database of each supported kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/service.sqlite3"
    else:
        yield from _postgres_url()


@dataclass
class Service:
    """A running service and what tests need around it."""

    server: ServiceServer
    store: Store
    box: SecretBox
    logs: io.StringIO
    tenants: list[admin.TenantCredentials] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self) -> ServiceApp:
        return self.server.app

    def tenant(self, name: str = "Acme") -> admin.TenantCredentials:
        creds = admin.register_tenant(self.store, self.box, name)
        self.tenants.append(creds)
        return creds

    def client(
        self, creds: admin.TenantCredentials, company: str = "1", **kwargs: Any
    ) -> BridgeServiceProvider:
        provider = get_provider(
            "bridge_service",
            ProviderConfig(
                user_ref=company,
                base_url=self.url,
                credentials={"client_id": creds.client_id, "client_secret": creds.client_secret},
                timeout=10,
            ),
            sleep=lambda _s: None,
            **kwargs,
        )
        assert isinstance(provider, BridgeServiceProvider)
        return provider


#: Settings of the tests' service: generous rate limits, and the test mode, since the tests'
#: callback receivers listen on 127.0.0.1 over plain http.
TEST_SETTINGS = ServiceSettings(rate_per_second=500, burst=500, test_mode=True)


def _start_service(
    database_url: str, settings: ServiceSettings | None = None, **app_kwargs: Any
) -> tuple[Service, logging.Handler]:
    store = Store(database_url)
    store.migrate()
    box = SecretBox([generate_key()])
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    app = ServiceApp(store, box, settings or TEST_SETTINGS, **app_kwargs)
    server = ServiceServer(app).start()
    return Service(server, store, box, logs), handler


@contextlib.contextmanager
def running_service(
    database_url: str, settings: ServiceSettings | None = None, **app_kwargs: Any
) -> Iterator[Service]:
    """The service running for the ``with`` block, stopped and its log handler removed after
    (``app_kwargs`` go to :class:`ServiceApp`, e.g. a ``resolver``)."""
    running, handler = _start_service(database_url, settings, **app_kwargs)
    try:
        yield running
    finally:
        running.server.stop()
        running.store.close()
        logging.getLogger(LOGGER_NAME).removeHandler(handler)


@pytest.fixture
def service(database_url: str) -> Iterator[Service]:
    """The service on 127.0.0.1 (free port) with the default aggregator, the sandbox."""
    with running_service(database_url) as running:
        yield running


@pytest.fixture
def sqlite_service(tmp_path: Path) -> Iterator[Service]:
    """The same on SQLite only (tests of HTTP behaviour that the store does not change)."""
    with running_service(f"sqlite:///{tmp_path}/service.sqlite3") as running:
        yield running


def connect_sandbox_bank(
    client: BridgeServiceProvider, login: str = "success", institution: str = "BNPAFRPP"
) -> str:
    """Run the connect flow like a browser: the hosted page served by the service, its form,
    the redirect to Odoo's callback, then complete_connect with the callback's parameters."""
    session = client.start_connect(
        callback_url=CALLBACK, state="odoo-state-1", institution_id=institution
    )
    page = requests.get(session.url, timeout=10)
    assert page.status_code == 200
    form = {
        name: html.unescape(value)
        for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text
        )
    }
    form.update(login=login, password="x", action="connect")
    action = re.search(r'<form method="post" action="([^"]*)"', page.text)
    assert action is not None
    submitted = requests.post(
        urlsplit(session.url)._replace(path=action.group(1), query="").geturl(),
        data=form,
        allow_redirects=False,
        timeout=10,
    )
    assert submitted.status_code == 303
    location = submitted.headers["Location"]
    assert location.startswith(CALLBACK)
    result = client.complete_connect(dict(parse_qsl(urlsplit(location).query)))
    assert result.success, result
    assert result.state == "odoo-state-1"
    assert result.connection_id
    return result.connection_id


def signed_get(
    service: Service, creds: admin.TenantCredentials, path: str, **kwargs: Any
) -> requests.Response:
    """A raw signed GET, for tests that look at status codes and headers."""
    headers = sign_request(
        creds.client_secret, "GET", path, b"", client_id=creds.client_id, company="1"
    )
    headers.update(kwargs.pop("headers", {}))
    return requests.get(service.url + path, headers=headers, timeout=10, **kwargs)


# ----------------------------------------------------------------------------- public routes
def test_health_answers_unsigned_and_openapi_describes_every_endpoint(
    sqlite_service: Service,
) -> None:
    health = requests.get(sqlite_service.url + "/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.headers["X-Request-Id"]

    spec = requests.get(sqlite_service.url + "/openapi.json", timeout=10).json()
    from openapi_spec_validator import validate  # noqa: PLC0415 - test-only dependency

    validate(spec)  # raises on an invalid OpenAPI 3 document
    expected = {
        ("/health", "get"),
        ("/webhooks/{kind}", "post"),
        ("/v1/institutions", "get"),
        ("/v1/connect-sessions", "post"),
        ("/v1/connections/{id}/reconnect-sessions", "post"),
        ("/v1/connect/complete", "post"),
        ("/v1/connections", "get"),
        ("/v1/connections/{id}", "get"),
        ("/v1/connections/{id}", "delete"),
        ("/v1/connections/{id}/refresh", "post"),
        ("/v1/accounts", "get"),
        ("/v1/accounts/{id}/transactions", "get"),
        ("/v1/user", "delete"),
        ("/v1/events", "get"),
        ("/v1/callback", "put"),
    }
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert expected <= documented
    # Every documented route really exists: none answers "No such endpoint".
    for path, method in documented:
        concrete = path.replace("{id}", "x").replace("{kind}", "sandbox")
        answer = requests.request(method.upper(), sqlite_service.url + concrete, timeout=10)
        assert answer.status_code != 404 or answer.json().get("message") != "No such endpoint"

    docs = requests.get(sqlite_service.url + "/docs", timeout=10)
    assert docs.status_code == 200
    assert docs.headers["Content-Type"].startswith("text/html")
    assert "/v1/accounts/{id}/transactions" in docs.text
    assert "<script" not in docs.text and "http://" not in docs.text.replace(sqlite_service.url, "")


# ----------------------------------------------------------------------------- signatures
def test_unsigned_badly_signed_replayed_and_revoked_calls_get_401_without_secret_in_logs(
    sqlite_service: Service,
) -> None:
    creds = sqlite_service.tenant()
    url = sqlite_service.url + "/v1/connections"

    unsigned = requests.get(url, headers={"X-Bank-Sync-Company": "1"}, timeout=10)
    assert unsigned.status_code == 401
    assert unsigned.json()["error"] == "signature"
    assert "not signed" in unsigned.json()["message"]

    wrong = sign_request(
        "not-the-secret", "GET", "/v1/connections", client_id=creds.client_id, company="1"
    )
    bad = requests.get(url, headers=wrong, timeout=10)
    assert bad.status_code == 401
    assert "signature is wrong" in bad.json()["message"]

    # A signature for another path (or a tampered query) does not carry over.
    other = sign_request(
        creds.client_secret, "GET", "/v1/accounts", client_id=creds.client_id, company="1"
    )
    moved = requests.get(url, headers=other, timeout=10)
    assert moved.status_code == 401

    stale = sign_request(
        creds.client_secret,
        "GET",
        "/v1/connections",
        timestamp=time.time() - 3600,
        client_id=creds.client_id,
        company="1",
    )
    old = requests.get(url, headers=stale, timeout=10)
    assert old.status_code == 401

    headers = sign_request(
        creds.client_secret, "GET", "/v1/connections", client_id=creds.client_id, company="1"
    )
    good = headers
    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    replay = requests.get(url, headers=headers, timeout=10)
    assert replay.status_code == 401
    assert "replay" in replay.json()["message"]

    client = sqlite_service.client(creds)
    assert client.list_connections() == []
    admin.revoke_tenant(sqlite_service.store, creds.client_id)
    with pytest.raises(AuthenticationError) as revoked:
        client.list_connections()
    assert revoked.value.status == 401
    assert "revoked" in revoked.value.message

    # A wrong secret in the client is an authentication error the addon can show.
    impostor = sqlite_service.client(admin.TenantCredentials(creds.client_id, "guess"))
    with pytest.raises(AuthenticationError):
        impostor.list_institutions()

    lines = [json.loads(line) for line in sqlite_service.logs.getvalue().splitlines()]
    refused = [line for line in lines if line.get("status") == 401]
    assert len(refused) >= 6
    assert all(line["request_id"] and line["error"] == "signature" for line in refused)
    text = sqlite_service.logs.getvalue()
    assert creds.client_secret not in text
    assert good["X-BSB-Signature"] not in text


def test_a_company_header_changed_after_signing_is_refused(sqlite_service: Service) -> None:
    creds = sqlite_service.tenant()
    client = sqlite_service.client(creds, company="1")
    connection_id = connect_sandbox_bank(client)
    url = sqlite_service.url + "/v1/connections"

    # Signed for company 1, sent for company 2: company 2 would otherwise act with company 1's
    # request (or read its own data with a request company 1 made).
    signed = sign_request(
        creds.client_secret, "GET", "/v1/connections", client_id=creds.client_id, company="1"
    )
    swapped = requests.get(url, headers={**signed, "X-Bank-Sync-Company": "2"}, timeout=10)
    assert swapped.status_code == 401
    assert "company" in swapped.json()["message"]
    stripped = {k: v for k, v in signed.items() if k != "X-Bank-Sync-Company"}
    assert requests.get(url, headers=stripped, timeout=10).status_code in (400, 401)

    # The same request, untouched, is company 1's and lists its connection.
    fresh = sign_request(
        creds.client_secret, "GET", "/v1/connections", client_id=creds.client_id, company="1"
    )
    answer = requests.get(url, headers=fresh, timeout=10)
    assert answer.status_code == 200
    assert [c["remote_id"] for c in answer.json()["connections"]] == [connection_id]


def test_a_client_on_the_older_signature_scheme_is_told_so(sqlite_service: Service) -> None:
    creds = sqlite_service.tenant()
    signed = sign_request(
        creds.client_secret, "GET", "/v1/connections", client_id=creds.client_id, company="1"
    )
    # The older scheme sent the bare hex digest, without the version marker.
    signed["X-BSB-Signature"] = signed["X-BSB-Signature"].split("=", 1)[1]
    answer = requests.get(sqlite_service.url + "/v1/connections", headers=signed, timeout=10)
    assert answer.status_code == 401
    message = answer.json()["message"]
    assert "signature scheme v1" in message
    assert "update bank_sync_bridge" in message


def test_global_rate_limit_protects_the_operator_quota_across_tenants(tmp_path: Path) -> None:
    with running_service(
        f"sqlite:///{tmp_path}/s.sqlite3",
        ServiceSettings(rate_per_second=100, burst=100, global_rate_per_second=0.1, global_burst=4),
    ) as running:
        tenants = [running.tenant(f"T{n}") for n in range(5)]
        statuses = [signed_get(running, t, "/v1/connections").status_code for t in tenants]
        assert statuses == [200, 200, 200, 200, 429]
        refused = signed_get(running, tenants[0], "/v1/connections")
        assert refused.status_code == 429
        assert "quota" in refused.json()["message"]
        assert int(refused.headers["Retry-After"]) >= 1


def test_rate_limit_per_tenant_answers_429_with_retry_after(tmp_path: Path) -> None:
    with running_service(
        f"sqlite:///{tmp_path}/s.sqlite3", ServiceSettings(rate_per_second=0.2, burst=3)
    ) as running:
        greedy = running.tenant("Greedy")
        calm = running.tenant("Calm")
        statuses = [signed_get(running, greedy, "/v1/connections").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = signed_get(running, greedy, "/v1/connections")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"] == "rate_limited"
        # Another tenant has its own bucket.
        assert signed_get(running, calm, "/v1/connections").status_code == 200
        # The client reports it as RateLimited with the delay, after its own polite retries.
        sleeps: list[float] = []
        client = get_provider(
            "bridge_service",
            ProviderConfig(
                user_ref="1",
                base_url=running.url,
                credentials={"client_id": greedy.client_id, "client_secret": greedy.client_secret},
            ),
            sleep=sleeps.append,
        )
        with pytest.raises(RateLimited) as raised:
            client.list_connections()
        assert raised.value.retry_after is not None and raised.value.retry_after >= 1
        assert sleeps and all(s >= 1 for s in sleeps)


# ----------------------------------------------------------------------------- the protocol
def test_every_endpoint_through_the_client_against_the_sandbox(service: Service) -> None:
    creds = service.tenant()
    client = service.client(creds, company="7")

    banks = client.list_institutions(search="societe generale", country="FR")
    names = [bank.name for bank in banks]
    assert names[0] == "Société Générale"  # accent-insensitive search, most requested first
    assert "BNP Paribas" not in names
    assert len(client.list_institutions(limit=3)) == 3

    connection_id = connect_sandbox_bank(client)
    connection = client.get_connection(connection_id, locale="fr")
    assert connection.state is ConnectionState.OK
    assert connection.institution_name == "BNP Paribas"
    assert [c.remote_id for c in client.list_connections()] == [connection_id]

    accounts = client.list_accounts(connection_id)
    assert {a.type.value for a in accounts} == {"checking", "savings", "card", "loan"}
    assert [a.remote_id for a in client.list_accounts()] == [a.remote_id for a in accounts]
    checking = next(a for a in accounts if a.type.value == "checking")

    # The same data the aggregator gives directly to this tenant company's user.
    direct = SandboxProvider(ProviderConfig(user_ref=f"{creds.client_id}.7"))
    expected = [
        t for page in direct.iter_transactions(checking.remote_id) for t in page.transactions
    ]
    pages = list(client.iter_transactions(checking.remote_id))
    got = [t for page in pages for t in page.transactions]
    assert len(pages) > 1 and pages[-1].last
    assert [t.remote_id for t in got] == [t.remote_id for t in expected]
    assert [t.amount for t in got] == [t.amount for t in expected]  # Decimal, exact
    assert got[0].raw == expected[0].raw

    # The last cursor, used later, brings only what changed since: nothing here.
    again = list(client.iter_transactions(checking.remote_id, cursor=pages[-1].cursor))
    assert sum(len(p.transactions) for p in again) == 0

    window = list(
        client.iter_transactions(
            checking.remote_id, date_from=got[-1].booking_date, date_to=got[-1].booking_date
        )
    )
    assert window and all(
        t.booking_date == got[-1].booking_date for p in window for t in p.transactions
    )

    refreshed = client.refresh_connection(connection_id)
    assert refreshed.remote_id == connection_id
    reconnect = client.start_reconnect(connection_id, callback_url=CALLBACK, state="again")
    assert requests.get(reconnect.url, timeout=10).status_code == 200

    client.delete_connection(connection_id)
    with pytest.raises(NotFound):
        client.get_connection(connection_id)
    client.delete_connection(connection_id)  # already gone: not an error
    client.delete_user()
    assert client.list_connections() == []


def test_user_facing_errors_keep_their_meaning(sqlite_service: Service) -> None:
    creds = sqlite_service.tenant()
    client = sqlite_service.client(creds)
    # The bank asks for strong authentication: ActionRequired with its reason.
    connection_id = connect_sandbox_bank(client, login="sca_required")
    assert client.get_connection(connection_id).reason is ActionReason.SCA
    checking = client.list_accounts(connection_id)[0]
    with pytest.raises(ActionRequired) as raised:
        list(client.iter_transactions(checking.remote_id))
    assert raised.value.reason is ActionReason.SCA
    # Bad input is refused with a clear message.
    with pytest.raises(InvalidRequest) as bad:
        client.start_connect(callback_url="javascript:alert(1)", state="s")
    assert "callback_url" in bad.value.message
    with pytest.raises(InvalidRequest):
        client.complete_connect({"state": "s", "success": "true", "connection_id": "forged"})
    bad_cursor = signed_get(
        sqlite_service, creds, f"/v1/accounts/{checking.remote_id}/transactions?cursor=%7Bno"
    )
    assert bad_cursor.status_code == 400
    assert "cursor" in bad_cursor.json()["message"]


def test_a_tenant_never_sees_another_tenants_connections(service: Service) -> None:
    alice = service.client(service.tenant("Alice"), company="1")
    bob_creds = service.tenant("Bob")
    bob = service.client(bob_creds, company="1")
    alice_other_company = service.client(service.tenants[0], company="2")

    connection_id = connect_sandbox_bank(alice)
    account_id = alice.list_accounts(connection_id)[0].remote_id

    for intruder in (bob, alice_other_company):
        assert intruder.list_connections() == []
        assert intruder.list_accounts() == []
        with pytest.raises(NotFound):
            intruder.get_connection(connection_id)
        with pytest.raises(NotFound):
            intruder.list_accounts(connection_id)
        with pytest.raises(NotFound):
            intruder.fetch_transaction_page(account_id)
        with pytest.raises(NotFound):
            intruder.refresh_connection(connection_id)
        with pytest.raises(NotFound):
            intruder.start_reconnect(connection_id, callback_url=CALLBACK, state="x")
        intruder.delete_connection(connection_id)  # silently nothing: no leak, no effect

    # Alice's connection survived the intruders' delete attempts.
    assert alice.get_connection(connection_id).state is ConnectionState.OK
    assert alice.fetch_transaction_page(account_id).transactions

    # Replaying Alice's callback parameters as Bob does not hand him the connection.
    session = bob.start_connect(callback_url=CALLBACK, state="b", institution_id="BNPAFRPP")
    assert "user=" in session.url
    with service.store.transaction() as tx:
        owners = tx.all(
            "SELECT user_ref FROM connections WHERE connection_id = ?", (connection_id,)
        )
    assert owners == [(f"{service.tenants[0].client_id}.1",)]


# ----------------------------------------------------------------------------- webhooks
@pytest.fixture
def linxo() -> Iterator[LinxoEmulator]:
    emulator = LinxoEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


class _Receiver:
    """A tenant's callback endpoint: a real HTTP server recording what it receives, answering
    ``statuses`` in turn (then 200), with ``headers``."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers.items()), body, self.path))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/bank_sync/events?db=acme"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_webhooks_are_verified_deduplicated_routed_polled_and_called_back(
    service: Service, linxo: LinxoEmulator
) -> None:
    token = "operator-webhook-token-123"
    admin.set_aggregator(
        service.store,
        service.box,
        admin.AggregatorConfig(
            kind="linxo",
            base_url=linxo.api_url,
            credentials={"client_id": linxo.client_id, "client_secret": linxo.client_secret},
            options={"auth_url": linxo.auth_url, "widget_url": linxo.widget_url},
            webhook_secrets=(token,),
        ),
    )
    service.app.aggregator_changed()  # the operator just changed it: no need to wait for the TTL
    alice_creds = service.tenant("Alice")
    alice = service.client(alice_creds)
    bob = service.client(service.tenant("Bob"))

    # Alice's company gets its Linxo user when it first opens the widget, then connects.
    session = alice.start_connect(callback_url=CALLBACK, state="a")
    assert session.url.startswith(linxo.widget_url)
    (user_id,) = linxo.user_ids()
    connection_id = linxo.create_connection(user_id)
    assert [c.remote_id for c in alice.list_connections()] == [connection_id]
    assert bob.list_connections() == []

    # An event about a connection nobody has claimed yet (the webhook outran the user's
    # browser) waits, then reaches Alice once her Odoo learns of the connection.
    early = linxo.create_connection(user_id)
    hook = f"{service.url}/webhooks/linxo?token={token}"
    assert linxo.send_webhook(linxo.webhook_body(early), hook) == 202
    assert alice.poll_events() == ([], 0)
    assert early in [c.remote_id for c in alice.list_connections()]
    (adopted,), adopted_id = alice.poll_events()
    assert adopted.connection_id == early

    receiver = _Receiver([500])
    try:
        alice.set_callback_url(receiver.url)
        body = linxo.webhook_body(connection_id)
        assert linxo.send_webhook(body, hook) == 202
        assert linxo.send_webhook(body, hook) == 202  # duplicate delivery
        assert linxo.send_webhook(body, f"{service.url}/webhooks/linxo?token=wrong") == 401
        assert linxo.send_webhook(body, f"{service.url}/webhooks/bridgeapi") == 404

        events, last_id = alice.poll_events(after=adopted_id)
        assert len(events) == 1
        assert events[0].connection_id == connection_id
        assert events[0].type == "connection.new_transactions"
        assert events[0].raw["company"] == "1"
        assert alice.poll_events(after=last_id) == ([], last_id)
        assert bob.poll_events() == ([], 0)

        # The callback got it (after a first failure, retried in the background) and the
        # delivery verifies with the tenant secret, like the addon will check it.
        _wait_for(lambda: len(receiver.received) >= 1)
        with service.store.transaction() as tx:
            tx.execute("UPDATE events SET next_attempt_at = 0 WHERE delivery_state = 'pending'")
        service.app.delivery_wakeup.set()
        _wait_for(lambda: len(receiver.received) >= 2)
        headers, delivered, path = receiver.received[-1]
        assert path == "/bank_sync/events?db=acme"
        parsed = alice.parse_webhook(delivered, headers, [alice_creds.client_secret])
        assert [e.connection_id for e in parsed] == [connection_id]
        with pytest.raises(SignatureVerificationError):
            alice.parse_webhook(delivered, headers, ["someone-elses-secret"])
        with pytest.raises(SignatureVerificationError):
            alice.parse_webhook(delivered + b" ", headers, [alice_creds.client_secret])
        _wait_for(lambda: _delivery_state(service, connection_id) == "delivered")
        time.sleep(0.3)
        assert len(receiver.received) == 2  # delivered once: no more posts
    finally:
        receiver.stop()
    assert token not in service.logs.getvalue()
    assert linxo.client_secret not in service.logs.getvalue()


def _delivery_state(service: Service, connection_id: str) -> str:
    with service.store.transaction() as tx:
        row = tx.one("SELECT delivery_state FROM events WHERE connection_id = ?", (connection_id,))
    return str(row[0]) if row else ""


def test_sandbox_sends_no_webhooks_so_any_delivery_is_refused(sqlite_service: Service) -> None:
    forged = requests.post(
        sqlite_service.url + "/webhooks/sandbox", data=b'{"type":"item.refreshed"}', timeout=10
    )
    assert forged.status_code == 401
    with sqlite_service.store.transaction() as tx:
        assert tx.one("SELECT COUNT(*) FROM events") == (0,)


# ----------------------------------------------------------------------------- store and CLI
def test_schema_is_created_once_and_migrations_are_idempotent(database_url: str) -> None:
    store = Store(database_url)
    try:
        assert store.schema_version() == 0
        assert store.migrate() == [1]
        assert store.migrate() == []
        assert store.schema_version() == 1
    finally:
        store.close()


def test_secrets_are_encrypted_at_rest(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.sqlite3")
    store.migrate()
    box = SecretBox([generate_key()])
    creds = admin.register_tenant(store, box, "Acme")
    admin.set_aggregator(
        store,
        box,
        admin.AggregatorConfig(
            kind="bridgeapi",
            base_url="http://127.0.0.1:1",
            credentials={"client_id": "app", "client_secret": "vendor-secret-xyz"},
            webhook_secrets=("whsec-abc-123",),
        ),
    )
    store.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("s.sqlite3*"))
    assert creds.client_id.encode() in raw  # the rows are there...
    for secret in (creds.client_secret, "vendor-secret-xyz", "whsec-abc-123"):
        assert secret.encode() not in raw  # ...but no secret in clear
    store = Store(f"sqlite:///{tmp_path}/s.sqlite3")
    config = admin.get_aggregator(store, box)
    assert config.credentials["client_secret"] == "vendor-secret-xyz"
    store.close()


def test_command_line_registers_lists_and_revokes_tenants(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/cli.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("BANK_SYNC_SERVICE_KEYS", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bank_sync_bridge.service", "--database-url", db, *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )

    added = run("tenant", "add", "Acme Odoo")
    assert added.returncode == 0, added.stderr
    client_id = re.search(r"client_id:\s+(\S+)", added.stdout).group(1)  # type: ignore[union-attr]
    secret = re.search(r"client_secret:\s+(\S+)", added.stdout).group(1)  # type: ignore[union-attr]
    assert (tmp_path / "cli.sqlite3.key").stat().st_mode & 0o077 == 0
    listed = run("tenant", "list")
    assert f"{client_id}\tactive\tAcme Odoo" in listed.stdout
    assert secret not in listed.stdout + listed.stderr
    assert run("tenant", "revoke", client_id).returncode == 0
    assert f"{client_id}\trevoked" in run("tenant", "list").stdout
    missing = run("tenant", "revoke", "bst_nope")
    assert missing.returncode == 1 and "No active tenant" in missing.stderr
    shown = run("aggregator", "show")
    assert json.loads(shown.stdout)["kind"] == "sandbox"


def test_serve_options_come_from_the_command_line_or_the_environment() -> None:
    from bank_sync_bridge.service.cli import build_parser  # noqa: PLC0415

    parser = build_parser(
        {
            "BANK_SYNC_SERVICE_PORT": "9001",
            "BANK_SYNC_SERVICE_DATABASE_URL": "postgresql://127.0.0.1/x",
        }
    )
    defaults = parser.parse_args([])
    assert (defaults.host, defaults.port) == ("127.0.0.1", 9001)
    assert defaults.database_url == "postgresql://127.0.0.1/x"
    assert parser.parse_args(["--port", "9100", "serve"]).port == 9100
    assert parser.parse_args(["serve", "--port", "9200"]).port == 9200


def test_one_command_starts_the_service_with_defaults(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("BANK_SYNC_SERVICE_KEYS", None)
    log = tmp_path / "service.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bank_sync_bridge.service", "--port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait_for(lambda: '"url"' in log.read_text() or process.poll() is not None, 30)
        url = json.loads(next(ln for ln in log.read_text().splitlines() if '"url"' in ln))["url"]
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/health", timeout=10).json()["status"] == "ok"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    # SQLite store and its key file in the working directory, schema in place.
    assert (tmp_path / "bank_sync_service.sqlite3").exists()
    assert (tmp_path / "bank_sync_service.sqlite3.key").exists()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line["msg"] == "schema migrated" for line in lines)


def _group_or_other_access(path: Path) -> int:
    return path.stat().st_mode & 0o077


def test_the_database_and_its_companion_files_are_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    database = tmp_path / "data" / "service.sqlite3"
    previous = os.umask(0o022)  # the usual umask: new files would be readable by everyone
    try:
        store = Store(f"sqlite:///{database}")
        store.migrate()
        admin.register_tenant(store, SecretBox([generate_key()]), "Acme")
    finally:
        os.umask(previous)
    try:
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert all(path.exists() for path in files)
        assert {path.name: _group_or_other_access(path) for path in files} == {
            path.name: 0 for path in files
        }
        assert _group_or_other_access(database.parent) == 0
    finally:
        store.close()


def test_database_files_left_readable_are_made_private_when_opened(tmp_path: Path) -> None:
    database = tmp_path / "service.sqlite3"
    older = sqlite3.connect(database)  # as an older version left them: world-readable
    try:
        older.execute("PRAGMA journal_mode=WAL")
        older.execute("CREATE TABLE t (x INTEGER)")
        older.execute("INSERT INTO t VALUES (1)")
        older.commit()
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        for path in files:
            path.chmod(0o644)
        store = Store(f"sqlite:///{database}")
        try:
            store.migrate()
            assert {path.name: _group_or_other_access(path) for path in files} == {
                path.name: 0 for path in files
            }
        finally:
            store.close()
    finally:
        older.close()
