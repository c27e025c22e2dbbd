"""Modbus TCP and RTU links: pymodbus 3.x builds and parses the frames and PDUs, this adapter
owns the socket or serial port and the schedule.

Per link one scheduler thread (the Link base's):

* **writes in a lane ahead of polls**: a queued write goes out before any due poll;
* **contiguous points merged**: points of one device, area and poll group whose addresses touch
  are read by one request (at most 125 registers or 2,000 bits; :func:`plan_blocks`);
* **TCP pipelined**: up to ``max_inflight`` requests out at once, each answer matched to its
  request by transaction id; an answer whose id is not outstanding (late, after its timeout;
  or another client's) is counted as ``stray_responses`` and dropped;
* **RTU**: exactly one request outstanding per bus, and the 3.5-character silent interval
  (at least 1.75 ms above 19,200 baud) before each request; after a timeout the input is
  flushed so that a late answer is never taken for the next request's;
* **a circuit breaker per device**: a device that stops answering opens its breaker and is
  probed with backoff, so it never takes the slots or the bus time of the others; writes to it
  fail at once ("device offline") instead of waiting.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from edge.rules import parse_duration

from . import _regs
from ._errors import ActionError, BridgeError
from ._link import Breaker, Link, log
from ._profile import Point

MAX_REGISTERS = 125
MAX_BITS = 2000
_READS: dict[str, tuple[type[ModbusPDU], int]] = {
    "coil": (ReadCoilsRequest, MAX_BITS),
    "discrete_input": (ReadDiscreteInputsRequest, MAX_BITS),
    "input_register": (ReadInputRegistersRequest, MAX_REGISTERS),
    "holding_register": (ReadHoldingRegistersRequest, MAX_REGISTERS),
}
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}

Done = Callable[[bool, str, int], None]
"""A write's outcome: (confirmed, detail, t_ns of the device's answer)."""
OnValues = Callable[[list[tuple[Point, float]], int], None]


@dataclasses.dataclass(slots=True)
class Block:
    """One read request of a poll plan: ``count`` registers/bits from ``start``."""

    area: str
    start: int
    count: int
    points: tuple[Point, ...]
    period_ns: int
    next_due: int = 0


def plan_blocks(
    points: Iterable[Point],
    periods: Mapping[str, int],
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
) -> list[Block]:
    """Merge points of the same area and poll group whose addresses touch or overlap into
    blocks of at most ``max_registers`` registers / ``max_bits`` bits (pure)."""
    by_key: dict[tuple[str, str], list[Point]] = collections.defaultdict(list)
    for p in points:
        by_key[(p.poll, p.area)].append(p)
    blocks: list[Block] = []
    for (poll, area), group in sorted(by_key.items()):
        limit = max_bits if area in ("coil", "discrete_input") else max_registers
        cur: list[Point] = []
        start = end = 0
        for p in sorted(group, key=lambda q: q.address):
            p_end = p.address + p.registers
            if cur and p.address <= end and max(end, p_end) - start <= limit:
                cur.append(p)
                end = max(end, p_end)
                continue
            if cur:
                blocks.append(Block(area, start, end - start, tuple(cur), periods[poll]))
            cur, start, end = [p], p.address, p_end
        if cur:
            blocks.append(Block(area, start, end - start, tuple(cur), periods[poll]))
    return blocks


def block_values(block: Block, pdu: ModbusPDU) -> list[tuple[Point, float]]:
    """A read response's values per point, in engineering units (string points skipped)."""
    out: list[tuple[Point, float]] = []
    if block.area in ("coil", "discrete_input"):
        bits = list(pdu.bits)
        for p in block.points:
            out.append((p, p.from_raw(float(bits[p.address - block.start]))))
        return out
    regs = pdu.registers
    if len(regs) < block.count:
        raise ValueError(f"{len(regs)} registers for a request of {block.count}")
    data = b""
    for p in block.points:
        i = p.address - block.start
        if p.dtype == "uint16" and p.order == "AB":  # the common case, without bytes
            raw: float | int | str = regs[i]
        elif p.dtype == "int16" and p.order == "AB":
            raw = regs[i] - 0x10000 if regs[i] & 0x8000 else regs[i]
        elif p.dtype == "string":
            continue
        else:
            data = data or _regs.registers_to_bytes(list(regs))
            raw = _regs.decode(p.dtype, p.order, data[2 * i : 2 * (i + p.registers)])
        out.append((p, float(raw) * p.scale + p.offset))
    return out


