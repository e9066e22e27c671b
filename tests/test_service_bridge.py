"""The bridge service holding a Bridge contract: the Bridge v3 emulator (a real HTTP server)
behind the service, the tenant's Odoo in front through BridgeServiceProvider, and Bridge's
signed webhooks arriving at the service's public endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from test_service import Service, running_service

from bank_sync_bridge.errors import NotFound
from bank_sync_bridge.model import ConnectionState
from bank_sync_bridge.providers import MemoryTokenStore, ProviderConfig
from bank_sync_bridge.providers.bridgeapi import BridgeProvider
from bank_sync_bridge.service import admin
from bank_sync_bridge.testing.bridge_emulator import BridgeEmulator

WEBHOOK_SECRET = "bridge-webhook-secret-for-tests"
CALLBACK = "http://127.0.0.1:9/odoo/bank_sync/callback"


@pytest.fixture
def emulator() -> Iterator[BridgeEmulator]:
    with BridgeEmulator(seed=5) as emu:
        yield emu


@pytest.fixture
def bridge_service(tmp_path: Path, emulator: BridgeEmulator) -> Iterator[Service]:
    """The service on SQLite whose operator holds the (emulated) Bridge contract."""
    with running_service(f"sqlite:///{tmp_path}/service.sqlite3") as running:
        admin.set_aggregator(
            running.store,
            running.box,
            admin.AggregatorConfig(
                kind="bridgeapi",
                base_url=emulator.base_url,
                credentials=emulator.credentials,
                webhook_secrets=(WEBHOOK_SECRET,),
            ),
        )
        running.app.aggregator_changed()  # read the new configuration now rather than after the TTL
        emulator.register_webhook(f"{running.url}/webhooks/bridgeapi", [WEBHOOK_SECRET])
        yield running


def follow_connect(url: str, login: str = "success") -> dict[str, str]:
    """Fill Bridge's hosted page like the user's browser; the callback's parameters."""
    assert "<form" in requests.get(url, timeout=10).text
    answer = requests.post(
        url,
        data={"login": login, "password": "demo", "action": "connect", "provider_id": "574"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303
    location = answer.headers["Location"]
    assert location.startswith(CALLBACK)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def test_bridge_behind_the_service_every_flow_and_signed_webhooks(
    bridge_service: Service, emulator: BridgeEmulator
) -> None:
    alice_creds = bridge_service.tenant("Alice")
    alice = bridge_service.client(alice_creds)
    bob = bridge_service.client(bridge_service.tenant("Bob"))

    assert any(bank.remote_id == "574" for bank in alice.list_institutions(country="FR"))
    session = alice.start_connect(callback_url=CALLBACK, state="odoo-state-1")
    assert session.url.startswith(emulator.base_url)
    result = alice.complete_connect(follow_connect(session.url))
    assert result.success and result.connection_id
    item_id = result.connection_id
    # One Bridge user per tenant company, named after the tenant and the company.
    assert emulator.user(f"{alice_creds.client_id}.1")

    assert alice.get_connection(item_id).state is ConnectionState.OK
    assert [c.remote_id for c in alice.list_connections()] == [item_id]
    accounts = alice.list_accounts(item_id)
    assert accounts

    # Operations through the service are exactly what Bridge gives this company's user.
    direct = BridgeProvider(
        ProviderConfig(
            user_ref=f"{alice_creds.client_id}.1",
            base_url=emulator.base_url,
            credentials=emulator.credentials,
        ),
        token_store=MemoryTokenStore(),
    )
    for account in accounts:
        via_service = [
            t.remote_id for p in alice.iter_transactions(account.remote_id) for t in p.transactions
        ]
        expected = [
            t.remote_id for p in direct.iter_transactions(account.remote_id) for t in p.transactions
        ]
        assert via_service == expected

    # Bob, another tenant, sees nothing of it.
    assert bob.list_connections() == []
    with pytest.raises(NotFound):
        bob.get_connection(item_id)
    with pytest.raises(NotFound):
        bob.fetch_transaction_page(accounts[0].remote_id)

    # Bridge's webhooks (item.created, item.refreshed, account updates) reach the service,
    # signed on the raw body; each is stored once and routed to Alice only.
    deliveries = emulator.deliver_webhooks(duplicate=True)
    assert deliveries and all(d.status == 202 for d in deliveries)
    events, last_id = alice.poll_events()
    assert len(events) == len(deliveries) // 2  # duplicates stored once
    assert {e.connection_id for e in events} == {item_id}
    assert bob.poll_events() == ([], 0)

    forged = emulator.send_webhook(
        emulator.event("item.refreshed", {"item_id": int(item_id)}), signature="invalid"
    )
    unsigned = emulator.send_webhook(
        emulator.event("item.refreshed", {"item_id": 1}), signature="missing"
    )
    assert [d.status for d in forged + unsigned] == [401, 401]
    assert alice.poll_events(after=last_id) == ([], last_id)

    refreshed = alice.refresh_connection(item_id)
    assert refreshed.remote_id == item_id
    again = alice.start_reconnect(item_id, callback_url=CALLBACK, state="odoo-state-2")
    assert alice.complete_connect(follow_connect(again.url)).success

    alice.delete_connection(item_id)
    with pytest.raises(NotFound):
        alice.get_connection(item_id)
    alice.delete_user()
    with pytest.raises(KeyError):
        emulator.user(f"{alice_creds.client_id}.1")
    log = bridge_service.logs.getvalue()
    assert WEBHOOK_SECRET not in log
    assert emulator.credentials["client_secret"] not in log
