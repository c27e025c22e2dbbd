"""edge.clock.SteppedWallClock: wall time moved through its control file, monotonic untouched."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edge.clock import SteppedWallClock


def _set(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _offset_in(clock: SteppedWallClock, lo: int, hi: int) -> bool:
    """Whether the clock's wall time, once it has looked at its file again, is the system's
    plus ``lo``..``hi`` ms (the system's read just before and just after it, so a loaded
    machine's delay between the reads cannot make it fail)."""
    clock._next_check = 0  # noqa: SLF001 - skip the 50 ms between looks, not wait for it
    before = time.time_ns() // 1_000_000
    w = clock.wall_ms()
    after = time.time_ns() // 1_000_000
    return before + lo - 1 <= w <= after + hi + 1


def _settled(clock: SteppedWallClock) -> int:
    """The clock's wall time minus the system's (for the skew test's differences)."""
    clock._next_check = 0  # noqa: SLF001
    return clock.wall_ms() - time.time_ns() // 1_000_000


def test_no_file_is_the_system_clock(tmp_path: Path) -> None:
    c = SteppedWallClock(tmp_path / "none")
    assert _offset_in(c, 0, 0)
    assert abs(c.monotonic_ns() - time.monotonic_ns()) < 50_000_000


def test_steps_and_a_bad_file_keeps_the_last_good_setting(tmp_path: Path) -> None:
    f = tmp_path / "clock"
    c = SteppedWallClock(f)
    _set(f, "3600000 0\n")
    assert _offset_in(c, 3_600_000, 3_600_000)
    _set(f, "-5000\n")
    assert _offset_in(c, -5000, -5000)
    _set(f, "not a number\n")
    assert _offset_in(c, -5000, -5000)
    m0 = time.monotonic_ns()
    assert c.monotonic_ns() >= m0  # monotonic is never moved


def test_a_skew_runs_from_when_it_was_set(tmp_path: Path) -> None:
    f = tmp_path / "clock"
    c = SteppedWallClock(f)
    _set(f, "0 1000000\n")  # 100 % fast: wall time runs twice as fast from here
    base = _settled(c)
    real0 = time.time_ns()
    while time.time_ns() - real0 < 50_000_000:  # busy 50 ms of real time (a measurement, not a wait)
        pass
    ahead = _settled(c)
    assert ahead - base >= 25  # ~50 ms gained; half of it leaves room for a loaded machine
