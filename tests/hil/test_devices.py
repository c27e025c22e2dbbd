"""Devices on real links behind a real edge-bridge, and the uplink: the fault layers on their
own (a real pty relay, a real udp_multicast CAN bus), the fast Modbus scenario and the uplink
one end to end in make test, the CAN, MCU, process, network and clock ones under ``hil``. The autouse leak check fails a test that leaves the bridge, a
simulator or a socket behind."""

from __future__ import annotations

import os
import time
import tty
from pathlib import Path

import pytest

import hil
from hil import load_scenario, run_scenario, write_outputs
from hil._devices import SerialRelay, _Active, _FaultyBus, _free_udp_port

LIB = Path(hil.__file__).parent / "scenarios"


class _Pty:
    """A pty standing in for the MCU's end of the line (the relay opens its slave)."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            os.close(fd)


def _read(fd: int, n: int, timeout: float = 3.0) -> bytes:
    """Up to ``n`` bytes from ``fd``, polling until they came or ``timeout`` passed."""
    import select

    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            out += os.read(fd, 4096)
    return out


@pytest.fixture
def line() -> tuple[_Pty, SerialRelay, int, _Active]:
    mcu = _Pty()
    faults = _Active(1)
    relay = SerialRelay(mcu.port, faults)
    host = os.open(relay.port, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(host)
    yield mcu, relay, host, faults
    os.close(host)
    relay.close()
    mcu.close()


def test_the_serial_relay_carries_both_ways_and_applies_its_faults(line: tuple) -> None:
    mcu, relay, host, faults = line
    os.write(mcu.master, b"hello from the mcu")
    assert _read(host, 18) == b"hello from the mcu"
    os.write(host, b"host")
    assert _read(mcu.master, 4) == b"host"

    faults.on["serial_flip"] = {"rate": 1.0}  # every byte: one bit flipped
    data = bytes(range(64))
    os.write(mcu.master, data)
    got = _read(host, 64)
    assert len(got) == 64 and all(bin(a ^ b).count("1") == 1 for a, b in zip(data, got, strict=True))
    del faults.on["serial_flip"]

    faults.on["serial_drop"] = {"rate": 0.5}
    os.write(mcu.master, bytes(200))
    got = _read(host, 200, timeout=1.0)
    assert 0 < len(got) < 200 and relay.counters["bytes_dropped"] == 200 - len(got)
    del faults.on["serial_drop"]

    faults.on["line_break"] = {}
    os.write(host, b"lost")
    os.write(mcu.master, b"lost too")
    assert _read(mcu.master, 4, timeout=0.5) == b"" and _read(host, 8, timeout=0.5) == b""
    assert relay.counters["bytes_lost"] == 12
    del faults.on["line_break"]
    relay.inject += b"\x00garbage"
    assert _read(host, 8) == b"\x00garbage"


def test_the_can_faults_on_a_bus_between_processes() -> None:
    can = pytest.importorskip("can")
    from can.interfaces.udp_multicast import UdpMulticastBus

    port = _free_udp_port()
    ecu_bus = can.Bus(interface="udp_multicast", channel=UdpMulticastBus.DEFAULT_GROUP_IPv4, port=port)
    bridge = can.Bus(interface="udp_multicast", channel=UdpMulticastBus.DEFAULT_GROUP_IPv4, port=port)
    try:
        faults = _Active(2)
        ecu = _FaultyBus(ecu_bus, {0x120}, faults)

        def frame(i: int = 0x120) -> object:
            return can.Message(arbitration_id=i, data=bytes([1, 2, 3, 4]), is_extended_id=False)

        def from_ecu(timeout: float) -> object:
            """The next frame on the bridge's side that it did not send itself (multicast
            loops its own frames back to it), or None."""
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                m = bridge.recv(left)
                if m is not None and m.arbitration_id != 0x220:
                    return m
            return None

        ecu.send(frame())
        got = from_ecu(3)
        assert got is not None and bytes(got.data) == b"\x01\x02\x03\x04"
        bridge.send(frame(0x220))
        assert ecu.recv(3).arbitration_id == 0x220  # its own 0x120 looped back is left out

        faults.on["can_corrupt"] = {"rate": 1.0}
        ecu.send(frame())
        got = from_ecu(3)
        assert got is not None and bytes(got.data) != b"\x01\x02\x03\x04"
        del faults.on["can_corrupt"]

        faults.on["can_bus_off"] = {}
        ecu.error_frame(0x040, bytes(8))
        got = from_ecu(3)
        assert got is not None and got.is_error_frame and got.arbitration_id & 0x040
        ecu.send(frame())
        bridge.send(frame(0x220))
        assert from_ecu(0.3) is None
        assert ecu.recv(0.3) is None and ecu.counters["dropped"] == 2
        del faults.on["can_bus_off"]

        faults.on["can_delay"] = {"ms": 30}
        ecu.send(frame())
        assert ecu.counters["delayed"] == 1
        got = None
        deadline = time.monotonic() + 3
        while got is None and time.monotonic() < deadline:
            ecu.recv(0.01)  # the ECU's own loop flushes what is due
            got = from_ecu(0.01)
        assert got is not None and got.arbitration_id == 0x120
    finally:
        ecu_bus.shutdown()
        bridge.shutdown()


@pytest.mark.integration
def test_the_tank_behind_a_real_modbus_plc_and_edge_bridge(tmp_path: Path) -> None:
    """make test's device smoke: pymodbus PLC, edge-bridge child, the rule's safe state written
    to the PLC and acked, the pump off before the rim; the devices' health in the recording."""
    sc = load_scenario(LIB / "tank_overflow_modbus.yaml")
    res = run_scenario(sc)
    files = write_outputs(res, tmp_path / sc.id)
    assert res.verdict == "PASS", (res.reason, res.assertions)
    ins = [i for i in res.recording.instructions if i["agent_id"] == "tank-plc"]
    assert [i["action"] for i in ins] == ["safe_state"] and ins[0]["ack"] == "ok"
    assert 0 < ins[0]["e2e_ms"] < 1000  # sample -> the PLC's write response, from edged's Ack
    assert any(m == "health_online" and v == 1.0 for _, a, m, v, _ in res.recording.samples if a == "tank-plc")
    assert "ack:ok,tank-plc,tank_high" in Path(files["events"]).read_text()
    assert res.rig["teardown_problems"] == []
    _device_points_replay_and_diff(sc.rules_file, tmp_path / sc.id, files)


