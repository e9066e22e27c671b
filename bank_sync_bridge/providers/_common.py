"""Helpers that the HTTP aggregator clients (Bridge, Linxo) and the sandbox share.

Kept apart from :mod:`.base` (the protocol every provider implements) because these are
implementation details: reading a :class:`ProviderConfig` the same way in every client and
the small text and time helpers that several providers and emulators need alike.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..errors import InvalidRequest
from .base import ProviderConfig


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the default provider clock)."""
    return datetime.now(timezone.utc)


def fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text``, for bank name searches."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def client_credentials(config: ProviderConfig, vendor: str) -> tuple[str, str]:
    """The application's ``(client_id, client_secret)``; both are required.

    :raises InvalidRequest: naming ``vendor`` when either is missing.
    """
    client_id = config.credentials.get("client_id", "")
    client_secret = config.credentials.get("client_secret", "")
    if not client_id or not client_secret:
        raise InvalidRequest(f"{vendor} needs the application's client id and client secret.")
    return client_id, client_secret


def page_size_option(options: Mapping[str, Any], vendor: str, maximum: int) -> int:
    """``options["page_size"]`` (default ``maximum``), checked to be within 1..``maximum``."""
    page_size = int(options.get("page_size", maximum))
    if not 1 <= page_size <= maximum:
        raise InvalidRequest(f"The {vendor} page size must be between 1 and {maximum}.")
    return page_size


def http_timeouts(config: ProviderConfig) -> tuple[float, float]:
    """``(connect, read)`` timeouts: the configured one to read, at most 5 s to connect (an
    unreachable host should fail fast; a slow answer may legitimately take longer)."""
    read_timeout = float(config.timeout)
    return min(5.0, read_timeout), read_timeout


__all__ = ["client_credentials", "fold", "http_timeouts", "page_size_option", "utc_now"]
