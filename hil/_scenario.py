"""Scenario files (YAML) -> a checked Scenario, with every mistake at once as file:line:col.

The YAML node tree and the Problem type are the rule files' (edge.rules.compose_source,
problem_at), so a scenario's errors read like a rule file's. Layout::

    meta:      {id, title, requirements: [..], seed, duration: 5s, skip: "why"}
    rig:       {rules: FILE, tolerance_ms: 20, edged: {log_level, start_timeout},
                agents: [{id, kind, report: {metric: signal}, labels: {metric: {k: v}},
                          actions: {action: {set: {input: value}}}, every: 20ms}],
                devices: [{id, kind: modbus|can|mcu, profile: FILE (the bridge's device
                           profile), unit: 1, sense: {signal: AT | {at: AT, scale: k}},
                           drive: {input: AT | {at, scale}}, echo: {Msg.Sig: Msg.Sig},
                           period: 10ms}],
                uplink: {agg_window: 1s, drain_timeout: 30s}}   (edge-sync + nats-server)
    plant:     {model: motor|tank|vehicle|fmu, fmu: FILE, step: 10ms, params: {..},
                initial: {input: value}, limits: {signal: [lo, hi]}}
    stimulus:  [{at: 1s, set: {input: v}} | {at, ramp: {input: v}, over: 2s} | {at, profile: CSV}
                | {at, wait: {recovered: FAULT_ID}, timeout: 20s}]  (the timeline holds until
                the fault's target is back: a restart's time is the machine's, not the scenario's)
    faults:    [{id, kind, target, start: 1s, duration: 500ms, params: {..}}]
    assertions: [{id, requirement, <one check>, <validator>, marginal: 10%}]
    outputs:   {formats: [json, junit, html, csv, mdf4]}

A signal is a plant output or input (``temp_c``) or a reported metric (``drive-1.temperature_c``);
a condition is ``SIGNAL OP NUMBER`` with OP one of < <= > >= == !=.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.rules import NodeChecker, Problem, RuleFileError, compose_source, read_source
from edge.rules import plain_value as _plain

from ._errors import ScenarioError
from ._faults import FAULTS, LINK_LAYERS, PROCESS_TARGETS
from ._plants import MODELS

FORMATS = ("json", "junit", "html", "csv", "mdf4")
_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")
_COND_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.:-]*)\s*(<=|>=|==|!=|<|>)\s*(-?[0-9.eE+-]+)\s*\Z")
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
CHECKS = ("within", "always", "never", "count", "e2e_p99", "final", "max", "min")
VALIDATORS = ("in_range", "equals", "within_percent")


@dataclasses.dataclass(frozen=True, slots=True)
class Cond:
    signal: str
    op: str
    value: float
    text: str

    def holds(self, x: float) -> bool:
        return OPS[self.op](x, self.value)


@dataclasses.dataclass(frozen=True, slots=True)
class AgentSpec:
    id: str
    kind: str
    report: tuple[tuple[str, str], ...]  # (metric, signal)
    labels: dict[str, dict[str, str]]
    actions: dict[str, dict[str, float]]  # action -> {plant input: value}
    every_ns: int  # 0: every plant step


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A simulated device on a real link behind edge-bridge (hil/_devices.py)."""

    id: str
    kind: str  # modbus | can | mcu
    profile: Path
    unit: int
    sense: dict[str, tuple[str, float]]  # plant signal -> (where on the device, scale)
    drive: dict[str, tuple[str, float]]  # plant input <- (where on the device, scale)
    echo: dict[str, str]  # can: a received Msg.Sig copied into a sent Msg.Sig
    period_ns: int  # can: the ECU's cycle


# the health series edge-bridge reports for each device (firmware_bridge/_device.py); the rig
# records them from edged's agents table as DEVICE.health_*
DEVICE_HEALTH = ("health_online", "health_errors", "health_timeouts", "health_out_of_range",
                 "health_rejected", "health_link_reopens")
CAN_HEALTH = ("health_bus_off", "health_error_passive")
# the disk-full fault's (hil/_runner.py): the filler's size, commits after it was removed
DISK_SIGNALS = ("disk.filled_bytes", "disk.commits_after_free")
# the uplink's signals (hil/_uplink.py): during the run, then once after the drain
UPLINK_SIGNALS = ("link_up", "outbox", "produced", "delivered", "duplicates", "dropped", "lost",
                  "outbox_left", "drain_s", "wall_span_s")

_AT = {"modbus": re.compile(r"(hr|ir|co|di):[0-9]{1,5}\Z"),
       "can": re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z"),
       "mcu": re.compile(r"(adc|pin|pwm):[0-9]{1,2}\Z")}
