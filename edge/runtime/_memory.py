"""edged's resident memory: what it is, its high-water mark, and giving memory back.

After a burst of big frames (a flood of oversized messages, fuzzing) glibc keeps the freed
pages in its arenas: RSS stays hundreds of MB up while Python's own heap is back to ~15 MB.
The ctl thread reads RSS each tick (one read of ``/proc/self/statm``) and, when it is more than
``margin`` above the steady state, calls ``malloc_trim(0)``, which returns the arenas' free
pages to the kernel. The steady state is the lowest RSS seen since the last trim, so normal
growth (agents registering, a bigger table) moves it up only as slowly as it really happens.
ctypes is loaded at the first trim, never on a board that is not attacked.

A burst that stays under ``margin`` (100,000 agents churned: ~8 MB) left its free memory
behind for good. So the watch also *settles*: once RSS is ``settle_margin`` above the lowest
level since the last settle and has not grown for ``quiet_s``, it trims once and releases the
store's pages, whatever the burst's size; the level after is the new reference, so a board
that really grows pays one trim per ``settle_margin`` of growth, not one per tick.

File-backed pages count in RSS too: every page of the store LMDB reads stays mapped, so RSS
grew with all that was ever written (~0.5 KB per agent that came and went). When the
file-backed share (statm's ``shared``) is ``file_margin`` above its own steady state, the watch
calls ``release_files`` (the store's ``release_resident``: MADV_DONTNEED on its read-only
mapping; the pages stay in the page cache, a later read maps them again).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edge.memory")

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _statm(field: int) -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[field]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def rss_bytes() -> int:
    """This process's resident set size (bytes), from /proc/self/statm; 0 if unreadable."""
    return _statm(1)


def rss_file_bytes() -> int:
    """The file-backed (and shared) part of the RSS (bytes, statm's ``shared``): libraries,
    and the store's mapped pages; 0 if unreadable."""
    return _statm(2)


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
    steady state; the store's mapped pages released when the file-backed share of RSS runs
    ``file_margin`` above its own. ``tick`` runs on one thread (edged's ctl thread)."""

    def __init__(
        self,
        margin: int,
        *,
        file_margin: int = 0,
        release_files: Callable[[], int] | None = None,
        read_rss: Callable[[], int] = rss_bytes,
        read_file_rss: Callable[[], int] = rss_file_bytes,
        trim: Callable[[int], int] | None = None,
        settle_margin: int = 0,
        quiet_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``margin`` 0 never trims; ``file_margin`` 0 (or no ``release_files``) never
        releases file pages; ``settle_margin`` 0 never settles. ``read_rss``,
        ``read_file_rss``, ``trim`` and ``clock`` replace /proc, libc and time (tests)."""
        self.margin = margin
        self.settle_margin = settle_margin
        self.quiet_s = quiet_s
        self._clock = clock
        self.file_margin = file_margin
        self.release_files = release_files
        self._read = read_rss
        self._read_file = read_file_rss
        self._trim = trim
        self._trim_loaded = trim is not None
        self.rss = read_rss()
        self.steady = self.rss
        self.file_rss = read_file_rss()
        self.file_steady = self.file_rss
        self.trims = 0
        self.trimmed_bytes = 0
        self.file_releases = 0
        self.file_released_bytes = 0
        self.settles = 0
        self._settled = self.rss
        """The lowest RSS since the last settle (the reference ``settle_margin`` is above)."""
        self._high = self.rss
        self._last_rise = clock()

    def _release_files(self) -> None:
        """Give the store's mapped pages back; the file-backed level after is its new steady."""
        if self.release_files is None:
            return
        before = self.file_rss
        try:
            self.release_files()
        except Exception:  # a store closing meanwhile: next time
            log.debug("releasing the store's mapped pages failed", exc_info=True)
            return
        after = self.file_rss = self._read_file()
        self.file_releases += 1
        self.file_released_bytes += max(0, before - after)
        self.file_steady = after

    def tick(self) -> None:
        if self.file_margin and self.release_files is not None:
            f = self.file_rss = self._read_file()
            if f and f < self.file_steady:
                self.file_steady = f
            elif f > self.file_steady + self.file_margin:
                self._release_files()
        rss = self.rss = self._read()
        if not rss:
            return
        if rss < self.steady:
            self.steady = rss
        if rss < self._settled:
            self._settled = rss
        if rss > self._high:
            self._high, self._last_rise = rss, self._clock()
        if self.margin and rss > self.steady + self.margin:
            after = self._give_back(rss, "over its steady")
            if after is not None:
                self.steady = after  # what is left is the new steady state (live data grew)
        elif (self.settle_margin and rss > self._settled + self.settle_margin
              and self._clock() - self._last_rise >= self.quiet_s):
            after = self._give_back(rss, "settled above its last level")
            if after is not None:
                self.settles += 1
                self._settled = self._high = after

    def _give_back(self, rss: int, why: str) -> int | None:
        """malloc_trim(0) and the store's pages released; the RSS after (None: no trim here)."""
        if not self._trim_loaded:
            self._trim, self._trim_loaded = _libc_malloc_trim(), True
        if self._trim is None:
            return None
        self._trim(0)
        self._release_files()  # whatever the file-backed share is now: it is part of RSS too
        after = self.rss = self._read()
        self.trims += 1
        self.trimmed_bytes += max(0, rss - after)
        log.info("RSS %.1f MB %s (steady %.1f MB): malloc_trim gave back %.1f MB",
                 rss / 1e6, why, self.steady / 1e6, (rss - after) / 1e6)
        return after

    def snapshot(self) -> dict[str, Any]:
        return {
            "rss_bytes": self.rss,
            "rss_hwm_bytes": rss_hwm_bytes(),
            "steady_bytes": self.steady,
            "trim_margin_bytes": self.margin,
            "trims": self.trims,
            "settles": self.settles,
            "settle_margin_bytes": self.settle_margin,
            "trimmed_bytes": self.trimmed_bytes,
            "rss_file_bytes": self.file_rss,
            "file_margin_bytes": self.file_margin,
            "file_releases": self.file_releases,
            "file_released_bytes": self.file_released_bytes,
        }
