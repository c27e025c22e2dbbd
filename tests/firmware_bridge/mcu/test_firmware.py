"""The MCU firmware (firmware_bridge/mcu/) on real MicroPython 1.27 (the WebAssembly port under
Node.js), its UART a pty opened by McuLink with pyserial; the test drives the machine stand-ins."""

from __future__ import annotations

import json
import os
import select
import time

import pytest

from firmware_bridge._mcu import _frames as fr
from firmware_bridge._mcu._build import firmware_hash
from firmware_bridge.mcu_link import (
    CommandAck,
    McuLink,
    McuReset,
    McuStatus,
    Reading,
    SimulatedMcu,
)

from .conftest import Pump

RELAY, FAN, BUTTON, POT = 16, 17, 15, 0
WDT_MS = 1500


def is_ack(seq: int):
    return lambda ev: isinstance(ev, CommandAck) and ev.seq == seq


def status(state: str):
    return lambda ev: isinstance(ev, McuStatus) and ev.state == state


def mcu_counters(pump: Pump) -> dict[str, int]:
    """The MCU's own counters from its next STATUS frame."""
    return pump.until(lambda ev: isinstance(ev, McuStatus), 3.0).counters


def record(name: str, value_ms: float) -> None:
    """Measured times go to $EDGE_MCU_TIMINGS (JSON lines) when set; never asserted here."""
    path = os.environ.get("EDGE_MCU_TIMINGS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, "ms": round(value_ms, 1)}) + "\n")


def test_hello_names_the_firmware_and_its_points(link: McuLink) -> None:
    hello = link.hello
    assert hello is not None
    assert hello.fw_version == "1.0.0"
    assert hello.fw_hash == firmware_hash()  # the files in the repo are what runs
    assert hello.reset_cause == "power_on" and hello.reason == "asked"
    assert (hello.heartbeat_ms, hello.missed_max) == (100, 3)
    assert [(p.name, p.unit, p.kind) for p in hello.points] == [
        ("temp_c", "degC", "analog_in"), ("pot", "V", "analog_in"), ("button", "", "digital_in"),
        ("relay", "", "digital_out"), ("fan", "ratio", "pwm_out")]


def test_readings_follow_the_inputs(sim: SimulatedMcu, pump: Pump) -> None:
    sim.set_adc(POT, 65535)
    sim.set_input(BUTTON, 0)  # pulled up: pressed reads 0
    pot = pump.until(lambda ev: isinstance(ev, Reading) and ev.point == "pot" and ev.value > 3.2)
    assert pot.value == pytest.approx(3.3, abs=1e-3) and pot.t_rx_ns > 0
    pump.until(lambda ev: isinstance(ev, Reading) and ev.point == "button" and ev.value == 1.0)
    sim.set_adc(POT, 0)
    pump.until(lambda ev: isinstance(ev, Reading) and ev.point == "pot" and ev.value == 0.0)


def test_a_command_drives_the_outputs_and_is_acked_once_done(sim: SimulatedMcu, link: McuLink,
                                                            pump: Pump) -> None:
    pump.until(status("run"))
    seq = link.send_command("set_output", {"relay": 1, "fan": 0.5})
    ack = pump.until(is_ack(seq))
    assert ack.ok and ack.status == "done" and ack.t_mcu_ms is not None
    relay = sim.wait_for(lambda e: e["ev"] == "pin" and e["pin"] == RELAY and e["value"] == 1, 2)
    fan = sim.wait_for(lambda e: e["ev"] == "pwm" and e["pin"] == FAN and e["duty"] == 32768, 2)
    assert relay["t_ns"] <= ack.t_done_ns and fan["t_ns"] <= ack.t_done_ns  # driven, then acked
    pump.until(lambda ev: isinstance(ev, Reading) and ev.point == "relay" and ev.value == 1.0)
    assert link.pending == ()


BAD_COMMANDS = [
    ("set_output", {"relay": 2}, "relay takes 0 or 1"),
    ("set_output", {"fan": 1.5}, "fan takes a duty of 0..1"),
    ("set_output", {"pot": 1}, "no output point 'pot'"),
    ("set_output", {"relay": 1, "valve": 1}, "no output point 'valve'"),
    ("set_output", {"relay": "on"}, "relay needs a number"),
    ("set_output", {}, "set_output needs at least one point"),
    ("launch", {}, "unknown command 'launch'"),
]


def test_a_bad_command_is_rejected_and_drives_nothing(sim: SimulatedMcu, link: McuLink,
                                                      pump: Pump) -> None:
    pump.until(status("run"))
    for name, params, detail in BAD_COMMANDS:
        ack = pump.until(is_ack(link.send_command(name, params)))
        assert (ack.ok, ack.status, ack.detail) == (False, "rejected", detail)
    assert sim.query()["pins"][str(RELAY)] == 0  # all checked before any is driven
    assert mcu_counters(pump)["commands_rejected"] == len(BAD_COMMANDS)


def test_outputs_go_safe_after_missed_heartbeats_well_before_the_watchdog(
        sim: SimulatedMcu, link: McuLink, pump: Pump) -> None:
    pump.until(status("run"))
    seq = link.send_command("set_output", {"relay": 1, "fan": 1.0})
    assert pump.until(is_ack(seq)).ok
    pump.run(0.3)
    pump.beating = False
    last_beat = pump.last_beat_ns
    mark = len(sim.events)
    safe = pump.until(status("safe"), 3.0)
    off = sim.wait_for(lambda e: e["ev"] == "pin" and e["pin"] == RELAY and e["value"] == 0, 2,
                       after=mark)
    sim.wait_for(lambda e: e["ev"] == "pwm" and e["pin"] == FAN and e["duty"] == 0, 2, after=mark)
    to_safe_ms = (off["t_ns"] - last_beat) / 1e6
    record("mcu_safe_after_missed_heartbeats", to_safe_ms)
    assert safe.missed >= 3
    assert not any(e["ev"] == "wdt_fired" for e in sim.events)  # the loop stayed healthy
    # while safe, commands are refused (and say why)
    seq = link.send_command("set_output", {"relay": 1})
    ack = pump.until(is_ack(seq))
    assert (ack.ok, ack.status) == (False, "safe") and "held safe" in ack.detail
    # heartbeats back: RUN again, but the outputs stay safe until commanded
    pump.beating = True
    pump.until(status("run"))
    assert sim.query()["pins"][str(RELAY)] == 0
    assert mcu_counters(pump)["safe_entries"] == 1


def test_safe_state_command_latches_until_resume(sim: SimulatedMcu, link: McuLink,
                                                 pump: Pump) -> None:
    pump.until(status("run"))
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).ok
    assert pump.until(is_ack(link.send_command("safe_state", {}))).ok
    sim.wait_for(lambda e: e["ev"] == "pin" and e["pin"] == RELAY and e["value"] == 0, 2)
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).status == "safe"
    assert pump.until(is_ack(link.send_command("resume", {}))).ok
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).ok


