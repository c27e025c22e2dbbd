"""McuLink against a scripted MCU on the other end of a pty (the host codec playing the board),
on virtual time (edge.clock.MockClock) for its timing decisions."""

from __future__ import annotations

import os
import select
import threading
import tty
from collections.abc import Iterator

import pytest

from edge.clock import MockClock
from firmware_bridge._mcu import _frames as fr
from firmware_bridge.mcu_link import (
    CommandAck,
    LinkFault,
    McuCommandError,
    McuLink,
    McuOpenError,
    McuReset,
    Reading,
)

POINTS = [("t", "degC", 0), ("relay", "", 2)]


class ScriptedMcu:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.seq = 0
        self.boot_id = 77
        self.deframer = fr.Deframer()

    def send(self, ftype: int, body: bytes, seq: int | None = None) -> None:
        os.write(self.master, fr.encode(ftype, self.seq if seq is None else seq, body))
        self.seq += 1

    def hello(self, reason: int = fr.HELLO_ASKED, cause: int = 0) -> None:
        self.send(fr.T_HELLO, fr.hello_body(reason, self.boot_id, b"\xab" * 8, "9.9", cause, 100,
                                            3, POINTS))

    def received(self, timeout_s: float = 2.0) -> list[fr.Frame]:
        out: list[fr.Frame] = []
        while not out and select.select([self.master], [], [], timeout_s)[0]:
            out += self.deframer.feed(os.read(self.master, 4096))
        return out

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def mcu() -> Iterator[ScriptedMcu]:
    m = ScriptedMcu()
    yield m
    m.close()


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
def link(mcu: ScriptedMcu, clock: MockClock) -> Iterator[McuLink]:
    synced: list[fr.Frame] = []

    def answer_sync() -> None:  # pyserial flushes the port on open: answer the SYNC it sends
        synced.extend(mcu.received(5.0))
        mcu.hello()

    t = threading.Thread(target=answer_sync)
    t.start()
    try:
        link = McuLink(mcu.port, clock=clock)
        link.open()
    finally:
        t.join()
    assert [f.ftype for f in synced] == [fr.T_SYNC]
    with link:
        yield link


def poll_until(link: McuLink, kind: type, timeout_s: float = 2.0) -> list:
    events: list = []
    for _ in range(int(timeout_s / 0.02)):
        events += link.poll(0.02)
        if any(isinstance(e, kind) for e in events):
            return events
    pytest.fail(f"no {kind.__name__} in {events}")


def test_open_returns_the_hello(link: McuLink) -> None:
    hello = link.hello
    assert hello is not None and hello.fw_version == "9.9" and hello.fw_hash == "ab" * 8
    assert [p.name for p in hello.points] == ["t", "relay"] and hello.points[1].is_output


def test_readings_carry_point_names_and_both_clocks(mcu: ScriptedMcu, link: McuLink,
                                                    clock: MockClock) -> None:
    mcu.send(fr.T_READINGS, fr.readings_body(1234, [(0, 21.5), (1, 1.0)]))
    events = poll_until(link, Reading)
    assert events == [Reading("t", 21.5, 1234, clock.monotonic_ns()),
                      Reading("relay", 1.0, 1234, clock.monotonic_ns())]


def test_a_command_without_ack_times_out_on_the_link_clock(mcu: ScriptedMcu, link: McuLink,
                                                           clock: MockClock) -> None:
    seq = link.send_command("set_output", {"relay": 1})
    assert mcu.received()[0].ftype == fr.T_COMMAND
    assert link.poll(0) == []
    clock.advance(1_000_000_001)
    (ack,) = [e for e in link.poll(0) if isinstance(e, CommandAck)]
    assert (ack.seq, ack.ok, ack.status) == (seq, False, "timeout")
    # the late ack is counted, never taken for another command
    mcu.send(fr.T_ACK, fr.ack_body(seq, fr.ACK_DONE, 5, "set"))
    for _ in range(50):
        if link.counters["acks_unmatched"]:
            break
        assert not [e for e in link.poll(0.02) if isinstance(e, CommandAck)]
    assert link.counters["acks_unmatched"] == 1


