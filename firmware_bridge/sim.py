"""Simulated devices for tests, the demo and the benchmarks (never imported by the bridge).

* :class:`ModbusSim` -- a pymodbus server (TCP on loopback, or RTU on a serial port such as
  one end of a pty pair) with one or more unit ids, run on its own thread and event loop;
  registers and coils are read and set from the test's thread. ``silent_units`` never answer
  (an offline device behind a gateway), ``exception_units`` answer every request with
  exception 4 (device failure), and ``delay_s`` > 0 holds every answer that long (a slow
  device; the server answers nothing else meanwhile).
* :class:`CanEcu` -- an ECU on a python-can bus (the virtual bus in tests) speaking a DBC with
  cantools: it sends its messages cyclically with signal values the test sets, and answers
  a command message by echoing a signal into a status message (a response signal).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

# ------------------------------------------------------------------ Modbus


class ModbusSim:
    """``ModbusSim(units=(1,)).start()``; ``.port`` is the TCP port it listens on."""

    def __init__(
        self,
        units: Iterable[int] = (1,),
        *,
        serial_port: str | None = None,
        baudrate: int = 115200,
        size: int = 1024,
        silent_units: Iterable[int] = (),
        exception_units: Iterable[int] = (),
    ):
        from pymodbus.simulator import DataType, SimData, SimDevice

        def block(kind: DataType) -> list[Any]:
            return [
                SimData(
                    0, count=size, values=0 if kind is DataType.REGISTERS else False, datatype=kind
                )
            ]

        bits, regs = DataType.BITS, DataType.REGISTERS
        self.units = tuple(units)
        self.silent = set(silent_units)
        self.exceptions = set(exception_units)
        self.delay_s = 0.0
        self.fault: Callable[[int, int], str] | None = None
        """A test rig's choice per request: ``fault(request number, unit)`` -> "timeout" (no
        answer), "exception" (exception 4) or "" (answered); asked once as it arrives."""
        self._decision = ""
        self.context = [
            SimDevice(id=u, simdata=(block(bits), block(bits), block(regs), block(regs)))
            for u in self.units
        ]
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.port = 0
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # values, read and set through the server's own datastore on its loop
    def _call(self, coro: Any) -> Any:
        assert self._loop is not None and self._server is not None, "start() it first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    def set_registers(
        self, unit: int, address: int, values: list[int], *, area: str = "hr"
    ) -> None:
        fc = {"hr": 16, "ir": 4}[area]
        self._call(self._server.context.async_setValues(unit, fc, address, list(values)))

    def registers(self, unit: int, address: int, count: int = 1, *, area: str = "hr") -> list[int]:
        fc = {"hr": 3, "ir": 4}[area]
        return list(self._call(self._server.context.async_getValues(unit, fc, address, count)))

    def set_bits(self, unit: int, address: int, values: list[bool], *, area: str = "co") -> None:
        fc = {"co": 15, "di": 2}[area]
        self._call(self._server.context.async_setValues(unit, fc, address, list(values)))

    def bits(self, unit: int, address: int, count: int = 1, *, area: str = "co") -> list[bool]:
        fc = {"co": 1, "di": 2}[area]
        got = self._call(self._server.context.async_getValues(unit, fc, address, count))
        return [bool(b) for b in got][:count]

    def start(self) -> ModbusSim:
        self._thread = threading.Thread(target=self._run, name="modbus-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Modbus simulator did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"the Modbus simulator failed: {self._error}")
        return self

    def _trace(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            self.requests += 1
        return pdu

    def _run(self) -> None:
        from pymodbus.pdu import ExceptionResponse
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer

        loop = asyncio.new_event_loop()
        self._loop = loop
        sim = self

        def trace_pdu(sending: bool, pdu: Any) -> Any:
            if not sending:
                sim.requests += 1
                sim._decision = sim.fault(sim.requests, pdu.dev_id) if sim.fault else ""
                return pdu
            if pdu.dev_id in sim.exceptions or sim._decision == "exception":
                return ExceptionResponse(
                    pdu.function_code & 0x7F, 4, pdu.dev_id, pdu.transaction_id
                )
            return pdu

        def trace_packet(sending: bool, data: bytes) -> bytes:
            if sending and sim._decision == "timeout":
                return b""
            if sending and sim.silent and self._unit_of(data) in sim.silent:
                return b""
            if sending and sim.delay_s > 0:
                time.sleep(sim.delay_s)  # the slow device: its one thread answers late
            return data

        async def main() -> None:
            try:
                if self.serial_port:
                    from pymodbus import FramerType

                    server: Any = ModbusSerialServer(
                        self.context,
                        framer=FramerType.RTU,
                        port=self.serial_port,
                        baudrate=self.baudrate,
                        trace_pdu=trace_pdu,
                        trace_packet=trace_packet,
                    )
                else:
                    server = ModbusTcpServer(
                        self.context,
                        address=("127.0.0.1", 0),
                        trace_pdu=trace_pdu,
                        trace_packet=trace_packet,
                    )
                self._server = server
                await server.serve_forever(background=True)
                if not self.serial_port:
                    self.port = server.transport.sockets[0].getsockname()[1]
            except BaseException as exc:
                self._error = exc
            finally:
                self._ready.set()

        loop.run_until_complete(main())
        if self._error is None:
            loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _unit_of(self, data: bytes) -> int:
        if self.serial_port:
            return data[0] if data else -1
        return data[6] if len(data) > 6 else -1

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        if self._server is not None:
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), loop)
            try:
                fut.result(5)
            except Exception:
                pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        self._loop = None

    def __enter__(self) -> ModbusSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ CAN


class CanEcu:
    """An ECU on ``bus`` (a python-can bus) speaking ``db`` (a cantools Database).

    ``values[message][signal]`` are sent every ``period_s`` for each message in ``sends``;
    ``echo`` maps a received (message, signal) to the (message, signal) it copies the value
    into (the response signal the bridge confirms on). ``send_once()`` sends every message
    once (a test steps it without a thread)."""

    def __init__(
        self,
        bus: Any,
        db: Any,
        sends: Iterable[str],
        *,
        period_s: float = 0.01,
        echo: dict[tuple[str, str], tuple[str, str]] | None = None,
        on_receive: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.bus = bus
        self.db = db
        self.period_s = period_s
        self.messages = [db.get_message_by_name(n) for n in sends]
        self.values: dict[str, dict[str, float]] = {
            m.name: {s.name: _neutral(s) for s in m.signals} for m in self.messages
        }
        self.echo = dict(echo or {})
        self.on_receive = on_receive
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set(self, message: str, **signals: float) -> None:
        self.values[message].update(signals)

    def send_once(self) -> None:
        import can

        for m in self.messages:
            data = m.encode(self.values[m.name], strict=False)
            self.bus.send(
                can.Message(
                    arbitration_id=m.frame_id, data=data, is_extended_id=m.is_extended_frame
                )
            )
            self.sent += 1

    def _handle(self, msg: Any) -> None:
        try:
            m = self.db.get_message_by_frame_id(msg.arbitration_id)
            decoded = m.decode(msg.data, decode_choices=False)
        except Exception:
            return
        self.received.append((m.name, decoded))
        for (mname, sname), (tm, ts) in self.echo.items():
            if m.name == mname and sname in decoded:
                self.values[tm][ts] = decoded[sname]
                tmsg = self.db.get_message_by_name(tm)
                import can

                self.bus.send(
                    can.Message(
                        arbitration_id=tmsg.frame_id,
                        data=tmsg.encode(self.values[tm], strict=False),
                        is_extended_id=tmsg.is_extended_frame,
                    )
                )
                self.sent += 1
        if self.on_receive is not None:
            self.on_receive(m.name, decoded)

    def _run(self) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                self.send_once()
                next_send = now + self.period_s
            msg = self.bus.recv(timeout=max(0.0, next_send - time.monotonic()))
            if msg is not None and not msg.is_error_frame:
                self._handle(msg)

    def start(self) -> CanEcu:
        self._thread = threading.Thread(target=self._run, name="can-ecu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> CanEcu:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _neutral(sig: Any) -> float:
    """A valid value of ``sig``: 0 when it is in range, else its minimum."""
    lo = sig.minimum if sig.minimum is not None else None
    hi = sig.maximum if sig.maximum is not None else None
    v = 0.0
    if lo is not None and v < lo:
        v = float(lo)
    if hi is not None and v > hi:
        v = float(hi)
    return v


# ------------------------------------------------------------------ serial


class NullModem:
    """Two pty pairs joined master to master by a relay thread: ``port_a`` and ``port_b`` are
    the two ends of a serial cable (paths pyserial opens). ``drop_next(n)`` swallows the next
    n bytes going a -> b (line noise / a lost frame)."""

    def __init__(self) -> None:
        import tty

        self._ma, sa = os.openpty()
        self._mb, sb = os.openpty()
        for fd in (sa, sb):
            tty.setraw(fd)
        self.port_a, self.port_b = os.ttyname(sa), os.ttyname(sb)
        self._slaves = (sa, sb)
        self._stop_r, self._stop_w = os.pipe()
        self.inject_b: bytes = b""
        self._thread = threading.Thread(target=self._relay, name="null-modem", daemon=True)
        self._thread.start()

    def send_to_a(self, data: bytes) -> None:
        """Bytes that appear on ``port_a`` as if the b side sent them (noise, stray frames)."""
        self.inject_b += data

    def _relay(self) -> None:
        import select

        while True:
            if self.inject_b:
                data, self.inject_b = self.inject_b, b""
                os.write(self._ma, data)
            r, _, _ = select.select([self._ma, self._mb, self._stop_r], [], [], 0.01)
            if self._stop_r in r:
                return
            for src, dst in ((self._ma, self._mb), (self._mb, self._ma)):
                if src in r:
                    try:
                        data = os.read(src, 4096)
                    except OSError:
                        return
                    os.write(dst, data)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._ma, self._mb, *self._slaves, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> NullModem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_modbus(argv: list[str]) -> int:
    """``python -m firmware_bridge.sim modbus [--units 1,2]``: a ModbusSim in its own process
    (so benchmarks do not share its interpreter); prints ``{"port": N}``, stops on stdin EOF."""
    import json
    import sys

    units: tuple[int, ...] = (1,)
    if "--units" in argv:
        units = tuple(int(u) for u in argv[argv.index("--units") + 1].split(","))
    with ModbusSim(units=units, size=1024) as sim:
        sys.stdout.write(json.dumps({"port": sim.port}) + "\n")
        sys.stdout.flush()
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["modbus"]:
        sys.exit(_serve_modbus(sys.argv[2:]))
    sys.exit("usage: python -m firmware_bridge.sim modbus [--units 1,2]")