def write_pdu(p: Point, value: float, unit: int) -> ModbusPDU:
    """The request writing engineering ``value`` to ``p``. Raises ActionError (range)."""
    if p.area == "coil":
        return WriteSingleCoilRequest(address=p.address, bits=[bool(p.to_raw(value))], dev_id=unit)
    if p.area != "holding_register":
        raise ActionError(f"point {p.name} is a {p.area}: not writable")
    try:
        data = _regs.encode(p.dtype, p.order, p.to_raw(value), p.length)
    except ValueError as exc:
        raise ActionError(f"{p.name}: {exc}") from None
    regs = _regs.bytes_to_registers(data)
    if len(regs) == 1:
        return WriteSingleRegisterRequest(address=p.address, registers=regs, dev_id=unit)
    return WriteMultipleRegistersRequest(address=p.address, registers=regs, dev_id=unit)


class ModbusDevice:
    """A device's state on its link (owned by the link's thread once added)."""

    def __init__(
        self, name: str, unit: int, blocks: list[Block], on_values: OnValues, breaker: Breaker
    ):
        self.name = name
        self.unit = unit
        self.blocks = blocks
        self.on_values = on_values
        self.breaker = breaker
        self.counters = {
            "requests": 0,
            "responses": 0,
            "timeouts": 0,
            "exceptions": 0,
            "bad_responses": 0,
            "skipped_offline": 0,
            "writes": 0,
            "writes_failed": 0,
        }
        self.last_error = ""

    @property
    def online(self) -> bool:
        return self.breaker.online


@dataclasses.dataclass(slots=True)
class _Job:
    dev: ModbusDevice
    pdu: ModbusPDU
    block: Block | None = None
    done: Done | None = None
    rest: list[ModbusPDU] = dataclasses.field(default_factory=list)  # writes after this one
    deadline: int = 0
    t_sent: int = 0


