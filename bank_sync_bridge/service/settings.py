"""The service's tunable limits, in one frozen object every part reads.

The command line fills it from its options (``python -m bank_sync_bridge.service --help``);
tests build their own, with short timeouts and small limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..signing import DEFAULT_TOLERANCE


@dataclass(frozen=True)
class ServiceSettings:
    """Tunable limits of the service (defaults suit one operator on one machine)."""

    #: Seconds a signed request is acceptable (and its nonce remembered).
    replay_window: float = DEFAULT_TOLERANCE
    #: Per-tenant average calls per second to the API, and the burst allowed.
    rate_per_second: float = 10.0
    burst: float = 60.0
    #: All tenants together (None: no global limit), to stay under the aggregator's quota.
    global_rate_per_second: float | None = None
    global_burst: float = 100.0
    #: Failed authentications allowed per client id and per source address: a burst, then
    #: ``auth_failure_rate`` per second; beyond, 429 before any database read, decryption or
    #: HMAC. A client id out of budget still passes from an address it signed from correctly.
    auth_failure_burst: float = 20.0
    auth_failure_rate: float = 0.2
    #: Reverse proxies in front of the service that append the caller's address to
    #: X-Forwarded-For; with 0 (the default) the header, which anyone can write, is ignored.
    trusted_proxies: int = 0
    #: Largest request body accepted (webhooks included); larger ones get 413.
    max_body_bytes: int = 1_000_000
    #: Largest request line and headers together, and most header lines (431 beyond).
    max_header_bytes: int = 16_384
    max_headers: int = 100
    #: Seconds a client has for a request's line and headers (from the connection's opening,
    #: or from the first byte of a later request), then for its body: a slow client is cut off
    #: (408) rather than holding a thread (see :mod:`.server`).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    #: Seconds a kept-alive connection may stay idle between requests, and to send an answer.
    keepalive_timeout: float = 15.0
    send_timeout: float = 30.0
    #: Connections served at once, one thread each; one more gets 503 at once.
    max_connections: int = 64
    #: Callback deliveries: attempts before giving up (events stay pollable), and timeout.
    delivery_max_attempts: int = 8
    delivery_timeout: float = 5.0
    #: Seconds the aggregator configuration is cached (the CLI may change it meanwhile).
    config_ttl: float = 5.0
    #: The URL browsers reach the service at (the sandbox's hosted page lives there); the
    #: server's own address when not set.
    public_url: str | None = None
    #: Tests and benchmarks on one machine only: tenants' callback URLs may then lead to the
    #: loopback (127.0.0.0/8, ::1), and use plain http there. Every other address that is not
    #: public stays refused, and so does plain http anywhere else.
    test_mode: bool = False


__all__ = ["ServiceSettings"]
