"""The reference evaluator for the rule semantics (docs/rules.md): every value recomputed from
the whole history at each evaluation instant, no windows, buffers or indexes. The property
tests compare the engine (both paths) with it."""

from __future__ import annotations

from typing import Any

from edge.rules import Condition, NodeOp


def ref_value(cond: Condition, hist: dict[str, list[tuple[int, float]]], t: int) -> Any:
    """``cond`` at ``t`` from the whole history (series by metric name; absent() before any
    sample counts from 0: the agent's first message, or a board table's activation)."""
    stack: list[Any] = []
    for n in cond.nodes:
        h = hist.get(cond.selectors[n.sel].metric, []) if cond.selectors else []
        h = [(ts, v) for ts, v in h if ts <= t]
        if n.op is NodeOp.CONST:
            stack.append(n.value)
        elif n.op is NodeOp.LATEST:
            stack.append(h[-1][1] if h else None)
        elif n.op is NodeOp.ABSENT:
            stack.append(t - (h[-1][0] if h else 0) >= n.window_ns)
        elif n.op in (NodeOp.AVG, NodeOp.MIN, NodeOp.MAX, NodeOp.SUM, NodeOp.COUNT, NodeOp.RATE):
            w = [(ts, v) for ts, v in h if t - n.window_ns < ts]
            vs = [v for _, v in w]
            if n.op is NodeOp.RATE:
                ok = len(w) >= 2 and w[-1][0] != w[0][0]
                stack.append((w[-1][1] - w[0][1]) / ((w[-1][0] - w[0][0]) / 1e9) if ok else None)
            elif not vs:
                stack.append(None)
            else:
                stack.append(
                    {
                        NodeOp.AVG: lambda x: sum(x) / len(x),
                        NodeOp.MIN: min,
                        NodeOp.MAX: max,
                        NodeOp.SUM: sum,
                        NodeOp.COUNT: lambda x: float(len(x)),
                    }[n.op](vs)
                )
        elif n.op is NodeOp.NOT:
            x = stack.pop()
            stack.append(None if x is None else not x)
        elif n.op in (NodeOp.AND, NodeOp.OR):
            y, x = stack.pop(), stack.pop()
            if n.op is NodeOp.AND:
                stack.append(False if False in (x, y) else (None if None in (x, y) else True))
            else:
                stack.append(True if True in (x, y) else (None if None in (x, y) else False))
        else:
            y, x = stack.pop(), stack.pop()
            f = {
                NodeOp.GT: lambda a, b: a > b,
                NodeOp.GE: lambda a, b: a >= b,
                NodeOp.LT: lambda a, b: a < b,
                NodeOp.LE: lambda a, b: a <= b,
                NodeOp.EQ: lambda a, b: a == b,
                NodeOp.NE: lambda a, b: a != b,
            }[n.op]
            stack.append(None if x is None or y is None else f(x, y))
    return stack[0]


_SERIES_OPS = {NodeOp.LATEST, NodeOp.ABSENT} | {
    NodeOp.AVG,
    NodeOp.MIN,
    NodeOp.MAX,
    NodeOp.SUM,
    NodeOp.COUNT,
    NodeOp.RATE,
}


def reference(
    cond: Condition,
    rearm: Condition | None,
    cooldown: int,
    samples: list[tuple[int, str, float]],
    declared: set[str],
    t_end: int,
) -> list[int]:
    """The firing times of one instance, by the issue's wording, recomputing from history.

    Evaluated at each sample of a declared series the condition or the rearm references, and
    at its deadlines (held-for, rearm held-for, absent()); a series not declared has no
    samples. First a disarmed instance whose rearm holds is armed, then an armed instance
    whose condition holds fires and is disarmed; without rearm it re-arms when not true."""
    hist: dict[str, list[tuple[int, float]]] = {}
    conds = [cond] + ([rearm] if rearm is not None else [])
    referenced = {c.selectors[n.sel].metric for c in conds for n in c.nodes if n.op in _SERIES_OPS}
    absents = [
        (c.selectors[n.sel].metric, n.window_ns)
        for c in conds
        for n in c.nodes
        if n.op is NodeOp.ABSENT
    ]
    if not referenced & declared and not absents:
        return []  # never evaluated
    fired: list[int] = []
    since: int | None = None
    rsince: int | None = None
    armed, last_fire = True, None

    def deadlines() -> set[int]:
        ds = set()
        if since is not None and cond.hold_ns:
            ds.add(since + cond.hold_ns)
        if rearm is not None and rsince is not None and rearm.hold_ns:
            ds.add(rsince + rearm.hold_ns)
        for m, d in absents:
            h = hist.get(m)
            ds.add((h[-1][0] if h else 0) + d)
        return ds

    def evaluate(t: int) -> None:
        nonlocal since, rsince, armed, last_fire
        if rearm is not None and not armed:
            if ref_value(rearm, hist, t) is True:
                if not rearm.hold_ns or (rsince is not None and t - rsince >= rearm.hold_ns):
                    armed, rsince = True, None
                elif rsince is None:
                    rsince = t
            else:
                rsince = None
        if ref_value(cond, hist, t) is not True:
            since = None
            if rearm is None:
                armed = True
            return
        if cond.hold_ns:
            if since is None:
                since = t
                return
            if t - since < cond.hold_ns:
                return
        if not armed:
            return
        armed = False
        if last_fire is not None and t - last_fire < cooldown:
            return
        last_fire = t
        fired.append(t)

    now = -1
    for ts, m, v in [*samples, (t_end + 1, "", 0.0)]:
        while True:
            due = sorted(d for d in deadlines() if now < d <= min(ts, t_end))
            if not due:
                break
            now = due[0]
            evaluate(now)
        if not m:
            break
        hist.setdefault(m, []).append((ts, v))
        now = ts
        if m in referenced:
            evaluate(ts)
    return fired
