"""Evaluation semantics (issue 3's exact rules), on virtual time, with IR built directly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rules import CompiledTable, Condition, Node, NodeOp, Rule, RuleSet, Selector, Timers
from edge.rules._ir import threshold
from edge.wire import Action

from .reference import reference

S = 1_000_000_000
MS = 1_000_000


def rule(
    rid: str,
    cond: Condition,
    *,
    priority: int = 5,
    cooldown_ns: int = 0,
    agents: tuple[str, ...] = (),
) -> Rule:
    return Rule(rid, cond, Action.ALERT, priority, 10.0, cooldown_ns=cooldown_ns, agents=agents)


def sel(metric: str, **labels: str) -> Selector:
    return Selector(metric, tuple(sorted(labels.items())))


def cmp(op: NodeOp, left: list[Node], value: float) -> list[Node]:
    return [*left, Node(NodeOp.CONST, value=value), Node(op)]


class Board:
    """One agent, one table, virtual time: samples in order, timers due before each sample."""

    def __init__(
        self,
        rules: list[Rule],
        series: list[tuple[str, dict[str, str]]],
        agent_id: str = "a1",
        first_seen_ns: int = 0,
    ):
        self.table = CompiledTable(RuleSet(tuple(rules)))
        self.series = [(i, name, tuple(sorted(lb.items()))) for i, (name, lb) in enumerate(series)]
        self.timers = Timers()
        self.agent_id = agent_id
        self.ev, pending = self.table.bind(
            object(), agent_id, self.series, first_seen_ns=first_seen_ns
        )
        self.ev.make_current()
        self.timers.schedule_absent(pending)
        self.fired: list[tuple[int, str, int]] = []

    def run_until(self, t: int) -> None:
        for f in self.timers.run_due(t):
            self.fired.append((f.t_eval_ns, f.rule.rule_id, f.metric_id))

    def sample(self, t: int, mid: int, value: float) -> None:
        self.run_until(t)
        for f in self.ev.on_sample(mid, value, t, self.timers) or ():
            self.fired.append((f.t_eval_ns, f.rule.rule_id, f.metric_id))

    def swap(self, rules: list[Rule]) -> None:
        new = CompiledTable(RuleSet(tuple(rules)), previous=self.table)
        ev, pending = new.bind(
            object(), self.agent_id, self.series, first_seen_ns=0, previous=self.ev
        )
        ev.make_current()
        self.timers.schedule_absent(pending)
        self.table, self.ev = new, ev

    def times(self) -> list[int]:
        return [t for t, _, _ in self.fired]


def test_threshold_is_edge_triggered_and_rearms() -> None:
    b = Board([rule("r", threshold("cpu", ">", 0.9))], [("cpu", {})])
    for t, v in [(1, 0.95), (2, 0.97), (3, 0.5), (4, 0.99), (5, 0.99)]:
        b.sample(t, 0, v)
    assert b.times() == [1, 4]


def test_held_for_fires_by_timer_at_exactly_t0_plus_d_and_resets() -> None:
    b = Board([rule("r", threshold("cpu", ">", 0.9, hold_ns=10 * S))], [("cpu", {})])
    b.sample(1 * S, 0, 0.95)
    b.sample(3 * S, 0, 0.96)
    b.run_until(11 * S)
    assert b.times() == [11 * S]
    b.sample(12 * S, 0, 0.99)  # still true: no second firing
    b.sample(13 * S, 0, 0.1)  # reset and re-arm
    b.sample(14 * S, 0, 0.99)
    b.sample(20 * S, 0, 0.1)  # reset before the deadline at 24 s
    b.run_until(30 * S)
    assert b.times() == [11 * S]


def test_cooldown_suppresses_refiring() -> None:
    b = Board([rule("r", threshold("cpu", ">", 0.9), cooldown_ns=5 * S)], [("cpu", {})])
    for t, v in [(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.0), (6, 1.0)]:
        b.sample(t * S, 0, v)
    assert b.times() == [0, 6 * S]


def test_absent_fires_at_last_plus_d_without_a_sample() -> None:
    cond = Condition((sel("hb"),), (Node(NodeOp.ABSENT, sel=0, window_ns=5 * S),))
    b = Board([rule("r", cond)], [("hb", {})], first_seen_ns=1 * S)
    b.run_until(5 * S)
    assert b.times() == []
    b.run_until(6 * S)  # no sample ever: the agent's first message + 5 s
    assert b.times() == [6 * S]
    b.sample(7 * S, 0, 1.0)  # data again: re-arms
    b.sample(9 * S, 0, 1.0)  # moves the deadline to 14 s
    b.run_until(13 * S)
    assert b.times() == [6 * S]
    b.run_until(14 * S)
    assert b.times() == [6 * S, 14 * S]


def test_window_aggregates_cover_t_minus_w_exclusive_to_t_inclusive() -> None:
    avg = Condition(
        (sel("x"),), tuple(cmp(NodeOp.GE, [Node(NodeOp.AVG, sel=0, window_ns=10)], 5.0))
    )
    cnt = Condition(
        (sel("x"),), tuple(cmp(NodeOp.GE, [Node(NodeOp.COUNT, sel=0, window_ns=10)], 3.0))
    )
    b = Board([rule("avg", avg), rule("cnt", cnt)], [("x", {})])
    b.sample(0, 0, 0.0)
    b.sample(5, 0, 10.0)  # window (-5, 5]: {0, 10}: avg 5 -> fires; count 2
    b.sample(10, 0, 2.0)  # window (0, 10]: {10, 2}: the sample at t=0 is out: avg 6, count 2
    b.sample(11, 0, 2.0)  # window (1, 11]: {10, 2, 2}: count 3 -> fires
    assert [(t, r) for t, r, _ in b.fired] == [(5, "avg"), (11, "cnt")]


def test_rate_is_per_second_and_unknown_below_two_samples() -> None:
    rate = Condition(
        (sel("odo"),), tuple(cmp(NodeOp.GT, [Node(NodeOp.RATE, sel=0, window_ns=10 * S)], 2.0))
    )
    not_rate = Condition(
        (sel("odo"),),
        (*cmp(NodeOp.GT, [Node(NodeOp.RATE, sel=0, window_ns=10 * S)], 2.0), Node(NodeOp.NOT)),
    )
    b = Board([rule("fast", rate), rule("slow", not_rate)], [("odo", {})])
    b.sample(0, 0, 100.0)  # one sample: rate unknown: neither fires
    assert b.fired == []
    b.sample(2 * S, 0, 105.0)  # 2.5/s
    b.sample(4 * S, 0, 106.0)  # (106 - 100) / 4 s = 1.5/s
    assert [(t, r) for t, r, _ in b.fired] == [(2 * S, "fast"), (4 * S, "slow")]


def test_three_valued_logic() -> None:
    # a > 0 is unknown until a has a sample; b > 0 is known
    a_gt = [Node(NodeOp.LATEST, sel=0), Node(NodeOp.CONST, value=0.0), Node(NodeOp.GT)]
    b_gt = [Node(NodeOp.LATEST, sel=1), Node(NodeOp.CONST, value=0.0), Node(NodeOp.GT)]
    sels = (sel("a"), sel("b"))
    rules = [
        rule("not_unknown", Condition(sels, (*a_gt, Node(NodeOp.NOT), *b_gt, Node(NodeOp.AND)))),
        rule(
            "false_and_unknown",
            Condition(sels, (*b_gt, Node(NodeOp.NOT), *a_gt, Node(NodeOp.AND), Node(NodeOp.NOT))),
        ),
        rule("true_or_unknown", Condition(sels, (*b_gt, *a_gt, Node(NodeOp.OR)))),
        rule(
            "unknown_or_false",
            Condition(sels, (*a_gt, *b_gt, Node(NodeOp.NOT), Node(NodeOp.OR), Node(NodeOp.NOT))),
        ),
    ]
    b = Board(rules, [("a", {}), ("b", {})])
    b.sample(1, 1, 1.0)  # b > 0 true; a unknown
    assert sorted(r for _, r, _ in b.fired) == ["false_and_unknown", "true_or_unknown"]


def test_each_matching_series_is_evaluated_on_its_own() -> None:
    b = Board(
        [rule("hot", threshold("temp", ">", 80.0))],
        [("temp", {"zone": "a"}), ("temp", {"zone": "b"}), ("cpu", {})],
    )
    b.sample(1, 0, 90.0)
    b.sample(2, 1, 95.0)
    b.sample(3, 0, 91.0)
    assert [(t, mid) for t, _, mid in b.fired] == [(1, 0), (2, 1)]


def test_label_selector_and_agent_glob() -> None:
    r = rule("plc", threshold("temp", ">", 80.0, labels={"zone": "a"}), agents=("plc-*",))
    series = [("temp", {"zone": "a"}), ("temp", {"zone": "b"})]
    assert len(Board([r], series, agent_id="plc-3").ev.instances) == 1
    assert Board([r], series, agent_id="perception-1").ev.instances == {}


def test_simultaneous_firings_order_is_priority_then_file_order() -> None:
    rs = [
        rule("low", threshold("x", ">", 0.0), priority=1),
        rule("hi_a", threshold("x", ">", 0.0), priority=9),
        rule("hi_b", threshold("x", ">", 0.0), priority=9),
    ]
    b = Board(rs, [("x", {})])
    b.sample(1, 0, 1.0)
    fired = [f for f in b.table.rules]
    assert sorted((b.table.order(cr), cr.rule_id) for cr in fired) == [
        ((-9, 1), "hi_a"),
        ((-9, 2), "hi_b"),
        ((-1, 0), "low"),
    ]


def test_swap_carries_state_for_unchanged_rules_only() -> None:
    held = rule("held", threshold("cpu", ">", 0.9, hold_ns=10 * S))
    b = Board([held, rule("other", threshold("cpu", ">", 0.5, hold_ns=10 * S))], [("cpu", {})])
    b.sample(0, 0, 0.95)
    b.swap(
        [
            rule("held", threshold("cpu", ">", 0.9, hold_ns=10 * S)),
            rule("other", threshold("cpu", ">", 0.6, hold_ns=10 * S)),
        ]
    )
    b.run_until(10 * S)
    # "held" kept its t0 = 0 and fired at 10 s; "other" changed, so its period was reset and
    # the old one's timer is ignored
    assert [(t, r) for t, r, _ in b.fired] == [(10 * S, "held")]


def test_swap_keeps_windows_and_drops_removed_rules_timers() -> None:
    avg = Condition(
        (sel("x"),), tuple(cmp(NodeOp.GE, [Node(NodeOp.AVG, sel=0, window_ns=100)], 5.0))
    )
    b = Board([rule("avg", avg), rule("gone", threshold("x", ">", 0.0, hold_ns=50))], [("x", {})])
    b.sample(0, 0, 4.0)  # avg 4: not yet
    b.swap([rule("avg", avg)])  # "avg" unchanged, "gone" removed with its held-for pending
    b.sample(10, 0, 6.0)  # avg over {4 (from before the swap), 6} = 5
    b.run_until(100)
    assert [(t, r) for t, r, _ in b.fired] == [(10, "avg")]


# -- against a straightforward reference evaluator --------------------------------------------


def conditions() -> st.SearchStrategy[Condition]:
    sels = (sel("a"), sel("b"))
    numeric = st.one_of(
        st.builds(lambda i: [Node(NodeOp.LATEST, sel=i)], st.integers(0, 1)),
        st.builds(
            lambda op, i, w: [Node(op, sel=i, window_ns=w * MS)],
            st.sampled_from(
                [NodeOp.AVG, NodeOp.MIN, NodeOp.MAX, NodeOp.SUM, NodeOp.COUNT, NodeOp.RATE]
            ),
            st.integers(0, 1),
            st.integers(1, 30),
        ),
    )
    atom = st.one_of(
        st.builds(
            lambda lhs, op, c: [*lhs, Node(NodeOp.CONST, value=c), Node(op)],
            numeric,
            st.sampled_from(
                sorted(NodeOp.__members__[k] for k in ("GT", "GE", "LT", "LE", "EQ", "NE"))
            ),
            st.sampled_from([0.0, 1.0, 2.0, 0.5]),
        ),
        st.builds(
            lambda i, w: [Node(NodeOp.ABSENT, sel=i, window_ns=w * MS)],
            st.integers(0, 1),
            st.integers(1, 30),
        ),
    )
    expr = st.recursive(
        atom,
        lambda inner: st.one_of(
            st.builds(lambda x: [*x, Node(NodeOp.NOT)], inner),
            st.builds(
                lambda x, y, op: [*x, *y, Node(op)],
                inner,
                inner,
                st.sampled_from([NodeOp.AND, NodeOp.OR]),
            ),
        ),
        max_leaves=4,
    )

    def build(nodes: list[Node], hold: int) -> Condition:
        # keep only the selectors the expression uses (an IR invariant), renumbered in order
        used = sorted({n.sel for n in nodes if n.op not in _NOT_SERIES})
        remap = {old: new for new, old in enumerate(used)}
        nodes = [
            n if n.op in _NOT_SERIES else Node(n.op, n.value, remap[n.sel], n.window_ns)
            for n in nodes
        ]
        return Condition(tuple(sels[i] for i in used), tuple(nodes), hold * MS)

    return st.builds(build, expr, st.integers(0, 20))


_NOT_SERIES = {
    NodeOp.CONST,
    NodeOp.GT,
    NodeOp.GE,
    NodeOp.LT,
    NodeOp.LE,
    NodeOp.EQ,
    NodeOp.NE,
    NodeOp.AND,
    NodeOp.OR,
    NodeOp.NOT,
}


@settings(max_examples=300, deadline=None)
@given(
    conditions(),
    st.integers(0, 2).map(lambda k: k * 5 * MS),
    st.lists(
        st.tuples(st.integers(1, 8), st.integers(0, 1), st.sampled_from([0.0, 1.0, 2.0, 3.0])),
        max_size=25,
    ),
)
def test_engine_matches_reference(
    cond: Condition, cooldown: int, steps: list[tuple[int, int, float]]
) -> None:
    samples, t = [], 0
    for dt, mid, v in steps:
        t += dt * MS
        samples.append((t, mid, v))
    t_end = t + 40 * MS
    b = Board([rule("r", cond, cooldown_ns=cooldown)], [("a", {}), ("b", {})])
    for ts, mid, v in samples:
        b.sample(ts, mid, v)
    b.run_until(t_end)
    ref_samples = [(ts, "ab"[mid], v) for ts, mid, v in samples]
    assert b.times() == reference(cond, None, cooldown, ref_samples, {"a", "b"}, t_end)
