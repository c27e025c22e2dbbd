"""A cantools-driven ECU on python-can's virtual bus speaking a real opendbc DBC (Tesla
powertrain) -> bridge -> edged -> rule -> instruction -> CAN command -> the ECU's response
signal -> Ack; the alive counter; bad frames and bus-off."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged
from firmware_bridge import Bridge, load_bridge_config

from ..support import wait_for
from .test_modbus_e2e import latest

can = pytest.importorskip("can")
pytestmark = pytest.mark.integration

ECU_PROFILE = """\
kind: can
dbc: pkg:opendbc/dbc/tesla_powertrain.dbc
points:
  - {name: rpm, unit: RPM, message: DI_torque1, signal: DI_motorRPM, min: -17000, max: 17000}
  - {name: pedal, unit: "%", message: DI_torque1, signal: DI_pedalPos, min_interval: 50ms}
  - {name: speed, unit: MPH, message: DI_torque2, signal: DI_vehicleSpeed}
  - {name: cruise_set, message: DI_state, signal: DI_cruiseSet}
actions:
  set_speed:
    params: {speed: {min: 0, max: 150}}
    send: {message: DAS_control, signals: {DAS_setSpeed: "{speed}", DAS_accState: 4}}
    confirm: {message: DI_state, signal: DI_cruiseSet, within: 500ms}
  stop_agent:
    send: {message: DAS_control, signals: {DAS_setSpeed: 0}}
alive: {message: DAS_control, signal: DAS_controlCounter, period: 20ms}
"""


def can_cfg(write_file: Callable[[str, str], Path], run_dir: Path, channel: str) -> Any:
    write_file("ecu.yaml", ECU_PROFILE)
    toml = write_file(
        "bridge.toml",
        f"""
[bridge]
bridge_tick_ms = 10
bridge_health_ms = 100

[[link]]
name = "vcan"
kind = "can"
interface = "virtual"
channel = "{channel}"

[[device]]
name = "ecu-1"
link = "vcan"
profile = "ecu.yaml"
""",
    )
    return load_bridge_config({"run_dir": run_dir}, env={}, file=toml)


@pytest.fixture
def channel() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_ecu_reading_rule_command_response_signal_ack(
    device_edged: Edged, write_file: Any, run_dir: Path, channel: str
) -> None:
    from firmware_bridge import load_profile
    from firmware_bridge.sim import CanEcu

    cfg = can_cfg(write_file, run_dir, channel)
    db = load_profile(cfg.devices[0].profile).db
    ecu_bus = can.Bus(interface="virtual", channel=channel)
    ecu = CanEcu(
        ecu_bus,
        db,
        ["DI_torque1", "DI_torque2", "DI_state"],
        period_s=0.01,
        echo={("DAS_control", "DAS_setSpeed"): ("DI_state", "DI_cruiseSet")},
    )
    try:
        ecu.set("DI_torque1", DI_motorRPM=1200, DI_pedalPos=20)
        ecu.start()
        with Bridge(cfg) as bridge:
            stop = threading.Event()
            t = threading.Thread(target=bridge.run, args=(stop,))
            t.start()
            try:
                wait_for(lambda: latest(device_edged, "ecu-1").get("rpm") == 1200, what="rpm")
                # alive counter frames go out while the bridge is healthy
                wait_for(lambda: bridge.counters["alive_frames"] > 3, what="alive frames")
                ecu.set("DI_torque1", DI_motorRPM=6000)
                wait_for(lambda: device_edged.loop.counters["acks_ok"] >= 1, what="the Ack")
                # the ECU received the command with the rule's param, and echoed it
                got = [d for n, d in ecu.received if n == "DAS_control" and d["DAS_setSpeed"] > 0]
                assert got and got[0]["DAS_setSpeed"] == pytest.approx(30)
                dev = bridge.devices[0]
                assert dev.handle.counters["confirmed"] == 1
                # pedal is rate-limited to one sample per 50 ms
                assert dev.handle.counters["rate_limited"] > 0
            finally:
                stop.set()
                t.join(5)
    finally:
        ecu.stop()
        ecu_bus.shutdown()


def test_bad_frames_and_bus_off_are_counted_and_survived(
    write_file: Any, run_dir: Path, channel: str
) -> None:
    from firmware_bridge._can import CAN_ERR_BUSOFF, CAN_ERR_CRTL

    cfg = can_cfg(write_file, run_dir, channel)
    peer = can.Bus(interface="virtual", channel=channel)
    try:
        with Bridge(cfg) as bridge:
            link = bridge.links["vcan"]
            dev = bridge.devices[0]
            wait_for(lambda: link.is_open, what="bus open")
            peer.send(can.Message(arbitration_id=0x7FF, data=b"\x01\x02"))  # unknown id
            peer.send(can.Message(arbitration_id=0x106, data=b"\x01\x02"))  # DI_torque1, DLC 2
            peer.send(
                can.Message(
                    arbitration_id=CAN_ERR_CRTL,
                    is_error_frame=True,
                    data=bytes([0, 0x20, 0, 0, 0, 0, 0, 0]),
                )
            )  # tx passive
            wait_for(lambda: link.counters["unknown_ids"] == 1, what="unknown id")
            wait_for(lambda: dev.handle.counters["bad_dlc"] == 1, what="wrong DLC")
            wait_for(lambda: link.state == "passive", what="error passive")
            assert dev.health()["health_error_passive"] == 1.0
            peer.send(
                can.Message(arbitration_id=CAN_ERR_BUSOFF, is_error_frame=True, data=bytes(8))
            )
            wait_for(lambda: link.counters["bus_off"] == 1, what="bus-off")
            wait_for(lambda: link.counters["reopens"] >= 1 and link.is_open, what="bus recreated")
            assert dev.health()["health_bus_off"] == 1.0
            # still decoding after all that
            peer.send(can.Message(arbitration_id=0x106, data=bytes(8)))
            wait_for(lambda: dev.handle.counters["decoded"] >= 1, what="decoding again")
    finally:
        peer.shutdown()
