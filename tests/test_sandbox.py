"""The built-in sandbox aggregator, as a user of the demo (or the sync engine) would notice it."""

from __future__ import annotations

import io
import re
import time
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import pytest

from bank_sync_bridge import demo
from bank_sync_bridge.errors import (
    ActionRequired,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    SignatureVerificationError,
)
from bank_sync_bridge.iban import french_iban, is_valid_iban
from bank_sync_bridge.model import (
    AccountType,
    ActionReason,
    ConnectionState,
    Cursor,
    Transaction,
    TransactionStatus,
)
from bank_sync_bridge.providers import MemoryTokenStore, Provider, ProviderConfig, get_provider
from bank_sync_bridge.providers.sandbox import SandboxProvider
from bank_sync_bridge.providers.sandbox_data import swap_digits
from bank_sync_bridge.testing.clock import AdjustableClock

# A Monday afternoon, so that "today" has ordinary operations.
CONNECTED_AT = datetime(2026, 11, 23, 14, 10, tzinfo=timezone.utc)
CALLBACK = "https://erp.example/bank_sync/callback?db=demo"


@pytest.fixture
def clock() -> AdjustableClock:
    """A frozen clock at connection time, moved by the tests."""
    return AdjustableClock(CONNECTED_AT, frozen=True)


def make_provider(
    clock: AdjustableClock,
    *,
    user: str = "company-1",
    store: MemoryTokenStore | None = None,
    **options: object,
) -> SandboxProvider:
    """A sandbox provider for ``user`` (what one worker process would build)."""
    config = ProviderConfig(user_ref=user, options=options)
    return SandboxProvider(config, clock=clock, token_store=store)


def query_of(url: str) -> dict[str, str]:
    """The query parameters of ``url``."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def connect(
    provider: SandboxProvider, login: str = "success", bank: str = "BNPAFRPP", locale: str = "en"
) -> str:
    """Run the whole hosted-page flow like a browser would; returns the new connection id."""
    session = provider.start_connect(
        callback_url=CALLBACK, state="state-42", institution_id=bank, locale=locale
    )
    query = query_of(session.url)
    page = provider.render_hosted_page(query)
    assert "<form" in page
    back = provider.submit_hosted_page({**query, "login": login, "password": "secret"})
    result = provider.complete_connect(query_of(back))
    assert result.success, result
    assert result.state == "state-42"
    assert result.connection_id
    return result.connection_id


def all_transactions(
    provider: SandboxProvider, account_id: str, cursor: Cursor | None = None, **dates: date
) -> tuple[list[Transaction], Cursor]:
    """Every transaction of a stream and its final cursor."""
    out: list[Transaction] = []
    final = None
    for page in provider.iter_transactions(account_id, cursor=cursor, **dates):
        out.extend(page.transactions)
        final = page.cursor
    assert final is not None
    return out, final


def account_id(provider: SandboxProvider, connection_id: str, kind: AccountType) -> str:
    """The remote id of the connection's account of type ``kind``."""
    (account,) = [a for a in provider.list_accounts(connection_id) if a.type is kind]
    return account.remote_id


def by_id(transactions: Iterable[Transaction]) -> dict[str, Transaction]:
    """Transactions keyed by remote id (asserting there is no duplicate)."""
    out: dict[str, Transaction] = {}
    for tx in transactions:
        assert tx.remote_id not in out, f"duplicate {tx.remote_id}"
        out[tx.remote_id] = tx
    return out


# -- institutions ----------------------------------------------------------------------------


def test_banks_users_ask_for_come_first(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    banks = provider.list_institutions()
    names = [bank.name for bank in banks]
    for wanted in (
        "BNP Paribas",
        "Crédit Agricole",
        "Société Générale",
        "La Banque Postale",
        "Caisse d'Épargne",
        "Banque Populaire",
        "LCL",
        "Crédit Mutuel",
        "CIC",
        "Boursorama Banque",
        "Qonto",
        "Shine",
    ):
        assert wanted in names
    assert names[:3] == ["BNP Paribas", "Crédit Agricole", "Société Générale"]
    popularity = [bank.popularity for bank in banks]
    assert popularity == sorted(popularity, reverse=True)
    assert all(bank.logo_url and bank.logo_url.startswith("data:image/svg+xml") for bank in banks)
    assert len(provider.list_institutions(limit=5)) == 5


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("societe", "Société Générale"),
        ("SOCIÉTÉ gén", "Société Générale"),
        ("epargne", "Caisse d'Épargne"),
        ("caisse d epargne", "Caisse d'Épargne"),
        ("postale", "La Banque Postale"),
        ("qonto", "Qonto"),
    ],
)
def test_bank_search_ignores_case_and_accents(
    clock: AdjustableClock, search: str, expected: str
) -> None:
    names = [bank.name for bank in make_provider(clock).list_institutions(search=search)]
    assert names[0] == expected


