"""Device profiles: one YAML format for Modbus, CAN and MCU devices, checked with every mistake
reported at once as file:line:col (the rule files' machinery: edge.rules.compose_source,
problem_at, Problem).

::

    kind: modbus                  # modbus | can | mcu
    labels: {site: north}         # added to every point's labels (with bus, unit, ...)
    poll_groups: {fast: 100ms, slow: 2s}     # durations always carry a unit
    points:
      - name: tank_temp
        unit: degC
        scale: 0.1                # value = raw * scale + offset
        offset: 0
        min: -20                  # readings outside [min, max] are counted and flagged
        max: 120
        deadband: 0.2             # report when it moved this much (0: every poll);
        on_change: false          # or: only when it changed at all
        poll: fast
        area: holding_register    # modbus: coil, discrete_input, input_register, holding_register
        address: 0
        type: int16               # bool int16 uint16 int32 uint32 int64 uint64 float32 float64 string
        order: AB                 # AB/BA, ABCD/CDAB/BADC/DCBA, ABCDEFGH/GHEFCDAB/BADCFEHG/HGFEDCBA
      - {name: rpm, message: DI_torque1, signal: DI_motorRPM, min_interval: 10ms}   # can
    dbc: pkg:opendbc/dbc/tesla_powertrain.dbc   # can: a path (relative to this file) or pkg:
    actions:
      set_param:
        params: {value: {min: 0, max: 100}}      # required unless it has a default
        writes: [{point: setpoint, value: "{value}"}]                           # modbus
        # can:  send: {message: DAS_control, signals: {DAS_setSpeed: "{speed}"}}
        #       confirm: {message: DI_state, signal: DI_cruiseSet, within: 300ms}
        # mcu:  command: {name: set_output, params: {duty: "{value}"}}
    safe_state: [{point: pump, value: 0}]        # modbus: written on safe_state, losing edged, shutdown
    heartbeat: {point: hb, period: 500ms}        # modbus: a register counting up for PLC logic
    alive: {message: DAS_control, signal: DAS_controlCounter, period: 100ms}  # can
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.rules import (
    Problem,
    RuleFileError,
    compose_source,
    parse_duration,
    problem_at,
    read_source,
)
from edge.wire import action_from_name

from . import _regs
from ._errors import ProfileError

KINDS = ("modbus", "can", "mcu")
AREAS = ("coil", "discrete_input", "input_register", "holding_register")
WRITABLE = ("coil", "holding_register")
DTYPES = ("bool", *_regs.DTYPES, "string")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}\Z")
_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    name: str
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    min: float | None = None
    max: float | None = None
    deadband: float = 0.0
    on_change: bool = False
    poll: str = ""
    area: str = ""
    address: int = 0
    dtype: str = ""
    order: str = ""
    length: int = 0
    message: str = ""
    signal: str = ""
    min_interval_ns: int = 0

    @property
    def registers(self) -> int:
        return _regs.registers_of(self.dtype, self.length)

    def to_raw(self, value: float) -> float:
        return (value - self.offset) / self.scale

    def from_raw(self, raw: float) -> float:
        return raw * self.scale + self.offset


Value = float | str  # a number, or "{param}"


@dataclasses.dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    min: float | None = None
    max: float | None = None
    default: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Write:
    """One device write: a Modbus point, a CAN message with signals, or an MCU command."""

    point: str = ""
    value: Value = 0.0
    message: str = ""
    command: str = ""
    fields: tuple[tuple[str, Value], ...] = ()  # CAN signals or MCU command params


@dataclasses.dataclass(frozen=True, slots=True)
class Confirm:
    message: str
    signal: str
    within_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    writes: tuple[Write, ...]
    params: tuple[ParamSpec, ...] = ()
    confirm: Confirm | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Periodic:
    point: str = ""  # modbus heartbeat register
    message: str = ""  # can alive counter
    signal: str = ""
    period_ns: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    kind: str
    source: str
    points: tuple[Point, ...]
    actions: dict[str, ActionSpec]
    poll_groups: dict[str, int] = dataclasses.field(default_factory=dict)
    labels: tuple[tuple[str, str], ...] = ()
    description: str = ""
    safe_state: tuple[Write, ...] = ()
    heartbeat: Periodic | None = None
    alive: Periodic | None = None
    dbc: Path | None = None
    db: Any = None  # the cantools Database of ``dbc``

    def point(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)


def resolve_path(text: str, base: Path) -> Path:
    """``pkg:<package>/<path>`` -> that file inside an installed package; else a path relative
    to ``base`` (the profile's folder)."""
    if text.startswith("pkg:"):
        package, _, rest = text[4:].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {package!r} is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / rest
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def load_profile(path: Path | str) -> Profile:
    """Read and check a profile; raise ProfileError listing every problem."""
    path = Path(path)
    try:
        text = read_source(path)
    except RuleFileError as exc:
        raise ProfileError(exc.problems) from None
    return parse_profile(text, str(path), base=path.parent)


def parse_profile(text: str, name: str = "<profile>", base: Path | None = None) -> Profile:
    try:
        root = compose_source(text, name)
    except RuleFileError as exc:
        raise ProfileError(exc.problems) from None
    c = _Checker(name, base or Path.cwd())
    if root is None or root.tag != "tag:yaml.org,2002:map":
        raise ProfileError([Problem(name, 1, 1, "a profile is a mapping with kind: and points:")])
    profile = c.profile(root)
    if c.problems:
        raise ProfileError(c.problems)
    assert profile is not None
    return profile


# ------------------------------------------------------------------ checking


def _plain(node: Any) -> Any:
    """The Python value of a YAML node (scalars typed as YAML 1.1 SafeLoader would)."""
    import yaml

    return yaml.safe_load(yaml.serialize(node))


class _Checker:
    def __init__(self, name: str, base: Path):
        self.name = name
        self.base = base
        self.problems: list[Problem] = []

    def bad(self, node: Any, message: str, hint: str = "", where: str = "") -> None:
        self.problems.append(problem_at(self.name, node, message, where, hint))

    def mapping(self, node: Any, what: str, known: set[str], where: str = "") -> dict[str, Any]:
        if node.tag != "tag:yaml.org,2002:map":
            self.bad(node, f"{what} must be a mapping", where=where)
            return {}
        out = {k.value: v for k, v in node.value}
        for k, _ in node.value:
            if k.value not in known:
                self.bad(
                    k,
                    f"unknown key {k.value!r} in {what}",
                    "keys: " + ", ".join(sorted(known)),
                    where,
                )
        return out

    def number(
        self, node: Any, what: str, where: str = "", *, integer: bool = False
    ) -> float | None:
        v = _plain(node)
        ok = isinstance(v, int) if integer else isinstance(v, int | float)
        if not ok or isinstance(v, bool):
            self.bad(
                node,
                f"{what} must be {'an integer' if integer else 'a number'}, not {v!r}",
                where=where,
            )
            return None
        return v

    def text(self, node: Any, what: str, where: str = "") -> str:
        v = _plain(node)
        if not isinstance(v, str) or not v:
            self.bad(node, f"{what} must be text, not {v!r}", where=where)
            return ""
        return v

    def duration(self, node: Any, what: str, where: str = "") -> int:
        v = _plain(node)
        try:
            if not isinstance(v, str):
                raise ValueError(f"{v!r} has no unit: write e.g. 250ms or 2s")
            ns = parse_duration(v)
            if ns <= 0:
                raise ValueError("must be > 0")
            return ns
        except ValueError as exc:
            self.bad(node, f"{what}: {exc}", where=where)
            return 0

    # -------------------------------------------------------------- the profile

    def profile(self, root: Any) -> Profile | None:
        top = self.mapping(
            root,
            "the profile",
            {
                "kind",
                "description",
                "labels",
                "poll_groups",
                "points",
                "actions",
                "safe_state",
                "heartbeat",
                "alive",
                "dbc",
            },
        )
        kind = ""
        if "kind" not in top:
            self.bad(root, "missing kind", "kind: modbus, can or mcu")
        else:
            kind = _plain(top["kind"])
            if kind not in KINDS:
                self.bad(top["kind"], f"unknown kind {kind!r}", "kind: modbus, can or mcu")
                kind = ""
        labels: list[tuple[str, str]] = []
        if "labels" in top:
            for k, v in self.mapping(
                top["labels"], "labels", set(_plain(top["labels"]) or {})
            ).items():
                labels.append((k, str(_plain(v))))
        groups: dict[str, int] = {}
        if "poll_groups" in top:
            pg = top["poll_groups"]
            for k, v in self.mapping(pg, "poll_groups", set(_plain(pg) or {})).items():
                groups[k] = self.duration(v, f"poll group {k!r}")
        db, dbc = None, None
        if kind == "can":
            if "dbc" not in top:
                self.bad(root, "a can profile needs dbc: (a DBC file)")
            else:
                dbc, db = self.dbc(top["dbc"])
        elif "dbc" in top:
            self.bad(top["dbc"], "dbc: is for kind: can")
        points: list[Point] = []
        seen: set[str] = set()
        pnode = top.get("points")
        if pnode is None:
            if kind != "mcu":
                self.bad(root, "missing points", "a list of points")
        elif pnode.tag != "tag:yaml.org,2002:seq":
            self.bad(pnode, "points must be a list")
        else:
            for i, n in enumerate(pnode.value):
                p = self.point(kind, n, i, groups, db)
                if p is None:
                    continue
                if p.name in seen:
                    self.bad(n, f"duplicate point {p.name!r}", where=f"point #{i}")
                    continue
                seen.add(p.name)
                points.append(p)
        by_name = {p.name: p for p in points}
        actions: dict[str, ActionSpec] = {}
        if "actions" in top:
            an = top["actions"]
            for k, v in self.mapping(an, "actions", set(_plain(an) or {})).items():
                a = self.action(kind, k, v, by_name, db)
                if a is not None:
                    actions[k] = a
        safe: list[Write] = []
        if "safe_state" in top:
            if kind != "modbus":
                self.bad(
                    top["safe_state"],
                    "safe_state: values are for kind: modbus",
                    "CAN peers watch the alive counter; the MCU goes safe on its own",
                )
            else:
                safe = self.writes_list(top["safe_state"], "safe_state", by_name, {}, literal=True)
        heartbeat = alive = None
        if "heartbeat" in top:
            heartbeat = self.periodic(kind, "heartbeat", top["heartbeat"], by_name, db)
        if "alive" in top:
            alive = self.periodic(kind, "alive", top["alive"], by_name, db)
        if not kind:
            return None
        return Profile(
            kind=kind,
            source=self.name,
            points=tuple(points),
            actions=actions,
            poll_groups=groups,
            labels=tuple(sorted(labels)),
            description=str(_plain(top["description"])) if "description" in top else "",
            safe_state=tuple(safe),
            heartbeat=heartbeat,
            alive=alive,
            dbc=dbc,
            db=db,
        )

    def dbc(self, node: Any) -> tuple[Path | None, Any]:
        text = self.text(node, "dbc")
        if not text:
            return None, None
        try:
            path = resolve_path(text, self.base)
        except FileNotFoundError as exc:
            self.bad(node, f"dbc: {exc}")
            return None, None
        import cantools

        try:
            db = cantools.database.load_file(str(path), database_format="dbc", strict=False)
        except FileNotFoundError:
            self.bad(node, f"dbc: no such file {path}")
            return path, None
        except Exception as exc:  # cantools raises its own ParseError and plain ValueErrors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.bad(
                node,
                f"dbc: {path} does not parse: {first[:300]}",
                "check it with `python -m cantools dump FILE`",
            )
            return path, None
        return path, db

    def point(self, kind: str, node: Any, i: int, groups: dict[str, int], db: Any) -> Point | None:
        where = f"point #{i}"
        common = {"name", "unit", "scale", "offset", "min", "max", "deadband", "on_change", "poll"}
        extra = {
            "modbus": {"area", "address", "type", "order", "length"},
            "can": {"message", "signal", "min_interval"},
            "mcu": set(),
        }.get(kind, set())
        m = self.mapping(node, f"point #{i}", common | extra, where)
        if not m:
            return None
        before = len(self.problems)
        name = self.text(m["name"], "name", where) if "name" in m else ""
        if "name" not in m:
            self.bad(node, "a point needs a name", where=where)
        elif name and not _NAME_RE.match(name):
            self.bad(
                m["name"],
                f"point name {name!r} must be letters, digits, _ . : - (a metric name)",
                where=where,
            )
        where = f"point {name}" if name else where
        kw: dict[str, Any] = {"name": name}
        if "unit" in m:
            kw["unit"] = str(_plain(m["unit"]))
        for key in ("scale", "offset", "min", "max", "deadband"):
            if key in m:
                v = self.number(m[key], key, where)
                if v is not None:
                    kw[key] = float(v)
        if kw.get("scale") == 0.0:
            self.bad(m["scale"], "scale must not be 0", where=where)
        if kw.get("deadband", 0.0) < 0:
            self.bad(m["deadband"], "deadband must be >= 0", where=where)
        if "min" in kw and "max" in kw and kw["min"] > kw["max"]:
            self.bad(m["min"], f"min {kw['min']} is above max {kw['max']}", where=where)
        if "on_change" in m:
            v = _plain(m["on_change"])
            if not isinstance(v, bool):
                self.bad(m["on_change"], "on_change must be true or false", where=where)
            kw["on_change"] = bool(v)
        if "poll" in m:
            g = _plain(m["poll"])
            if g not in groups:
                self.bad(
                    m["poll"],
                    f"unknown poll group {g!r}",
                    "groups: " + (", ".join(groups) or "none; add poll_groups:"),
                    where,
                )
            kw["poll"] = str(g)
        elif kind == "modbus":
            if groups:
                kw["poll"] = next(iter(groups))
            else:
                self.bad(
                    node,
                    "a modbus point needs a poll group",
                    "add poll_groups: {fast: 100ms} and poll: fast",
                    where,
                )
        if kind == "modbus":
            self.modbus_point(m, node, kw, where)
        elif kind == "can":
            self.can_point(m, node, kw, where, db)
        if len(self.problems) > before:
            return None
        return Point(**kw)

    def modbus_point(self, m: dict[str, Any], node: Any, kw: dict[str, Any], where: str) -> None:
        area = _plain(m["area"]) if "area" in m else None
        if area is None:
            self.bad(node, "missing area", "area: " + ", ".join(AREAS), where)
        elif area not in AREAS:
            self.bad(m["area"], f"unknown area {area!r}", "area: " + ", ".join(AREAS), where)
        kw["area"] = area or ""
        if "address" not in m:
            self.bad(node, "missing address", "the 0-based register or bit address", where)
        else:
            a = self.number(m["address"], "address", where, integer=True)
            if a is not None and not 0 <= a <= 65535:
                self.bad(m["address"], f"address {a} is outside 0-65535", where=where)
            kw["address"] = int(a or 0)
        bit_area = area in ("coil", "discrete_input")
        dtype = _plain(m["type"]) if "type" in m else ("bool" if bit_area else "uint16")
        if dtype not in DTYPES:
            self.bad(m["type"], f"unknown type {dtype!r}", "types: " + ", ".join(DTYPES), where)
            return
        if bit_area and dtype != "bool":
            self.bad(m.get("type", node), f"a {area} holds one bit: type must be bool", where=where)
            return
        if not bit_area and area and dtype == "bool":
            self.bad(
                m["type"],
                "bool is for coil and discrete_input",
                "use uint16 and scale, or a coil",
                where,
            )
            return
        kw["dtype"] = dtype
        if dtype == "string":
            if "length" not in m:
                self.bad(node, "a string needs length: (registers)", where=where)
            else:
                n = self.number(m["length"], "length", where, integer=True)
                if n is not None and not 1 <= n <= 125:
                    self.bad(m["length"], "length must be 1-125 registers", where=where)
                kw["length"] = int(n or 1)
        elif "length" in m:
            self.bad(m["length"], "length: is for type: string", where=where)
        regs = _regs.registers_of(dtype, kw.get("length", 0))
        if dtype == "bool":
            if "order" in m:
                self.bad(m["order"], "a bit has no byte order", where=where)
            return
        allowed = ("AB", "BA") if dtype == "string" else _regs.ORDERS[regs]
        order = (
            _plain(m["order"])
            if "order" in m
            else ("AB" if dtype == "string" else _regs.DEFAULT_ORDER[regs])
        )
        if order not in allowed:
            self.bad(
                m["order"],
                f"order {order!r} does not fit {dtype}",
                "orders: " + ", ".join(allowed),
                where,
            )
        kw["order"] = order
        if kw.get("address", 0) <= 65535 and kw.get("address", 0) + regs > 65536:
            self.bad(
                m["address"], f"{dtype} at {kw['address']} runs past register 65535", where=where
            )

    def can_point(
        self, m: dict[str, Any], node: Any, kw: dict[str, Any], where: str, db: Any
    ) -> None:
        for key in ("message", "signal"):
            if key not in m:
                self.bad(
                    node, f"missing {key}", "a can point names a DBC message and signal", where
                )
        if "message" not in m or "signal" not in m:
            return
        kw["message"] = self.text(m["message"], "message", where)
        kw["signal"] = self.text(m["signal"], "signal", where)
        if "min_interval" in m:
            kw["min_interval_ns"] = self.duration(m["min_interval"], "min_interval", where)
        if db is not None and kw["message"]:
            msg = self.dbc_message(db, m["message"], kw["message"], where)
            if msg is not None and kw["signal"]:
                self.dbc_signal(msg, m["signal"], kw["signal"], where)

    def dbc_message(self, db: Any, node: Any, name: str, where: str) -> Any:
        return self._named(
            db.get_message_by_name,
            [m.name for m in db.messages],
            node,
            name,
            "in the DBC",
            "message",
            where,
        )

    def dbc_signal(self, msg: Any, node: Any, name: str, where: str) -> Any:
        return self._named(
            msg.get_signal_by_name,
            [s.name for s in msg.signals],
            node,
            name,
            f"in message {msg.name}",
            "signal",
            where,
        )

    def _named(
        self,
        get: Callable[[str], Any],
        names: list[str],
        node: Any,
        name: str,
        place: str,
        what: str,
        where: str,
    ) -> Any:
        """``get(name)``, or a problem "no <what> ... <place>" with the closest names."""
        try:
            return get(name)
        except KeyError:
            import difflib

            near = difflib.get_close_matches(name, names, 3)
            hint = "did you mean " + ", ".join(near) if near else ""
            self.bad(node, f"no {what} {name!r} {place}", hint, where)
            return None

    # -------------------------------------------------------------- actions and writes

    def action(
        self, kind: str, name: str, node: Any, points: dict[str, Point], db: Any
    ) -> ActionSpec | None:
        where = f"action {name}"
        try:
            action_from_name(name)
        except ValueError:
            if not _NAME_RE.match(name):
                self.bad(
                    node, f"action name {name!r} must be letters, digits, _ . : -", where=where
                )
        known = {"params", "writes", "send", "confirm", "command"}
        m = self.mapping(node, where, known, where)
        if not m:
            return None
        before = len(self.problems)
        params: dict[str, ParamSpec] = {}
        if "params" in m:
            pn = m["params"]
            for k, v in self.mapping(pn, "params", set(_plain(pn) or {}), where).items():
                spec = self.mapping(v, f"param {k}", {"min", "max", "default"}, where)
                vals = {key: self.number(spec[key], f"param {k} {key}", where) for key in spec}
                lo, hi = vals.get("min"), vals.get("max")
                if lo is not None and hi is not None and lo > hi:
                    self.bad(v, f"param {k}: min is above max", where=where)
                params[k] = ParamSpec(k, vals.get("min"), vals.get("max"), vals.get("default"))
        writes: list[Write] = []
        confirm = None
        shape = {"modbus": "writes", "can": "send", "mcu": "command"}.get(kind, "")
        for key in ("writes", "send", "command"):
            if key in m and key != shape:
                self.bad(
                    m[key],
                    f"{key}: is not for kind: {kind}",
                    f"a {kind} action uses {shape}:",
                    where,
                )
        if shape and shape not in m:
            self.bad(node, f"action {name} needs {shape}:", where=where)
        elif kind == "modbus":
            writes = self.writes_list(m["writes"], where, points, params)
        elif kind == "can":
            w = self.can_send(m["send"], where, db, params)
            writes = [w] if w else []
        elif kind == "mcu":
            cm = self.mapping(m["command"], "command", {"name", "params"}, where)
            if "name" not in cm:
                self.bad(m["command"], "command needs name:", where=where)
            else:
                fields: tuple[tuple[str, Value], ...] = ()
                if "params" in cm:
                    fields = tuple(self.fields(cm["params"], where, params))
                writes = [
                    Write(command=self.text(cm["name"], "command name", where), fields=fields)
                ]
        if "confirm" in m:
            if kind != "can":
                self.bad(
                    m["confirm"],
                    "confirm: is for kind: can (Modbus and MCU devices answer each write)",
                    where=where,
                )
            else:
                confirm = self.confirm(m["confirm"], where, db)
        used = {
            str(v)[1:-1]
            for w in writes
            for v in [w.value, *(x for _, x in w.fields)]
            if isinstance(v, str) and _PARAM_RE.match(v)
        }
        for p in params:
            if p not in used and len(self.problems) == before:
                self.bad(m["params"], f"param {p!r} is declared but no write uses it", where=where)
        if len(self.problems) > before:
            return None
        return ActionSpec(name, tuple(writes), tuple(params.values()), confirm)

    def value(
        self, node: Any, where: str, params: dict[str, ParamSpec], literal: bool
    ) -> Value | None:
        v = _plain(node)
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str) and not literal:
            m = _PARAM_RE.match(v)
            if m is None:
                self.bad(node, f"value {v!r} must be a number or {{param}}", where=where)
                return None
            if m.group(1) not in params:
                self.bad(node, f"{v} names no declared param", "declare it under params:", where)
                return None
            return v
        self.bad(
            node,
            f"value must be a number{'' if literal else ' or {param}'}, not {v!r}",
            where=where,
        )
        return None

    def writes_list(
        self,
        node: Any,
        where: str,
        points: dict[str, Point],
        params: dict[str, ParamSpec],
        *,
        literal: bool = False,
    ) -> list[Write]:
        if node.tag != "tag:yaml.org,2002:seq" or not node.value:
            self.bad(node, "writes must be a non-empty list of {point, value}", where=where)
            return []
        out = []
        for n in node.value:
            m = self.mapping(n, "a write", {"point", "value"}, where)
            if "point" not in m or "value" not in m:
                self.bad(n, "a write needs point: and value:", where=where)
                continue
            pname = _plain(m["point"])
            p = points.get(pname)
            if p is None:
                self.bad(m["point"], f"unknown point {pname!r}", where=where)
                continue
            if p.area not in WRITABLE:
                self.bad(
                    m["point"],
                    f"point {pname} is a {p.area}: only coils and holding registers are written",
                    where=where,
                )
                continue
            if p.dtype == "string":
                self.bad(
                    m["point"], f"point {pname} is a string: actions write numbers", where=where
                )
                continue
            v = self.value(m["value"], where, params, literal)
            if v is None:
                continue
            if isinstance(v, float):
                problem = check_value(p, v)
                if problem:
                    self.bad(m["value"], problem, where=where)
                    continue
            out.append(Write(point=pname, value=v))
        return out

    def fields(
        self, node: Any, where: str, params: dict[str, ParamSpec]
    ) -> list[tuple[str, Value]]:
        out = []
        for k, v in self.mapping(node, "signals/params", set(_plain(node) or {}), where).items():
            val = self.value(v, where, params, literal=False)
            if val is not None:
                out.append((k, val))
        return out

    def can_send(
        self, node: Any, where: str, db: Any, params: dict[str, ParamSpec]
    ) -> Write | None:
        m = self.mapping(node, "send", {"message", "signals"}, where)
        if "message" not in m or "signals" not in m:
            self.bad(node, "send needs message: and signals:", where=where)
            return None
        name = self.text(m["message"], "message", where)
        fields = self.fields(m["signals"], where, params)
        if db is not None and name:
            msg = self.dbc_message(db, m["message"], name, where)
            if msg is not None:
                sig_nodes = {k.value: k for k, _ in m["signals"].value}
                for sname, _ in fields:
                    self.dbc_signal(msg, sig_nodes[sname], sname, where)
        return Write(message=name, fields=tuple(fields))

    def confirm(self, node: Any, where: str, db: Any) -> Confirm | None:
        m = self.mapping(node, "confirm", {"message", "signal", "within"}, where)
        if not all(k in m for k in ("message", "signal", "within")):
            self.bad(node, "confirm needs message:, signal: and within:", where=where)
            return None
        c = Confirm(
            self.text(m["message"], "message", where),
            self.text(m["signal"], "signal", where),
            self.duration(m["within"], "within", where),
        )
        if db is not None and c.message:
            msg = self.dbc_message(db, m["message"], c.message, where)
            if msg is not None:
                self.dbc_signal(msg, m["signal"], c.signal, where)
        return c

    def periodic(
        self, kind: str, key: str, node: Any, points: dict[str, Point], db: Any
    ) -> Periodic | None:
        want = {"heartbeat": "modbus", "alive": "can"}[key]
        if kind != want:
            self.bad(node, f"{key}: is for kind: {want}")
            return None
        fields = {"point", "period"} if key == "heartbeat" else {"message", "signal", "period"}
        m = self.mapping(node, key, fields)
        missing = [f for f in sorted(fields) if f not in m]
        if missing:
            self.bad(node, f"{key} needs " + ", ".join(f"{f}:" for f in missing))
            return None
        period = self.duration(m["period"], f"{key} period")
        if key == "heartbeat":
            pname = _plain(m["point"])
            p = points.get(pname)
            if p is None or p.area != "holding_register":
                self.bad(m["point"], f"heartbeat point {pname!r} must be a holding_register point")
                return None
            return Periodic(point=pname, period_ns=period)
        msg_name, sig = self.text(m["message"], "message"), self.text(m["signal"], "signal")
        if db is not None and msg_name:
            msg = self.dbc_message(db, m["message"], msg_name, key)
            if msg is not None:
                self.dbc_signal(msg, m["signal"], sig, key)
        return Periodic(message=msg_name, signal=sig, period_ns=period)


