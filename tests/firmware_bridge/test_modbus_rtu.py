"""Modbus RTU over a pty null modem against pymodbus's serial server: one request at a time
with the silent interval, a silent unit on the same bus, line noise and a late frame."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from firmware_bridge._modbus import ModbusRtuLink
from firmware_bridge._profile import parse_profile
from firmware_bridge.sim import ModbusSim, NullModem

from ..support import wait_for

pytest.importorskip("serial")

PROFILE = """\
kind: modbus
poll_groups: {fast: 10ms}
points:
  - {name: v, poll: fast, area: holding_register, address: 0, type: int32, order: CDAB}
  - {name: sp, poll: fast, area: holding_register, address: 2, type: uint16}
"""


@pytest.fixture
def bus() -> Iterator[tuple[NullModem, ModbusSim]]:
    with NullModem() as nm:
        sim = ModbusSim(
            units=(1, 2), serial_port=nm.port_b, baudrate=115200, silent_units=(2,)
        ).start()
        try:
            yield nm, sim
        finally:
            sim.stop()


def _crc(frame: bytes) -> bytes:
    from pymodbus.framer import FramerRTU

    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def test_rtu_reads_writes_and_survives_a_silent_unit_and_noise(bus: Any) -> None:
    nm, sim = bus
    prof = parse_profile(PROFILE)
    sim.set_registers(1, 0, [0xFFFF, 0xFFFF])  # -1 in any word order
    sim.set_registers(1, 0, [0x0001, 0x0000])  # CDAB: low word first -> 1
    got: list[float] = []
    seen2: list[Any] = []
    done: list[tuple[bool, str]] = []
    ev = threading.Event()
    link = ModbusRtuLink("rtu", {"port": nm.port_a, "baudrate": 115200, "timeout": "50ms"})
    d1 = link.add_device(
        "one",
        1,
        prof.points,
        prof.poll_groups,
        lambda vs, t: got.extend(v for p, v in vs if p.name == "v"),
    )
    d2 = link.add_device("two", 2, prof.points, prof.poll_groups, lambda vs, t: seen2.append(vs))
    with link:
        wait_for(lambda: len(got) >= 5, what="unit 1 readings")
        assert set(got) == {1.0}
        wait_for(lambda: not d2.breaker.online, what="unit 2 offline")
        assert link.counters["flushes"] >= 3  # input flushed after each timeout
        n = len(got)
        wait_for(lambda: len(got) > n + 20, what="unit 1 unaffected by unit 2")
        # line noise and a late, well-formed answer of unit 2 while nothing is outstanding
        late = bytes([2, 3, 4, 0, 9, 0, 9])
        nm.send_to_a(b"\xff\x00\x13\x37" + late + _crc(late))
        link.write(
            d1, [(prof.point("sp"), 7.0)], lambda ok, why, t: (done.append((ok, why)), ev.set())
        )
        assert ev.wait(2) and done[0][0], done
        assert sim.registers(1, 2)[0] == 7
        n = len(got)
        wait_for(lambda: len(got) > n + 10, what="readings after the noise")
    assert not seen2 and set(got) == {1.0}
    assert link.counters["step_errors"] == 0
    assert d1.counters["timeouts"] == 0
    assert link.counters["stray_responses"] + link.counters["crc_errors"] >= 1
