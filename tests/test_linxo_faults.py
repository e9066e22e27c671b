"""Fault tests: the Linxo client under the emulator's scripted incidents, over real HTTP.

Retries are observed through an injected ``sleep`` (nothing actually waits) and through the
emulator's request log (what reached the "vendor").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone

import pytest

from bank_sync_bridge.errors import (
    AuthenticationError,
    ConnectionFailed,
    InvalidRequest,
    ProviderUnavailable,
    RateLimited,
)
from bank_sync_bridge.model import Cursor
from bank_sync_bridge.providers import MemoryTokenStore, ProviderConfig
from bank_sync_bridge.providers.linxo import LinxoProvider
from bank_sync_bridge.testing import AdjustableClock, LinxoEmulator

START = datetime(2026, 3, 16, 8, 0, tzinfo=timezone.utc)


class Sleeps(list[float]):
    """Records the delays the client asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def clock() -> AdjustableClock:
    return AdjustableClock(START, frozen=True)


@pytest.fixture
def emulator(clock: AdjustableClock) -> Iterator[LinxoEmulator]:
    with LinxoEmulator(clock=clock, transactions_per_account=12) as emu:
        yield emu


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_provider(
    emu: LinxoEmulator, clock: AdjustableClock, sleeps: Sleeps, **options: object
) -> LinxoProvider:
    return LinxoProvider(
        emu.provider_config("company-1", **options),
        clock=clock,
        sleep=sleeps,
        token_store=MemoryTokenStore(),
    )


@pytest.fixture
def linked(
    emulator: LinxoEmulator, clock: AdjustableClock, sleeps: Sleeps
) -> tuple[LinxoProvider, str]:
    """A provider whose user has one synced connection; returns it and the checking account."""
    provider = make_provider(emulator, clock, sleeps, page_size=5)
    connection_id = emulator.create_connection(provider.user_id)
    return provider, emulator.account_ids(connection_id)[0]


def calls(emu: LinxoEmulator, suffix: str) -> int:
    return sum(1 for call in emu.requests if call["path"].endswith(suffix))


def test_server_errors_are_retried_and_nothing_is_lost(
    emulator: LinxoEmulator, linked: tuple[LinxoProvider, str], sleeps: Sleeps
) -> None:
    provider, account_id = linked
    emulator.script_faults("500", 2, path="/transactions")
    transactions = [t for p in provider.iter_transactions(account_id) for t in p.transactions]
    assert len(transactions) == 13  # 12 generated + the pending card payment
    assert len(sleeps) == 2
    assert calls(emulator, "/transactions") == 3 + 2  # 3 pages, 2 of them asked twice


def test_rate_limit_waits_for_retry_after(
    emulator: LinxoEmulator, linked: tuple[LinxoProvider, str], sleeps: Sleeps
) -> None:
    provider, _account_id = linked
    emulator.force_rate_limit(1, retry_after=7)
    assert len(provider.list_connections()) == 1
    assert sleeps == [7.0]


def test_persistent_rate_limit_gives_up_with_the_vendor_delay(
    emulator: LinxoEmulator, linked: tuple[LinxoProvider, str], sleeps: Sleeps
) -> None:
    provider, _account_id = linked
    emulator.force_rate_limit(10, retry_after=2)
    with pytest.raises(RateLimited) as caught:
        provider.list_connections()
    assert caught.value.retry_after == 2.0
    assert sleeps == [2.0, 2.0, 2.0]  # three retries, then the scheduler takes over
    assert caught.value.request_id


def test_emulator_rate_limit_window_is_honoured(clock: AdjustableClock, sleeps: Sleeps) -> None:
    with LinxoEmulator(clock=clock, rate_limit=(3, 60.0)) as emu:
        provider = make_provider(emu, clock, sleeps)
        provider.list_connections()
        provider.list_connections()
        provider.list_connections()
        with pytest.raises(RateLimited) as caught:
            provider.list_connections()
        # The window is on the emulator's clock, which the injected sleep does not move.
        assert caught.value.retry_after == 61.0
        assert sleeps == []  # 61 s exceeds nothing: the HTTP layer's cap is 60 s


def test_malformed_json_is_provider_unavailable_after_retries(
    emulator: LinxoEmulator, linked: tuple[LinxoProvider, str], sleeps: Sleeps
) -> None:
    provider, _account_id = linked
    emulator.script_faults("malformed_json", 4, path="/connections")
    with pytest.raises(ProviderUnavailable, match="not valid JSON"):
        provider.list_connections()
    assert len(sleeps) == 3
    emulator.script_faults("malformed_json", 1, path="/connections")
    assert len(provider.list_connections()) == 1  # one bad answer is absorbed by a retry


def test_truncated_body_is_provider_unavailable(
    emulator: LinxoEmulator, linked: tuple[LinxoProvider, str]
) -> None:
    provider, account_id = linked
    emulator.script_faults("truncated", 4, path="/transactions")
    with pytest.raises(ProviderUnavailable, match="cut off"):
        list(provider.iter_transactions(account_id))


def test_slow_answer_times_out_as_connection_failed(
    emulator: LinxoEmulator, clock: AdjustableClock, sleeps: Sleeps
) -> None:
    config = emulator.provider_config("slow-co", max_retries=0)
    config = type(config)(
        user_ref=config.user_ref,
        base_url=config.base_url,
        credentials=config.credentials,
        options=config.options,
        timeout=0.3,
    )
    provider = LinxoProvider(config, clock=clock, sleep=sleeps)
    provider.list_connections()
    emulator.script_faults("timeout", 1, path="/connections", delay=0.8)
    with pytest.raises(ConnectionFailed, match=r"did not answer within 0\.3 s"):
        provider.list_connections()


