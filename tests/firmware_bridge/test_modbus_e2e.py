"""A Modbus PLC (pymodbus server on loopback TCP) -> bridge -> edged -> rule -> instruction ->
device write -> the device's write response -> Ack; and the faults around it."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged
from firmware_bridge import Bridge, load_bridge_config

from ..support import wait_for
from .conftest import PLC_PROFILE

pytestmark = pytest.mark.integration


def bridge_cfg(
    write_file: Callable[[str, str], Path], run_dir: Path, port: int, devices: str = ""
) -> Any:
    write_file("plc.yaml", PLC_PROFILE)
    toml = write_file(
        "bridge.toml",
        f"""
[bridge]
bridge_tick_ms = 10
bridge_safe_after_ms = 200
bridge_health_ms = 100

[[link]]
name = "plc-net"
kind = "modbus_tcp"
host = "127.0.0.1"
port = {port}
timeout = "100ms"

[[device]]
name = "plc-1"
link = "plc-net"
profile = "plc.yaml"
unit = 1
{devices}
""",
    )
    return load_bridge_config({"run_dir": run_dir}, env={}, file=toml)


def audit(d: Edged, kind: str) -> list[dict[str, Any]]:
    assert d.writer is not None and d.store is not None
    d.writer.flush()
    return list(d.store.iter_audit(kind=kind))


def test_reading_rule_instruction_device_confirmed_ack(
    device_edged: Edged, plc: Any, write_file: Any, run_dir: Path
) -> None:
    cfg = bridge_cfg(write_file, run_dir, plc.port)
    # flow is a float32 in word-swapped (CDAB) order
    hi, lo = struct.unpack(">HH", struct.pack(">f", 12.5))
    plc.set_registers(1, 0, [215, lo, hi])
    with Bridge(cfg) as bridge:
        wait_for(lambda: bridge.devices[0].agent.connected, what="plc-1 welcomed")
        stop = _ticker(bridge)
        try:
            wait_for(lambda: latest(device_edged, "plc-1").get("flow") is not None, what="readings")
            assert latest(device_edged, "plc-1")["tank_temp"] == pytest.approx(21.5)
            assert latest(device_edged, "plc-1")["flow"] == pytest.approx(12.5)
            # the rule fires: the set_param instruction is written and confirmed by the PLC
            plc.set_registers(1, 0, [855])
            wait_for(lambda: plc.registers(1, 3)[0] == 25, what="setpoint written")
            wait_for(lambda: device_edged.loop.counters["acks_ok"] >= 1, what="the Ack")
            recs = audit(device_edged, "instruction")
            ok = [r for r in recs if r["rule_id"] == "tank_hot"]
            assert ok and ok[0]["status"] == "ok"
            dev = bridge.devices[0]
            assert dev.counters["confirmed"] == 1
            # the heartbeat register counts while the bridge is healthy
            first = plc.registers(1, 10)[0]
            wait_for(lambda: plc.registers(1, 10)[0] > first + 1, what="heartbeat counting")
            # an out-of-range param (500 > max 100) is Rejected and nothing is written
            plc.set_registers(1, 1, list(struct.unpack(">HH", struct.pack(">f", 2000.0)))[::-1])
            wait_for(lambda: device_edged.loop.counters["acks_rejected"] >= 1, what="rejected")
            assert plc.registers(1, 3)[0] == 25
            assert dev.counters["rejected"] == 1
        finally:
            stop()
    # shutdown wrote the safe values
    assert plc.bits(1, 0)[0] is False and plc.registers(1, 3)[0] == 0


def latest(d: Edged, agent: str) -> dict[str, Any]:
    """The latest value of each of ``agent``'s series in edged, by metric name."""
    rec = d.loop.registry.by_id.get(agent)
    if rec is None:
        return {}
    return {name: v for (_, name, _), v in zip(rec.series, rec.last_value, strict=True)}


def _ticker(bridge: Bridge) -> Callable[[], None]:
    import threading

    ev = threading.Event()
    t = threading.Thread(target=bridge.run, args=(ev,), name="bridge-tick")
    t.start()

    def stop() -> None:
        ev.set()
        t.join(5)

    return stop


def test_an_offline_device_shows_in_agents_and_prometheus_and_blocks_no_other(
    device_edged: Edged, plc: Any, write_file: Any, run_dir: Path
) -> None:
    from edge.runtime._prom import render

    extra = '\n[[device]]\nname = "plc-2"\nlink = "plc-net"\nprofile = "plc.yaml"\nunit = 2\n'
    cfg = bridge_cfg(write_file, run_dir, plc.port, devices=extra)
    plc.set_registers(1, 0, [215])
    with Bridge(cfg) as bridge:
        stop = _ticker(bridge)
        try:
            wait_for(lambda: all(d.agent.connected for d in bridge.devices))

            def health(agent: str) -> dict[str, Any]:
                rows = {a["agent_id"]: a for a in device_edged.loop.agents_snapshot()}
                return rows.get(agent, {}).get("health", {})

            wait_for(lambda: health("plc-2").get("online") == 0.0, what="plc-2 offline")
            assert health("plc-2")["timeouts"] >= 3
            wait_for(lambda: health("plc-1").get("online") == 1.0, what="plc-1 online")
            page = render(device_edged._metrics_read())
            assert 'edge_agent_health{agent="plc-2",name="online"} 0' in page
            assert 'edge_agent_health{agent="plc-1",name="online"} 1' in page
            # plc-1 keeps its poll rate although plc-2 never answers
            n = bridge.devices[0].counters["readings"]
            wait_for(lambda: bridge.devices[0].counters["readings"] > n + 50)
            # the offline device's Ack says why, at once
            plc.set_registers(1, 0, [900])  # plc-1's rule fires and is confirmed
            wait_for(lambda: device_edged.loop.counters["acks_ok"] >= 1)
        finally:
            stop()
