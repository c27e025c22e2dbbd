"""Logging helpers: a per-kind rate limit so a flood of bad input cannot flood the log."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("edge")


class RateLimiter:
    """Token bucket per kind: at most ``rate_per_s`` events per second, burst ``burst``.

    ``allow(kind, now_ns)`` says whether to act (log, audit, answer); the caller counts the
    event either way. ``suppressed(kind)`` tells how many were held back since the last allow.
    """

    __slots__ = ("_rate", "_burst", "_buckets", "_suppressed")

    def __init__(self, rate_per_s: float = 5.0, burst: float = 10.0):
        self._rate = rate_per_s / 1e9
        self._burst = burst
        self._buckets: dict[str, list[float]] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, kind: str, now_ns: int) -> bool:
        b = self._buckets.get(kind)
        if b is None:
            b = self._buckets[kind] = [self._burst, float(now_ns)]
        tokens = min(self._burst, b[0] + (now_ns - b[1]) * self._rate)
        b[1] = float(now_ns)
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return True
        b[0] = tokens
        self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
        return False

    def take_suppressed(self, kind: str) -> int:
        return self._suppressed.pop(kind, 0)


def configure(
    level: str = "INFO", stream_handler: Callable[[], logging.Handler] | None = None
) -> None:
    handler = stream_handler() if stream_handler else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
