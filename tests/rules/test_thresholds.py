"""The threshold fast path (``_thresholds``) against the general path, and batch evaluation.

The general path evaluates every instance on its series at every sample; the fast path
evaluates only the threshold rules whose truth a sample can change. Every test here runs the
same rules and samples through both (the fast path turned off by clearing
``CompiledRule.threshold`` before binding) and requires identical firings, in identical order.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rules import CompiledTable, Condition, Firing, Node, NodeOp, Rule, RuleSet, Timers
from edge.rules._engine import Instance
from edge.rules._ir import FLIPPED, threshold
from edge.wire import Action

from .test_engine import MS, cmp, sel

OPS = (">", ">=", "<", "<=", "==", "!=")
CONSTS = (-1.0, 0.0, -0.0, 0.5, 1.0, 2.0, 1e300)
VALUES = (*CONSTS, 0.25, 1.5, 3.0, math.inf, -math.inf, math.nan)
SERIES = (("a", ()), ("b", ()))
SERIES_DECL = [(i, name, labels) for i, (name, labels) in enumerate(SERIES)]


def _flip_const_first(cond: Condition) -> Condition:
    """``c OP' latest`` for ``latest OP c``: the same rule written the other way round."""
    a, c, op = cond.nodes
    flipped = FLIPPED[op.op]
    return Condition(cond.selectors, (c, a, Node(flipped)), cond.hold_ns)


@st.composite
def threshold_rules(draw: st.DrawFn, rid: str) -> Rule:
    metric = draw(st.sampled_from(["a", "a", "b"]))
    cond = threshold(
        metric, draw(st.sampled_from(OPS)), draw(st.sampled_from(CONSTS)),
        hold_ns=draw(st.sampled_from([0, 0, 3 * MS, 10 * MS])),
    )
    if draw(st.booleans()):
        cond = _flip_const_first(cond)
    return Rule(rid, cond, Action.ALERT, draw(st.integers(0, 3)), 10.0,
                cooldown_ns=draw(st.sampled_from([0, 0, 4 * MS])))


@st.composite
def general_rules(draw: st.DrawFn, rid: str) -> Rule:
    """Rules that stay on the general path, sharing series with the threshold rules."""
    kind = draw(st.sampled_from(["avg", "and", "absent", "or"]))
    if kind == "avg":
        nodes = cmp(NodeOp.GE, [Node(NodeOp.AVG, sel=0, window_ns=5 * MS)], 1.0)
        cond = Condition((sel("a"),), tuple(nodes))
    elif kind == "and":
        nodes = [*cmp(NodeOp.GT, [Node(NodeOp.LATEST, sel=0)], 0.5),
                 *cmp(NodeOp.LT, [Node(NodeOp.LATEST, sel=1)], 2.0), Node(NodeOp.AND)]
        cond = Condition((sel("a"), sel("b")), tuple(nodes))
    elif kind == "absent":
        cond = Condition((sel("b"),), (Node(NodeOp.ABSENT, sel=0, window_ns=6 * MS),))
    else:  # one series, but two comparisons
        nodes = [*cmp(NodeOp.GT, [Node(NodeOp.LATEST, sel=0)], 1.0),
                 *cmp(NodeOp.LT, [Node(NodeOp.LATEST, sel=0)], 0.0), Node(NodeOp.OR)]
        cond = Condition((sel("a"),), tuple(nodes))
    return Rule(rid, cond, Action.ALERT, draw(st.integers(0, 3)), 10.0)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    n_fast = draw(st.integers(1, 12))
    n_general = draw(st.integers(0, 3))
    rules = [draw(threshold_rules(f"t{i}")) for i in range(n_fast)]
    rules += [draw(general_rules(f"g{i}")) for i in range(n_general)]
    return draw(st.permutations(rules))


samples_st = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1), st.sampled_from(VALUES)), max_size=40
)


