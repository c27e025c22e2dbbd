"""The systemd units: every one passes ``systemd-analyze verify`` with no diagnostic at all,
every service scores exposure <= 2.0 ("OK") offline, and a typo or a weakened unit fails
the check with a message naming the line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "cross/systemd").iterdir())
CHECK = [sys.executable, str(ROOT / "cross/units.py")]

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing: run `apt-get install -y systemd` (make -C cross tools)",
)


def _check(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHECK, *map(str, units)], capture_output=True, text=True, timeout=120)



def test_every_unit_verifies_and_every_service_is_ok() -> None:
    assert {u.name for u in UNITS} == {
        "edge.target", "edged.service", "edge-sync.service", "edge-bridge.service"
    }
    proc = _check(*UNITS)
    assert proc.returncode == 0, proc.stderr
    scores = dict(re.findall(r"^(\S+\.service): verify ok, exposure ([0-9.]+) OK$", proc.stdout, re.M))
    assert set(scores) == {"edged.service", "edge-sync.service", "edge-bridge.service"}
    assert all(float(s) <= 2.0 for s in scores.values()), scores


@pytest.mark.parametrize("name", ["edged.service", "edge-sync.service", "edge-bridge.service"])
def test_units_carry_the_contract(name: str) -> None:
    text = (ROOT / "cross/systemd" / name).read_text(encoding="utf-8")
    for line in (
        "Type=notify", "NotifyAccess=main", "Restart=on-failure", "StartLimitBurst=5",
        "User=edge", "Group=edge", "RuntimeDirectory=edge", "RuntimeDirectoryMode=0750",
        "StateDirectory=edge", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
        "NoNewPrivileges=yes", "PartOf=edge.target",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_CAN",
    ):
        assert line in text, f"{name} lacks {line}"
    conf = "bridge.toml" if name == "edge-bridge.service" else "edge.toml"  # the bridge's own file
    assert f" --config /etc/edge/{conf}\n" in text
    assert (ROOT / "cross/debian" / conf).exists()
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M)
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M)
    assert caps is not None
    assert caps.group(1) == ("CAP_SYS_NICE" if name == "edged.service" else "")


def test_only_the_bridge_reaches_serial_ports() -> None:
    bridge = (ROOT / "cross/systemd/edge-bridge.service").read_text(encoding="utf-8")
    assert "DeviceAllow=char-ttyS rw" in bridge and "DevicePolicy=closed" in bridge
    for name in ("edged.service", "edge-sync.service"):
        assert "PrivateDevices=yes" in (ROOT / "cross/systemd" / name).read_text(encoding="utf-8")


def test_a_typo_fails_with_the_line(tmp_path: Path) -> None:
    unit = tmp_path / "edged.service"
    text = (ROOT / "cross/systemd/edged.service").read_text(encoding="utf-8")
    unit.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    proc = _check(unit)
    assert proc.returncode == 1
    assert re.search(r"edged\.service:\d+: Unknown key 'ProtectSystm' in section \[Service\]", proc.stderr)


def test_a_weakened_service_fails_the_exposure_goal(tmp_path: Path) -> None:
    unit = tmp_path / "edge-sync.service"
    text = (ROOT / "cross/systemd/edge-sync.service").read_text(encoding="utf-8")
    for key in ("ProtectSystem", "ProtectHome", "PrivateDevices", "SystemCallFilter", "PrivateTmp"):
        text = re.sub(rf"^{key}=.*\n", "", text, flags=re.M)
    unit.write_text(text)
    proc = _check(unit)
    assert proc.returncode == 1
    assert re.search(r"exposure [0-9.]+ \S+ > 2\.0; worst settings: ", proc.stderr)


def test_a_missing_unit_file_is_named(tmp_path: Path) -> None:
    proc = _check(tmp_path / "nope.service")
    assert proc.returncode == 1 and "no such unit file" in proc.stderr
