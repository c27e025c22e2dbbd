"""Logging helpers: a per-kind rate limit so a flood of bad input cannot flood the log, and a
queued configuration so the loop thread never writes to stderr itself."""

from __future__ import annotations

import logging
import logging.handlers
import queue
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


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to a bounded queue; when it is full the record is dropped and counted,
    never waited for (the caller may be the control loop)."""

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Listener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        # the queue may be full of records still being written: wait for room (bounded)
        try:
            self.queue.put(self._sentinel, timeout=5.0)  # type: ignore[attr-defined]
        except queue.Full:
            pass


def dropped_records() -> int:
    """Log records dropped because the queue was full (0 when logging is not queued)."""
    return sum(h.dropped for h in logger.handlers if isinstance(h, DroppingQueueHandler))


def configure(
    level: str = "INFO",
    stream_handler: Callable[[], logging.Handler] | None = None,
    *,
    queued: bool = False,
    queue_size: int = 10_000,
) -> Callable[[], None]:
    """Log ``edge.*`` at ``level`` to stderr (or ``stream_handler()``). With ``queued`` the
    calling threads only enqueue (at most ``queue_size`` records waiting, then dropped and
    counted) and a listener thread does the writing, so a slow or blocked stderr (a full pipe,
    a stalled journal) never stalls the loop. Returns a function that flushes and stops the
    listener (a no-op when not queued)."""
    handler = stream_handler() if stream_handler else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edge")
    root.setLevel(level.upper())
    root.propagate = False
    if not queued:
        root.handlers[:] = [handler]
        return lambda: None
    q: queue.Queue[logging.LogRecord] = queue.Queue(queue_size)
    listener = _Listener(q, handler)
    root.handlers[:] = [DroppingQueueHandler(q)]
    listener.start()

    def stop() -> None:
        # QueueListener.stop() is not idempotent and joins without a bound; a writer stuck on
        # a dead pipe must not hold the process at exit (the thread is a daemon)
        t = listener._thread  # noqa: SLF001
        if t is not None:
            listener.enqueue_sentinel()
            t.join(5.0)
            listener._thread = None  # noqa: SLF001
        root.handlers[:] = [handler]

    return stop
