"""The service's HTTP server against slow, ambiguous and oversized requests, over raw sockets
on 127.0.0.1 (short limits so that every case ends in a second or two)."""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_service import Service, _wait_for, running_service

from bank_sync_bridge.service.app import ServiceSettings

HEADER_TIMEOUT = 1.5
MAX_CONNECTIONS = 4
LIMITS = ServiceSettings(
    rate_per_second=500,
    burst=500,
    header_timeout=HEADER_TIMEOUT,
    body_timeout=HEADER_TIMEOUT,
    keepalive_timeout=HEADER_TIMEOUT,
    max_connections=MAX_CONNECTIONS,
    max_header_bytes=2048,
    max_headers=20,
    max_body_bytes=1000,
)
HOST = b"Host: 127.0.0.1\r\n"


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Service]:
    with running_service(f"sqlite:///{tmp_path}/s.sqlite3", LIMITS) as running:
        yield running


def connect(service: Service, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.server.port), timeout=timeout)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (an error if it doesn't)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            raise AssertionError(
                f"the server kept the connection open after {received!r}"
            ) from None
        if not chunk:
            return received
        received += chunk


def exchange(service: Service, payload: bytes) -> bytes:
    """Send ``payload`` at once; what comes back until the server closes the connection."""
    with connect(service) as sock:
        sock.sendall(payload)
        return read_until_closed(sock)


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in ``data``, in order: status, headers (lower-case names), body."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        responses.append((int(status_line.split(" ")[1]), headers, rest[:length]))
        data = rest[length:]
    return responses


def handled_paths(service: Service) -> list[str]:
    """The paths the app answered, from its log (one line per request it handled)."""
    lines = [json.loads(line) for line in service.logs.getvalue().splitlines()]
    return [line["path"] for line in lines if line.get("msg") == "request"]


# ----------------------------------------------------------------------------- time
def test_headers_sent_one_byte_a_second_are_cut_off_within_the_timeout(strict: Service) -> None:
    request = b"GET /health HTTP/1.1\r\n" + HOST + b"X-Slow: " + b"x" * 40 + b"\r\n\r\n"
    answer = b""
    with connect(strict) as sock:
        started = time.monotonic()
        for byte in request:
            if time.monotonic() - started > HEADER_TIMEOUT + 3:
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            # One byte a second, unless the server speaks (or hangs up) first.
            if select.select([sock], [], [], 1.0)[0]:
                answer = read_until_closed(sock)
                break
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + 1.5
    assert "/health" not in handled_paths(strict)


def test_a_slow_body_is_cut_off_and_never_handled(strict: Service) -> None:
    with connect(strict) as sock:
        sock.sendall(b"POST /webhooks/sandbox HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n{")
        started = time.monotonic()
        answer = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert elapsed < HEADER_TIMEOUT + 1.5
    assert "/webhooks/sandbox" not in handled_paths(strict)


# ----------------------------------------------------------------------------- framing
SMUGGLED = b"GET /openapi.json HTTP/1.1\r\n" + HOST + b"\r\n"
CHUNK = b"%x\r\n" % len(SMUGGLED)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        # A proxy reading the chunked body sees one request; a server reading Content-Length
        # (or no body at all) would see the smuggled second one.
        (
            b"POST /webhooks/sandbox HTTP/1.1\r\n"
            + HOST
            + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(CHUNK)
            + CHUNK
            + SMUGGLED
            + b"\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /webhooks/sandbox HTTP/1.1\r\n"
            + HOST
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + SMUGGLED,
            411,
        ),
    ],
    ids=["content-length-and-chunked", "chunked-alone"],
)
def test_chunked_smuggling_is_refused_and_the_second_request_never_runs(
    strict: Service, payload: bytes, status: int
) -> None:
    answers = split_responses(exchange(strict, payload))
    assert [(code, headers.get("connection")) for code, headers, _ in answers] == [
        (status, "close")
    ]
    assert "/openapi.json" not in handled_paths(strict)
    assert "/webhooks/sandbox" not in handled_paths(strict)
    # The service itself is fine.
    assert requests.get(strict.url + "/health", timeout=5).status_code == 200


