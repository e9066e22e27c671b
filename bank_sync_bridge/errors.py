"""One exception tree for everything that can go wrong in the package.

::

    BankSyncError                    base: message, code, status, request id, body
    ├── ConnectionFailed             no HTTP answer: network error or timeout
    ├── AuthenticationError          401: our application or user credentials are refused
    ├── AccessDenied                 403
    ├── NotFound                     404
    ├── InvalidRequest               400, 409, 415, 422: a bug or bad input
    ├── RateLimited                  429: ``retry_after`` seconds when the vendor says
    ├── ProviderUnavailable          5xx, maintenance, malformed or truncated answers
    ├── ActionRequired               the bank login needs the user: ``reason`` says why
    ├── SignatureVerificationError   webhook or signed request that cannot be trusted
    ├── SecretKeyError               a secret cannot be encrypted or decrypted (crypto)
    └── SyncPlanError                a window that cannot be honoured (sync); a ValueError

Every error says with ``retryable`` whether trying again later may succeed without anyone doing
anything: true for ``ConnectionFailed``, ``RateLimited`` and ``ProviderUnavailable`` only.
Callers decide on it, not on class names. ``code`` is the vendor's error code, or
our own stable name of the problem for the errors raised here.

:func:`error_from_response` is the only place where HTTP status and vendor codes become one of
these; every client goes through it. :class:`SecretKeyError` and :class:`SyncPlanError` are
also importable from :mod:`bank_sync_bridge.crypto` and :mod:`bank_sync_bridge.sync`.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from datetime import timezone
from typing import Any, ClassVar

from .model import ActionReason


class BankSyncError(Exception):
    """Base error: carries what support needs, never a secret."""

    #: Whether trying again later may succeed without anyone doing anything.
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts) if len(parts) > 1 else self.message


class ConnectionFailed(BankSyncError):
    """No HTTP answer: DNS, refused connection, reset, or timeout.

    ``sent`` is False when the request provably never left (connection refused, connect
    timeout): replaying it is then safe even for a call that is not idempotent.
    """

    retryable = True

    def __init__(self, message: str, *, sent: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.sent = sent


class AuthenticationError(BankSyncError):
    """The aggregator refuses our credentials or token (401)."""


class AccessDenied(BankSyncError):
    """The credentials are valid but not allowed to do this (403)."""


class NotFound(BankSyncError):
    """The resource does not exist (any more) at the aggregator (404)."""


class InvalidRequest(BankSyncError):
    """The request was refused as malformed or conflicting (400, 409, 415, 422)."""


class RateLimited(BankSyncError):
    """Too many requests (429); ``retry_after`` is in seconds when known."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ProviderUnavailable(BankSyncError):
    """The aggregator or the bank behind it failed (5xx, maintenance, malformed data)."""

    retryable = True


