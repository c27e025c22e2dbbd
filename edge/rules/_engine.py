"""Evaluation: a compiled table bound to agents' series, indexed by metric id.

A rule costs nothing unless a series it references receives a sample (or its held-for
timer comes due). For every (agent, series, rule) there is one ``Binding`` holding that
rule's state for that series; an agent's ``bindings[metric_id]`` lists them in priority order.

Firing is edge-triggered: a rule fires when its condition goes from not-true to true and
re-arms once it is not-true again; ``cooldown`` also suppresses firings within that time after
the last one (a suppressed edge is consumed). ``C for D`` is true once C has held at every
evaluation for D; a timer evaluates it at exactly t0 + D so it fires without a new sample.
"""

from __future__ import annotations

import fnmatch
import heapq
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from ..wire import Param
from ._ir import NodeOp
from ._model import Rule, RuleSet

_CMP: dict[NodeOp, Callable[[float, float], bool]] = {
    NodeOp.GT: operator.gt,
    NodeOp.GE: operator.ge,
    NodeOp.LT: operator.lt,
    NodeOp.LE: operator.le,
    NodeOp.EQ: operator.eq,
    NodeOp.NE: operator.ne,
}


class CompiledRule:
    """A rule ready to evaluate: the comparison resolved to a function, units in ns."""

    __slots__ = (
        "rule",
        "index",
        "rule_id",
        "priority",
        "cmp",
        "threshold",
        "hold_ns",
        "cooldown_ns",
        "sla_ns",
        "params",
        "key",
        "order",
    )

    def __init__(self, rule: Rule, index: int):
        self.rule = rule
        self.index = index
        self.rule_id = rule.rule_id
        self.priority = rule.priority
        c = rule.condition  # (interim) the threshold form: LATEST, CONST, comparison
        self.cmp = _CMP[c.nodes[2].op]
        self.threshold = c.nodes[1].value
        self.hold_ns = c.hold_ns
        self.cooldown_ns = rule.cooldown_ns
        self.sla_ns = int(rule.sla_ms * 1_000_000)
        self.params: tuple[Param, ...] = rule.params
        # Identity for carrying state across a hot swap: same id and same behaviour.
        self.key = (rule.rule_id, repr(sorted(rule.normalised().items())))
        # Sort key: higher priority first, then file order.
        self.order = (-rule.priority, index)

    def applies_to(self, agent_id: str, labels: tuple[tuple[str, str], ...]) -> bool:
        if self.rule.agents and not any(fnmatch.fnmatchcase(agent_id, g) for g in self.rule.agents):
            return False
        want = self.rule.condition.selectors[0].labels
        return not want or set(want) <= set(labels)


class Firing(NamedTuple):
    rule: CompiledRule
    agent: object
    """The owner object passed to ``bind`` (edged's agent record)."""
    metric_id: int
    value: float
    t_sample_ns: int
    """The trigger time: the sample's t_ns, or the held-for deadline for a timer firing."""
    t_eval_ns: int


