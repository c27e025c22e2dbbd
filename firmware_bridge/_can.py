"""CAN links through python-can (socketcan on a board, the virtual bus in tests), signals
decoded and encoded with cantools from the device profile's DBC.

The receive loop is the Link base's supervised thread: a receive error is counted and the bus
is shut down and recreated after a jittered backoff (python-can's Notifier thread would just
die). Error frames are decoded for the controller state (SocketCAN's ``CAN_ERR_*`` layout):
error-passive and bus-off are tracked and shown as the device's health metrics; bus-off
recreates the bus. Only mapped messages are decoded, and of those only the mapped signals
(a cantools codec built from just those signals), with a receive rate limit per point.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any

import can
from cantools.database.utils import create_encode_decode_formats, decode_data

from ._errors import ActionError, LinkError
from ._link import Link, log
from ._profile import Confirm, Point, Profile, Write

# SocketCAN error frame layout (linux/can/error.h): class bits in the id, details in data
CAN_ERR_CRTL = 0x004
CAN_ERR_BUSOFF = 0x040
CAN_ERR_RESTARTED = 0x100
CAN_ERR_CRTL_RX_PASSIVE = 0x10
CAN_ERR_CRTL_TX_PASSIVE = 0x20
CAN_ERR_CRTL_ACTIVE = 0x40

Done = Callable[[bool, str, int], None]
OnValues = Callable[[list[tuple[Point, float]], int], None]


@dataclasses.dataclass(slots=True)
class _Mapped:
    """One mapped message of one device: its reduced codec and points."""

    message: Any
    signals: list[Any]
    formats: Any
    points: list[Point]
    on_values: OnValues
    last_ns: list[int]  # per point, for the rate limit


@dataclasses.dataclass(slots=True)
class _Pending:
    confirm: Confirm
    value: float
    deadline: int
    done: Done
    t_sent: int


class CanDevice:
    def __init__(self, name: str, profile: Profile):
        self.name = name
        self.profile = profile
        self.counters = {
            "frames": 0,
            "decoded": 0,
            "rate_limited": 0,
            "bad_dlc": 0,
            "decode_errors": 0,
            "sent": 0,
            "confirmed": 0,
            "confirm_timeouts": 0,
        }
        self.pending: list[_Pending] = []
        self.last_error = ""


class CanLink(Link):
    """``interface`` (python-can's: virtual, socketcan, ...), ``channel``, ``bitrate``."""

    kind = "can"

    def __init__(self, name: str, options: Mapping[str, Any], **kw: Any):
        super().__init__(name, options, **kw)
        self.bus: can.BusABC | None = None
        self.by_id: dict[int, list[tuple[CanDevice, _Mapped]]] = {}
        self.confirms: dict[int, list[CanDevice]] = {}
        self.devices: list[CanDevice] = []
        self.state = "closed"  # active | passive | bus_off | closed
        self._send_lock = threading.Lock()
        self.counters.update(
            {
                "frames": 0,
                "unknown_ids": 0,
                "error_frames": 0,
                "error_passive": 0,
                "bus_off": 0,
                "receive_errors": 0,
                "send_errors": 0,
            }
        )

    # ------------------------------------------------------------ devices

    def add_device(self, name: str, profile: Profile, on_values: OnValues) -> CanDevice:
        dev = CanDevice(name, profile)
        by_msg: dict[str, list[Point]] = {}
        for p in profile.points:
            by_msg.setdefault(p.message, []).append(p)
        for mname, points in by_msg.items():
            msg = profile.db.get_message_by_name(mname)
            signals = [msg.get_signal_by_name(p.signal) for p in points]
            uniq = list({s.name: s for s in signals}.values())
            mapped = _Mapped(
                msg,
                uniq,
                create_encode_decode_formats(uniq, msg.length),
                points,
                on_values,
                [0] * len(points),
            )
            self.by_id.setdefault(msg.frame_id, []).append((dev, mapped))
        for a in profile.actions.values():
            if a.confirm is not None:
                fid = profile.db.get_message_by_name(a.confirm.message).frame_id
                self.confirms.setdefault(fid, [])
                if dev not in self.confirms[fid]:
                    self.confirms[fid].append(dev)
        self.devices.append(dev)
        return dev

    def send(self, dev: CanDevice, write: Write, confirm: Confirm | None, done: Done) -> None:
        """Encode ``write`` (a message and signal values) with cantools and send it; ``done``
        runs when the response signal shows the sent value, or at once with "queued on the
        bus" when the action maps no response. Raises ActionError for values the DBC refuses."""
        msg = dev.profile.db.get_message_by_name(write.message)
        values = {s.name: _neutral(s) for s in msg.signals}
        values.update({k: float(v) for k, v in write.fields})
        try:
            data = msg.encode(values, strict=True)
        except Exception as exc:  # cantools: EncodeError / ValueError for out-of-range values
            raise ActionError(f"{write.message}: {exc}") from None
        t = self.clock.monotonic_ns()
        if confirm is not None:
            want = next((float(v) for k, v in write.fields if k == confirm.signal), None)
            if want is None:  # confirm a signal we did not send: the first sent one's value
                want = float(write.fields[0][1]) if write.fields else 0.0
            with self._send_lock:
                dev.pending.append(_Pending(confirm, want, t + confirm.within_ns, done, t))
        self.send_frame(msg.frame_id, data, msg.is_extended_frame)
        dev.counters["sent"] += 1
        if confirm is None:
            done(
                True,
                f"queued on the bus as {write.message} (0x{msg.frame_id:x}); "
                "no response signal is mapped, so the ECU's execution is not confirmed",
                self.clock.monotonic_ns(),
            )

    def send_frame(self, frame_id: int, data: bytes, extended: bool = False) -> bool:
        bus = self.bus
        if bus is None or self.state == "bus_off":
            self.count("send_errors")
            return False
        try:
            with self._send_lock:
                bus.send(
                    can.Message(arbitration_id=frame_id, data=data, is_extended_id=extended),
                    timeout=0.01,
                )
            return True
        except can.CanError as exc:
            self.count("send_errors")
            self.last_error = f"send: {exc}"
            return False

    # ------------------------------------------------------------ the link

    def _open(self) -> None:
        opts = {k: v for k, v in self.options.items() if k not in ("kind", "name")}
        opts.setdefault("interface", "virtual")
        opts.setdefault("channel", self.name)
        self.bus = can.Bus(**opts)
        self.state = "active"

    def _close(self) -> None:
        bus, self.bus = self.bus, None
        self.state = "closed"
        if bus is not None:
            bus.shutdown()

    def _step(self, budget_s: float) -> None:
        bus = self.bus
        assert bus is not None
        self._expire_confirms()
        try:
            msg = bus.recv(timeout=budget_s)
        except can.CanError as exc:
            self.count("receive_errors")
            raise LinkError(f"receive failed: {exc}") from exc
        if msg is not None:
            self.dispatch(msg, self.clock.monotonic_ns())

    def dispatch(self, msg: can.Message, t: int) -> None:
        """One received frame (``t``: its arrival, monotonic ns): error frames tracked, mapped
        messages decoded into their points, response signals checked."""
        self.count("frames")
        if msg.is_error_frame:
            self._error_frame(msg)
            return
        entries = self.by_id.get(msg.arbitration_id)
        waiting = self.confirms.get(msg.arbitration_id)
        if entries is None and waiting is None:
            self.count("unknown_ids")
            return
        for dev, m in entries or ():
            self._decode(dev, m, bytes(msg.data), t)
        for dev in waiting or ():
            self._check_confirms(dev, msg.arbitration_id, bytes(msg.data), t)

    def _decode(self, dev: CanDevice, m: _Mapped, data: bytes, t: int) -> None:
        dev.counters["frames"] += 1
        if len(data) < m.message.length:
            dev.counters["bad_dlc"] += 1
            dev.last_error = f"{m.message.name}: {len(data)} bytes, the DBC says {m.message.length}"
            return
        try:
            decoded = decode_data(
                data, m.message.length, m.signals, m.formats, False, True, False, True
            )
        except Exception as exc:  # a codec error on odd data: count, never stop the loop
            dev.counters["decode_errors"] += 1
            dev.last_error = f"{m.message.name}: {exc}"
            return
        out = []
        for i, p in enumerate(m.points):
            if p.min_interval_ns and t - m.last_ns[i] < p.min_interval_ns:
                dev.counters["rate_limited"] += 1
                continue
            m.last_ns[i] = t
            out.append((p, p.from_raw(float(decoded[p.signal]))))  # type: ignore[arg-type]
        if out:
            dev.counters["decoded"] += 1
            m.on_values(out, t)

    def _check_confirms(self, dev: CanDevice, fid: int, data: bytes, t: int) -> None:
        with self._send_lock:
            pending = list(dev.pending)
        if not pending:
            return
        msg = dev.profile.db.get_message_by_frame_id(fid)
        try:
            decoded = msg.decode(data, decode_choices=False)
        except Exception:
            dev.counters["decode_errors"] += 1
            return
        for pend in pending:
            if pend.confirm.message != msg.name or pend.confirm.signal not in decoded:
                continue
            sig = msg.get_signal_by_name(pend.confirm.signal)
            if abs(float(decoded[pend.confirm.signal]) - pend.value) <= abs(sig.scale) / 2 + 1e-9:
                with self._send_lock:
                    if pend in dev.pending:
                        dev.pending.remove(pend)
                dev.counters["confirmed"] += 1
                pend.done(
                    True,
                    f"the ECU confirmed: {msg.name}.{pend.confirm.signal} = "
                    f"{decoded[pend.confirm.signal]:g} after "
                    f"{(t - pend.t_sent) / 1e6:.2f} ms",
                    t,
                )

    def _expire_confirms(self) -> None:
        now = self.clock.monotonic_ns()
        for dev in self.devices:
            if not dev.pending:
                continue
            with self._send_lock:
                late = [p for p in dev.pending if now >= p.deadline]
                for p in late:
                    dev.pending.remove(p)
            for p in late:
                dev.counters["confirm_timeouts"] += 1
                p.done(
                    False,
                    f"sent, but {p.confirm.message}.{p.confirm.signal} did not show "
                    f"{p.value:g} within {p.confirm.within_ns / 1e6:g} ms",
                    now,
                )

    def _error_frame(self, msg: can.Message) -> None:
        self.count("error_frames")
        eid, data = msg.arbitration_id, bytes(msg.data)
        if eid & CAN_ERR_BUSOFF:
            self.count("bus_off")
            self.state = "bus_off"
            raise LinkError("bus-off: the controller left the bus; recreating it")
        if eid & CAN_ERR_RESTARTED:
            self.state = "active"
        if eid & CAN_ERR_CRTL and len(data) > 1:
            if data[1] & (CAN_ERR_CRTL_RX_PASSIVE | CAN_ERR_CRTL_TX_PASSIVE):
                if self.state != "passive":
                    self.count("error_passive")
                    log.warning("link %s: CAN controller error-passive", self.name)
                self.state = "passive"
            elif data[1] & CAN_ERR_CRTL_ACTIVE:
                self.state = "active"

    def on_down(self) -> None:
        now = self.clock.monotonic_ns()
        for dev in self.devices:
            with self._send_lock:
                pending, dev.pending = dev.pending, []
            for p in pending:
                p.done(False, f"the CAN link went down ({self.last_error})", now)

    def close(self) -> None:
        super().close()
        self.on_down()


def _neutral(sig: Any) -> float:
    """A value ``sig`` accepts: its initial value, else 0 clamped into [minimum, maximum]."""
    if getattr(sig, "initial", None) is not None:
        try:
            return float(sig.scaled_initial)
        except Exception:  # older cantools without scaled_initial
            pass
    v = 0.0
    if sig.minimum is not None and v < sig.minimum:
        v = float(sig.minimum)
    if sig.maximum is not None and v > sig.maximum:
        v = float(sig.maximum)
    return v
