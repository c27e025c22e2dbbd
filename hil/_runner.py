"""One scenario run: a real edged (child process, edge.sim.Rig), simulated agents through
edge.sdk inside the rig, the plant stepped in real time, faults, then the verdict.

Phases, each with a timeout: start (edged answers STATUS, every agent welcomed), run (the
scenario's duration; the loop gives up at duration + RUN_SLACK_S -> TIMEOUT), teardown (agents
closed, edged SIGTERM -> SIGKILL, the throw-away directory removed; bounded by the children's
grace periods). Whatever happens, ``finally`` tears everything down.

The rig measures itself (HDR histograms, µs): ``injection`` is how late each plant step ran
against its schedule (the sample leaves then), ``observation`` how long an instruction waited
between the SDK handing it over and the plant seeing it. A run whose injection p99 exceeds the
scenario's ``tolerance_ms`` is ERROR: a slow rig is never blamed on the system under test.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from edge.errors import EdgeError
from edge.sim import Rig, new_hist, record_ns, summary_us

from ._errors import HilError, PlantError, RigSkipError, RigTimeoutError
from ._faults import FAULTS, LINK_LAYERS, SignalFaults
from ._plants import Plant, make_plant
from ._scenario import AgentSpec, Scenario

RUN_SLACK_S = 30.0
_E2E_RE = re.compile(r"e2e ([0-9,.]+) µs")


@dataclasses.dataclass
class Recording:
    """Everything a run saw, times in ms since the start of the run."""

    signals: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    samples: list[tuple[float, str, str, float, str]] = dataclasses.field(default_factory=list)
    instructions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    faults: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    """The rig's own observations on their own times (``uplink.*``)."""
    end_ms: float = 0.0

    def series(self, name: str) -> list[tuple[float, float]]:
        """A plant signal, an observation of the rig, or ``agent.metric`` as reported."""
        if name in self.signals:
            return self.signals[name]
        if name in self.extra:
            return self.extra[name]
        agent, _, metric = name.partition(".")
        return [(t, v) for t, a, m, v, _ in self.samples if a == agent and m == metric]


@dataclasses.dataclass
class RunResult:
    scenario: Scenario
    verdict: str = "PASS"  # PASS FAIL ERROR TIMEOUT SKIP
    marginal: bool = False
    reason: str = ""
    assertions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    recording: Recording = dataclasses.field(default_factory=Recording)
    rig: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: float = 0.0
    wall_s: float = 0.0
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)


class _SimAgent:
    """One scenario agent: an SDK Agent reporting plant signals; its instructions become plant
    inputs through a queue read by the stepping loop."""

    def __init__(self, spec: AgentSpec, run: _Run):
        self.spec = spec
        self.run = run
        self.agent: Any = None
        self.next_ns = 0
        self.session = 0
        self.sent = 0  # samples the SDK took in the current session (edged counts the same)
        self.faults = {m: SignalFaults([f for f in run.sc.faults if FAULTS[f.kind][0] == "signal"
                                        and f.target == f"{spec.id}.{m}"], run.sc.seed ^ hash(m) & 0xFFFF)
                       for m, _ in spec.report}

    def metrics(self) -> list[Any]:
        return [(m, self.spec.labels[m]) if m in self.spec.labels else m for m, _ in self.spec.report]

    def connect(self, timeout: float) -> None:
        from edge.sdk import Agent

        agent = Agent(self.spec.id, self.metrics(), handler=self.on_instruction,
                      run_dir=self.run.rig.run_dir, kind=self.spec.kind, heartbeat_ms=200)
        agent.connect(timeout=timeout)  # raises (and closes it) if edged refuses or is silent
        self.agent = agent  # the stepping loop reports through it from now on

    def on_instruction(self, ins: Any) -> Any:
        t = time.monotonic_ns()
        run = self.run
        action = ins.action_name
        params = {p.key: p.value for p in ins.params}
        run.instructions.put((t, self.spec.id, ins.rule_id, action, params, ins.t_sample_ns))
        return None  # executed: the Ack says ok (the plant takes it on its next step)

    def report(self, t_ns: int, now_ns: int, values: dict[str, float], t_ms: float, ts_ns: int) -> None:
        """Report the step at ``t_ns`` (its schedule) sent at ``now_ns`` (``t_ms`` since start);
        ``ts_ns`` is the scenario's timeline (the signal faults' windows are on it)."""
        if self.agent is None or t_ns < self.next_ns:
            return
        self.next_ns = t_ns + self.spec.every_ns
        items = []
        for metric, sig in self.spec.report:
            v = self.faults[metric].apply(ts_ns, values[sig])
            if v is None:
                continue
            lab = self.spec.labels.get(metric)
            items.append((metric, v, lab) if lab else (metric, v))
            self.run.rec.samples.append((t_ms, self.spec.id, metric, v, _labels(lab)))
        if items:
            with contextlib.suppress(EdgeError):
                if self.agent.session != self.session:
                    self.session, self.sent = self.agent.session, 0
                self.sent += self.agent.report_many(items, t_ns=now_ns)

    def close(self) -> None:
        a, self.agent = self.agent, None
        if a is not None:
            a.close()


