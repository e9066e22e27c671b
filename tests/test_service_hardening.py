"""The bridge service against hostile callers, over real sockets on 127.0.0.1.

Callbacks that would lead inside the operator's network, failed authentications, JSON nested
deep enough to exhaust the parser's recursion, and what a receiver of the service's events needs
to refuse a replayed or misrouted one.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_service import (
    TEST_SETTINGS,
    Service,
    _Receiver,
    _wait_for,
    running_service,
)

from bank_sync_bridge.errors import InvalidRequest, SignatureVerificationError
from bank_sync_bridge.model import WebhookEvent
from bank_sync_bridge.providers.bridge_service import to_wire
from bank_sync_bridge.service import admin
from bank_sync_bridge.service.app import ServiceSettings
from bank_sync_bridge.signing import sign_request, verify_request

#: A public address (resolved from names below; never connected to by these tests).
PUBLIC = "93.184.216.34"


class FakeDns:
    """A resolver answering from a table the test changes (the ``.test`` names resolve
    nowhere for real, so a connection to one proves the service used this table)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns(
        {
            "hooks.odoo.test": [PUBLIC],
            "mixed.odoo.test": [PUBLIC, "10.0.0.7"],
            "intranet.odoo.test": ["192.168.1.20"],
            "metadata.odoo.test": ["169.254.169.254"],
            "v6.odoo.test": ["fd00::1"],
            "mapped.odoo.test": ["::ffff:127.0.0.1"],
            "localhost": ["127.0.0.1", "::1"],
        }
    )


@pytest.fixture
def production(tmp_path: Path, dns: FakeDns) -> Iterator[Service]:
    """The service as an operator runs it: no test mode."""
    settings = ServiceSettings(rate_per_second=500, burst=500)
    with running_service(f"sqlite:///{tmp_path}/s.sqlite3", settings, resolver=dns) as running:
        yield running


@pytest.fixture
def test_mode(tmp_path: Path, dns: FakeDns) -> Iterator[Service]:
    """The service in its test mode (loopback callbacks over http allowed)."""
    with running_service(f"sqlite:///{tmp_path}/s.sqlite3", TEST_SETTINGS, resolver=dns) as running:
        yield running


def stored_callback(service: Service, client_id: str) -> str | None:
    with service.store.transaction(write=False) as tx:
        row = tx.one("SELECT callback_url FROM tenants WHERE client_id = ?", (client_id,))
    assert row is not None
    return row[0]


def push_event(service: Service, client_id: str, event_id: str, company: str = "1") -> None:
    """An aggregator event about the company's aggregator user, as a webhook would bring."""
    service.app.store_events(
        service.app.aggregator().kind,
        [WebhookEvent(event_id=event_id, type="item.refreshed", user_ref=f"{client_id}.{company}")],
    )


def delivery(service: Service, event_id: str) -> tuple[str, str | None]:
    with service.store.transaction(write=False) as tx:
        row = tx.one(
            "SELECT delivery_state, last_error FROM events WHERE event_id = ?", (event_id,)
        )
    assert row is not None
    return row[0], row[1]


# ----------------------------------------------------------------------------- callbacks
REFUSED_EVERYWHERE = [
    # Private, link-local (cloud metadata), multicast, unspecified, shared, reserved, IPv6.
    "https://10.0.0.1/events",
    "https://172.16.5.4/events",
    "https://192.168.0.10/events",
    "https://169.254.169.254/latest/meta-data",
    "https://224.0.0.1/events",
    "https://0.0.0.0/events",
    "https://100.64.0.1/events",
    "https://240.0.0.1/events",
    "https://[::]/events",
    "https://[fe80::1]/events",
    "https://[fd00::1]/events",
    "https://[ff02::1]/events",
    # IPv4 behind IPv6: 6to4 and NAT64 forms of private addresses.
    "https://[2002:a00:1::]/events",
    "https://[64:ff9b::a00:1]/events",
    # Numbers that resolvers read as addresses.
    "https://2130706433/events",
    "https://0x7f000001/events",
    "https://0177.0.0.1/events",
    "https://0x7f.0.0.1/events",
    "https://127.1/events",
    "https://10.1/events",
    # Names resolving inside (all of the addresses must be public), or not at all.
    "https://intranet.odoo.test/events",
    "https://mixed.odoo.test/events",
    "https://metadata.odoo.test/events",
    "https://v6.odoo.test/events",
    "https://unknown.odoo.test/events",
    # Credentials in the URL, and plain http to a public host.
    "https://user:password@hooks.odoo.test/events",
    "http://hooks.odoo.test/events",
]
LOOPBACK = [
    "https://127.0.0.1/events",
    "https://127.8.9.10/events",
    "https://[::1]/events",
    "https://[::ffff:127.0.0.1]/events",
    "https://[64:ff9b::7f00:1]/events",
    "https://localhost/events",
    "https://mapped.odoo.test/events",
    "http://127.0.0.1:8069/events",
]


