"""The rule_content language: lexer -> parser -> checking compiler -> normalised IR."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import RuleError
from edge.rules._compiler import compile_condition
from edge.rules._ir import Condition, Node, NodeOp, Selector
from edge.rules._lexer import ConditionError, Diagnostic

S = 1_000_000_000
MS = 1_000_000


def errors(text: str) -> list[Diagnostic]:
    with pytest.raises(ConditionError) as info:
        compile_condition(text)
    assert info.value.text == text
    return info.value.errors


def only_error(text: str) -> Diagnostic:
    (d,) = errors(text)
    return d


def latest(sel: int) -> Node:
    return Node(NodeOp.LATEST, sel=sel)


def const(v: float) -> Node:
    return Node(NodeOp.CONST, value=v)


def gt(sel: int, v: float) -> tuple[Node, ...]:
    return (latest(sel), const(v), Node(NodeOp.GT))


# -- what compiles, and to what ---------------------------------------------------------------


def test_seed_condition() -> None:
    c = compile_condition("cpu_usage > 0.9 for 10s")
    assert c == Condition((Selector("cpu_usage"),), gt(0, 0.9), 10 * S)
    assert c.text() == "cpu_usage > 0.9 for 10s"


def test_precedence_not_over_and_over_or() -> None:
    c = compile_condition("not a > 1 and b > 2 or c > 3")
    # ((not a>1) and b>2) or c>3
    assert c.nodes == (
        *gt(0, 1),
        Node(NodeOp.NOT),
        *gt(1, 2),
        Node(NodeOp.AND),
        *gt(2, 3),
        Node(NodeOp.OR),
    )
    assert c == compile_condition("((not (a > 1)) and b > 2) or c > 3")
    # a or (b and c): and binds tighter than or, wherever it stands
    c = compile_condition("a > 1 or b > 2 and c > 3")
    assert c.nodes == (*gt(0, 1), *gt(1, 2), *gt(2, 3), Node(NodeOp.AND), Node(NodeOp.OR))
    # not applies to the comparison, not to the metric
    assert compile_condition("not not a > 1").nodes == (
        *gt(0, 1),
        Node(NodeOp.NOT),
        Node(NodeOp.NOT),
    )


def test_for_binds_loosest_and_holds_the_whole_condition() -> None:
    c = compile_condition("a > 1 and b < 2 for 5s")
    assert c.hold_ns == 5 * S
    assert c.nodes == (*gt(0, 1), latest(1), const(2), Node(NodeOp.LT), Node(NodeOp.AND))
    assert c == compile_condition("(a > 1 and b < 2) for 5s")
    assert compile_condition("not a > 1 or b > 1 for 1m").hold_ns == 60 * S


def test_number_on_the_left_flips_the_operator() -> None:
    for written, canonical in [
        ("0.9 < cpu", "cpu > 0.9"),
        ("0.9 <= cpu", "cpu >= 0.9"),
        ("0.9 > cpu", "cpu < 0.9"),
        ("0.9 >= cpu", "cpu <= 0.9"),
        ("0.9 == cpu", "cpu == 0.9"),
        ("0.9 != cpu", "cpu != 0.9"),
        ("5 < avg(cpu, 1m)", "avg(cpu, 1m) > 5"),
    ]:
        c = compile_condition(written)
        assert c == compile_condition(canonical), written
        assert c.text() == canonical


def test_aggregates_and_absent() -> None:
    c = compile_condition('rate(odometer{bus="can0"}, 30s) > 12.5 or absent(gps_fix, 2s)')
    sel0 = Selector("odometer", (("bus", "can0"),))
    assert c.selectors == (sel0, Selector("gps_fix"))
    assert c.nodes == (
        Node(NodeOp.RATE, sel=0, window_ns=30 * S),
        const(12.5),
        Node(NodeOp.GT),
        Node(NodeOp.ABSENT, sel=1, window_ns=2 * S),
        Node(NodeOp.OR),
    )
    for name, op in [
        ("avg", NodeOp.AVG),
        ("min", NodeOp.MIN),
        ("max", NodeOp.MAX),
        ("sum", NodeOp.SUM),
        ("count", NodeOp.COUNT),
    ]:
        assert compile_condition(f"{name}(x, 250ms) >= 3").nodes[0] == Node(
            op, sel=0, window_ns=250 * MS
        )
    assert compile_condition("not absent(heartbeat, 1.5m)").nodes == (
        Node(NodeOp.ABSENT, sel=0, window_ns=90 * S),
        Node(NodeOp.NOT),
    )


def test_selectors_are_shared_in_first_use_order() -> None:
    c = compile_condition(
        'b > 1 and a{z="1", y="2"} > 2 and avg(b, 1s) < 5 or absent(a{y="2",z="1"}, 1s)'
    )
    assert c.selectors == (Selector("b"), Selector("a", (("y", "2"), ("z", "1"))))
    assert [n.sel for n in c.nodes if n.op in (NodeOp.LATEST, NodeOp.AVG, NodeOp.ABSENT)] == [
        0,
        1,
        0,
        1,
    ]
    # a selector with labels is a different selector from the bare metric
    assert len(compile_condition('t > 1 and t{zone="a"} > 1').selectors) == 2
    assert compile_condition("cpu{} > 1") == compile_condition("cpu > 1")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x > 0.9", 0.9),
        ("x > -3", -3.0),
        ("x > +3", 3.0),
        ("x > 1e3", 1000.0),
        ("x > 1E-3", 0.001),
        ("x > .5", 0.5),
        ("x > 5.", 5.0),
        ("x > 2.5e+2", 250.0),
        ("x>-0", 0.0),
    ],
)
def test_numbers(text: str, value: float) -> None:
    (node,) = [n for n in compile_condition(text).nodes if n.op is NodeOp.CONST]
    assert node.value == value and math.copysign(1, node.value) == math.copysign(1, value)


@pytest.mark.parametrize(
    ("dur", "ns"),
    [
        ("250ms", 250 * MS),
        ("10s", 10 * S),
        ("1.5m", 90 * S),
        ("2h", 7200 * S),
        ("0.5ms", 500_000),
        ("1e3ms", S),
        ("0.000001ms", 1),
    ],
)
def test_durations(dur: str, ns: int) -> None:
    c = compile_condition(f"avg(x, {dur}) > 1 for {dur}")
    assert c.hold_ns == ns and c.nodes[0].window_ns == ns


def test_identifiers_and_label_values() -> None:
    c = compile_condition(
        r'can.engine:rpm{ecu="a\"b", path="c:\\d"} > 1 and _x9 > 1 and count > 1 and form > 1'
    )
    assert [s.metric for s in c.selectors] == ["can.engine:rpm", "_x9", "count", "form"]
    assert c.selectors[0].labels == (("ecu", 'a"b'), ("path", "c:\\d"))
    # keywords are fine as label names, where no keyword could stand
    assert compile_condition('x{for="a", and="b"} > 1').selectors[0].labels == (
        ("and", "b"),
        ("for", "a"),
    )


def test_whitespace_is_free_including_newlines() -> None:
    a = compile_condition("cpu>0.9 and(mem<=2)for 10s")
    b = compile_condition("\n  cpu  >  0.9\n\tand ( mem <= 2 )\n  for 10s \n")
    assert a == b


# -- syntax errors: the first one, at its exact column ----------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        # start
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ("> 0.9", 0, "expected a condition"),
        ("and cpu > 1", 0, "expected a condition"),
        (") cpu > 1", 0, "expected a condition"),
        ('"cpu" > 1', 0, "expected a condition"),
        # after a metric
        ("cpu 0.9", 4, "expected a comparison"),
        ("cpu mem > 1", 4, "expected a comparison"),
        ("cpu = 0.9", 4, "expected a comparison"),
        ("cpu > 0.9 > 1", 10, "do not chain"),
        # inside a label selector
        ("cpu{core=1} > 1", 9, "quoted label value"),
        ("cpu{1} > 1", 4, "label name"),
        ("cpu{core} > 1", 8, "'='"),
        ('cpu{core=="1"} > 1', 8, "'='"),
        ('cpu{core!="1"} > 1', 8, "'='"),
        ('cpu{core="1" zone="a"} > 1', 13, "',' or '}'"),
        ('cpu{core="1" > 1', 13, "',' or '}'"),
        ('cpu{core="1"', 12, "never closed"),
        ('cpu{core="1', 9, "never closed"),
        (r'cpu{core="1\n"} > 1', 11, "unknown escape"),
        ("cpu{core='1'} > 1", 9, "unexpected character"),
        # after an operator
        ("cpu > ", 6, "expected a number"),
        ("cpu > and", 6, "expected a number"),
        ("cpu > >= 1", 6, "expected a number"),
        ("cpu > 1 and", 11, "expected a condition"),
        ("cpu > 1 or or", 11, "expected a condition"),
        ("not", 3, "expected a condition"),
        # inside function arguments
        ("avg(cpu 5s) > 1", 8, "expected a comparison"),
        ('avg(cpu "a", 5s) > 1', 8, "',' or ')' in the arguments of avg"),
        ("avg(cpu, 5s > 1", 15, "'(' of avg at column 3 is never closed"),
        ("avg(cpu, 5s", 11, "never closed"),
        ("avg(cpu,, 5s) > 1", 8, "expected a condition"),
        ("avg(, 5s) > 1", 4, "expected a condition"),
        # after for
        ("cpu > 1 for", 11, "expected a duration"),
        ("cpu > 1 for cpu", 12, "expected a duration"),
        ("cpu > 1 for (5s)", 12, "expected a duration"),
        ("cpu > 1 for 10sec", 14, "unknown unit 'sec'"),
        ("cpu > 1 for 5s for 5s", 15, "after 'for 5s'"),
        ("cpu > 1 for 5s and mem > 1", 15, "after 'for 5s'"),
        # trailing junk
        ("cpu > 0.9 junk", 10, "unexpected 'junk'"),
        ("cpu > 0.9 $", 10, "unexpected character '$'"),
        ("cpu > 0.9 AND mem > 1", 10, "unexpected 'AND'"),
        ('cpu > 0.9 "x"', 10, "unexpected"),
        ("cpu > 1e", 7, "unknown unit 'e'"),
        ("cpu > 0.9for 10s", 9, "unknown unit 'for'"),
        ("cpu > 1 && mem > 1", 8, "unexpected character '&'"),
        # unbalanced parentheses
        ("(cpu > 1", 8, "'(' at column 0 is never closed"),
        ("((cpu > 1) and mem > 1", 22, "'(' at column 0 is never closed"),
        ("cpu > 1)", 7, "no matching '('"),
        ("(cpu > 1))", 9, "no matching '('"),
        ("(cpu > 1 mem > 2)", 9, "expected ')' to close the '(' at column 0, found 'mem'"),
        ("(cpu > 1 for 5s and b > 1)", 16, "after 'for 5s'"),
        ("()", 1, "expected a condition"),
    ],
)
def test_syntax_error_positions(text: str, column: int, words: str) -> None:
    d = only_error(text)
    assert words in d.message, d
    assert d.column == column, d


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("cpu > 1 AND mem > 1", "keywords are lowercase: and"),
        ("cpu > 1 Or mem > 1", "keywords are lowercase: or"),
        ("cpu = 1", "use =="),
        ("cpu > 1 && mem > 1", "write and"),
        ("cpu > 1 || mem > 1", "write or"),
        ("cpu{zone='a'} > 1", "double quotes"),
        ("cpu{core=1} > 1", 'write core="1"'),
        ("cpu > 1 for 5s and b > 1", "for comes last"),
        ("cpu > 1 > 2", "join two comparisons with and"),
        ("cpu > 1 for 10sec", "ms, s, m or h"),
        ("cpu > 1e", "exponent"),
        ("(cpu > 1", "add a ')'"),
        ("", "cpu_usage > 0.9 for 10s"),
    ],
)
def test_syntax_error_hints(text: str, hint: str) -> None:
    assert hint in only_error(text).hint


def test_the_first_syntax_error_wins_over_later_unreadable_text() -> None:
    # the lexer does not run ahead of the parser: '>' at 6 is reported, not '$' at 10
    assert only_error("cpu > > 1 $").column == 6


# -- errors of meaning: every one, at once ----------------------------------------------------


def test_every_checker_error_is_reported_at_once() -> None:
    text = (
        "median(x, 5s) > 1 and avg(x) > 2 and rate(x, 10) > 1"
        " and absent(y, 5s) > 1 and avg(x, 1m) > cpu and (z > 1 for 2s) for 3"
    )
    got = [(d.column, d.message) for d in errors(text)]
    assert text.index("for 2s") == 107 and text.index("for 3") + 4 == 119
    assert got == [
        (0, "unknown function 'median'"),
        (27, "avg takes 2 arguments, not 1"),
        (45, "10 has no unit, but 'rate' needs a duration"),
        (57, "'absent(y, 5s)' is already a condition; it cannot be compared"),
        (90, "this compares an aggregate with a series; one side must be a number"),
        (107, "'for' is only allowed at the end of the whole condition"),
        (119, "3 has no unit, but 'for' needs a duration"),
    ]


@pytest.mark.parametrize(
    ("text", "column", "message", "hint"),
    [
        ("median(x, 5s) > 1", 0, "unknown function 'median'", "did you mean min?"),
        ("Avg(x, 5s) > 1", 0, "unknown function 'Avg'", "function names are lowercase: avg"),
        ("quantile(x, 5s) > 1", 0, "unknown function 'quantile'", "functions: avg, min, max"),
        ("avg() > 1", 4, "avg takes 2 arguments, not 0", "avg(series, window)"),
        ("avg(x) > 1", 5, "avg takes 2 arguments, not 1", "avg(cpu, 30s)"),
        ("avg(x, 1s, 2s) > 1", 11, "avg takes 2 arguments, not 3", ""),
        ("absent(x)", 8, "absent takes 2 arguments, not 1", "absent(series, duration)"),
        ("avg(1, 1s) > 1", 4, "first argument of avg must be a series, not '1'", "labels"),
        ("avg(5s, 1s) > 1", 4, "first argument of avg must be a series", ""),
        ("avg(x > 1, 1s) > 1", 4, "first argument of avg must be a series, not 'x > 1'", ""),
        ("max(avg(x, 1s), 1m) > 1", 4, "first argument of max must be a series", "do not nest"),
        ("avg(x, y) > 1", 7, "second argument of avg must be a duration, not 'y'", ""),
        ("avg(x, 10) > 1", 7, "10 has no unit, but 'avg' needs a duration", "add a unit: 10s"),
        ("absent(x, 30)", 10, "30 has no unit, but 'absent' needs a duration", ""),
        ("x > 1 for 10", 10, "10 has no unit, but 'for' needs a duration", "10s"),
        ("x > 1 for 0s", 10, "0s is not a positive duration", ""),
        ("avg(x, -5s) > 1", 7, "-5s is not a positive duration", ""),
        ("avg(x, 0.0000001ms) > 1", 7, "not a whole number of nanoseconds", ""),
        ("x > 1 for 3000000h", 10, "too long", ""),
        ("x > 1 for 2000000000.5ms", 10, "finer than a millisecond", "whole milliseconds"),
        ("(x > 1 for 5s)", 7, "'for' is only allowed at the end", "holding only part"),
        ("avg(x for 5s, 1s) > 1", 6, "'for' is only allowed at the end", ""),
        ("a > b", 2, "compares a series with a series", "with a number"),
        ("avg(a, 1s) > b", 11, "compares an aggregate with a series", ""),
        ("a < avg(a, 1s)", 2, "compares a series with an aggregate", ""),
        ("avg(a, 1s) > max(a, 1s)", 11, "compares an aggregate with an aggregate", ""),
        ("1 > 2", 2, "compares two numbers", "series"),
        ("absent(x, 5s) == 1", 0, "'absent(x, 5s)' is already a condition", "not absent"),
        ("1 < absent(x, 5s)", 4, "is already a condition", ""),
        ("(a > 1) > 2", 1, "'a > 1' is a condition; it cannot be compared", ""),
        ("x > 5s", 4, "'5s' is a duration; it cannot be compared", "plain number"),
        ("x > 1e999", 4, "too large", ""),
        ("cpu", 0, "'cpu' is a number, but the rule needs a condition", "cpu > 0.9"),
        ("avg(cpu, 1m)", 0, "is a number, but the rule needs a condition", ""),
        ("cpu for 5s", 0, "is a number, but the rule needs a condition", ""),
        ("5s", 0, "is a duration, but the rule needs a condition", ""),
        ("not cpu", 4, "'cpu' is a number, but 'not' needs a condition", ""),
        ("cpu and mem > 1", 0, "but 'and' needs a condition", ""),
        ("mem > 1 or 3", 11, "'3' is a number, but 'or' needs a condition", ""),
        ('x{a="1", a="2"} > 1', 9, "label 'a' is given twice", ""),
    ],
)
def test_checker_errors(text: str, column: int, message: str, hint: str) -> None:
    d = only_error(text)
    assert message in d.message, d
    assert d.column == column, d
    assert hint in d.hint, d


def test_errors_are_rule_errors_and_value_errors() -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition("x > ")
    assert isinstance(info.value, RuleError) and isinstance(info.value, ValueError)
    assert "column 4" in str(info.value)


# -- canonical text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (["cpu > 0.9", "cpu>0.9", "cpu > 0.90", "0.9 < cpu", "(cpu > 9e-1)"], "cpu > 0.9"),
        (
            [
                'temp{zone="a", line="3"} >= 80 for 1m',
                'temp{line="3",zone="a"}>=80.0 for 60s',
                '80 <= temp{zone="a",line="3"} for 60000ms',
                '((80e0 <= temp{ line = "3" , zone = "a" , })) for 1m',
            ],
            'temp{line="3", zone="a"} >= 80 for 1m',
        ),
        (
            [
                "a > 1 and b > 2 and c > 3",
                "a > 1 and (b > 2 and c > 3)",
                "((a > 1) and (b > 2)) and (c > 3)",
            ],
            "a > 1 and b > 2 and c > 3",
        ),
        (["a > 1 or (b > 1 or c > 1)", "(a > 1 or b > 1) or c > 1"], "a > 1 or b > 1 or c > 1"),
        (["(a > 1 or b > 1) and c > 1"], "(a > 1 or b > 1) and c > 1"),
        (["not (a > 1 and b > 1)"], "not (a > 1 and b > 1)"),
        (["not (a > 1)", "not a > 1", "(not (a > 1))"], "not a > 1"),
        (["avg(x, 90s) > 1e3", "1000 < avg((x), 1.5m)"], "avg(x, 90s) > 1000"),
        (["x > 1e20", "x > 100000000000000000000"], "x > 1e+20"),
        (["x > -0", "x > 0.0", "x > +0"], "x > 0"),
        (["absent(x, 0.25s)", "absent(x, 250ms)"], "absent(x, 250ms)"),
        (["a > 1 for 2h", "a > 1 for 120m", "a > 1 for 7200s"], "a > 1 for 2h"),
        (['x{k="q\\"\\\\"} > 1'], 'x{k="q\\"\\\\"} > 1'),
    ],
)
def test_spellings_of_one_condition_compile_alike(spellings: list[str], canonical: str) -> None:
    compiled = {compile_condition(s) for s in spellings}
    assert len(compiled) == 1, spellings
    (c,) = compiled
    assert c.text() == canonical
    assert compile_condition(canonical) == c


# -- properties ---------------------------------------------------------------------------------

# Each value with several spellings; all of them exact.
_NUMBERS = {
    0.9: ["0.9", "0.90", "9e-1", ".9", "+0.9"],
    1000.0: ["1000", "1e3", "1000.0", "1E3", "1.0e+3"],
    -3.0: ["-3", "-3.0", "-3e0", "-0.3e1"],
    0.0: ["0", "0.0", "-0", "+0.", "0e5"],
    1e20: ["1e20", "1e+20", "100000000000000000000"],
    2.5e-7: ["2.5e-7", "0.00000025", "25e-8"],
    42.0: ["42", "42.000"],
}
_DURATIONS = {
    10 * S: ["10s", "10000ms", "10.0s"],
    90 * S: ["1.5m", "90s", "90000ms"],
    250 * MS: ["250ms", "0.25s"],
    7200 * S: ["2h", "120m", "7200s"],
    1_500_000: ["1.5ms", "0.0015s"],
    7: ["0.000007ms"],
}
_METRICS = ["cpu", "mem.used", "can:rpm", "_t9", "count", "form"]
_LABELS = {"zone": ["a", 'q"t', "b\\s"], "core": ["0", "1"], "for": ["x"]}
_CMP = [">", ">=", "<", "<=", "==", "!="]
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
_AGGS = ["avg", "min", "max", "sum", "count", "rate"]

# A condition's structure, drawn by hypothesis and then spelled at random.
Series = tuple[str, tuple[tuple[str, str], ...]]


@dataclasses.dataclass(frozen=True)
class Cmp:
    series: Series
    agg: tuple[str, int] | None
    op: str
    number: float


@dataclasses.dataclass(frozen=True)
class Absent:
    series: Series
    ns: int


@dataclasses.dataclass(frozen=True)
class Neg:
    x: Structure


@dataclasses.dataclass(frozen=True)
class Bin:
    op: str
    x: Structure
    y: Structure


Structure = Cmp | Absent | Neg | Bin


@st.composite
def _series(draw: st.DrawFn) -> Series:
    keys = draw(st.lists(st.sampled_from(sorted(_LABELS)), unique=True, max_size=2))
    labels = tuple((k, draw(st.sampled_from(_LABELS[k]))) for k in sorted(keys))
    return draw(st.sampled_from(_METRICS)), labels


def _structures() -> st.SearchStrategy[Structure]:
    durations = st.sampled_from(sorted(_DURATIONS))
    leaf = st.one_of(
        st.builds(
            Cmp,
            _series(),
            st.one_of(st.none(), st.tuples(st.sampled_from(_AGGS), durations)),
            st.sampled_from(_CMP),
            st.sampled_from(sorted(_NUMBERS)),
        ),
        st.builds(Absent, _series(), durations),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(Neg, inner), st.builds(Bin, st.sampled_from(["and", "or"]), inner, inner)
        ),
        max_leaves=6,
    )


_PREC = {"or": 1, "and": 2}


def _spell(draw: st.DrawFn, s: Structure) -> tuple[str, int]:
    """One random spelling of ``s`` and its precedence (4 for an atom)."""

    def sp() -> str:
        return draw(st.sampled_from([" ", "  ", "\t", "\n  "]))

    def opt() -> str:
        return draw(st.sampled_from(["", " "]))

    def series(x: Series) -> str:
        metric, labels = x
        items = draw(st.permutations(labels))
        if not items and not draw(st.booleans()):
            return metric
        inner = ("," + opt()).join(
            f'{k}{opt()}={opt()}"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for k, v in items
        )
        return metric + "{" + opt() + inner + opt() + "}"

    def dur(ns: int) -> str:
        return draw(st.sampled_from(_DURATIONS[ns]))

    if isinstance(s, Cmp):
        lhs = series(s.series)
        if s.agg is not None:
            lhs = f"{s.agg[0]}({opt()}{lhs},{opt()}{dur(s.agg[1])}{opt()})"
        n = draw(st.sampled_from(_NUMBERS[s.number]))
        if draw(st.booleans()):
            text = f"{lhs}{opt()}{s.op}{opt()}{n}"
        else:
            text = f"{n}{opt()}{_FLIP[s.op]}{opt()}{lhs}"
        prec = 4
    elif isinstance(s, Absent):
        text, prec = f"absent({series(s.series)},{opt()}{dur(s.ns)})", 4
    elif isinstance(s, Neg):
        x, px = _spell(draw, s.x)
        text, prec = f"not{sp()}{x if px >= 3 else f'({x})'}", 3
    else:
        p = _PREC[s.op]
        x, px = _spell(draw, s.x)
        y, py = _spell(draw, s.y)
        x = x if px >= p else f"({x})"
        y = y if py >= p else f"({y})"
        text, prec = f"{x}{sp()}{s.op}{sp()}{y}", p
    for _ in range(draw(st.integers(0, 2))):  # redundant parentheses
        text, prec = f"({opt()}{text}{opt()})", 4
    return text, prec


@st.composite
def _two_spellings(draw: st.DrawFn) -> tuple[str, str]:
    s = draw(_structures())
    hold = draw(st.one_of(st.none(), st.sampled_from(sorted(_DURATIONS))))
    out = []
    for _ in range(2):
        text, _ = _spell(draw, s)
        if hold is not None:
            text += f" for {draw(st.sampled_from(_DURATIONS[hold]))}"
        out.append(text)
    return out[0], out[1]


@settings(max_examples=150, deadline=None)
@given(_two_spellings())
def test_random_spellings_agree_and_the_canonical_text_round_trips(pair: tuple[str, str]) -> None:
    a, b = (compile_condition(t) for t in pair)
    assert a == b, pair
    assert a.text() == b.text()
    again = compile_condition(a.text())
    assert again == a
    assert again.text() == a.text()


_SOUP = [
    "cpu", "mem", "avg", "rate", "absent", "foo", "and", "or", "not", "for", "AND",
    "(", ")", "{", "}", ",", "=", '"a"', '"', ">", ">=", "<", "==", "!=",
    "0.9", "-3", "1e3", "10", "5s", "250ms", "1.5m", "$", "\\",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.lists(st.sampled_from(_SOUP), max_size=12).map(" ".join),
        st.lists(st.sampled_from(_SOUP), max_size=12).map("".join),
        st.text(max_size=30),
    )
)
def test_any_text_compiles_or_raises_condition_error_with_columns_inside(text: str) -> None:
    try:
        c = compile_condition(text)
    except ConditionError as exc:
        assert exc.errors
        assert all(0 <= d.column <= len(text) for d in exc.errors)
        assert [d.column for d in exc.errors] == sorted(d.column for d in exc.errors)
    else:
        assert compile_condition(c.text()) == c
