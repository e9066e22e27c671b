"""The adjustable clock that the emulators and the clients share."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from bank_sync_bridge.testing import AdjustableClock

START = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def test_frozen_clock_moves_only_when_told() -> None:
    clock = AdjustableClock(START, frozen=True)
    time.sleep(0.01)
    assert clock() == START
    assert clock.advance(hours=2) == START + timedelta(hours=2)
    clock.sleep(30)
    assert clock.now() == START + timedelta(hours=2, seconds=30)
    assert clock.set(START) == START


def test_running_clock_follows_real_time_plus_offset() -> None:
    clock = AdjustableClock(START)
    clock.advance(timedelta(days=1))
    now = clock.now()
    assert now.tzinfo is not None
    assert START + timedelta(days=1) <= now < START + timedelta(days=1, seconds=5)
    frozen_at = clock.freeze()
    assert clock.now() == frozen_at


def test_clock_refuses_naive_datetimes_and_going_back() -> None:
    with pytest.raises(ValueError):
        AdjustableClock(datetime(2025, 1, 1))  # a naive datetime, refused
    with pytest.raises(ValueError):
        AdjustableClock(START).advance(-1)


def test_monotonic_seconds_move_with_advances_and_never_back() -> None:
    clock = AdjustableClock(START, frozen=True)
    first = clock.monotonic()
    time.sleep(0.01)
    assert clock.monotonic() == first  # frozen
    clock.advance(90)
    assert clock.monotonic() == first + 90
    clock.set(START - timedelta(days=1))  # the wall clock jumps back; intervals do not
    assert clock.monotonic() == first + 90
