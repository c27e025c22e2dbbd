"""The MCU firmware on real MicroPython over a pty -> bridge (mcu link) -> edged -> rule ->
instruction -> the MCU's ack frame -> Ack; and the MCU going safe when edged is lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged
from firmware_bridge import Bridge, load_bridge_config
from firmware_bridge.mcu_link import SimulatedMcu, SimulatorError

from ..support import wait_for
from .test_modbus_e2e import latest

pytestmark = pytest.mark.integration

FAN, POT = 17, 0
MCU_PROFILE = """\
kind: mcu
points:
  - {name: pot, unit: V, min: 0, max: 3.3}
  - {name: temp_c, unit: degC}
  - {name: button}
  - {name: relay}
  - {name: fan, unit: ratio}
actions:
  throttle:
    params: {rate: {min: 0, max: 1}}
    command: {name: set_output, params: {fan: "{rate}"}}
  safe_state:
    command: {name: safe_state}
"""
RULES = """\
- rule_id: pot_high
  rule_content: pot > 3.0
  action: throttle
  params: {rate: 0.5}
  priority: 10
  sla_threshold: 500
  agents: ["mcu-*"]
"""


@pytest.fixture
def board() -> Any:
    try:
        sim = SimulatedMcu()
    except SimulatorError as e:
        pytest.fail(f"{e} (make test installs it)", pytrace=False)
    with sim:
        yield sim


def test_mcu_reading_rule_command_ack_and_safe_on_edged_loss(
    board: SimulatedMcu, write_file: Any, run_dir: Path, tmp_path: Path
) -> None:

    write_file("mcu.yaml", MCU_PROFILE)
    rules = write_file("mcu-rules.yaml", RULES)
    cfg = _bridge_cfg(write_file, board, "mcu-1", run_dir)
    edged = _edged(run_dir, tmp_path, rules)
    try:
        with Bridge(cfg) as bridge:
            stop = threading.Event()
            t = threading.Thread(target=bridge.run, args=(stop,))
            t.start()
            try:
                dev = bridge.devices[0]
                wait_for(
                    lambda: dev.agent.connected and dev.handle.state == "run",
                    timeout=10,
                    what="the MCU running under heartbeats",
                )
                board.set_adc(POT, 0)
                wait_for(lambda: latest(edged, "mcu-1").get("pot") == 0.0, what="pot reading")
                board.set_adc(POT, 65535)  # 3.3 V: the rule fires, the fan is driven, acked
                wait_for(lambda: edged.loop.counters["acks_ok"] == 1, timeout=10, what="Ack")
                board.wait_for(
                    lambda e: e["ev"] == "pwm" and e["pin"] == FAN and e["duty"] == 32768, 2
                )
                assert dev.handle.counters["acks"] == 1
                # edged goes away: no more heartbeats from the bridge, the MCU goes safe itself
                mark = len(board.events)
                t0 = time.monotonic_ns()
                edged.close()
                off = board.wait_for(
                    lambda e: e["ev"] == "pwm" and e["pin"] == FAN and e["duty"] == 0, 5, after=mark
                )
                assert off["t_ns"] > t0
                wait_for(lambda: dev.handle.state == "safe", what="MCU state safe")
            finally:
                stop.set()
                t.join(5)
    finally:
        edged.close()


def test_an_mcu_profile_without_points_takes_them_from_hello(
    board: SimulatedMcu, device_edged: Edged, write_file: Any, run_dir: Path
) -> None:
    write_file("mcu.yaml", "kind: mcu\nactions:\n  safe_state:\n    command: {name: safe_state}\n")
    toml = write_file(
        "bridge.toml",
        f"""
[[link]]
name = "uart0"
kind = "mcu"
port = "{board.port}"
[[device]]
name = "mcu-2"
link = "uart0"
profile = "mcu.yaml"
""",
    )
    cfg = load_bridge_config({"run_dir": run_dir}, env={}, file=toml)
    with Bridge(cfg) as bridge:
        dev = bridge.devices[0]
        assert [p.name for p in dev.profile.points] == ["temp_c", "pot", "button", "relay", "fan"]
        assert dev.profile.point("temp_c").unit == "degC"
        wait_for(lambda: dev.agent.connected)
        rec = device_edged.loop.registry.by_id["mcu-2"]
        assert ("pot", (("bus", "uart0"), ("unit", "V"))) in [(n, lb) for _, n, lb in rec.series]


def test_a_safe_state_instruction_latches_the_mcu_safe(
    board: SimulatedMcu, write_file: Any, run_dir: Path, tmp_path: Path
) -> None:

    write_file("mcu.yaml", MCU_PROFILE)
    rules = write_file(
        "safe.yaml",
        RULES.replace("pot_high", "pot_emergency")
        .replace("action: throttle", "action: safe_state")
        .replace("  params: {rate: 0.5}\n", ""),
    )
    cfg = _bridge_cfg(write_file, board, "mcu-3", run_dir)
    edged = _edged(run_dir, tmp_path, rules)
    try:
        with Bridge(cfg) as bridge:
            stop = threading.Event()
            t = threading.Thread(target=bridge.run, args=(stop,))
            t.start()
            try:
                dev = bridge.devices[0]
                wait_for(lambda: dev.agent.connected and dev.handle.state == "run", timeout=10)
                board.set_adc(POT, 0)
                wait_for(lambda: latest(edged, "mcu-3").get("pot") == 0.0, what="pot reading")
                board.set_adc(POT, 65535)
                wait_for(lambda: edged.loop.counters["acks_ok"] == 1, timeout=10, what="Ack")
                wait_for(lambda: dev.handle.state == "latched_safe", what="latched safe")
            finally:
                stop.set()
                t.join(5)
    finally:
        edged.close()


def _bridge_cfg(write_file: Any, board: SimulatedMcu, device: str, run_dir: Path) -> Any:
    """A bridge with one MCU device on the simulated board's pty."""
    toml = write_file(
        "bridge.toml",
        f"""
[bridge]
bridge_tick_ms = 10
[[link]]
name = "uart0"
kind = "mcu"
port = "{board.port}"
[[device]]
name = "{device}"
link = "uart0"
profile = "mcu.yaml"
""",
    )
    return load_bridge_config({"run_dir": run_dir}, env={}, file=toml)


def _edged(run_dir: Path, tmp_path: Path, rules: Path) -> Edged:
    from edge.config import load_config

    flags = {"run_dir": run_dir, "data_dir": tmp_path / "data", "rules_file": rules,
             "metrics_addr": "", "heartbeat_ms": 100}
    return Edged(load_config(flags, env={})).start()
