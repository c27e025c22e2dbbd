"""Modbus bad input, each counted, never blocking another device, never crashing the link:
a unit that never answers, exception responses, a response for another transaction, garbage."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from firmware_bridge._modbus import ModbusTcpLink
from firmware_bridge._profile import parse_profile

from ..support import wait_for

PROFILE = """\
kind: modbus
poll_groups: {fast: 10ms}
points:
  - {name: v, poll: fast, area: holding_register, address: 0, type: uint16}
  - {name: sp, poll: fast, area: holding_register, address: 1, type: uint16, max: 1000}
"""


class Sink:
    def __init__(self) -> None:
        self.values: list[tuple[str, float]] = []
        self.done: list[tuple[bool, str]] = []
        self.ev = threading.Event()

    def on_values(self, values: list[Any], t: int) -> None:
        self.values += [(p.name, v) for p, v in values]

    def on_done(self, ok: bool, detail: str, t: int) -> None:
        self.done.append((ok, detail))
        self.ev.set()


def test_a_silent_unit_never_delays_the_others(plc: Any) -> None:
    prof = parse_profile(PROFILE)
    plc.set_registers(1, 0, [7, 0])
    link = ModbusTcpLink("gw", {"host": "127.0.0.1", "port": plc.port, "timeout": "50ms"})
    good, silent, failing = Sink(), Sink(), Sink()
    d1 = link.add_device("ok", 1, prof.points, prof.poll_groups, good.on_values)
    d2 = link.add_device("silent", 2, prof.points, prof.poll_groups, silent.on_values)
    d3 = link.add_device("failing", 3, prof.points, prof.poll_groups, failing.on_values)
    with link:
        wait_for(lambda: not d2.breaker.online, what="the silent unit's breaker open")
        assert d2.counters["timeouts"] >= 3 and not silent.values
        wait_for(lambda: d3.counters["exceptions"] >= 3, what="exception responses")
        assert d3.breaker.online  # it answers (with an exception): it is not offline
        n = len(good.values)
        wait_for(lambda: len(good.values) > n + 20, what="the good unit still polled")
        # a write to the silent unit fails at once while its breaker is open (or, caught in a
        # probe window, after one timeout): it is never confirmed and never waits longer
        link.write(d2, [(prof.point("sp"), 5.0)], silent.on_done)
        assert silent.ev.wait(2) and silent.done[0][0] is False
        why = silent.done[0][1]
        assert "offline" in why or "no answer from unit 2 within 50 ms" in why, why
        # the good unit's write goes ahead of its polls and is confirmed by the device
        link.write(d1, [(prof.point("sp"), 42.0)], good.on_done)
        assert good.ev.wait(2) and good.done == [(True, good.done[0][1])]
        assert "confirmed" in good.done[0][1] and plc.registers(1, 1)[0] == 42
        # exception responses fail a write with the device's own reason
        link.write(d3, [(prof.point("sp"), 1.0)], failing.on_done)
        assert failing.ev.wait(2) and "exception 4 (device failure)" in failing.done[0][1]
    assert link.counters["step_errors"] == 0


class FakeServer:
    """A raw Modbus TCP peer that answers read requests as the test says: in reverse order,
    with a wrong transaction id first, or after garbage bytes."""

    def __init__(self, mode: str):
        self.mode = mode
        self.reversed = 0
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, name="fake-modbus")
        self.t.start()

    def answer(self, req: bytes, value: int, tid: int | None = None) -> bytes:
        t, _, _, unit, fc, addr, count = struct.unpack(">HHHBBHH", req[:12])
        body = bytes([fc, 2 * count]) + b"".join(struct.pack(">H", value + i) for i in range(count))
        return struct.pack(">HHHB", t if tid is None else tid, 0, len(body) + 1, unit) + body

    def run(self) -> None:
        self.srv.settimeout(0.1)
        conn = None
        while not self.stop.is_set() and conn is None:
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
        if conn is None:
            return
        conn.settimeout(0.1)
        buf = b""
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    return
                buf += data
                if self.mode == "reverse" and len(buf) < 24:
                    continue  # answer two requests at once, the later one first
                reqs = []
                while len(buf) >= 12:
                    reqs.append(buf[:12])
                    buf = buf[12:]
                if self.mode == "reverse":
                    self.reversed += 1
                    out = b"".join(self.answer(r, 100) for r in reversed(reqs))
                elif self.mode == "wrong_tid":
                    out = b"".join(
                        self.answer(r, 666, tid=0x7777) + self.answer(r, 100) for r in reqs
                    )
                else:
                    out = b"".join(self.answer(r, 100) for r in reqs)
                conn.sendall(out)

    def close(self) -> None:
        self.stop.set()
        self.t.join(5)
        self.srv.close()


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    s = FakeServer(request.param)
    yield s
    s.close()


@pytest.mark.parametrize("fake", ["wrong_tid"], indirect=True)
def test_a_response_for_another_transaction_is_never_taken(fake: FakeServer) -> None:
    prof = parse_profile(PROFILE)
    sink = Sink()
    link = ModbusTcpLink("x", {"host": "127.0.0.1", "port": fake.port, "timeout": "200ms"})
    link.add_device("d", 1, prof.points, prof.poll_groups, sink.on_values)
    with link:
        wait_for(lambda: len(sink.values) >= 10, what="readings")
        assert link.counters["stray_responses"] >= 5
    assert all(v in (100.0, 101.0) for _, v in sink.values)  # never the 666 of tid 0x7777


@pytest.mark.parametrize("fake", ["reverse"], indirect=True)
def test_pipelined_answers_are_matched_by_transaction_id(fake: FakeServer) -> None:
    text = (
        PROFILE + "  - {name: far, poll: fast, area: holding_register, address: 50, type: uint16}\n"
    )
    prof = parse_profile(text)
    sink = Sink()
    link = ModbusTcpLink(
        "x", {"host": "127.0.0.1", "port": fake.port, "timeout": "200ms", "max_inflight": 4}
    )
    dev = link.add_device("d", 1, prof.points, prof.poll_groups, sink.on_values)
    with link:
        wait_for(lambda: len(sink.values) >= 30, what="readings")
    got = {}
    for name, v in sink.values:
        got.setdefault(name, set()).add(v)
    # each block's answer went to its own request although they came back reversed
    assert got == {"v": {100.0}, "sp": {101.0}, "far": {100.0}}
    assert dev.counters["timeouts"] == 0 and link.counters["stray_responses"] == 0
    assert fake.reversed >= 10
