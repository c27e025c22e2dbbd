"""Devices on real links behind a real ``edge-bridge`` process, wired to the plant, and the
fault layers of those links.

::

    plant --sense--> simulated device ==link (faults)==> edge-bridge (child) --SDK--> edged
    plant <--drive-- simulated device <==link (faults)== edge-bridge <-- instruction --'

    modbus   a pymodbus server (firmware_bridge.sim.ModbusSim) on a loopback TCP port; sense
             writes registers/coils (``ir:0``, ``hr:3``, ``co:0``, ``di:1``), drive reads them
    can      a cantools ECU (firmware_bridge.sim.CanEcu) on python-can's ``udp_multicast``
             interface (a bus between processes: the virtual bus is in-process only), on a
             port of its own per run; sense sets ``Message.Signal`` values it sends cyclically,
             drive takes the command frames it receives
    mcu      the MCU firmware on MicroPython (SimulatedMcu) behind a serial relay: the bridge
             opens the relay's pty, the relay carries the bytes to the MCU's pty; sense sets
             ADC channels (``adc:4`` the temperature sensor, others volts), drive follows the
             pins and PWM duties the firmware drives (``pin:16``, ``pwm:17``)

Fault layers (``FAULTS`` in _faults.py), aimed at a device by its id:

    bus      can_drop (rate), can_delay (ms), can_corrupt (rate: a payload byte inverted),
             can_error_frames (rate per s, error-passive frames), can_bus_off (an error frame
             with the bus-off bit, then nothing on the bus for the duration), can_flood (rate
             per s of id-0x001 frames, a babbling node: the bridge counts them as unknown ids)
    serial   serial_drop (rate of bytes), serial_flip (rate of bytes with one bit flipped),
             serial_garbage (``bytes`` random bytes to the host at the start), line_break
             (nothing crosses the line for the duration), mcu_reset (the board resets, as a
             brown-out: it boots again with its outputs safe)
    modbus   modbus_timeout (the unit does not answer a request; ``rate``, default 1: every
             one), modbus_exception (exception 4, device failure; ``rate`` likewise),
             modbus_slow (each answer ``ms`` late; the server's one loop also updates its
             datastore late: the rig reads and writes it from a thread of its own, so the
             plant's step never waits)
    any      device_offline: Modbus silent, the ECU silent and deaf, the MCU's line cut

Every random choice is drawn per frame, byte or request *index* (counted per device and
direction from the run's start) from a stream keyed by (seed, device, kind, direction, index),
never by wall time: the same scenario and seed fault the same frame numbers, bytes and
requests, however the machine's timing went. Each hit is in the device's fault log
(``rig.fault_log`` in result.json).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

from ._errors import HilError

_ADC_FULL = 65535.0
_VREF = 3.3


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAULT_LOG_MAX = 5000
"""Hits kept per device in its fault log (the counters count them all)."""


class _Active:
    """The device-layer faults in force on one device: kind -> params (set by the loop), and
    its seeded choices: ``draw(kind, stream, index)`` is the same generator for the same seed
    and index, whenever it is asked."""

    def __init__(self, seed: int) -> None:
        self.on: dict[str, dict[str, float]] = {}
        self.seed = seed
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, int]] = []
        self._next: collections.Counter[str] = collections.Counter()

    def get(self, kind: str) -> dict[str, float] | None:
        return self.on.get(kind)

    def index(self, stream: str, n: int = 1) -> int:
        """The index of the next unit (frame, byte, request) on ``stream``; ``n`` of them taken."""
        with self.lock:
            i = self._next[stream]
            self._next[stream] = i + n
            return i

    def draw(self, kind: str, stream: str, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{kind}:{stream}:{index}")  # str seeds: sha512, stable

    def hit(self, kind: str, stream: str, index: int) -> random.Random | None:
        """The unit's generator when ``kind`` is in force and its draw falls under ``rate``
        (logged), else None."""
        p = self.on.get(kind)
        if p is None:
            return None
        r = self.draw(kind, stream, index)
        if r.random() >= p.get("rate", 1.0):
            return None
        with self.lock:
            if len(self.log) < FAULT_LOG_MAX:
                self.log.append((kind, stream, index))
        return r

    @property
    def offline(self) -> bool:
        return "device_offline" in self.on


class Device:
    """One simulated device: ``start()``, then per plant step ``sense(values)`` and
    ``drive() -> {input: value}``; ``fault_start/fault_end``; ``close()`` idempotent."""

    kind = ""

    def __init__(self, spec: Any, root: Path, seed: int):
        self.spec = spec
        self.root = root
        self.faults = _Active(seed)
        self.counters: collections.Counter[str] = collections.Counter()

    def link_toml(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def prime(self, values: dict[str, float]) -> None:
        """Before the bridge starts: the device's outputs at the plant's initial inputs."""

    def sense(self, values: dict[str, float]) -> None:
        raise NotImplementedError

    def drive(self) -> dict[str, float]:
        raise NotImplementedError

    def fault_start(self, kind: str, params: dict[str, float]) -> None:
        self.faults.on[kind] = params

    def fault_end(self, kind: str) -> None:
        self.faults.on.pop(kind, None)

    def close(self) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------ Modbus


class ModbusDevice(Device):
    kind = "modbus"

    def __init__(self, spec: Any, root: Path, seed: int):
        super().__init__(spec, root, seed)
        self.sim: Any = None
        self._last: dict[str, int] = {}
        self._want: dict[str, int] = {}
        self._outputs: dict[str, float] = {}
        self._io_lock = threading.Lock()
        self._io_wake = threading.Event()
        self._io_stop = threading.Event()
        self._io: threading.Thread | None = None
        self.error = ""

    def link_toml(self) -> str:
        return (f'[[link]]\nname = "mb-{self.spec.id}"\nkind = "modbus_tcp"\nhost = "127.0.0.1"\n'
                f'port = {self.sim.port}\ntimeout = "100ms"\n')

    def start(self) -> None:
        import logging

        from firmware_bridge.sim import ModbusSim

        # the simulated PLC's server logs an ERROR with its last frames whenever a fault the rig
        # injected breaks a request (a silent unit, the bridge's reconnect): expected here
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.sim = ModbusSim(units=(self.spec.unit,)).start()
        self.sim.fault = self._decide

    def _decide(self, index: int, unit: int) -> str:
        """Request ``index`` (the server's count): timeout, exception or answered ("")."""
        if unit != self.spec.unit:
            return ""
        if self.faults.hit("modbus_timeout", "req", index):
            return "timeout"
        if self.faults.hit("modbus_exception", "req", index):
            return "exception"
        return ""

    @staticmethod
    def _where(at: str) -> tuple[str, int]:
        area, _, addr = at.partition(":")
        return area, int(addr)

    def sense(self, values: dict[str, float]) -> None:
        """Hand the plant's values to the I/O thread (the server's datastore is set there: a
        slow device's loop must not stall the plant's step)."""
        raws = {}
        for sig, (at, scale) in self.spec.sense.items():
            area = at.partition(":")[0]
            raws[at] = round(values[sig] / scale) if area in ("hr", "ir") else int(values[sig] > 0.5)
        with self._io_lock:
            self._want.update(raws)
        self._io_wake.set()

    def prime(self, values: dict[str, float]) -> None:
        """The drive places at the plant's initial inputs (before the bridge starts), and the
        I/O thread that keeps the datastore and the plant in step from then on."""
        u = self.spec.unit
        for inp, (at, scale) in self.spec.drive.items():
            area, addr = self._where(at)
            if area in ("hr", "ir"):
                self.sim.set_registers(u, addr, [round(values[inp] / scale) & 0xFFFF], area=area)
            else:
                self.sim.set_bits(u, addr, [values[inp] / scale > 0.5], area=area)
            self._outputs[inp] = values[inp]
        self._io = threading.Thread(target=self._io_loop, name=f"hil-modbus-{self.spec.id}", daemon=True)
        self._io.start()

    def _io_loop(self) -> None:
        u = self.spec.unit
        while not self._io_stop.is_set():
            self._io_wake.wait(0.01)
            self._io_wake.clear()
            try:
                with self._io_lock:
                    want, self._want = self._want, {}
                for at, raw in want.items():
                    if self._last.get(at) == raw:
                        continue  # the datastore is set only on a change
                    self._last[at] = raw
                    area, addr = self._where(at)
                    if area in ("hr", "ir"):
                        self.sim.set_registers(u, addr, [raw & 0xFFFF], area=area)
                    else:
                        self.sim.set_bits(u, addr, [bool(raw)], area=area)
                out = {}
                for inp, (at, scale) in self.spec.drive.items():
                    area, addr = self._where(at)
                    if area in ("hr", "ir"):
                        raw = self.sim.registers(u, addr, area=area)[0]
                        out[inp] = (raw - 0x10000 if raw >= 0x8000 else raw) * scale
                    else:
                        out[inp] = float(self.sim.bits(u, addr, area=area)[0]) * scale
                with self._io_lock:
                    self._outputs.update(out)
            except Exception as exc:  # the simulator broke: the loop raises it as the rig's ERROR
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def drive(self) -> dict[str, float]:
        if self.error:
            raise HilError(f"the Modbus simulator's I/O failed: {self.error}")
        with self._io_lock:
            return dict(self._outputs)

    def fault_start(self, kind: str, params: dict[str, float]) -> None:
        super().fault_start(kind, params)
        if kind == "device_offline":
            self.sim.silent.add(self.spec.unit)
        elif kind == "modbus_slow":
            self.sim.delay_s = params.get("ms", 200.0) / 1000.0

    def fault_end(self, kind: str) -> None:
        super().fault_end(kind)
        if kind == "device_offline":
            self.sim.silent.discard(self.spec.unit)
        elif kind == "modbus_slow":
            self.sim.delay_s = 0.0

    def close(self) -> None:
        self._io_stop.set()
        if self._io is not None:
            self._io.join(10)  # a slow device's answer still in the way: bounded by its delay
            self._io = None
        sim, self.sim = self.sim, None
        if sim is not None:
            sim.stop()


# ------------------------------------------------------------------ CAN


class _FaultyBus:
    """The ECU's side of the bus: a python-can bus with the bus faults applied to what the
    ECU sends and receives, and the ECU's own frames (looped back by multicast) left out."""

    def __init__(self, bus: Any, own_ids: set[int], faults: _Active):
        self.bus = bus
        self.own = own_ids
        self.faults = faults
        self.out: collections.deque[tuple[float, Any]] = collections.deque()
        self.inq: collections.deque[tuple[float, Any]] = collections.deque()
        self.counters: collections.Counter[str] = collections.Counter()

    def _mangle(self, msg: Any, stream: str) -> Any:
        """None to drop ``msg``; else the frame (maybe corrupted). ``stream``: "tx" (the ECU's
        frames) or "rx" (frames to it); the choice is the frame index's on that stream."""
        f = self.faults
        i = f.index(stream)
        if f.offline or "can_bus_off" in f.on or f.hit("can_drop", stream, i):
            self.counters["dropped"] += 1
            return None
        r = f.hit("can_corrupt", stream, i) if len(msg.data) else None
        if r is not None:
            data = bytearray(msg.data)
            data[r.randrange(len(data))] ^= 0xFF
            msg.data = data
            self.counters["corrupted"] += 1
        return msg

    def _delay_s(self) -> float:
        p = self.faults.get("can_delay")
        return p.get("ms", 50.0) / 1000.0 if p else 0.0

    def send(self, msg: Any, timeout: float | None = None) -> None:
        now = time.monotonic()
        m = self._mangle(msg, "tx")
        if m is None:
            return
        d = self._delay_s()
        if d:
            self.out.append((now + d, m))
            self.counters["delayed"] += 1
        else:
            self.bus.send(m)
        self._flush(now)

    def _flush(self, now: float) -> None:
        while self.out and self.out[0][0] <= now:
            self.bus.send(self.out.popleft()[1])

    def recv(self, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            now = time.monotonic()
            self._flush(now)
            if self.inq and self.inq[0][0] <= now:
                return self.inq.popleft()[1]
            left = deadline - now
            if left <= 0:
                return None
            msg = self.bus.recv(timeout=min(left, 0.005))
            if msg is None or msg.is_error_frame or msg.arbitration_id in self.own:
                continue
            m = self._mangle(msg, "rx")
            if m is None:
                continue
            d = self._delay_s()
            if d:
                self.inq.append((now + d, m))
                self.counters["delayed"] += 1
                continue
            return m

    def error_frame(self, can_id: int, data: bytes) -> None:
        import can

        self.bus.send(can.Message(arbitration_id=can_id, data=data, is_error_frame=True))
        self.counters["error_frames"] += 1


class CanDevice(Device):
    kind = "can"

    def __init__(self, spec: Any, root: Path, seed: int):
        super().__init__(spec, root, seed)
        from can.interfaces.udp_multicast import UdpMulticastBus

        self.group = UdpMulticastBus.DEFAULT_GROUP_IPv4
        self.port = _free_udp_port()
        self.bus: Any = None
        self.fbus: _FaultyBus | None = None
        self.ecu: Any = None
        self.received: dict[str, float] = {}
        self._next_err = 0.0
        self._flood_at = 0.0
        self._flooded = 0

    def link_toml(self) -> str:
        return (f'[[link]]\nname = "can-{self.spec.id}"\nkind = "can"\n'
                f'interface = "udp_multicast"\nchannel = "{self.group}"\nport = {self.port}\n')

    def start(self) -> None:
        import can

        from firmware_bridge import load_profile
        from firmware_bridge.sim import CanEcu

        db = load_profile(self.spec.profile).db
        sends = sorted({at.partition(".")[0] for at, _ in self.spec.sense.values()}
                       | {t.partition(".")[0] for t in self.spec.echo.values()})
        own = {db.get_message_by_name(n).frame_id for n in sends}
        self.bus = can.Bus(interface="udp_multicast", channel=self.group, port=self.port)
        self.fbus = _FaultyBus(self.bus, own, self.faults)
        echo = {tuple(k.split(".", 1)): tuple(v.split(".", 1)) for k, v in self.spec.echo.items()}
        self.ecu = CanEcu(self.fbus, db, sends, period_s=self.spec.period_ns / 1e9,
                          echo=echo, on_receive=self._on_receive)  # type: ignore[arg-type]
        self.ecu.start()

    def _on_receive(self, message: str, decoded: dict[str, Any]) -> None:
        for k, v in decoded.items():
            self.received[f"{message}.{k}"] = float(v)

    def sense(self, values: dict[str, float]) -> None:
        for sig, (at, scale) in self.spec.sense.items():
            msg, _, name = at.partition(".")
            self.ecu.values[msg][name] = values[sig] * scale
        now = time.monotonic()
        flood = self.faults.get("can_flood")
        if flood and self.fbus is not None:  # a babbling node: top-priority junk frames
            import can

            if not self._flood_at:
                self._flood_at = now
            due = int((now - self._flood_at) * flood.get("rate", 2000.0)) - self._flooded
            for _ in range(max(0, min(due, 500))):
                self.fbus.bus.send(can.Message(arbitration_id=0x001, data=bytes(8), is_extended_id=False))
                self._flooded += 1
                self.fbus.counters["flood_frames"] += 1
        else:
            self._flood_at, self._flooded = 0.0, 0
        p = self.faults.get("can_error_frames")
        if p and now >= self._next_err and self.fbus is not None:
            self.fbus.error_frame(0x004, bytes([0, 0x30, 0, 0, 0, 0, 0, 0]))  # CRTL: rx/tx passive
            self._next_err = now + 1.0 / max(p.get("rate", 10.0), 0.1)

    def prime(self, values: dict[str, float]) -> None:
        for inp, (at, scale) in self.spec.drive.items():
            self.received[at] = values[inp] / scale

    def drive(self) -> dict[str, float]:
        return {inp: self.received[at] * scale for inp, (at, scale) in self.spec.drive.items()
                if at in self.received}

    def fault_start(self, kind: str, params: dict[str, float]) -> None:
        super().fault_start(kind, params)
        if kind == "can_bus_off" and self.fbus is not None:
            self.fbus.error_frame(0x040, bytes(8))  # CAN_ERR_BUSOFF

    def fault_end(self, kind: str) -> None:
        super().fault_end(kind)
        if kind == "can_error_frames" and self.fbus is not None:
            # the controller's error counters fall again: SocketCAN says "error active"
            self.fbus.error_frame(0x004, bytes([0, 0x40, 0, 0, 0, 0, 0, 0]))

    def close(self) -> None:
        ecu, self.ecu = self.ecu, None
        if ecu is not None:
            ecu.stop()
        bus, self.bus = self.bus, None
        if bus is not None:
            bus.shutdown()

    @property
    def link_counters(self) -> dict[str, int]:
        return dict(self.fbus.counters) if self.fbus else {}


# ------------------------------------------------------------------ MCU over a serial relay


class SerialRelay:
    """The serial line between the bridge and the MCU: the bridge opens ``port`` (a pty of
    the relay's), the relay carries bytes to and from the MCU's pty, applying the serial
    faults in both directions."""

    def __init__(self, mcu_port: str, faults: _Active):
        self.faults = faults
        self._mcu = os.open(mcu_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._mcu)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._stop_r, self._stop_w = os.pipe()
        self.inject = b""
        self.counters: collections.Counter[str] = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="hil-serial", daemon=True)
        self._thread.start()

    def _mangle(self, data: bytes, stream: str) -> bytes:
        """What crosses of ``data`` on ``stream`` ("up": MCU -> host, "down"); the choices are
        each byte's, by its index on the stream."""
        f = self.faults
        first = f.index(stream, len(data))
        if f.offline or "line_break" in f.on:
            self.counters["bytes_lost"] += len(data)
            return b""
        if "serial_drop" not in f.on and "serial_flip" not in f.on:
            return data
        out = bytearray()
        for j, b in enumerate(data):
            if f.hit("serial_drop", stream, first + j):
                self.counters["bytes_dropped"] += 1
                continue
            r = f.hit("serial_flip", stream, first + j)
            if r is not None:
                b ^= 1 << r.randrange(8)
                self.counters["bytes_flipped"] += 1
            out.append(b)
        return bytes(out)

    def _run(self) -> None:
        while True:
            if self.inject:
                data, self.inject = self.inject, b""
                with contextlib.suppress(OSError):
                    os.write(self._master, data)
            try:
                r, _, _ = select.select([self._mcu, self._master, self._stop_r], [], [], 0.01)
            except (OSError, ValueError):
                return
            if self._stop_r in r:
                return
            for src, dst, key in ((self._mcu, self._master, "up"), (self._master, self._mcu, "down")):
                if src not in r:
                    continue
                try:
                    data = os.read(src, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # the other end closed (the bridge reopening): keep relaying
                    continue
                self.counters[f"bytes_{key}"] += len(data)
                data = self._mangle(data, key)
                if data:
                    with contextlib.suppress(OSError):
                        os.write(dst, data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._mcu, self._master, self._slave, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class McuDevice(Device):
    kind = "mcu"

    def __init__(self, spec: Any, root: Path, seed: int):
        super().__init__(spec, root, seed)
        self.sim: Any = None
        self.relay: SerialRelay | None = None
        self._seen = 0
        self.outputs: dict[str, float] = {}
        self._last: dict[int, int] = {}

    def link_toml(self) -> str:
        assert self.relay is not None
        return f'[[link]]\nname = "uart-{self.spec.id}"\nkind = "mcu"\nport = "{self.relay.port}"\n'

    def start(self) -> None:
        from firmware_bridge.mcu_link import SimulatedMcu, SimulatorError

        try:
            self.sim = SimulatedMcu().start()
        except SimulatorError as exc:
            raise HilError(f"device {self.spec.id}: the MCU simulator would not start: {exc}") from exc
        self.relay = SerialRelay(self.sim.port, self.faults)

    def sense(self, values: dict[str, float]) -> None:
        for sig, (at, scale) in self.spec.sense.items():
            ch = int(at.partition(":")[2])
            v = values[sig] * scale
            volts = (27.0 - v) * 0.001721 + 0.706 if ch == 4 else v
            raw = max(0, min(65535, round(volts / _VREF * _ADC_FULL)))
            if self._last.get(ch) != raw:
                self._last[ch] = raw
                self.sim.set_adc(ch, raw)

    def drive(self) -> dict[str, float]:
        events = self.sim.events
        for e in events[self._seen:]:
            if e["ev"] == "pin":
                self.outputs[f"pin:{e['pin']}"] = float(e["value"])
            elif e["ev"] == "pwm":
                self.outputs[f"pwm:{e['pin']}"] = float(e["duty"]) / _ADC_FULL
            elif e["ev"] == "boot":
                self.counters["boots"] += 1
        self._seen = len(events)
        return {inp: self.outputs.get(at, 0.0) * scale for inp, (at, scale) in self.spec.drive.items()}

    def fault_start(self, kind: str, params: dict[str, float]) -> None:
        super().fault_start(kind, params)
        if kind == "mcu_reset":
            self.sim.reset()
        elif kind == "serial_garbage" and self.relay is not None:
            r = self.faults.draw(kind, "inject", self.faults.index("inject"))
            self.relay.inject += r.randbytes(int(params.get("bytes", 64)))

    def close(self) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.close()
        sim, self.sim = self.sim, None
        if sim is not None:
            sim.close()

    @property
    def link_counters(self) -> dict[str, int]:
        return dict(self.relay.counters) if self.relay else {}


DEVICE_KINDS: dict[str, type[Device]] = {"modbus": ModbusDevice, "can": CanDevice, "mcu": McuDevice}


# ------------------------------------------------------------------ the bridge


class Bench:
    """Every device of a scenario and the ``edge-bridge`` child that connects them to edged."""

    def __init__(self, specs: Any, rig: Any, seed: int):
        self.rig = rig
        self.devices = [DEVICE_KINDS[s.kind](s, rig.root, seed * 7919 + i) for i, s in enumerate(specs)]
        self.bridge: Any = None
        self.by_id = {d.spec.id: d for d in self.devices}
        self.trace = rig.root / "bridge-readings.csv"  # the bridge's bridge_trace_file

    def start(self, timeout: float, initial: dict[str, float]) -> None:
        for d in self.devices:
            try:
                d.start()
                d.prime(initial)
            except HilError:
                raise
            except Exception as exc:
                raise HilError(f"device {d.spec.id}: its simulator would not start: {exc}") from exc
        self.start_bridge(timeout)

    def write_config(self) -> Path:
        parts = ["[bridge]", "bridge_tick_ms = 10", "bridge_safe_after_ms = 300",
                 "bridge_health_ms = 200", f'bridge_trace_file = "{self.trace}"', ""]
        for d in self.devices:
            parts.append(d.link_toml())
            lines = [f'[[device]]\nname = "{d.spec.id}"\nlink = "{link_name(d)}"',
                     f'profile = "{d.spec.profile}"']
            if d.kind == "modbus":
                lines.append(f"unit = {d.spec.unit}")
            parts.append("\n".join(lines) + "\n")
        path = self.rig.root / "bridge.toml"
        path.write_text("\n".join(parts))
        return path

    def start_bridge(self, timeout: float) -> None:
        cfg = self.write_config()
        exe = Path(sys.executable).with_name("edge-bridge")
        argv = ([str(exe)] if exe.exists() else [sys.executable, "-c",
                                                  "from firmware_bridge import main; main()"])
        argv += ["--config", str(cfg), "--run-dir", str(self.rig.run_dir), "--log-level", "WARNING"]
        self.bridge = self.rig.spawn_command("edge-bridge", argv)
        self.wait_connected(timeout)

    def wait_connected(self, timeout: float) -> None:
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        want = set(self.by_id)
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            if not self.bridge.alive():
                raise HilError(f"edge-bridge exited with code {self.bridge.proc.returncode}; "
                               f"{self.bridge.log_tail()}")
            with contextlib.suppress(Exception):
                with CtlClient(self.rig.run_dir, timeout=1.0) as c:
                    agents = c.request(CtlOp.AGENTS)["agents"]
                seen = {a["agent_id"] for a in agents if a.get("state") == "active"}
                if want <= seen:
                    return
            time.sleep(0.05)  # polling a child process coming up
        raise HilError(f"the bridge's devices {sorted(want - seen)} did not reach edged within "
                       f"{timeout:g} s; {self.bridge.log_tail()}")

    def kill_bridge(self) -> None:
        b = self.bridge
        if b is not None and b.alive():
            b.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                b.proc.wait(10)

    def bridge_alive(self) -> bool:
        return self.bridge is not None and self.bridge.alive()

    def close(self) -> list[str]:
        problems = []
        if self.bridge is not None:
            try:
                self.bridge.stop()
            except Exception as exc:
                problems.append(f"edge-bridge: {exc}")
        for d in self.devices:
            try:
                d.close()
            except Exception as exc:
                problems.append(f"device {d.spec.id}: {exc}")
        return problems

    def readings(self, t0_ns: int) -> list[tuple[float, str, str, float, str]]:
        """What the devices reported to edged through the bridge (its readings trace), as
        recording samples, ms since ``t0_ns``; a reading from before the run is the value in
        force at its start (t 0), the last one per series."""
        import csv

        out: list[tuple[float, str, str, float, str]] = []
        before: dict[tuple[str, str, str], tuple[float, str, str, float, str]] = {}
        try:
            with open(self.trace, newline="", encoding="utf-8") as fh:
                for row in csv.reader(fh):
                    if len(row) != 5:
                        continue  # a line the killed bridge left half written
                    t_ms = (int(row[0]) - t0_ns) / 1e6
                    sample = (max(t_ms, 0.0), row[1], row[2], float(row[3]), row[4])
                    if t_ms < 0:
                        before[(row[1], row[2], row[4])] = sample
                    else:
                        out.append(sample)
        except FileNotFoundError:
            return []
        return [*before.values(), *out]

    def fault_logs(self) -> dict[str, list[tuple[str, str, int]]]:
        """Per device, every seeded hit: (kind, stream, index)."""
        return {d.spec.id: list(d.faults.log) for d in self.devices if d.faults.log}

    def counters(self) -> dict[str, dict[str, int]]:
        out = {}
        for d in self.devices:
            c = dict(d.counters)
            c.update(getattr(d, "link_counters", {}))
            out[d.spec.id] = c
        return out


def link_name(d: Device) -> str:
    return {"modbus": "mb", "can": "can", "mcu": "uart"}[d.kind] + "-" + d.spec.id