class ActionRequired(BankSyncError):
    """The bank login needs its owner: strong authentication, credentials, consent..."""

    def __init__(self, message: str, *, reason: ActionReason, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class SignatureVerificationError(BankSyncError):
    """A webhook, callback state or signed request failed verification."""


class SecretKeyError(BankSyncError):
    """A secret cannot be encrypted or decrypted: no key, wrong key, corrupted value.

    The message is written for the administrator who holds the keys and never contains a key
    or a plaintext; ``code`` names the problem (``no_key``, ``unknown_key``, ``corrupted``...).
    """

    def __init__(self, message: str, *, code: str = "secret_key", **kwargs: Any) -> None:
        super().__init__(message, code=code, **kwargs)

    def __str__(self) -> str:
        # Nothing came from an aggregator: the sentence is the whole story.
        return self.message


class SyncPlanError(BankSyncError, ValueError):
    """A synchronisation window that cannot be honoured (inverted, in the future...).

    ``message`` is an English sentence meant for the user; the addon translates it. ``code``
    is the stable name of the problem (``inverted``, ``future``...), for callers that render
    their own translated message. Also a :class:`ValueError`, as it was before joining the tree.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)

    def __str__(self) -> str:
        return self.message


_STATUS_CLASSES: dict[int, type[BankSyncError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: AccessDenied,
    404: NotFound,
    409: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}

#: Vendor error codes that mean "the user must act", whatever the HTTP status.
_ACTION_CODES: dict[str, ActionReason] = {
    # Bridge item status codes and infos
    "402": ActionReason.CREDENTIALS,
    "invalid_creds": ActionReason.CREDENTIALS,
    "wrong_pwd": ActionReason.CREDENTIALS,
    "1010": ActionReason.SCA,
    "otp_required": ActionReason.SCA,
    "1100": ActionReason.PRO_VALIDATION,
    "consent_expired": ActionReason.CONSENT_EXPIRED,
    # Linxo connection statuses
    "sca_required": ActionReason.SCA,
    "credentials_error": ActionReason.CREDENTIALS,
    "user_action_required": ActionReason.BANK_ACTION,
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header; ``None`` when absent or unreadable.

    RFC 9110 allows seconds (``120``) or an HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``); a
    date is turned into the seconds left from ``now`` (a Unix time, default: this clock), and a
    date already past means "retry now" (0).
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None:
            return None
        if moment.tzinfo is None:  # "-0000" or no zone: RFC 5322 says UTC
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


#: Where each vendor puts its sentence, most specific first (docs/aggregators.md §1.10, §2.10,
#: §3).
_MESSAGE_KEYS = ("message", "error_description", "description", "detail", "summary")


def _text(value: Any) -> str | None:
    """A vendor's sentence: a non-blank string, or strings in a list (one per problem)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return " ".join(item.strip() for item in value if item.strip()) or None
    return None


def _vendor_message(body: Mapping[str, Any]) -> str | None:
    """The vendor's own explanation in an error body, or None when it gives none."""
    for key in _MESSAGE_KEYS:
        text = _text(body.get(key))
        if text:
            return text
    # GoCardless names each refused parameter with its own summary and detail:
    # {"date_from": {"summary": ..., "detail": ...}, "status_code": 400}.
    problems = []
    for name, value in body.items():
        if isinstance(value, Mapping):
            words = [_text(value.get("summary")), _text(value.get("detail"))]
            said = [w for i, w in enumerate(words) if w and w not in words[:i]]
            if said:
                problems.append(f"{name}: {' - '.join(said)}")
        elif name not in _MESSAGE_KEYS and _text(value) and isinstance(value, list):
            problems.append(f"{name}: {_text(value)}")
    return "; ".join(problems) or None


def error_from_response(
    status: int,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> BankSyncError:
    """Map an HTTP status and a vendor error body onto the exception tree.

    Understands Bridge ``{code, property, message}``, Linxo/OAuth ``{error, error_description}``,
    Powens ``{code, description, message, request_id}`` and GoCardless
    ``{summary, detail, status_code}`` bodies, including GoCardless's refusals that give each
    parameter its own ``{summary, detail}`` (docs/aggregators.md §3): the vendor's words are kept.
    """
    headers = headers or {}
    code: str | None = None
    message: str | None = None
    if isinstance(body, Mapping):
        raw_code = body.get("code") or body.get("error") or body.get("type")
        code = str(raw_code) if raw_code is not None else None
        message = _vendor_message(body)
        request_id = request_id or body.get("request_id")
    if not message:
        message = f"The aggregator answered HTTP {status}"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": request_id,
        "body": body,
    }
    if code and code.lower() in _ACTION_CODES:
        return ActionRequired(message, reason=_ACTION_CODES[code.lower()], **kwargs)
    if status == 429:
        return RateLimited(
            message, retry_after=parse_retry_after(headers.get("Retry-After")), **kwargs
        )
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = ProviderUnavailable if status >= 500 else BankSyncError
    return cls(message, **kwargs)
