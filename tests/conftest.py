"""Shared fixtures: a scriptable real HTTP server on 127.0.0.1 and a free closed port."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class ScriptedResponse:
    """One answer the server will give; ``truncate_to`` sends only that many body bytes
    (with the full ``Content-Length``) then closes the connection; ``delay`` waits before
    answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate_to: int | None = None

    def payload(self) -> bytes:
        """The body as bytes (dicts and lists are sent as JSON)."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class ReceivedRequest:
    """What the server saw, for assertions."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (read timeout tests) is expected, not an error to print."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ScriptedServer:
    """A real ``ThreadingHTTPServer`` answering from a queue of :class:`ScriptedResponse`.

    When the queue is empty it answers ``200 {"ok": true}``.
    """

    def __init__(self) -> None:
        self.script: list[ScriptedResponse] = []
        self.received: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output clean."""

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.received.append(
                        ReceivedRequest(self.command, self.path, dict(self.headers), body)
                    )
                    answer = server.script.pop(0) if server.script else None
                answer = answer or ScriptedResponse(body={"ok": True})
                if answer.delay:
                    time.sleep(answer.delay)
                payload = answer.payload()
                self.send_response(answer.status)
                headers = {"Content-Type": "application/json", **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                if answer.truncate_to is not None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                    payload = payload[: answer.truncate_to]
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps teardown fast (shutdown waits for one poll).
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL of the server."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, *responses: ScriptedResponse) -> None:
        """Queue answers, served in order."""
        with self._lock:
            self.script.extend(responses)


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A scriptable HTTP server on 127.0.0.1, stopped after the test."""
    server = ScriptedServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
