"""Disk full: edged's data dir on a small tmpfs (``mount -t tmpfs -o size=...``, as root; skipped
with the reason when mounting is not permitted), filled up by another file while a load agent
and a probe run. edged must keep controlling (the probe served all along), count the failed
commits, never crash, and write again once space is freed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hil._disk import fill_until_full

from ..support import wait_for
from . import tools

pytestmark = pytest.mark.integration


def test_disk_full(mode: str, dirs: tuple[Path, Path], chaos_rules: Path, tmp_path: Path) -> None:
    full_s = tools.scaled(2.0, 30.0, mode)
    run, data = dirs
    data.mkdir()
    tools.need_root_mount("the disk-full attack")(data, "16m")
    edged = tools.EdgedProcess(run, data, chaos_rules, tmp_path / "edged.log",
                               agg_window_s=0.25, map_size=1 << 20, max_map_size=256 << 20)
    try:
        edged.start()
        with tools.Probe(run) as probe, tools.Load(run, period_s=0.0005):
            fill_until_full(data / "filler", leave_bytes=64 << 10)
            wait_for(lambda: edged.status()["store"]["disk_errors"] > 0, 60,
                     "commits to fail on the full disk")
            t_full = time.monotonic()
            mark = probe.mark()
            time.sleep(full_s)  # the disk stays full this long: the attack's duration
            served_full = probe.mark() - mark
            during = edged.status()["store"]
            os.unlink(data / "filler")
            t_freed = time.monotonic()
            committed = during["committed_records"]
            wait_for(lambda: edged.status()["store"]["committed_records"] > committed + 10, 60,
                     "commits to succeed again")
            resumed_s = time.monotonic() - t_freed
        store = edged.status()["store"]
        counters = edged.counters()
        code = edged.stop()
    finally:
        if edged.alive():
            edged.kill9()
        subprocess.run(["umount", "-l", str(data)], check=False)
    tools.report("disk_full", mode, full_for_s=round(time.monotonic() - t_full, 1),
                 disk_errors=store["disk_errors"], dropped_io_error=store["dropped_io_error"],
                 probe_served_while_full=served_full, resumed_after_free_s=round(resumed_s, 2),
                 handler_errors=counters["handler_errors"], exit_code=code)
    assert served_full > 0, "control stalled while the disk was full"
    assert counters["handler_errors"] == 0 and code == 0, edged.tail()
