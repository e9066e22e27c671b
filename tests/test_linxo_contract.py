"""Contract tests: the Linxo client against the Linxo emulator, over real HTTP on 127.0.0.1.

Every endpoint the client uses and every connection status it maps is exercised here; the
emulator's own shapes are pinned separately against docs/aggregators.md in
``test_linxo_conformance.py``.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from bank_sync_bridge.errors import InvalidRequest, NotFound
from bank_sync_bridge.model import (
    AccountType,
    ActionReason,
    ConnectionState,
    Cursor,
    Transaction,
    TransactionStatus,
)
from bank_sync_bridge.providers import MemoryTokenStore, Provider, get_provider
from bank_sync_bridge.providers.linxo import LinxoProvider
from bank_sync_bridge.testing import AdjustableClock, LinxoEmulator
from bank_sync_bridge.testing.linxo_emulator import submit_widget

CALLBACK = "http://127.0.0.1:9/bank_sync/callback"
START = datetime(2026, 3, 16, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> AdjustableClock:
    return AdjustableClock(START, frozen=True)


@pytest.fixture
def emulator(clock: AdjustableClock) -> Iterator[LinxoEmulator]:
    with LinxoEmulator(clock=clock, seed=7) as emu:
        yield emu


def make_provider(
    emu: LinxoEmulator, clock: AdjustableClock, user_ref: str = "company-1", **options: object
) -> LinxoProvider:
    provider = get_provider(
        "linxo",
        emu.provider_config(user_ref, **options),
        clock=clock,
        sleep=lambda _seconds: None,
        token_store=MemoryTokenStore(),
    )
    assert isinstance(provider, LinxoProvider)
    return provider


def connect(provider: LinxoProvider, login: str = "success", **kwargs: str) -> dict[str, str]:
    """Run the hosted add-connection flow as a browser would; returns the callback params."""
    session = provider.start_connect(callback_url=CALLBACK, state="st-42", **kwargs)
    location = submit_widget(session.url, login=login)
    assert location.startswith(CALLBACK)
    return dict(parse_qsl(urlsplit(location).query))


@pytest.fixture
def provider(emulator: LinxoEmulator, clock: AdjustableClock) -> LinxoProvider:
    return make_provider(emulator, clock)


# ---- identity ---------------------------------------------------------------------------------


def test_one_linxo_user_per_company_with_a_stored_secret_password(
    emulator: LinxoEmulator, clock: AdjustableClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = MemoryTokenStore()
    first = LinxoProvider(emulator.provider_config("acme"), clock=clock, token_store=store)
    user_id = first.user_id
    first.list_connections()
    # A second provider for the same company (next cron run) reuses the user and its token.
    again = LinxoProvider(emulator.provider_config("acme"), clock=clock, token_store=store)
    assert again.user_id == user_id
    again.list_connections()
    other = LinxoProvider(emulator.provider_config("beta"), clock=clock)
    assert other.user_id != user_id
    assert sorted(emulator.user_ids()) == sorted([user_id, other.user_id])

    record = store.get(f"linxo:{emulator.client_id}:user:acme")
    assert record is not None and len(record["password"]) >= 24
    token_calls = emulator.calls("/auth/token", "POST")
    # acme: one client token (user creation) + one user token shared by both runs; beta:
    # one client token to create its user (no data read yet, so no user token).
    assert len(token_calls) == 3
    logged = caplog.text
    for secret in (record["password"], emulator.client_secret):
        assert secret not in logged
    assert "/auth/token" in logged  # the HTTP layer did log the calls, redacted


def test_a_lost_answer_to_user_creation_is_recovered(
    emulator: LinxoEmulator, clock: AdjustableClock
) -> None:
    store = MemoryTokenStore()
    key = f"linxo:{emulator.client_id}:user:acme"
    # A previous run stored the password, created the user, then crashed before saving its id.
    store.set(
        key, {"email": "odoo-acme@bank-sync.invalid", "password": "s3cret-pass", "user_id": None}
    )
    remote_id = emulator.create_user("odoo-acme@bank-sync.invalid", "s3cret-pass")
    provider = LinxoProvider(emulator.provider_config("acme"), clock=clock, token_store=store)
    assert provider.user_id == remote_id
    assert emulator.user_ids() == [remote_id]


def test_the_linxo_provider_fulfils_the_provider_protocol(provider: LinxoProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.kind == "linxo"
    assert "secret" not in repr(provider) and "secret" not in repr(provider.config)


def test_the_emulator_runs_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bank_sync_bridge.testing.linxo_emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stdout.readline()
        base_url = re.search(r"http://127\.0\.0\.1:\d+", first_line).group(0)
        answer = requests.post(f"{base_url}/auth/token", json={"client_id": "x"}, timeout=5)
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_missing_credentials_are_refused_clearly(emulator: LinxoEmulator) -> None:
    config = emulator.provider_config("acme")
    bare = type(config)(user_ref="acme", base_url=config.base_url, options=config.options)
    with pytest.raises(InvalidRequest, match="client id and client secret"):
        LinxoProvider(bare)


# ---- connect flow and statuses --------------------------------------------------------------


def test_add_connection_through_the_widget(
    emulator: LinxoEmulator, provider: LinxoProvider
) -> None:
    params = connect(provider, institution_id="1001")
    result = provider.complete_connect(params)
    assert result.success and result.state == "st-42"
    assert result.connection_id is not None

    connection = provider.get_connection(result.connection_id)
    assert connection.state is ConnectionState.OK
    assert connection.institution_id == "1001"
    assert connection.institution_name == "BNP Paribas"
    assert connection.logo_url and connection.logo_url.endswith("/1001.png")
    # Consent: the REDIRECT channel expires 90 days after the link (Linxo's SCA period).
    assert connection.consent_expires_at == START + timedelta(days=90)
    assert connection.last_refreshed_at == START
    assert [c.remote_id for c in provider.list_connections()] == [result.connection_id]

    accounts = provider.list_accounts(result.connection_id)
    assert [a.type for a in accounts] == [AccountType.CHECKING, AccountType.SAVINGS]
    checking = accounts[0]
    stored = emulator.account(checking.remote_id)
    assert checking.iban == stored.iban and checking.iban.startswith("FR")
    assert checking.balance == stored.balance and isinstance(checking.balance, Decimal)
    assert checking.currency == "EUR" and checking.active
    assert checking.masked_number == "•••• " + stored.account_number[-4:]
    assert provider.list_accounts() == accounts


@pytest.mark.parametrize(
    ("login", "state", "reason", "vendor_status"),
    [
        (
            "wrong_credentials",
            ConnectionState.ACTION_NEEDED,
            ActionReason.CREDENTIALS,
            "FAILED/AUTH_FAILED",
        ),
        ("sca_required", ConnectionState.ACTION_NEEDED, ActionReason.SCA, "FAILED/SCA_REQUIRED"),
        (
            "action_at_bank",
            ConnectionState.ACTION_NEEDED,
            ActionReason.BANK_ACTION,
            "FAILED/USER_ACTION_REQUIRED",
        ),
        ("bank_down", ConnectionState.TEMPORARY_FAILURE, None, "FAILED/BANK_UNAVAILABLE"),
        ("closed_account", ConnectionState.DISCONNECTED, None, "CLOSED"),
        ("partial", ConnectionState.OK, None, "PARTIAL_SUCCESS"),
    ],
)
def test_each_widget_outcome_maps_to_a_state(
    provider: LinxoProvider,
    login: str,
    state: ConnectionState,
    reason: ActionReason | None,
    vendor_status: str,
) -> None:
    params = connect(provider, login=login)
    result = provider.complete_connect(params)
    assert result.connection_id is not None
    assert result.success is (state is ConnectionState.OK)
    connection = provider.get_connection(result.connection_id)
    assert (connection.state, connection.reason, connection.vendor_status) == (
        state,
        reason,
        vendor_status,
    )
    assert connection.message
    if login == "closed_account":
        assert not any(a.active for a in provider.list_accounts(result.connection_id))
    if login == "partial":
        assert "Some accounts" in connection.message
        assert [a.active for a in provider.list_accounts(result.connection_id)] == [True, True]


@pytest.mark.parametrize(
    ("status", "channel_status", "expected"),
    [
        ("NONE", "NONE", (ConnectionState.SYNCING, None)),
        ("RUNNING", "RUNNING", (ConnectionState.SYNCING, None)),
        (
            "FAILED",
            "CONSENT_EXPIRED",
            (ConnectionState.ACTION_NEEDED, ActionReason.CONSENT_EXPIRED),
        ),
        ("FAILED", "SOMETHING_NEW", (ConnectionState.TEMPORARY_FAILURE, None)),
        ("SUCCESS", "SUCCESS", (ConnectionState.OK, None)),
    ],
)
def test_remaining_connection_statuses(
    emulator: LinxoEmulator,
    provider: LinxoProvider,
    status: str,
    channel_status: str,
    expected: tuple[ConnectionState, ActionReason | None],
) -> None:
    connection_id = emulator.create_connection(provider.user_id)
    emulator.set_connection_status(connection_id, status, channel_status=channel_status)
    connection = provider.get_connection(connection_id, locale="fr")
    assert (connection.state, connection.reason) == expected
    assert connection.message  # French text of our own table: Linxo sends none


@pytest.mark.parametrize(
    ("account_status", "active"),
    [
        ("ACTIVE", True),
        ("ERROR", True),
        ("SUSPENDED", True),
        ("MANUAL", False),
        ("NOT_FOUND", False),
        ("CLOSED", False),
        ("PENDING_CONSENT", False),
    ],
)
def test_account_statuses_and_types(
    emulator: LinxoEmulator, provider: LinxoProvider, account_status: str, active: bool
) -> None:
    connection_id = emulator.create_connection(provider.user_id, transactions_per_account=0)
    loan = emulator.add_account(connection_id, name="Prêt", type="LOAN", iban=None)
    card = emulator.add_account(connection_id, name="Carte", type="CREDIT_CARD", iban=None)
    other = emulator.add_account(connection_id, name="PEA", type="SECURITIES", iban=None)
    emulator.set_account_status(card, account_status)
    accounts = {a.remote_id: a for a in provider.list_accounts(connection_id)}
    assert accounts[loan].type is AccountType.LOAN and accounts[loan].iban is None
    assert accounts[card].type is AccountType.CARD
    assert accounts[other].type is AccountType.OTHER
    assert accounts[card].active is active


def test_cancelled_widget_comes_back_as_a_failure(provider: LinxoProvider) -> None:
    session = provider.start_connect(callback_url=CALLBACK, state="st-1")
    location = submit_widget(session.url, cancel=True)
    result = provider.complete_connect(dict(parse_qsl(urlsplit(location).query)))
    assert not result.success and result.state == "st-1"
    assert result.step == "access_denied" and result.connection_id is None


def test_running_sync_then_landing_follows_the_clock(
    emulator: LinxoEmulator, clock: AdjustableClock, provider: LinxoProvider
) -> None:
    emulator.sync_delay = 120
    result = provider.complete_connect(connect(provider))
    assert result.success and result.step == "RUNNING"
    assert provider.get_connection(result.connection_id).state is ConnectionState.SYNCING
    clock.advance(minutes=3)
    assert provider.get_connection(result.connection_id).state is ConnectionState.OK
    # RUNNING -> FAILED: a later sync fails authentication at the bank.
    emulator.start_sync(
        result.connection_id, duration=60, final_status="FAILED", channel_status="AUTH_FAILED"
    )
    assert provider.get_connection(result.connection_id).state is ConnectionState.SYNCING
    clock.advance(minutes=2)
    failed = provider.get_connection(result.connection_id, locale="fr")
    assert failed.reason is ActionReason.CREDENTIALS
    assert "identifiants" in failed.message
    # The finished syncs produced webhook events for whoever listens; only the successful
    # one announces new transactions.
    assert [(e["resource"], e["new_transactions"]) for e in emulator.pending_events] == [
        (f"/connections/{result.connection_id}", True),
        (f"/connections/{result.connection_id}", False),
    ]


def test_consent_expiry_and_reconnect_on_the_same_connection(
    emulator: LinxoEmulator, clock: AdjustableClock, provider: LinxoProvider
) -> None:
    connection_id = provider.complete_connect(connect(provider)).connection_id
    clock.advance(days=91)
    expired = provider.get_connection(connection_id)
    assert (expired.state, expired.reason) == (
        ConnectionState.ACTION_NEEDED,
        ActionReason.CONSENT_EXPIRED,
    )
    assert expired.consent_expires_at < clock.now()

    session = provider.start_reconnect(connection_id, callback_url=CALLBACK, state="st-9")
    assert "/widget/edit_credentials" in session.url
    result = provider.complete_connect(dict(parse_qsl(urlsplit(submit_widget(session.url)).query)))
    assert result.success and result.connection_id == connection_id and result.state == "st-9"
    renewed = provider.get_connection(connection_id)
    assert renewed.state is ConnectionState.OK
    assert renewed.consent_expires_at == clock.now() + timedelta(days=90)
    assert [c.remote_id for c in provider.list_connections()] == [connection_id]


def test_consent_ended_early_at_the_bank(
    emulator: LinxoEmulator, clock: AdjustableClock, provider: LinxoProvider
) -> None:
    connection_id = emulator.create_connection(provider.user_id)
    emulator.expire_consent(connection_id)
    connection = provider.get_connection(connection_id)
    assert connection.reason is ActionReason.CONSENT_EXPIRED
    assert connection.vendor_status == "FAILED/AUTH_FAILED"
    assert connection.consent_expires_at < clock.now()


def test_sca_demand_is_fixed_by_reconnecting(
    emulator: LinxoEmulator, provider: LinxoProvider
) -> None:
    connection_id = provider.complete_connect(connect(provider)).connection_id
    emulator.require_sca(connection_id)
    assert provider.get_connection(connection_id).reason is ActionReason.SCA
    session = provider.start_reconnect(connection_id, callback_url=CALLBACK, state="s")
    bad = provider.complete_connect(
        dict(parse_qsl(urlsplit(submit_widget(session.url, login="wrong_credentials")).query))
    )
    assert not bad.success and bad.step == "AUTH_FAILED"
    session = provider.start_reconnect(connection_id, callback_url=CALLBACK, state="s")
    submit_widget(session.url)
    assert provider.get_connection(connection_id).state is ConnectionState.OK


def test_reconnect_refuses_someone_elses_connection(
    emulator: LinxoEmulator, clock: AdjustableClock, provider: LinxoProvider
) -> None:
    connection_id = provider.complete_connect(connect(provider)).connection_id
    intruder = make_provider(emulator, clock, "company-2")
    session = intruder.start_reconnect(connection_id, callback_url=CALLBACK, state="s")
    with pytest.raises(Exception, match="404"):
        submit_widget(session.url)
    with pytest.raises(NotFound):
        intruder.get_connection(connection_id)


def test_delete_connection_and_user(emulator: LinxoEmulator, provider: LinxoProvider) -> None:
    connection_id = provider.complete_connect(connect(provider)).connection_id
    provider.delete_connection(connection_id)
    assert provider.list_connections() == []
    with pytest.raises(NotFound):
        provider.get_connection(connection_id)
    provider.delete_connection(connection_id)  # already gone: not an error

    old_user = provider.user_id
    provider.delete_user()
    assert emulator.user_ids() == []
    provider.delete_user()  # nothing left to delete: not an error
    # The company comes back later: a fresh Linxo user, nothing of the old one.
    assert provider.list_connections() == []
    assert emulator.user_ids() == [provider.user_id] != [old_user]


# ---- institutions -----------------------------------------------------------------------------


def test_bank_search_is_accent_insensitive_country_aware_and_ordered(
    provider: LinxoProvider,
) -> None:
    found = provider.list_institutions(search="societe generale")
    assert [i.name for i in found] == ["Société Générale"]
    assert found[0].logo_url.endswith("/1004.png")
    belgian = provider.list_institutions(country="be")
    assert {i.country for i in belgian} == {"BE"} and len(belgian) == 2
    french = provider.list_institutions(country="FR", limit=3)
    assert [i.name for i in french] == [
        "Crédit Agricole - Languedoc",
        "BNP Paribas",
        "Société Générale",
    ]
    assert french[0].popularity > french[1].popularity > french[2].popularity
    assert provider.list_institutions(search="no such bank") == []


# ---- transactions -----------------------------------------------------------------------------


def _all(pages: list) -> list[Transaction]:
    return [t for page in pages for t in page.transactions]


@pytest.mark.parametrize("api_version", ["v3", "v2.1"])
def test_operations_exact_amounts_paris_dates_pending_forecast_cancelled(
    clock: AdjustableClock, api_version: str
) -> None:
    with LinxoEmulator(clock=clock, api_version=api_version, transactions_per_account=0) as emu:
        provider = make_provider(emu, clock)
        connection_id = provider.complete_connect(connect(provider)).connection_id
        account_id = emu.account_ids(connection_id)[0]
        day = date(2026, 3, 10)
        booked = emu.add_transaction(
            account_id, "-0.10", "Frais", on=day, value_date=date(2026, 3, 9)
        ).id
        big = emu.add_transaction(account_id, "123456789.99", "Vente", on=day).id
        cancelled = emu.add_transaction(account_id, "-15.00", "Annulé", on=day).id
        emu.cancel_transaction(cancelled)

        # Accounts and connections read the same in both versions (v3 balance object and
        # provider_logo_url, v2.1 number and logo_url).
        account = provider.list_accounts(connection_id)[0]
        assert account.balance == emu.account(account_id).balance
        assert provider.get_connection(connection_id).logo_url.endswith("/9999.png")
        assert [c.remote_id for c in provider.list_connections()] == [connection_id]
        assert [i.name for i in provider.list_institutions(search="qonto")] == ["Qonto"]

        pages = list(provider.iter_transactions(account_id, date_from=date(2026, 3, 1)))
        by_id = {t.remote_id: t for t in _all(pages)}
        # The pending card payment of "today" and three booked ones; the UPCOMING forecast
        # (5 days ahead) is neither in the window nor ever imported.
        assert by_id[booked].amount == Decimal("-0.10")
        assert by_id[big].amount == Decimal("123456789.99")
        # 2026-03-10 00:00 Paris is 2026-03-09 23:00 UTC: the date must stay the 10th.
        assert by_id[booked].booking_date == day
        assert by_id[booked].value_date == date(2026, 3, 9)
        assert by_id[booked].label == "Frais" and by_id[booked].currency == "EUR"
        assert by_id[cancelled].deleted
        pending = [t for t in by_id.values() if t.status is TransactionStatus.PENDING]
        assert [t.amount for t in pending] == [Decimal("-42.90")]
        assert pending[0].booking_date == date(2026, 3, 16)
        assert not any(t.label.startswith("URSSAF échéance") for t in by_id.values())


def test_forecast_lines_are_skipped_even_inside_the_window(
    emulator: LinxoEmulator, provider: LinxoProvider
) -> None:
    connection_id = provider.complete_connect(connect(provider)).connection_id
    account_id = emulator.account_ids(connection_id)[0]
    forecast = emulator.add_forecast(
        account_id, "-99.00", "Loyer", on=date(2026, 3, 12), origin="RECURRING"
    ).id
    ids = {t.remote_id for t in _all(list(provider.iter_transactions(account_id)))}
    assert forecast not in ids
    assert len(ids) == 41  # 40 generated + the pending one


def test_paging_exactly_one_full_page_then_an_empty_one(
    emulator: LinxoEmulator, clock: AdjustableClock
) -> None:
    provider = make_provider(emulator, clock, page_size=5)
    user = provider.user_id
    connection_id = emulator.create_connection(user, transactions_per_account=0)
    account_id = emulator.account_ids(connection_id)[0]
    emulator.add_transactions(account_id, 4, start=date(2026, 3, 1), end=date(2026, 3, 10))
    # 4 + the pending one = exactly one page of 5.
    emulator.requests.clear()
    pages = list(provider.iter_transactions(account_id, date_from=date(2026, 3, 1)))
    assert [len(p.transactions) for p in pages] == [5, 0]
    assert [p.last for p in pages] == [False, True]
    pages_asked = [
        r["query"]["page"] for r in emulator.requests if r["path"].endswith("/transactions")
    ]
    assert pages_asked == ["1", "2"]


def test_page_cursors_resume_and_the_final_cursor_rereads_the_overlap(
    emulator: LinxoEmulator, clock: AdjustableClock
) -> None:
    provider = make_provider(emulator, clock, page_size=5, overlap_days=10)
    connection_id = emulator.create_connection(provider.user_id, transactions_per_account=0)
    account_id = emulator.account_ids(connection_id)[0]
    emulator.add_transactions(account_id, 11, start=date(2026, 2, 1), end=date(2026, 3, 15))
    # 12 with the pending one; the UPCOMING forecast is never served as an operation.
    expected = [
        i
        for i in emulator.transaction_ids(account_id)
        if emulator.transaction(i).origin == "TRANSACTION"
    ]

    stream = provider.iter_transactions(account_id, date_from=date(2026, 2, 1))
    first, second = next(stream), next(stream)
    stream.close()  # the run stops (crash, time budget) after storing two pages
    assert not second.last and second.cursor.value["page"] == 3
    # Meanwhile the bank drops an operation the first page held: every later line moves up
    # one place, and resuming exactly at page 3 would skip one of them.
    vanished = first.transactions[0].remote_id
    emulator.delete_transaction(vanished)
    resumed = list(
        provider.iter_transactions(account_id, cursor=Cursor.loads(second.cursor.dumps()))
    )
    stored = [t.remote_id for t in first.transactions + second.transactions]
    seen = set(stored) | {t.remote_id for t in _all(resumed)}
    assert seen == set(expected)  # nothing skipped
    assert len(_all(resumed)) == 5 + 1  # page 2 re-read (now shifted), then the short page
    final = resumed[-1]
    assert final.last
    assert final.cursor.value == {"date_from": "2026-03-06", "date_to": None, "page": 1}

    # Next morning: what changed within the overlap is seen again, older lines are not.
    clock.advance(days=1)
    pending_id = next(t.remote_id for t in _all(resumed) if t.is_pending)
    emulator.book_pending(pending_id)
    late = emulator.add_transaction(account_id, "-7.50", "Late card line", on=date(2026, 3, 12)).id
    relabelled = emulator.add_transaction(account_id, "-3.20", "CB SNCF", on=date(2026, 3, 9)).id
    too_old = emulator.add_transaction(account_id, "-1.00", "Very late", on=date(2026, 2, 20)).id
    next_run = _all(list(provider.iter_transactions(account_id, cursor=final.cursor)))
    emulator.change_transaction(relabelled, label="SNCF Voyageurs")
    after_relabel = _all(list(provider.iter_transactions(account_id, cursor=final.cursor)))
    by_id = {t.remote_id: t for t in next_run}
    assert by_id[late].amount == Decimal("-7.50")
    assert by_id[pending_id].status is TransactionStatus.BOOKED
    assert {t.remote_id: t.label for t in after_relabel}[relabelled] == "SNCF Voyageurs"
    # The price of date windows: a line back-dated beyond the overlap is not seen.
    assert too_old not in by_id
    assert all(t.booking_date >= date(2026, 3, 6) for t in next_run)


def test_pending_booked_under_a_new_id_and_a_date_shift(
    emulator: LinxoEmulator, provider: LinxoProvider
) -> None:
    connection_id = provider.complete_connect(connect(provider)).connection_id
    account_id = emulator.account_ids(connection_id)[0]
    before = {t.remote_id: t for t in _all(list(provider.iter_transactions(account_id)))}
    pending_id = next(i for i, t in before.items() if t.is_pending)
    booked_id = emulator.book_pending(pending_id, new_id=True, on=date(2026, 3, 15)).id
    shifted = next(
        i
        for i, t in before.items()
        if t.booking_date == max(x.booking_date for x in before.values() if not x.is_pending)
    )
    emulator.change_transaction(shifted, shift_days=-2)
    after = {t.remote_id: t for t in _all(list(provider.iter_transactions(account_id)))}
    assert pending_id not in after
    assert after[booked_id].status is TransactionStatus.BOOKED
    assert after[booked_id].amount == before[pending_id].amount
    assert after[shifted].booking_date == before[shifted].booking_date - timedelta(days=2)


def test_a_large_account_streams_completely(
    emulator: LinxoEmulator, clock: AdjustableClock
) -> None:
    provider = make_provider(emulator, clock)
    connection_id = emulator.create_connection(provider.user_id, transactions_per_account=0)
    account_id = emulator.account_ids(connection_id)[0]
    emulator.add_transactions(account_id, 10_000, start=date(2024, 1, 1), end=date(2026, 3, 15))
    pages = list(provider.iter_transactions(account_id, date_from=date(2024, 1, 1)))
    transactions = _all(pages)
    assert len(pages) == 21  # 20 full pages of 500, then the pending line alone
    assert len({t.remote_id for t in transactions}) == 10_001
    served = [emulator.transaction(i) for i in emulator.transaction_ids(account_id)]
    stored = sum((t.amount for t in served if t.origin == "TRANSACTION"), Decimal(0))
    assert sum((t.amount for t in transactions), Decimal(0)) == stored


def test_generated_data_is_deterministic(clock: AdjustableClock) -> None:
    def snapshot() -> list[tuple[str, Decimal, date, str]]:
        with LinxoEmulator(clock=clock, seed="bench") as emu:
            user_id = emu.create_user("a@example.org", "password1")
            account_id = emu.account_ids(emu.create_connection(user_id))[0]
            emu.add_transactions(account_id, 3000, start=date(2025, 1, 1), end=date(2026, 3, 1))
            rows = [emu.transaction(i) for i in emu.transaction_ids(account_id)]
            return [(t.id, t.amount, t.booking_date, t.notes) for t in rows]

    first, second = snapshot(), snapshot()
    assert len(first) == 3000 + 40 + 2 and first == second


# ---- webhooks --------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhooks_delivered_over_http_are_parsed_and_unknown_ones_ignored(
    emulator: LinxoEmulator, provider: LinxoProvider
) -> None:
    connection_id = provider.complete_connect(connect(provider)).connection_id
    handler = type("Receiver", (_Receiver,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        emulator.webhook_url = f"http://127.0.0.1:{server.server_address[1]}/linxo/webhook"
        assert emulator.deliver_events() == [204]  # the end of the first sync
        body = emulator.webhook_body(connection_id, new_transactions=False)
        assert emulator.send_webhook(body) == 204
        assert emulator.send_webhook(body) == 204  # duplicated delivery
    finally:
        server.shutdown()
        server.server_close()
    events = [e for b in handler.bodies for e in provider.parse_webhook(b, {}, [])]
    assert [e.type for e in events] == [
        "connection.new_transactions",
        "connection.updated",
        "connection.updated",
    ]
    assert {e.connection_id for e in events} == {connection_id}
    assert events[1].event_id == events[2].event_id  # consumers dedupe on it
    assert events[0].occurred_at == START

    unknown = (
        b'[{"id": "e1", "event_type": "UPDATED", "resource_type": "ACCOUNTS"},'
        b' {"id": "e2", "event_type": "TEST_EVENT"}]'
    )
    assert provider.parse_webhook(unknown, {}, []) == []
    with pytest.raises(InvalidRequest):
        provider.parse_webhook(b"not json", {}, [])