def _labels(lab: dict[str, str] | None) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(lab.items())) if lab else ""


class _Run:
    def __init__(self, sc: Scenario):
        self.sc = sc
        self.rig: Any = None
        self.plant: Plant | None = None
        self.agents: dict[str, _SimAgent] = {}
        self.rec = Recording()
        self.instructions: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.t0 = 0
        self.injection = new_hist()
        self.observation = new_hist()
        self.hogs: list[subprocess.Popen[bytes]] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.edged_stopped = False
        self.edged_dead = False
        self._nice: int | None = None  # the rig's priority before its loop raised it
        self.bench: Any = None  # the devices and edge-bridge (hil/_devices.py), if any
        self.device_counters: dict[str, Any] = {}
        self.fault_logs: dict[str, Any] = {}  # device -> its seeded hits (kind, stream, index)
        self.uplink: Any = None  # edge-sync, the fault proxy and nats-server (hil/_uplink.py)
        self.edged_config: Any = None
        self.clock_file: Any = None  # edged's wall_clock_file (clock faults)
        self.floods: dict[str, Any] = {}  # metric_flood id -> its Flood (hil/_load.py)
        self.wall_offset_ms = 0.0
        self.wall_skew_ppm = 0.0
        self._skew_since = 0
        self.bridge_stopped = False
        self.bridge_dead = False
        self.sync_stopped = False
        self.sync_dead = False
        self._tail: threading.Thread | None = None
        self._tail_stop = threading.Event()
        self._t0_wall_ms = 0.0
        self.disk: Any = None  # edged's data dir on a tmpfs (the disk-full fault, hil/_disk.py)
        self.held_ns = 0  # how long wait: stimuli held the timeline
        self._hold_since: dict[str, int] = {}
        self._waited: dict[str, float] = {}  # fault id -> ms waited for it (-1: not back in time)
        self._agents_polled = 0
        self._fault_at: dict[str, list[Any]] = {}  # fault id -> [start ms, end ms] on the run's time
        self._committed_at_free: float | None = None

    # -------------------------------------------------------------- phases

    def start(self) -> None:
        sc = self.sc
        try:
            self.plant = make_plant(sc.model, sc.params, sc.fmu)
        except PlantError:
            raise
        except Exception as exc:  # a model that cannot be built is the rig's problem
            raise PlantError(f"plant {sc.model} failed to load: {exc}") from exc
        for k, v in sc.initial.items():
            self.plant.set(k, v)
        self.rig = Rig()
        self._disk_mount()  # first: a rig that may not mount starts nothing else (SKIP)
        if sc.uplink is not None:
            from ._uplink import Uplink

            self.uplink = Uplink(self.rig, f"hil-{sc.id}", sc.uplink[0])
            self.edged_config = self.uplink.start_server()
        self._clock_config()
        if self.disk is not None:  # an LMDB map that starts small and may grow past the tmpfs,
            # so that the full disk is what stops its commits (as on a board's flash), not the map
            self._edged_settings(f"map_size = {1 << 20}\nmax_map_size = {256 << 20}\n")
        try:
            self.rig.start_edged(sc.rules_file, timeout=sc.start_timeout_s, log_level=sc.edged_log_level,
                                 config_file=self.edged_config)
        except EdgeError as exc:
            raise HilError(f"edged would not start: {exc}") from exc
        if self.uplink is not None:
            self.uplink.start_sync(sc.start_timeout_s)
        for spec in sc.agents:
            a = _SimAgent(spec, self)
            self.agents[spec.id] = a
            try:
                a.connect(timeout=sc.start_timeout_s)
            except EdgeError as exc:
                raise HilError(f"agent {spec.id} would not connect: {exc}") from exc
        if sc.devices:
            from ._devices import Bench

            self.bench = Bench(sc.devices, self.rig, sc.seed)
            self.bench.start(sc.start_timeout_s, self.plant.values())
        self._calibrate()

    def _calibrate(self) -> None:
        """A flood at a multiple of edged's capacity: its senders start now and measure the
        capacity (hil/_load.py), before the scenario's timeline begins."""
        from ._load import Flood

        for f in self.sc.faults:
            if f.kind == "metric_flood" and f.params.get("ratio"):
                fl = self.floods[f.id] = Flood(self.rig, f, self.sc.start_timeout_s)
                try:
                    fl.spawn()
                    fl.calibrate()
                except EdgeError as exc:
                    raise HilError(f"metric_flood {f.id}: {exc}") from exc

    def _clock_config(self) -> None:
        """edged's wall clock under the rig's control when a scenario faults it."""
        if not any(FAULTS[f.kind][0] == "clock" for f in self.sc.faults):
            return
        self.clock_file = self.rig.root / "wall-clock"
        self._write_clock()
        self._edged_settings(f'wall_clock_file = "{self.clock_file}"\n')

    def _edged_settings(self, lines: str) -> None:
        """Append settings to edged's config file (made here when the rig has none yet)."""
        if self.edged_config is None:
            self.edged_config = self.rig.root / "edged.toml"
            self.edged_config.write_text("", encoding="utf-8")
        with open(self.edged_config, "a", encoding="utf-8") as fh:
            fh.write(lines)

    def _disk_mount(self) -> None:
        """The disk-full fault: edged's data dir on a small tmpfs (RigSkipError where the rig
        may not mount one)."""
        sizes = [f.params.get("size_mb", 16.0) for f in self.sc.faults if f.kind == "disk_full"]
        if not sizes:
            return
        from ._disk import DataDisk

        disk = DataDisk(self.rig.data_dir, max(sizes))
        disk.mount()
        self.disk = disk

    def _disk_fill(self, f: Any) -> None:
        n = self.disk.fill(int(f.params.get("leave_kb", 0.0) * 1024))
        t_ms = (time.monotonic_ns() - self.t0) / 1e6
        self.rec.extra.setdefault("disk.filled_bytes", []).append((t_ms, float(n)))

    def _disk_free(self) -> None:
        self.disk.free()
        self._committed_at_free = self._store_counters().get("committed_records")

    def _store_counters(self) -> dict[str, Any]:
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        with CtlClient(self.rig.run_dir, timeout=5.0) as c:
            return dict(c.request(CtlOp.STATUS).get("store", {}))

    def _write_clock(self) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(f"{self.wall_offset_ms:.3f} {self.wall_skew_ppm:g}\n", encoding="ascii")
        os.replace(tmp, self.clock_file)  # edged never reads half a file

    def _clock_fault(self, f: Any, start: bool) -> None:
        if not start and f.kind == "clock_step" and not f.duration_ns:
            return  # a step for good
        now = time.monotonic_ns()
        if self.wall_skew_ppm:  # fold the skew run so far into the offset
            self.wall_offset_ms += (now - self._skew_since) / 1e6 * self.wall_skew_ppm / 1e6
        self._skew_since = now
        if f.kind == "clock_step":
            self.wall_offset_ms += f.params.get("ms", 0.0) * (1 if start else -1)
        else:
            self.wall_skew_ppm = f.params.get("ppm", 0.0) if start else 0.0
        self._write_clock()

    # -------------------------------------------------------------- devices

    def _tail_loop(self) -> None:
        """Instructions to the bridge's devices and their Acks, as edged reports them (its
        event tail over ctl.sock, polled): the rig does not see those instructions itself."""
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        from ._devices import link_name

        by_id = self.bench.by_id if self.bench is not None else {}
        devices = set(by_id)
        buses = {k: f"bus={link_name(d)}" for k, d in by_id.items()}
        cursor, open_ins = 0, {}
        client: Any = None
        n = 0
        while not self._tail_stop.wait(0.02):
            n += 1
            if self.uplink is not None and n % 5 == 0:
                got = self.uplink.sample()
                if got is not None:
                    t_ms = (time.monotonic_ns() - self.t0) / 1e6
                    self.rec.extra.setdefault("uplink.link_up", []).append((t_ms, got[0]))
                    self.rec.extra.setdefault("uplink.outbox", []).append((t_ms, got[1]))
            if not devices:
                continue
            try:
                if client is None:
                    client = CtlClient(self.rig.run_dir, timeout=0.5)
                if n % 10 == 0:  # the devices' health as the bridge reports it, 5 per second
                    t_ms = (time.monotonic_ns() - self.t0) / 1e6
                    for a in client.request(CtlOp.AGENTS)["agents"]:
                        if a["agent_id"] in devices:
                            for k, v in sorted((a.get("health") or {}).items()):
                                self.rec.samples.append((t_ms, a["agent_id"], f"health_{k}",
                                                         float(v), buses[a["agent_id"]]))
                r = client.request(CtlOp.TAIL, {"after": cursor})
            except Exception:  # edged stopped, killed or restarting: try again
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
                client, cursor = None, 0
                continue
            if r.get("newest", r["last"]) < cursor:  # a new edged: its events start again
                cursor = 0
                continue
            cursor = r["last"]
            for ev in r["events"]:
                if ev.get("agent_id") not in devices:
                    continue
                t_ms = ev["wall_ms"] - self._t0_wall_ms - self.wall_offset_ms  # edged's wall clock
                if ev["kind"] == "instruction":  # detail: "ACTION (metric = value)"
                    rec = {"t_ms": t_ms, "agent_id": ev["agent_id"], "rule_id": ev["rule_id"],
                           "action": ev["detail"].split(" (", 1)[0], "params": {},
                           "t_sample_ms": None, "e2e_ms": None, "ack": "pending",
                           "applied_ms": None}
                    open_ins[ev["instruction_id"]] = rec
                    self.rec.instructions.append(rec)
                elif ev["kind"] == "ack" and ev["instruction_id"] in open_ins:
                    ins = open_ins.pop(ev["instruction_id"])  # detail: "STATUS, e2e N µs"
                    ins["ack"] = ev["detail"].split(",", 1)[0].strip()
                    ins["applied_ms"] = t_ms
                    m = _E2E_RE.search(ev["detail"])
                    if m:  # sample -> the device's confirmation, as edged measured it
                        ins["e2e_ms"] = float(m.group(1).replace(",", "")) / 1000.0
                        ins["t_sample_ms"] = t_ms - ins["e2e_ms"]
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _devices_step(self, values: dict[str, float] | None) -> None:
        """Device outputs -> plant inputs (``values`` None), or plant values -> devices."""
        plant = self.plant
        assert plant is not None
        for d in self.bench.devices:
            try:
                if values is None:
                    for k, v in d.drive().items():
                        plant.set(k, v)
                else:
                    d.sense(values)
            except Exception as exc:  # a simulator that fails is the rig's problem
                raise HilError(f"device {d.spec.id}: its simulator failed: {exc}") from exc

    def loop(self) -> None:
        """The run, its plant loop at a raised priority where the rig may (nice -10): other
        jobs on the machine should not make the rig late. What it starts in the background
        (restarts, load agents, CPU hogs) goes back to the normal priority first, so the
        system under test runs as it would."""
        me = threading.get_native_id()
        try:
            before = os.getpriority(os.PRIO_PROCESS, me)
            os.setpriority(os.PRIO_PROCESS, me, -10)
            self._nice = before
        except OSError:  # not allowed (no CAP_SYS_NICE): run at the normal priority
            self._nice = None
        try:
            self._loop()
        finally:
            if self._nice is not None:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, me, self._nice)

    def _normal_priority(self) -> None:
        """This thread (and what it starts) back at the priority the rig started with."""
        if self._nice is not None:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)

    def _loop(self) -> None:
        sc, plant, rec = self.sc, self.plant, self.rec
        assert plant is not None
        step, dt = sc.step_ns, sc.step_ns / 1e9
        stim_state: dict[int, dict[str, float]] = {}
        faults = sorted((f for f in sc.faults
                         if FAULTS[f.kind][0] != "signal"),
                        key=lambda f: f.start_ns)
        started: set[str] = set()
        ended: set[str] = set()
        self.t0 = time.monotonic_ns()
        self._t0_wall_ms = time.time() * 1000.0 - (time.monotonic_ns() - self.t0) / 1e6
        if self.bench is not None or self.uplink is not None:
            self._tail = threading.Thread(target=self._tail_loop, name="hil-tail", daemon=True)
            self._tail.start()
        slack = int(RUN_SLACK_S * 1e9)
        waits = [s for s in sc.stimulus if s.kind == "wait"]
        k = 0
        while True:
            # t_ns: the run's time (the schedule, the plant's physics); ts: the scenario's
            # timeline (stimulus, faults, the end), held still while a wait: is waiting
            t_ns = k * step
            ts = t_ns - self.held_ns
            if ts > sc.duration_ns:
                break
            k += 1
            due = self.t0 + t_ns
            now = time.monotonic_ns()
            if now < due:
                time.sleep((due - now) / 1e9)  # pacing the real-time loop to its schedule
                now = time.monotonic_ns()
            if now > self.t0 + sc.duration_ns + self.held_ns + slack:
                raise RigTimeoutError(f"the run did not finish within "
                                      f"{(sc.duration_ns + self.held_ns) / 1e9 + RUN_SLACK_S:g} s")
            record_ns(self.injection, now - due)
            self._apply_stimulus(ts, stim_state)
            self._apply_instructions(now)
            for f in faults:
                if f.id not in started and ts >= f.start_ns:
                    started.add(f.id)
                    self._fault_at[f.id] = [(now - self.t0) / 1e6, None]
                    self._fault_start(f, ts)
                if f.id in started and f.id not in ended and f.duration_ns and ts >= f.start_ns + f.duration_ns:
                    ended.add(f.id)
                    self._fault_at[f.id][1] = (now - self.t0) / 1e6
                    self._fault_end(f)
            if waits and self._hold(ts, waits, ended):
                self.held_ns += step  # the timeline stays at ts for the next step too
            if self.bench is not None:
                self._devices_step(None)
            if k:
                plant.step(t_ns / 1e9, dt)
            values = plant.values()
            if self.bench is not None:
                self._devices_step(values)
            sent = time.monotonic_ns()
            t_ms = (sent - self.t0) / 1e6  # when the step's samples leave (late steps stay honest)
            for name, v in values.items():
                rec.signals.setdefault(name, []).append((t_ms, v))
                lim = sc.limits.get(name)
                if lim is not None and not lim[0] <= v <= lim[1]:
                    raise PlantError(f"the plant diverged: {name}={v:g} at t={t_ms / 1000:.3f} s "
                                     f"is outside its limits [{lim[0]:g}, {lim[1]:g}]")
            for a in self.agents.values():
                a.report(t_ns, sent, values, t_ms, ts)
            if self.errors:
                raise HilError("; ".join(self.errors))
        self._apply_instructions(time.monotonic_ns())
        rec.end_ms = (time.monotonic_ns() - self.t0) / 1e6
        for f in faults:
            if f.id in started and f.id not in ended:
                self._fault_at[f.id][1] = rec.end_ms
                self._fault_end(f)
        for th in self.threads:  # a hot swap or a restart still under way
            th.join(self.sc.start_timeout_s)
        if self.errors:
            raise HilError("; ".join(self.errors))
        self.samples_check()
        self.edged_counters()
        if self.uplink is not None and sc.uplink is not None:  # delivered exactly once afterwards?
            for k, v in self.uplink.drain(sc.uplink[1]).items():
                rec.extra[f"uplink.{k}"] = [(rec.end_ms, v)]
        if waits:
            rec.extra["rig.held_ms"] = [(rec.end_ms, self.held_ns / 1e6)]
        for f in sc.faults:  # when each really began and ended on the run's time
            end = f.start_ns + f.duration_ns if f.duration_ns else sc.duration_ns
            start_ms, end_ms = self._fault_at.get(f.id, [f.start_ns / 1e6, None])
            if end_ms is None:
                end_ms = start_ms + (min(end, sc.duration_ns) - f.start_ns) / 1e6
            rec.faults.append({"id": f.id, "kind": f.kind, "layer": FAULTS[f.kind][0],
                               "target": f.target, "start_ms": start_ms,
                               "end_ms": end_ms, "params": f.params})

    def _hold(self, ts: int, waits: list[Any], ended: set[str]) -> bool:
        """Whether the timeline waits at ``ts``: a ``wait: {recovered: FAULT}`` that is due
        and whose fault's target is not back yet (its deadline, ``timeout``, not passed).
        Back: the fault over, edged, edge-bridge and edge-sync up again, every SDK agent
        connected, every device active in edged. Polled each step (edged's agents table at
        most every 100 ms)."""
        now = time.monotonic_ns()
        for s in waits:
            if ts < s.at_ns or s.fault in self._waited:
                continue
            since = self._hold_since.setdefault(s.fault, now)
            if self._recovered(s.fault, ended, now):
                self._waited[s.fault] = (now - since) / 1e6
                return False
            if now - since > s.timeout_ns:  # not back in time: the timeline goes on without it
                self._waited[s.fault] = -1.0
                return False
            return True
        return False

    def _recovered(self, fault_id: str, ended: set[str], now: int) -> bool:
        if fault_id not in ended or self.edged_dead or self.bridge_dead or self.sync_dead:
            return False
        if any(th.is_alive() for th in self.threads):  # a restart or reconnect under way
            return False
        if not all(a.agent is not None and a.agent.connected for a in self.agents.values()):
            return False
        if self.bench is None:
            return True
        if now - self._agents_polled < 100_000_000:
            return False
        self._agents_polled = now
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        try:
            with CtlClient(self.rig.run_dir, timeout=0.5) as c:
                active = {a["agent_id"] for a in c.request(CtlOp.AGENTS)["agents"] if a.get("state") == "active"}
        except Exception:  # edged not answering yet
            return False
        return set(self.bench.by_id) <= active

    def _apply_stimulus(self, t_ns: int, state: dict[int, dict[str, float]]) -> None:
        plant = self.plant
        assert plant is not None
        for i, s in enumerate(self.sc.stimulus):
            if t_ns < s.at_ns or s.kind == "wait":  # a wait holds the timeline (_hold)
                continue
            if s.kind == "set":
                if i not in state:
                    state[i] = {}
                    for k, v in s.values.items():
                        plant.set(k, v)
            elif s.kind == "ramp":
                start = state.setdefault(i, {k: plant.u[k] for k in s.values})
                if t_ns > s.at_ns + s.over_ns + self.sc.step_ns:
                    continue
                f = min(1.0, (t_ns - s.at_ns) / s.over_ns)
                for k, v in s.values.items():
                    plant.set(k, start[k] + (v - start[k]) * f)
            else:
                rows = s.profile
                if not rows:
                    continue
                ts = (t_ns - s.at_ns) / 1e9
                j = bisect.bisect_right([r[0] for r in rows], ts)
                if j == 0:
                    vals = rows[0][1]
                elif j >= len(rows):
                    vals = rows[-1][1]
                else:
                    (ta, va), (tb, vb) = rows[j - 1], rows[j]
                    f = (ts - ta) / (tb - ta) if tb > ta else 1.0
                    vals = {k: va[k] + (vb[k] - va[k]) * f for k in va}
                for k, v in vals.items():
                    plant.set(k, v)

    def _apply_instructions(self, now: int) -> None:
        plant = self.plant
        assert plant is not None
        while True:
            try:
                t, agent, rule_id, action, params, t_sample = self.instructions.get_nowait()
            except queue.Empty:
                return
            record_ns(self.observation, now - t)
            for k, v in self.agents[agent].spec.actions.get(action, {}).items():
                plant.set(k, v)
            self.rec.instructions.append({
                "t_ms": (t - self.t0) / 1e6, "agent_id": agent, "rule_id": rule_id,
                "action": action, "params": params, "t_sample_ms": (t_sample - self.t0) / 1e6,
                "e2e_ms": (t - t_sample) / 1e6, "ack": "ok", "applied_ms": (now - self.t0) / 1e6,
            })

    # -------------------------------------------------------------- process faults

    def _edged_pid(self) -> int | None:
        e = self.rig.edged
        return e.pid if e is not None and e.alive() else None

    def _fault_start(self, f: Any, t_ns: int) -> None:
        if FAULTS[f.kind][0] == "clock":
            self._clock_fault(f, True)
        elif FAULTS[f.kind][0] == "network":
            self.uplink.fault_start(f.kind)
        elif FAULTS[f.kind][0] in LINK_LAYERS:
            self.bench.by_id[f.target].fault_start(f.kind, f.params)
        elif f.kind == "metric_flood":
            self._in_background(f"metric_flood {f.id}", lambda: self._flood_start(f))
        elif f.kind == "disk_full":
            self._in_background(f"disk_full {f.id}", lambda: self._disk_fill(f))
        elif f.kind == "rules_swap":
            self._in_background(f"rules_swap {f.id}", lambda: self._push_rules(f.target))
        elif f.target == "sync":
            c = self.uplink.sync
            if f.kind == "sigstop" and c.alive():
                os.kill(c.pid, signal.SIGSTOP)
                self.sync_stopped = True
            elif f.kind == "sigkill" and c.alive():
                c.proc.kill()
                c.proc.wait(10)
                self.sync_dead = True
        elif f.target == "bridge":
            b = self.bench.bridge
            if f.kind == "sigstop" and b.alive():
                os.kill(b.pid, signal.SIGSTOP)
                self.bridge_stopped = True
            elif f.kind == "sigkill":
                self.bench.kill_bridge()
                self.bridge_dead = True
        elif f.kind == "sigstop":
            pid = self._edged_pid()
            if pid:
                os.kill(pid, signal.SIGSTOP)
                self.edged_stopped = True
        elif f.kind == "sigkill":
            e = self.rig.edged
            if e is not None and e.alive():
                e.proc.kill()
                e.proc.wait(10)
                self.edged_dead = True
        elif f.kind == "agent_kill":
            self.agents[f.target].close()
        elif f.kind == "cpu_hog":
            for _ in range(int(f.params.get("procs", 1))):
                hog = f"import os; os.setpriority(os.PRIO_PROCESS, 0, {self._nice or 0})\nwhile True: pass"
                self.hogs.append(subprocess.Popen([sys.executable, "-c", hog],
                                                  start_new_session=True))

    def _fault_end(self, f: Any) -> None:
        if f.kind == "metric_flood":
            self._in_background(f"metric_flood {f.id} end", lambda: self._flood_end(f))
        elif f.kind == "disk_full":
            self._in_background(f"disk_full {f.id} end", self._disk_free)
        elif FAULTS[f.kind][0] == "clock":
            self._clock_fault(f, False)
        elif FAULTS[f.kind][0] == "network":
            self.uplink.fault_end(f.kind)
        elif FAULTS[f.kind][0] in LINK_LAYERS:
            self.bench.by_id[f.target].fault_end(f.kind)
        elif f.target == "sync":
            if f.kind == "sigstop" and self.sync_stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.uplink.sync.pid, signal.SIGCONT)
                self.sync_stopped = False
            elif f.kind == "sigkill" and self.sync_dead:
                def restart_sync() -> None:
                    self.uplink.start_sync(self.sc.start_timeout_s)
                    self.sync_dead = False

                self._in_background(f"restart edge-sync after {f.id}", restart_sync)
        elif f.target == "bridge":
            if f.kind == "sigstop" and self.bridge_stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.bench.bridge.pid, signal.SIGCONT)
                self.bridge_stopped = False
            elif f.kind == "sigkill" and self.bridge_dead:
                def restart() -> None:
                    self.bench.start_bridge(self.sc.start_timeout_s)
                    self.bridge_dead = False

                self._in_background(f"restart edge-bridge after {f.id}", restart)
        elif f.kind == "sigstop" and self.edged_stopped:
            pid = self._edged_pid()
            if pid:
                os.kill(pid, signal.SIGCONT)
            self.edged_stopped = False
        elif f.kind == "sigkill" and self.edged_dead:
            self._in_background(f"restart edged after {f.id}", self._restart_edged)
        elif f.kind == "agent_kill":
            a = self.agents[f.target]
            self._in_background(f"reconnect {f.target} after {f.id}",
                                lambda: a.connect(timeout=self.sc.start_timeout_s))
        elif f.kind == "cpu_hog":
            self._stop_hogs()

    def _flood_start(self, f: Any) -> None:
        from ._load import Flood

        fl = self.floods.get(f.id)
        if fl is None:  # a fixed rate: its senders start now
            fl = self.floods[f.id] = Flood(self.rig, f, self.sc.start_timeout_s)
            fl.spawn()
        fl.start()

    def _flood_end(self, f: Any) -> None:
        fl = self.floods.get(f.id)
        if fl is None:
            return
        t_ms = (time.monotonic_ns() - self.t0) / 1e6  # the fault's end, not when its senders stopped
        fl.stop()
        self.rec.extra.setdefault("load.offered_per_s", []).append((t_ms, round(fl.offered, 1)))
        if fl.capacity:
            self.rec.extra.setdefault("load.capacity_per_s", []).append((t_ms, round(fl.capacity, 1)))
            self.rec.extra.setdefault("load.ratio", []).append((t_ms, round(fl.offered / fl.capacity, 3)))
        why = fl.shortfall()
        if why:
            self.errors.append(f"metric_flood {f.id}: {why}")

    def _push_rules(self, path: str) -> None:
        from pathlib import Path

        from edge.rules import encode_rule_table, load_rule_file
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        blob = encode_rule_table(load_rule_file(Path(path)), created_at_unix_ms=int(time.time() * 1000))
        with CtlClient(self.rig.run_dir, timeout=5.0) as c:
            c.request(CtlOp.RULES_PUSH, blob=blob)

    def samples_check(self) -> None:
        """Per SDK agent: the samples it handed to the SDK in its session against what edged
        counted for that session (``AGENT.samples_sent``, ``AGENT.samples_lost``)."""
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        if not self.agents or self.edged_dead:
            return
        t_ms = self.rec.end_ms  # a value of the run's end
        deadline = time.monotonic() + 3.0
        lost: dict[str, float] = {}
        while time.monotonic() < deadline:
            with CtlClient(self.rig.run_dir, timeout=2.0) as c:
                counted = {a["agent_id"]: a.get("samples", 0) for a in c.request(CtlOp.AGENTS)["agents"]
                           if a.get("state") == "active"}
            lost = {k: float(a.sent - counted[k]) for k, a in self.agents.items()
                    if a.agent is not None and k in counted}
            if not any(lost.values()):
                break
            time.sleep(0.05)  # samples still in the socket: polling edged's count
        for k, v in lost.items():
            self.rec.extra[f"{k}.samples_sent"] = [(t_ms, float(self.agents[k].sent))]
            self.rec.extra[f"{k}.samples_lost"] = [(t_ms, v)]

    def edged_counters(self) -> None:
        """edged's loop counters at the run's end, as ``edged.NAME`` signals."""
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        if self.edged_dead:
            return
        with CtlClient(self.rig.run_dir, timeout=5.0) as c:
            status = c.request(CtlOp.STATUS)
        for k, v in status.get("counters", {}).items():
            if isinstance(v, int | float):
                self.rec.extra[f"edged.{k}"] = [(self.rec.end_ms, float(v))]
        store = status.get("store", {})
        for k, v in store.items():  # the store writer's: disk_errors, dropped_io_error, ...
            if isinstance(v, int | float):
                self.rec.extra[f"edged.store_{k}"] = [(self.rec.end_ms, float(v))]
        if self._committed_at_free is not None and "committed_records" in store:
            self.rec.extra["disk.commits_after_free"] = [
                (self.rec.end_ms, float(store["committed_records"] - self._committed_at_free))]

    def _restart_edged(self) -> None:
        self.rig.edged_exit = None
        self.rig.start_edged(self.sc.rules_file, timeout=self.sc.start_timeout_s,
                             log_level=self.sc.edged_log_level, config_file=self.edged_config)
        self.edged_dead = False

    def _in_background(self, what: str, fn: Any) -> None:
        """Slow recoveries (edged's restart) run beside the loop so the plant keeps its step."""

        def body() -> None:
            self._normal_priority()
            try:
                fn()
            except Exception as exc:
                self.errors.append(f"{what} failed: {exc}")

        th = threading.Thread(target=body, name=f"hil-{what}", daemon=True)
        self.threads.append(th)
        th.start()

    def _stop_hogs(self) -> None:
        for p in self.hogs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()
        self.hogs.clear()

    # -------------------------------------------------------------- teardown

    def teardown(self) -> list[str]:
        """Stop everything, in order; returns what went wrong (never raises)."""
        problems = []
        for th in self.threads:
            th.join(self.sc.start_timeout_s + 5)
            if th.is_alive():
                problems.append(f"{th.name} still running at teardown")
        if self.edged_stopped:
            pid = self._edged_pid()
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        self._stop_hogs()
        for fl in self.floods.values():
            with contextlib.suppress(Exception):
                fl.stop()
        self._tail_stop.set()
        if self._tail is not None:
            self._tail.join(5)
        if self.bench is not None:
            if self.bridge_stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.bench.bridge.pid, signal.SIGCONT)
            self.device_counters = self.bench.counters()
            self.fault_logs = self.bench.fault_logs()
            problems += self.bench.close()
            if self.t0:  # what edged received from the devices, beside the rig's own samples
                try:
                    self.rec.samples.extend(self.bench.readings(self.t0))
                except (OSError, ValueError) as exc:
                    problems.append(f"the bridge's readings trace: {exc}")
                self.rec.samples.sort(key=lambda s: s[0])
        for a in self.agents.values():
            try:
                a.close()
            except Exception as exc:
                problems.append(f"agent {a.spec.id}: {exc}")
        if self.uplink is not None:
            if self.sync_stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.uplink.sync.pid, signal.SIGCONT)
            problems += self.uplink.close()
        if self.rig is not None:
            try:
                if self.disk is not None:  # edged off the tmpfs before it is unmounted
                    self.rig.stop_sims()
                    self.rig.stop_edged()
            except Exception as exc:
                problems.append(f"rig: {exc}")
            finally:
                if self.disk is not None:
                    why = self.disk.close()
                    if why:
                        problems.append(why)
            try:
                self.rig.close()
            except Exception as exc:
                problems.append(f"rig: {exc}")
        if self.plant is not None:
            try:
                self.plant.close()
            except Exception as exc:
                problems.append(f"plant: {exc}")
        return problems


