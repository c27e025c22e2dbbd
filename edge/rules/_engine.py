"""Evaluation of compiled rules, per agent, indexed by metric id.

Objects, from the table down::

    CompiledTable   the active rules; CompiledRule objects are shared with the previous table
                    when a rule's id and normalised content are unchanged
    AgentEval       one per agent: a SeriesState per declared series (metric id)
    SeriesState     latest sample + a window buffer (as long as the longest aggregate needs);
                    the Instances that reference the series
    Instance        one per (rule, combination of matching series, one per selector): held-for,
                    edge-trigger and cooldown state

A sample costs nothing for rules that do not reference its series. Timers (held-for deadlines,
absence deadlines) live in ``Timers``, a heap with lazy cancellation by token.

Semantics (docs/rules.md): an Instance is evaluated at each sample of any of its series and at
its timer deadlines; conditions are three-valued (None = unknown); firing is edge-triggered
(not-true -> true), re-arms when not-true, and ``cooldown`` suppresses firings within that time
after the last one (a suppressed edge is consumed).
"""

from __future__ import annotations

import collections
import fnmatch
import heapq
import itertools
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from .._digest import blake2b
from ..wire import Param
from ._ir import AGGREGATES, COMPARISONS, Condition, Node, NodeOp, Selector
from ._model import Rule, RuleSet
from ._thresholds import Ranked, ThresholdIndex, threshold_of

Labels = tuple[tuple[str, str], ...]
SeriesDecl = tuple[int, str, Labels]
Fn = Callable[[tuple["SeriesState", ...], int], Any]

NO_SERIES = 0xFFFFFFFF
"""The metric id of a series with no samples that stands for a selector matching none of an
agent's series (the same value as the wire's timer metric id, so a firing names no series)."""
_NONE: Any = ()
"""The absent() state of an instance whose rule has none."""
_NO_SEL = COMPARISONS | {NodeOp.CONST, NodeOp.AND, NodeOp.OR, NodeOp.NOT}
MAX_INSTANCES_PER_RULE = 64
"""Combinations of matching series one rule may have on one agent; more are not bound."""
MAX_WINDOW_SAMPLES = 100_000
"""Samples kept per series for window aggregates; beyond it the oldest are dropped (counted)."""
URGENT_NEVER = 256
"""An ``urgent_priority`` above every rule priority (0-255): nothing is urgent."""

_CMP = {
    NodeOp.GT: operator.gt,
    NodeOp.GE: operator.ge,
    NodeOp.LT: operator.lt,
    NodeOp.LE: operator.le,
    NodeOp.EQ: operator.eq,
    NodeOp.NE: operator.ne,
}


# -- compiling the IR into closures --------------------------------------------------------------


def _window(s: SeriesState, t: int, w: int) -> list[tuple[int, float]]:
    """Samples with t - w < ts <= t, oldest first."""
    lo = t - w
    out = []
    for ts, v in reversed(s.buf):
        if ts <= lo:
            break
        if ts <= t:
            out.append((ts, v))
    out.reverse()
    return out


def _agg(op: NodeOp, i: int, w: int) -> Fn:
    if op is NodeOp.RATE:

        def rate(ss: tuple[SeriesState, ...], t: int) -> float | None:
            xs = _window(ss[i], t, w)
            if len(xs) < 2 or xs[-1][0] == xs[0][0]:
                return None
            return (xs[-1][1] - xs[0][1]) / ((xs[-1][0] - xs[0][0]) / 1e9)

        return rate
    reduce: Callable[[list[float]], float] = _REDUCERS[op]

    def agg(ss: tuple[SeriesState, ...], t: int) -> float | None:
        xs = _window(ss[i], t, w)
        return reduce([v for _, v in xs]) if xs else None

    return agg


def _mean(vs: list[float]) -> float:
    return sum(vs) / len(vs)


def _count(vs: list[float]) -> float:
    return float(len(vs))