class Run:
    """One agent on one table; samples go through ``on_sample`` or ``on_batch``."""

    def __init__(self, rules: list[Rule], *, fast: bool, run_timers: bool = True):
        self.fast = fast
        self.run_timers = run_timers
        self.timers = Timers()
        self.table: CompiledTable | None = None
        self.ev: Any = None
        self.fired: list[tuple[int, str, int, float, bool]] = []
        self.swap(rules)

    def swap(self, rules: list[Rule]) -> None:
        table = CompiledTable(RuleSet(tuple(rules)), previous=self.table)
        if not self.fast:
            for cr in table.rules:
                cr.threshold = None
        ev, pending = table.bind(object(), "a1", SERIES_DECL, first_seen_ns=0, previous=self.ev)
        ev.make_current()
        self.timers.schedule_absent(pending)
        self.table, self.ev = table, ev

    def _record(self, fs: list[Firing] | None, timer: bool) -> None:
        for f in fs or ():
            v = f.value
            self.fired.append((f.t_sample_ns, f.rule.rule_id, f.metric_id,
                               v if v == v else -12345.0, timer))

    def sample(self, t: int, mid: int, v: float) -> None:
        if self.run_timers:
            self._record(self.timers.run_due(t), True)
        self._record(self.ev.on_sample(mid, v, t, self.timers), False)

    def batch(self, rows: list[tuple[int, int, float]]) -> None:
        assert self.run_timers
        fired, early, unknown = self.ev.on_batch(
            [(t, v, mid, 0) for t, mid, v in rows], self.timers
        )
        assert unknown == 0
        # on_batch returns deadline firings apart from sample firings: compare as sets of
        # events per kind, and sample firings in order
        self._record(early, True)
        self._record(fired, False)

    def finish(self, t: int) -> None:
        if self.run_timers:
            self._record(self.timers.run_due(t), True)


