"""The seed's dynamic priority scheduler, corrected: orders control events when the loop is overloaded.

Rule priority stays fixed; this only decides which pending event runs next when there is more
work than the loop can do, and which is dropped when there is far more.

Score (the seed's, section 3.2), each factor in [0, 1]::

    business = business_weight / 10               business_weight in [0, 10]
    urgency  = min(10 / (sla_ms + 1), 1)          1.0 for sla_ms <= 9, ~0.1 at 100 ms, 0 for inf
    impact   = min(impact_scope / 1000, 1)        e.g. the number of agents a rule applies to
    score    = w_b * business + w_u * urgency + w_i * impact      (w starts at 0.6 / 0.3 / 0.1)

Our rule priority (0-255, higher is more important) maps linearly onto the seed's 0-10 business
weight: ``business_weight_of_priority(p) = p * 10 / 255`` (so 255 -> 10, 128 -> ~5.02, 0 -> 0).

Queue: bounded (default 10,000) and popped HIGHEST score first. The seed pushed scores into a
min-heap and so ran the lowest-scored event first; here one min-max heap (Atkinson et al., 1986)
gives the highest at the root and the lowest among the root's children, so pop (highest) and
eviction (lowest) are both O(log n) on one list, with no second index and no tombstones.

Ties: equal scores run in arrival order (FIFO). Each event carries ``-seq`` as the second key, so
the heap's order is total and deterministic; the item itself is never compared.

When full, a new event that ranks below the lowest queued event is dropped (``REJECTED``);
otherwise the lowest queued event is evicted (``EVICTED``) and the new one queued. A new event
whose score *equals* the lowest queued score is the one dropped: it would run after that event
anyway (FIFO), so keeping the earlier arrival is the order-consistent choice.

Shedding: on admission, while resource utilisation (a callable returning a fraction 0-1; psutil's
CPU percent / 100 by default) is strictly above ``shed_threshold`` (0.8), an event scoring below
``shed_below`` (0.5) is shed (``SHED``). Utilisation is sampled only for events that could be shed
and at most once per ``utilisation_period_ns`` (clock time), so psutil stays off the common path.
Events already queued when load rises are not shed retroactively; they still run last.

Re-derivation (every ``rederive_every`` = 1,000 calls to ``executed``): over the window, take the
mean of each factor (business, urgency, impact, in [0, 1]) over events that missed their SLA and
over events that met it; ``d_k = mean_missed_k - mean_met_k``. The factor with the largest
positive ``d_k`` is the one the scheduler under-weighted (the events that missed were high on it,
yet did not run early enough), so its weight grows by ``min(step * d_k, hi - w_k, slack)``, and
that amount is taken from the other two weights in proportion to how far each is above the floor
``lo`` (slack = their total room above ``lo``). Weights therefore stay within ``[lo, hi]``
(default 0.05-0.8) and sum to 1. No change when the window has no misses, no met events, or no
positive separation. Queued events are then re-scored with the new weights when there are at
most ``rescore_limit`` (256) of them; a longer queue keeps the scores it was admitted with (the
change is at most ``step`` per derivation) because re-ranking 10,000 events stalls the loop ~4 ms;
``rescore()`` re-ranks on demand (O(n)). An event missed its SLA when ``done_ns - t0_ns > sla_ms * 1e6``.

Events are plain tuples (the only per-event allocation, with the numbers in it); the layout is
given by the ``SCORE``, ``NEG_SEQ``, ``T0_NS``, ``BUSINESS``, ``SLA_MS``, ``IMPACT``, ``ITEM``
indices. Not thread-safe: the control loop thread owns it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from ..clock import SYSTEM_CLOCK, Clock

T = TypeVar("T")

SCORE: Final = 0
NEG_SEQ: Final = 1
T0_NS: Final = 2
BUSINESS: Final = 3
SLA_MS: Final = 4
IMPACT: Final = 5
ITEM: Final = 6

Event = tuple[float, int, int, float, float, float, Any]
"""(score, -seq, t0_ns, business_weight 0-10, sla_ms, impact_scope, item)."""

SEED_WEIGHTS = (0.6, 0.3, 0.1)


class DropReason(enum.Enum):
    """Why an event did not run; each is counted (``counts()``) and reported to ``on_drop``."""

    SHED = "shed_overload"
    """Scored below ``shed_below`` while utilisation was above ``shed_threshold``."""
    EVICTED = "evicted_full"
    """Was queued, then displaced by a higher-ranked event when the queue was full."""
    REJECTED = "rejected_full"
    """Arrived at a full queue ranking no higher than the lowest queued event."""


def business_weight_of_priority(priority: int) -> float:
    """Map a rule priority (0-255) onto the seed's business weight (0-10), linearly."""
    return priority * 10.0 / 255.0


