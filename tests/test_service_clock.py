"""The service reads time on its one clock: tests move it instead of sleeping.

The service runs on a frozen :class:`AdjustableClock` set in the past, so that anything read
from the machine's clock instead would show (signatures from "2025" refused, windows that never
refill, deliveries stamped with today's date).
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from test_service import TEST_SETTINGS, Service, _Receiver, _wait_for, running_service
from test_service_hardening import delivery, push_event

from bank_sync_bridge.service import admin
from bank_sync_bridge.service.app import ServiceSettings
from bank_sync_bridge.signing import sign_request
from bank_sync_bridge.testing import AdjustableClock

START = datetime(2025, 3, 16, 7, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> AdjustableClock:
    return AdjustableClock(START, frozen=True)


def clocked(
    tmp_path: Path, clock: AdjustableClock, settings: ServiceSettings
) -> contextlib.AbstractContextManager[Service]:
    """The service on SQLite, reading time on ``clock``."""
    return running_service(f"sqlite:///{tmp_path}/s.sqlite3", settings, clock=clock)


def signed_call(
    service: Service,
    creds: admin.TenantCredentials,
    signed_at: float,
    secret: str | None = None,
) -> requests.Response:
    headers = sign_request(
        secret or creds.client_secret,
        "GET",
        "/v1/connections",
        timestamp=signed_at,
        client_id=creds.client_id,
        company="1",
    )
    return requests.get(service.url + "/v1/connections", headers=headers, timeout=10)


def test_a_signature_expires_when_the_clock_leaves_its_window(
    tmp_path: Path, clock: AdjustableClock
) -> None:
    with clocked(tmp_path, clock, TEST_SETTINGS) as service:
        creds = service.tenant()
        signed_at = clock.timestamp()
        assert signed_call(service, creds, signed_at).status_code == 200
        clock.advance(TEST_SETTINGS.replay_window)  # the last second of the window
        assert signed_call(service, creds, signed_at).status_code == 200
        clock.advance(1)
        late = signed_call(service, creds, signed_at)
        assert late.status_code == 401
        assert "away from the server's clock" in late.json()["message"]
        # A client on the same clock signs with the time it reads, and is in.
        assert service.client(creds, clock=clock).list_connections() == []


def test_the_tenant_rate_limit_refills_as_the_clock_moves(
    tmp_path: Path, clock: AdjustableClock
) -> None:
    settings = ServiceSettings(rate_per_second=0.5, burst=2, test_mode=True)
    with clocked(tmp_path, clock, settings) as service:
        creds = service.tenant()
        statuses = [signed_call(service, creds, clock.timestamp()).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = signed_call(service, creds, clock.timestamp())
        wait = int(limited.headers["Retry-After"])
        assert wait == 2  # one call every two seconds
        clock.advance(wait - 1)
        assert signed_call(service, creds, clock.timestamp()).status_code == 429
        clock.advance(1)
        assert signed_call(service, creds, clock.timestamp()).status_code == 200


def test_the_failed_authentication_budget_refills_as_the_clock_moves(
    tmp_path: Path, clock: AdjustableClock
) -> None:
    settings = ServiceSettings(auth_failure_burst=2, auth_failure_rate=0.1, test_mode=True)
    with clocked(tmp_path, clock, settings) as service:
        creds = service.tenant()
        guesses = [
            signed_call(service, creds, clock.timestamp(), secret="guess").status_code
            for _ in range(3)
        ]
        assert guesses == [401, 401, 429]
        limited = signed_call(service, creds, clock.timestamp())
        assert limited.status_code == 429
        clock.advance(int(limited.headers["Retry-After"]))
        assert signed_call(service, creds, clock.timestamp()).status_code == 200


def test_a_failed_delivery_waits_for_its_backoff_on_the_clock(
    tmp_path: Path, clock: AdjustableClock
) -> None:
    with clocked(tmp_path, clock, TEST_SETTINGS) as service:
        creds = service.tenant()
        client = service.client(creds, clock=clock)
        client.list_connections()
        receiver = _Receiver([503])
        try:
            client.set_callback_url(receiver.url)
            push_event(service, creds.client_id, "evt-1")
            _wait_for(lambda: delivery(service, "evt-1") == ("pending", "HTTP 503"))
            # However long this takes in real time, the retry is two seconds away on the clock.
            assert service.app.deliver_due() == 0
            clock.advance(1.9)
            assert service.app.deliver_due() == 0
            clock.advance(0.1)
            service.app.delivery_wakeup.set()
            _wait_for(lambda: delivery(service, "evt-1")[0] == "delivered")
        finally:
            receiver.stop()
        first, retry = (json.loads(body) for _headers, body, _path in receiver.received)
        assert first["sent_at"] == int(START.timestamp())
        assert retry["sent_at"] == int(START.timestamp()) + 2
        assert retry["events"][0]["received_at"] == int(START.timestamp())