def test_the_watchdog_is_fed_while_the_loop_is_healthy(sim: SimulatedMcu, pump: Pump) -> None:
    pump.run(WDT_MS / 1000 * 1.5)
    state = sim.query()
    assert state["wdt_timeout"] == WDT_MS
    assert state["feeds"] > 10 and state["since_feed_ms"] < WDT_MS
    assert not any(e["ev"] in ("wdt_fired", "reset") for e in sim.events)


def test_a_hung_loop_is_reset_by_the_watchdog_and_comes_up_safe(
        sim: SimulatedMcu, link: McuLink, pump: Pump) -> None:
    pump.until(status("run"))
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).ok
    sim.fail_adc(POT, "stall", ms=WDT_MS + 1000)  # a peripheral that hangs the next read
    stall = sim.wait_for(lambda e: e["ev"] == "stall", 3)
    fired = sim.wait_for(lambda e: e["ev"] == "wdt_fired", 5)
    assert fired["since_feed_ms"] > WDT_MS
    assert fired["t_ns"] < stall["t_ns"] + (WDT_MS + 1000) * 1_000_000  # during the hang
    record("mcu_hang_to_watchdog_fired", (fired["t_ns"] - stall["t_ns"]) / 1e6)
    reset = pump.until(lambda ev: isinstance(ev, McuReset), 5)
    assert reset.hello.reset_cause == "watchdog" and reset.hello.reason == "boot"
    off = sim.wait_for(lambda e: e["ev"] == "pin" and e["pin"] == RELAY and e["value"] == 0, 2,
                       after=sim.events.index(fired))
    record("mcu_hang_to_safe_outputs", (off["t_ns"] - stall["t_ns"]) / 1e6)
    # the link re-SYNCs by itself: the new boot takes commands again
    pump.until(status("run"))
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).ok


def test_a_failing_stage_goes_safe_at_once_and_stops_feeding_the_watchdog(
        sim: SimulatedMcu, link: McuLink, pump: Pump) -> None:
    pump.until(status("run"))
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).ok
    sim.fail_adc(POT, "raise")  # not an OSError: something the firmware does not expect
    fault = pump.until(status("fault"))
    assert fault.counters["stage_errors"] >= 1
    off = sim.wait_for(lambda e: e["ev"] == "pin" and e["pin"] == RELAY and e["value"] == 0, 2)
    fired = sim.wait_for(lambda e: e["ev"] == "wdt_fired", 5)
    record("mcu_fault_to_watchdog_reset", (fired["t_ns"] - off["t_ns"]) / 1e6)
    assert pump.until(lambda ev: isinstance(ev, McuReset), 5).hello.reset_cause == "watchdog"


