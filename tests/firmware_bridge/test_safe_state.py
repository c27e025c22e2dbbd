"""The layered safe state, each path timed: safe_state instructions, edged lost (Modbus safe
values after bridge_safe_after_ms; the CAN alive counter stops), and the watchdog hook."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_config
from edge.runtime import Edged
from firmware_bridge import Bridge

from ..support import wait_for
from .test_can_e2e import can_cfg
from .test_modbus_e2e import bridge_cfg

pytestmark = pytest.mark.integration

SAFE_RULE = """\
- rule_id: emergency
  rule_content: tank_temp > 100
  action: safe_state
  priority: 250
  sla_threshold: 500
"""


def _run(bridge: Bridge) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=bridge.run, args=(stop,), name="bridge-tick")
    t.start()
    return stop, t


def test_safe_state_instruction_and_edged_loss(
    plc: Any, write_file: Any, run_dir: Path, tmp_path: Path
) -> None:
    rules = write_file("safe.yaml", SAFE_RULE)
    ecfg = load_config(
        {
            "run_dir": run_dir,
            "data_dir": tmp_path / "data",
            "rules_file": rules,
            "metrics_addr": "",
            "heartbeat_ms": 100,
        },
        env={},
    )
    cfg = bridge_cfg(write_file, run_dir, plc.port)
    plc.set_bits(1, 0, [True])
    plc.set_registers(1, 0, [1010])  # 101.0 degC
    edged = Edged(ecfg).start()
    try:
        with Bridge(cfg) as bridge:
            stop, t = _run(bridge)
            try:
                wait_for(lambda: bridge.devices[0].agent.connected)
                # the safe_state instruction writes the profile's safe values, device-confirmed
                wait_for(lambda: edged.loop.counters["acks_ok"] == 1, what="safe_state Ack")
                assert plc.bits(1, 0)[0] is False
                # edged goes away: after bridge_safe_after_ms (200 ms) the values are written
                plc.set_bits(1, 0, [True])
                t0 = time.monotonic()
                edged.close()
                wait_for(lambda: plc.bits(1, 0)[0] is False, what="safe values on edged loss")
                elapsed = time.monotonic() - t0
                assert bridge.counters["safe_on_edged_loss"] == 1
                assert elapsed >= 0.2  # not before the configured grace
                hb = plc.registers(1, 10)[0]
                # the heartbeat register stops counting while edged is gone
                assert not bridge.healthy()
                wait_for(lambda: bridge.counters["ticks"] > 20)
                assert plc.registers(1, 10)[0] == hb
            finally:
                stop.set()
                t.join(5)
    finally:
        edged.close()


def test_can_alive_counter_stops_when_edged_is_lost(
    device_edged: Edged, write_file: Any, run_dir: Path
) -> None:
    import can

    channel = f"alive-{uuid.uuid4().hex[:8]}"
    cfg = can_cfg(write_file, run_dir, channel)
    peer = can.Bus(interface="virtual", channel=channel)
    try:
        with Bridge(cfg) as bridge:
            stop, t = _run(bridge)
            try:
                wait_for(lambda: bridge.counters["alive_frames"] > 5, what="alive frames")
                device_edged.close()
                wait_for(lambda: not bridge.devices[0].agent.connected, what="edged lost")
                n = bridge.counters["alive_frames"]
                ticks = bridge.counters["ticks"]
                wait_for(lambda: bridge.counters["ticks"] > ticks + 10)
                assert bridge.counters["alive_frames"] == n
                # the counter frames on the bus count up, DAS_controlCounter wrapping at 8
                db = bridge.devices[0].profile.db
                msg = db.get_message_by_name("DAS_control")
                counts = []
                while (m := peer.recv(timeout=0)) is not None:
                    if m.arbitration_id == msg.frame_id:
                        counts.append(msg.decode(m.data)["DAS_controlCounter"])
                assert counts[:3] == [0, 1, 2] and max(counts) <= 7
            finally:
                stop.set()
                t.join(5)
    finally:
        peer.shutdown()


def test_watchdog_fed_only_while_healthy(
    device_edged: Edged, plc: Any, write_file: Any, run_dir: Path, tmp_path: Path
) -> None:
    import socket

    cfg = bridge_cfg(write_file, run_dir, plc.port)
    addr = str(tmp_path / "notify.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(addr)
    sink.settimeout(2)
    mp = pytest.MonkeyPatch()
    mp.setenv("NOTIFY_SOCKET", addr)
    try:
        with Bridge(cfg) as bridge:
            wait_for(lambda: bridge.healthy(), what="healthy")
            bridge.tick()
            assert sink.recv(64) == b"WATCHDOG=1"
            device_edged.close()
            wait_for(lambda: not bridge.healthy(), what="unhealthy")
            pings = bridge.counters["watchdog_pings"]
            bridge.tick()
            assert bridge.counters["watchdog_pings"] == pings
    finally:
        mp.undo()
        sink.close()
