"""The one HTTP wrapper every aggregator client goes through.

:class:`HttpClient` owns what each client would otherwise get subtly wrong:

- explicit ``(connect, read)`` timeouts on every call;
- retries with jittered exponential backoff on connection errors, timeouts, 429 (honouring
  ``Retry-After`` up to a cap) and 5xx, **for idempotent calls only** (GET, HEAD, PUT, DELETE,
  OPTIONS; a POST only when the caller says ``idempotent=True``), because replaying a
  non-idempotent call could create a second user or connection at the aggregator. The one
  exception: a call whose connection was refused (or timed out while connecting) never left,
  so it is retried whatever its method;
- a ``Retry-After`` in seconds or as an HTTP date;
- answers that are not what they claim (invalid JSON, body shorter than ``Content-Length``)
  become :class:`~bank_sync_bridge.errors.ProviderUnavailable`, never a half-read dict;
- error statuses become the exception tree through
  :func:`~bank_sync_bridge.errors.error_from_response`;
- the vendor's request id is captured for support;
- one debug log line per attempt, with every secret redacted (see :class:`Redactor`).

Clock, sleep and jitter are injectable so tests run without waiting and assert the delays.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from . import __version__
from .errors import (
    BankSyncError,
    ConnectionFailed,
    ProviderUnavailable,
    RateLimited,
    error_from_response,
)

_logger = logging.getLogger(__name__)

#: Methods that HTTP defines as idempotent: replaying them cannot create anything twice.
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

#: Response headers where aggregators put their request id, first match wins.
DEFAULT_REQUEST_ID_HEADERS: tuple[str, ...] = (
    "X-Request-Id",
    "Request-Id",
    "X-Bridge-Request-Id",
    "X-Correlation-Id",
    "X-Amzn-Trace-Id",
)

#: Header names whose values are secrets (compared case-insensitively).
SENSITIVE_HEADERS: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "client-secret",
        "x-client-secret",
        "api-key",
        "x-api-key",
        "cookie",
        "set-cookie",
        "x-bsb-signature",
    }
)

#: Query parameter / form field names whose values are secrets (compared case-insensitively).
SENSITIVE_FIELDS: frozenset[str] = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "auth_token",
        "client_secret",
        "secret",
        "secret_key",
        "secret_id",
        "password",
        "pwd",
        "api_key",
        "apikey",
        "code",
        "signature",
    }
)

REDACTED = "***"

#: Error bodies that are not JSON are kept for support, cut to this many characters.
_MAX_ERROR_TEXT = 2000


class Redactor:
    """Removes secrets from anything that may reach a log line or an error message.

    It knows secret header names, secret query/form field names, and literal secret values
    registered with :meth:`add` (client secrets, access tokens obtained at run time...).
    Values shorter than ``min_length`` are ignored: redacting ``"1"`` everywhere would make logs
    unreadable without protecting anything.
    """

    def __init__(
        self,
        values: Iterable[str | None] = (),
        *,
        header_names: Iterable[str] = SENSITIVE_HEADERS,
        field_names: Iterable[str] = SENSITIVE_FIELDS,
        min_length: int = 4,
    ) -> None:
        self.header_names = frozenset(name.lower() for name in header_names)
        self.field_names = frozenset(name.lower() for name in field_names)
        self.min_length = min_length
        self._values: set[str] = set()
        # Tokens are registered while other threads may be logging through the same client.
        self._lock = threading.Lock()
        for value in values:
            self.add(value)

    def add(self, value: str | None) -> None:
        """Register one more secret value (and its URL-encoded forms)."""
        if not value or len(value) < self.min_length:
            return
        with self._lock:
            self._values.update({value, quote(value, safe=""), quote_plus(value)})

    def is_sensitive_header(self, name: str) -> bool:
        """Whether the header ``name`` carries a secret."""
        return name.lower() in self.header_names

    def is_sensitive_field(self, name: str) -> bool:
        """Whether the query parameter or form field ``name`` carries a secret."""
        return name.lower() in self.field_names

    def text(self, text: str) -> str:
        """``text`` with every registered secret value replaced by ``***``."""
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        # Longest first, so that a secret containing another one is removed whole.
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``headers`` that is safe to log."""
        return {
            name: REDACTED if self.is_sensitive_header(name) else self.text(str(value))
            for name, value in headers.items()
        }

    def url(self, url: str) -> str:
        """``url`` with secret query parameters and registered values replaced by ``***``."""
        parts = urlsplit(url)
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            query = urlencode(
                [(k, REDACTED if self.is_sensitive_field(k) else v) for k, v in pairs],
                safe="*",
            )
            parts = parts._replace(query=query)
        if parts.password:
            parts = parts._replace(netloc=f"{parts.username}:{REDACTED}@{parts.hostname}")
        return self.text(urlunsplit(parts))

    def register_mapping(self, data: Any) -> None:
        """Register the values of sensitive keys found in a (nested) request body."""
        if isinstance(data, Mapping):
            for key, value in data.items():
                if isinstance(value, str) and self.is_sensitive_field(str(key)):
                    self.add(value)
                else:
                    self.register_mapping(value)
        elif isinstance(data, list | tuple):
            for item in data:
                self.register_mapping(item)


