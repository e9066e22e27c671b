"""Helpers that the HTTP aggregator clients (Bridge, Linxo) and the sandbox share.

Kept apart from :mod:`.base` (the protocol every provider implements) because these are
implementation details: reading a :class:`ProviderConfig` the same way in every client and
the small text and time helpers that several providers and emulators need alike.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from ..errors import InvalidRequest
from ..http import HttpClient
from .base import Clock, MemoryTokenStore, ProviderConfig, TokenStore


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the default provider clock)."""
    return datetime.now(timezone.utc)


def fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text``, for bank name searches."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def with_query(url: str, params: Mapping[str, str | None]) -> str:
    """``url`` with ``params`` added after its existing query string (``None`` values are
    left out): how a callback or redirect URL keeps whatever query its owner gave it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((key, value) for key, value in params.items() if value is not None)
    return urlunsplit(parts._replace(query=urlencode(query)))


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


class HttpProvider:
    """Constructor plumbing of the clients of a remote aggregator API (Bridge, Linxo).

    Reads the application's credentials, lets the subclass read its options
    (:meth:`_read_options`, which returns the API root), then sets up the clock, the token
    store and the :class:`~bank_sync_bridge.http.HttpClient` that carries every call.

    :param config: ``credentials`` needs ``client_id`` and ``client_secret``.
    :param clock: "now" as an aware datetime (token and consent expiry).
    :param sleep: how to wait between retries (tests inject a recorder).
    :param token_store: keeps the vendor user's identity and tokens between calls.
    :param session: a :class:`requests.Session` to reuse.
    """

    #: The vendor's name as users know it, in error messages.
    vendor: ClassVar[str]

    def __init__(
        self,
        config: ProviderConfig,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
        token_store: TokenStore | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config
        self.client_id, self._client_secret = client_credentials(config, self.vendor)
        api_root = self._read_options(config, config.options)
        self.clock: Clock = clock if clock is not None else utc_now
        # ``is not None``: an empty store or recorder may well be falsy.
        self.token_store: TokenStore = (
            token_store if token_store is not None else MemoryTokenStore()
        )
        self._http = HttpClient(
            api_root,
            timeout=http_timeouts(config),
            max_retries=int(config.options.get("max_retries", 3)),
            sleep=sleep if sleep is not None else time.sleep,
            session=session,
            default_headers=self._default_headers(),
            secret_values=[self._client_secret],
            json_decimal=True,
        )
        self._account_currencies: dict[str, str] = {}

    def _read_options(self, config: ProviderConfig, options: Mapping[str, Any]) -> str:
        """Check and keep the vendor's options; return the API root URL."""
        raise NotImplementedError

    def _default_headers(self) -> dict[str, str] | None:
        """Headers sent on every call (none unless the vendor wants some)."""
        return None

    def close(self) -> None:
        """Close the HTTP session if this provider created it."""
        self._http.close()


__all__ = [
    "HttpProvider",
    "client_credentials",
    "fold",
    "http_timeouts",
    "page_size_option",
    "utc_now",
    "with_query",
]
