"""Serving :class:`~.app.ServiceApp` over HTTP/1.1 with the standard library only.

No web framework: the service installs next to nothing and never touches the libraries Odoo
pins. :class:`ServiceServer` runs the HTTP server and the callback delivery loop in threads,
for the command line and for tests (``port=0`` picks a free port).

The service faces the internet (through a reverse proxy or not), so reading requests is strict
and bounded, with the limits of :class:`~.app.ServiceSettings`:

- **Time.** A request's line and headers must arrive within ``header_timeout`` (counted from the
  connection's opening, or from the first byte of a later request on a kept-alive connection),
  its body within ``body_timeout``; an idle kept-alive connection is closed after
  ``keepalive_timeout``. These are deadlines, not per-read timeouts: a client sending one byte
  a second is cut off like a silent one (408, then closed).
- **Concurrency.** At most ``max_connections`` connections are served at once, one thread each;
  a connection beyond that gets ``503`` with ``Retry-After`` at once and is closed (it does not
  wait in a queue, so no thread or memory is spent on it).
- **Framing.** The body is delimited by ``Content-Length`` only. A request with
  ``Transfer-Encoding`` is refused (``411`` for chunked, ``501`` for other codings, ``400``
  with ``Content-Length`` as well), and so is a duplicate or malformed ``Content-Length``,
  folded or malformed header lines, a missing or repeated ``Host``: whatever a proxy in front
  might read differently can never make a second request out of one body.
- **Size.** Request line and headers at most ``max_header_bytes`` and ``max_headers`` lines
  (``431``), body at most ``max_body_bytes`` (``413``).

After any such refusal the answer says ``Connection: close`` and the connection is closed (the
rest of what the client sent is never read as a request). Errors of the API itself (404, 401...)
keep the connection: their framing is sound.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from socketserver import TCPServer
from typing import Any

from .app import ServiceApp
from .messages import Request, Response
from .settings import ServiceSettings

#: Methods the API uses; any other is answered 501.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
#: Seconds at most spent reading what a refused client still sends, so that it reads the
#: answer instead of a connection reset.
LINGER_SECONDS = 1.0

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_CHARACTERS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_DIGITS = re.compile(rb"[0-9]{1,15}")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 76\r\n\r\n"
    b'{"error":"busy","message":"The service is at capacity; retry in a moment"}\r\n'
)


class _Refused(Exception):
    """A request the server answers itself, then closes the connection."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


class _Gone(Exception):
    """The client closed the connection or stayed silent: nothing to answer."""


@dataclass
class _Head:
    """What the request line and headers say."""

    method: str
    target: str
    headers: dict[str, str]
    length: int
    keep_alive: bool
    expect_continue: bool


