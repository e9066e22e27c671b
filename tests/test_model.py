"""The canonical model: frozen records, Decimal amounts, cursors that survive storage."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

import pytest

from bank_sync_bridge.model import (
    AccountType,
    ConnectionState,
    Cursor,
    Transaction,
    TransactionStatus,
)
from bank_sync_bridge.providers.base import ProviderConfig


def make_transaction(**overrides: object) -> Transaction:
    values: dict[str, object] = {
        "remote_id": "tx-1",
        "account_id": "acc-1",
        "booking_date": date(2025, 3, 14),
        "amount": Decimal("-1234.56"),
        "currency": "EUR",
        "label": "PRLV SEPA URSSAF",
        "raw": {"id": 1, "amount": -1234.56},
    }
    values.update(overrides)
    return Transaction(**values)  # type: ignore[arg-type]


def test_cursor_survives_storage_as_text() -> None:
    cursor = Cursor("updated_at", {"since": "2025-03-15T00:00:00Z", "after": "ZXhh", "n": 3})
    text = cursor.dumps()
    assert Cursor.loads(text) == cursor
    # Stable text: the same cursor always stores the same way (no spurious writes).
    assert (
        text
        == Cursor("updated_at", {"n": 3, "after": "ZXhh", "since": "2025-03-15T00:00:00Z"}).dumps()
    )
    assert Cursor.loads(None) is None
    assert Cursor.loads("") is None


def test_records_are_frozen() -> None:
    transaction = make_transaction()
    with pytest.raises(dataclasses.FrozenInstanceError):
        transaction.amount = Decimal(0)  # type: ignore[misc]
    changed = dataclasses.replace(transaction, status=TransactionStatus.PENDING)
    assert changed.is_pending
    assert not transaction.is_pending


def test_amounts_are_exact_decimals() -> None:
    total = sum(
        (make_transaction(amount=Decimal(a)).amount for a in ("0.10", "0.20", "-0.30")),
        Decimal(0),
    )
    assert total == Decimal("0.00")
    assert make_transaction().amount == Decimal("-1234.56")


def test_raw_payload_is_ignored_by_equality_and_hash() -> None:
    first = make_transaction(raw={"id": 1})
    second = make_transaction(raw={"id": 1, "extra": True})
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    assert make_transaction(label="other") != first


def test_enums_store_as_plain_strings() -> None:
    assert AccountType("savings") is AccountType.SAVINGS
    assert ConnectionState.ACTION_NEEDED == "action_needed"
    assert TransactionStatus("booked") is TransactionStatus.BOOKED


def test_provider_config_repr_hides_credentials() -> None:
    config = ProviderConfig(
        user_ref="company-1",
        base_url="http://127.0.0.1:1",
        credentials={"client_secret": "very-secret-value"},
        options={"environment": "sandbox"},
    )
    assert "very-secret-value" not in repr(config)
    assert "sandbox" in repr(config)
