"""Clocks for the alarm engine. Pure code never reads time: it receives ``now`` (µs UTC) from one of these.

:class:`MonotonicClock` is the production clock: wall time anchored once at start-up and advanced by the
monotonic clock, so an NTP step or a DST change while running neither fires nor cancels a timer
(scenario 21). After a restart it re-anchors; persisted absolute deadlines (shelve expiry, on-delay
``pending_since``) are then compared with the new wall time. :class:`FakeClock` is for tests.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


class Clock(Protocol):
    def now_us(self) -> int:
        """Current time, µs since the Unix epoch (UTC)."""
        ...


class MonotonicClock:
    __slots__ = ("_mono0", "_wall0")

    def __init__(self) -> None:
        self._wall0 = time.time_ns() // 1000
        self._mono0 = time.monotonic_ns() // 1000

    def now_us(self) -> int:
        return self._wall0 + (time.monotonic_ns() // 1000 - self._mono0)


class FakeClock:
    """Manually advanced clock."""

    __slots__ = ("t",)

    def __init__(self, start_us: int = 1_767_225_600_000_000) -> None:  # 2026-01-01T00:00:00Z
        self.t = start_us

    def now_us(self) -> int:
        return self.t

    def advance(self, seconds: float) -> int:
        self.t += round(seconds * 1_000_000)
        return self.t
