"""Contract tests: the Bridge client against the Bridge emulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bank_sync_bridge.errors import (
    AuthenticationError,
    ConnectionFailed,
    InvalidRequest,
    ProviderUnavailable,
    RateLimited,
    SignatureVerificationError,
)
from bank_sync_bridge.model import (
    AccountType,
    ActionReason,
    ConnectionState,
    Cursor,
    Transaction,
    TransactionStatus,
)
from bank_sync_bridge.providers import MemoryTokenStore, Provider, ProviderConfig, get_provider
from bank_sync_bridge.providers.bridgeapi import CURSOR_KIND, BridgeProvider
from bank_sync_bridge.sync import LineSnapshot, diff_page, transaction_keys
from bank_sync_bridge.testing import AdjustableClock, BridgeEmulator

START = datetime(2025, 3, 3, 6, 0, tzinfo=timezone.utc)
TOKEN_PATH = "/v3/aggregation/authorization/token"
ITEMS_PATH = "/v3/aggregation/items"

#: Item status → what the user must see (docs/aggregators.md §1.4), written here independently
#: of the client's own table.
EXPECTED_STATES: dict[int, tuple[ConnectionState, ActionReason | None]] = {
    0: (ConnectionState.OK, None),
    -2: (ConnectionState.SYNCING, None),
    -3: (ConnectionState.SYNCING, None),
    402: (ConnectionState.ACTION_NEEDED, ActionReason.CREDENTIALS),
    429: (ConnectionState.ACTION_NEEDED, ActionReason.BANK_ACTION),
    1003: (ConnectionState.TEMPORARY_FAILURE, None),
    1005: (ConnectionState.DISCONNECTED, ActionReason.UNSUPPORTED),
    1007: (ConnectionState.TEMPORARY_FAILURE, None),
    1009: (ConnectionState.OK, None),
    1010: (ConnectionState.ACTION_NEEDED, ActionReason.SCA),
    1099: (ConnectionState.TEMPORARY_FAILURE, None),
    1100: (ConnectionState.ACTION_NEEDED, ActionReason.PRO_VALIDATION),
}


@pytest.fixture
def clock() -> AdjustableClock:
    return AdjustableClock(START, frozen=True)


@pytest.fixture
def emu(clock: AdjustableClock) -> Iterator[BridgeEmulator]:
    with BridgeEmulator(clock=clock, seed=3) as emulator:
        yield emulator


@pytest.fixture
def sleeps() -> list[float]:
    return []


MakeProvider = Callable[..., BridgeProvider]


@pytest.fixture
def make(emu: BridgeEmulator, clock: AdjustableClock, sleeps: list[float]) -> MakeProvider:
    def build(
        user_ref: str = "company-1",
        *,
        store: MemoryTokenStore | None = None,
        timeout: float = 5.0,
        **options: Any,
    ) -> BridgeProvider:
        config = ProviderConfig(
            user_ref=user_ref,
            base_url=emu.base_url,
            credentials=emu.credentials,
            options=options,
            timeout=timeout,
        )
        return BridgeProvider(
            config, clock=clock, sleep=sleeps.append, token_store=store or MemoryTokenStore()
        )

    return build


def follow_connect(url: str, login: str, provider_id: str | None = None) -> dict[str, str]:
    """Fill the hosted page like a user would; returns the callback's query parameters."""
    form = {"login": login, "password": "demo", "action": "connect"}
    if provider_id:
        form["provider_id"] = provider_id
    assert "<form" in requests.get(url, timeout=5).text
    answer = requests.post(url, data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 303
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def read_all(
    provider: BridgeProvider, account_id: str, **kwargs: Any
) -> tuple[list[Transaction], Cursor | None, int]:
    transactions: list[Transaction] = []
    pages = list(provider.iter_transactions(account_id, **kwargs))
    for page in pages:
        transactions.extend(page.transactions)
    assert pages[-1].last
    assert not any(page.last for page in pages[:-1])
    return transactions, pages[-1].cursor, len(pages)


# -- identity and tokens ----------------------------------------------------------------------


def test_provider_kind_and_protocol(emu: BridgeEmulator) -> None:
    provider = get_provider(
        "bridgeapi",
        ProviderConfig(user_ref="company-1", base_url=emu.base_url, credentials=emu.credentials),
    )
    assert isinstance(provider, Provider)
    assert provider.kind == "bridgeapi"
    assert "secret" not in repr(provider)


def test_user_created_on_first_need_then_found_and_token_cached(
    emu: BridgeEmulator, make: MakeProvider
) -> None:
    provider = make()
    assert provider.list_connections() == []
    user = emu.user("company-1")
    assert provider.user_uuid == user.uuid
    assert len(emu.calls("/v3/aggregation/users", "POST")) == 1
    provider.list_connections()
    provider.list_accounts()
    assert [c["status"] for c in emu.calls(TOKEN_PATH)] == [404, 200]  # cached afterwards

    # Another process (empty token store) finds the existing user instead of creating one.
    other = make()
    assert other.user_uuid == user.uuid
    assert len(emu.calls("/v3/aggregation/users", "POST")) == 1
    assert all(call["bridge_version"] == "2025-01-15" for call in emu.requests)


def test_expired_token_is_renewed_once_and_retried_once(
    emu: BridgeEmulator, make: MakeProvider, clock: AdjustableClock
) -> None:
    provider = make()
    provider.list_connections()
    tokens = len(emu.calls(TOKEN_PATH))
    emu.expire_tokens()
    assert provider.list_connections() == []
    assert len(emu.calls(TOKEN_PATH)) == tokens + 1
    assert [c["status"] for c in emu.calls(ITEMS_PATH)][-2:] == [401, 200]

    # Known expiry: renewed before use, no 401 at all.
    clock.advance(hours=2)
    provider.list_connections()
    assert emu.calls(ITEMS_PATH)[-1]["status"] == 200
    assert emu.calls(ITEMS_PATH)[-2]["status"] == 200

    # Tokens refused even when fresh: one renewal, one retry, then the error (no loop).
    emu.expire_tokens()
    emu.state.token_validity = timedelta(0)
    before = len(emu.calls(ITEMS_PATH))
    with pytest.raises(AuthenticationError):
        provider.list_connections()
    assert len(emu.calls(ITEMS_PATH)) == before + 2


def test_wrong_application_credentials_are_not_retried(emu: BridgeEmulator) -> None:
    provider = BridgeProvider(
        ProviderConfig(
            user_ref="company-1",
            base_url=emu.base_url,
            credentials={"client_id": emu.client_id, "client_secret": "wrong-secret"},
        ),
        sleep=lambda _: None,
    )
    with pytest.raises(AuthenticationError) as caught:
        provider.list_connections()
    assert caught.value.code == "invalid_client_credentials"
    assert "wrong-secret" not in str(caught.value)
    assert len(emu.requests) == 1
    with pytest.raises(InvalidRequest):
        BridgeProvider(ProviderConfig(user_ref="x", credentials={"client_id": "only-id"}))


# -- connect ----------------------------------------------------------------------------------


def test_connect_reconnect_and_callback(emu: BridgeEmulator, make: MakeProvider) -> None:
    provider = make()
    session = provider.start_connect(
        callback_url="https://erp.example/bank/callback",
        state="company-1-abc123",
        institution_id="574",
        user_email="compta@example.fr",
    )
    assert session.url.startswith(emu.base_url)
    result = provider.complete_connect(follow_connect(session.url, "success"))
    assert result.success
    assert result.state == "company-1-abc123"
    assert result.step is None
    assert result.connection_id
    connection = provider.get_connection(result.connection_id)
    assert connection.state is ConnectionState.OK
    assert connection.institution_name == "Demo Bank"
    assert connection.logo_url
    assert connection.consent_expires_at == emu.clock() + timedelta(days=180)

    failed = provider.start_connect(callback_url="https://erp.example/cb", state="s-2")
    result = provider.complete_connect(follow_connect(failed.url, "402", provider_id="574"))
    assert not result.success
    assert result.step == "bank_creds_form"
    assert result.message
    assert provider.get_connection(result.connection_id or "").reason is ActionReason.CREDENTIALS

    again = provider.start_reconnect(
        result.connection_id or "", callback_url="https://erp.example/cb", state="s-3"
    )
    fixed = provider.complete_connect(follow_connect(again.url, "success"))
    assert fixed.success
    assert fixed.connection_id == result.connection_id
    assert provider.get_connection(fixed.connection_id or "").state is ConnectionState.OK

    with pytest.raises(InvalidRequest):
        provider.start_connect(callback_url="https://erp.example/cb", state="not a valid state!")
    with pytest.raises(InvalidRequest):
        provider.complete_connect({"user_uuid": "someone-else", "success": "true"})


@pytest.mark.parametrize(
    ("login", "step", "state", "reason"),
    [
        ("success", None, ConnectionState.OK, None),
        ("otp", None, ConnectionState.OK, None),
        ("402", "bank_creds_form", ConnectionState.ACTION_NEEDED, ActionReason.CREDENTIALS),
        ("1010", "otp_form", ConnectionState.ACTION_NEEDED, ActionReason.SCA),
        ("otp_fail", "otp_form", ConnectionState.ACTION_NEEDED, ActionReason.SCA),
        ("429", "sync_error", ConnectionState.ACTION_NEEDED, ActionReason.BANK_ACTION),
        ("1003", "sync_error", ConnectionState.TEMPORARY_FAILURE, None),
        (
            "1005_CLOSED_ACCOUNT",
            "sync_error",
            ConnectionState.DISCONNECTED,
            ActionReason.UNSUPPORTED,
        ),
        (
            "1100",
            "pro_validation_form",
            ConnectionState.ACTION_NEEDED,
            ActionReason.PRO_VALIDATION,
        ),
    ],
)
def test_demo_bank_logins_through_the_hosted_page(
    make: MakeProvider,
    login: str,
    step: str | None,
    state: ConnectionState,
    reason: ActionReason | None,
) -> None:
    provider = make()
    session = provider.start_connect(callback_url="http://127.0.0.1/cb", state="st-1")
    result = provider.complete_connect(follow_connect(session.url, login, provider_id="574"))
    assert result.success is (step is None)
    assert result.step == step
    connection = provider.get_connection(result.connection_id or "")
    assert (connection.state, connection.reason) == (state, reason)
    if login == "1005_CLOSED_ACCOUNT":
        assert connection.vendor_status == "1005/closed_account"


# -- items ------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "fr_FR"])
def test_every_item_status_is_mapped_with_bridge_message(
    emu: BridgeEmulator, make: MakeProvider, locale: str
) -> None:
    item = emu.connect_item("company-1")
    provider = make()
    messages = set()
    for status, (state, reason) in EXPECTED_STATES.items():
        emu.set_item_status(item.id, status, "some_info" if status else "ok")
        connection = provider.get_connection(str(item.id), locale=locale)
        assert (connection.state, connection.reason) == (state, reason), status
        assert connection.vendor_status == f"{status}/{'some_info' if status else 'ok'}"
        assert connection.message
        messages.add(connection.message)
    assert len(messages) >= 10
    emu.set_item_status(item.id, 1010, "otp_required")
    sca = provider.get_connection(str(item.id), locale=locale).message or ""
    assert ("authentification" in sca) == locale.startswith("fr")
    assert emu.calls(f"{ITEMS_PATH}/{item.id}")[-1]["accept_language"] == locale[:2]


def test_consent_expiry_then_sca_on_refresh(emu: BridgeEmulator, make: MakeProvider) -> None:
    item = emu.connect_item("company-1", login="success")
    provider = make()
    emu.expire_consent(item.id)
    connection = provider.get_connection(str(item.id))
    assert (connection.state, connection.reason) == (
        ConnectionState.ACTION_NEEDED,
        ActionReason.CONSENT_EXPIRED,
    )
    assert "180-day" in (connection.message or "")
    refreshed = provider.refresh_connection(str(item.id))
    assert refreshed.reason is ActionReason.SCA


def test_chained_demo_login_and_listing(emu: BridgeEmulator, make: MakeProvider) -> None:
    first = emu.connect_item("company-1", login="success.1010")
    second = emu.connect_item("company-1", login="1003")
    provider = make()
    states = {c.remote_id: c.state for c in provider.list_connections()}
    assert states == {
        str(first.id): ConnectionState.OK,
        str(second.id): ConnectionState.TEMPORARY_FAILURE,
    }
    assert provider.refresh_connection(str(first.id)).reason is ActionReason.SCA
    assert provider.refresh_connection(str(second.id)).state is ConnectionState.OK
    assert emu.calls(f"{ITEMS_PATH}/{first.id}/refresh")[-1]["status"] == 202


def test_delete_item_and_user(emu: BridgeEmulator, make: MakeProvider) -> None:
    item = emu.connect_item("company-1")
    provider = make()
    provider.delete_connection(str(item.id))
    assert provider.list_connections() == []
    provider.delete_connection(str(item.id))  # already gone: fine
    provider.delete_user()
    with pytest.raises(KeyError):
        emu.user("company-1")
    make().delete_user()  # nothing to delete: fine


# -- accounts and transactions ----------------------------------------------------------------


def test_accounts_are_mapped(emu: BridgeEmulator, make: MakeProvider) -> None:
    item = emu.connect_item("company-1")
    emu.connect_item("company-1")
    provider = make()
    accounts = provider.list_accounts(str(item.id))
    by_type: dict[AccountType, list[Any]] = {}
    for account in accounts:
        by_type.setdefault(account.type, []).append(account)
    assert {t: len(a) for t, a in by_type.items()} == {
        AccountType.CHECKING: 2,
        AccountType.CARD: 1,
        AccountType.SAVINGS: 1,
        AccountType.LOAN: 1,
    }
    for account, original in zip(accounts, emu.accounts(item.id), strict=True):
        assert account.balance == original.balance
        assert isinstance(account.balance, Decimal)
        assert account.connection_id == str(item.id)
        assert account.currency == "EUR"
        if original.iban:
            assert account.iban == original.iban
            assert account.masked_number == f"{original.iban[:4]} **** {original.iban[-4:]}"
        else:
            assert account.masked_number is None
    assert by_type[AccountType.LOAN][0].balance < 0
    assert len(provider.list_accounts()) == 10


def test_first_sync_reads_everything_with_flags_and_exact_amounts(
    emu: BridgeEmulator, make: MakeProvider
) -> None:
    item = emu.connect_item("company-1")
    card = next(a for a in emu.accounts(item.id) if a.type == "card")
    exact = emu.add_transaction(card.id, "0.1", "Tiny one")
    emu.add_transaction(card.id, "0.2", "Tiny two")
    provider = make(page_size=4)
    transactions, cursor, pages = read_all(provider, str(card.id))
    expected = {tx.id: tx for tx in emu.transactions(card.id)}
    assert {int(tx.remote_id) for tx in transactions} == set(expected)
    assert pages == -(-len(expected) // 4)
    for tx in transactions:
        original = expected[int(tx.remote_id)]
        assert tx.amount == original.amount
        assert isinstance(tx.amount, Decimal)
        assert tx.booking_date == (original.booking_date or original.date)
        assert tx.is_pending == original.future
        assert tx.label == original.clean_description
        assert tx.raw["provider_description"] == original.provider_description
        assert tx.updated_at is not None
        assert tx.updated_at.tzinfo is not None
    assert any(tx.is_pending for tx in transactions)
    tiny = [tx.amount for tx in transactions if tx.label.startswith("Tiny")]
    assert sum(tiny) == Decimal("0.3")
    assert cursor is not None
    assert cursor.kind == CURSOR_KIND
    newest = max(tx.updated_at for tx in transactions if tx.updated_at)
    assert cursor.value == {"since": newest.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
    assert exact.updated_at == newest


def test_incremental_sync_sees_every_kind_of_change(
    emu: BridgeEmulator, make: MakeProvider, clock: AdjustableClock
) -> None:
    item = emu.connect_item("company-1")
    account = emu.accounts(item.id)[0]
    pending_same = emu.add_transaction(account.id, "-42.50", "Carte Total", pending=True)
    pending_new = emu.add_transaction(account.id, "-19.90", "Carte Sncf", pending=True)
    # Without the overlap, exactly the changes since the high-water mark are read.
    provider = make(since_overlap_seconds=0)
    _, cursor, _ = read_all(provider, str(account.id))
    clock.advance(minutes=5)
    assert read_all(provider, str(account.id), cursor=cursor)[0] == []

    clock.advance(hours=20)
    booked_same = emu.book_pending(pending_same.id)
    booked_new = emu.book_pending(pending_new.id, new_id=True)
    originals = emu.transactions(account.id)
    deleted = emu.delete_transaction(originals[0].id)
    shifted = emu.change_transaction(originals[1].id, shift_days=2)
    relabelled = emu.change_transaction(originals[2].id, label="Urssaf Idf")
    late = emu.add_transaction(account.id, "1200.00", "Vir Client Late", on=date(2024, 12, 1))

    changes, new_cursor, _ = read_all(provider, str(account.id), cursor=cursor)
    seen = {tx.remote_id: tx for tx in changes}
    assert set(seen) == {
        str(t.id)
        for t in (booked_same, pending_new, booked_new, deleted, shifted, relabelled, late)
    }
    assert seen[str(booked_same.id)].status is TransactionStatus.BOOKED
    assert seen[str(pending_new.id)].deleted
    assert seen[str(booked_new.id)].amount == Decimal("-19.90")
    assert seen[str(deleted.id)].deleted
    assert seen[str(shifted.id)].booking_date == shifted.booking_date
    assert seen[str(relabelled.id)].label == "Urssaf Idf"
    assert seen[str(late.id)].booking_date == date(2024, 12, 1)
    assert new_cursor is not None
    assert new_cursor.value["since"] > cursor.value["since"]  # type: ignore[union-attr]


def make_fresh(emu: BridgeEmulator, clock: AdjustableClock, user_ref: str) -> BridgeProvider:
    """A client with an empty token store, as a new worker would start."""
    config = ProviderConfig(user_ref=user_ref, base_url=emu.base_url, credentials=emu.credentials)
    return BridgeProvider(config, clock=clock, token_store=MemoryTokenStore())


def booked_ids(ledger: dict[str, LineSnapshot], transactions: list[Transaction]) -> set[str]:
    """Apply one read to ``ledger`` as the engine would; the ids of the lines it created."""
    keys = transaction_keys("bridgeapi", transactions)
    diff = diff_page(transactions, keys, ledger)
    for key, _line_id in diff.delete:
        del ledger[key]
    for key, tx in diff.create:
        ledger[key] = LineSnapshot(len(ledger) + 1, tx.label, tx.booking_date, tx.amount)
    return {tx.remote_id for _key, tx in diff.create}


@pytest.mark.parametrize("flags", ["v3", "published"])
def test_deleted_future_and_repeated_card_lines_are_never_booked_whatever_the_spelling(
    clock: AdjustableClock, flags: str
) -> None:
    # Bridge's published resource says is_deleted/is_future/show_client_side; v3 typings say
    # deleted/future. Whichever Bridge sends, the client must not book what it should not.
    with BridgeEmulator(clock=clock, seed=3, transaction_flags=flags) as emu:
        item = emu.connect_item("company-1")
        card = next(a for a in emu.accounts(item.id) if a.type == "card")
        kept = emu.add_transaction(card.id, "-12.00", "Kept")
        announced = emu.add_transaction(card.id, "-30.00", "Announced", pending=True)
        withdrawn = emu.add_transaction(card.id, "-8.00", "Withdrawn")
        repeated = emu.add_transaction(card.id, "-55.00", "Repeated by the monthly total")
        provider = make_fresh(emu, clock, "company-1")
        first, cursor, _ = read_all(provider, str(card.id))
        spelt = next(tx.raw for tx in first if tx.remote_id == str(kept.id))
        assert ("is_deleted" in spelt, "deleted" in spelt) == (flags == "published", flags == "v3")
        ledger: dict[str, LineSnapshot] = {}
        created = booked_ids(ledger, first)
        assert {str(kept.id), str(withdrawn.id), str(repeated.id)} <= created
        assert str(announced.id) not in created  # future: not booked yet

        clock.advance(minutes=5)
        emu.delete_transaction(withdrawn.id)
        emu.mark_card_duplicate(repeated.id)
        changes, _, _ = read_all(provider, str(card.id), cursor=cursor)
        seen = {tx.remote_id: tx for tx in changes}
        assert seen[str(withdrawn.id)].deleted
        assert seen[str(repeated.id)].deleted
        assert booked_ids(ledger, changes) == set()
        left = {line.label for line in ledger.values()}
        assert "Kept" in left
        assert not {"Withdrawn", "Repeated by the monthly total"} & left  # removed again

        # A company connecting now reads them flagged from the start: never booked at all.
        everything, _, _ = read_all(make_fresh(emu, clock, "company-1"), str(card.id))
        fresh = booked_ids({}, everything)
        assert str(kept.id) in fresh
        assert not {str(withdrawn.id), str(repeated.id), str(announced.id)} & fresh


def test_overlap_catches_a_change_stamped_in_the_same_millisecond(
    emu: BridgeEmulator, make: MakeProvider
) -> None:
    # Bridge may treat ``since`` as strictly after (the emulator does by default): a change
    # stamped in the very millisecond of the high-water mark is only seen with an overlap,
    # which the client applies by default.
    item = emu.connect_item("company-1")
    account = emu.accounts(item.id)[0]
    emu.add_transaction(account.id, "-10.00", "Before")
    _, cursor, _ = read_all(make(), str(account.id))
    same_instant = emu.add_transaction(account.id, "-20.00", "Same millisecond")
    no_overlap = make(since_overlap_seconds=0)
    assert read_all(no_overlap, str(account.id), cursor=cursor)[0] == []
    overlapped, again, _ = read_all(make(), str(account.id), cursor=cursor)
    assert str(same_instant.id) in {tx.remote_id for tx in overlapped}
    assert again is not None
    assert again.value == cursor.value  # type: ignore[union-attr]  # no drift backwards


def test_stream_resumes_from_a_stored_mid_stream_cursor(
    emu: BridgeEmulator, make: MakeProvider
) -> None:
    account = emu.add_account_with_transactions(95, seed=5, user_ref="company-1")
    stream = make(page_size=10).iter_transactions(str(account.id))
    first, second = next(stream), next(stream)
    assert second.cursor is not None
    stored = second.cursor.dumps()  # what the addon writes with page two's lines
    stream.close()  # the worker dies here
    rest, final, pages = read_all(make(page_size=10), str(account.id), cursor=Cursor.loads(stored))
    ids = [tx.remote_id for tx in (*first.transactions, *second.transactions, *rest)]
    assert len(ids) == 95
    assert len(set(ids)) == 95
    assert pages == 8
    assert final is not None
    assert set(final.value) == {"since"}


def test_date_window_limits_the_first_read(emu: BridgeEmulator, make: MakeProvider) -> None:
    account = emu.add_account_with_transactions(300, seed=9, user_ref="company-1", days=120)
    provider = make()
    window, _, _ = read_all(
        provider, str(account.id), date_from=date(2025, 1, 1), date_to=date(2025, 1, 31)
    )
    expected = [
        t for t in emu.transactions(account.id) if date(2025, 1, 1) <= t.date <= date(2025, 1, 31)
    ]
    assert len(window) == len(expected) > 0
    assert {tx.remote_id for tx in window} == {str(t.id) for t in expected}
    assert all("2025-01-01" <= tx.raw["date"] <= "2025-01-31" for tx in window)


def test_bad_cursors_are_errors(emu: BridgeEmulator, make: MakeProvider) -> None:
    account = emu.add_account_with_transactions(30, seed=1, user_ref="company-1")
    provider = make(page_size=10)
    page = next(provider.iter_transactions(str(account.id)))
    assert page.cursor is not None
    next_uri = str(page.cursor.value["next_uri"])
    forged = Cursor(CURSOR_KIND, {"next_uri": next_uri.replace("after=", "after=AAAA")})
    with pytest.raises(InvalidRequest):
        list(provider.iter_transactions(str(account.id), cursor=forged))
    foreign = Cursor(CURSOR_KIND, {"next_uri": next_uri.replace(str(account.id), "123")})
    with pytest.raises(InvalidRequest):
        list(provider.iter_transactions(str(account.id), cursor=foreign))
    with pytest.raises(InvalidRequest):
        list(provider.iter_transactions(str(account.id), cursor=Cursor("linxo_window", {})))
    with pytest.raises(InvalidRequest):
        list(provider.iter_transactions(str(account.id), cursor=Cursor(CURSOR_KIND, {})))


def test_repeated_cursor_and_page_cap_stop_the_stream(
    emu: BridgeEmulator, make: MakeProvider
) -> None:
    account = emu.add_account_with_transactions(50, seed=1, user_ref="company-1")
    stream = make(page_size=10).iter_transactions(str(account.id))
    next(stream)
    emu.script_faults("repeat_page", path="/v3/aggregation/transactions")
    with pytest.raises(ProviderUnavailable, match="already given"):
        list(stream)

    capped = make(page_size=10, max_pages=3).iter_transactions(str(account.id))
    received = []
    with pytest.raises(ProviderUnavailable, match="more than 3 pages"):
        for page in capped:
            received.append(page)
    assert len(received) == 3


def test_pagination_boundaries(clock: AdjustableClock) -> None:
    for empty_last_page, expected_pages in ((False, 1), (True, 2)):
        with BridgeEmulator(clock=clock, empty_last_page=empty_last_page) as emu:
            account = emu.add_account_with_transactions(10, seed=2, user_ref="company-1")
            provider = BridgeProvider(
                ProviderConfig(
                    user_ref="company-1",
                    base_url=emu.base_url,
                    credentials=emu.credentials,
                    options={"page_size": 10},
                ),
                clock=clock,
            )
            transactions, cursor, pages = read_all(provider, str(account.id))
            assert len(transactions) == 10
            assert pages == expected_pages
            assert cursor is not None


# -- faults and limits ------------------------------------------------------------------------


def test_server_error_then_success_is_retried(
    emu: BridgeEmulator, make: MakeProvider, sleeps: list[float]
) -> None:
    emu.connect_item("company-1")
    provider = make()
    provider.list_connections()
    emu.script_faults("500", 1, path=ITEMS_PATH)
    assert len(provider.list_connections()) == 1
    assert len(sleeps) == 1
    assert [c["status"] for c in emu.calls(ITEMS_PATH)][-2:] == [500, 200]


def test_rate_limit_backs_off_with_and_without_retry_after(
    emu: BridgeEmulator, make: MakeProvider, sleeps: list[float]
) -> None:
    provider = make()
    provider.list_connections()
    emu.force_rate_limit(1, retry_after=3)
    provider.list_connections()
    assert sleeps[-1] >= 3
    emu.force_rate_limit(1, retry_after=None)
    provider.list_connections()
    assert 0 < sleeps[-1] < 3
    emu.force_rate_limit(10, retry_after=None)
    with pytest.raises(RateLimited):
        provider.list_connections()


def test_published_user_limit_is_respected_by_waiting(
    emu: BridgeEmulator, clock: AdjustableClock
) -> None:
    emu.connect_item("company-1")
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock.sleep(seconds)  # the emulator's minute passes while we wait

    provider = BridgeProvider(
        ProviderConfig(user_ref="company-1", base_url=emu.base_url, credentials=emu.credentials),
        clock=clock,
        sleep=sleep,
    )
    for _ in range(65):
        assert len(provider.list_connections()) == 1
    assert waited
    assert sum(waited) >= 1
    assert sum(1 for c in emu.calls(ITEMS_PATH) if c["status"] == 429) == len(waited)


@pytest.mark.parametrize("fault", ["malformed_json", "truncated"])
def test_unreadable_answers_are_provider_unavailable(
    emu: BridgeEmulator, make: MakeProvider, fault: str
) -> None:
    emu.connect_item("company-1")
    provider = make(max_retries=0)
    provider.list_connections()
    emu.script_faults(fault, 1, path=ITEMS_PATH)
    with pytest.raises(ProviderUnavailable):
        provider.list_connections()
    assert len(provider.list_connections()) == 1


def test_dropped_connection_is_retried_then_reported(
    emu: BridgeEmulator, make: MakeProvider, sleeps: list[float]
) -> None:
    emu.connect_item("company-1")
    provider = make()
    provider.list_connections()
    emu.script_faults("reset", 1, path=ITEMS_PATH)
    assert len(provider.list_connections()) == 1
    assert len(sleeps) == 1
    emu.script_faults("reset", 1, path=ITEMS_PATH)
    with pytest.raises(ConnectionFailed):
        make(max_retries=0).list_connections()


def test_timeout_is_connection_failed(emu: BridgeEmulator, make: MakeProvider) -> None:
    provider = make(timeout=0.3, max_retries=0)
    provider.list_connections()
    emu.script_faults("timeout", 1, path=ITEMS_PATH, delay=0.8)
    with pytest.raises(ConnectionFailed):
        provider.list_connections()


# -- institutions -----------------------------------------------------------------------------


def test_institutions_search_and_country(emu: BridgeEmulator, make: MakeProvider) -> None:
    provider = make()
    everything = provider.list_institutions(country="FR", limit=500)
    assert everything[0].name == "Demo Bank"
    assert everything[0].remote_id == "574"
    assert [i.popularity for i in everything] == sorted(
        (i.popularity for i in everything), reverse=True
    )
    assert {i.country for i in everything} == {"FR"}
    accented = provider.list_institutions(search="Crédit Agricole", country="FR")
    plain = provider.list_institutions(search="credit agricole", country="FR")
    assert [i.name for i in accented] == [i.name for i in plain]
    assert "Crédit Agricole Île-de-France" in [i.name for i in plain]
    assert provider.list_institutions(search="Deutsche", country="FR") == []
    assert [i.name for i in provider.list_institutions(search="deutsche")] == ["Deutsche Bank"]
    assert len(provider.list_institutions(country="FR", limit=3)) == 3


# -- webhooks ---------------------------------------------------------------------------------


def delivered(emu: BridgeEmulator) -> list[tuple[bytes, dict[str, str]]]:
    return [
        (d.body, {"BridgeApi-Signature": d.signature} if d.signature else {})
        for d in emu.deliveries
    ]


def test_webhooks_verified_and_normalised(
    emu: BridgeEmulator, make: MakeProvider, closed_port: int
) -> None:
    emu.register_webhook(f"http://127.0.0.1:{closed_port}/bridge", ["whsec-old"])
    provider = make()
    item = emu.connect_item("company-1")
    emu.deliver_webhooks()
    events = [
        e
        for body, headers in delivered(emu)
        for e in provider.parse_webhook(body, headers, ["whsec-old"])
    ]
    assert [e.type for e in events[:2]] == ["item.created", "item.refreshed"]
    assert all(e.connection_id == str(item.id) for e in events)
    created = [e for e in events if e.type == "item.account.created"]
    assert {e.account_ids[0] for e in created} == {str(a.id) for a in emu.accounts(item.id)}
    assert events[0].occurred_at == emu.clock()
    assert events[0].user_ref == emu.user("company-1").uuid

    # Rotation: both signatures are sent; either secret alone is enough.
    emu.deliveries.clear()
    emu.rotate_webhook_secret("whsec-new")
    emu.send_webhook(emu.event("item.deleted", {"item_id": item.id, "user_uuid": "u"}), copies=2)
    (body, headers), (body2, headers2) = delivered(emu)
    for secrets in (["whsec-new"], ["whsec-old"], ["whsec-new", "whsec-old"]):
        assert provider.parse_webhook(body, headers, secrets)[0].type == "item.deleted"
    # A duplicated delivery has the same event id.
    first = provider.parse_webhook(body, headers, ["whsec-new"])[0]
    second = provider.parse_webhook(body2, headers2, ["whsec-new"])[0]
    assert first.event_id == second.event_id

    # Out of order: a later event delivered first still has its own time and id.
    emu.deliveries.clear()
    emu.send_webhook(
        emu.event("item.refreshed", {"item_id": item.id}, timestamp=START + timedelta(hours=1))
    )
    emu.send_webhook(emu.event("item.refreshed", {"item_id": item.id}, timestamp=START))
    late, early = (provider.parse_webhook(b, h, ["whsec-new"])[0] for b, h in delivered(emu))
    assert late.event_id != early.event_id
    assert early.occurred_at is not None
    assert late.occurred_at is not None
    assert early.occurred_at < late.occurred_at


def test_webhook_signature_failures_and_unknown_types(
    emu: BridgeEmulator, make: MakeProvider, closed_port: int
) -> None:
    emu.register_webhook(f"http://127.0.0.1:{closed_port}/bridge", ["whsec"])
    provider = make()
    emu.send_webhook(emu.event("item.created", {"item_id": 1}), signature="invalid")
    emu.send_webhook(emu.event("item.created", {"item_id": 1}), signature="missing")
    emu.send_webhook(emu.event("item.created", {"item_id": 1}))
    (bad, bad_headers), (unsigned, no_headers), (good, good_headers) = delivered(emu)
    with pytest.raises(SignatureVerificationError):
        provider.parse_webhook(bad, bad_headers, ["whsec"])
    with pytest.raises(SignatureVerificationError):
        provider.parse_webhook(unsigned, no_headers, ["whsec"])
    with pytest.raises(SignatureVerificationError):
        provider.parse_webhook(good, good_headers, ["another-secret"])
    tampered = good.replace(b'"item_id":1', b'"item_id":2')
    with pytest.raises(SignatureVerificationError):
        provider.parse_webhook(tampered, good_headers, ["whsec"])
    upper = {
        "bridgeapi-signature": good_headers["BridgeApi-Signature"].upper().replace("V1=", "v1=")
    }
    assert provider.parse_webhook(good, upper, ["whsec"])[0].type == "item.created"

    emu.deliveries.clear()
    emu.send_webhook(emu.event("item.future_thing", {"item_id": 1}))
    emu.send_webhook(emu.event("TEST_EVENT", {}))
    (unknown, unknown_headers), (test, test_headers) = delivered(emu)
    assert provider.parse_webhook(unknown, unknown_headers, ["whsec"]) == []
    assert [e.type for e in provider.parse_webhook(test, test_headers, ["whsec"])] == ["TEST_EVENT"]
    body = json.dumps({"type": "item.created", "content": {}}).encode()
    headers = {"BridgeApi-Signature": emu.sign(body)}
    assert provider.parse_webhook(body, headers, ["whsec"])[0].occurred_at is None
