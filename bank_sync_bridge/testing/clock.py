"""An adjustable clock shared by the emulators, the tests and the benchmarks.

Emulators judge token lifetimes, consent expiry, rate-limit windows and ``updated_at`` stamps
against this clock instead of the wall clock, so that a test can jump two hours ahead in a
millisecond. An instance is callable and returns an aware UTC datetime, which makes it a valid
:data:`bank_sync_bridge.providers.base.Clock` for the clients as well: give the same object to
an emulator and to the client under test and both agree on "now".

Two modes:

- *running* (default): time flows with the real clock, shifted by whatever was advanced;
- *frozen*: time stands still at the start instant and moves only through :meth:`advance`
  or :meth:`set`, which makes results reproducible (benchmarks, golden files).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone


class AdjustableClock:
    """Thread-safe clock that tests can move forward (or set) at will.

    The emulators' HTTP threads read it while the test thread moves it, hence the lock.
    Time never goes backwards through :meth:`advance`; :meth:`set` may, on purpose, for
    tests of clock skew.
    """

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("AdjustableClock needs an aware datetime (e.g. tzinfo=timezone.utc)")
        self._lock = threading.Lock()
        self._frozen = frozen
        # In running mode, "now" is the monotonic time elapsed since _anchor_mono added to
        # _anchor: immune to the host's wall clock being adjusted during a test.
        self._anchor = (start or datetime.now(timezone.utc)).astimezone(timezone.utc)
        self._anchor_mono = time.monotonic()
        # For monotonic(): the real monotonic time it stands still at while frozen, and every
        # advance so far.
        self._frozen_mono = self._anchor_mono
        self._advanced = 0.0

    @property
    def frozen(self) -> bool:
        """True when time moves only through :meth:`advance` and :meth:`set`."""
        return self._frozen

    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        with self._lock:
            return self._now_locked()

    def __call__(self) -> datetime:
        """Same as :meth:`now`, so the clock can be passed wherever a ``Clock`` is expected."""
        return self.now()

    def timestamp(self) -> float:
        """The current instant as POSIX seconds (for rate-limit windows and signatures)."""
        return self.now().timestamp()

    def monotonic(self) -> float:
        """Seconds for intervals and deadlines (what :func:`time.monotonic` is to the wall
        clock): real monotonic time while running, plus everything advanced. It never goes
        back, :meth:`set` included."""
        with self._lock:
            real = self._frozen_mono if self._frozen else time.monotonic()
            return real + self._advanced

    def advance(self, delta: timedelta | float = 0.0, /, **kwargs: float) -> datetime:
        """Move time forward by ``delta`` (a timedelta or seconds) and/or ``timedelta`` keyword
        arguments (``advance(hours=2)``); returns the new "now"."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        step += timedelta(**kwargs)
        if step < timedelta(0):
            raise ValueError("AdjustableClock.advance() cannot go back in time; use set()")
        with self._lock:
            self._anchor += step
            self._advanced += step.total_seconds()
            return self._now_locked()

    def set(self, instant: datetime) -> datetime:
        """Jump to ``instant`` (aware); time keeps running from there unless frozen."""
        if instant.tzinfo is None:
            raise ValueError("AdjustableClock.set() needs an aware datetime")
        with self._lock:
            self._anchor = instant.astimezone(timezone.utc)
            self._anchor_mono = time.monotonic()
            return self._now_locked()

    def freeze(self) -> datetime:
        """Stop time at the current instant; returns it."""
        with self._lock:
            self._anchor = self._now_locked()
            self._anchor_mono = self._frozen_mono = time.monotonic()
            self._frozen = True
            return self._anchor

    def unfreeze(self) -> datetime:
        """Let time run again from the current (frozen) instant; returns it."""
        with self._lock:
            self._anchor_mono = time.monotonic()
            self._frozen = False
            return self._anchor

    def sleep(self, seconds: float) -> None:
        """A ``sleep`` that advances this clock instead of waiting: inject it into clients
        whose backoff must be fast in tests yet still visible on the emulator's clock."""
        if seconds > 0:
            self.advance(seconds)

    def _now_locked(self) -> datetime:
        if self._frozen:
            return self._anchor
        return self._anchor + timedelta(seconds=time.monotonic() - self._anchor_mono)

    def __repr__(self) -> str:
        mode = "frozen" if self._frozen else "running"
        return f"AdjustableClock({self.now().isoformat()}, {mode})"


__all__ = ["AdjustableClock"]