def test_a_failing_sensor_is_counted_not_fatal(sim: SimulatedMcu, pump: Pump) -> None:
    sim.fail_adc(POT, "oserror")
    sim.query()  # the runner takes its ops in order: the failure is in force from here
    pump.run(0.2)  # readings taken before it may still be in the pipe
    after = len(pump.events)
    pump.run(0.5)
    counters = mcu_counters(pump)
    assert counters["read_errors"] >= 3 and counters["stage_errors"] == 0
    seen = {ev.point for ev in pump.events[after:] if isinstance(ev, Reading)}
    assert "pot" not in seen and "temp_c" in seen
    assert not any(e["ev"] == "wdt_fired" for e in sim.events)


def test_an_mcu_reset_mid_command_fails_the_command_never_acks_it(
        sim: SimulatedMcu, link: McuLink, pump: Pump) -> None:
    pump.until(status("run"))
    sim.reset_on_write(RELAY, 1)  # a brown-out as the relay pulls in
    seq = link.send_command("set_output", {"relay": 1})
    ack = pump.until(is_ack(seq))
    assert (ack.ok, ack.status) == (False, "reset") and "reset" in ack.detail
    reset = next(ev for ev in pump.events if isinstance(ev, McuReset))
    assert reset.failed == (seq,) and reset.hello.reason == "boot"
    assert sim.query()["pins"][str(RELAY)] == 0  # the new boot drives it safe
    assert link.counters["resets"] == 1 and link.pending == ()
    pump.until(status("run"))
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).ok


# -- bad input against the firmware -----------------------------------------------------------


def command_wire(link: McuLink, seq: int, params: dict) -> bytes:
    return fr.encode(fr.T_COMMAND, seq, fr.command_body("set_output", list(params.items())))


def test_corrupt_truncated_oversized_frames_and_noise_are_counted_never_acted_on(
        sim: SimulatedMcu, link: McuLink, pump: Pump) -> None:
    pump.until(status("run"))
    before = mcu_counters(pump)
    seq = link._tx_seq  # the frames below would be in sequence: only their damage stops them
    good = command_wire(link, seq, {"relay": 1})
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    link.send_raw(bytes(flipped))  # corrupt: CRC
    link.send_raw(good[:-4] + b"\x00")  # truncated
    link.send_raw(b"\x00" + bytes(range(1, 256)) * 2 + b"\x00")  # oversized, 510 bytes
    noise = bytes((i * 37 + 11) % 256 for i in range(300))
    link.send_raw(noise)  # plain line noise
    pump.run(0.5)
    after = mcu_counters(pump)
    assert after["crc_errors"] > before["crc_errors"]
    assert after["oversize"] == before["oversize"] + 1
    assert sum(after[k] - before[k] for k in ("crc_errors", "cobs_errors", "short_frames")) >= 3
    assert after["commands_done"] == before["commands_done"]
    assert sim.query()["pins"][str(RELAY)] == 0
    assert not any(isinstance(ev, CommandAck) for ev in pump.events)
    # the link is still good: the next command goes through
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 1}))).ok


def test_a_replayed_or_stale_frame_is_counted_never_acted_on(sim: SimulatedMcu, link: McuLink,
                                                            pump: Pump) -> None:
    pump.until(status("run"))
    seq = link.send_command("set_output", {"relay": 1})
    assert pump.until(is_ack(seq)).ok
    assert pump.until(is_ack(link.send_command("set_output", {"relay": 0}))).ok
    before = mcu_counters(pump)
    link.send_raw(command_wire(link, seq, {"relay": 1}))  # the first one again, verbatim
    link.send_raw(command_wire(link, (seq - 5) & 0xFFFF, {"relay": 1}))  # older still
    pump.run(0.3)
    after = mcu_counters(pump)
    assert after["seq_errors"] == before["seq_errors"] + 2
    assert after["commands_done"] == before["commands_done"]
    assert sim.query()["pins"][str(RELAY)] == 0


def test_a_command_before_the_session_is_refused(sim: SimulatedMcu) -> None:
    """A frame from a host that never sent SYNC (e.g. from before the MCU's reboot)."""
    import serial

    with serial.Serial(sim.port, 115200, timeout=0) as port:
        port.write(fr.encode(fr.T_COMMAND, 7, fr.command_body("set_output", [("relay", 1)])))
        port.write(fr.encode(fr.T_SYNC, 8))
        deframer = fr.Deframer()
        deadline = time.monotonic() + 5
        counters = None
        while counters is None and time.monotonic() < deadline:
            select.select([port.fileno()], [], [], 0.05)
            for f in deframer.feed(port.read(4096)):
                if f.ftype == fr.T_STATUS:
                    counters = fr.read_status(f.body)[2]
        assert counters is not None and counters["seq_errors"] == 1
        assert sim.query()["pins"][str(RELAY)] == 0
