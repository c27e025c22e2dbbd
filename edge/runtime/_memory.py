"""edged's resident memory: what it is, its high-water mark, and giving memory back.

After a burst of big frames (a flood of oversized messages, fuzzing) glibc keeps the freed
pages in its arenas: RSS stays hundreds of MB up while Python's own heap is back to ~15 MB.
The ctl thread reads RSS each tick (one read of ``/proc/self/statm``) and, when it is more than
``margin`` above the steady state, calls ``malloc_trim(0)``, which returns the arenas' free
pages to the kernel. The steady state is the lowest RSS seen since the last trim, so normal
growth (agents registering, a bigger table) moves it up only as slowly as it really happens.
ctypes is loaded at the first trim, never on a board that is not attacked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edge.memory")

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size (bytes), from /proc/self/statm; 0 if unreadable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def rss_hwm_bytes() -> int:
    """The peak resident set size since start (VmHWM, bytes); 0 if unreadable."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes  # not ctypes.util: that brings subprocess and friends (~0.7 MB)

        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to do
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


class MemoryWatch:
    """RSS, its high-water mark, and malloc_trim when RSS runs ``margin`` bytes above the
    steady state. ``tick`` runs on one thread (edged's ctl thread)."""

    def __init__(
        self,
        margin: int,
        *,
        read_rss: Callable[[], int] = rss_bytes,
        trim: Callable[[int], int] | None = None,
    ):
        """``margin`` 0 never trims. ``read_rss`` and ``trim`` replace /proc and libc (tests)."""
        self.margin = margin
        self._read = read_rss
        self._trim = trim
        self._trim_loaded = trim is not None
        self.rss = read_rss()
        self.steady = self.rss
        self.trims = 0
        self.trimmed_bytes = 0

    def tick(self) -> None:
        rss = self.rss = self._read()
        if not rss:
            return
        if rss < self.steady:
            self.steady = rss
        if not self.margin or rss <= self.steady + self.margin:
            return
        if not self._trim_loaded:
            self._trim, self._trim_loaded = _libc_malloc_trim(), True
        if self._trim is None:
            return
        self._trim(0)
        after = self.rss = self._read()
        self.trims += 1
        self.trimmed_bytes += max(0, rss - after)
        log.info(
            "RSS %.1f MB was %.1f MB over its steady %.1f MB: malloc_trim gave back %.1f MB",
            rss / 1e6, (rss - self.steady) / 1e6, self.steady / 1e6, (rss - after) / 1e6,
        )
        # what is left after a trim is the new steady state (live data really grew)
        self.steady = after

    def snapshot(self) -> dict[str, Any]:
        return {
            "rss_bytes": self.rss,
            "rss_hwm_bytes": rss_hwm_bytes(),
            "steady_bytes": self.steady,
            "trim_margin_bytes": self.margin,
            "trims": self.trims,
            "trimmed_bytes": self.trimmed_bytes,
        }
