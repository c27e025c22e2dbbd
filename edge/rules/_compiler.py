"""Syntax tree -> checked, normalised IR (``edge.rules._ir.Condition``).

``compile_condition`` is the whole pipeline: lex, parse (first syntax error), then one pass
that checks every node's kind and emits postfix IR at the same time, collecting *every*
error of meaning before raising.

Kinds: a literal number, a literal duration, a series (``cpu``: its latest sample), an
aggregate (``avg(cpu, 1m)``), a condition (comparisons, ``absent``, ``and``/``or``/``not``).
The only valid comparison is a series or an aggregate against a number.

Normalisation, so that every spelling of one condition gives one IR and one text:

- ``number OP series`` is flipped to ``series OP' number`` (``0.9 < cpu`` -> ``cpu > 0.9``);
- numbers are floats (``0.90`` = ``0.9``, ``1e3`` = ``1000``, ``-0`` = ``0``), durations are ns;
- a selector's labels are sorted by key; equal selectors are shared, indexed in first-use order;
- parentheses disappear, and chains of one operator are re-associated to the left
  (``a and (b and c)`` -> ``a and b and c``; both are associative in three-valued logic).
"""

from __future__ import annotations

import difflib
import enum
import math
from fractions import Fraction

from ._ir import (
    AGENT_LABEL,
    FLIPPED,
    FUNCTION_NAMES,
    SYMBOL_OPS,
    Condition,
    Node,
    NodeOp,
    Selector,
)
from ._lexer import DURATION_UNITS, ConditionError, Diagnostic
from ._parser import (
    Call,
    Compare,
    Duration,
    Expr,
    Hold,
    Logic,
    Not,
    Number,
    Paren,
    Series,
    parse,
)

MAX_DURATION_NS = (1 << 63) - 1
"""Durations travel as int64 nanoseconds."""
_MAX_FINE_NS = 10**15
"""Above this a duration must be whole milliseconds: the canonical text writes a fraction of a
millisecond through a float, which is exact only up to 15 significant digits."""

_FLIP = FLIPPED
_FUNCTIONS = ", ".join(FUNCTION_NAMES)
_NON_FINITE = frozenset({"inf", "infinity", "nan"})
"""Names that read as a number but are not a finite one (compared lowercase)."""
_GLOB = frozenset("*?[")


class Kind(enum.Enum):
    """What an expression is, as far as the checker is concerned."""

    NUMBER = "a number"
    DURATION = "a duration"
    SERIES = "a series"
    AGGREGATE = "an aggregate"
    CONDITION = "a condition"
    INVALID = "invalid"
    """Already reported: no cascade of errors about it."""


# A postfix fragment: nodes whose ``sel`` is not yet an index (selectors are kept aside).
_Frag = list[tuple[Node, Selector | None]]


def compile_condition(text: str, *, board: bool = False) -> Condition:
    """Compile ``rule_content`` (or a ``rearm``) to the normalised IR.

    ``board``: the text belongs to a board rule, where every selector must name exactly one
    agent with the reserved label ``agent="id"``; elsewhere that label is an error.
    Raises ConditionError listing the first syntax error, or every error of meaning found
    (unknown function, wrong argument count or kind, a duration without a unit, a misplaced
    ``for``, an invalid comparison, ...), each with a 0-based column into ``text`` and a hint.
    """
    tree = parse(text)
    return _Compiler(text, board).condition(tree)


