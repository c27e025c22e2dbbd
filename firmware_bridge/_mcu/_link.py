"""McuLink: the host's end of the serial link to the MCU firmware (firmware_bridge/mcu/).

Frames are those of firmware_bridge/mcu/frames.py (COBS, CRC-16/CCITT-FALSE, header with
version/type/seq; the layouts are drawn there). pyserial carries them; nothing here blocks
longer than the timeout a caller passes.

API (the bridge codes against this; names are public in firmware_bridge.mcu_link)::

    link = McuLink("/dev/ttyACM0", clock=SYSTEM_CLOCK)   # nothing opened yet
    hello = link.open()          # -> McuHello; sends SYNC and waits for the MCU's HELLO
                                 #    (open_timeout_s, real time: it bounds a blocking wait),
                                 #    raises McuOpenError (port missing,
                                 #    no HELLO: the message says which and what was seen)
    link.fileno()                # the port's fd, for a selector; readable = call poll()
    link.poll(timeout_s)         # -> list of events, waits at most timeout_s (0 = never)
    link.send_heartbeat()        # one HEARTBEAT; send one per hello.heartbeat_ms while the
                                 #    control chain (edged, the bridge) is healthy; the MCU
                                 #    goes safe after hello.missed_max missed periods
    seq = link.send_command("set_output", {"relay": 1, "fan": 0.4})
                                 # -> seq; exactly one CommandAck(seq) follows from poll()
    link.counters                # dict: frames_ok, crc_errors, cobs_errors, short_frames,
                                 #    version_errors, oversize, noise_bytes, seq_errors,
                                 #    seq_lost, bad_bodies, unknown_types, stale_frames,
                                 #    readings, acks, acks_unmatched, commands_sent,
                                 #    commands_failed, heartbeats_sent, resets, io_errors
    link.mcu_status              # the MCU's last McuStatus (its state and its own counters)
    link.close()                 # idempotent; also a context manager (open on enter)

Events from poll(), in arrival order:

    Reading(point, value, t_mcu_ms, t_rx_ns)   one per point of each READINGS frame
    CommandAck(seq, ok, detail, t_done_ns, status, t_mcu_ms)
        status "done" (ok), "rejected", "safe" (the MCU holds its outputs safe), "timeout"
        (no ACK within command_timeout_s), "reset" (the MCU rebooted before acking: the
        command is never reported done), "io" (the port failed while it was pending)
    McuReset(hello, failed)   the MCU rebooted (a HELLO with reason boot, or a new boot_id):
        ``failed`` are the seqs of the commands it never acked (each also gets its
        CommandAck status "reset" before this event); the link re-SYNCs by itself
    McuStatus(state, missed, counters, t_rx_ns)   every second and on each state change
    LinkFault(reason, detail, t_ns)   "silent" (no frame for silence_s), "io" (the port
        failed: close and open again)

Every timing decision (command timeout, silence) reads ``clock.monotonic_ns()`` (edge.clock),
so tests run them on a MockClock; t_rx_ns / t_done_ns are that clock's time when the frame was
read. A frame that is corrupt, truncated, oversized, out of sequence (not newer than the last
one taken) or arrives before the session's HELLO is counted and never produces an event.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass, field
from typing import Any

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import EdgeError

from . import _frames as fr

RESET_CAUSES = ("power_on", "watchdog", "other")
_ACK_STATUS = {fr.ACK_DONE: "done", fr.ACK_REJECTED: "rejected", fr.ACK_SAFE: "safe"}


class McuError(EdgeError):
    """Raised by McuLink."""


class McuOpenError(McuError):
    """The port did not open, or no HELLO came within the open timeout."""


class McuCommandError(McuError, ValueError):
    """A command that cannot be encoded (a param type or size the frame cannot carry)."""


@dataclass(frozen=True)
class McuPoint:
    name: str
    unit: str
    kind: str  # analog_in | digital_in | digital_out | pwm_out

    @property
    def is_output(self) -> bool:
        return self.kind in ("digital_out", "pwm_out")


@dataclass(frozen=True)
class McuHello:
    fw_version: str
    fw_hash: str  # 16 hex digits: SHA-256[:8] of the firmware files
    points: tuple[McuPoint, ...]
    boot_id: int
    reset_cause: str  # power_on | watchdog | other
    heartbeat_ms: int
    missed_max: int
    reason: str  # boot | asked
    t_rx_ns: int


@dataclass(frozen=True)
class Reading:
    point: str
    value: float
    t_mcu_ms: int
    t_rx_ns: int


@dataclass(frozen=True)
class CommandAck:
    seq: int
    ok: bool
    detail: str
    t_done_ns: int
    status: str = "done"
    t_mcu_ms: int | None = None  # the MCU's ticks_ms when it had driven the outputs


@dataclass(frozen=True)
class McuReset:
    hello: McuHello
    failed: tuple[int, ...]


@dataclass(frozen=True)
class McuStatus:
    state: str  # boot_safe | run | safe | latched_safe | fault
    missed: int
    counters: dict[str, int]
    t_rx_ns: int


@dataclass(frozen=True)
class LinkFault:
    reason: str  # silent | io
    detail: str
    t_ns: int


Event = Reading | CommandAck | McuReset | McuStatus | LinkFault

_HOST_COUNTERS = (
    "frames_ok", "crc_errors", "cobs_errors", "short_frames", "version_errors", "oversize",
    "noise_bytes", "seq_errors", "seq_lost", "bad_bodies", "unknown_types", "stale_frames",
    "readings", "acks", "acks_unmatched", "commands_sent", "commands_failed",
    "heartbeats_sent", "resets", "io_errors",
)


@dataclass
class _Pending:
    name: str
    t_sent_ns: int


@dataclass
class _Session:
    hello: McuHello | None = None
    rx: fr.Receiver = field(default_factory=fr.Receiver)
    pending: dict[int, _Pending] = field(default_factory=dict)


class McuLink:
    """One MCU on one serial port. Not thread-safe: one owner thread calls every method."""

    def __init__(self, port: str, *, baudrate: int = 115200, clock: Clock = SYSTEM_CLOCK,
                 open_timeout_s: float = 3.0, command_timeout_s: float = 1.0,
                 silence_s: float = 1.0, serial_factory: Any = None):
        self.port = port
        self._baudrate = baudrate
        self._clock = clock
        self._open_timeout_s = open_timeout_s
        self._command_timeout_ns = int(command_timeout_s * 1e9)
        self._silence_ns = int(silence_s * 1e9)
        self._serial_factory = serial_factory
        self._ser: Any = None
        self._deframer = fr.Deframer()
        self._counts = dict.fromkeys(_HOST_COUNTERS, 0)
        self._s = _Session()
        self._tx_seq = 0
        self._last_rx_ns = 0
        self._silent = False
        self._io_fault = ""  # the last read/write failure, reported by the next poll()
        self.mcu_status: McuStatus | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> McuHello:
        if self._ser is not None:
            raise McuError(f"{self.port}: already open")
        try:
            if self._serial_factory is not None:
                self._ser = self._serial_factory(self.port, self._baudrate)
            else:
                import serial  # the [serial] extra

                self._ser = serial.Serial(self.port, self._baudrate, timeout=0,
                                          write_timeout=1.0, exclusive=True)
        except (OSError, ValueError) as e:  # SerialException is an OSError
            self._ser = None
            raise McuOpenError(f"{self.port}: cannot open the MCU's port: {e}") from e
        self._s = _Session()
        self._deframer = fr.Deframer()
        self._send_frame(fr.T_SYNC, b"")
        # bytes already waiting are not flushed: frames before this session's HELLO are
        # dropped by the protocol itself (counted as stale_frames). The deadline is real time:
        # it bounds a blocking wait, like the timeout of a socket connect.
        deadline = time.monotonic() + self._open_timeout_s
        seen = 0
        while self._s.hello is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise McuOpenError(
                    f"{self.port}: no HELLO from the MCU within {self._open_timeout_s} s "
                    f"({seen} bytes seen, counters {self._nonzero()}): is the firmware "
                    f"running and the baud rate {self._baudrate}?")
            data = self._read(min(left, 0.05))
            seen += len(data)
            for ev in self._take(data):
                if isinstance(ev, McuReset):  # booted while we opened: SYNC went to the void
                    self._send_frame(fr.T_SYNC, b"")
        self._last_rx_ns = self._clock.monotonic_ns()
        return self._s.hello

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except OSError:
                pass

    def __enter__(self) -> McuLink:
        if self._ser is None:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        if self._ser is None:
            raise McuError(f"{self.port}: not open")
        return int(self._ser.fileno())

    @property
    def hello(self) -> McuHello | None:
        """The HELLO of the current session (None before open())."""
        return self._s.hello

    @property
    def counters(self) -> dict[str, int]:
        c = dict(self._counts)
        for kind, n in self._deframer.counts.items():
            c[kind] = n
        c["noise_bytes"] = self._deframer.noise_bytes
        return c

    @property
    def pending(self) -> tuple[int, ...]:
        """Seqs of the commands sent and not yet answered."""
        return tuple(self._s.pending)

    # -- sending -----------------------------------------------------------------------------

    def send_heartbeat(self) -> None:
        self._send_frame(fr.T_HEARTBEAT, b"")
        self._counts["heartbeats_sent"] += 1

    def send_command(self, name: str, params: dict[str, Any] | None = None) -> int:
        """Send one command; returns its seq. Raises McuCommandError if it cannot be encoded,
        McuError if the link is not open (an I/O failure is reported by poll() instead)."""
        try:
            body = fr.command_body(name, list((params or {}).items()))
        except ValueError as e:
            raise McuCommandError(f"command {name!r}: {e}") from e
        seq = self._tx_seq
        self._send_frame(fr.T_COMMAND, body)  # a failed write is reported by poll()
        self._s.pending[seq] = _Pending(name, self._clock.monotonic_ns())
        self._counts["commands_sent"] += 1
        return seq

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (diagnostics and the bad-input tests)."""
        self._write(data)

    def _send_frame(self, ftype: int, body: bytes) -> None:
        wire = fr.encode(ftype, self._tx_seq, body)
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        self._write(wire)

    def _write(self, data: bytes) -> None:
        if self._ser is None:
            raise McuError(f"{self.port}: not open")
        try:
            self._ser.write(data)
        except OSError as e:
            self._counts["io_errors"] += 1
            self._io_fault = f"write: {e}"

    # -- receiving ---------------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> list[Event]:
        """Read what the MCU sent (waiting up to ``timeout_s`` for the first byte) and return
        its events; also reports command timeouts and silence."""
        if self._ser is None:
            raise McuError(f"{self.port}: not open")
        events: list[Event] = []
        if not self._io_fault:
            events.extend(self._take(self._read(timeout_s)))
        if self._io_fault:
            events.extend(self._fault_io(self._io_fault))
        now = self._clock.monotonic_ns()
        for seq, p in list(self._s.pending.items()):
            if now - p.t_sent_ns > self._command_timeout_ns:
                events.append(self._fail(seq, "timeout",
                                         f"no ack within {self._command_timeout_ns // 1_000_000} ms"))
        if not self._silent and now - self._last_rx_ns > self._silence_ns:
            self._silent = True
            events.append(LinkFault("silent", f"no frame from the MCU for "
                                    f"{(now - self._last_rx_ns) // 1_000_000} ms", now))
        return events

    def _read(self, timeout_s: float) -> bytes:
        ser = self._ser
        try:
            if timeout_s > 0 and not ser.in_waiting:
                ready = select.select([ser.fileno()], [], [], timeout_s)[0]
                if ready and not ser.in_waiting:  # readable, nothing to read: gone?
                    return bytes(ser.read(1))  # pyserial raises if the device went away
            n = ser.in_waiting
            return bytes(ser.read(n)) if n else b""
        except OSError as e:
            self._counts["io_errors"] += 1
            self._io_fault = f"read: {e}"
            return b""

    def _fault_io(self, detail: str) -> list[Event]:
        self._io_fault = ""
        events: list[Event] = [
            self._fail(seq, "io", f"the port failed before the MCU acked ({detail})")
            for seq in list(self._s.pending)]
        events.append(LinkFault("io", f"{self.port}: {detail}", self._clock.monotonic_ns()))
        return events

    def _fail(self, seq: int, status: str, detail: str) -> CommandAck:
        self._s.pending.pop(seq, None)
        self._counts["commands_failed"] += 1
        return CommandAck(seq, False, detail, self._clock.monotonic_ns(), status)

    def _take(self, data: bytes) -> list[Event]:
        if not data:
            return []
        now = self._clock.monotonic_ns()
        events: list[Event] = []
        for frame in self._deframer.feed(data):
            try:
                self._frame(frame, now, events)
            except fr.BodyError:
                self._counts["bad_bodies"] += 1
        return events

    def _frame(self, frame: fr.Frame, now: int, events: list[Event]) -> None:
        c = self._counts
        s = self._s
        if frame.ftype == fr.T_HELLO:
            hello = self._hello(frame.body, now)
            c["frames_ok"] += 1
            self._seen(now)
            old = s.hello
            s.rx.restart(frame.seq)
            s.hello = hello
            if old is not None and (hello.reason == "boot" or hello.boot_id != old.boot_id):
                events.extend(self._reset(hello))
            elif old is None and hello.reason == "boot" and self._ser is not None:
                # a boot HELLO while opening: stale (before our SYNC) or a fresh boot; either
                # way the session starts with the HELLO our SYNC asks for
                s.hello = None
                events.append(McuReset(hello, ()))
            return
        if s.hello is None:
            c["stale_frames"] += 1  # from before this session's HELLO
            return
        if not s.rx.take(frame.seq, c):
            return
        self._seen(now)
        if frame.ftype == fr.T_READINGS:
            t_ms, values = fr.read_readings(frame.body)
            points = s.hello.points
            if any(i >= len(points) for i, _ in values):
                raise fr.BodyError("reading of a point HELLO did not announce")
            for i, v in values:
                events.append(Reading(points[i].name, float(v), t_ms, now))
            c["readings"] += len(values)
        elif frame.ftype == fr.T_ACK:
            seq, status, t_ms, detail = fr.read_ack(frame.body)
            if s.pending.pop(seq, None) is None:
                c["acks_unmatched"] += 1  # a late ack after a timeout, or for another session
                return
            c["acks"] += 1
            name = _ACK_STATUS.get(status, "rejected")
            if status != fr.ACK_DONE:
                c["commands_failed"] += 1
            events.append(CommandAck(seq, status == fr.ACK_DONE, detail, now, name, t_ms))
        elif frame.ftype == fr.T_STATUS:
            state, missed, counters = fr.read_status(frame.body)
            st = McuStatus(fr.STATE_NAMES[state] if state < len(fr.STATE_NAMES) else str(state),
                           missed, counters, now)
            self.mcu_status = st
            events.append(st)
        else:
            c["unknown_types"] += 1

    def _seen(self, now: int) -> None:
        self._last_rx_ns = now
        self._silent = False

    def _hello(self, body: bytes, now: int) -> McuHello:
        reason, boot_id, fw_hash, version, cause, hb_ms, missed_max, points = fr.read_hello(body)
        return McuHello(
            fw_version=version, fw_hash=fw_hash.hex(),
            points=tuple(McuPoint(n, u, fr.KIND_NAMES[k]) for n, u, k in points),
            boot_id=boot_id,
            reset_cause=RESET_CAUSES[cause] if cause < len(RESET_CAUSES) else str(cause),
            heartbeat_ms=hb_ms, missed_max=missed_max,
            reason="boot" if reason == fr.HELLO_BOOT else "asked", t_rx_ns=now)

    def _reset(self, hello: McuHello) -> list[Event]:
        self._counts["resets"] += 1
        events: list[Event] = []
        failed = tuple(self._s.pending)
        for seq in failed:
            events.append(self._fail(seq, "reset", f"the MCU reset (cause {hello.reset_cause}) "
                                     "before acknowledging; its outputs came up safe"))
        events.append(McuReset(hello, failed))
        if hello.reason == "boot":
            self._send_frame(fr.T_SYNC, b"")  # the new boot takes no frame before a SYNC
        return events

    def _nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.counters.items() if v}
