"""Issue 10's semantics: three-valued binding, targets, board rules, re-arm, finite constants.

Each is pinned by a small example, and a property test compares the engine (both paths: the
threshold index and the general one; sample by sample and by batch) with a reference evaluator
that recomputes every value from the whole history at each evaluation instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rules import (
    BOARD_AGENT,
    MAX_TARGETS,
    CompiledTable,
    Condition,
    Node,
    NodeOp,
    Rule,
    RuleSet,
    Selector,
    Timers,
    bind_board,
    compile_condition,
    decode_rule_table,
    decode_table_with_info,
    encode_rule_table,
    parse_rule_text,
    parse_trace,
    replay,
    resolve_targets,
)
from edge.rules._source import RuleFileError
from edge.wire import Action

from .reference import reference
from .test_engine import MS, S, conditions

DATA = Path(__file__).parent / "data"


def rule(rid: str, text: str, **kw: Any) -> Rule:
    board = kw.get("board", False)
    cond = compile_condition(text, board=board)
    if "rearm" in kw and isinstance(kw["rearm"], str):
        kw["rearm"] = compile_condition(kw["rearm"], board=board)
    return Rule(rid, cond, Action.ALERT, kw.pop("priority", 5), 10.0, **kw)


class One:
    """One agent declaring ``series`` (names), one table, virtual time."""

    def __init__(self, rules: list[Rule], series: list[str], first_seen_ns: int = 0):
        self.table = CompiledTable(RuleSet(tuple(rules)))
        self.decl = [(i, n, ()) for i, n in enumerate(series)]
        self.ids = {n: i for i, n in enumerate(series)}
        self.timers = Timers()
        self.ev, pending = self.table.bind("a1", "a1", self.decl, first_seen_ns=first_seen_ns)
        self.ev.make_current()
        self.timers.schedule_absent(pending)
        self.fired: list[tuple[int, str]] = []

    def run_until(self, t: int) -> None:
        self.fired += [(f.t_eval_ns, f.rule.rule_id) for f in self.timers.run_due(t)]

    def sample(self, t: int, name: str, v: float) -> None:
        self.run_until(t)
        fs = self.ev.on_sample(self.ids[name], v, t, self.timers) or ()
        self.fired += [(f.t_eval_ns, f.rule.rule_id) for f in fs]


# -- 1. binding ---------------------------------------------------------------------------------


def test_true_or_unknown_fires_for_an_agent_without_the_other_series() -> None:
    b = One([rule("r", "cpu_usage > 0.9 or not (mem_usage < 0.5)")], ["cpu_usage"])
    b.sample(1 * MS, "cpu_usage", 0.95)
    assert b.fired == [(1 * MS, "r")]
    assert b.ev.rules_bound() == 1


def test_absent_counts_from_the_first_message_for_a_series_never_declared() -> None:
    b = One([rule("hb", "absent(heartbeat, 500ms)")], ["cpu"], first_seen_ns=100 * MS)
    b.sample(200 * MS, "cpu", 1.0)
    b.run_until(10 * S)
    assert b.fired == [(600 * MS, "hb")]


def test_a_comparison_over_a_missing_series_is_unknown_and_never_fires() -> None:
    b = One([rule("r", "mem < 0.5 and cpu > 0.9"), rule("n", "not (mem < 0.5)")], ["cpu"])
    b.sample(1 * MS, "cpu", 1.0)
    b.run_until(S)
    assert b.fired == []


def test_a_rule_whose_every_selector_is_missing_and_has_no_absent_binds_no_instance() -> None:
    b = One([rule("r", "mem < 0.5")], ["cpu"])
    assert b.ev.rules_bound() == 0  # it could never be evaluated: nothing kept for it


# -- 4. re-arm ----------------------------------------------------------------------------------


def test_rearm_with_hysteresis_and_a_hold() -> None:
    b = One([rule("hot", "temp > 90", rearm="temp < 80 for 1s")], ["temp"])
    b.sample(0, "temp", 95)  # fires
    b.sample(100 * MS, "temp", 85)  # not true, but not re-armed (no deadband crossed)
    b.sample(200 * MS, "temp", 95)  # still disarmed: no firing
    b.sample(300 * MS, "temp", 70)  # rearm true: its hold starts
    b.sample(800 * MS, "temp", 75)
    b.run_until(1300 * MS)  # the timer at exactly 300 + 1000 ms re-arms
    b.sample(1400 * MS, "temp", 91)  # fires again
    assert b.fired == [(0, "hot"), (1400 * MS, "hot")]


def test_a_rearm_hold_is_reset_when_the_rearm_is_not_true() -> None:
    b = One([rule("hot", "temp > 90", rearm="temp < 80 for 1s")], ["temp"])
    b.sample(0, "temp", 95)
    b.sample(100 * MS, "temp", 70)
    b.sample(600 * MS, "temp", 85)  # the rearm breaks: its timer is cancelled
    b.sample(1200 * MS, "temp", 95)
    b.run_until(5 * S)
    assert b.fired == [(0, "hot")]


def test_rearm_is_checked_before_the_condition_at_the_same_evaluation() -> None:
    # rearm and condition true at once: re-armed first, then fires at that same evaluation
    b = One([rule("r", "x > 1", rearm="y > 0")], ["x", "y"])
    b.sample(0, "x", 2)
    b.sample(1 * MS, "y", 1)
    assert b.fired == [(0, "r"), (1 * MS, "r")]


def test_cooldown_on_top_of_rearm_loses_the_suppressed_firing() -> None:
    b = One([rule("r", "x > 1", rearm="x < 0", cooldown_ns=S)], ["x"])
    b.sample(0, "x", 2)  # fires
    b.sample(100 * MS, "x", -1)  # re-arms
    b.sample(200 * MS, "x", 2)  # in cooldown: suppressed and disarmed as if it had fired
    b.sample(1500 * MS, "x", 3)  # cooldown over, but disarmed: nothing
    b.sample(1600 * MS, "x", -1)
    b.sample(1700 * MS, "x", 2)
    assert b.fired == [(0, "r"), (1700 * MS, "r")]


def test_rearm_with_absent_is_evaluated_at_its_deadline() -> None:
    b = One([rule("r", "x > 1", rearm="absent(x, 1s)")], ["x"])
    b.sample(0, "x", 2)
    b.run_until(S)  # rearm true at exactly 1 s: armed; x is still 2 > 1, so it fires again
    assert b.fired == [(0, "r"), (S, "r")]


# -- 3. board rules -----------------------------------------------------------------------------


class Board:
    """Board rules over agents that appear at their first sample; origin (activation) 0."""

    def __init__(self, rules: list[Rule], series: dict[str, list[str]], origin: int = 0):
        self.table = CompiledTable(RuleSet(tuple(rules)))
        self.series = series
        self.timers = Timers()
        self.evals: dict[str, Any] = {}
        self.board, pending = bind_board(self.table, (), origin_ns=origin)
        self.board.make_current()
        self.timers.schedule_absent(pending)
        self.fired: list[tuple[int, str, object]] = []

    def _record(self, fs: Any) -> None:
        self.fired += [(f.t_eval_ns, f.rule.rule_id, f.agent) for f in fs or ()]

    def run_until(self, t: int) -> None:
        self._record(self.timers.run_due(t))

    def register(self, agent: str, t: int) -> None:
        decl = [(i, n, ()) for i, n in enumerate(self.series[agent])]
        ev, pending = self.table.bind(agent, agent, decl, first_seen_ns=t)
        ev.make_current()
        self.timers.schedule_absent(pending)
        self.evals[agent] = ev
        self.board, pending = bind_board(
            self.table, self.evals.items(), origin_ns=t, previous=self.board
        )
        self.board.make_current()
        self.timers.schedule_absent(pending)

    def sample(self, t: int, agent: str, name: str, v: float, batch: bool = False) -> None:
        self.run_until(t)
        if agent not in self.evals:
            self.register(agent, t)
        mid = self.series[agent].index(name)
        if batch:
            fired, early, _ = self.evals[agent].on_batch([(t, v, mid, 0)], self.timers)
            self._record(early)
            self._record(fired)
        else:
            self._record(self.evals[agent].on_sample(mid, v, t, self.timers))


def board_rule(rid: str, text: str, **kw: Any) -> Rule:
    return rule(rid, text, board=True, target=kw.pop("target", ("cell-*",)), **kw)


def test_board_rule_combines_two_agents_and_names_the_board() -> None:
    r = board_rule("b", 'temp{agent="motor-1"} > 90 and fan_ok{agent="fan-ctl"} < 1')
    b = Board([r], {"motor-1": ["temp"], "fan-ctl": ["fan_ok"]})
    b.sample(1 * MS, "motor-1", "temp", 95)  # fan unknown: false and unknown... unknown
    b.sample(2 * MS, "fan-ctl", "fan_ok", 0)
    assert b.fired == [(2 * MS, "b", BOARD_AGENT)]


def test_board_absent_for_a_device_that_never_came_up_counts_from_activation() -> None:
    r = board_rule("silent", 'absent(cycle{agent="plc-3"}, 2s)')
    b = Board([r], {"plc-1": ["cycle"], "plc-3": ["cycle"]}, origin=500 * MS)
    b.sample(1 * S, "plc-1", "cycle", 1)
    b.run_until(10 * S)
    assert b.fired == [(2500 * MS, "silent", BOARD_AGENT)]


def test_board_absent_before_a_first_sample_counts_from_activation_not_registration() -> None:
    r = board_rule("silent", 'absent(cycle{agent="plc-3"}, 2s)')
    b = Board([r], {"plc-3": ["cycle", "other"]})
    b.sample(1500 * MS, "plc-3", "other", 1)  # registered at 1.5 s, no cycle sample yet
    b.run_until(10 * S)
    assert b.fired == [(2 * S, "silent", BOARD_AGENT)]


def test_board_absent_after_the_last_sample_catches_a_silent_plc() -> None:
    r = board_rule("silent", 'absent(cycle{agent="plc-3"}, 2s)')
    b = Board([r], {"plc-3": ["cycle"]})
    b.sample(1 * S, "plc-3", "cycle", 1)
    b.sample(2 * S, "plc-3", "cycle", 1)
    b.run_until(10 * S)
    assert b.fired == [(4 * S, "silent", BOARD_AGENT)]


def test_board_state_survives_an_agent_registering_again() -> None:
    r = board_rule("silent", 'absent(cycle{agent="plc-3"}, 1s)')
    b = Board([r], {"plc-3": ["cycle"]})
    b.sample(0, "plc-3", "cycle", 1)
    b.run_until(2 * S)  # fired at 1 s, disarmed
    b.register("plc-3", 2 * S)  # new series objects; still no sample: absent stays true
    b.run_until(5 * S)
    b.sample(6 * S, "plc-3", "cycle", 1)
    b.run_until(10 * S)
    assert [t for t, _, _ in b.fired] == [1 * S, 7 * S]


def test_board_and_rearm_state_carry_over_a_swap_for_unchanged_rules() -> None:
    r = board_rule("hot", 'temp{agent="m1"} > 90', rearm='temp{agent="m1"} < 80 for 1s')
    b = Board([r], {"m1": ["temp"]})
    b.sample(0, "m1", "temp", 95)
    b.sample(100 * MS, "m1", "temp", 70)  # rearm hold started: timer at 1.1 s
    new = CompiledTable(RuleSet((r, rule("other", "x > 1"))), previous=b.table)
    ev, pending = new.bind("m1", "m1", [(0, "temp", ())], first_seen_ns=0, previous=b.evals["m1"])
    ev.make_current()
    b.timers.schedule_absent(pending)
    b.evals["m1"], b.table = ev, new
    b.board, pending = bind_board(new, b.evals.items(), origin_ns=200 * MS, previous=b.board)
    b.board.make_current()
    b.timers.schedule_absent(pending)
    b.run_until(1100 * MS)  # the rearm's timer from before the swap still re-arms
    b.sample(1200 * MS, "m1", "temp", 99)
    assert [t for t, _, _ in b.fired] == [0, 1200 * MS]


steps_st = st.lists(
    st.tuples(st.integers(1, 8), st.sampled_from("ab"), st.sampled_from([0.0, 1.0, 2.0, 3.0])),
    max_size=25,
)


def _timeline(steps: list[tuple[int, str, float]]) -> tuple[list[tuple[int, str, float]], int]:
    out, t = [], 0
    for dt, m, v in steps:
        t += dt * MS
        out.append((t, m, v))
    return out, t + 40 * MS


@settings(max_examples=250, deadline=None)
@given(
    conditions(),
    st.one_of(st.none(), conditions()),
    st.integers(0, 2).map(lambda k: k * 5 * MS),
    st.sampled_from([("a", "b"), ("a",), ("b",), ()]),
    steps_st,
    st.sampled_from(["fast", "general", "batch"]),
)
def test_engine_matches_reference_with_missing_series_and_rearm(
    cond: Condition,
    rearm: Condition | None,
    cooldown: int,
    declared: tuple[str, ...],
    steps: list[tuple[int, str, float]],
    path: str,
) -> None:
    samples, t_end = _timeline(steps)
    samples = [s for s in samples if s[1] in declared]
    r = Rule("r", cond, Action.ALERT, 5, 10.0, cooldown_ns=cooldown, rearm=rearm)
    b = One([r], list(declared))
    if path == "general":
        for cr in b.table.rules:
            cr.threshold = None
        b.ev.link()
    for ts, m, v in samples:
        if path == "batch":
            b.run_until(ts)
            fired, early, _ = b.ev.on_batch([(ts, v, b.ids[m], 0)], b.timers)
            b.fired += [(f.t_eval_ns, f.rule.rule_id) for f in [*early, *(fired or ())]]
        else:
            b.sample(ts, m, v)
    b.run_until(t_end)
    want = reference(cond, rearm, cooldown, samples, set(declared), t_end)
    assert [t for t, _ in b.fired] == want


def _on_board(c: Condition) -> Condition:
    agents = {"a": "m1", "b": "m2"}
    sels = tuple(
        Selector(s.metric, tuple(sorted((*s.labels, ("agent", agents[s.metric])))))
        for s in c.selectors
    )
    return dataclasses.replace(c, selectors=sels)


@settings(max_examples=200, deadline=None)
@given(
    conditions(),
    st.one_of(st.none(), conditions()),
    st.integers(0, 2).map(lambda k: k * 5 * MS),
    steps_st,
    st.sampled_from(["fast", "general", "batch"]),
)
def test_board_engine_matches_reference(
    cond: Condition,
    rearm: Condition | None,
    cooldown: int,
    steps: list[tuple[int, str, float]],
    path: str,
) -> None:
    """Series a of agent m1 and b of agent m2, which appear at their first sample; the
    table is active from 0, so absent() before a first sample counts from 0 as well."""
    samples, t_end = _timeline(steps)
    r = Rule(
        "r",
        _on_board(cond),
        Action.ALERT,
        5,
        10.0,
        cooldown_ns=cooldown,
        rearm=_on_board(rearm) if rearm is not None else None,
        board=True,
        target=("x",),
    )
    b = Board([r], {"m1": ["a"], "m2": ["b"]})
    if path == "general":
        for cr in b.table.rules:
            cr.threshold = None
    for ts, m, v in samples:
        b.sample(ts, {"a": "m1", "b": "m2"}[m], m, v, batch=path == "batch")
    b.run_until(t_end)
    assert [t for t, _, _ in b.fired] == reference(
        cond, rearm, cooldown, samples, {"a", "b"}, t_end
    )


# -- 2. targets, in replay ----------------------------------------------------------------------

TARGETS = """\
- rule_id: plc_silent
  board: true
  rule_content: absent(cycle{agent="plc-3"}, 2s)
  target: ["cell-*", "vcu"]
  action: safe_state
  priority: 250
  sla_threshold: 5
