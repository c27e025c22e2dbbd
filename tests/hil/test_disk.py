"""The data dir's disk-full fault: a real tmpfs under edged's data dir (as root), filled and
freed mid-run; where the rig may not mount, SKIP with the reason (and ``edge-hil check`` says
so first); the tmpfs is unmounted at teardown whatever happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hil
import hil._disk
from hil import load_scenario, run_scenario

LIB = Path(hil.__file__).parent / "scenarios"
SCENARIO = LIB / "disk_full_data_dir.yaml"


def _mounted(path: str) -> bool:
    return any(line.split()[1] == path for line in Path("/proc/mounts").read_text().splitlines())


@pytest.mark.integration
def test_disk_full_keeps_control_counts_drops_and_unmounts() -> None:
    sc = load_scenario(SCENARIO)
    res = run_scenario(sc)
    if res.verdict == "SKIP":
        pytest.skip(res.reason)  # no root, or mount refused here: the SKIP path is tested below
    assert res.verdict == "PASS", (res.reason, res.assertions)
    by = {a["id"]: a for a in res.assertions}
    assert by["commits-failed"]["measured"] >= 1 and by["drops-counted"]["measured"] >= 1
    assert by["committed-delivered"]["measured"] == 0 and by["commits-again"]["measured"] >= 1
    assert res.rig["teardown_problems"] == []
    assert not any("edge-" in ln and " tmpfs " in ln and "/data " in ln
                   for ln in Path("/proc/mounts").read_text().splitlines())


def test_without_mount_rights_the_run_is_skip_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hil._disk.os, "geteuid", lambda: 1000)  # the rig as an ordinary user
    res = run_scenario(load_scenario(SCENARIO))
    assert res.verdict == "SKIP" and "needs root" in res.reason and "disk-full" in res.reason, res.reason
    assert res.rig["teardown_problems"] == []
    assert "uid 1000" in hil._disk.mount_problem()  # what edge-hil check prints


def test_check_says_the_fault_needs_root(tmp_path: Path) -> None:
    code = ("import os, sys; os.geteuid = lambda: 1000; from hil import main; "
            f"main(['check', {str(SCENARIO)!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "note: fault disk-full (disk_full) needs root" in r.stderr and "SKIP" in r.stderr


def test_a_full_tmpfs_and_its_unmount(tmp_path: Path) -> None:
    if hil._disk.mount_problem():
        pytest.skip(hil._disk.mount_problem())
    disk = hil._disk.DataDisk(tmp_path / "data", 2)
    disk.mount()
    try:
        assert _mounted(str(tmp_path / "data"))
        n = disk.fill(64 << 10)
        assert 1 << 20 < n <= 2 << 20
        with pytest.raises(OSError, match="No space"):
            (tmp_path / "data" / "more").write_bytes(bytes(128 << 10))
        disk.free()
        (tmp_path / "data" / "more").write_bytes(bytes(128 << 10))
    finally:
        assert disk.close() == ""
    assert not _mounted(str(tmp_path / "data")) and disk.close() == ""
