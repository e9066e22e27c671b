"""The small framework the local aggregator emulators are built on.

An emulator is a real HTTP server on 127.0.0.1, served from a daemon thread, that answers like
its vendor. Everything that is not the vendor's own behaviour lives here, so that the Bridge
and the Linxo emulators are steered the same way:

- :class:`EmulatorRequest` and :class:`EmulatorReply`: a request as the vendor code reads it,
  and its answer (JSON, HTML or nothing). :class:`EmulatorError` is a refusal; each emulator
  writes it in its vendor's error shape (:meth:`EmulatorServer.error_body`).
- Scripted faults (:data:`FAULT_KINDS`): failures served instead of, or around, the real answer
  of the next matching calls, and forced 429s. Both are cleared with
  :meth:`EmulatorServer.clear_faults`.
- The scenario controls both emulators offer under the same names and arguments: the clock
  (:meth:`~EmulatorServer.advance`), faults and rate limits, token and consent expiry, and
  operations that are added, booked, changed or deleted at the bank. The vendor-specific ones
  are abstract here and implemented by each emulator its own way.
- The request log (:attr:`EmulatorServer.requests`, :meth:`EmulatorServer.calls`), the
  ``/__emulator__/`` endpoints that steer an emulator from another process, webhook delivery to
  the loopback interface, and the command line (:func:`command_line`,
  :func:`serve_until_interrupted`).
"""

from __future__ import annotations

import abc
import argparse
import hmac
import http.client
import json
import logging
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

from .clock import AdjustableClock

_logger = logging.getLogger(__name__)

#: What :meth:`EmulatorServer.script_faults` can serve. ``500``/``502``/``503``: the vendor's
#: error body with that status. ``timeout``: the real answer, but only after ``delay`` seconds
#: of wall time (to trip a client's timeout). ``malformed_json``: a 200 whose JSON breaks half
#: way. ``truncated``: the body stops before its announced length and the connection closes.
#: ``reset``: the connection closes without an answer. ``repeat_page``: the vendor's paging goes
#: round in circles and serves a page the client already had (each emulator says how).
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "timeout",
    "malformed_json",
    "truncated",
    "reset",
    "repeat_page",
)
#: Where an emulator listens and delivers webhooks: it never talks to anything off this machine.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Path prefix of the endpoints that steer an emulator from another process.
ADMIN_PREFIX = "/__emulator__/"


@dataclass
class EmulatorRequest:
    """An HTTP request as an emulator's vendor code reads it."""

    method: str
    #: The path without its query (and without a trailing slash).
    path: str
    #: Path and query exactly as the client sent them.
    target: str
    #: Each query parameter's last value (a repeated parameter: the last one wins).
    query: dict[str, str]
    #: Every value of each query parameter, in order.
    params: dict[str, list[str]]
    #: Case-insensitive, like HTTP's.
    headers: Mapping[str, str]
    body: bytes
    #: The scripted fault this call meets when the vendor code plays it (``repeat_page``).
    fault: str | None = None

    def values(self, name: str) -> list[str]:
        """Every value of query parameter ``name`` (empty when absent)."""
        return list(self.params.get(name, []))


@dataclass
class EmulatorReply:
    """What an emulator answers: a JSON ``body``, an ``html`` page, or nothing."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    html: str | None = None

    def payload(self) -> bytes:
        """The bytes to send, setting the matching ``Content-Type`` header."""
        if self.html is not None:
            self.headers.setdefault("Content-Type", "text/html; charset=utf-8")
            return self.html.encode()
        if self.body is None:
            return b""
        self.headers.setdefault("Content-Type", "application/json; charset=utf-8")
        text = json.dumps(self.body, ensure_ascii=False, separators=(",", ":"), default=str)
        return text.encode()


class EmulatorError(Exception):
    """A refusal: ``status``, the vendor's error ``code`` and ``message``, the request
    ``parameter`` at fault (when one is) and extra answer ``headers``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        parameter: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter
        self.headers = dict(headers or {})


@dataclass
class ScriptedFault:
    """A fault to serve on the next ``remaining`` calls whose path contains ``path``."""

    kind: str
    remaining: int
    path: str | None
    delay: float

    def matches(self, path: str) -> bool:
        """Whether a call on ``path`` meets this fault."""
        return self.remaining > 0 and (self.path is None or self.path in path)