- rule_id: perception_lost
  rule_content: absent(objects, 500ms)
  agents: ["perception-*"]
  target: vcu
  action: safe_state
  priority: 250
  sla_threshold: 5
- rule_id: to_nobody
  rule_content: cpu > 0.9
  target: "nobody-*"
  action: alert
  priority: 1
  sla_threshold: 5
"""

TRACE = """\
t_ms,agent_id,metric,value
0,perception-1,objects,3
100,vcu,speed,10
200,perception-1,objects,4
300,cell-b,cpu,0.95
2500,cell-a,cpu,0.2
"""


def test_replay_targets_sources_and_order() -> None:
    counts: dict[str, int] = {}
    out = replay(parse_rule_text(TARGETS), parse_trace(TRACE), end_ms=3000, counts=counts)
    rows = [(o["t_ms"], o["rule_id"], o["agent_id"], o["target"]) for o in out]
    assert rows == [
        (300, "to_nobody", "cell-b", None),  # no known agent matches: printed once, null
        (700, "perception_lost", "perception-1", "vcu"),
        # known agents up to 2 s: vcu and cell-b (cell-a appears at 2.5 s), in id order
        (2000, "plc_silent", BOARD_AGENT, "cell-b"),
        (2000, "plc_silent", BOARD_AGENT, "vcu"),
    ]
    assert counts == {"targets_cut": 0, "no_target": 1}


def test_replay_output_is_in_the_documented_order() -> None:
    rs = parse_rule_text(TARGETS)
    trace = TRACE + "2000,cell-c,cpu,0.95\n2000,cell-a,cpu,0.95\n"
    out = replay(rs, parse_trace(trace), end_ms=3000)
    file_order = {r.rule_id: (-r.priority, i) for i, r in enumerate(rs.rules)}

    def key(o: dict[str, Any]) -> tuple[Any, ...]:
        t = o["target"]
        return (o["t_ms"], *file_order[o["rule_id"]], o["agent_id"], t is not None, t or "")

    assert out == sorted(out, key=key)
    at_2000 = [(o["rule_id"], o["agent_id"], o["target"]) for o in out if o["t_ms"] == 2000]
    assert at_2000 == [
        ("plc_silent", BOARD_AGENT, "cell-a"),  # cell-a and cell-c are known from 2000 on
        ("plc_silent", BOARD_AGENT, "cell-b"),
        ("plc_silent", BOARD_AGENT, "cell-c"),
        ("plc_silent", BOARD_AGENT, "vcu"),
        ("to_nobody", "cell-a", None),
        ("to_nobody", "cell-c", None),
    ]


def test_a_target_matching_thousands_of_agents_is_cut_at_the_cap_and_counted() -> None:
    ids = [f"cell-{i:05d}" for i in range(3000)]
    chosen, cut = resolve_targets(("cell-*",), reversed(ids))
    assert chosen == ids[:MAX_TARGETS] and cut == 3000 - MAX_TARGETS
    trace = "t_ms,agent_id,metric,value\n" + "".join(f"0,{a},x,1\n" for a in ids)
    trace += "10,cell-00000,cpu,0.95\n"
    counts: dict[str, int] = {}
    out = replay(parse_rule_text(TARGETS), parse_trace(trace), end_ms=10, counts=counts)
    sent = [o for o in out if o["rule_id"] == "to_nobody"]
    assert sent[0]["target"] is None  # nobody-* matches none of them
    big = TARGETS.replace('target: "nobody-*"', 'target: "cell-*"')
    out = replay(parse_rule_text(big), parse_trace(trace), end_ms=10, counts=counts)
    sent = [o["target"] for o in out if o["rule_id"] == "to_nobody"]
    assert sent == ids[:MAX_TARGETS]
    assert counts["targets_cut"] == 3000 - MAX_TARGETS


# -- bad input ------------------------------------------------------------------------------------


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(RuleFileError) as info:
        parse_rule_text(text, "r.yaml")
    return [(p.line, p.col, p.message) for p in info.value.problems]


BASE = "- rule_id: r\n  action: alert\n  priority: 1\n  sla_threshold: 5\n"


@pytest.mark.parametrize(
    ("extra", "where", "words"),
    [
        ("  board: true\n  target: x\n  rule_content: t > 1\n", (7, 17), "names its agent"),
        (
            '  board: true\n  target: x\n  rule_content: t{agent="m*"} > 1\n',
            (7, 19),
            "not a pattern",
        ),
        ('  board: true\n  rule_content: t{agent="m"} > 1\n', (5, 10), "needs a target"),
        (
            '  board: true\n  target: x\n  agents: [a]\n  rule_content: t{agent="m"} > 1\n',
            (7, 11),
            "no agents: list",
        ),
        ("  target: 3\n  rule_content: t > 1\n", (5, 11), "target must be"),
        ("  target: [a, {b: 1}]\n  rule_content: t > 1\n", (5, 11), "target must be"),
        ("  board: yes please\n  target: x\n  rule_content: t > 1\n", (5, 10), "true or false"),
        ('  rule_content: t{agent="m"} > 1\n', (5, 19), "reserved"),
        ("  rule_content: t > 1\n  rearm: t <\n", (6, 13), "after '<'"),
        ("  rule_content: t > 1\n  rearm: 't < 1 for'\n", (6, 20), "after 'for'"),
        ("  rule_content: t > inf\n", (5, 21), "not a finite number"),
        ("  rule_content: t < -nan or u > 1\n", (5, 21), "unexpected character"),
        ("  rule_content: t > 1\n  rearm: x != NaN\n", (6, 15), "not a finite number"),
        ("  rule_content: t > 1\n  params: {k: .inf}\n", (6, 11), "must be finite"),
    ],
)
def test_bad_rules_of_issue_10_are_reported_at_their_place(
    extra: str, where: tuple[int, int], words: str
) -> None:
    got = problems(BASE + extra)
    assert any((line, col) == where and words in msg for line, col, msg in got), got


def test_every_mistake_of_a_board_rule_at_once() -> None:
    text = BASE + '  board: true\n  agents: [a]\n  rule_content: t > 1 and u{agent="x?"} < 2\n'
    text += "  rearm: v > 1\n"
    msgs = [m for _, _, m in problems(text)]
    assert len(msgs) == 5, msgs  # t and v lack an agent, x? is a pattern, agents:, no target


def test_non_finite_constants_never_reach_text_generation() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        Condition(
            (Selector("x"),),
            (Node(NodeOp.LATEST), Node(NodeOp.CONST, value=float("inf")), Node(NodeOp.GT)),
        )


# -- the table: schema 3 round trip, schema 2 still runs, what edged refuses ----------------------


def test_schema_3_round_trips_targets_board_and_rearm() -> None:
    rs = parse_rule_text(TARGETS + "- rule_id: h\n  rule_content: t > 9\n  rearm: t < 8 for 1s\n"
                         "  action: alert\n  priority: 1\n  sla_threshold: 5\n")  # fmt: skip
    back, info = decode_table_with_info(encode_rule_table(rs))
    assert info.schema_version == 3
    assert back.rules == rs.rules and back.content_hash == rs.content_hash


def test_a_schema_2_table_from_the_previous_compiler_still_runs() -> None:
    rs, info = decode_table_with_info((DATA / "table_schema2.bin").read_bytes())
    assert info.schema_version == 2 and info.version == 7
    assert [r.rule_id for r in rs.rules] == ["hot", "silent"]
    assert all(not r.target and not r.board and r.rearm is None for r in rs.rules)
    table = CompiledTable(rs)
    ev, pending = table.bind("plc-1", "plc-1", [(0, "temp", (("zone", "a"),))], first_seen_ns=0)
    assert ev.rules_bound() == 2  # silent binds with no heartbeat series (issue 10's binding)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"board": True}, "without a target"),
        ({"board": True, "target": ("x",), "agents": ("a",)}, "agents globs"),
        ({"target": ("",)}, "empty target"),
    ],
)
def test_edged_refuses_tables_it_cannot_run(change: dict[str, Any], words: str) -> None:
    from edge.errors import RuleTableError

    base = rule("r", 'x{agent="m"} > 1', board=True) if change.get("board") else rule("r", "x > 1")
    with pytest.raises(RuleTableError, match=words):
        encode_rule_table(RuleSet((dataclasses.replace(base, **change),)))


def test_a_schema_3_table_with_the_agent_label_outside_a_board_rule_is_refused() -> None:
    from edge.errors import RuleTableError

    bad = Rule("r", compile_condition('x{agent="m"} > 1', board=True), Action.ALERT, 1, 5.0)
    with pytest.raises(RuleTableError, match="reserved label"):
        encode_rule_table(RuleSet((bad,)))


def test_decode_of_encode_is_identity_for_every_new_field() -> None:
    r = board_rule("b", 'x{agent="m"} > 1', rearm='x{agent="m"} < 0 for 2s')
    r = dataclasses.replace(r, rearm_content='x{agent="m"} < 0 for 2s')
    rs = decode_rule_table(encode_rule_table(RuleSet((r,))))
    assert rs.rules == (r,)


def test_board_remembers_an_agent_its_caller_no_longer_lists() -> None:
    """edged forgets a gone agent; the board keeps its series, so a rebind (another agent
    registers) does not turn the silent PLC's fired instance into a fresh armed one."""
    r = board_rule("silent", 'absent(cycle{agent="plc-3"}, 1s)')
    b = Board([r], {"plc-3": ["cycle"], "other": ["x"]})
    b.sample(0, "plc-3", "cycle", 1)
    b.run_until(2 * S)  # fired at 1 s
    del b.evals["plc-3"]  # the registry forgot it
    b.sample(3 * S, "other", "x", 1)  # a rebind without plc-3 in the list
    b.run_until(10 * S)
    assert [t for t, _, _ in b.fired] == [1 * S]
    assert "plc-3" in b.board.seen and "other" not in b.board.seen
