"""Verification of webhook signatures, independent of any web framework.

Aggregators sign the **raw** request body with a shared secret (Bridge: header
``BridgeApi-Signature: v1=<HMAC-SHA256 hex>``). Verification must happen on the bytes as
received, before any JSON parsing, because re-serialising never gives the same bytes back.

Rotation: while a secret is being replaced both the old and the new one are valid, and the
vendor sends one entry per secret (``v1=<hex>,v1=<hex>``). :func:`verify_signature` accepts the
delivery when any entry of the expected scheme matches any configured secret, compares in
constant time and case-insensitively (Bridge's own code compares upper-case hex), and ignores
entries of other schemes so that a future ``v2`` does not break us.

:func:`signature_header` builds the same header, for the emulators that send webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from .errors import SignatureVerificationError

#: Header that carries Bridge's signature.
BRIDGE_SIGNATURE_HEADER = "BridgeApi-Signature"
#: Scheme of an HMAC-SHA256 hex entry.
DEFAULT_SCHEME = "v1"

# Above this a number can only be milliseconds (1e11 seconds is the year 5138).
_MILLISECONDS_THRESHOLD = 1e11


def _as_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def to_epoch_seconds(value: float | datetime) -> float:
    """POSIX seconds from a datetime, seconds, or milliseconds (Bridge's envelope uses ms)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("A naive datetime is ambiguous; give an aware one (UTC)")
        return value.timestamp()
    number = float(value)
    return number / 1000 if abs(number) >= _MILLISECONDS_THRESHOLD else number


def compute_signature(secret: str | bytes, body: bytes) -> str:
    """HMAC-SHA256 of ``body`` keyed with ``secret``, as lower-case hex."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("Webhook signatures cover the raw body: pass bytes, not text")
    return hmac.new(_as_bytes(secret), bytes(body), hashlib.sha256).hexdigest()


def signature_header(
    secrets: Sequence[str | bytes], body: bytes, *, scheme: str = DEFAULT_SCHEME
) -> str:
    """Header value signing ``body`` with every secret: ``v1=<hex>[,v1=<hex>]``."""
    if isinstance(secrets, str | bytes):
        secrets = [secrets]
    return ",".join(f"{scheme}={compute_signature(secret, body)}" for secret in secrets)


def parse_signature_header(value: str) -> list[tuple[str, str]]:
    """``(scheme, signature)`` pairs of a header value; malformed entries are dropped."""
    entries: list[tuple[str, str]] = []
    for item in value.split(","):
        scheme, sep, signature = item.strip().partition("=")
        if sep and scheme.strip() and signature.strip():
            entries.append((scheme.strip().lower(), signature.strip()))
    return entries


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any case (frameworks differ in how they store them)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def matching_secret_index(expected: Sequence[bytes], given: Sequence[bytes]) -> int | None:
    """Index of the first ``expected`` signature (one per secret, in the caller's order) equal
    to one of the ``given`` ones, or None. Shared by webhook and service-request checks."""
    matched: int | None = None
    for index, signature in enumerate(expected):
        for candidate in given:
            # Compare every pair (no early exit) so timing says nothing about which matched.
            if hmac.compare_digest(signature, candidate) and matched is None:
                matched = index
    return matched


def verify_signature(
    body: bytes,
    header: str | None,
    secrets: Sequence[str | bytes],
    *,
    scheme: str = DEFAULT_SCHEME,
    timestamp: float | datetime | None = None,
    now: float | datetime | None = None,
    tolerance_seconds: float | None = None,
    header_name: str = BRIDGE_SIGNATURE_HEADER,
) -> int:
    """Check that ``body`` was signed with one of ``secrets``; return that secret's index.

    :param header: the signature header's value as received (``None`` when absent).
    :param timestamp: when the sender says it sent the delivery (seconds, milliseconds or
        datetime). It must be covered by the signature for the check to mean anything: Bridge
        puts it inside the signed body. With ``tolerance_seconds``, a delivery further than
        that from ``now`` is refused (old deliveries replayed by an attacker).
    :param header_name: only used in error messages.
    :raises SignatureVerificationError: with the reason.
    """
    if isinstance(secrets, str | bytes):
        secrets = [secrets]
    active = [_as_bytes(secret) for secret in secrets if secret]
    if not active:
        raise SignatureVerificationError(
            "No webhook secret is configured, so this delivery cannot be trusted"
        )
    if not header or not header.strip():
        raise SignatureVerificationError(f"The webhook is not signed (no {header_name} header)")
    wanted_scheme = scheme.lower()
    candidates = [
        signature.lower().encode("ascii", "replace")
        for entry_scheme, signature in parse_signature_header(header)
        if entry_scheme == wanted_scheme
    ]
    if not candidates:
        raise SignatureVerificationError(
            f"The webhook's {header_name} header has no {scheme} signature"
        )
    expected = [compute_signature(secret, body).encode("ascii") for secret in active]
    matched = matching_secret_index(expected, candidates)
    if matched is None:
        raise SignatureVerificationError(
            "The webhook signature matches none of the configured secrets (wrong secret, or "
            "the body was altered on the way)"
        )
    if tolerance_seconds is not None and timestamp is not None:
        sent = to_epoch_seconds(timestamp)
        current = time.time() if now is None else to_epoch_seconds(now)
        drift = current - sent
        if abs(drift) > tolerance_seconds:
            when = "old" if drift > 0 else "far in the future"
            raise SignatureVerificationError(
                f"The webhook is too {when}: sent {abs(drift):.0f} s away from now "
                f"(at most {tolerance_seconds:g} s allowed)"
            )
    return matched


__all__ = [
    "BRIDGE_SIGNATURE_HEADER",
    "DEFAULT_SCHEME",
    "compute_signature",
    "header_value",
    "matching_secret_index",
    "parse_signature_header",
    "signature_header",
    "to_epoch_seconds",
    "verify_signature",
]