class _Compiler:
    def __init__(self, text: str, board: bool = False):
        self.text = text
        self.board = board
        self.errors: list[Diagnostic] = []

    def error(self, message: str, column: int, hint: str = "") -> None:
        self.errors.append(Diagnostic(message, column, hint))

    def src(self, e: Expr) -> str:
        s = " ".join(self.text[e.start : e.end].split())
        return s if len(s) <= 40 else s[:37] + "..."

    # -- the root -------------------------------------------------------------------------------

    def condition(self, tree: Expr) -> Condition:
        hold_ns = 0
        body = tree
        if isinstance(tree, Hold):
            body = tree.body
            hold_ns = self.duration(tree.duration, "for")
        frag = self.boolean(body, "the rule")
        if self.errors:
            raise ConditionError(self.text, self.errors)
        selectors: list[Selector] = []
        nodes = []
        for node, sel in frag:
            if sel is not None:
                if sel not in selectors:
                    selectors.append(sel)
                node = Node(node.op, node.value, selectors.index(sel), node.window_ns)
            nodes.append(node)
        return Condition(tuple(selectors), tuple(nodes), hold_ns)

    # -- by kind --------------------------------------------------------------------------------

    def boolean(self, e: Expr, where: str) -> _Frag:
        """``e`` must be a condition; ``where`` names what needs it, for the message."""
        kind, frag = self.expr(e)
        if kind in (Kind.CONDITION, Kind.INVALID):
            return frag
        what = self.src(e)
        if kind in (Kind.SERIES, Kind.AGGREGATE):
            self.error(
                f"{what!r} is a number, but {where} needs a condition",
                e.start,
                f"compare it with a number: {what} > 0.9",
            )
        elif kind is Kind.NUMBER:
            self.error(f"{what!r} is a number, but {where} needs a condition", e.start)
        else:
            self.error(f"{what!r} is a duration, but {where} needs a condition", e.start)
        return []

    def expr(self, e: Expr) -> tuple[Kind, _Frag]:
        if isinstance(e, Paren):
            return self.expr(e.inner)
        if isinstance(e, Hold):
            self.error(
                "'for' is only allowed at the end of the whole condition",
                e.for_start,
                "for comes last and holds the whole condition: a > 1 and b < 2 for 5s; "
                "holding only part of a condition is not supported",
            )
            self.duration(e.duration, "for")
            self.expr(e.body)  # errors inside it, but no cascade about what it is
            return Kind.INVALID, []
        if isinstance(e, Number):
            value = float(e.text)
            if not math.isfinite(value):
                self.error(f"{e.text} is too large for a number", e.start)
                return Kind.INVALID, []
            return Kind.NUMBER, [(Node(NodeOp.CONST, value=value + 0.0), None)]
        if isinstance(e, Duration):
            return Kind.DURATION, []
        if isinstance(e, Series):
            sel = self.selector(e)
            return (Kind.SERIES, [(Node(NodeOp.LATEST), sel)]) if sel else (Kind.INVALID, [])
        if isinstance(e, Call):
            return self.call(e)
        if isinstance(e, Compare):
            return self.compare(e)
        if isinstance(e, Not):
            return Kind.CONDITION, [*self.boolean(e.operand, "'not'"), (Node(NodeOp.NOT), None)]
        return self.logic(e)

    def logic(self, e: Logic) -> tuple[Kind, _Frag]:
        # Flatten a chain of one operator, parenthesised or not, and rebuild it left-deep.
        operands: list[Expr] = []
        pending: list[Expr] = [e]
        while pending:
            x = pending.pop()
            while isinstance(x, Paren):
                x = x.inner
            if isinstance(x, Logic) and x.op == e.op:
                pending += [x.right, x.left]
            else:
                operands.append(x)
        op = NodeOp.AND if e.op == "and" else NodeOp.OR
        frag = self.boolean(operands[0], f"'{e.op}'")
        for x in operands[1:]:
            frag += self.boolean(x, f"'{e.op}'")
            frag.append((Node(op), None))
        return Kind.CONDITION, frag

    def compare(self, e: Compare) -> tuple[Kind, _Frag]:
        bad_number = False
        for side in (e.left, e.right):
            while isinstance(side, Paren):
                side = side.inner
            if (
                isinstance(side, Series)
                and not side.labels
                and side.metric.lower().lstrip("+-") in _NON_FINITE
            ):
                self.error(
                    f"{side.metric} is not a finite number; constants must be finite",
                    side.start,
                    "compare with a finite number, e.g. 1e308; for no data use absent(x, D)",
                )
                bad_number = True
        if bad_number:
            return Kind.INVALID, []
        lk, lf = self.expr(e.left)
        rk, rf = self.expr(e.right)
        op = SYMBOL_OPS[e.op]
        if Kind.INVALID in (lk, rk):
            return Kind.INVALID, []
        for side, kind in ((e.left, lk), (e.right, rk)):
            while isinstance(side, Paren):
                side = side.inner
            if isinstance(side, Call) and side.name == "absent":
                self.error(
                    f"{self.src(side)!r} is already a condition; it cannot be compared",
                    side.start,
                    "use it on its own: absent(x, 30s), or not absent(x, 30s)",
                )
                return Kind.INVALID, []
            if kind is Kind.CONDITION:
                self.error(
                    f"{self.src(side)!r} is a condition; it cannot be compared",
                    side.start,
                    "a comparison is a series or an aggregate against a number; "
                    "combine conditions with and / or",
                )
                return Kind.INVALID, []
            if kind is Kind.DURATION:
                self.error(
                    f"{self.src(side)!r} is a duration; it cannot be compared",
                    side.start,
                    "compare with a plain number in the metric's own unit",
                )
                return Kind.INVALID, []
        valued = (Kind.SERIES, Kind.AGGREGATE)
        if lk in valued and rk is Kind.NUMBER:
            return Kind.CONDITION, [*lf, *rf, (Node(op), None)]
        if lk is Kind.NUMBER and rk in valued:
            return Kind.CONDITION, [*rf, *lf, (Node(_FLIP[op]), None)]
        hint = "compare a series or an aggregate with a number: avg(cpu, 1m) > 0.9"
        if lk is Kind.NUMBER:
            self.error("this compares two numbers; one side must be a series", e.op_start, hint)
        else:
            self.error(
                f"this compares {lk.value} with {rk.value}; one side must be a number",
                e.op_start,
                hint,
            )
        return Kind.INVALID, []

    def call(self, e: Call) -> tuple[Kind, _Frag]:
        op = FUNCTION_NAMES.get(e.name)
        if op is None:
            self.error(f"unknown function {e.name!r}", e.start, _function_hint(e.name))
            for arg in e.args:  # still look for errors inside
                if not isinstance(arg, Series | Number | Duration):
                    self.expr(arg)
            return Kind.INVALID, []
        usage = f"{e.name}(series, {'duration' if op is NodeOp.ABSENT else 'window'})"
        ok = True
        if len(e.args) != 2:
            column = e.args[2].start if len(e.args) > 2 else e.end - 1
            self.error(
                f"{e.name} takes 2 arguments, not {len(e.args)}",
                column,
                f"write {usage}, e.g. {e.name}(cpu, 30s)",
            )
            ok = False
        sel = None
        if e.args:
            first = e.args[0]
            inner = first
            while isinstance(inner, Paren):
                inner = inner.inner
            if isinstance(inner, Series):
                sel = self.selector(inner)
            elif isinstance(inner, Hold):
                self.expr(inner)
            else:
                hint = "a series is a metric name, optionally with labels: "
                hint += f'{e.name}(cpu{{core="0"}}, 30s)'
                if isinstance(inner, Call):
                    hint = "functions do not nest: their first argument is a metric"
                self.error(
                    f"the first argument of {e.name} must be a series, not {self.src(first)!r}",
                    first.start,
                    hint,
                )
                if not isinstance(inner, Number | Duration):
                    self.expr(inner)
        window = 0
        if len(e.args) >= 2:
            second = e.args[1]
            inner = second
            while isinstance(inner, Paren):
                inner = inner.inner
            if isinstance(inner, Duration | Number):
                window = self.duration(inner, e.name)
            elif isinstance(inner, Hold):
                self.expr(inner)
            else:
                self.error(
                    f"the second argument of {e.name} must be a duration, not {self.src(second)!r}",
                    second.start,
                    f"write {usage}, e.g. {e.name}(cpu, 30s)",
                )
                self.expr(inner)
        if not ok or sel is None or window <= 0:
            return Kind.INVALID, []
        kind = Kind.CONDITION if op is NodeOp.ABSENT else Kind.AGGREGATE
        return kind, [(Node(op, sel=0, window_ns=window), sel)]

    # -- leaves ---------------------------------------------------------------------------------

    def selector(self, e: Series) -> Selector | None:
        seen: dict[str, int] = {}
        for lab in e.labels:
            if lab.key in seen:
                self.error(
                    f"label {lab.key!r} is given twice in this selector",
                    lab.start,
                    "a series matches when its labels include every pair; give each name once",
                )
                return None
            seen[lab.key] = lab.start
        ok = True
        if self.board:
            agent = next((lab for lab in e.labels if lab.key == AGENT_LABEL), None)
            if agent is None:
                self.error(
                    f"in a board rule every series names its agent; {e.metric} does not",
                    e.start,
                    f'add the agent\'s exact id: {e.metric}{{agent="motor-1"}}',
                )
                ok = False
            elif not agent.value or _GLOB & set(agent.value):
                self.error(
                    f"agent={agent.value!r}: a board rule names exactly one agent, not a pattern",
                    agent.start,
                    "write the agent's exact id; one selector per agent",
                )
                ok = False
        else:
            for lab in e.labels:
                if lab.key == AGENT_LABEL:
                    self.error(
                        "the label 'agent' is reserved for board rules",
                        lab.start,
                        "to pick agents use the rule's agents: globs; to combine agents "
                        "write a board rule (board: true)",
                    )
                    ok = False
        if not ok:
            return None
        return Selector(e.metric, tuple(sorted((lab.key, lab.value) for lab in e.labels)))

    def duration(self, e: Number | Duration, where: str) -> int:
        """Nanoseconds, or 0 after reporting an error. ``where`` is ``for`` or a function name."""
        if isinstance(e, Number):
            self.error(
                f"{e.text} has no unit, but {where!r} needs a duration",
                e.start,
                f"add a unit: {e.text}s, or ms, m, h",
            )
            return 0
        text = self.text[e.start : e.end]
        ns = Fraction(e.number) * DURATION_UNITS[e.unit]
        if ns <= 0:
            self.error(f"{text} is not a positive duration", e.start)
        elif ns.denominator != 1:
            self.error(f"{text} is not a whole number of nanoseconds", e.start)
        elif ns > MAX_DURATION_NS:
            self.error(f"{text} is too long (the limit is about 292 years)", e.start)
        elif ns > _MAX_FINE_NS and ns % 1_000_000:
            self.error(
                f"{text} is too long to be given finer than a millisecond",
                e.start,
                "round it to whole milliseconds",
            )
        else:
            return int(ns)
        return 0


def _function_hint(name: str) -> str:
    if name.lower() in FUNCTION_NAMES:
        return f"function names are lowercase: {name.lower()}"
    close = difflib.get_close_matches(name, FUNCTION_NAMES, n=1)
    if close:
        return f"did you mean {close[0]}? Functions: {_FUNCTIONS}"
    return f"functions: {_FUNCTIONS}"