def check_value(p: Point, value: float) -> str:
    """Why ``value`` (engineering units) cannot be written to ``p``, or "" if it can."""
    if p.min is not None and value < p.min:
        return f"{value:g} is below {p.name}'s min {p.min:g}"
    if p.max is not None and value > p.max:
        return f"{value:g} is above {p.name}'s max {p.max:g}"
    if p.dtype and p.dtype != "string":
        lo, hi = _regs.raw_range(p.dtype)
        raw = p.to_raw(value)
        if not lo <= raw <= hi:
            return f"{value:g} is raw {raw:g}, outside what {p.dtype} holds"
    return ""


def substitute(
    action: ActionSpec, params: dict[str, Any], point_of: Callable[[str], Point] | None = None
) -> list[Write]:
    """The action's writes with ``params`` substituted, every value range-checked first.

    Raises ActionError naming the first missing, non-numeric or out-of-range param: nothing
    is written unless every value is good."""
    from ._errors import ActionError

    values: dict[str, float] = {}
    for spec in action.params:
        raw = params.get(spec.name, spec.default)
        if raw is None:
            raise ActionError(f"action {action.name} needs param {spec.name!r}")
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ActionError(f"param {spec.name} must be a number, not {raw!r}")
        v = float(raw)
        if spec.min is not None and v < spec.min or spec.max is not None and v > spec.max:
            raise ActionError(
                f"param {spec.name}={v:g} is outside {spec.min:g}..{spec.max:g}"
                if spec.min is not None and spec.max is not None
                else f"param {spec.name}={v:g} is out of range"
            )
        values[spec.name] = v

    def sub(v: Value) -> float:
        return values[v[1:-1]] if isinstance(v, str) else v

    out = []
    for w in action.writes:
        nw = dataclasses.replace(
            w, value=sub(w.value), fields=tuple((k, sub(x)) for k, x in w.fields)
        )
        if point_of is not None and nw.point:
            problem = check_value(point_of(nw.point), float(nw.value))
            if problem:
                raise ActionError(problem)
        out.append(nw)
    return out
