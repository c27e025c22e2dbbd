"""The normalised rule IR: what the compiler emits, a RuleTable carries, and edged evaluates.

A condition is a list of selectors plus an expression in postfix order (every operand before
its operator), so a board rebuilds it with one stack pass and never parses text. ``for`` is not
a node: it binds loosest, so it is the condition's ``hold_ns``.

Node kinds and their stack effect (N = number or unknown, B = true/false/unknown)::

    CONST  value                      -> N      the literal ``value``
    LATEST sel                        -> N      latest sample of selector ``sel``'s series
    AVG|MIN|MAX|SUM|COUNT sel window  -> N      over samples with t - window < ts <= t
    RATE   sel window                 -> N      (last - first) / (t_last - t_first), per second
    ABSENT sel window                 -> B      true when the last sample (or the agent's first
                                                message) is at least ``window`` old
    GT GE LT LE EQ NE       N N       -> B      unknown if either side is unknown
    AND OR                  B B       -> B      SQL/Kleene three-valued logic
    NOT                     B         -> B

Unknown propagates: a comparison with an unknown side is unknown; ``not unknown`` is unknown;
``false and unknown`` is false; ``true or unknown`` is true. A rule fires only on true.
"""

from __future__ import annotations

import dataclasses
import enum
import math


class NodeOp(enum.IntEnum):
    CONST = 0
    LATEST = 1
    AVG = 2
    MIN = 3
    MAX = 4
    SUM = 5
    COUNT = 6
    RATE = 7
    ABSENT = 8
    GT = 9
    GE = 10
    LT = 11
    LE = 12
    EQ = 13
    NE = 14
    AND = 15
    OR = 16
    NOT = 17


AGGREGATES = frozenset({NodeOp.AVG, NodeOp.MIN, NodeOp.MAX, NodeOp.SUM, NodeOp.COUNT, NodeOp.RATE})
COMPARISONS = frozenset({NodeOp.GT, NodeOp.GE, NodeOp.LT, NodeOp.LE, NodeOp.EQ, NodeOp.NE})
FLIPPED = {
    NodeOp.GT: NodeOp.LT,
    NodeOp.GE: NodeOp.LE,
    NodeOp.LT: NodeOp.GT,
    NodeOp.LE: NodeOp.GE,
    NodeOp.EQ: NodeOp.EQ,
    NodeOp.NE: NodeOp.NE,
}
"""``a OP b`` is ``b FLIPPED[OP] a``."""
NUMERIC = frozenset({NodeOp.CONST, NodeOp.LATEST}) | AGGREGATES
BOOLEAN = COMPARISONS | {NodeOp.ABSENT, NodeOp.AND, NodeOp.OR, NodeOp.NOT}

FUNCTION_NAMES = {
    "avg": NodeOp.AVG,
    "min": NodeOp.MIN,
    "max": NodeOp.MAX,
    "sum": NodeOp.SUM,
    "count": NodeOp.COUNT,
    "rate": NodeOp.RATE,
    "absent": NodeOp.ABSENT,
}
OP_SYMBOLS = {
    NodeOp.GT: ">",
    NodeOp.GE: ">=",
    NodeOp.LT: "<",
    NodeOp.LE: "<=",
    NodeOp.EQ: "==",
    NodeOp.NE: "!=",
}
SYMBOL_OPS = {v: k for k, v in OP_SYMBOLS.items()}
_NAMES = {v: k for k, v in FUNCTION_NAMES.items()}


AGENT_LABEL = "agent"
"""Reserved: in a board rule, names the agent whose series a selector means; refused elsewhere
(rule text outside board rules, and a Hello declaring it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Selector:
    """``metric{k="v", ...}``: every series of ``metric`` whose labels include these pairs."""

    metric: str
    labels: tuple[tuple[str, str], ...] = ()
    """Sorted by key."""

    def matches(self, name: str, labels: tuple[tuple[str, str], ...]) -> bool:
        return name == self.metric and (not self.labels or set(self.labels) <= set(labels))

    @property
    def agent(self) -> str | None:
        """The value of the reserved ``agent`` label (board rules), or None."""
        for k, v in self.labels:
            if k == AGENT_LABEL:
                return v
        return None

    def series_labels(self) -> tuple[tuple[str, str], ...]:
        """The labels to match against an agent's series: all but ``agent``."""
        return tuple(kv for kv in self.labels if kv[0] != AGENT_LABEL)

    def text(self) -> str:
        if not self.labels:
            return self.metric
        inner = ", ".join(f"{k}={_quote(v)}" for k, v in self.labels)
        return f"{self.metric}{{{inner}}}"


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    op: NodeOp
    value: float = 0.0
    """CONST only."""
    sel: int = 0
    """Index into the condition's selectors (LATEST, aggregates, ABSENT)."""
    window_ns: int = 0
    """Aggregate window or ABSENT duration, ns."""


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """A compiled ``rule_content``."""

    selectors: tuple[Selector, ...]
    nodes: tuple[Node, ...]
    """Postfix; evaluates to one boolean."""
    hold_ns: int = 0
    """``C for D``: D in ns; 0 when there is no ``for``."""

    def __post_init__(self) -> None:
        check_postfix(self)

    def text(self) -> str:
        """The canonical text: the same for every spelling of the same condition."""
        body = _render(self)
        return f"{body} for {_duration(self.hold_ns)}" if self.hold_ns else body

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(s.metric for s in self.selectors)


