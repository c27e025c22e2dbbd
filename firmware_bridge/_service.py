"""The edge-bridge process: links and devices from one config, a supervisor tick that keeps
the layered safe state, a single-instance lock and a clean SIGTERM.

The supervisor tick (``bridge_tick_ms``) is the bridge's heartbeat towards its devices: it
counts the Modbus heartbeat registers and sends the CAN alive-counter frames, so when the
bridge stalls or loses edged they stop and the PLC / the ECU acts on its own. It also writes
the Modbus safe values when a device's agent has lost edged for ``bridge_safe_after_ms``, and
feeds a service manager's watchdog ($NOTIFY_SOCKET, or a health file) while it is healthy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import zmq

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import AlreadyRunningError, EdgeError
from edge.runtime import InstanceLock
from edge.transport import AGENTS_SOCK, endpoint

from ._config import BridgeConfig
from ._device import Device
from ._link import Link, backend
from ._profile import load_profile
from ._trace import ReadingTrace

log = logging.getLogger("firmware_bridge")

LOCK_FILE = "bridge.lock"


class Bridge:
    """``Bridge(cfg).start()``; ``tick()`` is called by ``run()`` (or a test) every tick."""

    def __init__(
        self,
        cfg: BridgeConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        endpoint_override: str | None = None,
    ):
        self.cfg = cfg
        self.clock = clock
        self.endpoint = endpoint_override or endpoint(cfg.run_dir, AGENTS_SOCK)
        self.links: dict[str, Link] = {}
        self.devices: list[Device] = []
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._lost_since: dict[str, int] = {}
        self._safe_done: set[str] = set()
        self._next: dict[tuple[str, str], int] = {}
        self._hb: dict[str, int] = {}
        self._alive: dict[str, int] = {}
        self._closed = False
        self.trace: ReadingTrace | None = None
        self.counters = {
            "ticks": 0,
            "safe_on_edged_loss": 0,
            "heartbeats": 0,
            "alive_frames": 0,
            "watchdog_pings": 0,
        }

    def start(self) -> Bridge:
        """Load every profile (ProfileError lists all their mistakes), open the links, start
        the agents (they connect whenever edged is there)."""
        try:
            if self.cfg.bridge_trace_file is not None:
                self.trace = ReadingTrace(self.cfg.bridge_trace_file)
            profiles = {d.name: load_profile(d.profile) for d in self.cfg.devices}
            for spec in self.cfg.links:
                self.links[spec.name] = backend(spec.kind)(
                    spec.name, dict(spec.options), clock=self.clock
                )
            for d in self.cfg.devices:
                link: Any = self.links[d.link]
                prof = profiles[d.name]
                if prof.kind == "mcu" and not prof.points:  # points from the hello frame
                    points = link.discover()
                    prof = dataclasses.replace(prof, points=tuple(points))
                dev = Device(
                    d,
                    prof,
                    link,
                    endpoint=self.endpoint,
                    context=self.ctx,
                    clock=self.clock,
                    trace=self.trace,
                )
                dev.handle = _attach(link, dev)
                self.devices.append(dev)
            for link in self.links.values():
                link.start()
            for dev in self.devices:
                dev.agent.start()
        except BaseException:
            self.close(safe=False)
            raise
        return self

    # ------------------------------------------------------------ the supervisor

    def healthy(self) -> bool:
        return all(d.agent.connected for d in self.devices) and all(
            lk.is_open for lk in self.links.values()
        )

    def tick(self) -> None:
        now = self.clock.monotonic_ns()
        self.counters["ticks"] += 1
        for dev in self.devices:
            prof = dev.profile
            connected = dev.agent.connected
            if connected:
                self._lost_since.pop(dev.name, None)
                self._safe_done.discard(dev.name)
            else:
                since = self._lost_since.setdefault(dev.name, now)
                if (
                    now - since >= self.cfg.bridge_safe_after_ms * 1_000_000
                    and dev.name not in self._safe_done
                    and prof.safe_state
                ):
                    self._safe_done.add(dev.name)
                    self.counters["safe_on_edged_loss"] += 1
                    threading.Thread(
                        target=dev.write_safe_state,
                        args=("edged lost",),
                        name=f"bridge-safe-{dev.name}",
                        daemon=True,
                    ).start()
            if (
                connected
                and prof.heartbeat
                and self._due(dev.name, "hb", prof.heartbeat.period_ns, now)
            ):
                n = self._hb[dev.name] = (self._hb.get(dev.name, 0) + 1) % 65536
                p = prof.point(prof.heartbeat.point)
                try:
                    dev.link.write(dev.handle, [(p, p.from_raw(n))], lambda ok, d, t: None)
                    self.counters["heartbeats"] += 1
                except EdgeError as exc:
                    log.debug("heartbeat %s: %s", dev.name, exc)
            if connected and prof.kind == "mcu":
                dev.link.beat()  # the MCU goes safe without them
            if (
                connected
                and prof.alive
                and dev.link.is_open
                and self._due(dev.name, "alive", prof.alive.period_ns, now)
            ):
                self._send_alive(dev)
            if self._due(dev.name, "health", self.cfg.bridge_health_ms * 1_000_000, now):
                dev.report_health()
        if self.healthy():
            self._feed_watchdog()

    def _due(self, name: str, what: str, period_ns: int, now: int) -> bool:
        key = (name, what)
        if now >= self._next.get(key, 0):
            self._next[key] = now + period_ns
            return True
        return False

    def _send_alive(self, dev: Device) -> None:
        alive = dev.profile.alive
        assert alive is not None
        msg = dev.profile.db.get_message_by_name(alive.message)
        sig = msg.get_signal_by_name(alive.signal)
        wrap = 1 << sig.length
        n = self._alive[dev.name] = (self._alive.get(dev.name, -1) + 1) % wrap
        from ._can import _neutral

        values = {s.name: _neutral(s) for s in msg.signals}
        values[alive.signal] = n
        if dev.link.send_frame(
            msg.frame_id,
            msg.encode(values, strict=False),
            msg.is_extended_frame,
        ):
            self.counters["alive_frames"] += 1

    def _feed_watchdog(self) -> None:
        self.counters["watchdog_pings"] += 1
        if self.cfg.bridge_health_file is not None:
            try:
                self.cfg.bridge_health_file.touch()
            except OSError:
                pass
        addr = os.environ.get("NOTIFY_SOCKET")
        if addr:
            sd_notify(addr, b"WATCHDOG=1")

    def run(self, stop: threading.Event) -> None:
        period = self.cfg.bridge_tick_ms / 1000
        notify = os.environ.get("NOTIFY_SOCKET")
        if notify:
            sd_notify(notify, b"READY=1")
        while not stop.wait(period):
            self.tick()

    def status(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "links": {
                n: {
                    "kind": lk.kind,
                    "open": lk.is_open,
                    "counters": dict(lk.counters),
                    "last_error": lk.last_error,
                }
                for n, lk in self.links.items()
            },
            "devices": [d.status() for d in self.devices],
        }

    def close(self, *, safe: bool = True) -> None:
        """Write Modbus safe values (shutdown), stop alive frames, close agents and links.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if safe:
            for dev in self.devices:
                if dev.profile.safe_state and dev.link.is_open:
                    ok, detail = dev.write_safe_state("bridge shutdown")
                    if not ok:
                        log.error(
                            "device %s: safe values NOT confirmed at shutdown: %s", dev.name, detail
                        )
        for dev in self.devices:
            dev.agent.close()
        for link in self.links.values():
            link.close()
        if self.trace is not None:
            self.trace.close()
        self.ctx.term()

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _attach(link: Any, dev: Device) -> Any:
    kind = dev.profile.kind
    if kind == "modbus":
        return link.add_device(
            dev.name,
            dev.spec.unit,
            dev.profile.points,
            dev.profile.poll_groups,
            dev.on_values,
        )
    if kind == "can":
        return link.add_device(dev.name, dev.profile, dev.on_values)
    return link.add_device(dev.name, dev.profile, dev.on_values)