_REDUCERS: dict[NodeOp, Callable[[list[float]], float]] = {
    NodeOp.AVG: _mean,
    NodeOp.MIN: min,
    NodeOp.MAX: max,
    NodeOp.SUM: sum,
    NodeOp.COUNT: _count,
}


def _const(v: float) -> Fn:
    def const(ss: tuple[SeriesState, ...], t: int) -> float:
        return v

    return const


def _latest(i: int) -> Fn:
    def latest(ss: tuple[SeriesState, ...], t: int) -> float | None:
        return ss[i].last_v

    return latest


def _absent(i: int, w: int, origin: int | None) -> Fn:
    if origin is None:

        def absent(ss: tuple[SeriesState, ...], t: int) -> bool:
            return t - ss[i].seen_ns >= w

        return absent

    def board_absent(ss: tuple[SeriesState, ...], t: int) -> bool:
        s = ss[i]  # a board rule: before any sample, count from the table's activation
        return t - (s.seen_ns if s.last_v is not None else ss[origin].seen_ns) >= w

    return board_absent


def _compare(op: NodeOp, a: Fn, b: Fn, a_node: Any, b_node: Any) -> Fn:
    f = _CMP[op]
    # the seed's form, `series OP number`, is the hot one: no calls but the comparison
    if a_node.op is NodeOp.LATEST and b_node.op is NodeOp.CONST:
        i, c = a_node.sel, b_node.value

        def latest_vs_const(ss: tuple[SeriesState, ...], t: int) -> bool | None:
            v = ss[i].last_v
            return None if v is None else f(v, c)

        return latest_vs_const

    def cmp(ss: tuple[SeriesState, ...], t: int) -> bool | None:
        x = a(ss, t)
        if x is None:
            return None
        y = b(ss, t)
        return None if y is None else f(x, y)

    return cmp


def _and(a: Fn, b: Fn) -> Fn:
    def and_(ss: tuple[SeriesState, ...], t: int) -> bool | None:
        x = a(ss, t)
        if x is False:
            return False
        y = b(ss, t)
        if y is False:
            return False
        return None if x is None or y is None else True

    return and_


def _or(a: Fn, b: Fn) -> Fn:
    def or_(ss: tuple[SeriesState, ...], t: int) -> bool | None:
        x = a(ss, t)
        if x is True:
            return True
        y = b(ss, t)
        if y is True:
            return True
        return None if x is None or y is None else False

    return or_


def _not(a: Fn) -> Fn:
    def not_(ss: tuple[SeriesState, ...], t: int) -> bool | None:
        x = a(ss, t)
        return None if x is None else not x

    return not_


def compile_predicate(
    cond: Condition, sel_map: Sequence[int] | None = None, origin: int | None = None
) -> Fn:
    """The IR as one closure ``f(series_states, t_ns) -> True | False | None``.

    ``sel_map``: selector index in ``cond`` -> index in ``series_states`` (a ``rearm`` shares
    its instance's series with the condition); None: the same. ``origin``: a board rule's index
    of the series state whose ``seen_ns`` is the table's activation time, which absent() counts
    from before a series' first sample; None: an agent's rule (counts from its first message)."""
    stack: list[tuple[Fn, Any]] = []
    for n in cond.nodes:
        if sel_map is not None and n.op not in _NO_SEL:
            n = Node(n.op, n.value, sel_map[n.sel], n.window_ns)
        op = n.op
        fn: Fn
        if op is NodeOp.CONST:
            fn = _const(n.value)
        elif op is NodeOp.LATEST:
            fn = _latest(n.sel)
        elif op in AGGREGATES:
            fn = _agg(op, n.sel, n.window_ns)
        elif op is NodeOp.ABSENT:
            fn = _absent(n.sel, n.window_ns, origin)
        elif op in _CMP:
            (a, an), (b, bn) = stack[-2], stack[-1]
            del stack[-2:]
            fn = _compare(op, a, b, an, bn)
        elif op is NodeOp.NOT:
            fn = _not(stack.pop()[0])
        else:
            (a, _), (b, _) = stack[-2], stack[-1]
            del stack[-2:]
            fn = _and(a, b) if op is NodeOp.AND else _or(a, b)
        stack.append((fn, n))
    return stack[0][0]


