"""One injectable clock for every timing decision.

Monotonic nanoseconds (CLOCK_MONOTONIC, shared by every process on one board) drive the hot
path, rule windows, heartbeats and deadlines; wall time is used only at the edges (audit
records, logs, upstream). Tests pass a MockClock and move time by hand.
"""

from __future__ import annotations

import random
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


class Backoff:
    """Exponential backoff with jitter, bounded: the n-th delay is drawn uniformly from
    ``[d/2, d]`` with ``d = min(max_s, initial_s * factor**n)`` (seconds). The lower half keeps
    retries from a fleet spread out without ever waiting longer than ``max_s``."""

    def __init__(
        self,
        initial_s: float = 0.1,
        max_s: float = 10.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self._rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt, in seconds (and count the attempt)."""
        d = min(self.max_s, self.initial_s * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0
