"""The fast path for the common rule: the latest value of one series compared with a constant.

A rule like ``cpu > 0.9`` changes its truth value only when a sample crosses 0.9, and between
two samples that do not cross it, evaluating it again changes nothing (proof below). So for each
series, ``ThresholdIndex`` keeps the constants of such rules sorted and, for a sample that moves
the value from ``p`` to ``v``, finds with ``bisect`` only the rules whose truth differs between
``p`` and ``v``: a sample that crosses no threshold costs O(log n) and no per-rule Python work,
however many rules watch the series. Everything else (windows, rate, absent(), several
selectors, and/or/not) stays on the general path, evaluated at every sample of its series.

Which rules change between two non-NaN values ``lo < hi`` (a total order, so exact)::

    x > c, x <= c     truth(lo) != truth(hi)  iff  lo <= c < hi    [bisect_left, bisect_left)
    x >= c, x < c                                  lo < c <= hi    [bisect_right, bisect_right)
    x == c, x != c                                 c == lo or c == hi          (a dict lookup)

Why skipping the others is exact (semantics in ``_engine``): an instance evaluated as not-true
is left with ``since_ns = None`` and ``armed = True``, and evaluating not-true again leaves it so;
an instance without held-for evaluated as true is left with ``armed = False`` (it fired, or
cooldown consumed the edge), and evaluating true again returns at ``armed`` with nothing changed.
The one time-dependent case is held-for: a true instance with ``since_ns`` set and still armed
fires on any evaluation at ``t >= since_ns + hold``. Its timer normally does that first, but so
that the fast path never depends on the caller running timers, such instances are kept in
``watch`` and evaluated by the sample once due, as the general path would.

``prev`` is the value every member was last evaluated at by this index; ``None`` (a fresh index
after a table swap or at Hello, whose instances may carry state from elsewhere) and NaN force a
full pass over all members, which is the general path.

Before any of that, one test settles the usual sample: ``region(v)``, from two bisections over
the distinct constants, is 2i for a value strictly between the i-th and (i+1)-th constant and
2i+1 for a value equal to the i-th; every member's truth is a function of the region, so a
sample in ``prev``'s region (``k``) changes nothing.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from ._ir import FLIPPED, Condition, NodeOp

if TYPE_CHECKING:
    from ._engine import Instance

Ranked = tuple[int, "Instance"]
"""An instance with its rank on its series: its position in the series' evaluation order
(priority high first, then table order), so the output order matches the general path."""

_FLIP = FLIPPED
_UP = (NodeOp.GT, NodeOp.LE)
_DOWN = (NodeOp.GE, NodeOp.LT)


def threshold_of(cond: Condition) -> tuple[NodeOp, float] | None:
    """``(op, c)`` when ``cond`` is ``latest(series) op c`` (or ``c op latest(series)``, turned
    round) over one selector with a non-NaN constant, else None. Held-for is allowed."""
    nodes = cond.nodes
    if len(nodes) != 3 or len(cond.selectors) != 1:
        return None
    a, b, op = nodes
    flip = op.op in _FLIP
    if not flip:
        return None
    if a.op is NodeOp.LATEST and b.op is NodeOp.CONST:
        kind, c = op.op, b.value
    elif a.op is NodeOp.CONST and b.op is NodeOp.LATEST:
        kind, c = _FLIP[op.op], a.value
    else:
        return None
    c = float(c)
    if math.isnan(c):
        return None
    return kind, c


class ThresholdIndex:
    """The threshold rules of one series under one table (built off the loop, used on it)."""

    __slots__ = (
        "prev",
        "k",
        "bounds",
        "members",
        "up_c",
        "up_i",
        "down_c",
        "down_i",
        "eq",
        "holds",
        "watch",
    )

    def __init__(self, members: list[Ranked]):
        self.members = tuple(members)
        """Every member in rank order: the full pass."""
        self.prev: float | None = None
        self.k = -1
        """``region(prev)``; -1 while ``prev`` is None or NaN."""
        up: list[tuple[float, int, Instance]] = []
        down: list[tuple[float, int, Instance]] = []
        eq: dict[float, list[Ranked]] = {}
        for rank, inst in members:
            thr = inst.rule.threshold
            assert thr is not None
            kind, c = thr
            if kind in _UP:
                up.append((c, rank, inst))
            elif kind in _DOWN:
                down.append((c, rank, inst))
            else:
                eq.setdefault(c, []).append((rank, inst))
        up.sort(key=_c_rank)
        down.sort(key=_c_rank)
        self.up_c = [c for c, _, _ in up]
        self.up_i: list[Ranked] = [(r, i) for _, r, i in up]
        self.down_c = [c for c, _, _ in down]
        self.down_i: list[Ranked] = [(r, i) for _, r, i in down]
        self.eq = {c: tuple(v) for c, v in eq.items()}
        self.bounds = sorted({_const(inst) for _, inst in members})
        """The distinct constants: region boundaries."""
        self.holds = any(inst.rule.hold_ns for _, inst in members)
        self.watch: dict[int, Instance] = {}
        """Held-for members that are true, armed and waiting for their hold (see module doc)."""

    def select(self, v: float, t: int) -> tuple[list[Ranked] | tuple[Ranked, ...], bool]:
        """The members to evaluate for a sample of value ``v`` at ``t``, and whether they need
        sorting by rank (a full pass is already in order). Moves ``prev`` to ``v``."""
        p = self.prev
        self.prev = v
        if v != v:  # NaN: every comparison is off
            self.k = -1
            return self.members, False
        bounds = self.bounds
        k = bisect_left(bounds, v) + bisect_right(bounds, v)
        k0 = self.k
        self.k = k
        if k0 < 0:  # unknown
            return self.members, False
        out: list[Ranked] = []
        if k != k0:
            assert p is not None
            lo, hi = (p, v) if p < v else (v, p)
            cs = self.up_c
            if cs:
                a = bisect_left(cs, lo)
                b = bisect_left(cs, hi, a)
                if a < b:
                    out = self.up_i[a:b]
            cs = self.down_c
            if cs:
                a = bisect_right(cs, lo)
                b = bisect_right(cs, hi, a)
                if a < b:
                    out = out + self.down_i[a:b] if out else self.down_i[a:b]
            eq = self.eq
            if eq:
                for x in (p, v):
                    hit = eq.get(x)
                    if hit is not None:
                        out = [*out, *hit]
        watch = self.watch
        if watch:
            for rank, inst in list(watch.items()):
                since = inst.since_ns
                if since is None or not inst.armed:
                    del watch[rank]
                elif t - since >= inst.rule.hold_ns and (rank, inst) not in out:
                    out = [*out, (rank, inst)]
        return out, len(out) > 1

    def rewatch(self, evaluated: list[Ranked] | tuple[Ranked, ...]) -> None:
        """After ``evaluated`` were evaluated: keep the held-for ones that wait for their hold."""
        watch = self.watch
        for rank, inst in evaluated:
            if inst.rule.hold_ns and inst.rule.threshold is not None:
                if inst.since_ns is not None and inst.armed:
                    watch[rank] = inst
                else:
                    watch.pop(rank, None)


def _const(inst: Instance) -> float:
    thr = inst.rule.threshold
    assert thr is not None
    return thr[1]


def _c_rank(x: tuple[float, int, Instance]) -> tuple[float, int]:
    return x[0], x[1]
