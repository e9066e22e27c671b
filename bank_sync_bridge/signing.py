"""Signed values exchanged with the outside: connect-callback states and tenant requests.

**States** (:func:`make_state`, :func:`read_state`). A connect flow sends the user to the
aggregator's hosted page with an opaque value that comes back in the callback; it must tie the
callback to the company that started it, expire, and be usable once. Bridge limits it
(``context``) to 100 characters of ``[A-Za-z0-9-]``, which rules out JSON/base64 tokens. So a
state is one base62 string (letters and digits only) of the bytes::

    version(1) | issued_at(4) | expires_at(4) | nonce(8) | payload | HMAC-SHA256[:16]

where the payload is ``key=text`` or ``key#integer`` fields joined by ``0x1f`` (about a third
shorter than JSON, which matters here).

Trade-offs, chosen to fit 100 characters:

- The HMAC is truncated to 128 bits. A forger must guess it blindly (there is no offline
  oracle: the secret never leaves the server), with a 2^-128 chance per attempt.
- The nonce is 64 random bits: unique for any realistic number of connect flows; the caller
  stores used nonces until the state expires and refuses a second use (single use).
- Times are whole seconds as unsigned 32-bit numbers (valid until 2106).
- The payload is kept small by design: a few short ids (texts or integers, e.g. company,
  provider, user and a database tag), 41 bytes at most once encoded. A larger payload is
  refused with ``ValueError`` (a programming error): store the rest server-side under the
  nonce.

**Tenant requests** (:func:`sign_request`, :func:`verify_request`). The addon signs each call to
the bridge service with its tenant secret, and the service signs the events it posts back the
same way. Scheme ``v2``: HMAC-SHA256 (hex) over, one per line, the scheme's name, the
timestamp, a random nonce, the method, the path with its query, the company header
(``X-Bank-Sync-Company``, empty when the request names none) and the SHA-256 of the body; the
signature header reads ``v2=<hex>``. The verifier accepts a timestamp within a tolerance
window and any of the tenant's active secrets (rotation), and stores nonces for the window to
refuse replays. A signature without the ``v2=`` marker is the older scheme (which left the
company out) and is refused with a message saying so. This is the wire format of
:mod:`bank_sync_bridge.providers.bridge_service`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as secrets_module
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from .errors import SignatureVerificationError
from .webhooks import matching_secret_index

# -------------------------------------------------------------------------------- states

#: Longest state Bridge accepts as ``context``.
MAX_STATE_LENGTH = 100
#: Keys that :func:`read_state` adds to the payload it returns.
RESERVED_STATE_KEYS = frozenset({"nonce", "exp"})

_STATE_VERSION = 1
_STATE_HEADER = struct.Struct(">BII8s")  # version, issued_at, expires_at, nonce
_STATE_MAC_BYTES = 16
_STATE_CONTEXT = b"bank_sync_bridge state v1\0"
#: Clocks of several Odoo workers differ a little; a state "issued" this far ahead is fine.
_STATE_CLOCK_SKEW = 60
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_INDEX = {char: index for index, char in enumerate(_BASE62)}
_STATE_PATTERN = re.compile(r"[0-9A-Za-z]{1,400}")
_FIELD_SEPARATOR = b"\x1f"
_PAYLOAD_KEY = re.compile(r"[A-Za-z0-9_]{1,32}")
_PAYLOAD_FIELD = re.compile(r"([A-Za-z0-9_]{1,32})([#=])(.*)", re.DOTALL)
_INTEGER = re.compile(r"-?[0-9]+")


def _epoch(now: float | datetime | None) -> int:
    if now is None:
        return int(time.time())
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("A naive datetime is ambiguous; give an aware one (UTC)")
        return int(now.timestamp())
    return int(now)


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise SignatureVerificationError("No signing secret is configured")
    return key


def _base62_encode(data: bytes) -> str:
    # The first byte is the version (never 0), so no leading zero byte is lost.
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    return "".join(reversed(digits)) or "0"


def _base62_decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 62 + _BASE62_INDEX[char]
    return number.to_bytes((number.bit_length() + 7) // 8, "big")


def _pack_payload(payload: Mapping[str, Any]) -> bytes:
    fields: list[bytes] = []
    for key in sorted(payload):
        value = payload[key]
        if not isinstance(key, str) or not _PAYLOAD_KEY.fullmatch(key):
            raise ValueError(f"State payload key {key!r} must be letters, digits or '_'")
        if isinstance(value, int) and not isinstance(value, bool):
            fields.append(f"{key}#{value}".encode("ascii"))
        elif isinstance(value, str) and _FIELD_SEPARATOR.decode() not in value:
            fields.append(f"{key}={value}".encode())
        else:
            raise ValueError(f"State payload value of {key!r} must be a text or an integer")
    return _FIELD_SEPARATOR.join(fields)


def _unpack_payload(data: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for field in data.split(_FIELD_SEPARATOR) if data else ():
        match = _PAYLOAD_FIELD.fullmatch(field.decode("utf-8", "replace"))
        if match is None or (match[2] == "#" and not _INTEGER.fullmatch(match[3])):
            # Only reachable with the secret in hand: a bug, but still never a crash.
            raise SignatureVerificationError("The connection request's state has no valid payload")
        key, kind, value = match.groups()
        payload[key] = int(value) if kind == "#" else value
    return payload


def _state_mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, _STATE_CONTEXT + signed, hashlib.sha256).digest()[:_STATE_MAC_BYTES]


def make_state(
    secret: str | bytes,
    payload: Mapping[str, Any],
    ttl_seconds: int,
    now: float | datetime | None = None,
    *,
    max_length: int | None = MAX_STATE_LENGTH,
) -> str:
    """A signed, expiring state carrying ``payload`` (a few short texts or integers).

    The result has only letters and digits. ``read_state`` gives the payload back with a
    ``nonce`` (to refuse a second use) and ``exp`` (until when to remember that nonce).

    :raises ValueError: the payload uses a reserved key or a value that is not a text or an
        integer, or does not fit in ``max_length`` characters.
    """
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    reserved = RESERVED_STATE_KEYS.intersection(payload)
    if reserved:
        raise ValueError(f"State payload keys {sorted(reserved)} are reserved")
    issued = _epoch(now)
    body = _pack_payload(payload)
    nonce = secrets_module.token_bytes(8)
    signed = _STATE_HEADER.pack(_STATE_VERSION, issued, issued + ttl_seconds, nonce) + body
    token = _base62_encode(signed + _state_mac(_key(secret), signed))
    if max_length is not None and len(token) > max_length:
        raise ValueError(
            f"The state would be {len(token)} characters (at most {max_length}): keep its "
            "payload to a few short ids"
        )
    return token


def read_state(
    secret: str | bytes | Sequence[str | bytes],
    token: str,
    now: float | datetime | None = None,
    max_age: float | None = None,
) -> dict[str, Any]:
    """The payload of a state made by :func:`make_state`, plus ``nonce`` (hex) and ``exp``.

    ``secret`` may be a list of secrets (newest first) while one is being replaced.
    ``max_age`` optionally refuses states issued longer ago than that, whatever their TTL.

    :raises SignatureVerificationError: forged, altered, malformed or expired state.
    """
    if not isinstance(token, str) or not _STATE_PATTERN.fullmatch(token):
        raise SignatureVerificationError(
            "The connection request is not valid (its state is missing or malformed)"
        )
    data = _base62_decode(token)
    if len(data) < _STATE_HEADER.size + _STATE_MAC_BYTES or data[0] != _STATE_VERSION:
        raise SignatureVerificationError(
            "The connection request is not valid (its state has an unknown format)"
        )
    signed, mac = data[:-_STATE_MAC_BYTES], data[-_STATE_MAC_BYTES:]
    candidates = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not candidates:
        raise SignatureVerificationError("No signing secret is configured")
    valid = False
    for candidate in candidates:
        valid = hmac.compare_digest(_state_mac(_key(candidate), signed), mac) or valid
    if not valid:
        raise SignatureVerificationError(
            "The connection request could not be verified (its state was altered or signed "
            "by someone else); start the connection again"
        )
    _version, issued, expires, nonce = _STATE_HEADER.unpack_from(signed)
    current = _epoch(now)
    if current >= expires or (max_age is not None and current - issued > max_age):
        raise SignatureVerificationError(
            "The connection request has expired; start the connection again"
        )
    if issued > current + _STATE_CLOCK_SKEW:
        raise SignatureVerificationError(
            "The connection request is dated in the future; check the server's clock"
        )
    payload = _unpack_payload(signed[_STATE_HEADER.size :])
    payload["nonce"] = nonce.hex()
    payload["exp"] = expires
    return payload


# ------------------------------------------------------------------------ tenant requests

#: Request headers of the tenant signature scheme.
CLIENT_HEADER = "X-BSB-Client"
TIMESTAMP_HEADER = "X-BSB-Timestamp"
NONCE_HEADER = "X-BSB-Nonce"
SIGNATURE_HEADER = "X-BSB-Signature"
#: The tenant company a request acts for; covered by the signature.
COMPANY_HEADER = "X-Bank-Sync-Company"
#: The signature scheme: its marker prefixes the signature (``v2=<hex>``) and its name is the
#: first signed line, so a signature cannot be passed off as another scheme's.
SIGNATURE_VERSION = "v2"
#: Seconds a signed request stays acceptable (the verifier keeps nonces that long).
DEFAULT_TOLERANCE = 300

_SCHEME_LINE = "bsb-request-v2"
_NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_SIGNATURE = re.compile(r"(?:([vV][0-9]{1,3})=)?([0-9a-fA-F]{64})")


@dataclass(frozen=True)
class VerifiedRequest:
    """What a valid signature vouches for; store ``nonce`` until ``timestamp`` + tolerance."""

    client_id: str | None
    timestamp: int
    nonce: str
    #: Index of the secret that matched (0 = newest), to notice clients still on an old one.
    secret_index: int
    #: The company header the signature covers (None when the request named none).
    company: str | None = None


def canonical_path(path_or_url: str) -> str:
    """The path and query a signature covers: ``/v1/x?a=1`` (host and a bare ``?`` dropped,
    as frameworks disagree on them)."""
    parts = urlsplit(path_or_url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def canonical_request(
    method: str, path: str, body: bytes, timestamp: int, nonce: str, *, company: str = ""
) -> bytes:
    """The bytes a tenant signature covers, one item per line; the body is hashed because it
    may contain anything, new lines included.

    :raises ValueError: ``company`` holds a line break (it would shift the lines).
    """
    if "\n" in company or "\r" in company:
        raise ValueError("The company cannot hold a line break")
    digest = hashlib.sha256(body).hexdigest()
    lines = [_SCHEME_LINE, str(timestamp), nonce, method.upper(), canonical_path(path)]
    return "\n".join([*lines, company, digest]).encode("utf-8")


def sign_request(
    secret: str | bytes,
    method: str,
    path: str,
    body: bytes = b"",
    timestamp: float | datetime | None = None,
    *,
    client_id: str | None = None,
    nonce: str | None = None,
    company: str | None = None,
) -> dict[str, str]:
    """Headers that sign one request with a tenant ``secret`` (the company header included
    when ``company`` is given: send the request with exactly these headers).

    Sign each attempt anew (fresh timestamp and nonce), so a retry is never taken for a replay.
    """
    stamp = _epoch(timestamp)
    nonce = nonce or secrets_module.token_hex(16)
    if not _NONCE_PATTERN.fullmatch(nonce):
        raise ValueError("A nonce has 8 to 64 letters, digits, '-' or '_'")
    message = canonical_request(method, path, body, stamp, nonce, company=company or "")
    signature = hmac.new(_key(secret), message, hashlib.sha256).hexdigest()
    headers = {
        TIMESTAMP_HEADER: str(stamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: f"{SIGNATURE_VERSION}={signature}",
    }
    if client_id is not None:
        headers[CLIENT_HEADER] = client_id
    if company is not None:
        headers[COMPANY_HEADER] = company
    return headers


def verify_request(
    secrets: str | bytes | Sequence[str | bytes],
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | datetime | None = None,
    tolerance_seconds: float = DEFAULT_TOLERANCE,
) -> VerifiedRequest:
    """Check a tenant request's signature against any of ``secrets`` (newest first).

    Refusing a nonce seen before (inside the window) is the caller's job: only it has a store.

    :raises SignatureVerificationError: unsigned, malformed, of another scheme, outside the
        window, or wrong.
    """
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    stamp_text = lowered.get(TIMESTAMP_HEADER.lower(), "")
    nonce = lowered.get(NONCE_HEADER.lower(), "")
    signature_text = lowered.get(SIGNATURE_HEADER.lower(), "")
    company = lowered.get(COMPANY_HEADER.lower())
    if not (stamp_text and nonce and signature_text):
        raise SignatureVerificationError(
            f"The request is not signed (it needs the {TIMESTAMP_HEADER}, {NONCE_HEADER} and "
            f"{SIGNATURE_HEADER} headers)"
        )
    parsed = _SIGNATURE.fullmatch(signature_text)
    if (
        not stamp_text.isdigit()
        or not _NONCE_PATTERN.fullmatch(nonce)
        or parsed is None
        or (company is not None and ("\n" in company or "\r" in company))
    ):
        raise SignatureVerificationError("The request's signature headers are malformed")
    version, signature = parsed.groups()
    version = version.lower() if version else None
    if version != SIGNATURE_VERSION:
        # Said plainly: an outdated client otherwise only learns that "the signature is wrong".
        raise SignatureVerificationError(
            f"The request is signed with the signature scheme {version or 'v1'}, which this "
            f"side no longer accepts (it needs {SIGNATURE_VERSION}, which also covers the "
            f"{COMPANY_HEADER} header): update bank_sync_bridge on the calling side"
        )
    stamp = int(stamp_text)
    drift = _epoch(now) - stamp
    if abs(drift) > tolerance_seconds:
        raise SignatureVerificationError(
            f"The request's timestamp is {abs(drift)} s away from the server's clock (at most "
            f"{tolerance_seconds:g} s allowed): check the clock, or this is a replayed request"
        )
    candidates = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    if not candidates:
        raise SignatureVerificationError("No secret is configured for this client")
    message = canonical_request(method, path, body, stamp, nonce, company=company or "")
    given = signature.lower().encode("ascii")
    expected = [
        hmac.new(_key(secret), message, hashlib.sha256).hexdigest().encode("ascii")
        for secret in candidates
    ]
    matched = matching_secret_index(expected, [given])
    if matched is None:
        raise SignatureVerificationError(
            "The request's signature is wrong (not made with this client's secret, or the "
            "method, path, company or body was changed)"
        )
    return VerifiedRequest(
        client_id=lowered.get(CLIENT_HEADER.lower()) or None,
        timestamp=stamp,
        nonce=nonce,
        secret_index=matched,
        company=company,
    )


__all__ = [
    "CLIENT_HEADER",
    "COMPANY_HEADER",
    "DEFAULT_TOLERANCE",
    "MAX_STATE_LENGTH",
    "NONCE_HEADER",
    "RESERVED_STATE_KEYS",
    "SIGNATURE_HEADER",
    "SIGNATURE_VERSION",
    "TIMESTAMP_HEADER",
    "VerifiedRequest",
    "canonical_path",
    "canonical_request",
    "make_state",
    "read_state",
    "sign_request",
    "verify_request",
]
