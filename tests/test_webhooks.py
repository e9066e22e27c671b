"""Webhook signatures: Bridge's header format, rotation, tampering, freshness."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone

import pytest

from bank_sync_bridge.errors import SignatureVerificationError
from bank_sync_bridge.webhooks import (
    compute_signature,
    header_value,
    parse_signature_header,
    signature_header,
    to_epoch_seconds,
    verify_signature,
)

OLD, NEW = "whsec-old-0123456789", "whsec-new-9876543210"
BODY = json.dumps(
    {
        "type": "item.account.updated",
        "timestamp": 1742108000123,
        "content": {"item_id": 9100431, "account_id": 48170001, "nb_new_transactions": 3},
    }
).encode()


def test_signature_is_hmac_sha256_hex_of_the_raw_body() -> None:
    # Independent computation, so the helper cannot agree with itself by construction.
    expected = hmac.new(NEW.encode(), BODY, hashlib.sha256).hexdigest()
    assert compute_signature(NEW, BODY) == expected
    assert signature_header([NEW], BODY) == f"v1={expected}"
    with pytest.raises(TypeError):
        compute_signature(NEW, BODY.decode())  # type: ignore[arg-type]


def test_rotation_both_signatures_sent_and_either_secret_configured() -> None:
    header = signature_header([OLD, NEW], BODY)
    assert header.count("v1=") == 2
    assert verify_signature(BODY, header, [NEW]) == 0
    assert verify_signature(BODY, header, [OLD]) == 0
    assert verify_signature(BODY, header, [NEW, OLD]) == 0
    # Only the old secret signed it: still accepted while the old secret is configured.
    assert verify_signature(BODY, signature_header([OLD], BODY), [NEW, OLD]) == 1
    with pytest.raises(SignatureVerificationError, match="matches none"):
        verify_signature(BODY, signature_header([OLD], BODY), [NEW])


def test_uppercase_hex_and_spacing_are_accepted() -> None:
    header = "v1=" + compute_signature(NEW, BODY).upper()
    assert verify_signature(BODY, header, [NEW]) == 0
    assert verify_signature(BODY, f" v1 = {compute_signature(NEW, BODY)} ", [NEW]) == 0


def test_unknown_schemes_are_ignored_but_not_trusted() -> None:
    good = compute_signature(NEW, BODY)
    assert verify_signature(BODY, f"v0=deadbeef,v2=abc,v1={good}", [NEW]) == 0
    with pytest.raises(SignatureVerificationError, match="no v1 signature"):
        verify_signature(BODY, f"v2={good}", [NEW])


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (BODY.replace(b"3}", b"4}"), None),  # body altered after signing
        (BODY, "v1=" + "0" * 64),
        (BODY, "v1=not-hex"),
        (BODY, "v1=" + compute_signature(NEW, BODY)[:-2]),  # truncated signature
    ],
)
def test_bad_signatures_are_refused(body: bytes, header: str | None) -> None:
    header = header or signature_header([NEW], BODY)
    with pytest.raises(SignatureVerificationError, match="matches none"):
        verify_signature(body, header, [NEW, OLD])


def test_missing_header_or_secret_is_refused_with_a_reason() -> None:
    with pytest.raises(SignatureVerificationError, match="not signed"):
        verify_signature(BODY, None, [NEW])
    with pytest.raises(SignatureVerificationError, match="not signed"):
        verify_signature(BODY, "  ", [NEW])
    with pytest.raises(SignatureVerificationError, match="No webhook secret"):
        verify_signature(BODY, signature_header([NEW], BODY), ["", None])  # type: ignore[list-item]


def test_timestamp_tolerance_in_milliseconds_seconds_or_datetime() -> None:
    header = signature_header([NEW], BODY)
    sent_ms = 1742108000123
    assert to_epoch_seconds(sent_ms) == pytest.approx(1742108000.123)
    five_minutes_later = datetime.fromtimestamp(1742108000 + 300, tz=timezone.utc)
    assert (
        verify_signature(
            BODY, header, [NEW], timestamp=sent_ms, now=five_minutes_later, tolerance_seconds=600
        )
        == 0
    )
    with pytest.raises(SignatureVerificationError, match="too old"):
        verify_signature(
            BODY, header, [NEW], timestamp=sent_ms, now=1742108000 + 3600, tolerance_seconds=600
        )
    with pytest.raises(SignatureVerificationError, match="future"):
        verify_signature(
            BODY, header, [NEW], timestamp=1742108000, now=1742108000 - 900, tolerance_seconds=60
        )
    # Without a tolerance the timestamp is not judged.
    assert verify_signature(BODY, header, [NEW], timestamp=0) == 0


def test_header_helpers() -> None:
    assert header_value({"bridgeapi-signature": "v1=ab"}, "BridgeApi-Signature") == "v1=ab"
    assert header_value({}, "BridgeApi-Signature") is None
    assert parse_signature_header("v1=AB, garbage ,=x,V1=cd") == [("v1", "AB"), ("v1", "cd")]
