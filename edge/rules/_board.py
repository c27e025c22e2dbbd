"""Board rules: one evaluation context over the series of every agent seen.

A board rule's selectors each name one agent with the reserved label ``agent="id"``
(``temp{agent="motor-1"} > 90 and fan_ok{agent="fan-ctl"} < 1``). ``bind_board`` makes one
Instance per combination of matching series across agents, exactly as ``CompiledTable.bind``
does within one agent, and hands each instance to the evaluators of the agents whose series it
reads (``AgentEval.board``), so a sample of any of them evaluates it on the usual path.

A selector whose agent has not been seen, or has no matching series, binds to ``origin``: a
series with no samples whose ``seen_ns`` is the moment the table became active. absent()
counts from there until the series' first sample, so a device that never came up is caught.
Each instance keeps the origin it was made with (its last series state), so a rebind (an agent
registers) or a swap that keeps the rule keeps its deadlines.

Instances carry over a rebind by key (rule key, then per selector ``(agent_id, metric, labels)``
or None): the same series objects keep the same instance; an agent that registered again has
new series objects, and its instances move onto them keeping their held-for, edge, re-arm and
cooldown state, the same object with its timers. So is an instance whose stand-in series (None)
is now a real one: an agent appearing continues the instance that watched for it (a PLC whose
silence fired does not fire again by coming up).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from ._engine import (
    _HOLD,
    _REARM,
    MAX_INSTANCES_PER_RULE,
    NO_SERIES,
    AgentEval,
    CompiledTable,
    Instance,
    SeriesState,
)

BOARD_AGENT = "@board"
"""The agent a board rule's firings name: its source in an Instruction, and in replay."""

Pending = list[tuple[int, Instance, int]]
"""Timers to schedule with ``Timers.schedule_absent``: ``(due_ns, instance, kind)``."""


class BoardEval:
    """The board rules of one table, bound over every agent seen. Built off the loop or on it
    (at a Hello); current once ``make_current`` ran on the loop thread."""

    __slots__ = ("table", "instances", "holder", "origin", "owner", "seen")

    def __init__(self, table: CompiledTable, owner: object, origin: SeriesState, holder: list[Any]):
        self.table = table
        self.owner = owner
        self.origin = origin
        self.holder = holder
        """Shared by every BoardEval of one runtime: the timers of an instance that is not in
        the current one are ignored."""
        self.instances: dict[Any, Instance] = {}
        self.seen: dict[str, AgentEval] = {}
        """The last evaluator of every agent a board selector names, kept after the agent left
        (and was forgotten by the registry): its silence is what a board rule may catch."""

    def make_current(self) -> None:
        self.holder[0] = self

    def activated_at(self, t_ns: int) -> None:
        """The table became active at ``t_ns`` (a pending absent() deadline counted from an
        earlier estimate moves itself when it comes due)."""
        self.origin.seen_ns = t_ns


def bind_board(
    table: CompiledTable,
    agents: Iterable[tuple[str, AgentEval]],
    *,
    origin_ns: int,
    owner: object = BOARD_AGENT,
    previous: BoardEval | None = None,
) -> tuple[BoardEval, Pending]:
    """Bind ``table``'s board rules over ``agents`` (agent id, its evaluator), set each
    evaluator's ``board`` instances and relink it. Returns the board and the timers to
    schedule. ``previous``: the board before (same or previous table), whose instances of
    unchanged rules carry over. ``origin_ns``: now, which for a new table is when it becomes
    active (under the same table as ``previous`` its origin is kept); no deadline is earlier.
    Links an evaluator only when its board instances change: one bound with ``link=False``
    and left without any is the caller's to link."""
    evals = dict(agents)
    named = {sel.agent for cr in table.board_rules for sel in cr.selectors}
    if previous is not None:
        for aid, seen in previous.seen.items():
            evals.setdefault(aid, seen)  # gone, and no longer in the caller's list
    if previous is not None and previous.table is table:
        origin = previous.origin
    else:
        origin = SeriesState(NO_SERIES, "", (), origin_ns)
    holder = previous.holder if previous is not None else [None]
    board = BoardEval(table, owner, origin, holder)
    board.seen = {aid: ev for aid, ev in evals.items() if aid in named}
    old = previous.instances if previous is not None else {}
    pending: Pending = []
    moved: set[int] = set()
    for cr in table.board_rules:
        choices: list[list[tuple[Any, SeriesState]]] = []
        for sel in cr.selectors:
            agent = sel.agent
            found = evals.get(agent) if agent is not None else None
            labels = set(sel.series_labels())
            hits = [
                ((agent, st.name, st.labels), st)
                for st in (found.series if found is not None else ())
                if st.name == sel.metric and labels <= set(st.labels)
            ]
            choices.append(hits or [(None, origin)])
        for combo in itertools.islice(itertools.product(*choices), MAX_INSTANCES_PER_RULE):
            key = (cr.key, tuple(k for k, _ in combo))
            series = tuple(st for _, st in combo)
            inst = old.get(key)
            if inst is not None and inst.rule is cr and inst.series[:-1] == series:
                board.instances[key] = inst  # the same series objects: state and timers stay
                continue
            keep = inst if inst is not None and inst.rule is cr else _stood_in(old, cr, key)
            if keep is not None and id(keep) not in moved:
                # the same instance on its new series (on the loop thread: only a Hello changes
                # series objects), so its pending timers stay valid as they are
                moved.add(id(keep))
                keep.series = (*series, keep.series[-1])
                keep.key = key
                board.instances[key] = keep
                continue
            fresh = Instance(cr, owner, (*series, keep.series[-1] if keep else origin), key, holder)
            if keep is not None:  # an agent registered again: new series, the same state
                fresh.since_ns, fresh.armed = keep.since_ns, keep.armed
                fresh.last_fire_ns, fresh.rearm_since = keep.last_fire_ns, keep.rearm_since
                # (a second combination from one stand-in: deadlines already run stay run)
                if fresh.since_ns is not None and fresh.since_ns + cr.hold_ns > origin_ns:
                    pending.append((fresh.since_ns + cr.hold_ns, fresh, _HOLD))
                rs = fresh.rearm_since
                if rs is not None and rs + cr.rearm_hold_ns > origin_ns:
                    pending.append((rs + cr.rearm_hold_ns, fresh, _REARM))
            for k, (sel_i, d) in enumerate(cr.absent):
                if keep is not None and keep.absent_due[k] is None:
                    continue  # its deadline has passed: a sample schedules the next one
                # never in the past: an instance is first evaluated when it exists
                due = max(fresh.absent_ref(sel_i) + d, origin_ns)
                fresh.absent_due[k] = due
                pending.append((due, fresh, k))
            board.instances[key] = fresh
    per: dict[str, list[Instance]] = {aid: [] for aid in evals}
    for key, inst in board.instances.items():
        for aid in {k[0] for k in key[1] if k is not None}:
            per[aid].append(inst)
    for aid, ev in evals.items():
        mine = tuple(per[aid])
        if mine or ev.board:
            ev.board = mine
            ev.link()
    return board, pending


def _stood_in(old: dict[Any, Instance], cr: Any, key: Any) -> Instance | None:
    """The old instance of rule ``cr`` whose series were these or stand-ins for them."""
    parts = key[1]
    for okey, inst in old.items():
        if okey[0] == cr.key and inst.rule is cr:
            if all(o is None or o == n for o, n in zip(okey[1], parts, strict=True)):
                return inst
    return None