def test_callbacks_to_non_public_addresses_are_refused(production: Service) -> None:
    creds = production.tenant()
    client = production.client(creds)
    for url in REFUSED_EVERYWHERE + LOOPBACK:
        with pytest.raises(InvalidRequest) as refused:
            client.set_callback_url(url)
        assert "callback URL" in refused.value.message, url
        assert stored_callback(production, creds.client_id) is None, url
    # A public https URL is taken.
    client.set_callback_url("https://hooks.odoo.test/bank_sync/events?db=acme")
    assert stored_callback(production, creds.client_id) == (
        "https://hooks.odoo.test/bank_sync/events?db=acme"
    )


def test_test_mode_allows_the_loopback_and_nothing_else(test_mode: Service) -> None:
    creds = test_mode.tenant()
    client = test_mode.client(creds)
    for url in LOOPBACK:
        client.set_callback_url(url)
        assert stored_callback(test_mode, creds.client_id) == url
    for url in REFUSED_EVERYWHERE:
        with pytest.raises(InvalidRequest):
            client.set_callback_url(url)
        assert stored_callback(test_mode, creds.client_id) == LOOPBACK[-1], url


def test_delivery_checks_the_address_again_and_connects_to_the_one_checked(
    test_mode: Service, dns: FakeDns
) -> None:
    creds = test_mode.tenant()
    client = test_mode.client(creds)
    client.list_connections()  # the company's aggregator user now exists
    receiver = _Receiver([])
    try:
        dns.table["odoo.customer.test"] = ["127.0.0.1"]
        url = f"http://odoo.customer.test:{receiver.port}/bank_sync/events"
        client.set_callback_url(url)

        # Delivered to the address the table gave, the name still in the Host header.
        push_event(test_mode, creds.client_id, "evt-1")
        _wait_for(lambda: delivery(test_mode, "evt-1")[0] == "delivered")
        ((headers, _body, path),) = receiver.received
        assert headers["Host"] == f"odoo.customer.test:{receiver.port}"
        assert path == "/bank_sync/events"

        # The name now points at the cloud metadata service (DNS rebinding): nothing is sent.
        dns.table["odoo.customer.test"] = ["169.254.169.254"]
        asked = len(dns.asked)
        push_event(test_mode, creds.client_id, "evt-2")
        _wait_for(lambda: delivery(test_mode, "evt-2")[1] is not None)
        state, error = delivery(test_mode, "evt-2")
        assert state == "pending"  # retried later, in case the name comes back
        assert error is not None and "link-local" in error and "169.254.169.254" in error
        assert len(dns.asked) > asked  # resolved again at delivery time
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


def test_a_stored_callback_that_leads_inside_is_never_called(test_mode: Service) -> None:
    # A URL stored before the check existed (or written by hand): refused at delivery too.
    creds = test_mode.tenant()
    test_mode.client(creds).list_connections()
    with test_mode.store.transaction() as tx:
        tx.execute(
            "UPDATE tenants SET callback_url = ? WHERE client_id = ?",
            ("http://metadata.odoo.test/latest/meta-data", creds.client_id),
        )
    push_event(test_mode, creds.client_id, "evt-legacy")
    _wait_for(lambda: delivery(test_mode, "evt-legacy")[1] is not None)
    error = delivery(test_mode, "evt-legacy")[1]
    assert error is not None and error.startswith("refused") and "link-local" in error


def test_redirects_are_never_followed(test_mode: Service) -> None:
    creds = test_mode.tenant()
    client = test_mode.client(creds)
    client.list_connections()
    elsewhere = _Receiver([])
    redirecting = _Receiver([302], headers={"Location": elsewhere.url})
    try:
        client.set_callback_url(redirecting.url)
        push_event(test_mode, creds.client_id, "evt-redirect")
        _wait_for(lambda: delivery(test_mode, "evt-redirect")[1] is not None)
        assert delivery(test_mode, "evt-redirect") == ("pending", "HTTP 302")
        assert len(redirecting.received) == 1
        assert elsewhere.received == []
    finally:
        redirecting.stop()
        elsewhere.stop()