class ModbusLink(Link):
    """The scheduler shared by TCP and RTU; the transports differ in framing and pipelining."""

    kind = "modbus"
    pipelined = False

    def __init__(self, name: str, options: Mapping[str, Any], **kw: Any):
        super().__init__(name, options, **kw)
        self.timeout_ns = parse_duration(str(options.get("timeout", "250ms")))
        self.max_inflight = int(options.get("max_inflight", 1)) if self.pipelined else 1
        self.devices: list[ModbusDevice] = []
        self._writes: collections.deque[_Job] = collections.deque()
        self._inflight: dict[int, _Job] = {}
        self._tid = 0
        self._rx = bytearray()
        self._decoder = DecodePDU(is_server=False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._rr = 0  # round robin over devices for polls
        self.counters.update(
            {"stray_responses": 0, "garbage_bytes": 0, "flushes": 0, "crc_errors": 0}
        )

    # ------------------------------------------------------------ devices and writes

    def add_device(
        self,
        name: str,
        unit: int,
        points: Iterable[Point],
        periods: Mapping[str, int],
        on_values: OnValues,
        threshold: int = 3,
    ) -> ModbusDevice:
        dev = ModbusDevice(
            name,
            unit,
            plan_blocks(points, periods),
            on_values,
            Breaker(threshold, clock=self.clock),
        )
        with self._lock:
            self.devices.append(dev)
        return dev

    def write(self, dev: ModbusDevice, writes: list[tuple[Point, float]], done: Done) -> None:
        """Queue writes (in order, in the lane ahead of polls); ``done`` is called once, on the
        link's thread, when the device has confirmed the last one or one has failed. Raises
        ActionError before queueing anything if a value cannot be encoded."""
        pdus = [write_pdu(p, v, dev.unit) for p, v in writes]
        if not pdus:
            done(True, "nothing to write", self.clock.monotonic_ns())
            return
        with self._lock:
            self._writes.append(_Job(dev, pdus[0], done=done, rest=pdus[1:]))
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        super().close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        # whatever is still queued will never be confirmed
        now = self.clock.monotonic_ns()
        for job in [*self._writes, *self._inflight.values()]:
            if job.done is not None:
                job.done(False, "the bridge closed the link before the device answered", now)
        self._writes.clear()
        self._inflight.clear()

    # ------------------------------------------------------------ transport hooks

    def _send(self, frame: bytes) -> None:
        raise NotImplementedError

    def _fileno(self) -> int:
        raise NotImplementedError

    def _read_some(self) -> bytes | None:
        """Bytes read now; None: nothing after all; b"": the peer closed."""
        raise NotImplementedError

    def _frame(self, pdu: ModbusPDU) -> bytes:
        raise NotImplementedError

    def _parse(self) -> tuple[int, int, int, bytes] | None:
        """(used, unit, tid, pdu bytes) of the next frame in ``_rx``; None: need more."""
        raise NotImplementedError

    def _flush_input(self) -> None:
        self._rx.clear()

    def _gap_wait_ns(self, now: int) -> int:
        return 0

    # ------------------------------------------------------------ the scheduler

    def on_down(self) -> None:
        now = self.clock.monotonic_ns()
        for job in list(self._inflight.values()):
            self._fail(job, "the link went down", now)
        self._inflight.clear()
        self._rx.clear()

    def _step(self, budget_s: float) -> None:
        now = self.clock.monotonic_ns()
        self._expire(now)
        self._issue(now)
        wait_ns = int(budget_s * 1e9)
        if self._inflight:
            wait_ns = min(wait_ns, min(j.deadline for j in self._inflight.values()) - now)
        due = [b.next_due for d in self.devices for b in d.blocks]
        if due and len(self._inflight) < self.max_inflight:
            wait_ns = min(wait_ns, min(due) - now)
        gap = self._gap_wait_ns(now)
        if gap:
            wait_ns = min(wait_ns, gap)
        readable, _, _ = select.select(
            [self._fileno(), self._wake_r], [], [], max(0, wait_ns) / 1e9
        )
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        if self._fileno() in readable:
            data = self._read_some()
            if data == b"":
                raise ConnectionError("the device closed the connection")
            if data:
                self._rx += data
                self._on_input()

    def _expire(self, now: int) -> None:
        for tid, job in list(self._inflight.items()):
            if now >= job.deadline:
                del self._inflight[tid]
                job.dev.counters["timeouts"] += 1
                job.dev.breaker.failure()
                self._fail(
                    job,
                    f"no answer from unit {job.dev.unit} within {self.timeout_ns / 1e6:g} ms",
                    now,
                )
                if not self.pipelined:
                    # a late answer must never be taken for the next request's
                    self._flush_input()
                    self.count("flushes")

    def _issue(self, now: int) -> None:
        while len(self._inflight) < self.max_inflight:
            if self._gap_wait_ns(now):
                return
            job = self._next_job(now)
            if job is None:
                return
            self._tid = self._tid % 0xFFFF + 1
            job.pdu.transaction_id = self._tid
            job.t_sent = now
            job.deadline = now + self.timeout_ns
            self._inflight[self._tid if self.pipelined else 0] = job
            job.dev.counters["requests"] += 1
            self._send(self._frame(job.pdu))

    def _next_job(self, now: int) -> _Job | None:
        with self._lock:
            while self._writes:
                job = self._writes.popleft()
                if job.dev.breaker.allow():
                    return job
                job.dev.counters["skipped_offline"] += 1
                self._fail(
                    job,
                    f"device {job.dev.name} is offline (no answer lately; its "
                    "breaker is open): nothing written",
                    now,
                )
            devices = list(self.devices)
        n = len(devices)
        best: tuple[int, ModbusDevice, Block] | None = None
        for k in range(n):
            dev = devices[(self._rr + k) % n]
            for b in dev.blocks:
                if b.next_due <= now and (best is None or b.next_due < best[0]):
                    if any(j.block is b for j in self._inflight.values()):
                        continue
                    best = (b.next_due, dev, b)
        if best is None:
            return None
        _, dev, b = best
        self._rr = (devices.index(dev) + 1) % n
        b.next_due = max(b.next_due + b.period_ns, now) if b.next_due else now + b.period_ns
        if not dev.breaker.allow():
            dev.counters["skipped_offline"] += 1
            return self._next_job(now)
        cls, _ = _READS[b.area]
        return _Job(dev, cls(address=b.start, count=b.count, dev_id=dev.unit), block=b)

    def _on_input(self) -> None:
        while self._rx:
            parsed = self._parse()
            if parsed is None:
                return
            used, unit, tid, frame = parsed
            del self._rx[:used]
            if not frame:
                continue
            key = tid if self.pipelined else 0
            job = self._inflight.get(key)
            if (
                job is None
                or job.dev.unit != unit
                or (self.pipelined and tid != job.pdu.transaction_id)
            ):
                self.count("stray_responses")
                continue
            now = self.clock.monotonic_ns()
            try:
                pdu = self._decoder.decode(frame)
            except Exception as exc:  # pymodbus raises its own ModbusException and struct errors
                pdu = None
                log.debug("link %s: undecodable response: %s", self.name, exc)
            del self._inflight[key]
            if pdu is None or (pdu.function_code & 0x7F) != job.pdu.function_code:
                job.dev.counters["bad_responses"] += 1
                job.dev.breaker.failure()
                self._fail(job, "the device sent a response that does not answer the request", now)
                continue
            job.dev.breaker.success()
            job.dev.counters["responses"] += 1
            if pdu.function_code & 0x80:
                job.dev.counters["exceptions"] += 1
                code = pdu.exception_code
                self._fail(
                    job,
                    f"the device answered exception {code} "
                    f"({EXCEPTION_NAMES.get(code, 'unknown')})",
                    now,
                )
                continue
            self._complete(job, pdu, now)

    def _complete(self, job: _Job, pdu: ModbusPDU, now: int) -> None:
        if job.block is not None:
            try:
                values = block_values(job.block, pdu)
            except (ValueError, IndexError) as exc:
                job.dev.counters["bad_responses"] += 1
                job.dev.last_error = f"short response: {exc}"
                return
            job.dev.on_values(values, now)
            return
        job.dev.counters["writes"] += 1
        if job.rest:
            nxt = _Job(job.dev, job.rest[0], done=job.done, rest=job.rest[1:])
            with self._lock:
                self._writes.appendleft(nxt)
            return
        if job.done is not None:
            fc = job.pdu.function_code
            job.done(
                True,
                f"unit {job.dev.unit} confirmed the write (function {fc} "
                f"response after {(now - job.t_sent) / 1e6:.2f} ms)",
                now,
            )

    def _fail(self, job: _Job, why: str, now: int) -> None:
        job.dev.last_error = why
        if job.done is not None:
            job.dev.counters["writes_failed"] += 1
            job.done(False, why, now)


class ModbusTcpLink(ModbusLink):
    """Modbus TCP (``host``, ``port``, ``timeout``, ``max_inflight``)."""

    kind = "modbus_tcp"
    pipelined = True

    def __init__(self, name: str, options: Mapping[str, Any], **kw: Any):
        super().__init__(name, options, **kw)
        self.host = str(options.get("host", "127.0.0.1"))
        self.port = int(options.get("port", 502))
        self._sock: socket.socket | None = None
        self._framer = FramerSocket(self._decoder)

    def _open(self) -> None:
        s = socket.create_connection((self.host, self.port), timeout=self.timeout_ns / 1e9)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        self._sock = s
        self._rx.clear()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def _send(self, frame: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(frame)  # a few bytes on a non-blocking socket: never fills it

    def _read_some(self) -> bytes | None:
        assert self._sock is not None
        try:
            return self._sock.recv(65536)
        except BlockingIOError:
            return None

    def _frame(self, pdu: ModbusPDU) -> bytes:
        return self._framer.buildFrame(pdu)

    def _parse(self) -> tuple[int, int, int, bytes] | None:
        data = bytes(self._rx)
        if len(data) >= 4 and data[2:4] != b"\x00\x00":  # not an MBAP header: resynchronise
            self.count("garbage_bytes", len(data))
            self._rx.clear()
            return None
        used, unit, tid, frame = self._framer.decode(data)
        return None if not used else (used, unit, tid, frame)


class ModbusRtuLink(ModbusLink):
    """Modbus RTU on a serial port (``port``, ``baudrate``, ``parity``, ``stopbits``,
    ``timeout``): one request outstanding, the 3.5-character gap, input flushed after a
    timeout."""

    kind = "modbus_rtu"

    def __init__(self, name: str, options: Mapping[str, Any], **kw: Any):
        super().__init__(name, options, **kw)
        import serial  # pyserial: the [serial] extra

        self._serial_mod = serial
        self.port = str(options["port"]) if "port" in options else ""
        if not self.port:
            raise BridgeError(f'link {name}: a modbus_rtu link needs port = "/dev/ttyX"')
        self.baudrate = int(options.get("baudrate", 19200))
        self.parity = str(options.get("parity", "N"))
        self.stopbits = int(options.get("stopbits", 1))
        char_ns = 11 * 1_000_000_000 // self.baudrate
        self.gap_ns = 1_750_000 if self.baudrate > 19200 else int(3.5 * char_ns)
        self._ser: Any = None
        self._last_io = 0
        self._framer = FramerRTU(self._decoder)

    def _open(self) -> None:
        self._ser = self._serial_mod.Serial(
            self.port,
            self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            timeout=0,
        )
        self._ser.reset_input_buffer()
        self._rx.clear()

    def _close(self) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None

    def _fileno(self) -> int:
        return int(self._ser.fileno())

    def _send(self, frame: bytes) -> None:
        self._ser.write(frame)
        self._ser.flush()
        self._last_io = self.clock.monotonic_ns()

    def _read_some(self) -> bytes | None:
        data = bytes(self._ser.read(4096))
        if data:
            self._last_io = self.clock.monotonic_ns()
            return data
        return None

    def _flush_input(self) -> None:
        super()._flush_input()
        if self._ser is not None:
            self._ser.reset_input_buffer()

    def _gap_wait_ns(self, now: int) -> int:
        return max(0, self._last_io + self.gap_ns - now)

    def _frame(self, pdu: ModbusPDU) -> bytes:
        return self._framer.buildFrame(pdu)

    def _parse(self) -> tuple[int, int, int, bytes] | None:
        """The next RTU frame: skip bytes until a unit + function code whose frame size is
        known and whose CRC matches (pymodbus's framer pieces; its own decode() consumes the
        whole buffer, which would throw away an answer arriving right behind noise)."""
        data = bytes(self._rx)
        for start in range(len(data)):
            rest = data[start:]
            if len(rest) < 4:
                break
            cls = self._decoder.lookupPduClass(rest)
            if cls is None:
                continue
            size = cls.calculateRtuFrameSize(rest)
            if not size or len(rest) < size:
                if start == 0:
                    return None  # wait for the rest of this frame (the timeout bounds it)
                break
            crc = int.from_bytes(rest[size - 2 : size], "big")
            if not FramerRTU.check_CRC(rest[: size - 2], crc):
                self.count("crc_errors")
                continue
            if start:
                break  # drop the garbage in front first
            return size, rest[0], 0, rest[1 : size - 2]
        else:
            start = len(data)
        if start == 0:
            return None
        self.count("garbage_bytes", start)
        return start, -1, 0, b""
