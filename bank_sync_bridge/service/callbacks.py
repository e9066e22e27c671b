"""Tenants' callback URLs: which the service accepts, and how it posts events to them.

A tenant registers the URL its events are pushed to (``PUT /v1/callback``); the service then
sends requests from inside the operator's network on the tenant's word. So a callback must never
lead to the operator's own machines or neighbours (server-side request forgery): loopback,
private networks, shared address space, link-local addresses (cloud metadata services answer at
169.254.169.254), multicast, unspecified, documentation and reserved ranges are refused, in IPv4
and IPv6 alike, IPv4 carried inside IPv6 (mapped, 6to4, NAT64) included.

The URL is checked twice:

- when registered (:func:`check_callback_url`): https only; no credentials in it; the host is a
  DNS name or a canonical IP literal (``2130706433``, ``0x7f.1``, ``0177.0.0.1`` or ``127.1``,
  which resolvers read as 127.0.0.1, are refused as such); the name resolves, and *every*
  address it resolves to is public;
- at each delivery (:func:`post_to_callback`): the name is resolved and every address checked
  again, then the connection is made to a checked address itself, while the ``Host`` header and
  the TLS certificate check still use the name. A name that was public when registered and
  points inside later (DNS rebinding) is refused, and nothing can change between the check and
  the connection, since no second resolution happens.

Redirects are never followed (a 3xx answer is a failed delivery) and no proxy from the
environment is used. The service's test mode (``ServiceSettings.test_mode``) additionally allows
loopback destinations, and plain http to them only, for tests and benchmarks on one machine.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Resolves a host name (and port) to IP address strings; :func:`system_resolver` by default.
Resolver = Callable[[str, int], Sequence[str]]

#: Longest status line read from a callback's answer (nothing else of the answer is read).
MAX_STATUS_LINE = 8192

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
# The last label of a DNS name is never numeric: anything else is an address in disguise.
_TOP_LABEL = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
_UNSAFE_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r\n")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Checked in this order after the loopback; ``is_global`` alone misses multicast.
_REFUSED_KINDS = (
    ("is_unspecified", "the unspecified address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_site_local", "a site-local address"),
    ("is_private", "a private address"),
    ("is_reserved", "a reserved address"),
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(Exception):
    """A callback URL the service will not call; ``message`` says why (safe to show)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CallbackTarget:
    """A checked callback URL and the public addresses it resolved to, in order."""

    scheme: str
    host: str
    port: int
    #: The path and query to request (``/path?query``).
    request_target: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the name (bracketed when IPv6) and a non-default port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_refusal(address: IPAddress, *, test_mode: bool = False) -> str | None:
    """Why the service must not connect to ``address`` (None when it may)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_refusal(embedded, test_mode=test_mode)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "an address with a network zone"
    if address.is_loopback:
        return None if test_mode else "a loopback address"
    for attribute, reason in _REFUSED_KINDS:
        if getattr(address, attribute, False):
            return reason
    # What is left and still not global: shared address space (100.64.0.0/10) and the like.
    return None if address.is_global else "an address that is not public"


def check_callback_url(url: str, *, resolver: Resolver, test_mode: bool = False) -> CallbackTarget:
    """Check ``url`` as a tenant's callback (see the module docstring) and resolve it.

    :raises CallbackRefused: with the reason, in words a tenant can act on.
    """
    if _UNSAFE_URL_CHARACTERS.search(url):
        raise CallbackRefused("The callback URL holds spaces, control characters or '\\'")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.netloc:
        raise CallbackRefused("The callback URL must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("The callback URL must not hold a user name or password")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise CallbackRefused("The callback URL's port is not valid") from None
    host = parts.hostname or ""
    literal = _ip_literal(host)
    if literal is None:
        name = host.rstrip(".")
        if not _HOSTNAME.fullmatch(host) or not _TOP_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
            raise CallbackRefused(
                "The callback URL's host must be a DNS name (letters in its last part) or an "
                "IP address written in the usual form"
            )
        addresses = _resolve(name, port, resolver)
    else:
        addresses = [literal]
    for address in addresses:
        reason = address_refusal(address, test_mode=test_mode)
        if reason:
            raise CallbackRefused(
                f"The callback URL leads to {reason} ({address}): the service only calls "
                "public addresses"
            )
    if scheme == "http" and not (test_mode and all(a.is_loopback for a in addresses)):
        raise CallbackRefused("The callback URL must be an https URL")
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CallbackTarget(
        scheme=scheme,
        host=literal.compressed if literal is not None else host.rstrip(".").lower(),
        port=port,
        request_target=request_target,
        addresses=tuple(a.compressed for a in addresses),
    )


def post_to_callback(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    resolver: Resolver,
    timeout: float,
    test_mode: bool = False,
    monotonic: Callable[[], float],
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to the callback ``url``, checked again now; returns the answer's status.

    The connection goes to an address just checked (never to a fresh resolution of the name);
    only the status line of the answer is read, and the whole exchange takes at most about
    ``timeout`` seconds as ``monotonic`` (the service clock's) counts them.

    :raises CallbackRefused: the URL is not acceptable (any more).
    :raises OSError: no connection, timeout, TLS failure, or an answer that is not HTTP.
    """
    target = check_callback_url(url, resolver=resolver, test_mode=test_mode)
    deadline = monotonic() + timeout
    sock = _connect(target, deadline, monotonic)
    try:
        if target.scheme == "https":
            context = tls_context or ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=target.host)
        lines = [
            f"POST {target.request_target} HTTP/1.1",
            f"Host: {target.host_header}",
            "User-Agent: bank-sync-bridge-service",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"Header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        sock.settimeout(_remaining(deadline, monotonic))
        sock.sendall(request)
        return _read_status(sock, deadline, monotonic)
    finally:
        sock.close()


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it leads."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    embedded = address.ipv4_mapped or address.sixtofour
    if embedded is None and address in _NAT64:
        embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return embedded


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(name: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        found = list(resolver(name, port))
    except (OSError, UnicodeError):
        found = []
    if not found:
        raise CallbackRefused(f"The callback URL's host {name!r} cannot be resolved")
    addresses: list[IPAddress] = []
    for text in found:
        address = _ip_literal(text)
        if address is None:
            raise CallbackRefused(f"The callback URL's host {name!r} resolves to {text!r}")
        addresses.append(address)
    return addresses


def _remaining(deadline: float, monotonic: Callable[[], float]) -> float:
    left = deadline - monotonic()
    if left <= 0:
        raise TimeoutError("The callback did not answer in time")
    return left


def _connect(
    target: CallbackTarget, deadline: float, monotonic: Callable[[], float]
) -> socket.socket:
    error: OSError | None = None
    for address in target.addresses:
        try:
            sock = socket.create_connection(
                (address, target.port), timeout=_remaining(deadline, monotonic)
            )
        except OSError as exc:
            error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError("No address to connect to")


def _read_status(sock: socket.socket, deadline: float, monotonic: Callable[[], float]) -> int:
    received = b""
    while b"\r\n" not in received:
        if len(received) > MAX_STATUS_LINE:
            raise OSError("The callback's answer is not HTTP")
        sock.settimeout(_remaining(deadline, monotonic))
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    match = _STATUS_LINE.match(received)
    if match is None:
        raise OSError("The callback's answer is not HTTP")
    return int(match.group(1))


__all__ = [
    "CallbackRefused",
    "CallbackTarget",
    "Resolver",
    "address_refusal",
    "check_callback_url",
    "post_to_callback",
    "system_resolver",
]