def test_expired_user_token_is_renewed_once(
    emulator: LinxoEmulator, clock: AdjustableClock, linked: tuple[LinxoProvider, str]
) -> None:
    provider, _account_id = linked
    provider.list_connections()
    before = calls(emulator, "/auth/token")
    emulator.expire_tokens()  # revoked early: the client's cache still thinks it is valid
    assert len(provider.list_connections()) == 1
    assert calls(emulator, "/auth/token") == before + 1
    # Natural expiry (expires_in on the shared clock): renewed before the call, no 401.
    clock.advance(hours=2)
    listings_before = calls(emulator, "/connections")
    provider.list_connections()
    assert calls(emulator, "/connections") == listings_before + 1
    assert calls(emulator, "/auth/token") == before + 2


def test_a_token_refused_twice_is_not_retried_forever(clock: AdjustableClock) -> None:
    with LinxoEmulator(clock=clock) as emu:
        provider = make_provider(emu, clock, Sleeps())
        provider.list_connections()  # user created, token cached
        emu.token_lifetime = 0  # from now on every token is born expired
        emu.expire_tokens()
        emu.requests.clear()
        with pytest.raises(AuthenticationError):
            provider.list_connections()
        # cached token refused, one renewal, refused again: then the error surfaces
        assert [call["path"] for call in emu.requests] == [
            "/api/v3/connections",
            "/auth/token",
            "/api/v3/connections",
        ]


def test_wrong_client_secret_is_a_clear_authentication_error(
    emulator: LinxoEmulator, clock: AdjustableClock
) -> None:
    config = emulator.provider_config("company-1")
    bad = type(config)(
        user_ref="company-1",
        base_url=config.base_url,
        credentials={"client_id": emulator.client_id, "client_secret": "wrong"},
        options=config.options,
    )
    with pytest.raises(AuthenticationError, match="client id or client secret") as caught:
        LinxoProvider(bad, clock=clock).list_institutions()
    assert (caught.value.status, caught.value.code) == (401, "invalid_client")


def test_a_stored_password_that_linxo_refuses_is_reported(
    emulator: LinxoEmulator, clock: AdjustableClock
) -> None:
    store = MemoryTokenStore()
    user_id = emulator.create_user("odoo-x@bank-sync.invalid", "right-password")
    store.set(
        f"linxo:{emulator.client_id}:user:x",
        {"email": "odoo-x@bank-sync.invalid", "password": "wrong-password", "user_id": user_id},
    )
    provider = LinxoProvider(emulator.provider_config("x"), clock=clock, token_store=store)
    with pytest.raises(AuthenticationError, match="stored password"):
        provider.list_connections()


def test_a_page_the_server_refuses_is_an_invalid_request(
    linked: tuple[LinxoProvider, str],
) -> None:
    provider, account_id = linked
    provider.page_size = 501  # bypass the constructor's check to see the vendor's answer
    with pytest.raises(InvalidRequest, match="limit must be between 1 and 500") as caught:
        list(provider.iter_transactions(account_id))
    assert caught.value.status == 400 and caught.value.code == "invalid_request"
    with pytest.raises(InvalidRequest, match="page size"):
        LinxoProvider(
            ProviderConfig(
                user_ref="y",
                options={"page_size": 600},
                credentials={"client_id": "a", "client_secret": "b"},
            )
        )
    bad_cursor = Cursor("linxo_window", {"date_from": "2026-03-01", "date_to": None, "page": 0})
    with pytest.raises(InvalidRequest, match="page number"):
        list(provider.iter_transactions(account_id, cursor=bad_cursor))
    with pytest.raises(InvalidRequest, match="does not belong"):
        list(provider.iter_transactions(account_id, cursor=Cursor("updated_at", {})))


def test_page_cap_stops_a_runaway_stream_and_the_cursor_resumes(
    emulator: LinxoEmulator, clock: AdjustableClock, sleeps: Sleeps
) -> None:
    provider = make_provider(emulator, clock, sleeps, page_size=5, max_pages=3)
    connection_id = emulator.create_connection(provider.user_id, transactions_per_account=0)
    account_id = emulator.account_ids(connection_id)[0]
    # 18 + the pending card payment: three full pages, then (page 3 again) and 4 more.
    emulator.add_transactions(account_id, 18, start=date(2026, 1, 1), end=date(2026, 3, 1))
    seen: list[str] = []
    stream = provider.iter_transactions(account_id, date_from=date(2026, 1, 1))
    pages = []
    with pytest.raises(ProviderUnavailable, match="after 3 pages"):
        for page in stream:
            pages.append(page)
            seen.extend(t.remote_id for t in page.transactions)
    assert len(seen) == 15
    rest = list(provider.iter_transactions(account_id, cursor=pages[-1].cursor))
    seen.extend(t.remote_id for p in rest for t in p.transactions)
    assert len(set(seen)) == 19 and rest[-1].last
    assert [len(p.transactions) for p in rest] == [5, 4]


def test_a_server_repeating_the_same_page_is_detected(
    emulator: LinxoEmulator, linked: tuple[LinxoProvider, str]
) -> None:
    provider, account_id = linked
    emulator.script_faults("repeat_page", 2, path="/transactions")
    with pytest.raises(ProviderUnavailable, match="same page of operations twice"):
        list(provider.iter_transactions(account_id))
    assert calls(emulator, "/transactions") == 2
