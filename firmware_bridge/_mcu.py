"""The MCU link: the bridge side of the MicroPython firmware in ``firmware_bridge/mcu/``.

This adapter plugs the host-side link class (``McuLink``: COBS/CRC framing over pyserial,
written with the firmware) into the bridge's Link base. It is written against that class's
planned API -- ``open() -> hello`` (firmware version, hash, point names), ``poll(timeout_s)``
-> events (readings, command acks, resets, errors), ``send_heartbeat()``,
``send_command(name, params) -> seq``, ``counters``, ``close()`` -- and imports it lazily from
:data:`MCU_LINK`.

* readings become the device's points (names from the hello frame);
* ``send_command`` for an instruction; the Ack leaves on the MCU's ack frame for that seq;
* a reset of the MCU fails every command in flight ("the MCU reset mid-command");
* host heartbeats are sent when the bridge's supervisor says it is healthy (``beat()``), so a
  stalled bridge or a lost edged lets the MCU go safe after its missed heartbeats.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from edge.rules import parse_duration

from ._errors import BackendError, LinkError
from ._link import Link, log
from ._profile import Point, Profile, Write

MCU_LINK = ("firmware_bridge.mcu.host", "McuLink")
"""(module, class) of the host-side link class."""

Done = Callable[[bool, str, int], None]
OnValues = Callable[[list[tuple[Point, float]], int], None]


def mcu_link_class() -> Any:
    module, cls = MCU_LINK
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"the MCU link class {module}.{cls} is not available: {exc}") from None


@dataclasses.dataclass(slots=True)
class _Cmd:
    name: str
    params: dict[str, float]
    done: Done
    deadline: int = 0
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
        }
        self.hello: Any = None
        self.last_error = ""


class McuSerialLink(Link):
    """``port``, ``baudrate``, ``command_timeout`` (e.g. "500ms")."""

    kind = "mcu"

    def __init__(self, name: str, options: Mapping[str, Any], **kw: Any):
        super().__init__(name, options, **kw)
        self.port = str(options.get("port", ""))
        self.baudrate = int(options.get("baudrate", 115200))
        self.command_timeout_ns = parse_duration(str(options.get("command_timeout", "500ms")))
        self.dev: McuDevice | None = None
        self._mcu: Any = None
        self._queue: list[_Cmd] = []
        self._inflight: dict[int, _Cmd] = {}
        self._lock = threading.Lock()
        self._beat = False
        self.counters.update({"heartbeats": 0})

    def add_device(self, name: str, profile: Profile, on_values: OnValues) -> McuDevice:
        if self.dev is not None:
            raise LinkError(f"link {self.name}: one MCU per serial link")
        self.dev = McuDevice(name, profile, on_values)
        return self.dev

    def discover(self) -> list[str]:
        """Open the link once to read the hello frame's point names (for a profile that lists
        none); the link is left closed for the thread to reopen."""
        mcu = mcu_link_class()(self.port, baudrate=self.baudrate)
        try:
            hello = mcu.open()
            return [str(n) for n in getattr(hello, "points", ())]
        finally:
            mcu.close()

    def command(self, dev: McuDevice, writes: list[Write], done: Done) -> None:
        if len(writes) != 1 or not writes[0].command:
            raise LinkError("an MCU action sends exactly one command")
        w = writes[0]
        with self._lock:
            self._queue.append(_Cmd(w.command, {k: float(v) for k, v in w.fields}, done))

    def beat(self) -> None:
        """The supervisor is healthy: send a host heartbeat on the next turn."""
        self._beat = True

    # ------------------------------------------------------------ the link

    def _open(self) -> None:
        self._mcu = mcu_link_class()(self.port, baudrate=self.baudrate)
        hello = self._mcu.open()
        if self.dev is not None:
            self.dev.hello = hello
            names = set(getattr(hello, "points", ()))
            missing = [p for p in self.dev.points if p not in names]
            if missing:
                log.warning("MCU %s: the firmware announces no points %s", self.name, missing)

    def _close(self) -> None:
        mcu, self._mcu = self._mcu, None
        if mcu is not None:
            mcu.close()

    def _step(self, budget_s: float) -> None:
        mcu, dev = self._mcu, self.dev
        now = self.clock.monotonic_ns()
        if self._beat:
            self._beat = False
            mcu.send_heartbeat()
            self.count("heartbeats")
        with self._lock:
            queued, self._queue = self._queue, []
        for cmd in queued:
            cmd.t_sent = now
            cmd.deadline = now + self.command_timeout_ns
            seq = mcu.send_command(cmd.name, cmd.params)
            self._inflight[seq] = cmd
            if dev is not None:
                dev.counters["commands"] += 1
        for seq, cmd in list(self._inflight.items()):
            if now >= cmd.deadline:
                del self._inflight[seq]
                if dev is not None:
                    dev.counters["timeouts"] += 1
                cmd.done(
                    False,
                    f"the MCU did not acknowledge {cmd.name} within "
                    f"{self.command_timeout_ns / 1e6:g} ms",
                    now,
                )
        for ev in mcu.poll(budget_s):
            self._event(ev)

    def _event(self, ev: Any) -> None:
        dev = self.dev
        kind = str(getattr(ev, "kind", type(ev).__name__)).lower()
        t = int(getattr(ev, "t_ns", 0) or self.clock.monotonic_ns())
        if dev is None:
            return
        if "reading" in kind:
            values = dict(getattr(ev, "values", {}))
            out = []
            for name, v in values.items():
                p = dev.points.get(name)
                if p is None:
                    dev.counters["unknown_points"] += 1
                    continue
                out.append((p, p.from_raw(float(v))))
            dev.counters["readings"] += len(out)
            if out:
                dev.on_values(out, t)
        elif "ack" in kind:
            cmd = self._inflight.pop(int(getattr(ev, "seq", -1)), None)
            if cmd is None:
                dev.counters["errors"] += 1
                return
            ok = bool(getattr(ev, "ok", True))
            dev.counters["acks" if ok else "nacks"] += 1
            detail = str(getattr(ev, "detail", "") or "")
            cmd.done(
                ok,
                f"the MCU acknowledged {cmd.name}"
                + (f": {detail}" if detail else "")
                + f" after {(t - cmd.t_sent) / 1e6:.2f} ms",
                t,
            )
        elif "reset" in kind:
            dev.counters["resets"] += 1
            for seq, cmd in list(self._inflight.items()):
                del self._inflight[seq]
                cmd.done(False, "the MCU reset mid-command: not confirmed", t)
        else:
            dev.counters["errors"] += 1
            dev.last_error = str(getattr(ev, "detail", ev))

    def on_down(self) -> None:
        now = self.clock.monotonic_ns()
        for seq, cmd in list(self._inflight.items()):
            del self._inflight[seq]
            cmd.done(False, f"the MCU link went down ({self.last_error})", now)
