"""Serving :class:`~.app.ServiceApp` with the standard library's threading HTTP server.

No web framework: the service installs next to nothing and never touches the libraries Odoo
pins. :class:`ServiceServer` runs the HTTP server and the callback delivery loop in threads,
for the command line and for tests (``port=0`` picks a free port).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .app import Request, Response, ServiceApp


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, lets the app answer it, writes the answer (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment, at once: without these, Nagle's algorithm and
    # the client's delayed ACK add 40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: _HttpServer
    server_version = "bank-sync-bridge-service"
    sys_version = ""

    def _serve(self) -> None:
        app = self.server.app
        length_header = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > app.settings.max_body_bytes:
            self._write(Response(413, b'{"error":"too_large","message":"Body too large"}'))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            target=self.path,
            headers=dict(self.headers.items()),
            body=body,
            remote=self.client_address[0],
        )
        self._write(app.handle(request))

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        headers = {"Content-Type": "application/json", **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the app writes one structured line per request instead."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog (5) drops connections under a burst; the kernel caps this anyway.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: ServiceApp) -> None:
        self.app = app
        super().__init__(address, _Handler)


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
        last_checkpoint = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_checkpoint >= 1.0:
                last_checkpoint = time.monotonic()
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
