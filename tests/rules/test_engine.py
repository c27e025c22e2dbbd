"""Evaluation semantics of the threshold and held-for forms, on virtual time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rules import CompiledTable, Timers, parse_rule_text

S = 1_000_000_000


def table(*rules: str) -> CompiledTable:
    body = "".join(
        f"- {{rule_id: r{i}, rule_content: '{c}', action: {a}, priority: {p}, sla_threshold: 10{extra}}}\n"
        for i, (c, a, p, extra) in enumerate(
            r.split("|") + [""] * (4 - len(r.split("|"))) for r in rules
        )
    )
    return CompiledTable(parse_rule_text(body))


def bind(t: CompiledTable, agent_id: str = "a1", series=((0, "cpu", ()),)):
    return t.bind(object(), agent_id, list(series))


def feed(bs, timers, samples):
    """samples: (t_ns, value); runs due timers before each sample. Returns firing times."""
    fired = []
    for t, v in samples:
        fired += [(f.t_eval_ns, f.rule.rule_id) for f in timers.run_due(t)]
        for b in bs:
            f = b.on_sample(v, t, timers)
            if f:
                fired.append((f.t_eval_ns, f.rule.rule_id))
    return fired


def test_threshold_is_edge_triggered_and_rearms() -> None:
    t = table("cpu > 0.9|restart_agent|8")
    (bs,) = bind(t).values()
    timers = Timers()
    got = feed(bs, timers, [(1, 0.95), (2, 0.97), (3, 0.5), (4, 0.99), (5, 0.99)])
    assert got == [(1, "r0"), (4, "r0")]


def test_held_for_fires_by_timer_at_exactly_t0_plus_d() -> None:
    t = table("cpu > 0.9 for 10s|restart_agent|8")
    (bs,) = bind(t).values()
    timers = Timers()
    assert feed(bs, timers, [(1 * S, 0.95), (3 * S, 0.96)]) == []
    assert timers.next_due() == 11 * S
    fired = timers.run_due(11 * S)
    assert [(f.t_eval_ns, f.t_sample_ns) for f in fired] == [(11 * S, 11 * S)]
    # still true: no second firing until it has been false
    assert feed(bs, timers, [(12 * S, 0.99)]) == []


def test_held_for_is_reset_by_a_false_sample() -> None:
    t = table("cpu > 0.9 for 10s|restart_agent|8")
    (bs,) = bind(t).values()
    timers = Timers()
    feed(bs, timers, [(0, 0.95), (5 * S, 0.1), (6 * S, 0.95)])
    assert timers.run_due(10 * S) == []  # the first period was cancelled
    assert [f.t_eval_ns for f in timers.run_due(16 * S)] == [16 * S]


def test_cooldown_suppresses_refiring() -> None:
    t = table("cpu > 0.9|throttle|5|, cooldown: 5s")
    (bs,) = bind(t).values()
    timers = Timers()
    got = feed(bs, timers, [(0, 1.0), (1 * S, 0.0), (2 * S, 1.0), (3 * S, 0.0), (6 * S, 1.0)])
    assert got == [(0, "r0"), (6 * S, "r0")]


def test_bindings_are_in_priority_then_file_order() -> None:
    t = table("cpu > 0.5|alert|1", "cpu > 0.5|throttle|9", "cpu > 0.5|stop_agent|9")
    (bs,) = bind(t).values()
    assert [b.rule.rule_id for b in bs] == ["r1", "r2", "r0"]


def test_label_selector_and_agent_glob() -> None:
    t = table('temp{zone="a"} > 80|throttle|5|, agents: ["plc-*"]')
    series = [(0, "temp", (("zone", "a"),)), (1, "temp", (("zone", "b"),)), (2, "cpu", ())]
    assert list(bind(t, "plc-3", series)) == [0]
    assert bind(t, "perception-1", series) == {}


def test_state_carries_over_a_swap_only_for_unchanged_rules() -> None:
    t1 = table("cpu > 0.9 for 10s|restart_agent|8")
    timers = Timers()
    old = bind(t1)
    feed(old[0], timers, [(0, 0.95)])
    same = table("cpu > 0.9 for 10s|restart_agent|8")
    changed = table("cpu > 0.8 for 10s|restart_agent|8")
    new_same = same.bind(object(), "a1", [(0, "cpu", ())], previous=old, timers=timers)
    new_changed = changed.bind(object(), "a1", [(0, "cpu", ())], previous=old, timers=timers)
    for b in old[0]:
        b.timer_token += 1  # what the loop does to the replaced bindings
    fired = timers.run_due(10 * S)
    assert [f.rule for f in fired] == [new_same[0][0].rule]
    assert new_changed[0][0].since_ns is None


def reference_held_for(samples: list[tuple[int, float]], threshold: float, hold: int) -> list[int]:
    """Straightforward model: the condition is true at t when every evaluation since some t0
    with t - t0 >= hold had value > threshold; fire on not-true -> true, checking every sample
    time and every t0 + hold deadline."""
    evals = sorted({t for t, _ in samples})
    fired, since, armed, last = [], None, True, None
    points = []
    for t, v in samples:
        points.append((t, v))
    deadlines = []
    for t, v in points:
        # due deadlines strictly before this sample
        while deadlines and deadlines[0] <= t:
            d = deadlines.pop(0)
            if since is not None and d == since + hold and armed:
                fired.append(d)
                armed = False
        if v > threshold:
            if since is None:
                since = t
                deadlines = [since + hold]
                if hold == 0 and armed:
                    fired.append(t)
                    armed = False
            elif t - since >= hold and armed:
                fired.append(t)
                armed = False
        else:
            since, armed, deadlines = None, True, []
    del evals, last
    return fired


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 50), st.sampled_from([0.0, 1.0])), min_size=1, max_size=30),
    st.integers(0, 40),
)
def test_held_for_matches_reference(steps: list[tuple[int, float]], hold: int) -> None:
    samples, t = [], 0
    for dt, v in steps:
        t += dt
        samples.append((t, v))
    t_end = t  # timers due after the last sample are not run by either side
    rules = f"- {{rule_id: r, rule_content: 'cpu > 0.5 for {hold}ms', action: alert, priority: 1, sla_threshold: 1}}\n"
    ct = CompiledTable(parse_rule_text(rules))
    (bs,) = ct.bind(object(), "a", [(0, "cpu", ())]).values()
    timers = Timers()
    ms = 1_000_000
    got = [ft // ms for ft, _ in feed(bs, timers, [(s * ms, v) for s, v in samples])]
    want = reference_held_for(samples, 0.5, hold)
    assert got == [w for w in want if w <= t_end]