def _timeline(steps: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    out, t = [], 0
    for dt, mid, v in steps:
        t += dt * MS
        out.append((t, mid, v))
    return out


@settings(max_examples=400, deadline=None)
@given(rule_sets(), samples_st, st.integers(0, 40), st.booleans())
def test_fast_path_fires_exactly_as_the_general_path(
    rules: list[Rule], steps: list[tuple[int, int, float]], swap_at: int, run_timers: bool
) -> None:
    """Sample by sample, with and without timers run between samples (without them, a held-for
    rule fires at the first sample past its hold: the fast path must see that too), with a
    table swap part-way that keeps some rules and changes others."""
    timeline = _timeline(steps)
    changed = [
        r if i % 2 else Rule(r.rule_id, r.condition, r.action, r.priority, r.sla_ms,
                             cooldown_ns=r.cooldown_ns + MS)
        for i, r in enumerate(rules)
    ]
    runs = [Run(rules, fast=True, run_timers=run_timers),
            Run(rules, fast=False, run_timers=run_timers)]
    for k, (t, mid, v) in enumerate(timeline):
        for r in runs:
            if k == swap_at:
                r.swap(changed)
            r.sample(t, mid, v)
    end = (timeline[-1][0] if timeline else 0) + 20 * MS
    for r in runs:
        r.finish(end)
    assert runs[0].fired == runs[1].fired


@settings(max_examples=300, deadline=None)
@given(rule_sets(), samples_st, st.lists(st.integers(1, 8), min_size=1, max_size=6))
def test_on_batch_matches_sample_by_sample(
    rules: list[Rule], steps: list[tuple[int, int, float]], cuts: list[int]
) -> None:
    """``on_batch`` (what edged runs) against ``on_sample`` one by one, both paths: the same
    firings; deadlines inside a batch run before the sample after them."""
    timeline = _timeline(steps)
    batches, i, k = [], 0, 0
    while i < len(timeline):
        n = cuts[k % len(cuts)]
        batches.append(timeline[i : i + n])
        i, k = i + n, k + 1
    one_by_one = Run(rules, fast=False)
    for t, mid, v in timeline:
        one_by_one.sample(t, mid, v)
    for fast in (True, False):
        batched = Run(rules, fast=fast)
        for b in batches:
            batched.batch(b)
        end = (timeline[-1][0] if timeline else 0) + 20 * MS
        batched.finish(end)
        if fast:
            one_by_one.finish(end)
        # a batch reports its deadline firings before its sample firings: compare per batch
        # as multisets, and the whole sequence of sample firings in order
        assert sorted(batched.fired, key=repr) == sorted(one_by_one.fired, key=repr)
        assert [f for f in batched.fired if not f[4]] == [f for f in one_by_one.fired if not f[4]]


def test_a_sample_that_crosses_no_threshold_evaluates_no_rule(monkeypatch: Any) -> None:
    """1,000 threshold rules on one series: a sample between two constants evaluates none of
    them, in on_sample and in on_batch; crossing one evaluates just the rules on it."""
    rules = [Rule(f"r{i}", threshold("a", ">", float(i)), Action.ALERT, 1, 10.0)
             for i in range(1000)]
    run = Run(rules, fast=True)
    calls: list[str] = []
    real = Instance.evaluate

    def counting(self: Instance, t: int, trigger: Any, timers: Timers) -> Any:
        calls.append(self.rule.rule_id)
        return real(self, t, trigger, timers)

    monkeypatch.setattr(Instance, "evaluate", counting)
    run.sample(1, 0, 500.5)  # first sample on a fresh index: the full pass
    assert len(calls) == 1000
    calls.clear()
    run.sample(2, 0, 500.7)
    run.batch([(3, 0, 500.6), (4, 0, 500.6), (5, 0, 500.9)])
    assert calls == []
    run.sample(6, 0, 502.5)  # crosses 501 and 502
    assert sorted(calls) == ["r501", "r502"]
    assert [f[1] for f in run.fired] == [f"r{i}" for i in range(501)] + ["r501", "r502"]


def test_urgent_firings_leave_before_the_rest_of_the_batch_is_evaluated() -> None:
    rules = [
        Rule("low", threshold("a", ">", 1.0), Action.ALERT, 10, 10.0),
        Rule("urgent_a", threshold("a", ">", 1.0), Action.SAFE_STATE, 250, 10.0),
        Rule("urgent_b", threshold("b", ">", 1.0), Action.SAFE_STATE, 255, 10.0),
        Rule("held", threshold("b", ">", 5.0, hold_ns=2 * MS), Action.SAFE_STATE, 220, 10.0),
    ]
    run = Run(rules, fast=True)
    run.sample(0, 1, 9.0)  # b: starts the held-for (deadline 2 ms)
    seen: list[tuple[list[str], bool, int | None]] = []
    a_state = run.ev.series[0]

    def urgent(fs: list[Firing], from_timer: bool) -> None:
        # what the batch had applied to series a when this left
        seen.append(([f.rule.rule_id for f in fs], from_timer, a_state.last_t))

    rows = [(1 * MS, 2.0, 0, 0), (2 * MS, 0.0, 1, 0), (3 * MS, 2.0, 1, 0), (4 * MS, 0.5, 0, 0)]
    fired, early, unknown = run.ev.on_batch(rows, run.timers, 200, urgent)
    assert seen == [
        (["urgent_a"], False, 1 * MS),  # at the first sample, before a's last one (4 ms)
        (["held"], True, 1 * MS),  # its deadline (2 ms) ran before the sample at 2 ms
        (["urgent_b"], False, 1 * MS),
    ]
    assert [f.rule.rule_id for f in fired or ()] == ["low"]
    assert early == [] and unknown == 0


@pytest.mark.parametrize("level", [0, 256])
def test_urgent_priority_bounds(level: int) -> None:
    """0: every firing leaves at once (nothing returned); 256: none does."""
    run = Run([Rule("r", threshold("a", ">", 1.0), Action.ALERT, 0, 10.0)], fast=True)
    got: list[Firing] = []
    fired, _, _ = run.ev.on_batch([(1, 2.0, 0, 0)], run.timers, level,
                                  lambda fs, _t: got.extend(fs))
    assert (len(got), len(fired or ())) == ((1, 0) if level == 0 else (0, 1))


def test_unknown_metric_ids_are_counted_and_skipped() -> None:
    run = Run([Rule("r", threshold("a", ">", 1.0), Action.ALERT, 0, 10.0)], fast=True)
    fired, _, unknown = run.ev.on_batch([(1, 2.0, 7, 0), (2, 2.0, 0, 0)], run.timers)
    assert unknown == 1 and [f.t_sample_ns for f in fired or ()] == [2]