def _device_points_replay_and_diff(rules: Path, run: Path, files: dict[str, str]) -> None:
    """The recording carries the PLC's readings as edged got them through the bridge: the rule
    over a device point replays offline to the rig's firing, and edge-hil diff sees what a
    candidate table changes on device points."""
    import json
    import subprocess
    import sys

    from edge.rules import load_rule_file, read_trace, replay

    trace = read_trace(files["recording"])
    fired = replay(load_rule_file(rules), trace)
    assert [(f["rule_id"], f["agent_id"]) for f in fired] == [("tank_high", "tank-plc")]
    text = Path(files["recording"]).read_text()
    assert ",tank-plc,level," in text and ",tank-plc,pump," in text  # readings, not only health
    if "mdf4" in files and not files["mdf4"].startswith("skipped"):
        from asammdf import MDF

        with MDF(files["mdf4"]) as mdf:
            assert "tank-plc.level" in mdf.channels_db
    cand = run.parent / "cand.yaml"
    cand.write_text(  # the threshold on the PLC's level lowered, a warning on it added
        "- {rule_id: tank_high, rule_name: t, rule_content: 'level > 0.75', action: safe_state,"
        " priority: 10, sla_threshold: 50, agents: [tank-plc]}\n"
        "- {rule_id: tank_warn, rule_name: w, rule_content: 'level > 0.7', action: alert,"
        " priority: 1, sla_threshold: 50, agents: [tank-plc]}\n")

    def diff(table: Path) -> dict:
        r = subprocess.run([sys.executable, "-m", "hil", "diff", str(run), str(table), "--json",
                            "--tol-ms", "5"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    same = diff(rules)
    assert (same["added"], same["removed"], same["moved"], same["same"]) == ([], [], [], 1)
    d = diff(cand)
    assert [(f["rule_id"], f["agent_id"]) for f in d["added"]] == [("tank_warn", "tank-plc")]
    assert [f["rule_id"] for f in d["moved"]] == ["tank_high"] and d["moved"][0]["by_ms"] < -100
    assert d["removed"] == []


DEVICE_SCENARIOS = ["modbus_plc_exception.yaml", "modbus_plc_offline.yaml", "modbus_plc_slow.yaml",
                    "vehicle_can_safe_stop.yaml", "can_bus_off_recovery.yaml",
                    "can_frames_delayed_dropped.yaml", "mcu_line_cut.yaml", "mcu_serial_noise.yaml",
                    "mcu_edged_killed.yaml", "mcu_bridge_killed.yaml", "mcu_reset.yaml", "uplink_flapping.yaml", "uplink_sync_killed.yaml",
                    "wall_clock_step.yaml", "rules_hot_swap.yaml"]


@pytest.mark.integration
def test_uplink_lost_for_the_whole_run_then_delivered_exactly_once() -> None:
    """make test's uplink smoke: nats-server, the fault proxy blackholing, a real edge-sync;
    after the run every aggregate edged made is in the stream once."""
    res = run_scenario(load_scenario(LIB / "uplink_lost_whole_run.yaml"))
    assert res.verdict == "PASS", (res.reason, res.assertions)
    rec = res.recording
    produced = rec.series("uplink.produced")[-1][1]
    assert produced >= 3 and rec.series("uplink.delivered")[-1][1] == produced
    assert max(v for _, v in rec.series("uplink.outbox")) >= 2  # they waited while it was down
    assert res.rig["teardown_problems"] == []


@pytest.mark.hil
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", DEVICE_SCENARIOS)
def test_device_scenarios_pass(name: str) -> None:
    res = run_scenario(load_scenario(LIB / name))
    assert res.verdict == "PASS", (res.reason, res.assertions)
    assert res.rig["teardown_problems"] == []


def test_a_bridge_that_will_not_start_is_error(tmp_path: Path) -> None:
    """A device profile that edge-bridge refuses at its start (broken after the scenario was
    checked) -> ERROR with the bridge's exit code and words; nothing left behind."""
    prof = tmp_path / "plc.yaml"
    prof.write_text((LIB / "devices" / "tank_plc.yaml").read_text())
    text = (LIB / "tank_overflow_modbus.yaml").read_text()
    text = text.replace("profile: devices/tank_plc.yaml", f"profile: {prof}")
    text = text.replace("rules: rules/", f"rules: {LIB}/rules/")
    sc_file = tmp_path / "s.yaml"
    sc_file.write_text(text)
    sc = load_scenario(sc_file)
    prof.write_text("kind: modbus\npoints: [{name: level, area: nowhere}]\n")
    res = run_scenario(sc)
    assert res.verdict == "ERROR" and "edge-bridge exited with code 2" in res.reason, res.reason
    assert "nowhere" in res.reason  # the bridge's own message, from its log


def _serial_log(seed: int, chunks: list[int]) -> tuple[list[tuple[str, str, int]], bytes]:
    """The relay's faults on 2000 bytes from the MCU, the same bytes cut into ``chunks``
    (different timing: different reads), through a real pty relay."""
    mcu = _Pty()
    faults = _Active(seed)
    faults.on.update({"serial_drop": {"rate": 0.05}, "serial_flip": {"rate": 0.05}})
    relay = SerialRelay(mcu.port, faults)
    host = os.open(relay.port, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(host)
    try:
        data = bytes(i % 251 for i in range(2000))
        at = 0
        for n in chunks:
            os.write(mcu.master, data[at:at + n])
            at += n
            deadline = time.monotonic() + 3
            while relay.counters["bytes_up"] < at and time.monotonic() < deadline:
                time.sleep(0.002)  # polling: this chunk relayed on its own before the next
        got = _read(host, 2000 - relay.counters["bytes_dropped"])
        return list(faults.log), got
    finally:
        os.close(host)
        relay.close()
        mcu.close()


def test_seeded_serial_faults_hit_the_same_bytes_whatever_the_timing() -> None:
    log1, got1 = _serial_log(7, [2000])
    log2, got2 = _serial_log(7, [1, 37, 500, 62, 400, 1000])
    assert log1 and log1 == log2 and got1 == got2  # the same bytes dropped and flipped alike
    assert {k for k, _, _ in log1} == {"serial_drop", "serial_flip"}
    log3, _ = _serial_log(8, [2000])
    assert log3 != log1


def test_seeded_can_faults_hit_the_same_frame_numbers() -> None:
    can = pytest.importorskip("can")

    def run(seed: int) -> list[tuple[str, str, int]]:
        faults = _Active(seed)
        bus = _FaultyBus(None, set(), faults)  # _mangle only: the decision of each frame
        for i in range(600):
            if i == 100:
                faults.on.update({"can_drop": {"rate": 0.1}, "can_corrupt": {"rate": 0.1}})
            if i == 500:
                faults.on.clear()
            bus._mangle(can.Message(arbitration_id=0x120, data=bytes(8)), "tx" if i % 3 else "rx")
        return list(faults.log)

    a, b, c = run(3), run(3), run(4)
    assert a and a == b and a != c
    assert {s for _, s, _ in a} == {"tx", "rx"}


@pytest.mark.integration
def test_seeded_modbus_faults_hit_the_same_request_numbers() -> None:
    """A real pymodbus server and client: with rate 0.3, the same requests (by number) get
    exception 4 for the same seed, others for another."""
    from pymodbus.client import ModbusTcpClient

    from firmware_bridge.sim import ModbusSim

    def run(seed: int) -> tuple[list[int], list[tuple[str, str, int]]]:
        faults = _Active(seed)
        faults.on["modbus_exception"] = {"rate": 0.3}
        with ModbusSim(units=(1,)) as sim:
            sim.fault = lambda i, unit: "exception" if faults.hit("modbus_exception", "req", i) else ""
            client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
            assert client.connect()
            try:
                bad = [n for n in range(1, 61) if client.read_holding_registers(0, count=1, device_id=1).isError()]
            finally:
                client.close()
        return bad, list(faults.log)

    (bad1, log1), (bad2, log2), (bad3, _) = run(5), run(5), run(6)
    assert bad1 and bad1 == bad2 == [i for _, _, i in log1] and log1 == log2
    assert bad3 != bad1
