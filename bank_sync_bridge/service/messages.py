"""What one HTTP exchange is to the service, whatever serves it: :class:`Request`,
:class:`Response`, :class:`ApiError` (an error answer), and :class:`RequestContext` (what the
request's log line says). :mod:`.server` builds requests and writes responses;
:mod:`.routes` answers them."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    """One HTTP request as the app needs it (``target`` is the raw path and query)."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""
    remote: str = ""
    #: Path parameters of the matched route.
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = {k.lower(): v for k, v in self.headers.items()}
        parts = urlsplit(self.target)
        self.path = unquote(parts.path)
        self.raw_path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

    def header(self, name: str) -> str:
        """A header's value ('' when absent)."""
        return self.headers.get(name.lower(), "")


@dataclass
class Response:
    """One HTTP response."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable type, human message."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class RequestContext:
    """What one request's log line says about it."""

    request_id: str
    client_id: str | None = None
    company: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def json_response(status: int, data: Any) -> Response:
    """A JSON answer."""
    return Response(
        status,
        json.dumps(data, separators=(",", ":"), default=str).encode(),
        {"Content-Type": "application/json"},
    )


def html_response(status: int, message: str) -> Response:
    """A minimal HTML page saying ``message`` (for browsers on the sandbox's hosted page)."""
    body = f"<!DOCTYPE html><html><body><p>{html.escape(message)}</p></body></html>"
    return Response(status, body.encode(), {"Content-Type": "text/html; charset=utf-8"})


def error_response(error: ApiError, ctx: RequestContext) -> Response:
    """The JSON answer of ``error`` (with ``Retry-After`` when it says when to retry)."""
    body: dict[str, Any] = {
        "error": error.error,
        "message": error.message,
        "request_id": ctx.request_id,
    }
    if error.code:
        body["code"] = error.code
    if error.reason:
        body["reason"] = error.reason
    response = json_response(error.status, body)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


__all__ = [
    "ApiError",
    "Request",
    "RequestContext",
    "Response",
    "error_response",
    "html_response",
    "json_response",
]
