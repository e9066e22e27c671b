"""What the Bridge and Linxo emulators share: one scenario API, one way to script and clear
faults, one admin interface for another process, and IBANs that pass the banks' checks."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import requests

from bank_sync_bridge.iban import is_valid_iban
from bank_sync_bridge.testing import AdjustableClock, BridgeEmulator, LinxoEmulator
from bank_sync_bridge.testing._server import EmulatorServer

START = datetime(2026, 3, 16, 9, 0, tzinfo=timezone.utc)

#: The scenario controls a test may use on either emulator, with the same arguments.
SHARED_CONTROLS = (
    "advance",
    "script_faults",
    "force_rate_limit",
    "clear_faults",
    "reset_rate_limits",
    "expire_tokens",
    "expire_consent",
    "add_transaction",
    "book_pending",
    "change_transaction",
    "delete_transaction",
    "calls",
)


def parameters(function: object) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults of a function's parameters (types differ by vendor)."""
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", SHARED_CONTROLS)
def test_both_emulators_offer_the_same_scenario_controls(name: str) -> None:
    shared = getattr(EmulatorServer, name)
    for emulator in (BridgeEmulator, LinxoEmulator):
        control = getattr(emulator, name)
        assert parameters(control) == parameters(shared), f"{emulator.__name__}.{name}"
        assert not getattr(control, "__isabstractmethod__", False), f"{emulator.__name__}.{name}"
        assert inspect.getdoc(control), f"{emulator.__name__}.{name} says what it does"


@pytest.fixture(params=["bridge", "linxo"])
def emulator(request: pytest.FixtureRequest) -> Iterator[BridgeEmulator | LinxoEmulator]:
    clock = AdjustableClock(START, frozen=True)
    made = BridgeEmulator(clock=clock) if request.param == "bridge" else LinxoEmulator(clock=clock)
    with made:
        yield made


def some_call(emulator: BridgeEmulator | LinxoEmulator) -> requests.Response:
    """One cheap call each vendor answers with 200 when nothing is scripted."""
    if isinstance(emulator, BridgeEmulator):
        headers = {"Bridge-Version": "2025-01-15", **_client_headers(emulator)}
        return requests.get(emulator.base_url + "/v3/providers", headers=headers, timeout=5)
    form = {
        "grant_type": "client_credentials",
        "client_id": emulator.client_id,
        "client_secret": emulator.client_secret,
    }
    return requests.post(emulator.auth_url + "/token", data=form, timeout=5)


def _client_headers(emulator: BridgeEmulator) -> dict[str, str]:
    return {"Client-Id": emulator.client_id, "Client-Secret": emulator.client_secret}


def test_faults_and_forced_limits_are_served_then_cleared(
    emulator: BridgeEmulator | LinxoEmulator,
) -> None:
    emulator.script_faults("503")
    assert some_call(emulator).status_code == 503
    emulator.force_rate_limit(1, retry_after=4)
    limited = some_call(emulator)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "4")
    assert some_call(emulator).status_code == 200

    emulator.script_faults("500", 5)
    emulator.force_rate_limit(5)
    emulator.clear_faults()
    assert some_call(emulator).status_code == 200
    assert [call["status"] for call in emulator.requests] == [503, 429, 200, 200]


def test_the_admin_interface_steers_either_emulator_from_another_process(
    emulator: BridgeEmulator | LinxoEmulator,
) -> None:
    admin = emulator.base_url + "/__emulator__"
    secret = {"Client-Secret": emulator.client_secret}
    assert requests.post(admin + "/faults", json={"kind": "502"}, timeout=5).status_code == 401
    moved = requests.post(admin + "/clock/advance", json={"seconds": 60}, headers=secret, timeout=5)
    assert moved.json()["now"] == "2026-03-16T09:01:00.000Z"
    for _ in range(2):
        requests.post(admin + "/faults", json={"kind": "502"}, headers=secret, timeout=5)
    assert some_call(emulator).status_code == 502
    assert requests.post(admin + "/faults/clear", headers=secret, timeout=5).status_code == 204
    assert some_call(emulator).status_code == 200
    wrong = requests.post(admin + "/faults", json={"kind": "nope"}, headers=secret, timeout=5)
    assert wrong.status_code == 400


def test_generated_ibans_pass_the_banks_check() -> None:
    with LinxoEmulator() as linxo, BridgeEmulator() as bridge:
        user = linxo.create_user("asso@example.org", "long-enough-password")
        connection = linxo.create_connection(user)
        linxo_ibans = [linxo.account(a).iban for a in linxo.account_ids(connection)]
        item = bridge.connect_item("co-1")
        bridge_ibans = [a.iban for a in bridge.accounts(item.id) if a.iban]
    assert linxo_ibans and bridge_ibans
    assert all(iban and is_valid_iban(iban) for iban in linxo_ibans + bridge_ibans)