class Binding:
    """One rule's state for one series of one agent."""

    __slots__ = (
        "rule",
        "agent",
        "metric_id",
        "since_ns",
        "armed",
        "last_fire_ns",
        "last_value",
        "last_t_ns",
        "timer_token",
    )

    def __init__(self, rule: CompiledRule, agent: object, metric_id: int):
        self.rule = rule
        self.agent = agent
        self.metric_id = metric_id
        self.since_ns: int | None = None
        self.armed = True
        self.last_fire_ns: int | None = None
        self.last_value = 0.0
        self.last_t_ns = 0
        self.timer_token = 0

    def carry_from(self, old: Binding) -> None:
        self.since_ns = old.since_ns
        self.armed = old.armed
        self.last_fire_ns = old.last_fire_ns
        self.last_value = old.last_value
        self.last_t_ns = old.last_t_ns

    def on_sample(self, value: float, t_ns: int, timers: Timers) -> Firing | None:
        rule = self.rule
        self.last_value = value
        self.last_t_ns = t_ns
        if not rule.cmp(value, rule.threshold):
            self.since_ns = None
            self.armed = True
            self.timer_token += 1  # cancels a pending held-for timer
            return None
        if rule.hold_ns:
            if self.since_ns is None:
                self.since_ns = t_ns
                self.timer_token += 1
                timers.schedule(t_ns + rule.hold_ns, self, self.timer_token)
                return None
            if t_ns - self.since_ns < rule.hold_ns:
                return None
        return self._edge(t_ns)

    def on_timer(self, now_ns: int, token: int) -> Firing | None:
        if token != self.timer_token or self.since_ns is None:
            return None
        return self._edge(now_ns)

    def _edge(self, t_ns: int) -> Firing | None:
        if not self.armed:
            return None
        self.armed = False
        last = self.last_fire_ns
        if last is not None and t_ns - last < self.rule.cooldown_ns:
            return None
        self.last_fire_ns = t_ns
        return Firing(self.rule, self.agent, self.metric_id, self.last_value, t_ns, t_ns)


class Timers:
    """Deadlines for held-for rules: a heap with lazy cancellation by token."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Binding, int]] = []
        self._seq = 0

    def schedule(self, due_ns: int, binding: Binding, token: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ns, self._seq, binding, token))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, now_ns: int) -> list[Firing]:
        fired: list[Firing] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            due, _, binding, token = heapq.heappop(heap)
            f = binding.on_timer(due, token)
            if f is not None:
                fired.append(f)
        return fired

    def __len__(self) -> int:
        return len(self._heap)


class CompiledTable:
    """A RuleSet compiled for evaluation and indexed by metric name."""

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self.version = ruleset.version
        self.rules = tuple(CompiledRule(r, i) for i, r in enumerate(ruleset.rules))
        by_metric: dict[str, list[CompiledRule]] = {}
        for cr in self.rules:
            by_metric.setdefault(cr.rule.condition.selectors[0].metric, []).append(cr)
        self.by_metric = {m: sorted(rs, key=lambda r: r.order) for m, rs in by_metric.items()}
        self.by_id = {cr.rule_id: cr for cr in self.rules}

    def bind(
        self,
        agent: object,
        agent_id: str,
        series: Sequence[tuple[int, str, tuple[tuple[str, str], ...]]],
        previous: dict[int, tuple[Binding, ...]] | None = None,
        timers: Timers | None = None,
    ) -> dict[int, tuple[Binding, ...]]:
        """Bindings for one agent's series ``(metric_id, name, labels)``.

        ``previous`` (the agent's bindings under the old table) carries state over for
        rules whose id and normalised content are unchanged; a held-for period in progress
        keeps its deadline (rescheduled on ``timers``). The caller cancels the old bindings.
        """
        out: dict[int, tuple[Binding, ...]] = {}
        for metric_id, name, labels in series:
            rules = self.by_metric.get(name)
            if not rules:
                continue
            old = {b.rule.key: b for b in (previous or {}).get(metric_id, ())}
            bs = []
            for cr in rules:
                if cr.applies_to(agent_id, labels):
                    b = Binding(cr, agent, metric_id)
                    if cr.key in old:
                        b.carry_from(old[cr.key])
                        if b.since_ns is not None and cr.hold_ns and timers is not None:
                            b.timer_token = 1
                            timers.schedule(b.since_ns + cr.hold_ns, b, 1)
                    bs.append(b)
            if bs:
                out[metric_id] = tuple(bs)
        return out


def evaluate(bindings: Iterable[Binding], value: float, t_ns: int, timers: Timers) -> list[Firing]:
    """Evaluate one sample against its bindings (a convenience for tests and replay)."""
    out = []
    for b in bindings:
        f = b.on_sample(value, t_ns, timers)
        if f is not None:
            out.append(f)
    return out