def run_scenario(sc: Scenario) -> RunResult:
    """Run ``sc`` and judge it. Never raises for what the rig or the system under test did:
    the result's verdict and reason say it."""
    from ._verdict import judge

    res = RunResult(sc, started=time.time())
    if sc.skip:
        res.verdict, res.reason = "SKIP", sc.skip
        return res
    if sc.model == "fmu":
        try:
            import fmpy  # noqa: F401
        except ImportError:
            res.verdict, res.reason = "SKIP", "FMU plants need FMPy: pip install 'edge-runtime[hil]'"
            return res
    run = _Run(sc)
    t_wall = time.monotonic()
    try:
        run.start()
        run.loop()
    except RigTimeoutError as exc:
        res.verdict, res.reason = "TIMEOUT", str(exc)
    except RigSkipError as exc:
        res.verdict, res.reason = "SKIP", str(exc)
    except (HilError, EdgeError) as exc:
        res.verdict, res.reason = "ERROR", str(exc)
    except KeyboardInterrupt:
        res.verdict, res.reason = "ERROR", "interrupted"
        raise
    finally:
        problems = run.teardown()
        res.wall_s = time.monotonic() - t_wall
        res.recording = run.rec
        inj, obs = summary_us(run.injection), summary_us(run.observation)
        res.rig = {"injection_us": inj, "observation_us": obs, "tolerance_ms": sc.tolerance_ms,
                   "teardown_problems": problems}
        if run.bench is not None:
            res.rig["devices"] = run.device_counters
            res.rig["fault_log"] = run.fault_logs
        if run._waited:
            res.rig["waited_ms"] = run._waited
        if run.floods:
            res.rig["load"] = {k: fl.summary() for k, fl in run.floods.items()}
    if res.verdict == "PASS" and problems:
        res.verdict, res.reason = "ERROR", "teardown: " + "; ".join(problems)
    if res.verdict == "PASS" and inj.get("p99", 0) / 1000 > sc.tolerance_ms:
        res.verdict = "ERROR"
        res.reason = (f"the rig was too slow: its injection p99 {inj['p99'] / 1000:.1f} ms exceeds "
                      f"the scenario's tolerance {sc.tolerance_ms:g} ms (not the device's fault)")
    if res.verdict == "PASS":
        res.assertions = judge(sc, run.rec)
        if any(a["verdict"] == "FAIL" for a in res.assertions):
            res.verdict = "FAIL"
            res.reason = "; ".join(f"{a['id']}: {a['detail']}" for a in res.assertions if a["verdict"] == "FAIL")
        res.marginal = any(a["marginal"] for a in res.assertions)
    return res

