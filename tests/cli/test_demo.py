"""edgectl demo, run as ``make demo | cat`` runs it: no terminal, plain lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli._sim import Rig
from edge.errors import RuntimeStateError

pytestmark = pytest.mark.integration


def edgectl(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("edgectl")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from edge.cli import main; main()", *args]


def _counts(output: str) -> tuple[int, int]:
    m = re.search(r"instructions issued: (\d+)\s+acknowledged: (\d+)", output)
    assert m, output
    return int(m[1]), int(m[2])


def test_plain_demo_fires_acks_and_exits_zero() -> None:
    r = subprocess.run(edgectl("demo", "--duration", "5"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    issued, acked = _counts(r.stdout)
    assert issued > 0 and acked > 0
    # the plain view names each firing as it happens, and the summary has the stage table
    # with the sample that fired it
    assert re.search(r"instruction #\d+ (throttle|restart_agent|alert) \(\w+ = [-\d.e+]+\) -> ",
                     r.stdout), r.stdout
    assert "SLA attainment" in r.stdout and "latency per stage" in r.stdout
    # every stage is defined where it is shown; rule_001 (10 s hold) shows up though it
    # cannot fire in 5 s; no p99.9 from a handful of samples
    assert "ack: handler done -> edged received the Ack" in " ".join(r.stdout.split())
    assert "rule_001 0 (did not fire in 5 s)" in " ".join(r.stdout.split())
    assert re.search(r"rule_001 +0 +0 +0 +0 +0 +did not fire", r.stdout), r.stdout
    e2e = next(x for x in r.stdout.splitlines() if x.strip().startswith("e2e "))
    n = int(e2e.split()[1])
    if n < 1000:
        assert len(e2e.split()) == 2 + 3 + 1 - (n < 100) - (n < 10), e2e  # blanks, not numbers


def test_upstream_demo_pushes_through_the_fleet_path_and_aggregates_arrive() -> None:
    """make demo DEMO_UPSTREAM=1: a local nats-server, edge-sync, a signed table through
    EDGE_RULES activated on the board, aggregates in EDGE_AGG in order, the device status."""
    r = subprocess.run(edgectl("demo", "--duration", "5"), capture_output=True, text=True,
                       timeout=120, env={**os.environ, "DEMO_UPSTREAM": "1"})
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "Traceback" not in out + r.stderr
    m = re.search(r"activated\s+rule\s+table\s+version\s+(\d+)\s+from\s+upstream", out)
    assert m, out
    n = re.search(r"(\d+) aggregates of demo-board in stream EDGE_AGG \(Edge-Seq 1\.\.(\d+), "
                  r"in order, no\s+duplicates\)", out)
    assert n and int(n[1]) >= 1 and n[1] == n[2], out
    assert re.search(rf"EDGE_DEVICES/demo-board: link up, rule table v{m[1]}", out), out
    # aggregates are shown as they arrive, not only tallied at the end
    assert re.search(r"upstream: aggregate Edge-Seq 1 arrived in EDGE_AGG", out), out
    issued, acked = _counts(out)
    assert issued > 0 and acked > 0


def test_live_view_without_a_terminal_still_summarises() -> None:
    r = subprocess.run(edgectl("demo", "--duration", "3", "--live"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    issued, acked = _counts(r.stdout)
    assert issued > 0 and acked > 0


def test_missing_rule_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    r = subprocess.run(edgectl("demo", "--duration", "1", "--rules", str(missing)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert str(missing) in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_edged_that_cannot_start_is_reported_with_its_reason(tmp_path: Path) -> None:
    """The rig behind demo and bench: edged exits at once (its rule file is gone), and the
    error carries edged's exit code and its own words; nothing is left behind."""
    with Rig() as rig, pytest.raises(RuntimeStateError) as info:
        rig.start_edged(tmp_path / "gone.yaml", timeout=20.0)
    text = str(info.value)
    assert "exited with code" in text and "gone.yaml" in text
    assert not rig.root.exists()


def test_devices_demo_confirms_instructions_on_the_plc_and_the_ecu() -> None:
    """make demo DEMO_DEVICES=1: the bridge with a Modbus PLC, a CAN ECU (opendbc DBC) and the
    MCU firmware on MicroPython; rules fire on their points and the devices confirm."""
    r = subprocess.run(edgectl("demo", "--duration", "6"), capture_output=True, text=True,
                       timeout=120, env={**os.environ, "DEMO_DEVICES": "1"})
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "Traceback" not in out + r.stderr
    for device in ("plc-tank", "ecu-drive", "mcu-fan"):
        m = re.search(rf"{device}: [\d,]+ readings, (\d+)\s+instructions, (\d+) confirmed", out)
        assert m and int(m[1]) >= 1 and int(m[2]) >= 1, out
    trigger = r"\(\w+ = [-\d.e+]+\)"  # the sample that fired it
    for action, device, rule in (("set_param", "plc-tank", "tank_hot"),
                                 ("set_speed", "ecu-drive", "overspeed"),
                                 ("throttle", "mcu-fan", "load_high")):
        assert re.search(rf"instruction #\d+ {action} {trigger} -> {device} \({rule}\)", out), out