_AT_HINT = {"modbus": "hr:N, ir:N, co:N or di:N", "can": "Message.Signal of the DBC",
            "mcu": "adc:N (sense), pin:N or pwm:N (drive)"}


@dataclasses.dataclass(frozen=True, slots=True)
class Stimulus:
    at_ns: int
    kind: str  # set | ramp | profile | wait
    values: dict[str, float]
    over_ns: int = 0
    profile: tuple[tuple[float, dict[str, float]], ...] = ()  # (t_s after at, values)
    fault: str = ""  # wait: the fault whose target must be back
    timeout_ns: int = 0  # wait: the longest hold


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    id: str
    kind: str
    target: str
    start_ns: int
    duration_ns: int
    params: dict[str, float]


@dataclasses.dataclass(frozen=True, slots=True)
class Validator:
    kind: str  # in_range | equals | within_percent
    lo: float
    hi: float
    marginal: float  # fraction of the allowed band at each limit counted as marginal (0: none)


@dataclasses.dataclass(frozen=True, slots=True)
class Assertion:
    id: str
    requirement: str
    check: str
    cond: Cond | None = None  # always/never/final/max/min: the condition or signal
    after: Cond | None = None  # within: the event
    after_fault: str = ""  # within: the event is this fault's start
    expect: Cond | None = None  # within: a signal condition becoming true ...
    expect_instruction: str = ""  # ... or an instruction with this action
    expect_agent: str = ""
    expect_ack: str = ""  # count: only instructions acked with this status (ok, failed, ...)
    within_ns: int = 0
    window: tuple[int, int] = (0, -1)  # ns from start; -1: the end
    rule: str = ""  # count/e2e_p99
    validator: Validator | None = None
    line: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    id: str
    title: str
    requirements: tuple[str, ...]
    seed: int
    duration_ns: int
    skip: str
    rules_file: Path
    tolerance_ms: float
    edged_log_level: str
    start_timeout_s: float
    agents: tuple[AgentSpec, ...]
    devices: tuple[DeviceSpec, ...]
    uplink: tuple[float, float] | None  # (aggregation window s, drain timeout s)
    model: str
    fmu: Path | None
    step_ns: int
    params: dict[str, float]
    initial: dict[str, float]
    limits: dict[str, tuple[float, float]]
    stimulus: tuple[Stimulus, ...]
    faults: tuple[Fault, ...]
    assertions: tuple[Assertion, ...]
    formats: tuple[str, ...]


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario; raise ScenarioError listing every problem."""
    path = Path(path)
    try:
        text = read_source(path)
        root = compose_source(text, str(path))
    except RuleFileError as exc:
        raise ScenarioError(exc.problems) from None
    c = _Checker(str(path), path.parent)
    if root is None or root.tag != "tag:yaml.org,2002:map":
        raise ScenarioError([Problem(str(path), 1, 1, "a scenario is a mapping with meta:, rig:, plant:")])
    sc = c.scenario(root, path)
    if c.problems:
        raise ScenarioError(c.problems)
    assert sc is not None
    return sc


class _Checker(NodeChecker):
    def __init__(self, name: str, base: Path):
        super().__init__(name, base)
        self._waits: list[tuple[Any, str, str]] = []  # wait: stimuli (node, fault id, where)

    def number(self, node: Any, what: str, where: str = "", *, integer: bool = False) -> float:
        v = super().number(node, what, where, integer=integer)
        return 0.0 if v is None else float(v)

    def has_all(self, node: Any, m: dict[str, Any], keys: tuple[str, ...], where: str) -> bool:
        """Whether mapping ``m`` (of ``node``) has every key; each missing one is a problem."""
        missing = [k for k in keys if k not in m]
        for k in missing:
            self.bad(node, f"missing {k}:", where=where)
        return not missing

    def numbers(self, node: Any, what: str, where: str = "") -> dict[str, float]:
        return {k: self.number(v, f"{what} {k!r}", where) for k, v in self.mapping(node, what, None, where).items()}

    def file(self, node: Any, what: str, where: str = "") -> Path | None:
        t = self.text(node, what, where)
        if not t:
            return None
        p = Path(t).expanduser()
        p = (p if p.is_absolute() else self.base / p).resolve()
        if not p.is_file():
            self.bad(node, f"{what}: no such file {str(p)!r}", where=where)
            return None
        return p

    def cond(self, node: Any, what: str, signals: set[str], where: str = "") -> Cond | None:
        t = self.text(node, what, where)
        if not t:
            return None
        m = _COND_RE.match(t)
        if not m:
            self.bad(node, f"{what}: {t!r} is not SIGNAL OP NUMBER", "e.g. temp_c > 90", where)
            return None
        try:
            value = float(m.group(3))
        except ValueError:
            self.bad(node, f"{what}: {m.group(3)!r} is not a number", where=where)
            return None
        if m.group(1) not in signals:
            self.bad(node, f"{what}: unknown signal {m.group(1)!r}",
                     "signals: " + ", ".join(sorted(signals)), where)
            return None
        return Cond(m.group(1), m.group(2), value, t)

    # ---------------------------------------------------------------- sections

    def scenario(self, root: Any, path: Path) -> Scenario | None:
        top = self.mapping(root, "the scenario",
                           {"meta", "rig", "plant", "stimulus", "faults", "assertions", "outputs"})
        for need in ("meta", "rig", "plant"):
            if need not in top:
                self.bad(root, f"missing {need}:")
        meta = self.mapping(top.get("meta"), "meta",
                            {"id", "title", "requirements", "seed", "duration", "skip"})
        sid = self.text(meta["id"], "meta id") if "id" in meta else ""
        if "id" not in meta and "meta" in top:
            self.bad(top["meta"], "missing meta id")
        elif sid and not _ID_RE.match(sid):
            self.bad(meta["id"], f"meta id {sid!r}: letters, digits, _.:- only")
        title = self.text(meta["title"], "meta title") if "title" in meta else sid
        reqs = tuple(self.text(n, "a requirement id") for n in self.seq(meta.get("requirements"), "requirements"))
        seed = int(self.number(meta["seed"], "seed")) if "seed" in meta else 0
        duration = self.duration(meta["duration"], "duration") if "duration" in meta else 5_000_000_000
        skip = self.text(meta["skip"], "skip") if "skip" in meta else ""

        plant = self.mapping(top.get("plant"), "plant", {"model", "fmu", "step", "params", "initial", "limits"})
        model = ""
        if "model" in plant:
            model = self.text(plant["model"], "plant model")
            if model and model not in MODELS and model != "fmu":
                self.bad(plant["model"], f"unknown plant model {model!r}",
                         "models: " + ", ".join([*MODELS, "fmu"]))
                model = ""
        elif "plant" in top:
            self.bad(top["plant"], "missing plant model")
        fmu = None
        if model == "fmu":
            if "fmu" not in plant:
                self.bad(top["plant"], "model: fmu needs fmu: FILE")
            elif str(_plain(plant["fmu"])).startswith("builtin:"):
                from ._errors import PlantError
                from ._fmu import builtin_fmu

                try:
                    fmu = builtin_fmu(str(_plain(plant["fmu"]))[8:])
                except PlantError as exc:
                    self.bad(plant["fmu"], f"fmu: {exc}")
            else:
                fmu = self.file(plant["fmu"], "fmu")
        step = self.duration(plant["step"], "plant step") if "step" in plant else 10_000_000
        params = self.numbers(plant.get("params"), "plant params")
        initial = self.numbers(plant.get("initial"), "plant initial")
        io: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        if model in MODELS:
            io = MODELS[model].INPUTS, MODELS[model].OUTPUTS
            for k in params:
                if k not in MODELS[model].PARAMS:
                    self.bad(plant["params"], f"plant {model} has no parameter {k!r}",
                             "parameters: " + ", ".join(MODELS[model].PARAMS))
        elif model == "fmu" and fmu is not None:
            io = self._fmu_io(fmu, plant["fmu"])
        inputs, outputs = set(io[0]), set(io[1])
        known_model = model in MODELS or (model == "fmu" and fmu is not None and bool(inputs or outputs))
        for k, n in self.mapping(plant.get("initial"), "plant initial", None).items():
            if known_model and k not in inputs:
                self.bad(n, f"initial: {k!r} is not an input of the plant", "inputs: " + ", ".join(sorted(inputs)))
        limits: dict[str, tuple[float, float]] = {}
        for k, n in self.mapping(plant.get("limits"), "plant limits", None).items():
            pair = [self.number(x, f"limit of {k}") for x in self.seq(n, f"limit of {k}")]
            if len(pair) != 2 or pair[0] >= pair[1]:
                self.bad(n, f"limit of {k}: write [low, high] with low < high")
            else:
                limits[k] = (pair[0], pair[1])
            if known_model and k not in outputs | inputs:
                self.bad(n, f"limits: {k!r} is not a signal of the plant")

        rig = self.mapping(top.get("rig"), "rig", {"rules", "tolerance_ms", "edged", "agents", "devices",
                                                   "uplink"})
        uplink = None
        if "rig" in top and "uplink" in rig:
            um = self.mapping(rig["uplink"], "uplink", {"agg_window", "drain_timeout"})
            uplink = (self.duration(um["agg_window"], "agg_window") / 1e9 if "agg_window" in um else 1.0,
                      self.duration(um["drain_timeout"], "drain_timeout") / 1e9 if "drain_timeout" in um else 30.0)
        rules_file = None
        if "rules" in rig:
            rules_file = self.file(rig["rules"], "rules")
            if rules_file is not None:
                from edge.rules import load_rule_file

                try:
                    load_rule_file(rules_file)
                except RuleFileError as exc:
                    self.bad(rig["rules"], "the rule table has mistakes:\n    "
                             + "\n    ".join(p.render() for p in exc.problems))
        elif "rig" in top:
            self.bad(top["rig"], "missing rules: (the rule table under test)")
        tolerance = self.number(rig["tolerance_ms"], "tolerance_ms") if "tolerance_ms" in rig else 50.0
        edged = self.mapping(rig.get("edged"), "edged", {"log_level", "start_timeout"})
        log_level = self.text(edged["log_level"], "log_level") if "log_level" in edged else "WARNING"
        start_timeout = (self.duration(edged["start_timeout"], "start_timeout") / 1e9
                         if "start_timeout" in edged else 20.0)
        agents: list[AgentSpec] = []
        for i, n in enumerate(self.seq(rig.get("agents"), "agents")):
            a = self.agent(n, i, inputs, outputs | inputs, known_model)
            if a is not None:
                if any(x.id == a.id for x in agents):
                    self.bad(n, f"duplicate agent {a.id!r}")
                agents.append(a)
        devices: list[DeviceSpec] = []
        for i, n in enumerate(self.seq(rig.get("devices"), "devices")):
            d = self.device(n, i, inputs, outputs | inputs, known_model)
            if d is not None:
                if any(x.id == d.id for x in devices) or any(x.id == d.id for x in agents):
                    self.bad(n, f"duplicate agent or device id {d.id!r}")
                devices.append(d)
        signals = set(outputs | inputs)
        for a in agents:
            signals |= {f"{a.id}.{m}" for m, _ in a.report}
            signals |= {f"{a.id}.samples_sent", f"{a.id}.samples_lost"}
        for d in devices:
            signals |= {f"{d.id}.{h}" for h in DEVICE_HEALTH + (CAN_HEALTH if d.kind == "can" else ())}
        if uplink is not None:
            signals |= {f"uplink.{k}" for k in UPLINK_SIGNALS}
        signals = _WithEdged(signals | {"load.offered_per_s", "load.capacity_per_s", "load.ratio", *DISK_SIGNALS})
        if not known_model:
            signals = _Anything()  # type: ignore[assignment]

        stimulus = [s for i, n in enumerate(self.seq(top.get("stimulus"), "stimulus"))
                    if (s := self.stimulus(n, i, inputs, known_model)) is not None]
        faults: list[Fault] = []
        for i, n in enumerate(self.seq(top.get("faults"), "faults")):
            f = self.fault(n, i, {a.id for a in agents}, signals, duration,
                           {d.id: d.kind for d in devices}, uplink is not None)
            if f is not None:
                if any(x.id == f.id for x in faults):
                    self.bad(n, f"duplicate fault id {f.id!r}")
                faults.append(f)
        for node, fid, where in self._waits:
            if fid and fid not in {f.id for f in faults}:
                self.bad(node, f"wait: no fault with id {fid!r}", "ids: " + ", ".join(sorted(f.id for f in faults)),
                         where)
        stimulus = [dataclasses.replace(s, timeout_ns=s.timeout_ns or int(start_timeout * 1e9))
                    if s.kind == "wait" else s for s in stimulus]
        assertions = []
        for i, n in enumerate(self.seq(top.get("assertions"), "assertions")):
            a2 = self.assertion(n, i, signals, {f.id for f in faults}, {a.id for a in agents}, duration)
            if a2 is not None:
                assertions.append(a2)
        outputs_map = self.mapping(top.get("outputs"), "outputs", {"formats"})
        formats: tuple[str, ...] = FORMATS
        if "formats" in outputs_map:
            formats = tuple(self.text(n, "format") for n in self.seq(outputs_map["formats"], "formats"))
            for n, f2 in zip(outputs_map["formats"].value, formats, strict=False):
                if f2 and f2 not in FORMATS:
                    self.bad(n, f"unknown output format {f2!r}", "formats: " + ", ".join(FORMATS))
        if self.problems:
            return None
        assert rules_file is not None
        return Scenario(path, sid, title, reqs, seed, duration, skip, rules_file, tolerance,
                        log_level, start_timeout, tuple(agents), tuple(devices), uplink, model, fmu, step, params, initial,
                        limits, tuple(stimulus), tuple(faults), tuple(assertions), formats)

    def _fmu_io(self, fmu: Path, node: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        from ._plants import fmu_variables

        try:
            return fmu_variables(fmu)
        except Exception as exc:  # a broken FMU: say so here, the run gives ERROR
            self.bad(node, f"fmu: cannot read its model description: {exc}")
            return (), ()

    def agent(self, n: Any, i: int, inputs: set[str], signals: set[str], known: bool) -> AgentSpec | None:
        where = f"agent #{i}"
        m = self.mapping(n, "an agent", {"id", "kind", "report", "labels", "actions", "every"}, where)
        if "id" not in m:
            self.bad(n, "missing id", where=where)
            return None
        aid = self.text(m["id"], "agent id", where)
        where = f"agent {aid}"
        report = []
        for metric, sn in self.mapping(m.get("report"), "report", None, where).items():
            sig = self.text(sn, f"report {metric!r}", where)
            if known and sig and sig not in signals:
                self.bad(sn, f"report {metric!r}: {sig!r} is not a signal of the plant",
                         "signals: " + ", ".join(sorted(signals)), where)
            report.append((metric, sig))
        if not report:
            self.bad(n, "an agent reports at least one metric (report: {metric: signal})", where=where)
        labels = {k: {lk: str(_plain(lv)) for lk, lv in self.mapping(v, f"labels of {k}", None, where).items()}
                  for k, v in self.mapping(m.get("labels"), "labels", None, where).items()}
        actions: dict[str, dict[str, float]] = {}
        for act, an in self.mapping(m.get("actions"), "actions", None, where).items():
            am = self.mapping(an, f"action {act!r}", {"set"}, where)
            vals = self.numbers(am.get("set"), f"action {act!r} set", where)
            for k, vn in self.mapping(am.get("set"), "set", None, where).items():
                if known and k not in inputs:
                    self.bad(vn, f"action {act!r}: {k!r} is not an input of the plant",
                             "inputs: " + ", ".join(sorted(inputs)), where)
            actions[act] = vals
        every = self.duration(m["every"], "every", where) if "every" in m else 0
        kind = self.text(m["kind"], "kind", where) if "kind" in m else "hil-agent"
        return AgentSpec(aid, kind, tuple(report), labels, actions, every)

    def device(self, n: Any, i: int, inputs: set[str], signals: set[str], known: bool) -> DeviceSpec | None:
        where = f"device #{i}"
        m = self.mapping(n, "a device", {"id", "kind", "profile", "unit", "sense", "drive", "echo",
                                         "period"}, where)
        if not self.has_all(n, m, ("id", "kind", "profile"), where):
            return None
        did = self.text(m["id"], "device id", where)
        where = f"device {did}"
        if did and not _ID_RE.match(did):
            self.bad(m["id"], f"device id {did!r}: letters, digits, _.:- only", where=where)
        kind = self.text(m["kind"], "kind", where)
        if kind not in _AT:
            self.bad(m["kind"], f"unknown device kind {kind!r}", "kinds: " + ", ".join(_AT), where)
            return None
        profile = self.file(m["profile"], "profile", where)
        if profile is not None:
            from firmware_bridge import ProfileError, load_profile

            try:
                prof = load_profile(profile)
                if prof.kind != kind:
                    self.bad(m["profile"], f"the profile is for kind {prof.kind!r}, the device is {kind!r}",
                             where=where)
            except ProfileError as exc:
                self.bad(m["profile"], f"the device profile has mistakes: {exc}", where=where)
        unit = int(self.number(m["unit"], "unit", where, integer=True)) if "unit" in m else 1

        def wiring(key: str, allowed: set[str], what: str) -> dict[str, tuple[str, float]]:
            out: dict[str, tuple[str, float]] = {}
            for name, wn in self.mapping(m.get(key), key, None, where).items():
                if known and name not in allowed:
                    self.bad(wn, f"{key}: {name!r} is not {what} of the plant",
                             f"{what}s: " + ", ".join(sorted(allowed)), where)
                scale = 1.0
                if wn.tag == "tag:yaml.org,2002:map":
                    wm = self.mapping(wn, f"{key} {name}", {"at", "scale"}, where)
                    at = self.text(wm["at"], "at", where) if "at" in wm else ""
                    if "scale" in wm:
                        scale = self.number(wm["scale"], "scale", where)
                    if not at:
                        self.bad(wn, f"{key} {name}: needs at:", where=where)
                else:
                    at = self.text(wn, f"{key} {name}", where)
                if at and not _AT[kind].match(at):
                    self.bad(wn, f"{key} {name}: {at!r} is not a place on a {kind} device",
                             _AT_HINT[kind], where)
                elif at and kind == "mcu" and (at.startswith("adc") != (key == "sense")):
                    self.bad(wn, f"{key} {name}: {at!r}: sense sets adc:N, drive reads pin:N or pwm:N",
                             where=where)
                if not scale:
                    self.bad(wn, f"{key} {name}: scale must not be 0", where=where)
                out[name] = (at, scale or 1.0)
            return out

        sense = wiring("sense", signals, "a signal")
        drive = wiring("drive", inputs, "an input")
        echo = {k: self.text(v, f"echo {k}", where) for k, v in self.mapping(m.get("echo"), "echo", None, where).items()}
        if echo and kind != "can":
            self.bad(m["echo"], "echo: is for kind: can", where=where)
        period = self.duration(m["period"], "period", where) if "period" in m else 10_000_000
        return DeviceSpec(did, kind, profile or Path(), unit, sense, drive, echo, period)

    def stimulus(self, n: Any, i: int, inputs: set[str], known: bool) -> Stimulus | None:
        where = f"stimulus #{i}"
        m = self.mapping(n, "a stimulus", {"at", "set", "ramp", "over", "profile", "wait", "timeout"}, where)
        kinds = [k for k in ("set", "ramp", "profile", "wait") if k in m]
        if len(kinds) != 1:
            self.bad(n, "a stimulus has exactly one of set:, ramp:, profile:, wait:", where=where)
            return None
        at = self.duration(m["at"], "at", where, zero=True) if "at" in m else 0
        kind = kinds[0]
        if "timeout" in m and kind != "wait":
            self.bad(m["timeout"], "timeout: is for wait:", where=where)
        if kind == "wait":
            wm = self.mapping(m["wait"], "wait", {"recovered"}, where)
            if "recovered" not in wm:
                self.bad(m["wait"], "wait: {recovered: FAULT_ID}", where=where)
                return None
            fid = self.text(wm["recovered"], "recovered", where)
            self._waits.append((wm["recovered"], fid, where))
            timeout = self.duration(m["timeout"], "timeout", where) if "timeout" in m else 0
            return Stimulus(at, kind, {}, fault=fid, timeout_ns=timeout)
        if kind == "profile":
            p = self.file(m["profile"], "profile", where)
            rows = self._profile(p, m["profile"], inputs, known, where) if p else ()
            return Stimulus(at, kind, {}, profile=rows)
        vals = self.numbers(m[kind], kind, where)
        for k, vn in self.mapping(m[kind], kind, None, where).items():
            if known and k not in inputs:
                self.bad(vn, f"{k!r} is not an input of the plant", "inputs: " + ", ".join(sorted(inputs)), where)
        over = 0
        if kind == "ramp":
            if "over" not in m:
                self.bad(n, "a ramp needs over: (its duration)", where=where)
            else:
                over = self.duration(m["over"], "over", where)
        elif "over" in m:
            self.bad(m["over"], "over: is for ramp:", where=where)
        return Stimulus(at, kind, vals, over)

    def _profile(self, p: Path, node: Any, inputs: set[str], known: bool, where: str) -> tuple[tuple[float, dict[str, float]], ...]:
        import csv

        try:
            with open(p, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError) as exc:
            self.bad(node, f"profile {p}: cannot read: {exc}", where=where)
            return ()
        if not rows or rows[0][:1] != ["t_s"] or len(rows[0]) < 2:
            self.bad(node, f"profile {p}:1: the header is t_s,INPUT[,INPUT...]", where=where)
            return ()
        names = [h.strip() for h in rows[0][1:]]
        for h in names:
            if known and h not in inputs:
                self.bad(node, f"profile {p}:1: {h!r} is not an input of the plant", where=where)
        out, last = [], -1.0
        for ln, rec in enumerate(rows[1:], start=2):
            try:
                vals = [float(x) for x in rec]
                if len(vals) != len(names) + 1 or vals[0] < last:
                    raise ValueError("wrong column count or time going back")
            except ValueError as exc:
                self.bad(node, f"profile {p}:{ln}: {exc}", where=where)
                continue
            last = vals[0]
            out.append((vals[0], dict(zip(names, vals[1:], strict=True))))
        return tuple(out)

    def fault(self, n: Any, i: int, agents: set[str], signals: set[str], duration: int,
              devices: dict[str, str], uplink: bool) -> Fault | None:
        where = f"fault #{i}"
        m = self.mapping(n, "a fault", {"id", "kind", "target", "start", "duration", "params"}, where)
        if not self.has_all(n, m, ("kind", "target", "start"), where):
            return None
        kind = self.text(m["kind"], "kind", where)
        fid = self.text(m["id"], "fault id", where) if "id" in m else f"{kind}#{i}"
        target = self.text(m["target"], "target", where)
        start = self.duration(m["start"], "start", where, zero=True)
        dur = self.duration(m["duration"], "duration", where) if "duration" in m else 0
        params = self.numbers(m.get("params"), "params", where)
        spec = FAULTS.get(kind)
        if spec is None:
            self.bad(m["kind"], f"unknown fault kind {kind!r}", "kinds: " + ", ".join(sorted(FAULTS)), where)
            return None
        layer, needs_duration, pnames = spec
        if layer == "signal":
            if target not in signals or "." not in target:
                self.bad(m["target"], f"the rig has no reported signal {target!r} to aim {kind} at",
                         "targets: AGENT.METRIC of an agent's report", where)
        elif layer == "process":
            if target not in PROCESS_TARGETS and target not in agents:
                self.bad(m["target"], f"the rig has no process {target!r} to aim {kind} at",
                         "targets: " + ", ".join([*PROCESS_TARGETS, *sorted(agents)]), where)
            elif kind == "disk_full" and target != "edged":
                self.bad(m["target"], "disk_full fills edged's data dir", "target: edged", where)
            elif target in agents and kind in ("sigstop",):
                self.bad(m["target"], f"{kind} is for edged; an agent runs inside the rig (use agent_kill)", where=where)
            elif target == "bridge" and not devices:
                self.bad(m["target"], "the rig has no bridge: it has no devices", where=where)
            elif target == "sync" and not uplink:
                self.bad(m["target"], "the rig has no edge-sync: it has no uplink", where=where)
        elif layer == "load":
            if target != "edged":
                self.bad(m["target"], f"{kind} loads edged", "target: edged", where)
        elif layer == "rules":
            p = (self.base / target).resolve()
            if not p.is_file():
                self.bad(m["target"], f"rules_swap: no such rule file {str(p)!r}", where=where)
            else:
                from edge.rules import load_rule_file

                try:
                    load_rule_file(p)
                except RuleFileError as exc:
                    self.bad(m["target"], "rules_swap: the rule table has mistakes:\n    "
                             + "\n    ".join(pr.render() for pr in exc.problems), where=where)
                target = str(p)
        elif layer == "clock":
            if target != "edged":
                self.bad(m["target"], f"{kind} is for edged's wall clock", "target: edged", where)
        elif layer == "network":
            if target != "uplink" or not uplink:
                self.bad(m["target"], f"the rig has no {target!r} to aim {kind} at",
                         "target: uplink (with rig: uplink:)", where)
        elif layer in LINK_LAYERS:
            need = LINK_LAYERS[layer]
            ok = [d for d, k in devices.items() if not need or k == need]
            if target not in ok:
                self.bad(m["target"], f"the rig has no {need or 'simulated'} device {target!r} to aim {kind} at",
                         "targets: " + (", ".join(sorted(ok)) or f"none (add a {need or ''} device)"), where)
        if kind == "metric_flood" and "ratio" in params and "rate" in params:
            self.bad(m["params"], "metric_flood: rate (fixed) or ratio (x edged's measured capacity), not both",
                     where=where)
        elif kind == "metric_flood" and "ratio" in params and params["ratio"] <= 0:
            self.bad(m["params"], "metric_flood: ratio must be > 0", where=where)
        if needs_duration and not dur:
            self.bad(n, f"a {kind} fault needs duration:", where=where)
        for k in params:
            if k not in pnames:
                self.bad(m["params"], f"{kind} has no parameter {k!r}",
                         "parameters: " + (", ".join(pnames) or "none"), where)
        if start >= duration:
            self.bad(m["start"], "the fault starts after the scenario ends", where=where)
        return Fault(fid, kind, target, start, dur, params)

    def assertion(self, n: Any, i: int, signals: set[str], faults: set[str], agents: set[str], duration: int) -> Assertion | None:
        where = f"assertion #{i}"
        known = {"id", "requirement", *CHECKS, "after", "expect", "window", *VALIDATORS, "marginal"}
        m = self.mapping(n, "an assertion", known, where)
        aid = self.text(m["id"], "assertion id", where) if "id" in m else f"assertion-{i}"
        where = f"assertion {aid}"
        req = self.text(m["requirement"], "requirement", where) if "requirement" in m else ""
        checks = [k for k in CHECKS if k in m]
        if len(checks) != 1:
            self.bad(n, "an assertion has exactly one of " + ", ".join(CHECKS), where=where)
            return None
        check = checks[0]
        window = (0, -1)
        if "window" in m:
            w = self.seq(m["window"], "window", where)
            if len(w) != 2:
                self.bad(m["window"], "window: [START, END] (END may be 'end')", where=where)
            else:
                lo = self.duration(w[0], "window start", where, zero=True)
                hi = -1 if _plain(w[1]) == "end" else self.duration(w[1], "window end", where)
                window = (lo, hi)
        val = self.validator(m, where)
        line = n.start_mark.line + 1
        kw: dict[str, Any] = {"id": aid, "requirement": req, "check": check, "window": window,
                              "validator": val, "line": line}
        node = m[check]
        if check == "within":
            kw["within_ns"] = self.duration(node, "within", where)
            if "after" not in m or "expect" not in m:
                self.bad(n, "within: needs after: (an event) and expect: (what must follow)", where=where)
                return None
            after = m["after"]
            if after.tag == "tag:yaml.org,2002:map":
                am = self.mapping(after, "after", {"fault"}, where)
                fid = self.text(am["fault"], "fault", where) if "fault" in am else ""
                if fid and fid not in faults:
                    self.bad(am["fault"], f"no fault with id {fid!r}", "ids: " + ", ".join(sorted(faults)), where)
                kw["after_fault"] = fid
            else:
                kw["after"] = self.cond(after, "after", signals, where)
            ex = m["expect"]
            if ex.tag == "tag:yaml.org,2002:map":
                em = self.mapping(ex, "expect", {"instruction", "agent"}, where)
                if "instruction" not in em:
                    self.bad(ex, "expect: {instruction: ACTION[, agent: ID]} or a condition", where=where)
                else:
                    kw["expect_instruction"] = self.text(em["instruction"], "instruction", where)
                if "agent" in em:
                    ag = self.text(em["agent"], "agent", where)
                    if ag not in agents:
                        self.bad(em["agent"], f"no agent {ag!r}", where=where)
                    kw["expect_agent"] = ag
            else:
                kw["expect"] = self.cond(ex, "expect", signals, where)
        elif check in ("always", "never"):
            kw["cond"] = self.cond(node, check, signals, where)
        elif check in ("final", "max", "min"):
            sig = self.text(node, check, where)
            if sig and sig not in signals:
                self.bad(node, f"unknown signal {sig!r}", where=where)
            kw["cond"] = Cond(sig, "==", 0.0, sig)
            if val is None:
                self.bad(n, f"{check}: needs a validator ({', '.join(VALIDATORS)})", where=where)
        elif check == "count":
            cm = self.mapping(node, "count", {"instruction", "rule", "agent", "ack"}, where)
            kw["expect_ack"] = self.text(cm["ack"], "ack", where) if "ack" in cm else ""
            kw["expect_instruction"] = self.text(cm["instruction"], "instruction", where) if "instruction" in cm else ""
            kw["rule"] = self.text(cm["rule"], "rule", where) if "rule" in cm else ""
            kw["expect_agent"] = self.text(cm["agent"], "agent", where) if "agent" in cm else ""
            if val is None:
                self.bad(n, "count: needs a validator", where=where)
        elif check == "e2e_p99":
            kw["rule"] = self.text(node, "e2e_p99 (a rule id)", where)
            if val is None:
                self.bad(n, "e2e_p99: needs a validator (in ms)", where=where)
        return Assertion(**kw)

    def validator(self, m: dict[str, Any], where: str) -> Validator | None:
        kinds = [k for k in VALIDATORS if k in m]
        if not kinds:
            return None
        if len(kinds) > 1:
            self.bad(m[kinds[1]], "one validator per assertion", where=where)
        kind = kinds[0]
        node = m[kind]
        marginal = 0.0
        if "marginal" in m:
            t = _plain(m["marginal"])
            try:
                marginal = float(str(t).removesuffix("%")) / 100.0
                if not 0 <= marginal < 0.5:
                    raise ValueError
            except ValueError:
                self.bad(m["marginal"], "marginal: a percentage of the band, 0% .. 50%", where=where)
        if kind == "in_range":
            items = self.seq(node, "in_range", where)
            pair = [(math.inf if j else -math.inf) if _plain(x) is None
                    else self.number(x, "in_range bound", where) for j, x in enumerate(items)]
            if len(pair) != 2 or pair[0] > pair[1]:
                self.bad(node, "in_range: [low, high] with low <= high", where=where)
                return None
            return Validator(kind, pair[0], pair[1], marginal)
        if kind == "equals":
            v = self.number(node, "equals", where)
            return Validator(kind, v, v, marginal)
        wm = self.mapping(node, "within_percent", {"target", "percent"}, where)
        if "target" not in wm or "percent" not in wm:
            self.bad(node, "within_percent: {target: X, percent: P}", where=where)
            return None
        t, pc = self.number(wm["target"], "target", where), self.number(wm["percent"], "percent", where)
        d = abs(t) * pc / 100.0
        return Validator(kind, t - d, t + d, marginal)


class _WithEdged(set):  # type: ignore[type-arg]
    """The signal set plus ``edged.COUNTER``: edged's loop counters at the run's end (the
    names of ``edgectl stats``)."""

    def __contains__(self, item: object) -> bool:
        return (isinstance(item, str) and item.startswith("edged.") and len(item) > 6) or super().__contains__(item)


class _Anything(set):  # type: ignore[type-arg]
    """The signal set when the plant is unknown (its mistake is already reported)."""

    def __contains__(self, item: object) -> bool:
        return True
