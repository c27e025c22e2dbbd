"""edged's resident memory: what it is, its high-water mark, and giving memory back.

After a burst of big frames (a flood of oversized messages, fuzzing) glibc keeps the freed
pages in its arenas: RSS stays hundreds of MB up while Python's own heap is back to ~15 MB.
The ctl thread reads RSS each tick (one read of ``/proc/self/statm``) and, when it is more than
``margin`` above the steady state, calls ``malloc_trim(0)``, which returns the arenas' free
pages to the kernel. The steady state is the lowest RSS seen since the last trim, so normal
growth (agents registering, a bigger table) moves it up only as slowly as it really happens.
ctypes is loaded at the first trim, never on a board that is not attacked.

File-backed pages count in RSS too: every page of the store LMDB reads stays mapped, so RSS
grew with all that was ever written (~0.5 KB per agent that came and went). When the
file-backed share (statm's ``shared``) is ``file_margin`` above its own steady state, the watch
calls ``release_files`` (the store's ``release_resident``: MADV_DONTNEED on its read-only
mapping; the pages stay in the page cache, a later read maps them again).
"""

from __future__ import annotations

import logging
import os
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
    ):
        """``margin`` 0 never trims; ``file_margin`` 0 (or no ``release_files``) never
        releases file pages. ``read_rss``, ``read_file_rss`` and ``trim`` replace /proc and
        libc (tests)."""
        self.margin = margin
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
        if not self.margin or rss <= self.steady + self.margin:
            return
        if not self._trim_loaded:
            self._trim, self._trim_loaded = _libc_malloc_trim(), True
        if self._trim is None:
            return
        self._trim(0)
        self._release_files()  # whatever the file-backed share is now: it is part of RSS too
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
            "rss_file_bytes": self.file_rss,
            "file_margin_bytes": self.file_margin,
            "file_releases": self.file_releases,
            "file_released_bytes": self.file_released_bytes,
        }