BODY = b"{}"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n" + BODY, 400),
        (b"Content-Length: 2\r\nContent-Length: 0\r\n\r\n" + BODY, 400),
        (b"Content-Length: 2, 2\r\n\r\n" + BODY, 400),
        (b"Content-Length: +2\r\n\r\n" + BODY, 400),
        (b"Content-Length: -1\r\n\r\n" + BODY, 400),
        (b"Content-Length: 0x2\r\n\r\n" + BODY, 400),
        (b"Content-Length: \r\n\r\n" + BODY, 400),
        (b"Content-Length : 2\r\n\r\n" + BODY, 400),
        (b"Transfer-Encoding: identity\r\n\r\n" + BODY, 501),
        (b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411),
        (b"Transfer-Encoding:\r\n chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 400),
        (b"Content-Length: 1001\r\n\r\n" + b"x" * 1001, 413),
        (b"X-Big: " + b"x" * 2100 + b"\r\n\r\n", 431),
        (b"".join(b"X-H%d: 1\r\n" % n for n in range(25)) + b"\r\n", 431),
        (b"Host: other\r\n\r\n", 400),
    ],
    ids=[
        "duplicate-length",
        "conflicting-lengths",
        "length-list",
        "signed-length",
        "negative-length",
        "hex-length",
        "empty-length",
        "space-before-colon",
        "unknown-coding",
        "chunked-last",
        "folded-transfer-encoding",
        "body-too-large",
        "headers-too-large",
        "too-many-headers",
        "two-hosts",
    ],
)
def test_ambiguous_or_oversized_requests_are_refused_and_the_connection_closed(
    strict: Service, payload: bytes, status: int
) -> None:
    request = b"POST /webhooks/sandbox HTTP/1.1\r\n" + HOST + payload
    follow_up = b"GET /openapi.json HTTP/1.1\r\n" + HOST + b"\r\n"
    answers = split_responses(exchange(strict, request + follow_up))
    assert [(code, headers.get("connection")) for code, headers, _ in answers] == [
        (status, "close")
    ]
    assert json.loads(answers[0][2])["message"]
    assert handled_paths(strict) == []


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET http://127.0.0.1/health HTTP/1.1\r\n" + HOST, 400),
        (b"GET /health HTTP/2.0\r\n" + HOST, 505),
        (b"GET /health HTTP/1.1\r\n", 400),  # no Host
        (b"TRACE /health HTTP/1.1\r\n" + HOST, 501),
        (b"GET  /health HTTP/1.1\r\n" + HOST, 400),
    ],
    ids=["absolute-form", "http2", "no-host", "trace", "double-space"],
)
def test_malformed_request_lines_are_refused(
    strict: Service, request_line: bytes, status: int
) -> None:
    answers = split_responses(exchange(strict, request_line + b"\r\n"))
    assert [code for code, _, _ in answers] == [status]
    assert handled_paths(strict) == []


def test_pipelined_requests_on_one_connection_are_each_answered(strict: Service) -> None:
    health = b"GET /health HTTP/1.1\r\n" + HOST + b"\r\n"
    last = b"GET /health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    answers = split_responses(exchange(strict, health + health + last))
    assert [code for code, _, _ in answers] == [200, 200, 200]
    assert json.loads(answers[0][2])["status"] == "ok"
    assert answers[-1][1]["connection"] == "close"


# ----------------------------------------------------------------------------- concurrency
def test_slow_connections_beyond_the_bound_get_503_and_take_no_thread(strict: Service) -> None:
    baseline = threading.active_count()
    slow = [connect(strict) for _ in range(MAX_CONNECTIONS)]
    extra: list[socket.socket] = []
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # and nothing more
        for _ in range(3):
            sock = connect(strict, timeout=HEADER_TIMEOUT / 2)
            extra.append(sock)
            busy = read_until_closed(sock)
            assert re.match(rb"HTTP/1.1 503 .*\r\nRetry-After: 1\r\n", busy, re.S), busy
        assert threading.active_count() <= baseline + MAX_CONNECTIONS
        # The slow ones run out of time, and once they are gone the service serves again.
        for sock in slow:
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
            sock.close()
        _wait_for(lambda: requests.get(strict.url + "/health", timeout=5).status_code == 200)
    finally:
        for sock in slow + extra:
            sock.close()