@dataclass(frozen=True)
class HttpResponse:
    """A successful answer, already read and parsed.

    ``body`` is the parsed JSON (``None`` for an empty body such as a 204), or the text when
    the call was made with ``expect_json=False``.
    """

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: Any
    request_id: str | None = None
    #: Seconds spent on the successful attempt.
    elapsed: float = 0.0

    def json_object(self) -> Mapping[str, Any]:
        """The body as a JSON object; anything else is the aggregator's fault."""
        if not isinstance(self.body, Mapping):
            raise ProviderUnavailable(
                "The aggregator sent an unexpected answer (a JSON object was expected)",
                status=self.status,
                request_id=self.request_id,
            )
        return self.body


def join_url(base_url: str, path_or_url: str) -> str:
    """Absolute URL for ``path_or_url``: absolute URLs unchanged, paths appended to
    ``base_url`` (``join_url("https://h/v3", "/items")`` is ``https://h/v3/items``)."""
    if urlsplit(path_or_url).scheme:
        return path_or_url
    if not base_url:
        raise ValueError(f"A relative path needs a base URL: {path_or_url!r}")
    return base_url.rstrip("/") + "/" + path_or_url.lstrip("/")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class HttpClient:
    """A :class:`requests.Session` wrapper bound to one aggregator ``base_url``.

    :param timeout: ``(connect, read)`` seconds, or one number for both.
    :param max_retries: retries after the first attempt (idempotent calls only).
    :param backoff_base: first backoff in seconds, doubled at each retry.
    :param backoff_cap: no backoff is longer than this.
    :param max_retry_after: a 429 asking to wait longer than this is raised at once (with its
        ``retry_after``) instead of blocking a worker; the caller reschedules.
    :param clock: monotonic seconds, for durations.
    :param sleep: waits between attempts.
    :param jitter: returns a float in ``[0, 1)``; each backoff ``d`` becomes
        ``d/2 + jitter()*d/2`` so that clients retrying together spread out.
    :param secret_values: values to redact from logs (client secret, tokens...); more can be
        registered at run time with ``client.redactor.add(value)``.
    :param request_id_headers: response headers holding the vendor's request id.
    :param json_decimal: parse JSON numbers with a fraction as :class:`~decimal.Decimal`.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] | None = None,
        session: requests.Session | None = None,
        default_headers: Mapping[str, str] | None = None,
        secret_values: Iterable[str | None] = (),
        redactor: Redactor | None = None,
        user_agent: str | None = None,
        request_id_headers: Iterable[str] = DEFAULT_REQUEST_ID_HEADERS,
        json_decimal: bool = False,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout: tuple[float, float] = (
            (float(timeout), float(timeout))
            if isinstance(timeout, int | float)
            else (float(timeout[0]), float(timeout[1]))
        )
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter or secrets.SystemRandom().random
        self._own_session = session is None
        self.session = session or requests.Session()
        self.redactor = redactor or Redactor()
        for value in secret_values:
            self.redactor.add(value)
        self.default_headers: dict[str, str] = {
            "User-Agent": user_agent or f"bank-sync-bridge/{__version__}",
            "Accept": "application/json",
        }
        self.default_headers.update(default_headers or {})
        for name, value in self.default_headers.items():
            if self.redactor.is_sensitive_header(name):
                self.redactor.add(value)
        self.request_id_headers = tuple(request_id_headers)
        self.json_decimal = json_decimal

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- URLs -----------------------------------------------------------------------------

    def url(self, path_or_url: str) -> str:
        """Absolute URL of ``path_or_url`` (a path is relative to ``base_url``)."""
        return join_url(self.base_url, path_or_url)

    def next_url(self, next_uri: str) -> str:
        """Absolute URL of a vendor pagination link such as Bridge's ``next_uri``.

        A link starting with ``/`` is relative to the host (``/v3/...`` stays ``/v3/...``);
        an absolute link must stay on ``base_url``'s scheme and host, so a rogue link cannot
        make us send our credentials elsewhere.
        """
        if not self.base_url:
            raise ValueError("next_url() needs a client with a base_url")
        url = urljoin(self.base_url + "/", next_uri)
        if _origin(url) != _origin(self.base_url):
            raise ProviderUnavailable(
                "The aggregator sent a pagination link to another host; it was not followed"
            )
        return url

    # -- requests -------------------------------------------------------------------------

    def get(self, path_or_url: str, **kwargs: Any) -> HttpResponse:
        """Shortcut for ``request("GET", ...)``."""
        return self.request("GET", path_or_url, **kwargs)

    def post(self, path_or_url: str, **kwargs: Any) -> HttpResponse:
        """Shortcut for ``request("POST", ...)``."""
        return self.request("POST", path_or_url, **kwargs)

    def delete(self, path_or_url: str, **kwargs: Any) -> HttpResponse:
        """Shortcut for ``request("DELETE", ...)``."""
        return self.request("DELETE", path_or_url, **kwargs)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expected: Iterable[int] | None = None,
        expect_json: bool = True,
        timeout: float | tuple[float, float] | None = None,
    ) -> HttpResponse:
        """Send one logical request, retrying it when that is safe.

        :param idempotent: override the method's default (``True`` for a POST that the API
            documents as safe to replay, ``False`` to never retry).
        :param expected: statuses that count as success (default: any 2xx).
        :param expect_json: a non-empty successful body must be JSON.
        :raises BankSyncError: a subclass, from :func:`error_from_response` for error
            statuses, :class:`ConnectionFailed` without an answer, :class:`ProviderUnavailable`
            for unreadable answers.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        ok_statuses = frozenset(expected) if expected is not None else None
        url = self.url(path_or_url)
        merged_headers = dict(self.default_headers)
        merged_headers.update(headers or {})
        for name, value in merged_headers.items():
            if self.redactor.is_sensitive_header(name):
                self.redactor.add(value)
        # Secrets sent in a body (OAuth password grant, client_secret...) may be echoed back
        # in error messages; knowing them keeps them out of logs too.
        self.redactor.register_mapping(json)
        self.redactor.register_mapping(data)
        if params:
            self.redactor.register_mapping(params)
        call_timeout = self.timeout if timeout is None else timeout

        attempt = 0
        while True:
            attempt += 1
            started = self.clock()
            try:
                return self._attempt(
                    method,
                    url,
                    params=params,
                    json_body=json,
                    data=data,
                    headers=merged_headers,
                    ok_statuses=ok_statuses,
                    expect_json=expect_json,
                    timeout=call_timeout,
                    started=started,
                    attempt=attempt,
                )
            except BankSyncError as error:
                delay = self._retry_delay(error, attempt, idempotent)
                if delay is None:
                    raise
                _logger.info(
                    "%s %s failed (%s); retry %d/%d in %.2f s",
                    method,
                    self._log_url(url, params),
                    self.redactor.text(error.message),
                    attempt,
                    self.max_retries,
                    delay,
                )
                self.sleep(delay)

    # -- internals ------------------------------------------------------------------------

    def _attempt(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        json_body: Any,
        data: Any,
        headers: Mapping[str, str],
        ok_statuses: frozenset[int] | None,
        expect_json: bool,
        timeout: float | tuple[float, float],
        started: float,
        attempt: int,
    ) -> HttpResponse:
        log_url = self._log_url(url, params)
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=json_body,
                data=data,
                headers=headers,
                timeout=timeout,
                # An API never needs a redirect; following one could carry our credentials to
                # another host.
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            duration = self.clock() - started
            message = self._transport_message(exc, url, timeout)
            _logger.debug(
                "%s %s -> no answer after %.0f ms (%s, attempt %d)",
                method,
                log_url,
                duration * 1000,
                message,
                attempt,
            )
            if isinstance(exc, requests.exceptions.ChunkedEncodingError):
                raise ProviderUnavailable(message) from None
            raise ConnectionFailed(message, sent=not self._never_sent(exc)) from None

        duration = self.clock() - started
        request_id = self._request_id(response.headers)
        _logger.debug(
            "%s %s -> %s in %.0f ms (request id %s, attempt %d)",
            method,
            log_url,
            response.status_code,
            duration * 1000,
            request_id or "-",
            attempt,
        )
        status = response.status_code
        success = status in ok_statuses if ok_statuses is not None else 200 <= status < 300
        truncated = self._is_truncated(response)
        if not success:
            error = error_from_response(
                status,
                None if truncated else self._error_body(response),
                headers=response.headers,
                request_id=request_id,
            )
            # Vendors sometimes echo what they were sent (a password, a token) in their
            # message, which callers then log or show.
            error.message = self.redactor.text(error.message)
            error.args = (error.message,)
            raise error
        if truncated:
            raise ProviderUnavailable(
                "The aggregator's answer was cut off before the end (body shorter than its "
                "announced Content-Length); nothing was read from it",
                status=status,
                request_id=request_id,
            )
        body: Any
        if method == "HEAD" or not response.content:
            body = None
        elif expect_json:
            try:
                body = json.loads(
                    response.content,
                    parse_float=Decimal if self.json_decimal else float,
                )
            except ValueError:
                raise ProviderUnavailable(
                    "The aggregator sent an answer that is not valid JSON "
                    f"({self._content_type(response)}, {len(response.content)} bytes)",
                    status=status,
                    request_id=request_id,
                ) from None
        else:
            body = response.text
        return HttpResponse(
            status=status,
            headers=CaseInsensitiveDict(response.headers),
            body=body,
            request_id=request_id,
            elapsed=duration,
        )

    def _retry_delay(self, error: BankSyncError, attempt: int, idempotent: bool) -> float | None:
        """Seconds to wait before the next attempt, or None to give up and raise.

        A call that is not idempotent is replayed only when it provably never reached the
        aggregator (connection refused or connect timeout): nothing can have been created.
        """
        never_sent = isinstance(error, ConnectionFailed) and not error.sent
        if not (idempotent or never_sent) or not error.retryable or attempt > self.max_retries:
            return None
        backoff = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        delay = backoff / 2 + self.jitter() * backoff / 2
        if isinstance(error, RateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            delay = max(delay, error.retry_after)
        return delay

    def _request_id(self, headers: Mapping[str, str]) -> str | None:
        for name in self.request_id_headers:
            value = headers.get(name)
            if value:
                return value
        return None

    @staticmethod
    def _content_type(response: requests.Response) -> str:
        return response.headers.get("Content-Type") or "no content type"

    @staticmethod
    def _is_truncated(response: requests.Response) -> bool:
        """True when fewer bytes arrived than the ``Content-Length`` announced.

        urllib3 1.26 (Odoo 18's pin) does not enforce Content-Length, so a connection closed
        mid-body would otherwise look like a complete (short) answer.
        """
        announced = response.headers.get("Content-Length")
        if announced is None or response.request.method == "HEAD":
            return False
        try:
            expected = int(announced)
        except ValueError:
            return True
        raw_read: int | None = None
        tell = getattr(response.raw, "tell", None)
        if callable(tell):
            try:
                raw_read = int(tell())
            except (OSError, ValueError, TypeError):
                raw_read = None
        if raw_read is None:
            encoding = (response.headers.get("Content-Encoding") or "identity").lower()
            if encoding != "identity":
                return False
            raw_read = len(response.content)
        return raw_read < expected

    @staticmethod
    def _error_body(response: requests.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text[:_MAX_ERROR_TEXT]

    def _log_url(self, url: str, params: Mapping[str, Any] | None) -> str:
        if params:
            # What requests will send, so the log shows the real query (redacted).
            prepared = requests.models.PreparedRequest()
            prepared.prepare_url(url, params)
            url = prepared.url or url
        return self.redactor.url(url)

    @staticmethod
    def _never_sent(exc: requests.exceptions.RequestException) -> bool:
        """Whether the request failed before any byte of it could reach the server."""
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return True
        if isinstance(exc, requests.exceptions.SSLError) or not isinstance(
            exc, requests.exceptions.ConnectionError
        ):
            return False
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
        return isinstance(reason, urllib3.exceptions.NewConnectionError)

    def _transport_message(
        self, exc: requests.exceptions.RequestException, url: str, timeout: Any
    ) -> str:
        """A message for a failure without answer that names the host but no secret.

        The exception's own text is not used: urllib3 puts the full URL, query included, in it.
        """
        host = urlsplit(url).netloc.rpartition("@")[2]
        connect_timeout, read_timeout = (
            timeout if isinstance(timeout, tuple) else (timeout, timeout)
        )
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"Could not connect to the aggregator at {host} within {connect_timeout:g} s"
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return f"The aggregator at {host} did not answer within {read_timeout:g} s"
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return f"The answer from the aggregator at {host} was cut off before the end"
        if isinstance(exc, requests.exceptions.SSLError):
            return f"Secure connection to the aggregator at {host} failed (TLS error)"
        if isinstance(exc, requests.exceptions.ConnectionError):
            return f"Could not connect to the aggregator at {host} (connection refused or lost)"
        return f"The request to the aggregator at {host} failed ({type(exc).__name__})"


__all__ = [
    "DEFAULT_REQUEST_ID_HEADERS",
    "IDEMPOTENT_METHODS",
    "SENSITIVE_FIELDS",
    "SENSITIVE_HEADERS",
    "HttpClient",
    "HttpResponse",
    "Redactor",
    "join_url",
]
