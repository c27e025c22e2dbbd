"""Fixtures for the bridge: profiles, a pymodbus server on loopback, edged with device rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_config
from edge.runtime import Edged

PLC_PROFILE = """\
kind: modbus
labels: {site: test}
poll_groups: {fast: 20ms}
points:
  - {name: tank_temp, unit: degC, scale: 0.1, min: -20, max: 120, poll: fast,
     area: holding_register, address: 0, type: int16}
  - {name: flow, unit: l/min, poll: fast, area: holding_register, address: 1, type: float32, order: CDAB}
  - {name: setpoint, unit: "%", min: 0, max: 100, poll: fast, area: holding_register, address: 3, type: uint16}
  - {name: pump, poll: fast, area: coil, address: 0}
  - {name: hb, poll: fast, area: holding_register, address: 10, type: uint16}
actions:
  set_param:
    params: {value: {min: 0, max: 100}}
    writes: [{point: setpoint, value: "{value}"}]
  stop_agent:
    writes: [{point: pump, value: 0}]
safe_state: [{point: pump, value: 0}, {point: setpoint, value: 0}]
heartbeat: {point: hb, period: 50ms}
"""

DEVICE_RULES = """\
- rule_id: tank_hot
  rule_content: tank_temp > 80
  action: set_param
  params: {value: 25}
  priority: 10
  sla_threshold: 500
  agents: ["plc-*"]
- rule_id: too_fast
  rule_content: rpm > 5000
  action: set_speed
  params: {speed: 30}
  priority: 10
  sla_threshold: 500
  agents: ["ecu-*"]
- rule_id: bad_param
  rule_content: flow > 1000
  action: set_param
  params: {value: 500}
  priority: 5
  sla_threshold: 500
  agents: ["plc-*"]
"""


@pytest.fixture
def device_rules(tmp_path: Path) -> Path:
    f = tmp_path / "device-rules.yaml"
    f.write_text(
        "version: 1\nactions: [set_speed]\nrules:\n"
        + "".join("  " + line + "\n" for line in DEVICE_RULES.splitlines())
    )
    return f


@pytest.fixture
def device_edged(run_dir: Path, tmp_path: Path, device_rules: Path) -> Iterator[Edged]:
    cfg = load_config(
        {
            "run_dir": run_dir,
            "data_dir": tmp_path / "data",
            "rules_file": device_rules,
            "metrics_addr": "",
            "heartbeat_ms": 100,
            "ack_timeout_ms": 2000,
            "stats_interval_ms": 200,
        },
        env={},
    )
    d = Edged(cfg).start()
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def plc() -> Iterator[Any]:
    from firmware_bridge.sim import ModbusSim

    with ModbusSim(units=(1, 2, 3), silent_units=(2,), exception_units=(3,)) as sim:
        yield sim


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write
