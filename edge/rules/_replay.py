"""Offline replay: the compiled engine edged uses, on a virtual clock, over a recorded trace.

Trace: CSV with header ``t_ms,agent_id,metric,value`` and an optional fifth column ``labels``
as ``k=v;k2=v2`` (any other spelling is refused). Rows are taken in time order (file order among equal times). Every agent is
known from its first row: that is its "first message" for absent(), and it declares every
series the trace ever gives it. Before each row, timers due at or before its time fire; after
the last row the clock runs to the last row's time, or to ``end_ms``.

Board rules are bound over every agent seen so far, from before the first row: their
absent() counts from the first row's time (the table's activation) until a series' first sample.

Output: one dict per instruction, ``{"t_ms", "rule_id", "agent_id", "target", "action",
"params"}``: ``agent_id`` is the agent whose instance fired (``@board`` for a board rule),
``target`` the agent the instruction goes to (itself without a ``target`` field; with one,
every agent seen up to that instant that matches, each once, at most ``MAX_TARGETS``; null
once when none matches). Sorted by t_ms, then priority (high first), then file order, then
agent_id, then target (null first).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import RuleError
from ._board import BOARD_AGENT, BoardEval, bind_board
from ._engine import AgentEval, CompiledTable, Firing, Timers
from ._ir import Selector
from ._model import RuleSet
from ._targets import resolve_targets

_MS = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class TraceRow:
    t_ns: int
    agent_id: str
    metric: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class TraceError(RuleError):
    """A trace file with mistakes; the message lists every one as file:line: problem."""


def read_trace(path: Path | str) -> list[TraceRow]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None
    return parse_trace(text, str(path))


def parse_trace(text: str, name: str = "<trace>") -> list[TraceRow]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    want = ["t_ms", "agent_id", "metric", "value"]
    if (
        header is None
        or [h.strip() for h in header[:4]] != want
        or len(header) > 5
        or (len(header) == 5 and header[4].strip() != "labels")
    ):
        raise TraceError(f"{name}:1: the header must be t_ms,agent_id,metric,value[,labels]")
    rows, problems = [], []
    for line, rec in enumerate(reader, start=2):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) not in (4, 5):
            problems.append(f"{name}:{line}: expected 4 or 5 columns, found {len(rec)}")
            continue
        try:
            t_ms = float(rec[0])
            value = float(rec[3])
            if not math.isfinite(t_ms) or t_ms < 0:
                raise ValueError("t_ms must be a finite, non-negative number")
        except ValueError as exc:
            problems.append(f"{name}:{line}: {exc}")
            continue
        labels: list[tuple[str, str]] = []
        if len(rec) == 5 and rec[4].strip():
            try:
                labels = _labels(rec[4])
            except ValueError as exc:
                problems.append(f"{name}:{line}: {exc}")
                continue
        agent, metric = rec[1].strip(), rec[2].strip()
        if not agent or not metric:
            problems.append(f"{name}:{line}: agent_id and metric must not be empty")
            continue
        rows.append(TraceRow(round(t_ms * _MS), agent, metric, value, tuple(sorted(labels))))
    if problems:
        raise TraceError("\n".join(problems))
    return rows


_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*\Z")


def _labels(text: str) -> list[tuple[str, str]]:
    """``k=v;k2=v2`` -> pairs. Raises ValueError for any other spelling (``{k="v"}``,
    ``k=v,k2=v2``): a label misread would silently match no rule."""
    form = "labels are written k=v;k2=v2 (no braces or quotes, ';' between labels)"
    pairs: list[tuple[str, str]] = []
    for pair in text.split(";"):
        k, sep, v = (x.strip() for x in pair.partition("="))
        if not sep or not _LABEL_KEY.match(k):
            raise ValueError(f"label {pair.strip()!r} is not k=v: {form}")
        if "=" in v or any(c in v for c in '{}"'):
            raise ValueError(f"label value {v!r} of {k!r} is not plain text: {form}")
        if any(k == seen for seen, _ in pairs):
            raise ValueError(f"label {k!r} given twice")
        pairs.append((k, v))
    return pairs


def unmatched_series(ruleset: RuleSet, rows: Iterable[TraceRow]) -> list[str]:
    """The trace's series (``metric{k="v"}`` text, in first-seen order) that no rule's
    selector matches for any agent carrying it (a board rule's selector names its agent):
    replaying them can fire nothing, which usually means a misspelt metric or label."""
    selectors = [
        (Selector(s.metric, s.series_labels()), s.agent)
        for r in ruleset.rules
        for s in r.condition.selectors
    ]
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], set[str]] = {}
    for r in rows:
        seen.setdefault((r.metric, r.labels), set()).add(r.agent_id)
    return [
        Selector(metric, labels).text()
        for (metric, labels), agents in seen.items()
        if not any(
            sel.matches(metric, labels) and (agent is None or agent in agents)
            for sel, agent in selectors
        )
    ]


def replay(
    ruleset: RuleSet,
    rows: Iterable[TraceRow],
    end_ms: float | None = None,
    counts: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate ``rows`` with the compiled engine on a virtual clock; return the instructions.
    ``counts``, when given, receives ``targets_cut`` (agents beyond the fan-out cap) and
    ``no_target`` (firings whose target matched no agent seen)."""
    table = CompiledTable(ruleset)
    ordered = sorted(enumerate(rows), key=lambda p: (p[1].t_ns, p[0]))
    series: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], int]] = {}
    for _, r in ordered:
        ids = series.setdefault(r.agent_id, {})
        ids.setdefault((r.metric, r.labels), len(ids))
    timers = Timers()
    agents: dict[str, AgentEval] = {}
    first: dict[str, int] = {}
    fired: list[tuple[Firing, str]] = []
    board: BoardEval | None = None
    if table.board_rules:
        board, pending = bind_board(
            table, (), origin_ns=ordered[0][1].t_ns if ordered else 0, owner=BOARD_AGENT
        )
        board.make_current()
        timers.schedule_absent(pending)

    def run_until(t: int) -> None:
        for f in timers.run_due(t):
            fired.append((f, _agent_of(f)))

    for _, r in ordered:
        run_until(r.t_ns)
        ev = agents.get(r.agent_id)
        if ev is None:
            decls = [(mid, m, lb) for (m, lb), mid in series[r.agent_id].items()]
            ev, pending = table.bind(r.agent_id, r.agent_id, decls, first_seen_ns=r.t_ns)
            ev.make_current()
            timers.schedule_absent(pending)
            agents[r.agent_id] = ev
            first[r.agent_id] = r.t_ns
            if board is not None:
                board, pending = bind_board(
                    table, agents.items(), origin_ns=r.t_ns, owner=BOARD_AGENT, previous=board
                )
                board.make_current()
                timers.schedule_absent(pending)
        mid = series[r.agent_id][(r.metric, r.labels)]
        for f in ev.on_sample(mid, r.value, r.t_ns, timers) or ():
            fired.append((f, r.agent_id))
    end = round(end_ms * _MS) if end_ms is not None else (ordered[-1][1].t_ns if ordered else 0)
    run_until(end)
    cut = no_target = 0
    sent: list[tuple[Firing, str, str | None]] = []
    for f, agent_id in fired:
        if not f.rule.target:
            sent.append((f, agent_id, agent_id))
            continue
        known = (a for a, t in first.items() if t <= f.t_eval_ns)
        targets, n_cut = resolve_targets(f.rule.target, known)
        cut += n_cut
        if not targets:
            no_target += 1
        recipients: list[str | None] = list(targets) or [None]
        sent.extend((f, agent_id, target) for target in recipients)
    if counts is not None:
        counts["targets_cut"] = cut
        counts["no_target"] = no_target
    out = sorted(
        sent,
        key=lambda p: (
            p[0].t_eval_ns,
            *table.order(p[0].rule),
            p[1],
            (0, "") if p[2] is None else (1, p[2]),
        ),
    )
    return [
        {
            "t_ms": _ms(f.t_eval_ns),
            "rule_id": f.rule.rule_id,
            "agent_id": agent_id,
            "target": target,
            "action": f.rule.rule.action_name,
            "params": {p.key: p.value for p in f.rule.params},
        }
        for f, agent_id, target in out
    ]


def _agent_of(f: Firing) -> str:
    return str(f.agent)  # replay binds with the agent id as the owner object


def _ms(t_ns: int) -> float | int:
    ms = t_ns / _MS
    return int(ms) if ms == int(ms) else ms