# -- the table -------------------------------------------------------------------------------------


class CompiledRule:
    """A rule ready to evaluate. Shared between tables while its key is unchanged."""

    __slots__ = (
        "rule",
        "rule_id",
        "priority",
        "sla_ns",
        "cooldown_ns",
        "hold_ns",
        "params",
        "key",
        "fn",
        "selectors",
        "keep_ns",
        "absent",
        "threshold",
        "rearm_fn",
        "rearm_hold_ns",
    )

    def __init__(self, rule: Rule):
        c = rule.condition
        self.rule = rule
        self.rule_id = rule.rule_id
        self.priority = rule.priority
        self.sla_ns = int(rule.sla_ms * 1_000_000)
        self.cooldown_ns = rule.cooldown_ns
        self.hold_ns = c.hold_ns
        self.params: tuple[Param, ...] = rule.params
        # identity across a swap: same id and same behaviour (a digest: 16 bytes, not the text)
        behaviour = repr(sorted(rule.normalised().items())).encode()
        self.key = (rule.rule_id, blake2b(behaviour, digest_size=16).digest())
        # a rearm reads the same instance's series: its selectors join the condition's
        selectors: list[Selector] = list(c.selectors)
        rearm_map: list[int] = []
        for sel in rule.rearm.selectors if rule.rearm is not None else ():
            if sel not in selectors:
                selectors.append(sel)
            rearm_map.append(selectors.index(sel))
        self.selectors: tuple[Selector, ...] = (
            tuple(selectors) if len(selectors) > len(c.selectors) else c.selectors
        )
        """The condition's selectors, then the rearm's new ones: an instance's series."""
        origin = len(selectors) if rule.board else None
        self.fn = compile_predicate(c, origin=origin)
        self.rearm_fn: Fn | None = None
        """The ``rearm`` as a predicate; None: re-arm when the condition is not true."""
        self.rearm_hold_ns = 0
        if rule.rearm is not None:
            self.rearm_fn = compile_predicate(rule.rearm, rearm_map, origin)
            self.rearm_hold_ns = rule.rearm.hold_ns
        keep = [0] * len(selectors)
        absent: list[tuple[int, int]] = []
        parts = [(c, None)] + ([(rule.rearm, rearm_map)] if rule.rearm is not None else [])
        for cond, smap in parts:
            for n in cond.nodes:
                if n.op in AGGREGATES or n.op is NodeOp.ABSENT:
                    i = smap[n.sel] if smap is not None else n.sel
                    if n.op is NodeOp.ABSENT:
                        absent.append((i, n.window_ns))
                    else:
                        keep[i] = max(keep[i], n.window_ns)
        self.keep_ns = tuple(keep)
        """Per selector: how far back its series' samples are needed."""
        self.absent = tuple(absent)
        """``(selector, D)`` of every absent() in the condition: each needs a timer."""
        self.threshold = threshold_of(c) if rule.rearm is None else None
        """``(op, c)`` when the condition is ``latest op constant`` on one series: such rules
        go on their series' ``ThresholdIndex`` (the fast path; a board rule's instance too, on
        the slot of the agent it reads); None: the general path (a rule with a rearm is always
        there: its re-arming is not a function of the value's region)."""

    @property
    def board(self) -> bool:
        return self.rule.board

    @property
    def target(self) -> tuple[str, ...]:
        """Agent-id globs the instruction goes to; empty: the agent that fired."""
        return self.rule.target

    def applies_to(self, agent_id: str) -> bool:
        if self.board:
            return False  # bound once for the whole board (edge.rules._board)
        globs = self.rule.agents
        return not globs or any(fnmatch.fnmatchcase(agent_id, g) for g in globs)


