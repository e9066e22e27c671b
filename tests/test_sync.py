"""The pure synchronisation rules: keys, page diffs, windows, twins and balances."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from bank_sync_bridge.model import AccountType, Cursor, Transaction, TransactionStatus
from bank_sync_bridge.sync import (
    KEY_LENGTH,
    LineSnapshot,
    SyncPlanError,
    TwinCandidate,
    check_balance,
    diff_page,
    fingerprint,
    match_twins,
    opening_amount,
    plan_window,
    references_compatible,
    statement_period,
    sync_key,
    transaction_keys,
)

TODAY = date(2025, 3, 20)


def tx(remote_id: str = "1", **kwargs: object) -> Transaction:
    values: dict[str, object] = {
        "remote_id": remote_id,
        "account_id": "acc-1",
        "booking_date": date(2025, 3, 15),
        "amount": Decimal("-128.40"),
        "currency": "EUR",
        "label": "PRLV SEPA ORANGE SA",
    }
    values.update(kwargs)
    return Transaction(**values)  # type: ignore[arg-type]


def snapshot_of(t: Transaction, line_id: int = 1, **kwargs: object) -> LineSnapshot:
    values: dict[str, object] = {
        "line_id": line_id,
        "label": t.label,
        "booking_date": t.booking_date,
        "amount": t.amount,
        "value_date": t.value_date,
        "counterparty_name": t.counterparty_name,
        "counterparty_account": t.counterparty_account,
        "bank_reference": t.bank_reference,
        "operation_type": t.operation_type,
    }
    values.update(kwargs)
    return LineSnapshot(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- keys


def test_sync_key_is_short_stable_and_scoped_to_aggregator_and_account() -> None:
    key = sync_key("bridgeapi", "acc-1", "33000191035700")
    assert key == sync_key("bridgeapi", "acc-1", "33000191035700")
    assert len(key) == KEY_LENGTH
    assert key != sync_key("linxo", "acc-1", "33000191035700")
    assert key != sync_key("bridgeapi", "acc-2", "33000191035700")
    assert key != sync_key("bridgeapi", "acc-13", "3000191035700")  # no concatenation clash
    with pytest.raises(ValueError):
        sync_key("bridgeapi", "acc-1", "")


def test_key_ignores_label_and_amount_changes_when_the_id_is_known() -> None:
    before = tx("77")
    after = replace(before, label="Orange", amount=Decimal("-130.00"))
    assert transaction_keys("linxo", [before]) == transaction_keys("linxo", [after])


def test_fingerprint_used_without_id_tells_identical_operations_apart() -> None:
    coffee = tx("", amount=Decimal("-2.50"), label="CB CAFE DU COIN")
    keys = transaction_keys("sandbox", [coffee, coffee, tx("9")])
    assert len(set(keys)) == 3
    assert keys[0] == fingerprint("sandbox", coffee, 0)
    assert keys[1] == fingerprint("sandbox", coffee, 1)
    # Accents, case and punctuation do not change the fingerprint; the amount does.
    assert fingerprint("sandbox", replace(coffee, label="cb café du coin!")) == keys[0]
    assert fingerprint("sandbox", replace(coffee, amount=Decimal("-2.5"))) == keys[0]
    assert fingerprint("sandbox", replace(coffee, amount=Decimal("-2.60"))) != keys[0]


# --------------------------------------------------------------------------- diff


def test_new_booked_operations_are_created_and_known_ones_left_alone() -> None:
    known, new = tx("1"), tx("2", label="VIR ACME")
    keys = transaction_keys("bridgeapi", [known, new])
    diff = diff_page([known, new], keys, {keys[0]: snapshot_of(known)})
    assert diff.create == ((keys[1], new),)
    assert diff.unchanged == (keys[0],)
    assert diff.fetched == 2
    assert not (diff.update or diff.delete or diff.pending or diff.review)


def test_changed_operation_updates_a_plain_line_and_is_reviewed_once_protected() -> None:
    original = tx("1")
    changed = replace(original, label="Orange", booking_date=date(2025, 3, 16))
    keys = transaction_keys("bridgeapi", [changed])
    diff = diff_page([changed], keys, {keys[0]: snapshot_of(original, line_id=7)})
    assert len(diff.update) == 1
    change = diff.update[0]
    assert change.line_id == 7
    assert change.changes == {
        "label": ("PRLV SEPA ORANGE SA", "Orange"),
        "booking_date": (date(2025, 3, 15), date(2025, 3, 16)),
    }
    protected = snapshot_of(original, line_id=7, protected=True)
    diff = diff_page([changed], keys, {keys[0]: protected})
    assert not diff.update
    assert diff.review[0].changes["label"] == ("PRLV SEPA ORANGE SA", "Orange")


def test_amount_comparison_is_numeric_and_blank_equals_none() -> None:
    original = tx("1", amount=Decimal("-12.5"), bank_reference=None)
    seen = replace(original, amount=Decimal("-12.50"), bank_reference="  ")
    keys = transaction_keys("bridgeapi", [seen])
    assert diff_page([seen], keys, {keys[0]: snapshot_of(original)}).unchanged == (keys[0],)


def test_deleted_operation_removes_a_plain_line_and_flags_a_protected_one() -> None:
    gone = tx("1", deleted=True)
    keys = transaction_keys("bridgeapi", [gone])
    assert diff_page([gone], keys, {keys[0]: snapshot_of(gone, 4)}).delete == ((keys[0], 4),)
    flagged = diff_page([gone], keys, {keys[0]: snapshot_of(gone, 4, protected=True)})
    assert flagged.flag_deleted == ((keys[0], 4),)
    # Already flagged, or never imported: nothing left to do.
    done = diff_page([gone], keys, {keys[0]: snapshot_of(gone, 4, deleted_flag=True)})
    assert done.unchanged == (keys[0],)
    assert diff_page([gone], keys, {}).unchanged == (keys[0],)


def test_pending_stays_out_until_booked_with_same_or_new_id() -> None:
    pending = tx("P1", status=TransactionStatus.PENDING)
    keys = transaction_keys("bridgeapi", [pending])
    diff = diff_page([pending], keys, {})
    assert diff.pending == ((keys[0], pending),)
    assert not diff.create
    # Booked later with the same id: one creation.
    booked = replace(pending, status=TransactionStatus.BOOKED)
    assert diff_page([booked], keys, {}).create == ((keys[0], booked),)
    # Booked with a new id while the pending one is reported deleted: still one creation.
    rebooked = replace(booked, remote_id="B1")
    pending_gone = replace(pending, deleted=True)
    page = [pending_gone, rebooked]
    page_keys = transaction_keys("bridgeapi", page)
    diff = diff_page(page, page_keys, {})
    assert [k for k, _ in diff.create] == [page_keys[1]]
    assert diff.unchanged == (page_keys[0],)


def test_ignored_operations_are_skipped_even_when_changed() -> None:
    op = tx("1")
    keys = transaction_keys("bridgeapi", [op])
    diff = diff_page([op], keys, {}, ignored={keys[0]})
    assert diff.ignored == ((keys[0], op),)
    assert not diff.create


def test_an_operation_repeated_in_a_page_counts_once_with_its_latest_values() -> None:
    first, second = tx("1"), tx("1", label="Orange")
    keys = transaction_keys("bridgeapi", [first, second])
    diff = diff_page([first, second], keys, {})
    assert diff.create == ((keys[0], second),)
    assert diff.duplicates == (keys[0],)
    assert diff.fetched == 1
    with pytest.raises(ValueError):
        diff_page([first], [], {})


# --------------------------------------------------------------------------- window


def test_first_sync_reads_from_history_start() -> None:
    window = plan_window(today=TODAY, history_start=date(2024, 1, 1))
    assert (window.basis, window.date_from, window.date_to) == ("history", date(2024, 1, 1), TODAY)
    assert window.cursor is None and not window.forced


def test_stored_cursor_wins_over_dates() -> None:
    cursor = Cursor(kind="updated_at", value={"since": "2025-03-19T06:00:00Z"})
    window = plan_window(today=TODAY, cursor=cursor, last_booked_date=date(2025, 3, 18))
    assert window.basis == "cursor"
    assert window.cursor == cursor
    assert window.date_from is None


def test_without_cursor_the_last_booked_date_is_reread_with_an_overlap() -> None:
    window = plan_window(
        today=TODAY, last_booked_date=date(2025, 3, 18), overlap_days=7, history_start=None
    )
    assert (window.basis, window.date_from) == ("overlap", date(2025, 3, 11))
    # The overlap never reaches back before the history start chosen by the user.
    clipped = plan_window(
        today=TODAY,
        last_booked_date=date(2025, 3, 18),
        overlap_days=7,
        history_start=date(2025, 3, 15),
    )
    assert clipped.date_from == date(2025, 3, 15)


def test_forced_sync_uses_the_users_window_and_ignores_the_cursor() -> None:
    cursor = Cursor(kind="updated_at", value={"since": "x"})
    window = plan_window(
        today=TODAY, cursor=cursor, forced_from=date(2025, 1, 1), forced_to=date(2025, 1, 31)
    )
    assert window.forced and window.cursor is None
    assert (window.date_from, window.date_to) == (date(2025, 1, 1), date(2025, 1, 31))
    assert plan_window(today=TODAY, forced_from=date(2025, 3, 1)).date_to == TODAY


@pytest.mark.parametrize(
    ("start", "end", "code", "words"),
    [
        (date(2025, 3, 10), date(2025, 3, 1), "inverted", "after the end date"),
        (date(2025, 3, 1), date(2025, 4, 1), "future", "in the future"),
        (date(2025, 4, 1), None, "future", "in the future"),
        (None, date(2025, 3, 1), "missing", "needs a start date"),
    ],
)
def test_impossible_forced_windows_are_refused_clearly(
    start: date | None, end: date | None, code: str, words: str
) -> None:
    with pytest.raises(SyncPlanError) as info:
        plan_window(today=TODAY, forced_from=start, forced_to=end, forced=True)
    assert info.value.code == code
    assert words in str(info.value)


def test_history_start_in_the_future_is_refused() -> None:
    with pytest.raises(SyncPlanError, match="in the future"):
        plan_window(today=TODAY, history_start=date(2025, 6, 1))


# --------------------------------------------------------------------------- twins


def test_unique_twin_is_adopted() -> None:
    op = tx("1", label="PRLV SEPA ORANGE SA FACTURE 03/2025")
    manual = TwinCandidate(line_id=50, date=date(2025, 3, 14), amount=Decimal("-128.4"))
    other = TwinCandidate(line_id=51, date=date(2025, 3, 15), amount=Decimal("-99.00"))
    key = transaction_keys("bridgeapi", [op])[0]
    result = match_twins([(key, op)], [manual, other])
    assert result.adopt == {key: 50}
    assert not result.ambiguous


def test_twin_needs_close_date_and_compatible_reference() -> None:
    op = tx("1", label="VIR ACME INDUSTRIES", bank_reference="FA2025-001")
    key = transaction_keys("bridgeapi", [op])[0]
    far = TwinCandidate(60, date(2025, 3, 1), op.amount, "ACME")
    wrong_ref = TwinCandidate(61, date(2025, 3, 15), op.amount, "Loyer mars")
    assert match_twins([(key, op)], [far, wrong_ref]) == match_twins([(key, op)], [])
    by_ref = TwinCandidate(62, date(2025, 3, 16), op.amount, "Payment", "FA2025001")
    assert match_twins([(key, op)], [by_ref]).adopt == {key: 62}


def test_several_candidates_are_ambiguous_and_listed() -> None:
    op = tx("1", label="CB CAFE", amount=Decimal("-2.50"))
    key = transaction_keys("bridgeapi", [op])[0]
    lines = [TwinCandidate(i, date(2025, 3, 15), Decimal("-2.50"), "Cafe") for i in (70, 71)]
    result = match_twins([(key, op)], lines)
    assert result.adopt == {}
    assert result.ambiguous == {key: (70, 71)}
    # Two operations fitting one line: neither adopts it.
    op2 = replace(op, remote_id="2")
    keys = transaction_keys("bridgeapi", [op, op2])
    result = match_twins(list(zip(keys, [op, op2], strict=True)), lines[:1])
    assert result.adopt == {}
    assert set(result.ambiguous) == set(keys)


def test_empty_reference_is_compatible_generic_words_are_not_enough() -> None:
    op = tx("1", label="VIR SEPA RECU DUPONT")
    assert references_compatible(TwinCandidate(1, op.booking_date, op.amount, ""), op)
    assert references_compatible(TwinCandidate(1, op.booking_date, op.amount, "dupont"), op)
    assert not references_compatible(
        TwinCandidate(1, op.booking_date, op.amount, "Virement SEPA"), op
    )
    # A label made of generic words only, copied whole from the statement.
    generic = tx("2", label="VIR SEPA RECU", bank_reference="BNPA2503100002831")
    assert references_compatible(
        TwinCandidate(1, generic.booking_date, generic.amount, "VIR SEPA RECU"), generic
    )


# --------------------------------------------------------------------------- balances


def test_balance_check_reports_the_difference() -> None:
    ok = check_balance(aggregator_balance=Decimal("1520.33"), journal_balance=Decimal("1520.33"))
    assert ok.ok and ok.difference == 0
    off = check_balance(aggregator_balance=Decimal("1520.33"), journal_balance=Decimal("1500"))
    assert not off.ok
    assert off.difference == Decimal("-20.33")


@pytest.mark.parametrize("reported", [Decimal("-2500.00"), Decimal("2500.00")])
def test_debts_are_negative_in_the_ledger_whatever_the_aggregator_sign(reported: Decimal) -> None:
    for account_type in (AccountType.LOAN, AccountType.CARD, "loan"):
        check = check_balance(
            aggregator_balance=reported,
            journal_balance=Decimal("-2500"),
            account_type=account_type,
        )
        assert check.ok, account_type
    savings = check_balance(
        aggregator_balance=Decimal("-2500"),
        journal_balance=Decimal("-2500"),
        account_type=AccountType.SAVINGS,
    )
    assert savings.ok
    overdrawn = check_balance(aggregator_balance=Decimal("-50"), journal_balance=Decimal("50"))
    assert overdrawn.difference == Decimal("100.00")


def test_pending_operations_in_an_instant_balance_are_not_expected_in_the_books() -> None:
    check = check_balance(
        aggregator_balance=Decimal("900"),
        journal_balance=Decimal("1000"),
        pending_total=Decimal("-100"),
    )
    assert check.ok


def test_opening_amount_makes_a_fresh_journal_match_the_bank() -> None:
    amount = opening_amount(aggregator_balance=Decimal("1520.33"), imported_total=Decimal("-80"))
    assert amount == Decimal("1600.33")
    assert check_balance(
        aggregator_balance=Decimal("1520.33"), journal_balance=Decimal("-80") + amount
    ).ok
    card = opening_amount(
        aggregator_balance=Decimal("300"),
        imported_total=Decimal("-120"),
        account_type=AccountType.CARD,
    )
    assert card == Decimal("-180.00")


def test_statement_period_groups_by_day_or_month() -> None:
    day = date(2025, 3, 15)
    assert statement_period(day, "none") is None
    assert statement_period(day, "day") == "2025-03-15"
    assert statement_period(day, "month") == "2025-03"
    with pytest.raises(ValueError):
        statement_period(day, "week")
