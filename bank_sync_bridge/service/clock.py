"""The service's one clock.

Every part of the service reads time through the :class:`ServiceClock` given to
:class:`~.app.ServiceApp`: signature windows, nonce expiry, stored times, delivery retries
(wall-clock seconds, :meth:`~ServiceClock.timestamp`), rate-limit windows, caches and the
server's read deadlines (:meth:`~ServiceClock.monotonic`), and the providers it builds (aware
"now", calling the clock). Tests give a :class:`~bank_sync_bridge.testing.AdjustableClock` and
move time instead of sleeping.

The server's socket waits are real waits: with a frozen test clock each one is still bounded by
its timeout, only their sum is not.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol


class ServiceClock(Protocol):
    """What the service needs of a clock."""

    def __call__(self) -> datetime:
        """Now, aware, in UTC (the providers' clock)."""

    def timestamp(self) -> float:
        """Wall-clock POSIX seconds."""

    def monotonic(self) -> float:
        """Seconds that never go back, for intervals and deadlines."""


class SystemClock:
    """The machine's clocks."""

    def __call__(self) -> datetime:
        """Now, aware, in UTC."""
        return datetime.now(timezone.utc)

    def timestamp(self) -> float:
        """Wall-clock POSIX seconds (:func:`time.time`)."""
        return time.time()

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()


#: The default clock (it holds no state).
SYSTEM_CLOCK = SystemClock()

__all__ = ["SYSTEM_CLOCK", "ServiceClock", "SystemClock"]