class CompiledTable:
    """A RuleSet compiled for evaluation, indexed by metric name."""

    def __init__(self, ruleset: RuleSet, previous: CompiledTable | None = None):
        self.ruleset = ruleset
        self.version = ruleset.version
        reuse = {cr.key: cr for cr in previous.rules} if previous is not None else {}
        rules = []
        for r in ruleset.rules:
            cr = CompiledRule(r)
            rules.append(reuse.get(cr.key, cr))
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        self.index_of = {cr.rule_id: i for i, cr in enumerate(self.rules)}
        by_metric: dict[str, list[CompiledRule]] = {}
        for cr in self.rules:
            for m in {s.metric for s in cr.selectors}:
                by_metric.setdefault(m, []).append(cr)
        self.by_metric = by_metric
        self.by_id = {cr.rule_id: cr for cr in self.rules}
        self.board_rules = tuple(cr for cr in self.rules if cr.board)
        """The board rules, bound over every agent at once by ``edge.rules._board``."""

    def order(self, cr: CompiledRule) -> tuple[int, int]:
        """Sort key for simultaneous firings: priority (high first), then file order."""
        return (-cr.priority, self.index_of.get(cr.rule_id, 1 << 30))

    def bind(
        self,
        agent: object,
        agent_id: str,
        series: Sequence[SeriesDecl],
        *,
        first_seen_ns: int,
        previous: AgentEval | None = None,
        link: bool = True,
    ) -> tuple[AgentEval, list[tuple[int, Instance, int]]]:
        """Build an agent's evaluator (``link=False``: not linked yet, for a caller that binds
        board rules next, which links it with its board instances, and links the rest)."""
        return self._bind(agent, agent_id, series, first_seen_ns, previous, link)

    def _bind(
        self,
        agent: object,
        agent_id: str,
        series: Sequence[SeriesDecl],
        first_seen_ns: int,
        previous: AgentEval | None,
        link: bool,
    ) -> tuple[AgentEval, list[tuple[int, Instance, int]]]:
        """Build an agent's evaluator. Returns it and the absent() timers to schedule
        (``(due_ns, instance, absent index)``, see ``Timers.schedule_absent``). Safe to call
        off the loop thread: it reads live state but mutates none.

        With ``previous`` (the agent's evaluator under the old table), series state (latest
        samples, windows) is shared and instances of unchanged rules are the same objects, so
        their held-for, edge and cooldown state carries over, pending timers included."""
        ev = AgentEval(agent, agent_id, series, first_seen_ns, previous)
        old = previous.instances if previous is not None else {}
        timers: list[tuple[int, Instance, int]] = []
        none = (ev.none,)
        for cr in self.rules:
            if not cr.applies_to(agent_id):
                continue
            # a selector matching none of the agent's series is a series with no samples
            choices = [
                [ev.series[mid] for mid, name, labels in series if sel.matches(name, labels)]
                or none
                for sel in cr.selectors
            ]
            if not cr.absent and all(c is none for c in choices):
                continue  # never evaluated (no series, no timer): the instance would be dead
            for combo in itertools.islice(itertools.product(*choices), MAX_INSTANCES_PER_RULE):
                key = (cr.key, tuple(s.metric_id for s in combo))
                inst = old.get(key)
                if inst is None or inst.rule is not cr:
                    inst = Instance(cr, agent, combo, key, ev.holder)
                    for k, (sel, d) in enumerate(cr.absent):
                        due = combo[sel].seen_ns + d
                        inst.absent_due[k] = due
                        timers.append((due, inst, k))
                ev.instances[key] = inst
        if link:
            ev.link()
        return ev, timers


