"""Token buckets: per-tenant call limits, and the budget of failed authentications.

:class:`RateLimiter` protects the operator's aggregator quota: each tenant may make ``rate``
calls per second on average and ``burst`` at once. :class:`FailureLimiter` protects the service
itself: each failed authentication costs it a database read, a decryption and an HMAC, so
failures are counted per client id and per source address, and a caller out of budget is turned
away before any of that work. A refused call learns how many seconds to wait (the
``Retry-After`` of the 429). Buckets live in the process: behind a load balancer with N
processes, give each ``rate / N``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    """One bucket: ``capacity`` tokens, refilled at ``rate`` tokens per second."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; returns 0 when allowed, else the seconds until it would be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """Token buckets keyed by tenant, safe to use from many request threads."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("The rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str, cost: float = 1.0) -> int:
        """0 if ``key`` may make the call now, else whole seconds to wait (at least 1)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            wait = bucket.take(now, cost)
        return 0 if wait <= 0 else max(1, math.ceil(wait))


class FailureLimiter:
    """A budget of failures per key: ``burst`` at once, then ``rate`` more per second.

    :meth:`retry_after` only looks (it never spends), so callers who authenticate correctly
    are never counted; :meth:`failed` spends one. Keys come from callers (client ids,
    addresses), so at most ``max_keys`` are remembered, the least recently failed forgotten
    first (a forgotten key starts again with a full budget).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float],
        max_keys: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("The failure limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """0 if ``key`` may try now, else whole seconds until it may (at least 1)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0
            bucket.take(now, cost=0)  # refill only
            missing = 1 - bucket.tokens
        return 0 if missing <= 0 else max(1, math.ceil(missing / self.rate))

    def failed(self, key: str) -> None:
        """Spend one failure of ``key``'s budget."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            bucket.take(now, cost=0)
            # Failures racing past the check still count, within one more burst.
            bucket.tokens = max(bucket.tokens - 1, -self.burst)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