def check_postfix(c: Condition) -> None:
    """Raise ValueError unless ``c`` is well-formed: stack effects balance to one boolean,
    operand kinds fit, selector indices and windows are valid. The decoder of a RuleTable
    relies on this to refuse a malformed IR that passed structural verification."""
    stack: list[str] = []
    for i, n in enumerate(c.nodes):
        if n.op is NodeOp.CONST and not math.isfinite(n.value):
            raise ValueError(f"node {i}: constant {n.value} is not a finite number")
        if n.op in (NodeOp.LATEST, NodeOp.ABSENT) or n.op in AGGREGATES:
            if not 0 <= n.sel < len(c.selectors):
                raise ValueError(f"node {i}: selector {n.sel} out of range")
        if n.op in AGGREGATES or n.op is NodeOp.ABSENT:
            if n.window_ns <= 0:
                raise ValueError(f"node {i}: {n.op.name} needs a positive window")
        if n.op in NUMERIC:
            stack.append("N")
        elif n.op is NodeOp.ABSENT:
            stack.append("B")
        elif n.op in COMPARISONS:
            if stack[-2:] != ["N", "N"]:
                raise ValueError(f"node {i}: {n.op.name} needs two numbers")
            del stack[-2:]
            stack.append("B")
        elif n.op in (NodeOp.AND, NodeOp.OR):
            if stack[-2:] != ["B", "B"]:
                raise ValueError(f"node {i}: {n.op.name} needs two conditions")
            del stack[-2:]
            stack.append("B")
        elif n.op is NodeOp.NOT:
            if stack[-1:] != ["B"]:
                raise ValueError(f"node {i}: NOT needs a condition")
            stack[-1] = "B"
        else:  # pragma: no cover - NodeOp is closed
            raise ValueError(f"node {i}: unknown op {n.op!r}")
    if stack != ["B"]:
        raise ValueError("the expression does not reduce to one condition")
    used = {n.sel for n in c.nodes if n.op in (NodeOp.LATEST, NodeOp.ABSENT) or n.op in AGGREGATES}
    if used != set(range(len(c.selectors))):
        raise ValueError("every selector must be used by the expression, and only those")
    if c.hold_ns < 0:
        raise ValueError("hold must not be negative")


_PRECEDENCE = {NodeOp.OR: 1, NodeOp.AND: 2, NodeOp.NOT: 3}


def _render(c: Condition) -> str:
    stack: list[tuple[str, int]] = []  # (text, precedence: 4 = atom)
    for n in c.nodes:
        if n.op is NodeOp.CONST:
            stack.append((_number(n.value), 4))
        elif n.op is NodeOp.LATEST:
            stack.append((c.selectors[n.sel].text(), 4))
        elif n.op in AGGREGATES or n.op is NodeOp.ABSENT:
            sel = c.selectors[n.sel].text()
            stack.append((f"{_NAMES[n.op]}({sel}, {_duration(n.window_ns)})", 4))
        elif n.op in COMPARISONS:
            (a, _), (b, _) = stack[-2], stack[-1]
            del stack[-2:]
            stack.append((f"{a} {OP_SYMBOLS[n.op]} {b}", 4))
        elif n.op is NodeOp.NOT:
            a, p = stack.pop()
            stack.append((f"not {a if p >= 3 else f'({a})'}", 3))
        else:
            prec = _PRECEDENCE[n.op]
            (a, pa), (b, pb) = stack[-2], stack[-1]
            del stack[-2:]
            left = a if pa >= prec else f"({a})"
            right = b if pb > prec else f"({b})"
            stack.append((f"{left} {n.op.name.lower()} {right}", prec))
    return stack[0][0]


def _number(v: float) -> str:
    if not math.isfinite(v):  # check_postfix refuses these; a text must never crash
        return repr(v)
    return repr(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


def _duration(ns: int) -> str:
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    if ns % 1_000_000 == 0:
        return f"{ns // 1_000_000}ms"
    return f"{ns / 1_000_000}ms"


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- small constructors, for the compiler and for tests ---------------------------------------


def threshold(
    metric: str, op: str, value: float, *, labels: dict[str, str] | None = None, hold_ns: int = 0
) -> Condition:
    """``metric{labels} op value [for hold]``: the seed's form, built directly."""
    sel = Selector(metric, tuple(sorted((labels or {}).items())))
    nodes = (Node(NodeOp.LATEST, sel=0), Node(NodeOp.CONST, value=value), Node(SYMBOL_OPS[op]))
    return Condition((sel,), nodes, hold_ns)