class SeriesState:
    """One series of one agent: latest sample and window buffer. Shared by the evaluators of
    successive tables, so windows carry over a swap; mutated only on the loop thread."""

    __slots__ = ("metric_id", "name", "labels", "last_v", "last_t", "seen_ns", "buf", "dropped")

    def __init__(self, metric_id: int, name: str, labels: Labels, first_seen_ns: int):
        self.metric_id = metric_id
        self.name = name
        self.labels = labels
        self.last_v: float | None = None
        self.last_t = 0
        self.seen_ns = first_seen_ns
        """The last sample's time, or the agent's first message before any sample (absent())."""
        self.buf: collections.deque[tuple[int, float]] = collections.deque()
        self.dropped = 0
        """Samples dropped from the window buffer at MAX_WINDOW_SAMPLES."""


class SeriesSlot:
    """A series under one table: the instances to evaluate on its samples, the absent()
    deadlines it moves, and how much window history it needs. Built off the loop."""

    __slots__ = ("state", "instances", "watchers", "keep_ns", "index", "general", "plain")

    def __init__(self, state: SeriesState):
        self.state = state
        self.instances: tuple[Instance, ...] = ()
        """Every instance on this series, in evaluation order (priority high first)."""
        self.watchers: tuple[tuple[Instance, int, int], ...] = ()
        """``(instance, absent index, D)`` for every absent() on this series."""
        self.keep_ns = 0
        self.index: ThresholdIndex | None = None
        """The threshold rules among ``instances`` (None when there are none)."""
        self.general: tuple[Ranked, ...] = ()
        """The other instances, with their rank in ``instances``."""
        self.plain: ThresholdIndex | None = None
        """``index`` when it is all there is (no general instances, no absent(), no window):
        a sample that leaves the value where it was then costs only the state update."""


class Instance:
    """One rule on one combination of an agent's series."""

    __slots__ = (
        "rule",
        "agent",
        "series",
        "key",
        "holder",
        "since_ns",
        "armed",
        "last_fire_ns",
        "hold_token",
        "absent_tokens",
        "absent_due",
        "rearm_since",
    )

    def __init__(
        self,
        rule: CompiledRule,
        agent: object,
        series: tuple[SeriesState, ...],
        key: tuple[Any, tuple[int, ...]],
        holder: list[AgentEval | None],
    ):
        self.rule = rule
        self.agent = agent
        self.series = series
        self.key = key
        self.holder = holder
        """The agent's current-evaluator cell: a timer of an instance that is no longer in the
        current evaluator (its rule left the table, or the agent left) is ignored."""
        self.since_ns: int | None = None
        self.armed = True
        self.last_fire_ns: int | None = None
        self.hold_token = 0
        n = len(rule.absent)
        # most rules have no absent(): share one empty sequence (56 bytes an instance each)
        self.absent_tokens: list[int] = [0] * n if n else _NONE
        self.absent_due: list[int | None] = [None] * n if n else _NONE
        """The pending deadline of each absent(); None when none is pending."""
        self.rearm_since: int | None = None
        """While disarmed: since when ``rearm`` has been true (its ``for``); None: it is not.
        Its timer is valid while ``rearm_since + hold`` is its deadline (no token needed)."""

    def absent_ref(self, sel: int) -> int:
        """The time absent() on selector ``sel`` counts from: the last sample, or before any
        the agent's first message (a board rule: the table's activation)."""
        s = self.series[sel]
        if self.rule.board and s.last_v is None:
            return self.series[-1].seen_ns
        return s.seen_ns

    def is_live(self) -> bool:
        ev = self.holder[0]
        return ev is not None and ev.instances.get(self.key) is self

    def evaluate(self, t: int, trigger: SeriesState, timers: Timers) -> Firing | None:
        rule = self.rule
        rearm = rule.rearm_fn
        if rearm is not None and not self.armed:
            # first a disarmed instance whose rearm holds becomes armed (docs/rules.md)
            if rearm(self.series, t) is True:
                hold = rule.rearm_hold_ns
                since = self.rearm_since
                if not hold or (since is not None and t - since >= hold):
                    self.armed = True
                    self.rearm_since = None
                elif since is None:
                    self.rearm_since = t
                    timers.schedule(t + hold, self, 0, _REARM)
            else:
                self.rearm_since = None  # cancels the pending rearm timer
        if rule.fn(self.series, t) is not True:
            if self.since_ns is not None:
                self.since_ns = None
                self.hold_token += 1  # cancels the pending held-for timer
            if rearm is None:
                self.armed = True
            return None
        hold = rule.hold_ns
        if hold:
            since = self.since_ns
            if since is None:
                self.since_ns = t
                self.hold_token += 1
                timers.schedule(t + hold, self, self.hold_token, _HOLD)
                return None
            if t - since < hold:
                return None
        if not self.armed:
            return None
        self.armed = False
        last = self.last_fire_ns
        if last is not None and t - last < rule.cooldown_ns:
            return None
        self.last_fire_ns = t
        return Firing(rule, self.agent, trigger.metric_id, trigger.last_v or 0.0, t, t)