class _Connection:
    """One client connection: requests read strictly, one after the other (keep-alive)."""

    def __init__(self, sock: socket.socket, peer: str, app: ServiceApp) -> None:
        self.sock = sock
        self.peer = peer
        self.app = app
        self.limits: ServiceSettings = app.settings
        self.buffer = bytearray()

    def serve(self, opened_at: float) -> None:
        """Answer requests until the client leaves, a limit is hit, or a request says close."""
        started: float | None = opened_at
        while True:
            try:
                head = self._read_head(started)
                body = self._read_body(head)
            except _Gone:
                return
            except _Refused as refusal:
                self._refuse(refusal)
                return
            started = None
            response = self.app.handle(
                Request(
                    method=head.method,
                    target=head.target,
                    headers=head.headers,
                    body=body,
                    remote=self.peer,
                )
            )
            self._send(response, head=head.method == "HEAD", close=not head.keep_alive)
            if not head.keep_alive:
                return

    # ------------------------------------------------------------------ reading
    def _now(self) -> float:
        return self.app.clock.monotonic()

    def _fill(self, deadline: float, *, timed_out: _Refused | None) -> None:
        """Read what the client sent next into the buffer, before ``deadline``."""
        remaining = deadline - self._now()
        if remaining <= 0:
            raise timed_out or _Gone()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise timed_out or _Gone() from None
        except OSError:
            raise _Gone() from None
        if not chunk:
            raise _Gone()
        self.buffer += chunk

    def _read_head(self, started: float | None) -> _Head:
        """The next request's line and headers, which must all arrive within
        ``header_timeout`` of ``started`` (the connection's opening for its first request;
        for a later one, the arrival of its first byte after an idle wait of at most
        ``keepalive_timeout``)."""
        limits = self.limits
        if started is None:
            idle_deadline = self._now() + limits.keepalive_timeout
            while not self.buffer:
                self._fill(idle_deadline, timed_out=None)
            started = self._now()
        deadline = started + limits.header_timeout
        late = _Refused(408, "timeout", "The request's headers took too long to arrive")
        cap = limits.max_header_bytes
        while True:
            # Empty lines before a request are tolerated (RFC 9112, section 2.2).
            while self.buffer[:2] == b"\r\n":
                del self.buffer[:2]
            end = self.buffer.find(b"\r\n\r\n", 0, cap + 4)
            if end >= 0:
                break
            if len(self.buffer) >= cap + 4:
                raise _Refused(431, "too_large", "The request's headers are too large")
            self._fill(deadline, timed_out=late if self.buffer else None)
        raw = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return self._parse_head(raw)

    def _parse_head(self, raw: bytes) -> _Head:
        line, *header_lines = raw.split(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or b"\r" in line or b"\n" in line:
            raise _Refused(400, "bad_request", "Malformed request line")
        method_bytes, target_bytes, version_bytes = parts
        version = _VERSION.fullmatch(version_bytes)
        if not _TOKEN.fullmatch(method_bytes) or version is None:
            raise _Refused(400, "bad_request", "Malformed request line")
        if version.group(1) != b"1":
            raise _Refused(505, "bad_request", "Only HTTP/1.0 and HTTP/1.1 are served")
        method = method_bytes.decode("ascii")
        if method not in METHODS:
            raise _Refused(501, "not_implemented", f"The method {method} is not served")
        target = target_bytes.decode("latin-1")
        if not _TARGET.fullmatch(target):
            raise _Refused(400, "bad_request", "The request target must be a path ('/...')")
        if len(header_lines) > self.limits.max_headers:
            raise _Refused(431, "too_large", "The request has too many headers")
        fields: dict[str, list[str]] = {}
        for header in header_lines:
            name, colon, value = header.partition(b":")
            if (
                not colon
                or not _TOKEN.fullmatch(name)  # also refuses folded lines and "Name :"
                or _BAD_VALUE_CHARACTERS.search(value)
            ):
                raise _Refused(400, "bad_request", "Malformed header line")
            fields.setdefault(name.decode("ascii").lower(), []).append(
                value.strip(b" \t").decode("latin-1")
            )
        http11 = version.group(2) != b"0"
        return _Head(
            method=method,
            target=target,
            headers={name: ", ".join(values) for name, values in fields.items()},
            length=self._framing(fields, http11=http11),
            keep_alive=http11 and "close" not in _tokens(fields.get("connection")),
            expect_continue=self._expectation(fields),
        )

    def _framing(self, fields: dict[str, list[str]], *, http11: bool) -> int:
        """The body's length, or why the request cannot be delimited safely."""
        hosts = fields.get("host", [])
        if len(hosts) > 1 or (http11 and not hosts):
            raise _Refused(400, "bad_request", "The request needs exactly one Host header")
        lengths = fields.get("content-length", [])
        if "transfer-encoding" in fields:
            if lengths:
                raise _Refused(
                    400, "bad_request", "Content-Length and Transfer-Encoding cannot come together"
                )
            if "chunked" in _tokens(fields["transfer-encoding"]):
                raise _Refused(
                    411, "length_required", "Send the body with a Content-Length (not chunked)"
                )
            raise _Refused(501, "not_implemented", "Transfer-Encoding is not supported")
        if not lengths:
            return 0
        if len(lengths) > 1 or not _DIGITS.fullmatch(lengths[0].encode("latin-1")):
            raise _Refused(400, "bad_request", "The Content-Length header is not valid")
        length = int(lengths[0])
        if length > self.limits.max_body_bytes:
            raise _Refused(413, "too_large", "Body too large")
        return length

    @staticmethod
    def _expectation(fields: dict[str, list[str]]) -> bool:
        expect = fields.get("expect")
        if expect is None:
            return False
        if _tokens(expect) != ["100-continue"]:
            raise _Refused(417, "bad_request", "Only 'Expect: 100-continue' is understood")
        return True

    def _read_body(self, head: _Head) -> bytes:
        if head.length and head.expect_continue and len(self.buffer) < head.length:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        deadline = self._now() + self.limits.body_timeout
        late = _Refused(408, "timeout", "The request's body took too long to arrive")
        while len(self.buffer) < head.length:
            self._fill(deadline, timed_out=late)
        body = bytes(self.buffer[: head.length])
        del self.buffer[: head.length]
        return body

    # ------------------------------------------------------------------ writing
    def _send(self, response: Response, *, head: bool = False, close: bool = False) -> None:
        headers = {"Content-Type": "application/json", **response.headers}
        reason = _reason(response.status)
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            "Server: bank-sync-bridge-service",
            f"Date: {email.utils.formatdate(self.app.clock.timestamp(), usegmt=True)}",
            *(f"{name}: {value}" for name, value in headers.items()),
            f"Content-Length: {len(response.body)}",
        ]
        if close:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._write(data if head else data + response.body)

    def _write(self, data: bytes) -> None:
        try:
            # Since Python 3.5 the timeout bounds the whole sendall, not each piece of it.
            self.sock.settimeout(self.limits.send_timeout)
            self.sock.sendall(data)
        except OSError:
            raise _Gone() from None

    def _refuse(self, refusal: _Refused) -> None:
        request_id = uuid.uuid4().hex
        self.app.logger.warning(
            "request refused",
            extra={
                "fields": {
                    "request_id": request_id,
                    "status": refusal.status,
                    "error": refusal.error,
                    "reason": refusal.message,
                    "remote": self.peer,
                }
            },
        )
        body = json.dumps(
            {"error": refusal.error, "message": refusal.message, "request_id": request_id},
            separators=(",", ":"),
        ).encode()
        try:
            self._send(Response(refusal.status, body, {"X-Request-Id": request_id}), close=True)
            self._linger()
        except _Gone:
            pass

    def _linger(self) -> None:
        """Half-close, then read (and drop) what the client still sends for a moment: closing
        with unread data would reset the connection and could lose the answer on its way."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = self._now() + LINGER_SECONDS
            drained = 0
            while drained < self.limits.max_body_bytes:
                remaining = deadline - self._now()
                if remaining <= 0:
                    return
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                drained += len(chunk)
        except OSError:
            return


def _tokens(values: list[str] | None) -> list[str]:
    """The comma-separated tokens of a header's values, lower case."""
    return [t.strip().lower() for v in values or [] for t in v.split(",") if t.strip()]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _HttpServer(TCPServer):
    """Accepts connections and serves each in its own thread, at most ``max_connections``."""

    allow_reuse_address = True
    # The default backlog (5) drops connections under a burst; the kernel caps this anyway.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: ServiceApp) -> None:
        self.app = app
        self._slots = threading.BoundedSemaphore(app.settings.max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, None)  # type: ignore[arg-type] - no handler class: see below

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, or answer 503 when all are busy."""
        opened_at = self.app.clock.monotonic()
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, str(client_address[0]), opened_at),
            name="bsb-connection",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:
            self._slots.release()
            raise

    def _serve_connection(self, sock: socket.socket, peer: str, opened_at: float) -> None:
        with self._open_lock:
            self._open.add(sock)
        try:
            _Connection(sock, peer, self.app).serve(opened_at)
        except Exception:
            self.app.logger.exception("connection failed", extra={"fields": {"remote": peer}})
        finally:
            with self._open_lock:
                self._open.discard(sock)
            self.shutdown_request(sock)
            self._slots.release()

    def _refuse_busy(self, sock: socket.socket) -> None:
        # Written by the accepting thread: a fresh socket's send buffer takes it at once.
        try:
            sock.settimeout(0.5)
            sock.sendall(_BUSY)
        except OSError:
            pass
        finally:
            self.shutdown_request(sock)
        self.app.logger.warning("connection refused: at capacity")

    def server_close(self) -> None:
        """Stop listening and cut the connections still open (their threads then end)."""
        super().server_close()
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class ServiceServer:
    """The HTTP server and the background loop (callback deliveries, SQLite checkpoints) of
    one :class:`ServiceApp`."""

    def __init__(self, app: ServiceApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.httpd = _HttpServer((host, port), app)
        if app.public_url is None:
            app.public_url = self.url
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the service."""
        host = self.httpd.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> ServiceServer:
        """Serve in background threads; returns self."""
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, name="bsb-http", daemon=True),
            threading.Thread(target=self._deliver_loop, name="bsb-delivery", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the delivery loop in a thread)."""
        delivery = threading.Thread(target=self._deliver_loop, name="bsb-delivery", daemon=True)
        delivery.start()
        self._threads = [delivery]
        try:
            self.httpd.serve_forever()
        finally:
            self._stop.set()
            self.app.delivery_wakeup.set()

    def stop(self) -> None:
        """Stop serving and wait for the threads to end."""
        self._stop.set()
        self.app.delivery_wakeup.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _deliver_loop(self) -> None:
        wakeup = self.app.delivery_wakeup
        clock = self.app.clock
        last_checkpoint = clock.monotonic()
        while not self._stop.is_set():
            if clock.monotonic() - last_checkpoint >= 1.0:
                last_checkpoint = clock.monotonic()
                try:
                    self.app.store.checkpoint()
                except Exception:
                    self.app.logger.exception("database checkpoint failed")
            # Woken at once by a new event; otherwise a periodic pass retries failed posts.
            wakeup.wait(timeout=1.0)
            wakeup.clear()
            if self._stop.is_set():
                return
            try:
                while self.app.deliver_due() and not self._stop.is_set():
                    pass
            except Exception:
                self.app.logger.exception("callback delivery pass failed")