# ----------------------------------------------------------------------------- failed logins
class CountingBox:
    """Counts the decryptions of tenant secrets (the costly part of a signature check)."""

    def __init__(self, service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = service.box.decrypt

        def decrypt(token: str) -> str:
            self.calls += 1
            return original(token)

        monkeypatch.setattr(service.box, "decrypt", decrypt)


def call(
    service: Service, creds: admin.TenantCredentials, *, secret: str | None = None, **headers: str
) -> requests.Response:
    """A signed GET /v1/connections (with ``secret`` instead of the tenant's: a forgery)."""
    signed = sign_request(
        secret or creds.client_secret,
        "GET",
        "/v1/connections",
        client_id=creds.client_id,
        company="1",
    )
    return requests.get(service.url + "/v1/connections", headers={**signed, **headers}, timeout=10)


BEHIND_A_PROXY = ServiceSettings(
    rate_per_second=500, burst=500, auth_failure_burst=3, auth_failure_rate=0.01, trusted_proxies=1
)


def test_failed_authentications_are_limited_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_service(f"sqlite:///{tmp_path}/s.sqlite3", BEHIND_A_PROXY) as service:
        victim = service.tenant("Victim")
        other = service.tenant("Other")
        odoo = {"X-Forwarded-For": "192.0.2.10"}
        assert call(service, victim, **odoo).status_code == 200

        # A stranger guesses the victim's signatures: a few 401, then 429 with Retry-After.
        stranger = {"X-Forwarded-For": "198.51.100.66"}
        statuses = [call(service, victim, secret="guess", **stranger).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        box = CountingBox(service, monkeypatch)
        limited = call(service, victim, secret="guess", **stranger)
        assert limited.status_code == 429
        assert limited.json()["error"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        for _ in range(5):
            assert call(service, victim, secret="guess", **stranger).status_code == 429
        # From that address, another client id is turned away too; none of it cost a check.
        assert call(service, other, **stranger).status_code == 429
        assert box.calls == 0

        # The victim's client id ran out of failures: other addresses are refused for it...
        assert (
            call(service, victim, secret="guess", **{"X-Forwarded-For": "203.0.113.5"}).status_code
            == 429
        )
        assert box.calls == 0
        # ...but the victim's own Odoo, which signed correctly from its address, goes on.
        assert [call(service, victim, **odoo).status_code for _ in range(5)] == [200] * 5
        # Other tenants elsewhere never notice.
        assert call(service, other, **{"X-Forwarded-For": "192.0.2.20"}).status_code == 200


def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(tmp_path: Path) -> None:
    settings = ServiceSettings(
        rate_per_second=500, burst=500, auth_failure_burst=3, auth_failure_rate=0.01
    )
    with running_service(f"sqlite:///{tmp_path}/s.sqlite3", settings) as service:
        victim = service.tenant("Victim")
        # A new made-up X-Forwarded-For on every attempt does not reset the count.
        statuses = [
            call(
                service, victim, secret="guess", **{"X-Forwarded-For": f"198.51.100.{n}"}
            ).status_code
            for n in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]


def test_callers_who_sign_correctly_never_spend_the_failure_budget(tmp_path: Path) -> None:
    settings = ServiceSettings(
        rate_per_second=500, burst=500, auth_failure_burst=2, auth_failure_rate=0.01
    )
    with running_service(f"sqlite:///{tmp_path}/s.sqlite3", settings) as service:
        tenant = service.tenant()
        assert [call(service, tenant).status_code for _ in range(10)] == [200] * 10
        assert call(service, tenant, secret="typo").status_code == 401
        assert call(service, tenant).status_code == 200


# ----------------------------------------------------------------------------- deep JSON
DEEP = b"[" * 1000 + b"]" * 1000


def test_deeply_nested_json_is_a_clear_400_without_traceback(test_mode: Service) -> None:
    creds = test_mode.tenant()
    body = b'{"callback_url":"http://127.0.0.1:9/cb","state":"s","extra":' + DEEP + b"}"
    headers = sign_request(
        creds.client_secret,
        "POST",
        "/v1/connect-sessions",
        body,
        client_id=creds.client_id,
        company="1",
    )
    answer = requests.post(
        test_mode.url + "/v1/connect-sessions",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert "deeper than" in answer.json()["message"]

    # The same from an aggregator (Linxo's webhooks carry a URL token, then JSON).
    admin.set_aggregator(
        test_mode.store,
        test_mode.box,
        admin.AggregatorConfig(
            kind="linxo",
            base_url="http://127.0.0.1:9",
            credentials={"client_id": "app", "client_secret": "app-secret"},
            webhook_secrets=("token-123",),
        ),
    )
    test_mode.app.aggregator_changed()
    hook = requests.post(test_mode.url + "/webhooks/linxo?token=token-123", data=DEEP, timeout=10)
    assert hook.status_code == 400
    assert "deeper than" in hook.json()["message"]

    # Nesting that real documents use still goes through.
    shallow = requests.post(
        test_mode.url + "/webhooks/linxo?token=token-123",
        data=b"[" * 10 + b"]" * 10,
        timeout=10,
    )
    assert shallow.status_code == 202

    lines = [json.loads(line) for line in test_mode.logs.getvalue().splitlines()]
    assert not [line for line in lines if "exc" in line or line.get("status") == 500]


# ----------------------------------------------------------------------------- events
def test_each_post_carries_its_own_id_and_time_inside_the_signature(test_mode: Service) -> None:
    creds = test_mode.tenant()
    client = test_mode.client(creds)
    client.list_connections()
    receiver = _Receiver([500])  # the first post fails: the event is posted again
    try:
        client.set_callback_url(receiver.url)
        push_event(test_mode, creds.client_id, "evt-a")
        _wait_for(lambda: len(receiver.received) == 1)
        with test_mode.store.transaction() as tx:
            tx.execute("UPDATE events SET next_attempt_at = 0 WHERE delivery_state = 'pending'")
        test_mode.app.delivery_wakeup.set()
        _wait_for(lambda: delivery(test_mode, "evt-a")[0] == "delivered")
        push_event(test_mode, creds.client_id, "evt-b")
        _wait_for(lambda: delivery(test_mode, "evt-b")[0] == "delivered")
    finally:
        receiver.stop()

    posts = receiver.received
    documents = [json.loads(body) for _headers, body, _path in posts]
    assert len({document["delivery_id"] for document in documents}) == len(posts) == 3
    for (headers, body, _path), document in zip(posts, documents, strict=True):
        verified = verify_request(
            [creds.client_secret], "POST", headers["X-BSB-Path"], body, headers
        )
        assert verified.nonce == document["delivery_id"]
        assert verified.timestamp == document["sent_at"]
        assert abs(document["sent_at"] - time.time()) < 60
        (event,) = document["events"]
        assert event["company"] == "1"
        assert abs(event["received_at"] - time.time()) < 60
    # The event keeps its id through the retry; the next event has its own.
    first, retried, second = (document["events"][0]["id"] for document in documents)
    assert first == retried != second

    # The delivery id is signed: a replay under a new id does not verify.
    headers, body, _path = posts[0]
    replayed = body.replace(documents[0]["delivery_id"].encode(), b"f" * 32)
    with pytest.raises(SignatureVerificationError):
        verify_request([creds.client_secret], "POST", headers["X-BSB-Path"], replayed, headers)


def test_events_without_a_company_never_leave_the_service(test_mode: Service) -> None:
    creds = test_mode.tenant()
    client = test_mode.client(creds)
    client.list_connections()
    receiver = _Receiver([])
    try:
        client.set_callback_url(receiver.url)
        # A row an older version could leave: the tenant's, but no company's.
        orphan = WebhookEvent(event_id="evt-no-company", type="item.refreshed")
        with test_mode.store.transaction() as tx:
            row = tx.one("SELECT id FROM tenants WHERE client_id = ?", (creds.client_id,))
            assert row is not None
            tenant_id = row[0]
            tx.execute(
                "INSERT INTO events (kind, event_id, type, tenant_id, payload, received_at, "
                "delivery_state, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0)",
                (
                    "sandbox",
                    orphan.event_id,
                    orphan.type,
                    tenant_id,
                    json.dumps(to_wire(orphan)),
                    time.time(),
                ),
            )
        # An event about a connection nobody owns stays with nobody.
        test_mode.app.store_events(
            "sandbox",
            [WebhookEvent(event_id="evt-nobody", type="item.refreshed", connection_id="c-404")],
        )
        push_event(test_mode, creds.client_id, "evt-mine")
        _wait_for(lambda: delivery(test_mode, "evt-mine")[0] == "delivered")
        _wait_for(lambda: delivery(test_mode, "evt-no-company")[0] != "pending")

        events, _last_id = client.poll_events()
        assert [(event.event_id, event.raw["company"]) for event in events] == [("evt-mine", "1")]
        assert delivery(test_mode, "evt-no-company") == ("failed", "no company: never delivered")
        delivered = [json.loads(body)["events"] for _headers, body, _path in receiver.received]
        assert [[event["event_id"] for event in batch] for batch in delivered] == [["evt-mine"]]
    finally:
        receiver.stop()