class AgentEval:
    """An agent's series and rule instances under one table."""

    __slots__ = ("agent", "agent_id", "series", "slots", "instances", "holder", "none", "board")

    def __init__(
        self,
        agent: object,
        agent_id: str,
        series: Sequence[SeriesDecl],
        first_seen_ns: int,
        previous: AgentEval | None,
    ):
        self.agent = agent
        self.agent_id = agent_id
        self.series: list[SeriesState]
        self.holder: list[AgentEval | None]
        self.none: SeriesState
        if previous is not None:
            self.series = previous.series
            self.holder = previous.holder
            self.none = previous.none
        else:
            self.holder = [None]
            self.series = [
                SeriesState(mid, name, labels, first_seen_ns) for mid, name, labels in series
            ]
            self.none = SeriesState(NO_SERIES, "", (), first_seen_ns)
            """The series with no samples that an unmatched selector binds to."""
        self.slots = [SeriesSlot(st) for st in self.series]
        self.instances: dict[tuple[Any, tuple[int, ...]], Instance] = {}
        self.board: tuple[Instance, ...] = ()
        """Board-rule instances reading some of this agent's series (set by the board)."""

    def link(self) -> None:
        """Point each slot at its instances (priority order), absent() watchers and window
        depth. Touches only this evaluator's own objects."""
        per: dict[int, dict[int, Instance]] = collections.defaultdict(dict)
        watch: dict[int, list[tuple[Instance, int, int]]] = collections.defaultdict(list)
        keep: dict[int, int] = collections.defaultdict(int)
        series = self.series
        n = len(series)

        def mine(st: SeriesState) -> bool:  # not a stand-in, and not another agent's (board)
            mid = st.metric_id
            return mid < n and series[mid] is st

        for inst in itertools.chain(self.instances.values(), self.board):
            for st, k in zip(inst.series, inst.rule.keep_ns, strict=False):
                if mine(st):
                    per[st.metric_id][id(inst)] = inst
                    keep[st.metric_id] = max(keep[st.metric_id], k)
            for j, (sel, d) in enumerate(inst.rule.absent):
                st = inst.series[sel]
                if mine(st):
                    watch[st.metric_id].append((inst, j, d))
        for slot in self.slots:
            mid = slot.state.metric_id
            slot.instances = (
                tuple(sorted(per[mid].values(), key=lambda i: -i.rule.priority))
                if mid in per
                else ()
            )
            slot.watchers = tuple(watch.get(mid, ()))
            slot.keep_ns = keep.get(mid, 0)
            fast: list[Ranked] = []
            general: list[Ranked] = []
            for rank, inst in enumerate(slot.instances):
                (fast if inst.rule.threshold is not None else general).append((rank, inst))
            # a series no rule reads gets an empty index too: its samples then take the same
            # inline path in on_batch (one region, so only the state update)
            bare = not general and not slot.watchers and not slot.keep_ns
            slot.index = ThresholdIndex(fast) if fast or bare else None
            slot.general = tuple(general)
            slot.plain = slot.index if bare else None

    def on_sample(
        self, metric_id: int, value: float, t: int, timers: Timers
    ) -> list[Firing] | None:
        """Take one sample (metric id already range-checked); return what fires."""
        slot = self.slots[metric_id]
        s = slot.state
        s.last_v = value
        s.last_t = t
        s.seen_ns = t
        keep = slot.keep_ns
        if keep:
            buf = s.buf
            buf.append((t, value))
            lo = t - keep
            while buf[0][0] <= lo:
                buf.popleft()
            if len(buf) > MAX_WINDOW_SAMPLES:
                buf.popleft()
                s.dropped += 1
        elif s.buf:
            s.buf.clear()  # the table that needed a window is gone
        for inst, j, d in slot.watchers:
            if inst.absent_due[j] is None:  # else the pending timer moves itself when it fires
                inst.absent_due[j] = t + d
                timers.schedule(t + d, inst, inst.absent_tokens[j], j)
        fired = None
        ix = slot.index
        if ix is None:
            for inst in slot.instances:
                f = inst.evaluate(t, s, timers)
                if f is not None:
                    if fired is None:
                        fired = [f]
                    else:
                        fired.append(f)
            return fired
        if not ix.members:  # a series no rule reads (see link): only the region to track
            ix.prev = value
            ix.k = 0 if value == value else -1
            return None
        todo, unsorted = ix.select(value, t)
        general = slot.general
        if general:
            todo = [*todo, *general]
            unsorted = len(todo) > len(general)
        if unsorted:
            todo = sorted(todo, key=_rank)
        for _, inst in todo:
            f = inst.evaluate(t, s, timers)
            if f is not None:
                if fired is None:
                    fired = [f]
                else:
                    fired.append(f)
        if ix.holds and todo:
            ix.rewatch(todo)
        return fired

    def on_batch(
        self,
        rows: Iterable[tuple[int, float, int, int]],
        timers: Timers,
        urgent_priority: int = URGENT_NEVER,
        on_urgent: Callable[[list[Firing], bool], None] | None = None,
    ) -> tuple[list[Firing] | None, list[Firing], int]:
        """Take a batch's samples in order, as ``on_sample`` one by one would.

        ``rows`` yields ``(t_ns, value, metric_id, flags)`` (``MetricBatchView.samples()``).
        Deadlines due at or before a sample's time are run first, at their deadline (as
        ``Timers.run_due``). Firings of rules with priority >= ``urgent_priority`` are handed
        to ``on_urgent(firings, from_timer)`` at once, before the rest of the batch is
        evaluated; the others are returned: ``(fired by samples or None, fired by deadlines,
        number of samples whose metric id is not a declared series, which are skipped)``."""
        slots = self.slots
        n = len(slots)
        heap = timers.heap
        on_sample = self.on_sample
        fired: list[Firing] | None = None
        early: list[Firing] = []
        unknown = 0
        for t, v, mid, _flags in rows:
            if mid >= n:
                unknown += 1
                continue
            if heap and heap[0][0] <= t:
                due = timers.run_due(t)
                if due:
                    if on_urgent is not None:
                        due = _split_urgent(due, urgent_priority, on_urgent, True)
                    early.extend(due)
            slot = slots[mid]
            ix = slot.plain
            if ix is not None and not ix.watch:
                # only threshold rules on this series: a value in the same region as the last
                # one changes nothing but the series' latest sample
                if v == ix.prev or (
                    v == v and bisect_left(ix.bounds, v) + bisect_right(ix.bounds, v) == ix.k
                ):
                    ix.prev = v
                    s = slot.state
                    s.last_v = v
                    s.last_t = t
                    s.seen_ns = t
                    continue
            f = on_sample(mid, v, t, timers)
            if f is not None:
                if on_urgent is not None:
                    f = _split_urgent(f, urgent_priority, on_urgent, False)
                if fired is None:
                    fired = f
                else:
                    fired.extend(f)
        return fired, early, unknown

    def make_current(self) -> None:
        """Make this the agent's evaluator (on the loop thread, at activation): from now on
        only timers of instances in it count."""
        self.holder[0] = self

    def retire(self) -> None:
        """The agent left: every pending timer of it is ignored."""
        self.holder[0] = None

    def rules_bound(self) -> int:
        return len({inst.rule.rule_id for inst in list(self.instances.values())})