def test_bank_search_by_country(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    belgian = provider.list_institutions(country="BE")
    assert [bank.name for bank in belgian] == ["BNP Paribas Fortis"]
    french = provider.list_institutions(country="fr", search="bnp")
    assert french[0].name == "BNP Paribas"
    assert all(bank.country == "FR" for bank in french)
    assert "Hello bank!" in [bank.name for bank in french]  # found through its group
    assert provider.list_institutions(search="no such bank") == []


def test_get_provider_builds_the_sandbox(clock: AdjustableClock) -> None:
    provider = get_provider("sandbox", ProviderConfig(user_ref="c1"), clock=clock)
    assert isinstance(provider, Provider)
    assert provider.kind == "sandbox"


# -- accounts, balances, content -------------------------------------------------------------


def test_connection_has_four_accounts_with_consistent_balances(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    accounts = {account.type: account for account in provider.list_accounts(connection_id)}
    assert set(accounts) == {
        AccountType.CHECKING,
        AccountType.SAVINGS,
        AccountType.CARD,
        AccountType.LOAN,
    }
    checking = accounts[AccountType.CHECKING]
    assert checking.iban and checking.iban.startswith("FR76") and is_valid_iban(checking.iban)
    assert len(checking.iban) == 27
    assert checking.masked_number and checking.masked_number.endswith(checking.iban[-4:])
    assert checking.iban[4:-4] not in checking.masked_number  # the number stays hidden
    assert accounts[AccountType.CARD].balance < 0  # money owed on the deferred card
    assert accounts[AccountType.LOAN].balance < 0
    for moment in (0, 3):
        clock.advance(days=moment)
        for account in provider.list_accounts(connection_id):
            transactions, _cursor = all_transactions(provider, account.remote_id)
            booked = sum(
                (t.amount for t in transactions if not t.deleted and not t.is_pending),
                Decimal(0),
            )
            assert account.currency == "EUR"
            assert account.balance == Decimal(account.raw["opening_balance"]) + booked
            assert account.balance_date == clock.now()


def test_iban_helpers_agree_with_a_published_example() -> None:
    # The usual French example: bank 30006, branch 00001, account 12345678901, RIB key 89.
    assert french_iban("30006", "00001", "12345678901") == "FR7630006000011234567890189"
    assert is_valid_iban("FR76 3000 6000 0112 3456 7890 189")
    assert not is_valid_iban("FR7630006000011234567890188")
    assert not is_valid_iban("not an iban")


def test_two_years_of_realistic_french_business_operations(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    checking = account_id(provider, connection_id, AccountType.CHECKING)
    transactions, _cursor = all_transactions(provider, checking)
    dates = [t.booking_date for t in transactions]
    assert min(dates) <= CONNECTED_AT.date() - timedelta(days=700)
    assert max(dates) <= CONNECTED_AT.date()
    per_year = len(transactions) / 2
    assert 600 <= per_year <= 1500
    labels = [t.label for t in transactions]
    assert any("URSSAF" in label for label in labels)
    assert any("DGFIP TVA" in label for label in labels)
    assert any("LOYER" in label for label in labels)
    assert any("SALAIRE" in label for label in labels)
    assert any(label.startswith("PRLV SEPA ") for label in labels)
    assert any(label.startswith("CB ") for label in labels)
    assert any("ECHEANCE PRET" in label for label in labels)
    assert any("RELEVE CARTE DIFFERE" in label for label in labels)
    customer_payments = [t for t in transactions if t.amount > 0 and "INV/" in t.label]
    assert len(customer_payments) > 300
    for tx in customer_payments:
        assert re.search(r"INV/20\d\d/\d{5}", tx.label)
        assert tx.counterparty_name and tx.counterparty_name in tx.label
        assert tx.counterparty_account and is_valid_iban(tx.counterparty_account)
    for tx in transactions:
        assert tx.amount == tx.amount.quantize(Decimal("0.01"))
        assert tx.amount != 0
        assert tx.operation_type
    booked = [t for t in transactions if not t.is_pending]
    assert all(t.bank_reference and t.value_date for t in booked)
    # Month-end salaries go out on working days only.
    assert all(t.booking_date.weekday() < 5 for t in transactions if "SALAIRE" in t.label)
    card = account_id(provider, connection_id, AccountType.CARD)
    card_ops, _cursor = all_transactions(provider, card)
    assert any(t.foreign_currency == "USD" and t.foreign_amount for t in card_ops)
    assert sum(1 for t in card_ops if t.operation_type == "card_summary") >= 23
    savings, _c = all_transactions(
        provider, account_id(provider, connection_id, AccountType.SAVINGS)
    )
    assert any(t.label.startswith("INTERETS") for t in savings)
    loan, _c = all_transactions(provider, account_id(provider, connection_id, AccountType.LOAN))
    assert len(loan) >= 23 and all(t.amount > 0 for t in loan)


def test_transfers_say_what_they_pay_and_some_customers_quote_badly(
    clock: AdjustableClock,
) -> None:
    """Customer transfers and supplier payments carry what they really pay (``raw["pays"]``,
    adding up to the amount); most quote it, a few customers quote nothing or a typo."""
    provider = make_provider(clock)
    connection_id = connect(provider)
    checking = account_id(provider, connection_id, AccountType.CHECKING)
    transactions, _cursor = all_transactions(provider, checking)
    paying = [t for t in transactions if t.raw.get("pays")]
    kinds = Counter()
    for tx in paying:
        total = sum(Decimal(entry["amount"]) for entry in tx.raw["pays"])
        assert total == abs(tx.amount)
        numbers = [entry["number"] for entry in tx.raw["pays"]]
        if tx.amount < 0:
            assert tx.label.endswith(f"FACT {numbers[0]}")
            kinds["bill"] += 1
        elif all(number in tx.label for number in numbers):
            kinds["quoted"] += 1
        elif "INV/" not in tx.label:
            assert tx.counterparty_name in tx.label
            kinds["nothing"] += 1
        else:
            assert swap_digits(numbers[0]) in tx.label
            kinds["typo"] += 1
    customers = kinds["quoted"] + kinds["nothing"] + kinds["typo"]
    assert kinds["bill"] > 100 and customers > 600
    assert 0.02 < kinds["nothing"] / customers < 0.09
    assert 0.01 < kinds["typo"] / customers < 0.06
    assert swap_digits("INV/2026/00042") == "INV/2026/00024"
    assert swap_digits("INV/2026/00100") == "INV/2026/00010"


def test_deferred_card_statement_matches_the_card_payments(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    card, _c = all_transactions(provider, account_id(provider, connection_id, AccountType.CARD))
    checking, _c = all_transactions(
        provider, account_id(provider, connection_id, AccountType.CHECKING)
    )
    settlements = [t for t in card if t.operation_type == "card_summary"]
    debits = [t for t in checking if t.operation_type == "card_summary"]
    assert len(settlements) == len(debits) >= 23
    first_day = min(t.booking_date for t in card)
    for settled, debited in zip(settlements, debits, strict=True):
        assert debited.amount == -settled.amount and debited.booking_date == settled.booking_date
        month, year = (int(part) for part in settled.label.split()[-1].split("/"))
        spent = sum(
            (
                t.amount
                for t in card
                if t.operation_type == "card"
                and (t.booking_date.year, t.booking_date.month) == (year, month)
            ),
            Decimal(0),
        )
        if (first_day.year, first_day.month) != (year, month):  # the first month is partial
            assert settled.amount == -spent


def test_loan_capital_goes_down_by_each_instalment(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    loan = next(a for a in provider.list_accounts(connection_id) if a.type is AccountType.LOAN)
    repayments, _c = all_transactions(provider, loan.remote_id)
    checking, _c = all_transactions(
        provider, account_id(provider, connection_id, AccountType.CHECKING)
    )
    instalments = [t for t in checking if t.operation_type == "loan_repayment"]
    assert len(instalments) == len(repayments)
    for paid, repaid in zip(instalments, repayments, strict=True):
        parts = {k: Decimal(paid.raw[k]) for k in ("principal", "interest", "insurance")}
        assert -paid.amount == sum(parts.values())
        assert repaid.amount == parts["principal"] and paid.booking_date == repaid.booking_date
    assert loan.balance is not None and Decimal(loan.raw["opening_balance"]) < loan.balance < 0


def test_multi_currency_account_shares_the_iban(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, "multi_currency")
    accounts = provider.list_accounts(connection_id)
    assert len(accounts) == 5
    (euro,) = [a for a in accounts if a.type is AccountType.CHECKING and a.currency == "EUR"]
    (dollar,) = [a for a in accounts if a.currency == "USD"]
    assert dollar.iban == euro.iban and dollar.remote_id != euro.remote_id
    dollars, _c = all_transactions(provider, dollar.remote_id)
    assert dollars and all(t.currency == "USD" for t in dollars)
    booked = sum((t.amount for t in dollars if not t.deleted and not t.is_pending), Decimal(0))
    assert dollar.balance == Decimal(dollar.raw["opening_balance"]) + booked
    conversions = [t for t in dollars if t.label.startswith("CHANGE USD/EUR")]
    euros, _c = all_transactions(provider, euro.remote_id)
    landed = [t for t in euros if t.label.startswith("CHANGE USD/EUR")]
    assert len(conversions) == len(landed) >= 6
    for out, arrived in zip(conversions, landed, strict=True):
        assert arrived.foreign_currency == "USD" and arrived.foreign_amount == -out.amount
        assert arrived.amount > 0 and arrived.booking_date == out.booking_date


def test_same_seed_same_data_other_seed_other_data(clock: AdjustableClock) -> None:
    first = make_provider(clock)
    connection_id = connect(first)
    checking = account_id(first, connection_id, AccountType.CHECKING)
    again, _c = all_transactions(make_provider(clock), checking)
    once, _c = all_transactions(first, checking)
    assert once == again
    assert [t.raw for t in once] == [t.raw for t in again]
    other, _c = all_transactions(make_provider(clock, seed=7), checking)
    assert [t.amount for t in other] != [t.amount for t in once]


def test_moving_clock_appends_days_without_rewriting_history(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    checking = account_id(provider, connect(provider), AccountType.CHECKING)
    before = by_id(all_transactions(provider, checking)[0])
    clock.advance(days=10)
    after = by_id(all_transactions(provider, checking)[0])
    assert len(after) > len(before)
    for remote_id, tx in before.items():
        if not tx.is_pending:
            assert after[remote_id] == tx


def test_generating_two_years_is_fast(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, login="data_incidents")
    started = time.process_time()  # CPU time: other developers share this machine
    fresh = make_provider(clock)
    fresh.list_accounts(connection_id)
    all_transactions(fresh, account_id(fresh, connection_id, AccountType.CHECKING))
    assert time.process_time() - started < 1.0


# -- pagination and cursors ------------------------------------------------------------------


def test_resuming_from_any_page_cursor_loses_and_repeats_nothing(clock: AdjustableClock) -> None:
    provider = make_provider(clock, page_size=50)
    checking = account_id(provider, connect(provider), AccountType.CHECKING)
    one_pass, _c = all_transactions(make_provider(clock, page_size=5000), checking)
    pages = list(provider.iter_transactions(checking))
    assert len(pages) > 10
    assert all(len(page.transactions) == 50 for page in pages[:-1])
    assert [page.last for page in pages].count(True) == 1 and pages[-1].last
    # A run interrupted after page 4, resumed later by another process.
    stored = Cursor.loads(pages[3].cursor.dumps())
    clock.advance(hours=1)
    resumed, _c = all_transactions(make_provider(clock, page_size=50), checking, cursor=stored)
    seen = [t.remote_id for page in pages[:4] for t in page.transactions]
    combined = seen + [t.remote_id for t in resumed]
    assert len(combined) == len(set(combined))
    assert set(combined) == {t.remote_id for t in one_pass}
    booking_dates = [t.booking_date for t in one_pass]
    assert booking_dates == sorted(booking_dates)


def test_page_boundaries_give_no_empty_or_missing_page(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    loan = account_id(provider, connect(provider), AccountType.LOAN)
    total = len(all_transactions(provider, loan)[0])
    assert total % 2 == 0 or total % 3 == 0  # the loan has 24 or so instalments
    size = total // 2 if total % 2 == 0 else total // 3
    pages = list(make_provider(clock, page_size=size).iter_transactions(loan))
    assert [len(page.transactions) for page in pages] == [size] * (total // size)
    assert [page.last for page in pages] == [False] * (len(pages) - 1) + [True]
    single = list(make_provider(clock, page_size=total).iter_transactions(loan))
    assert len(single) == 1 and single[0].last and len(single[0].transactions) == total


def test_date_window_and_bad_requests(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    checking = account_id(provider, connection_id, AccountType.CHECKING)
    start, end = date(2026, 1, 1), date(2026, 1, 31)
    january, _c = all_transactions(provider, checking, date_from=start, date_to=end)
    assert january and all(start <= t.booking_date <= end for t in january)
    with pytest.raises(InvalidRequest, match="after the end date"):
        provider.iter_transactions(checking, date_from=end, date_to=start)
    savings = account_id(provider, connection_id, AccountType.SAVINGS)
    _t, savings_cursor = all_transactions(provider, savings)
    with pytest.raises(InvalidRequest, match="another account"):
        provider.iter_transactions(checking, cursor=savings_cursor)
    with pytest.raises(InvalidRequest):
        provider.iter_transactions(checking, cursor=Cursor("updated_at", {"since": "x"}))
    with pytest.raises(NotFound):
        provider.iter_transactions(checking.replace("-checking", "-bogus"))


def test_incremental_cursor_brings_only_what_changed(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    checking = account_id(provider, connect(provider), AccountType.CHECKING)
    first, cursor = all_transactions(provider, checking)
    cursor = Cursor.loads(cursor.dumps())  # stored as text between runs
    nothing, cursor_again = all_transactions(provider, checking, cursor=cursor)
    assert nothing == []
    clock.advance(days=7)
    changes, _next = all_transactions(provider, checking, cursor=cursor_again)
    full, _c = all_transactions(provider, checking)
    known = by_id(first)
    expected = {t.remote_id for t in full if known.get(t.remote_id) != t}
    assert changes
    assert {t.remote_id for t in changes} == expected
    assert all(t.booking_date > CONNECTED_AT.date() for t in changes if t.remote_id not in known)


def test_a_run_that_stopped_at_an_end_date_leaves_no_gap(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    checking = account_id(provider, connect(provider), AccountType.CHECKING)
    cut = CONNECTED_AT.date() - timedelta(days=30)
    before_cut, cursor = all_transactions(provider, checking, date_to=cut)
    assert before_cut and max(t.booking_date for t in before_cut) <= cut
    # The next runs pass "today" as the end date, one day late on the bank's clock.
    clock.advance(days=1)
    rest, cursor = all_transactions(
        provider, checking, cursor=cursor, date_to=clock.now().date() - timedelta(days=1)
    )
    clock.advance(days=1)
    latest, _cursor = all_transactions(
        provider, checking, cursor=cursor, date_to=clock.now().date() - timedelta(days=1)
    )
    everything = by_id(all_transactions(provider, checking)[0])
    seen: dict[str, Transaction] = {}
    for tx in [*before_cut, *rest, *latest]:
        seen[tx.remote_id] = tx
    yesterday = clock.now().date() - timedelta(days=1)
    expected = {k: t for k, t in everything.items() if t.booking_date <= yesterday}
    assert {k: seen[k] for k in expected} == expected


# -- scripted data incidents -----------------------------------------------------------------


def _daily_runs(
    provider: SandboxProvider, clock: AdjustableClock, account: str, days: int
) -> list[list[Transaction]]:
    """Run an incremental sync at connection time and then every day for ``days`` days."""
    transactions, cursor = all_transactions(provider, account)
    runs = [transactions]
    for _day in range(days):
        clock.advance(days=1)
        transactions, cursor = all_transactions(provider, account, cursor=cursor)
        runs.append(transactions)
    return runs


def test_pending_operation_booked_later_with_the_same_id(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    checking = account_id(
        provider, connect(provider, "pending_booked_same_id"), AccountType.CHECKING
    )
    runs = _daily_runs(provider, clock, checking, 3)
    (pending,) = [t for t in runs[0] if "AMAZON MKTP" in t.label]
    assert pending.status is TransactionStatus.PENDING
    assert not any("AMAZON MKTP" in t.label for t in runs[1])
    (booked,) = [t for t in runs[2] if "AMAZON MKTP" in t.label]
    assert booked.remote_id == pending.remote_id
    assert booked.status is TransactionStatus.BOOKED and not booked.deleted
    assert booked.booking_date == pending.booking_date + timedelta(days=2)
    assert booked.amount == pending.amount == Decimal("-89.90")
    final, _c = all_transactions(provider, checking)
    assert [t.status for t in final if t.remote_id == pending.remote_id] == [booked.status]


def test_pending_operation_replaced_by_a_booked_one_with_a_new_id(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    checking = account_id(
        provider, connect(provider, "pending_booked_new_id"), AccountType.CHECKING
    )
    runs = _daily_runs(provider, clock, checking, 2)
    (pending,) = [t for t in runs[0] if "TOTALENERGIES" in t.label and t.is_pending]
    day_two = [t for t in runs[2] if "TOTALENERGIES" in t.label and t.amount == pending.amount]
    gone = [t for t in day_two if t.remote_id == pending.remote_id]
    booked = [t for t in day_two if t.remote_id != pending.remote_id]
    assert len(gone) == 1 and gone[0].deleted
    assert len(booked) == 1 and booked[0].status is TransactionStatus.BOOKED
    assert not booked[0].deleted


def test_bank_deletes_an_operation(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, "deleted_operation")
    checking = account_id(provider, connection_id, AccountType.CHECKING)
    runs = _daily_runs(provider, clock, checking, 1)
    (shown,) = [t for t in runs[0] if "F-ERREUR" in t.label]
    assert not shown.deleted
    (deleted,) = [t for t in runs[1] if t.remote_id == shown.remote_id]
    assert deleted.deleted
    # The full list still reports it (flagged) and the balance no longer counts it.
    (account,) = [a for a in provider.list_accounts(connection_id) if a.remote_id == checking]
    full, _c = all_transactions(provider, checking)
    assert by_id(full)[shown.remote_id].deleted
    counted = sum((t.amount for t in full if not t.is_pending and not t.deleted), Decimal(0))
    assert account.balance == Decimal(account.raw["opening_balance"]) + counted


def test_bank_renames_an_operation(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    checking = account_id(provider, connect(provider, "label_change"), AccountType.CHECKING)
    runs = _daily_runs(provider, clock, checking, 1)
    (first,) = [t for t in runs[0] if "PHARMACIE" in t.label]
    (renamed,) = [t for t in runs[1] if t.remote_id == first.remote_id]
    assert first.label == "PAIEMENT CB 4970 PHARMACIE"
    assert renamed.label.startswith("CB PHARMACIE DU CENTRE")
    assert renamed.amount == first.amount and renamed.booking_date == first.booking_date
    assert renamed.updated_at and first.updated_at and renamed.updated_at > first.updated_at


def test_back_dated_operation_appears_late(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    checking = account_id(provider, connect(provider, "late_backdated"), AccountType.CHECKING)
    runs = _daily_runs(provider, clock, checking, 1)
    assert not any("8812345" in t.label for t in runs[0])
    (late,) = [t for t in runs[1] if "8812345" in t.label]
    assert late.booking_date == CONNECTED_AT.date() - timedelta(days=5)
    assert late.amount == Decimal("1250.00") and late.status is TransactionStatus.BOOKED


def test_ordinary_card_payments_go_from_pending_to_booked(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    clock.advance(hours=30)  # Tuesday evening: Monday's and Tuesday's card payments wait
    pending = []
    cursors = {}
    for kind in (AccountType.CARD, AccountType.CHECKING):
        remote_id = account_id(provider, connection_id, kind)
        transactions, cursors[remote_id] = all_transactions(provider, remote_id)
        pending += [t for t in transactions if t.is_pending and t.operation_type == "card"]
    assert pending
    assert all(not t.bank_reference for t in pending)
    clock.advance(days=3)
    changes = {}
    for remote_id, cursor in cursors.items():
        changes.update(by_id(all_transactions(provider, remote_id, cursor=cursor)[0]))
    for tx in pending:
        booked = changes[tx.remote_id]
        assert booked.status is TransactionStatus.BOOKED and booked.amount == tx.amount
        assert booked.bank_reference


# -- connection incidents --------------------------------------------------------------------


def test_strong_authentication_blocks_until_reconnection(clock: AdjustableClock) -> None:
    store = MemoryTokenStore()
    provider = make_provider(clock, store=store)
    connection_id = connect(provider, "sca_required")
    connection = provider.get_connection(connection_id)
    assert connection.state is ConnectionState.ACTION_NEEDED
    assert connection.reason is ActionReason.SCA
    checking = account_id(provider, connection_id, AccountType.CHECKING)
    with pytest.raises(ActionRequired) as caught:
        provider.iter_transactions(checking)
    assert caught.value.reason is ActionReason.SCA
    session = provider.start_reconnect(connection_id, callback_url=CALLBACK, state="again")
    back = provider.submit_hosted_page({**query_of(session.url), "login": "success"})
    result = provider.complete_connect(query_of(back))
    assert result.success and result.connection_id == connection_id
    # Another worker process sees the reconnection through the shared store.
    other_worker = make_provider(clock, store=store)
    assert other_worker.get_connection(connection_id).state is ConnectionState.OK
    assert all_transactions(other_worker, checking)[0]


def test_consent_expiring_in_n_days(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, "consent_expiring_3")
    connection = provider.get_connection(connection_id)
    assert connection.state is ConnectionState.OK
    assert connection.consent_expires_at == CONNECTED_AT.replace(second=0) + timedelta(days=3)
    clock.advance(days=3)
    expired = provider.get_connection(connection_id, locale="fr")
    assert expired.state is ConnectionState.ACTION_NEEDED
    assert expired.reason is ActionReason.CONSENT_EXPIRED
    assert "consentement" in (expired.message or "")
    assert "26/11/2026" in (expired.message or "")
    with pytest.raises(ActionRequired) as caught:
        provider.iter_transactions(account_id(provider, connection_id, AccountType.CHECKING))
    assert caught.value.reason is ActionReason.CONSENT_EXPIRED


def test_reconnecting_renews_consent_but_a_wrong_password_does_not(
    clock: AdjustableClock,
) -> None:
    store = MemoryTokenStore()
    provider = make_provider(clock, store=store)
    connection_id = connect(provider, "consent_expiring_3")
    clock.advance(days=4)
    assert provider.get_connection(connection_id).state is ConnectionState.ACTION_NEEDED

    def reconnect(login: str) -> bool:
        session = provider.start_reconnect(connection_id, callback_url=CALLBACK, state="r")
        back = provider.submit_hosted_page({**query_of(session.url), "login": login})
        result = provider.complete_connect(query_of(back))
        assert result.state == "r"
        return result.success

    assert not reconnect("wrong_password")
    assert provider.get_connection(connection_id).state is ConnectionState.ACTION_NEEDED
    assert reconnect("success")
    renewed = make_provider(clock, store=store).get_connection(connection_id)
    assert renewed.state is ConnectionState.OK
    assert renewed.consent_expires_at == clock.now() + timedelta(days=180)


def test_ordinary_consent_lasts_180_days(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    clock.advance(days=179)
    assert provider.get_connection(connection_id).state is ConnectionState.OK
    clock.advance(days=1)
    assert provider.get_connection(connection_id).reason is ActionReason.CONSENT_EXPIRED


def test_bank_down_is_temporary(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, "bank_down", bank="SOGEFRPP")
    connection = provider.refresh_connection(connection_id)
    assert connection.state is ConnectionState.TEMPORARY_FAILURE
    assert "Société Générale" in (connection.message or "")
    checking = account_id(provider, connection_id, AccountType.CHECKING)
    with pytest.raises(ProviderUnavailable) as caught:
        provider.iter_transactions(checking)
    assert caught.value.retryable
    clock.advance(days=2)
    assert provider.get_connection(connection_id).state is ConnectionState.OK
    assert all_transactions(provider, checking)[0]


def test_password_changed_after_a_day(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, "password_changed")
    assert provider.get_connection(connection_id).state is ConnectionState.OK
    clock.advance(days=1)
    connection = provider.get_connection(connection_id)
    assert connection.reason is ActionReason.CREDENTIALS
    with pytest.raises(ActionRequired):
        provider.iter_transactions(account_id(provider, connection_id, AccountType.CHECKING))


def test_messages_in_french_and_english(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, "sca_required")
    english = provider.get_connection(connection_id, locale="en").message or ""
    french = provider.get_connection(connection_id, locale="fr_FR").message or ""
    assert "strong authentication" in english
    assert "authentification forte" in french
    ok = provider.get_connection(connect(provider), locale="fr").message or ""
    assert "Consentement bancaire valable jusqu'au 22/05/2027" in ok


# -- hosted page -----------------------------------------------------------------------------


def test_hosted_page_shows_the_bank_and_the_demo_logins(clock: AdjustableClock) -> None:
    provider = make_provider(clock, hosted_url="http://127.0.0.1:8069/sandbox/connect")
    session = provider.start_connect(
        callback_url=CALLBACK, state="s", institution_id="CEPAFRPP", locale="fr_FR"
    )
    assert session.url.startswith("http://127.0.0.1:8069/sandbox/connect?")
    page = provider.render_hosted_page(query_of(session.url))
    assert "Caisse d&#x27;Épargne" in page
    assert 'name="login"' in page and 'type="password"' in page
    assert "Connectez votre banque" in page and "Annuler" in page
    for login in ("sca_required", "wrong_password", "bank_down", "late_backdated"):
        assert login in page
    english = provider.render_hosted_page(
        query_of(provider.start_connect(callback_url=CALLBACK, state="s").url)
    )
    assert "Connect your bank" in english and "<select" in english  # no bank chosen yet


def test_hosted_page_escapes_what_it_echoes(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    hostile = '"><script>alert(1)</script>'
    session = provider.start_connect(callback_url=CALLBACK + "&x=" + hostile, state=hostile)
    page = provider.render_hosted_page(query_of(session.url))
    assert "<script>" not in page
    assert "&quot;&gt;&lt;script&gt;" in page


def test_tampered_or_expired_links_are_refused(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    query = query_of(
        provider.start_connect(callback_url=CALLBACK, state="s", institution_id="BNPAFRPP").url
    )
    forged = {**query, "callback_url": "https://attacker.example/steal"}
    with pytest.raises(SignatureVerificationError, match="invalid or was altered"):
        provider.render_hosted_page(forged)
    with pytest.raises(SignatureVerificationError):
        provider.submit_hosted_page({**forged, "login": "success"})
    with pytest.raises(SignatureVerificationError):
        provider.render_hosted_page({k: v for k, v in query.items() if k != "sig"})
    other_key = SandboxProvider(
        ProviderConfig(user_ref="company-1", credentials={"session_key": "another"}), clock=clock
    )
    with pytest.raises(SignatureVerificationError):
        other_key.render_hosted_page(query)
    clock.advance(minutes=31)
    with pytest.raises(SignatureVerificationError, match="expired"):
        provider.render_hosted_page(query)


def test_forged_callback_is_refused(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    query = query_of(
        provider.start_connect(callback_url=CALLBACK, state="s", institution_id="BNPAFRPP").url
    )
    back = query_of(provider.submit_hosted_page({**query, "login": "wrong_password"}))
    with pytest.raises(SignatureVerificationError):
        provider.complete_connect({**back, "success": "true", "connection_id": "sbx-x"})
    with pytest.raises(SignatureVerificationError):
        provider.complete_connect({"state": "s", "success": "true", "connection_id": "sbx-x"})


def test_wrong_password_reports_failure_with_a_message(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    session = provider.start_connect(
        callback_url=CALLBACK, state="s-1", institution_id="CMCIFRPP", locale="fr"
    )
    url = provider.submit_hosted_page({**query_of(session.url), "login": "wrong_password"})
    assert url.startswith("https://erp.example/bank_sync/callback?")
    params = query_of(url)
    assert params["db"] == "demo"  # the application's own parameters survive
    assert params["success"] == "false" and params["error"] == "wrong_password"
    assert "connection_id" not in params
    result = provider.complete_connect(params)
    assert not result.success and result.state == "s-1"
    assert result.step == "wrong_password"
    assert result.message == "La banque a refusé l'identifiant ou le mot de passe."


def test_cancel_on_the_hosted_page(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    query = query_of(provider.start_connect(callback_url=CALLBACK, state="s").url)
    result = provider.complete_connect(
        query_of(provider.submit_hosted_page({**query, "action": "cancel"}))
    )
    assert not result.success and result.step == "cancelled"
    assert result.message == "You cancelled the connection to your bank."


def test_connection_ids_belong_to_their_user(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider, bank="QNTOFRP1")
    assert connection_id.startswith("sbx-QNTOFRP1-success-")
    intruder = make_provider(clock, user="company-2")
    with pytest.raises(NotFound):
        intruder.get_connection(connection_id)
    with pytest.raises(NotFound):
        intruder.list_accounts(connection_id)
    with pytest.raises(NotFound):
        provider.get_connection(connection_id.replace("QNTOFRP1", "SHNEFRP1"))


def test_connection_list_and_deletion_with_a_store(clock: AdjustableClock) -> None:
    store = MemoryTokenStore()
    provider = make_provider(clock, store=store)
    assert make_provider(clock).list_connections() == []  # nothing to remember without a store
    first = connect(provider)
    second = connect(provider, bank="CRLYFRPP")
    assert {c.remote_id for c in provider.list_connections()} == {first, second}
    assert len(provider.list_accounts()) == 8
    provider.delete_connection(first)
    provider.delete_connection("sbx-not-a-connection")  # a missing one is not an error
    assert [c.remote_id for c in provider.list_connections()] == [second]
    with pytest.raises(NotFound):
        provider.get_connection(first)
    provider.delete_user()
    assert provider.list_connections() == []


def test_bad_options_get_a_clear_error(clock: AdjustableClock) -> None:
    with pytest.raises(InvalidRequest, match="whole numbers"):
        make_provider(clock, seed="abc")
    with pytest.raises(InvalidRequest, match="at least 1"):
        make_provider(clock, page_size=0)


def test_sandbox_refuses_webhooks(clock: AdjustableClock) -> None:
    with pytest.raises(SignatureVerificationError):
        make_provider(clock).parse_webhook(b"{}", {}, ["secret"])


def test_start_connect_validates_its_input(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    with pytest.raises(InvalidRequest):
        provider.start_connect(callback_url="javascript:alert(1)", state="s")
    with pytest.raises(InvalidRequest):
        provider.start_connect(callback_url=CALLBACK, state="")
    with pytest.raises(InvalidRequest):
        provider.start_connect(callback_url=CALLBACK, state="s", institution_id="NOPEFRPP")
    query = query_of(provider.start_connect(callback_url=CALLBACK, state="s").url)
    with pytest.raises(InvalidRequest):
        provider.submit_hosted_page({**query, "bank": "NOPEFRPP"})
    chosen = provider.submit_hosted_page({**query, "bank": "CRLYFRPP", "login": "success"})
    assert "sbx-CRLYFRPP-success-" in query_of(chosen)["connection_id"]


def test_transaction_counts_per_account_type(clock: AdjustableClock) -> None:
    provider = make_provider(clock)
    connection_id = connect(provider)
    counts: Counter[AccountType] = Counter()
    for account in provider.list_accounts(connection_id):
        counts[account.type] = len(all_transactions(provider, account.remote_id)[0])
    assert counts[AccountType.CHECKING] > counts[AccountType.CARD] > counts[AccountType.LOAN]
    assert 2 <= counts[AccountType.SAVINGS] < 60


# -- the package demo ------------------------------------------------------------------------


def test_demo_connects_lists_and_follows_a_sandbox_bank() -> None:
    output = io.StringIO()
    assert demo.run(["--days", "2", "--last", "5"], out=output) == 0
    text = output.getvalue()
    assert "Odoo demo" in text and "comes later" in text
    assert text.count("balance check OK") == 4
    assert "IBAN FR76" in text
    assert "morning synchronisation" in text
    assert "deleted" in text  # the default login scripts the data incidents


def test_demo_reports_a_refused_login() -> None:
    output = io.StringIO()
    assert demo.run(["--login", "wrong_password", "--locale", "fr"], out=output) == 1
    assert "La banque a refusé l'identifiant ou le mot de passe." in output.getvalue()
