"""One device = one agent of edged: its points are the agent's metrics, its profile's actions
turn instructions into device writes, and the Ack leaves only when the device has answered.

The agent's handler runs on the SDK's I/O thread: it substitutes and range-checks the params
(a missing or out-of-range param is answered Rejected, nothing written), hands the writes to
the link and returns DEFERRED; the link calls back on its own thread with the device's
answer, and that callback sends the Ack with ``t_done`` = the device's answer time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import zmq

from edge.clock import SYSTEM_CLOCK, Clock
from edge.sdk import DEFERRED, AckStatus, Agent, Instruction, InstructionRejected

from ._config import DeviceSpec
from ._errors import ActionError
from ._link import Link
from ._profile import ActionSpec, Point, Profile, Write, substitute
from ._trace import ReadingTrace

log = logging.getLogger("firmware_bridge")

HEALTH = (
    "health_online",
    "health_errors",
    "health_timeouts",
    "health_out_of_range",
    "health_rejected",
    "health_link_reopens",
)
CAN_HEALTH = ("health_bus_off", "health_error_passive")


class Device:
    def __init__(
        self,
        spec: DeviceSpec,
        profile: Profile,
        link: Link,
        *,
        endpoint: str,
        context: zmq.Context[Any] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        trace: ReadingTrace | None = None,
    ):
        self.spec = spec
        self.trace = trace  # bridge_trace_file: what was reported, for a test rig
        self.name = spec.name
        self.profile = profile
        self.link: Any = link  # its kind's methods: write / send / command
        self.clock = clock
        self.counters = {
            "readings": 0,
            "out_of_range": 0,
            "instructions": 0,
            "rejected": 0,
            "confirmed": 0,
            "failed": 0,
            "safe_states": 0,
            "dropped": 0,
        }
        self.base_labels = {"bus": link.name, **dict(profile.labels), **dict(spec.labels)}
        if profile.kind == "can":
            self.base_labels.setdefault("ecu", spec.name)
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._labels: dict[str, dict[str, str]] = {}
        decls: list[Any] = []
        for p in self.reported_points():
            labels = dict(self.base_labels)
            if p.unit:
                labels["unit"] = p.unit
            self._labels[p.name] = labels
            decls.append((p.name, labels))
        health = HEALTH + (CAN_HEALTH if profile.kind == "can" else ())
        decls += [(h, {"bus": link.name}) for h in health]
        self.health_names = health
        self.agent = Agent(
            spec.name,
            decls,
            endpoint=endpoint,
            handler=self._on_instruction,
            kind=f"bridge-{profile.kind}",
            context=context,
            clock=clock,
        )
        self.handle: Any = None

    def reported_points(self) -> list[Point]:
        return [p for p in self.profile.points if p.dtype != "string"]

    # ------------------------------------------------------------ readings

    def on_values(self, values: list[tuple[Point, float]], t_ns: int) -> None:
        """Readings from the link's thread: range-checked, deadband-filtered, reported."""
        items = []
        with self._lock:
            for p, v in values:
                self.counters["readings"] += 1
                if (p.min is not None and v < p.min) or (p.max is not None and v > p.max):
                    self.counters["out_of_range"] += 1
                last = self._last.get(p.name)
                if last is not None:
                    if p.on_change and v == last:
                        continue
                    if p.deadband and abs(v - last) < p.deadband:
                        continue
                self._last[p.name] = v
                items.append((p.name, v, self._labels[p.name]))
        if not items:
            return
        if not self.agent.connected:
            self.counters["dropped"] += len(items)
            return
        try:
            sent = self.agent.report_many(items, t_ns=t_ns)
        except Exception as exc:  # edged went away between the check and the send
            self.counters["dropped"] += len(items)
            log.debug("device %s: report failed: %s", self.name, exc)
            return
        if self.trace is not None and sent:
            self.trace.write(t_ns, self.name, items[:sent])

    # ------------------------------------------------------------ instructions

    def _on_instruction(self, ins: Instruction) -> Any:
        self.counters["instructions"] += 1
        name = ins.action_name
        action = self.profile.actions.get(name)
        if action is None and name == "safe_state" and self.profile.safe_state:
            action = ActionSpec("safe_state", self.profile.safe_state)  # the profile's values
        if action is None and name == "alert":
            return AckStatus.OK, "alert noted: this device maps nothing to drive for it"
        if action is None:
            self.counters["rejected"] += 1
            raise InstructionRejected(
                f"device {self.name} maps no action {name!r}; it maps: "
                + (", ".join(sorted(self.profile.actions)) or "none")
            )
        params = {p.key: p.value for p in ins.params}
        try:
            writes = substitute(action, params, self.profile.point)
            self.submit(
                writes, action.confirm, lambda ok, detail, t: self._done(ins, ok, detail, t)
            )
        except ActionError as exc:
            self.counters["rejected"] += 1
            raise InstructionRejected(f"device {self.name}: {exc}; nothing was written") from None
        return DEFERRED

    def _done(self, ins: Instruction, ok: bool, detail: str, t_ns: int) -> None:
        self.counters["confirmed" if ok else "failed"] += 1
        self.agent.ack(
            ins.instruction_id, AckStatus.OK if ok else AckStatus.FAILED, detail, t_done_ns=t_ns
        )

    def submit(self, writes: list[Write], confirm: Any, done: Any) -> None:
        """Hand writes to the link (ActionError if a value cannot be encoded)."""
        kind = self.profile.kind
        if kind == "modbus":
            pairs = [(self.profile.point(w.point), float(w.value)) for w in writes]
            self.link.write(self.handle, pairs, done)
        elif kind == "can":
            if len(writes) != 1:
                raise ActionError("a CAN action sends exactly one message")
            self.link.send(self.handle, writes[0], confirm, done)
        else:
            self.link.command(self.handle, writes, done)

    # ------------------------------------------------------------ safe state, health

    def write_safe_state(self, why: str, timeout_s: float = 1.0) -> tuple[bool, str]:
        """Write the profile's Modbus safe values and wait (at most ``timeout_s``) for the
        device to confirm. Returns (confirmed, detail)."""
        if self.profile.kind != "modbus" or not self.profile.safe_state:
            return True, "no safe values"
        self.counters["safe_states"] += 1
        result: dict[str, Any] = {}
        done_ev = threading.Event()

        def done(ok: bool, detail: str, t: int) -> None:
            result.update(ok=ok, detail=detail, t=t)
            done_ev.set()

        try:
            self.submit(list(self.profile.safe_state), None, done)
        except ActionError as exc:
            return False, str(exc)
        if not done_ev.wait(timeout_s):
            return False, f"no confirmation within {timeout_s:g} s"
        log.warning("device %s: safe values written (%s): %s", self.name, why, result["detail"])
        return bool(result["ok"]), str(result["detail"])

    def health(self) -> dict[str, float]:
        lk = self.link
        h = self.handle
        dc = getattr(h, "counters", {})
        online = float(lk.is_open and getattr(h, "online", True))
        errors = sum(
            dc.get(k, 0)
            for k in (
                "bad_responses",
                "exceptions",
                "bad_dlc",
                "decode_errors",
                "writes_failed",
                "nacks",
                "errors",
                "resets",
            )
        )
        out = {
            "health_online": online,
            "health_errors": float(errors + lk.counters.get("step_errors", 0)),
            "health_timeouts": float(dc.get("timeouts", 0) + dc.get("confirm_timeouts", 0)),
            "health_out_of_range": float(self.counters["out_of_range"]),
            "health_rejected": float(self.counters["rejected"]),
            "health_link_reopens": float(lk.counters.get("reopens", 0)),
        }
        if self.profile.kind == "can":
            out["health_bus_off"] = float(lk.counters.get("bus_off", 0))
            out["health_error_passive"] = float(getattr(lk, "state", "") == "passive")
        return out

    def report_health(self) -> None:
        lc = self.link.counters
        if not self.agent.connected or not (lc.get("opens") or lc.get("open_errors")):
            return  # not before the link has tried to open: "offline" at start is no news
        try:
            self.agent.report_many(
                [(k, v, {"bus": self.link.name}) for k, v in self.health().items()]
            )
        except Exception as exc:
            log.debug("device %s: health report failed: %s", self.name, exc)

    def status(self) -> dict[str, Any]:
        h = self.handle
        return {
            "name": self.name,
            "kind": self.profile.kind,
            "link": self.link.name,
            "connected": self.agent.connected,
            "counters": dict(self.counters),
            "device": dict(getattr(h, "counters", {})),
            "last_error": getattr(h, "last_error", ""),
            "health": self.health(),
        }
