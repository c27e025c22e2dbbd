"""The MCU link backend: the bridge side of the MicroPython firmware in ``firmware_bridge/mcu/``,
through its host-side link class (:class:`firmware_bridge.mcu_link.McuLink`: COBS frames with
CRC-16 over pyserial), plugged into the Link base.

* readings become the device's points; a profile that lists no points takes them (names and
  units) from the firmware's hello frame;
* an instruction becomes one ``send_command``; the Ack leaves on the MCU's ack frame for that
  seq (``done`` -> OK; ``rejected``/``safe``/``timeout``/``reset``/``io`` -> FAILED, saying so);
* a reset of the MCU mid-command fails that command ("the MCU reset: not confirmed"); an I/O
  fault closes the port and the base reopens it with backoff; silence marks the device offline;
* host heartbeats go out once per the hello's ``heartbeat_ms``, and only while the bridge's
  supervisor says the chain is healthy (``beat()``), so a stalled bridge or a lost edged lets
  the MCU go safe on its own after ``missed_max`` periods.

McuLink is not thread-safe: only the link's thread touches it; instructions are queued.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import LinkError
from ._link import Link, log
from ._profile import Point, Profile, Write

Done = Callable[[bool, str, int], None]
OnValues = Callable[[list[tuple[Point, float]], int], None]


@dataclasses.dataclass(slots=True)
class _Cmd:
    name: str
    params: dict[str, float]
    done: Done
    t_sent: int = 0


class McuDevice:
    def __init__(self, name: str, profile: Profile, on_values: OnValues):
        self.name = name
        self.profile = profile
        self.on_values = on_values
        self.points = {p.name: p for p in profile.points}
        self.counters = {
            "readings": 0,
            "unknown_points": 0,
            "commands": 0,
            "acks": 0,
            "nacks": 0,
            "resets": 0,
            "errors": 0,
            "timeouts": 0,
            "silences": 0,
        }
        self.hello: Any = None
        self.state = ""  # the MCU's own state (run, safe, latched_safe, ...)
        self.silent = False
        self.last_error = ""

    @property
    def online(self) -> bool:
        return self.hello is not None and not self.silent


class McuSerialLink(Link):
    """``port``, ``baudrate``, ``command_timeout`` (e.g. "1s"), ``silence`` (e.g. "1s")."""

    kind = "mcu"

    def __init__(self, name: str, options: Mapping[str, Any], **kw: Any):
        super().__init__(name, options, **kw)
        from edge.rules import parse_duration

        self.port = str(options.get("port", ""))
        if not self.port:
            raise LinkError(f'link {name}: an mcu link needs port = "/dev/ttyACM0"')
        self.baudrate = int(options.get("baudrate", 115200))
        self.command_timeout_s = parse_duration(str(options.get("command_timeout", "1s"))) / 1e9
        self.silence_s = parse_duration(str(options.get("silence", "1s"))) / 1e9
        self.dev: McuDevice | None = None
        self._mcu: Any = None
        self._queue: list[_Cmd] = []
        self._inflight: dict[int, _Cmd] = {}
        self._lock = threading.Lock()
        self._beat = False
        self._last_beat = 0
        self.counters.update({"heartbeats": 0})

    def _new_mcu(self) -> Any:
        from .mcu_link import McuLink

        return McuLink(
            self.port,
            baudrate=self.baudrate,
            clock=self.clock,
            command_timeout_s=self.command_timeout_s,
            silence_s=self.silence_s,
        )

    def add_device(self, name: str, profile: Profile, on_values: OnValues) -> McuDevice:
        if self.dev is not None:
            raise LinkError(f"link {self.name}: one MCU per serial link")
        self.dev = McuDevice(name, profile, on_values)
        return self.dev

    def discover(self) -> list[Point]:
        """Open the port once for the hello frame's points (for a profile listing none)."""
        mcu = self._new_mcu()
        try:
            hello = mcu.open()
            return [Point(p.name, unit=p.unit) for p in hello.points]
        finally:
            mcu.close()

    def command(self, dev: McuDevice, writes: list[Write], done: Done) -> None:
        if len(writes) != 1 or not writes[0].command:
            raise LinkError("an MCU action sends exactly one command")
        w = writes[0]
        with self._lock:
            self._queue.append(_Cmd(w.command, {k: float(v) for k, v in w.fields}, done))

    def beat(self) -> None:
        """The supervisor is healthy: a heartbeat may go out on the link's next turn."""
        self._beat = True

    # ------------------------------------------------------------ the link

    def _open(self) -> None:
        mcu = self._new_mcu()
        hello = mcu.open()  # McuOpenError (an EdgeError): counted, retried with backoff
        self._mcu = mcu
        dev = self.dev
        if dev is not None:
            dev.hello, dev.silent = hello, False
            names = {p.name for p in hello.points}
            missing = sorted(set(dev.points) - names)
            if missing:
                log.warning(
                    "MCU %s (fw %s %s) announces no points %s",
                    self.name,
                    hello.fw_version,
                    hello.fw_hash,
                    missing,
                )

    def _close(self) -> None:
        mcu, self._mcu = self._mcu, None
        if mcu is not None:
            mcu.close()

    def _step(self, budget_s: float) -> None:
        from .mcu_link import CommandAck, LinkFault, McuReset, McuStatus, Reading

        mcu, dev = self._mcu, self.dev
        now = self.clock.monotonic_ns()
        hb_ns = (mcu.hello.heartbeat_ms if mcu.hello else 100) * 1_000_000
        if self._beat and now - self._last_beat >= hb_ns:
            self._beat = False
            self._last_beat = now
            mcu.send_heartbeat()
            self.count("heartbeats")
        with self._lock:
            queued, self._queue = self._queue, []
        for cmd in queued:
            cmd.t_sent = now
            try:
                seq = mcu.send_command(cmd.name, cmd.params)
            except ValueError as exc:  # McuCommandError: the frame cannot carry it
                cmd.done(False, str(exc), now)
                continue
            self._inflight[seq] = cmd
            if dev is not None:
                dev.counters["commands"] += 1
        readings: list[tuple[Point, float]] = []
        t_read = now
        for ev in mcu.poll(min(budget_s, 0.02)):
            if dev is None:
                continue
            if isinstance(ev, Reading):
                dev.silent = False
                p = dev.points.get(ev.point)
                if p is None:
                    dev.counters["unknown_points"] += 1
                    continue
                dev.counters["readings"] += 1
                readings.append((p, p.from_raw(float(ev.value))))
                t_read = ev.t_rx_ns
            elif isinstance(ev, CommandAck):
                self._ack(dev, ev)
            elif isinstance(ev, McuReset):
                dev.counters["resets"] += 1
                dev.hello = ev.hello
                log.warning(
                    "MCU %s reset (%s); commands never confirmed: %s",
                    self.name,
                    ev.hello.reset_cause,
                    list(ev.failed),
                )
            elif isinstance(ev, McuStatus):
                dev.state = ev.state
                dev.silent = False
            elif isinstance(ev, LinkFault):
                dev.last_error = f"{ev.reason}: {ev.detail}"
                if ev.reason == "io":
                    raise LinkError(f"the MCU's port failed: {ev.detail}")
                dev.silent = True
                dev.counters["silences"] += 1
        if readings and dev is not None:
            dev.on_values(readings, t_read)

    def _ack(self, dev: McuDevice, ev: Any) -> None:
        cmd = self._inflight.pop(ev.seq, None)
        if cmd is None:
            dev.counters["errors"] += 1
            return
        if ev.ok:
            dev.counters["acks"] += 1
            cmd.done(
                True,
                f"the MCU acknowledged {cmd.name} ({ev.detail}) after "
                f"{(ev.t_done_ns - cmd.t_sent) / 1e6:.2f} ms",
                ev.t_done_ns,
            )
            return
        dev.counters["timeouts" if ev.status == "timeout" else "nacks"] += 1
        why = {
            "reset": "the MCU reset before acknowledging it: not confirmed",
            "safe": "the MCU holds its outputs safe",
            "timeout": "no ack from the MCU in time",
            "io": "the MCU's port failed while it was pending",
            "rejected": "the MCU rejected it",
        }.get(ev.status, ev.status)
        cmd.done(
            False, f"{cmd.name}: {why}" + (f" ({ev.detail})" if ev.detail else ""), ev.t_done_ns
        )

    def on_down(self) -> None:
        now = self.clock.monotonic_ns()
        for seq, cmd in list(self._inflight.items()):
            del self._inflight[seq]
            cmd.done(False, f"the MCU link went down ({self.last_error})", now)
        if self.dev is not None:
            self.dev.silent = True