def psutil_utilisation() -> float:
    """System-wide CPU use (0-1) since the previous call, from psutil."""
    import psutil  # deferred: importing the runtime must not pay for psutil

    return float(psutil.cpu_percent(interval=None)) / 100.0


class PriorityScheduler(Generic[T]):
    """A bounded max-first priority queue of control events with shedding and adaptive weights.

    ``utilisation`` returns resource use as a fraction (0-1); None means psutil's system CPU
    percent. ``on_drop(item, reason)`` is called for every shed, rejected or evicted event.
    Raises ValueError for out-of-range settings.
    """

    __slots__ = (
        "_heap",
        "_seq",
        "_clock",
        "_now",
        "capacity",
        "shed_threshold",
        "shed_below",
        "_utilisation",
        "_util_period_ns",
        "_util_next_ns",
        "_util",
        "rederive_every",
        "rescore_limit",
        "lo",
        "hi",
        "step",
        "_wb",
        "_wu",
        "_wi",
        "_on_drop",
        "admitted",
        "executed_count",
        "missed",
        "shed",
        "evicted",
        "rejected",
        "rederivations",
        "_win_n",
        "_win_missed",
        "_sum_missed",
        "_sum_met",
    )

    def __init__(
        self,
        *,
        capacity: int = 10_000,
        shed_threshold: float = 0.8,
        shed_below: float = 0.5,
        utilisation: Callable[[], float] | None = None,
        utilisation_period_ns: int = 50_000_000,
        rederive_every: int = 1_000,
        rescore_limit: int = 256,
        weights: tuple[float, float, float] = SEED_WEIGHTS,
        weight_bounds: tuple[float, float] = (0.05, 0.8),
        step: float = 0.1,
        clock: Clock = SYSTEM_CLOCK,
        on_drop: Callable[[T, DropReason], None] | None = None,
    ) -> None:
        lo, hi = weight_bounds
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if rederive_every < 1:
            raise ValueError(f"rederive_every must be at least 1, not {rederive_every}")
        if not (0.0 < lo and 3 * lo <= 1.0 <= 3 * hi and hi <= 1.0):
            raise ValueError(
                f"weight_bounds {weight_bounds} cannot hold three weights summing to 1"
            )
        if abs(sum(weights) - 1.0) > 1e-9 or not all(lo <= w <= hi for w in weights):
            raise ValueError(f"weights {weights} must lie in {weight_bounds} and sum to 1")
        if not 0.0 < step <= 1.0:
            raise ValueError(f"step must be in (0, 1], not {step}")
        self._heap: list[Event] = []
        self._seq = 0
        self._clock = clock
        self._now = clock.monotonic_ns
        self.capacity = capacity
        self.shed_threshold = shed_threshold
        self.shed_below = shed_below
        self._utilisation = utilisation if utilisation is not None else psutil_utilisation
        self._util_period_ns = utilisation_period_ns
        self._util_next_ns: int | None = None
        self._util = 0.0
        self.rederive_every = rederive_every
        self.rescore_limit = rescore_limit
        self.lo = lo
        self.hi = hi
        self.step = step
        self._wb, self._wu, self._wi = weights
        self._on_drop = on_drop
        self.admitted = self.executed_count = self.missed = 0
        self.shed = self.evicted = self.rejected = self.rederivations = 0
        self._reset_window()

    # -- public -------------------------------------------------------------------------------

    @property
    def weights(self) -> tuple[float, float, float]:
        """Current (business, urgency, impact) weights; they sum to 1."""
        return (self._wb, self._wu, self._wi)

    def __len__(self) -> int:
        return len(self._heap)

    def score(self, business_weight: float, sla_ms: float, impact_scope: float) -> float:
        """The score under the current weights (no validation; see ``push``)."""
        u = 10.0 / (sla_ms + 1.0)
        i = impact_scope / 1000.0
        return (
            self._wb * business_weight / 10.0
            + self._wu * (u if u < 1.0 else 1.0)
            + self._wi * (i if i < 1.0 else 1.0)
        )

    def push(
        self,
        item: T,
        business_weight: float,
        sla_ms: float,
        impact_scope: float,
        t0_ns: int | None = None,
    ) -> bool:
        """Offer an event; True when it was queued (possibly evicting another).

        ``business_weight`` is 0-10 (``business_weight_of_priority`` for a rule priority),
        ``sla_ms`` >= 0 (inf for none), ``impact_scope`` >= 0. ``t0_ns`` is when the SLA clock
        started (the triggering sample's t_ns); None means now. Raises ValueError on an
        out-of-range or NaN factor.
        """
        if not (0.0 <= business_weight <= 10.0 and sla_ms >= 0.0 and impact_scope >= 0.0):
            raise ValueError(
                f"bad event factors: business_weight={business_weight!r} (0-10), "
                f"sla_ms={sla_ms!r} (>= 0), impact_scope={impact_scope!r} (>= 0)"
            )
        s = self.score(business_weight, sla_ms, impact_scope)
        if s < self.shed_below and self._overloaded():
            self.shed += 1
            if self._on_drop is not None:
                self._on_drop(item, DropReason.SHED)
            return False
        self._seq += 1
        ev: Event = (
            s,
            -self._seq,
            self._now() if t0_ns is None else t0_ns,
            business_weight,
            sla_ms,
            impact_scope,
            item,
        )
        heap = self._heap
        if len(heap) >= self.capacity:
            lowest = self._min_index()
            if ev < heap[lowest]:
                self.rejected += 1
                if self._on_drop is not None:
                    self._on_drop(item, DropReason.REJECTED)
                return False
            gone = self._remove_min(lowest)
            self.evicted += 1
            if self._on_drop is not None:
                self._on_drop(gone[ITEM], DropReason.EVICTED)
        self._push(ev)
        self.admitted += 1
        return True

    def peek(self) -> Event | None:
        """The event ``pop`` would return, or None when empty."""
        return self._heap[0] if self._heap else None

    def pop(self) -> Event | None:
        """Remove and return the highest-scored event (earliest first among equals), or None."""
        heap = self._heap
        if not heap:
            return None
        top = heap[0]
        last = heap.pop()
        if heap:
            self._down_max(0, last)
        return top

    def executed(self, event: Event, done_ns: int | None = None) -> bool:
        """Record that ``event`` ran; True when it missed its SLA.

        ``done_ns`` is when it completed (the agent's Ack.t_done_ns when known); None means now.
        Every ``rederive_every`` calls the weights are re-derived (module docstring).
        """
        done = self._now() if done_ns is None else done_ns
        bw, sla, imp = event[BUSINESS], event[SLA_MS], event[IMPACT]
        u = 10.0 / (sla + 1.0)
        i = imp / 1000.0
        b, u, i = bw / 10.0, (u if u < 1.0 else 1.0), (i if i < 1.0 else 1.0)
        miss = done - event[T0_NS] > sla * 1e6
        acc = self._sum_missed if miss else self._sum_met
        acc[0] += b
        acc[1] += u
        acc[2] += i
        self.executed_count += 1
        self._win_n += 1
        if miss:
            self.missed += 1
            self._win_missed += 1
        if self._win_n >= self.rederive_every:
            self._rederive()
        return miss

    def counts(self) -> dict[str, int]:
        """Counters since construction; every event pushed is admitted, shed or rejected."""
        return {
            "queued": len(self._heap),
            "admitted": self.admitted,
            "executed": self.executed_count,
            "missed_sla": self.missed,
            DropReason.SHED.value: self.shed,
            DropReason.EVICTED.value: self.evicted,
            DropReason.REJECTED.value: self.rejected,
            "rederivations": self.rederivations,
        }

    # -- shedding -----------------------------------------------------------------------------

    def _overloaded(self) -> bool:
        now = self._now()
        if self._util_next_ns is None or now >= self._util_next_ns:
            self._util = self._utilisation()
            self._util_next_ns = now + self._util_period_ns
        return self._util > self.shed_threshold

    # -- re-derivation ------------------------------------------------------------------------

    def _reset_window(self) -> None:
        self._win_n = 0
        self._win_missed = 0
        self._sum_missed = [0.0, 0.0, 0.0]
        self._sum_met = [0.0, 0.0, 0.0]

    def _rederive(self) -> None:
        n_missed = self._win_missed
        n_met = self._win_n - n_missed
        sep = (
            [m / n_missed - k / n_met for m, k in zip(self._sum_missed, self._sum_met, strict=True)]
            if n_missed and n_met
            else [0.0, 0.0, 0.0]
        )
        self._reset_window()
        self.rederivations += 1
        best = max(range(3), key=sep.__getitem__)
        if sep[best] <= 0.0:
            return
        w = [self._wb, self._wu, self._wi]
        others = [j for j in range(3) if j != best]
        slack = sum(w[j] - self.lo for j in others)
        delta = min(self.step * sep[best], self.hi - w[best], slack)
        if delta <= 0.0:
            return
        for j in others:
            w[j] -= delta * (w[j] - self.lo) / slack
        w[best] += delta
        self._wb, self._wu, self._wi = w
        if len(self._heap) <= self.rescore_limit:
            self.rescore()

    def rescore(self) -> None:
        """Re-score every queued event under the current weights and re-rank (O(n))."""
        score = self.score
        heap = self._heap
        heap[:] = [
            (
                score(e[BUSINESS], e[SLA_MS], e[IMPACT]),
                e[NEG_SEQ],
                e[T0_NS],
                e[BUSINESS],
                e[SLA_MS],
                e[IMPACT],
                e[ITEM],
            )
            for e in heap
        ]
        for i in range(len(heap) // 2 - 1, -1, -1):
            if ((i + 1).bit_length() - 1) & 1:
                self._down_min(i, heap[i])
            else:
                self._down_max(i, heap[i])

    # -- the min-max heap: even levels (root = level 0) hold maxima of their subtree ------------

    def _min_index(self) -> int:
        heap = self._heap
        n = len(heap)
        if n < 3:
            return n - 1
        return 1 if heap[1] < heap[2] else 2

    def _remove_min(self, idx: int) -> Event:
        heap = self._heap
        gone = heap[idx]
        last = heap.pop()
        if idx < len(heap):
            if idx == 0:
                self._down_max(0, last)
            else:
                self._down_min(idx, last)
        return gone

    def _push(self, ev: Event) -> None:
        heap = self._heap
        i = len(heap)
        heap.append(ev)
        if i == 0:
            return
        p = (i - 1) >> 1
        if ((i + 1).bit_length() - 1) & 1:  # i on a min level, its parent on a max level
            if ev > heap[p]:
                heap[i] = heap[p]
                self._up(p, ev, True)
            else:
                self._up(i, ev, False)
        else:
            if ev < heap[p]:
                heap[i] = heap[p]
                self._up(p, ev, False)
            else:
                self._up(i, ev, True)

    def _up(self, i: int, ev: Event, is_max: bool) -> None:
        heap = self._heap
        if is_max:
            while i >= 3:
                g = (i - 3) >> 2  # the grandparent
                if not ev > heap[g]:
                    break
                heap[i] = heap[g]
                i = g
        else:
            while i >= 3:
                g = (i - 3) >> 2
                if not ev < heap[g]:
                    break
                heap[i] = heap[g]
                i = g
        heap[i] = ev

    def _down_max(self, i: int, ev: Event) -> None:
        heap = self._heap
        n = len(heap)
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            m, best = c, heap[c]
            if c + 1 < n and heap[c + 1] > best:
                m, best = c + 1, heap[c + 1]
            g = 2 * c + 1
            if g + 3 < n:  # all four grandchildren: unrolled, the common case
                x = heap[g]
                if x > best:
                    m, best = g, x
                x = heap[g + 1]
                if x > best:
                    m, best = g + 1, x
                x = heap[g + 2]
                if x > best:
                    m, best = g + 2, x
                x = heap[g + 3]
                if x > best:
                    m, best = g + 3, x
            else:
                j = g
                while j < n:
                    if heap[j] > best:
                        m, best = j, heap[j]
                    j += 1
            if not best > ev:
                break
            heap[i] = best
            i = m
            if m < g:  # a child: a leaf (it beat its own children), so ev settles there
                break
            p = (m - 1) >> 1
            if ev < heap[p]:
                heap[p], ev = ev, heap[p]
        heap[i] = ev

    def _down_min(self, i: int, ev: Event) -> None:
        heap = self._heap
        n = len(heap)
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            m, best = c, heap[c]
            if c + 1 < n and heap[c + 1] < best:
                m, best = c + 1, heap[c + 1]
            g = 2 * c + 1
            if g + 3 < n:  # all four grandchildren: unrolled, the common case
                x = heap[g]
                if x < best:
                    m, best = g, x
                x = heap[g + 1]
                if x < best:
                    m, best = g + 1, x
                x = heap[g + 2]
                if x < best:
                    m, best = g + 2, x
                x = heap[g + 3]
                if x < best:
                    m, best = g + 3, x
            else:
                j = g
                while j < n:
                    if heap[j] < best:
                        m, best = j, heap[j]
                    j += 1
            if not best < ev:
                break
            heap[i] = best
            i = m
            if m < g:
                break
            p = (m - 1) >> 1
            if ev > heap[p]:
                heap[p], ev = ev, heap[p]
        heap[i] = ev
