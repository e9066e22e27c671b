"""HTTP plumbing that the local aggregator emulators share.

Each emulator is a real HTTP server on 127.0.0.1 served from a daemon thread; what differs is
only how it answers. :class:`EmulatorServer` owns the life cycle (bind, serve, stop, context
manager) and :class:`EmulatorHandler` the request handler settings both need.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class EmulatorHandler(BaseHTTPRequestHandler):
    """Keep-alive request handler that sends each answer in one TCP segment.

    Subclasses implement ``_serve`` (every method is routed to it) and get the emulator they
    serve as ``self.emulator``.
    """

    emulator: Any
    protocol_version = "HTTP/1.1"  # keep-alive, like the vendors behind their load balancers
    # Headers and body leave in one segment: without these, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every keep-alive answer, which multiplies over thousands of calls.
    disable_nagle_algorithm = True
    wbufsize = -1

    def _serve(self) -> None:
        """Read the request and write the emulator's answer."""
        raise NotImplementedError

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve a DELETE."""
        self._serve()


class EmulatorServer:
    """Life cycle of an emulator: ``start()``/``stop()`` or ``with Emulator() as emu:``.

    Subclasses set :attr:`handler_class`, call :meth:`_init_server` in ``__init__`` after
    setting ``host`` and ``port`` (0 = a free port, known once started).
    """

    handler_class: ClassVar[type[EmulatorHandler]]
    #: Name of the serving thread (shows in thread dumps of a hanging test).
    thread_name: ClassVar[str] = "emulator"
    host: str
    port: int

    def _init_server(self) -> None:
        #: Set on stop(): slow scripted answers wait on it and are cut short.
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        handler = type(self.handler_class.__name__, (self.handler_class,), {"emulator": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._stopping.clear()
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
        self._stopping.set()
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


__all__ = ["EmulatorHandler", "EmulatorServer"]
