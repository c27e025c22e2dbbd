"""One injectable clock for every timing decision.

Monotonic nanoseconds (CLOCK_MONOTONIC, shared by every process on one board) drive the hot
path, rule windows, heartbeats and deadlines; wall time is used only at the edges (audit
records, logs, upstream). Tests pass a MockClock and move time by hand.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic_ns(self) -> int:
        """CLOCK_MONOTONIC in nanoseconds."""
        ...

    def wall_ms(self) -> int:
        """Unix time in milliseconds (for records that leave the board)."""
        ...


class SystemClock:
    """The real clocks. ``time.monotonic_ns`` is CLOCK_MONOTONIC on Linux."""

    monotonic_ns = staticmethod(time.monotonic_ns)

    @staticmethod
    def wall_ms() -> int:
        return time.time_ns() // 1_000_000


class MockClock:
    """Virtual time for tests: starts at ``start_ns`` and moves only when told."""

    def __init__(self, start_ns: int = 1_000_000_000, wall_start_ms: int = 1_700_000_000_000):
        self._ns = start_ns
        self._wall0 = wall_start_ms
        self._start = start_ns
        self._lock = threading.Lock()

    def monotonic_ns(self) -> int:
        return self._ns

    def wall_ms(self) -> int:
        return self._wall0 + (self._ns - self._start) // 1_000_000

    def advance(self, ns: int) -> int:
        """Move time forward by ``ns`` nanoseconds; returns the new time."""
        if ns < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._lock:
            self._ns += ns
            return self._ns


SYSTEM_CLOCK = SystemClock()