def test_silence_is_reported_once(mcu: ScriptedMcu, link: McuLink, clock: MockClock) -> None:
    clock.advance(1_500_000_000)
    assert [e.reason for e in link.poll(0) if isinstance(e, LinkFault)] == ["silent"]
    assert link.poll(0) == []


def test_out_of_sequence_and_stale_mcu_frames_are_counted_and_dropped(mcu: ScriptedMcu,
                                                                      link: McuLink) -> None:
    mcu.send(fr.T_READINGS, fr.readings_body(1, [(0, 1.0)]))
    mcu.send(fr.T_READINGS, fr.readings_body(2, [(0, 2.0)]), seq=mcu.seq - 1)  # repeated seq
    mcu.seq -= 1
    mcu.send(fr.T_READINGS, fr.readings_body(3, [(5, 2.0)]))  # a point HELLO never named
    mcu.seq += 3
    mcu.send(fr.T_READINGS, fr.readings_body(4, [(0, 4.0)]))  # after a gap of 3
    got: list = []
    for _ in range(100):
        got += [e.t_mcu_ms for e in link.poll(0.02) if isinstance(e, Reading)]
        if 4 in got:
            break
    assert got == [1, 4]
    c = link.counters
    assert (c["seq_errors"], c["bad_bodies"], c["seq_lost"]) == (1, 1, 3)


def test_a_boot_hello_fails_pending_commands_and_resyncs(mcu: ScriptedMcu, link: McuLink) -> None:
    seq = link.send_command("set_output", {"relay": 1})
    mcu.received()
    mcu.boot_id = 78
    mcu.hello(fr.HELLO_BOOT, cause=1)
    events = poll_until(link, McuReset)
    ack, reset = events[-2:]
    assert isinstance(ack, CommandAck) and (ack.seq, ack.ok, ack.status) == (seq, False, "reset")
    assert isinstance(reset, McuReset) and reset.failed == (seq,)
    assert reset.hello.reset_cause == "watchdog" and link.hello == reset.hello
    assert [f.ftype for f in mcu.received()] == [fr.T_SYNC]


def test_a_command_the_frame_cannot_carry_is_refused_before_sending(link: McuLink) -> None:
    with pytest.raises(McuCommandError, match="param relay has a type"):
        link.send_command("set_output", {"relay": [1]})
    with pytest.raises(McuCommandError, match="over 248"):
        link.send_command("x", {f"p{i}": "y" * 40 for i in range(10)})
    assert link.pending == ()


def test_open_says_what_it_saw_when_no_hello_comes(mcu: ScriptedMcu) -> None:
    def answer_garbage() -> None:
        mcu.received(5.0)
        os.write(mcu.master, b"\x00garbage\x00")

    t = threading.Thread(target=answer_garbage)
    t.start()
    link = McuLink(mcu.port, open_timeout_s=0.5)
    try:
        with pytest.raises(McuOpenError, match=r"within 0.5 s \(9 bytes seen, counters "
                                               r"\{'cobs_errors': 1, 'noise_bytes': 7\}"):
            link.open()
    finally:
        t.join()
    link.close()
    link.close()  # idempotent


def test_open_on_a_missing_port() -> None:
    with pytest.raises(McuOpenError, match="cannot open the MCU's port"):
        McuLink("/dev/does-not-exist").open()


def test_a_port_that_goes_away_fails_pending_commands_and_reports_io(mcu: ScriptedMcu,
                                                                     link: McuLink) -> None:
    seq = link.send_command("set_output", {"relay": 1})
    os.close(mcu.master)  # the USB-serial adapter unplugged
    mcu.master = os.open(os.devnull, os.O_RDONLY)  # so that close() has something to close
    events: list = []
    for _ in range(100):
        events += link.poll(0.02)
        if any(isinstance(e, LinkFault) for e in events):
            break
    ack, fault = events[-2:]
    assert isinstance(ack, CommandAck) and (ack.seq, ack.status) == (seq, "io")
    assert isinstance(fault, LinkFault) and fault.reason == "io"
    assert link.counters["io_errors"] >= 1 and link.pending == ()