def _rank(x: Ranked) -> int:
    return x[0]


def _split_urgent(
    fs: list[Firing], level: int, emit: Callable[[list[Firing], bool], None], from_timer: bool
) -> list[Firing]:
    """Hand the firings at or above ``level`` to ``emit`` now; return the others."""
    hot = [f for f in fs if f.rule.priority >= level]
    if not hot:
        return fs
    emit(hot, from_timer)
    return [f for f in fs if f.rule.priority < level] if len(hot) < len(fs) else []


class Firing(NamedTuple):
    rule: CompiledRule
    agent: object
    """The owner object passed to ``bind`` (edged's agent record)."""
    metric_id: int
    """The series whose sample (or timer) triggered the evaluation."""
    value: float
    t_sample_ns: int
    """The trigger time: the sample's t_ns, or the deadline for a timer firing."""
    t_eval_ns: int


_HOLD = -1  # timer kind: held-for deadline; >= 0: index of an absent() in the rule
_REARM = -2  # timer kind: the rearm's held-for deadline


class Timers:
    """Deadlines (held-for and absence): a heap with lazy cancellation by token."""

    __slots__ = ("_heap", "_seq", "heap")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Instance, int, int]] = []
        self.heap = self._heap
        """Read-only view for hot loops: ``heap and heap[0][0] <= t`` means a deadline is due."""
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def schedule(self, due_ns: int, inst: Instance, token: int, kind: int = _HOLD) -> None:
        heapq.heappush(self._heap, (due_ns, self._next(), inst, token, kind))

    def schedule_absent(self, pending: list[tuple[int, Instance, int]]) -> None:
        """Schedule what ``CompiledTable.bind`` returned (on the loop thread)."""
        for due, inst, k in pending:
            if k == _HOLD:
                token = inst.hold_token
            elif k == _REARM:
                token = 0
            else:
                token = inst.absent_tokens[k]
            self.schedule(due, inst, token, k)

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, now_ns: int) -> list[Firing]:
        """Evaluate every instance whose valid deadline is <= now, at its deadline."""
        fired: list[Firing] = []
        heap = self._heap
        ran: set[int] = set()  # instances evaluated at ``ran_at``: one evaluation per instant
        ran_at = -1
        while heap and heap[0][0] <= now_ns:
            due, _, inst, token, kind = heapq.heappop(heap)
            if not inst.is_live():
                continue
            if kind == _HOLD:
                if token != inst.hold_token or inst.since_ns is None:
                    continue
                trigger = inst.series[0]
            elif kind == _REARM:
                since = inst.rearm_since
                if since is None or since + inst.rule.rearm_hold_ns != due:
                    continue
                trigger = inst.series[0]
            else:
                if token != inst.absent_tokens[kind]:
                    continue
                sel, d = inst.rule.absent[kind]
                trigger = inst.series[sel]
                real_due = inst.absent_ref(sel) + d
                if real_due > due:  # a sample came since: the deadline moved
                    inst.absent_due[kind] = real_due
                    heapq.heappush(heap, (real_due, self._next(), inst, token, kind))
                    continue
                inst.absent_due[kind] = None
            if due != ran_at:
                ran.clear()
                ran_at = due
            elif id(inst) in ran:
                continue  # two deadlines of one instance at one instant: evaluated once
            ran.add(id(inst))
            f = inst.evaluate(due, trigger, self)
            if f is not None:
                fired.append(f)
        return fired

    def __len__(self) -> int:
        return len(self._heap)