@dataclass
class WebhookDelivery:
    """One webhook POST an emulator made, for tests to inspect."""

    url: str
    body: bytes
    signature: str | None
    status: int | None
    error: str | None = None


def post_to_loopback(
    url: str, body: bytes, headers: Mapping[str, str], *, signature: str | None = None
) -> WebhookDelivery:
    """POST ``body`` to ``url`` on this machine; the answer's status, or the network error.
    ``signature`` is only recorded (the vendor puts it in ``headers`` under its own name)."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError("An emulator only delivers webhooks to the loopback interface")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        response.read()
        return WebhookDelivery(url, body, signature, response.status)
    except OSError as exc:
        return WebhookDelivery(url, body, signature, None, error=str(exc))
    finally:
        connection.close()


class EmulatorHandler(BaseHTTPRequestHandler):
    """HTTP framing shared by the emulators: read the request, apply the scripted fault, hand
    the call to the emulator (``self.emulator``) and write its answer in one TCP segment."""

    emulator: EmulatorServer
    protocol_version = "HTTP/1.1"  # keep-alive, like the vendors behind their load balancers
    # Headers and body leave in one segment: without these, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every keep-alive answer, which multiplies over thousands of calls.
    disable_nagle_algorithm = True
    wbufsize = -1

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve()

    def do_PUT(self) -> None:
        """Serve a PUT."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve a DELETE."""
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """The access log goes to :mod:`logging` at debug level; :attr:`requests` keeps calls."""
        _logger.debug("%s: " + format, self.emulator.thread_name, *args)

    def _read_request(self) -> EmulatorRequest:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        params = parse_qs(parts.query, keep_blank_values=True)
        return self.emulator.request_class(
            method=self.command,
            path=parts.path.rstrip("/") or "/",
            target=self.path,
            query={name: values[-1] for name, values in params.items()},
            params=params,
            headers=self.headers,
            body=self.rfile.read(length) if length else b"",
        )

    def _serve(self) -> None:
        emulator = self.emulator
        request = self._read_request()
        if request.path.startswith(ADMIN_PREFIX.rstrip("/")):
            self._write(emulator.handle_admin(request))
            return
        if not emulator.scripted(request.path):
            self._write(emulator.reply(request))
            return
        fault = emulator.take_fault(request.path)
        if fault is not None and fault.kind in {"500", "502", "503"}:
            reply = emulator.error_reply(emulator.server_error(int(fault.kind)))
            emulator.log_request(request, reply.status)
            self._write(reply)
            return
        if fault is not None and fault.kind == "reset":
            emulator.log_request(request, 0)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "timeout":
            # Wall-clock wait (the client's socket timeout is real time), cut short on stop().
            emulator.stopping.wait(fault.delay)
        if fault is not None:
            request.fault = fault.kind
        reply = emulator.reply(request)
        emulator.log_request(request, reply.status)
        if fault is not None and fault.kind in {"malformed_json", "truncated"}:
            self._write_broken(fault.kind, reply)
            return
        self._write(reply)

    def _write(self, reply: EmulatorReply) -> None:
        payload = reply.payload()
        self.send_response(reply.status)
        # Not a documented vendor header: a request id helps support in our logs.
        headers = {"X-Request-Id": uuid.uuid4().hex, **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _write_broken(self, kind: str, reply: EmulatorReply) -> None:
        body = reply.body if reply.body is not None else {"resources": []}
        payload = json.dumps(body, separators=(",", ":"), default=str).encode()
        self.send_response(200 if kind == "malformed_json" else reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if kind == "malformed_json":
            broken = payload[: max(1, len(payload) // 2)] + b"<html>502 Bad Gateway</html>"
            self.send_header("Content-Length", str(len(broken)))
            self.end_headers()
            self.wfile.write(broken)
            return
        # Truncated: announce the full length, send half, hang up.
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.close_connection = True


class EmulatorServer(abc.ABC):
    """Life cycle, scripted faults and the scenario controls every emulator offers.

    ``start()``/``stop()`` or ``with Emulator() as emu:``; ``port=0`` takes a free port, known
    once started. Subclasses answer calls in :meth:`answer`, write refusals in their vendor's
    shape in :meth:`error_body`, and implement the abstract scenario controls.
    """

    #: The request type the vendor code reads (a subclass may add helpers).
    request_class: ClassVar[type[EmulatorRequest]] = EmulatorRequest
    #: Name of the serving thread (shows in thread dumps of a hanging test).
    thread_name: ClassVar[str] = "emulator"
    #: ``Server`` header of the answers.
    server_version: ClassVar[str] = "Emulator/1.0"
    #: The vendor's error code and message for a server error (scripted or a bug here).
    server_error_words: ClassVar[tuple[str, str]] = (
        "internal_server_error",
        "Something went wrong on our side.",
    )

    def __init__(self, *, host: str, port: int, clock: AdjustableClock | None) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError("An emulator only listens on the loopback interface")
        self.host = host
        self.port = port
        #: Token lifetimes, consent, rate-limit windows and ``updated_at`` stamps run on it;
        #: share it with the client under test so that both agree on "now".
        self.clock = clock if clock is not None else AdjustableClock()
        #: Serialises the scenario controls and the HTTP threads.
        self.lock = threading.RLock()
        #: The last calls served: method, path, query, status, and what each vendor adds.
        #: Bounded, so a long demo or benchmark run does not grow without end.
        self.requests: deque[dict[str, Any]] = deque(maxlen=100_000)
        #: Set on stop(): slow scripted answers wait on it and are cut short.
        self.stopping = threading.Event()
        self._faults: list[ScriptedFault] = []
        self._forced_429: deque[float | None] = deque()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        handler = type(
            f"{type(self).__name__}Handler",
            (EmulatorHandler,),
            {"emulator": self, "server_version": self.server_version},
        )
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.stopping.clear()
        # A short poll interval keeps stop() fast: tests start and stop many emulators.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (slow scripted answers are cut short)."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the root to give the client under test."""
        return f"http://{self.host}:{self.port}"

    # -- scenario controls shared as they are -----------------------------------------------

    def advance(self, delta: timedelta | float = 0.0, /, **kwargs: float) -> datetime:
        """Move the emulator's clock forward (``advance(hours=2)``); returns the new "now"."""
        return self.clock.advance(delta, **kwargs)

    def script_faults(
        self, kind: str, count: int = 1, *, path: str | None = None, delay: float = 1.0
    ) -> None:
        """Serve ``kind`` (see :data:`FAULT_KINDS`) on the next ``count`` calls whose path
        contains ``path`` (any call when None); ``delay`` is the wait of a ``timeout``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {kind!r}; use one of {FAULT_KINDS}")
        with self.lock:
            self._faults.append(ScriptedFault(kind, count, path, delay))

    def force_rate_limit(self, count: int = 1, *, retry_after: float | None = 1.0) -> None:
        """Answer the next ``count`` calls with 429; ``retry_after=None`` sends no
        ``Retry-After`` header (neither vendor documents one)."""
        with self.lock:
            self._forced_429.extend([retry_after] * count)

    def clear_faults(self) -> None:
        """Drop the scripted faults and forced 429s not served yet."""
        with self.lock:
            self._faults.clear()
            self._forced_429.clear()

    def calls(self, path: str, method: str | None = None) -> list[dict[str, Any]]:
        """Logged calls on exactly ``path`` (and ``method``)."""
        return [
            call
            for call in list(self.requests)
            if call["path"] == path and (method is None or call["method"] == method)
        ]

    # -- scenario controls each vendor implements -------------------------------------------

    @abc.abstractmethod
    def expire_tokens(self) -> None:
        """Every access token issued so far stops working (its next use: 401)."""

    @abc.abstractmethod
    def expire_consent(self, connection_id: Any) -> Any:
        """The bank login's consent (strong authentication) ends now."""

    @abc.abstractmethod
    def reset_rate_limits(self) -> None:
        """Forget request counts (after a test that deliberately exhausted them)."""

    @abc.abstractmethod
    def add_transaction(
        self,
        account_id: Any,
        amount: Decimal | str,
        label: str,
        *,
        on: date | None = None,
        pending: bool = False,
        value_date: date | None = None,
        raw_label: str | None = None,
        stamped_ago: timedelta | None = None,
    ) -> Any:
        """A new operation booked ``on`` that day (today by default; a day long past is a
        late, back-dated operation), or announced but not booked yet (``pending``).

        ``stamped_ago``: it becomes visible now but its aggregator's update stamp is that far
        in the past (published late), for aggregators read by update stamp."""

    @abc.abstractmethod
    def book_pending(self, tx_id: Any, *, new_id: bool = False, on: date | None = None) -> Any:
        """A pending operation gets booked (``on`` that day): under the same id, or, with
        ``new_id``, as a new operation while the pending one goes, as some banks do."""

    @abc.abstractmethod
    def change_transaction(
        self,
        tx_id: Any,
        *,
        label: str | None = None,
        raw_label: str | None = None,
        shift_days: int = 0,
    ) -> Any:
        """The bank changes an operation: its clean ``label``, its raw bank text
        (``raw_label``), or its dates by ``shift_days``."""

    @abc.abstractmethod
    def delete_transaction(self, tx_id: Any) -> Any:
        """The bank withdraws an operation (how it shows depends on the vendor)."""

    # -- what the vendor code plays -----------------------------------------------------------

    @abc.abstractmethod
    def answer(self, request: EmulatorRequest) -> EmulatorReply:
        """The vendor's answer to one call; may raise :class:`EmulatorError`."""

    @abc.abstractmethod
    def error_body(self, error: EmulatorError) -> Any:
        """A refusal in the vendor's error shape."""

    @property
    @abc.abstractmethod
    def admin_secret(self) -> str:
        """The secret the ``/__emulator__/`` endpoints want in a ``Client-Secret`` header."""

    def scripted(self, path: str) -> bool:
        """Whether calls on ``path`` meet scripted faults and are logged (the API: yes)."""
        return True

    def log_fields(self, request: EmulatorRequest) -> dict[str, Any]:
        """What the vendor adds to a logged call (headers tests check)."""
        return {}

    def admin_actions(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], EmulatorReply]]:
        """Vendor-specific ``/__emulator__/`` actions: ``(method, action) -> handler``."""
        return {}

    # -- plumbing ------------------------------------------------------------------------------

    def reply(self, request: EmulatorRequest) -> EmulatorReply:
        """:meth:`answer`, with refusals and failures of the emulator itself as error replies."""
        try:
            return self.answer(request)
        except EmulatorError as exc:
            return self.error_reply(exc)
        except Exception:  # a bug in the emulator must surface as a 500, like a vendor's
            _logger.exception("%s failed on %s %s", self.thread_name, request.method, request.path)
            return self.error_reply(self.server_error(500))

    def error_reply(self, error: EmulatorError) -> EmulatorReply:
        """The answer that carries ``error``."""
        return EmulatorReply(error.status, self.error_body(error), dict(error.headers))

    def server_error(self, status: int) -> EmulatorError:
        """A server error (5xx) in the vendor's words."""
        code, message = self.server_error_words
        return EmulatorError(status, code, message)

    def too_many_requests(self, message: str, retry_after: float | None) -> EmulatorError:
        """A 429. Neither vendor documents a rate-limit header: ``Retry-After`` is sent as a
        scripting convenience (tests see what a well-behaved client waits), and clients must
        also work without it."""
        headers = {} if retry_after is None else {"Retry-After": str(max(1, round(retry_after)))}
        return EmulatorError(429, "too_many_requests", message, headers=headers)

    def take_forced_rate_limit(self) -> EmulatorError | None:
        """The 429 to serve now, when :meth:`force_rate_limit` scripted one."""
        with self.lock:
            if not self._forced_429:
                return None
            retry_after = self._forced_429.popleft()
        return self.too_many_requests("Too many requests (scripted).", retry_after)

    def take_fault(self, path: str) -> ScriptedFault | None:
        """Consume one scripted fault for a call on ``path``, if any is due."""
        with self.lock:
            for fault in self._faults:
                if fault.matches(path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def log_request(self, request: EmulatorRequest, status: int) -> None:
        """Remember a served call (0: the connection was dropped without an answer)."""
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "status": status,
                **self.log_fields(request),
            }
        )

    def handle_admin(self, request: EmulatorRequest) -> EmulatorReply:
        """``/__emulator__/<action>``: scenario control from another process (demo, bench).

        Guarded by :attr:`admin_secret`, so that an emulator cannot be steered by anyone else.
        """
        supplied = request.headers.get("Client-Secret", "")
        if not hmac.compare_digest(supplied, self.admin_secret):
            error = EmulatorError(401, "invalid_client_credentials", "Admin needs Client-Secret.")
            return self.error_reply(error)
        action = request.path.removeprefix(ADMIN_PREFIX).strip("/")
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            error = EmulatorError(400, "invalid_body", "The body must be a JSON object.")
            return self.error_reply(error)
        actions: dict[tuple[str, str], Callable[[dict[str, Any]], EmulatorReply]] = {
            ("POST", "clock/advance"): self._admin_advance,
            ("POST", "tokens/expire"): self._admin_expire_tokens,
            ("POST", "faults"): self._admin_faults,
            ("POST", "faults/clear"): self._admin_clear_faults,
            ("POST", "rate-limit"): self._admin_rate_limit,
            **self.admin_actions(),
        }
        handler = actions.get((request.method, action))
        if handler is None:
            error = EmulatorError(404, "not_found", f"No admin action {action!r}.")
            return self.error_reply(error)
        try:
            return handler(body)
        except EmulatorError as exc:
            return self.error_reply(exc)

    def _admin_advance(self, body: dict[str, Any]) -> EmulatorReply:
        now = self.advance(float(body.get("seconds", 0))).astimezone(timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return EmulatorReply(200, {"now": stamp})

    def _admin_expire_tokens(self, body: dict[str, Any]) -> EmulatorReply:
        self.expire_tokens()
        return EmulatorReply(204)

    def _admin_faults(self, body: dict[str, Any]) -> EmulatorReply:
        try:
            self.script_faults(
                str(body.get("kind")),
                int(body.get("count", 1)),
                path=body.get("path"),
                delay=float(body.get("delay", 1)),
            )
        except ValueError as exc:
            raise EmulatorError(400, "invalid_parameter", str(exc), parameter="kind") from None
        return EmulatorReply(204)

    def _admin_clear_faults(self, body: dict[str, Any]) -> EmulatorReply:
        self.clear_faults()
        return EmulatorReply(204)

    def _admin_rate_limit(self, body: dict[str, Any]) -> EmulatorReply:
        self.force_rate_limit(int(body.get("count", 1)), retry_after=body.get("retry_after", 1.0))
        return EmulatorReply(204)


# -- command line ------------------------------------------------------------------------------


def command_line(description: str, *, port: int) -> argparse.ArgumentParser:
    """The options every emulator's command line has; the vendor adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=port, help="0 takes a free port")
    parser.add_argument(
        "--frozen-clock", metavar="ISO", help="freeze the clock at this instant (reproducible data)"
    )
    return parser


def clock_from(args: argparse.Namespace) -> AdjustableClock | None:
    """The clock ``--frozen-clock`` asks for, or None for the running default."""
    if not args.frozen_clock:
        return None
    return AdjustableClock(datetime.fromisoformat(args.frozen_clock), frozen=True)


def serve_until_interrupted(
    emulator: EmulatorServer, banner: Callable[[EmulatorServer], Iterable[str]]
) -> int:
    """Start ``emulator``, print ``banner`` (its first line names the base URL, which scripts
    read), and serve until interrupted (Ctrl-C or SIGTERM's default end)."""
    with emulator:
        for line in banner(emulator):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


__all__ = [
    "ADMIN_PREFIX",
    "FAULT_KINDS",
    "LOOPBACK_HOSTS",
    "EmulatorError",
    "EmulatorHandler",
    "EmulatorReply",
    "EmulatorRequest",
    "EmulatorServer",
    "ScriptedFault",
    "WebhookDelivery",
    "clock_from",
    "command_line",
    "post_to_loopback",
    "serve_until_interrupted",
]