def sd_notify(addr: str, msg: bytes) -> None:
    """One sd_notify datagram (READY=1, WATCHDOG=1) to systemd's $NOTIFY_SOCKET."""
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(msg, addr)
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


def serve(cfg: BridgeConfig) -> int:
    """Run until SIGTERM/SIGINT. Exit codes as edge-sync's: 0 stopped cleanly, 1 cannot start,
    2 bad configuration (a profile with mistakes), 3 already running."""
    from ._errors import BackendError, ProfileError

    try:
        cfg.run_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        lock = InstanceLock(
            Path(cfg.run_dir) / LOCK_FILE, owner="edge-bridge", hint="use another --run-dir"
        ).acquire()
    except AlreadyRunningError as exc:
        log.error("%s", exc)
        return 3
    except OSError as exc:
        log.error("cannot use run dir %s: %s", cfg.run_dir, exc)
        return 1
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    bridge = Bridge(cfg)
    try:
        try:
            bridge.start()
        except ProfileError as exc:
            log.error("device profile errors:\n%s", exc)
            return 2
        except BackendError as exc:
            log.error("%s", exc)
            return 2
        except EdgeError as exc:
            log.error("cannot start: %s", exc)
            return 1
        log.info(
            "edge-bridge: %d links, %d devices, edged at %s",
            len(bridge.links),
            len(bridge.devices),
            bridge.endpoint,
        )
        bridge.run(stop)
        log.info("edge-bridge: stopping (signal)")
        return 0
    finally:
        bridge.close()
        for s, h in old.items():
            signal.signal(s, h)
        lock.release()
