"""The real ``edge-bridge`` process: serves devices, writes safe values and exits 0 on
SIGTERM; 2 for a profile with mistakes (all listed), 3 when one is already running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged

from ..support import wait_for
from .test_modbus_e2e import bridge_cfg, latest

pytestmark = pytest.mark.integration


def _spawn(toml: Path, run_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from firmware_bridge import main; main()",
            "--config",
            str(toml),
            "--run-dir",
            str(run_dir),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def test_sigterm_writes_safe_values_and_exits_0(
    device_edged: Edged, plc: Any, write_file: Any, run_dir: Path, tmp_path: Path
) -> None:
    cfg = bridge_cfg(write_file, run_dir, plc.port)
    plc.set_bits(1, 0, [True])
    plc.set_registers(1, 3, [55])
    proc = _spawn(Path(cfg.source), run_dir)
    try:
        wait_for(
            lambda: latest(device_edged, "plc-1").get("pump") == 1.0,
            timeout=20,
            what="the bridge's readings in edged",
        )
        second = _spawn(Path(cfg.source), run_dir)
        _, err2 = second.communicate(timeout=20)
        assert second.returncode == 3 and "already running" in err2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "safe values written (bridge shutdown)" in err
    assert plc.bits(1, 0)[0] is False and plc.registers(1, 3)[0] == 0


def test_a_profile_with_mistakes_exits_2_listing_them(write_file: Any, run_dir: Path) -> None:
    from .test_profile import BAD

    write_file("plc.yaml", BAD)
    toml = write_file(
        "b.toml",
        '[[link]]\nname = "n"\nkind = "modbus_tcp"\nport = 1\n'
        '[[device]]\nname = "d"\nlink = "n"\nprofile = "plc.yaml"\n',
    )
    proc = _spawn(toml, run_dir)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert err.count("plc.yaml:") >= 10 and "plc.yaml:4:48" in err


def test_a_bad_config_exits_2(write_file: Any, run_dir: Path) -> None:
    toml = write_file("b.toml", '[[link]]\nname = "n"\nkind = "profibus"\n')
    proc = _spawn(toml, run_dir)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "kind 'profibus' is not one of" in err
