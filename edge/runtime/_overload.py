"""Overload control: when the loop has more work than it can do, it runs the work in priority
order and sheds what matters least (the seed's scheduler, ``_scheduler``, wired into the loop).

Rule priority stays fixed; this only decides which queued MetricBatch is evaluated next, and
which is never evaluated, when the loop is behind. ::

    normal      drain: recv -> verify -> handle, in arrival order (the hot path, unchanged)
                  | a drain has worked >= sched_budget_us, and the next frame is a batch
                  | that waited >= sched_budget_us since its agent sent it (the loop is behind)
                  v
    scheduled   intake: recv every waiting frame -> verify
                   Ack / Hello / Heartbeat / Bye / bad input: handled at once (never queued,
                                                               never shed: liveness)
                   MetricBatch: scored by its agent's most important bound rule -> queue
                     (shed below sched_shed_below while the load probe reads above
                      sched_shed_threshold; the lowest evicted when the queue is full)
                then pop the highest-scored batch, evaluate it (instructions leave at once, in
                rule-priority order), intake again; every ~1 ms back to the loop for timers
                  | the queue and the socket are both empty, and the load probe last read
                  | at or below sched_shed_threshold (not shedding)
                  v
    normal

Score of a batch (``PriorityScheduler.score``): business weight = the highest rule priority
bound to any of the agent's series (0-255 -> 0-10), SLA = the smallest sla_threshold among
the rules at that priority, impact = 1 agent. An agent with no bound rule scores ~0 and is
shed first. The rank is per agent, not per sample (reading the samples is the cost being
saved): put bulk telemetry on its own agent if it must be shed apart from control metrics.

What shedding costs: a shed batch's samples are not evaluated, so rule windows miss them and
an ``absent()`` rule over those series may fire; the agent stays alive (liveness counts the
batch). Every shed, evicted and rejected batch is counted (``sched_*`` counters and
``by_priority``) and audited (``overload_drop``) at most ``log_rate_per_s`` per reason.

The load probe for shedding is either the loop's lag (``lag``: how long the batch last taken
from the queue waited in it, over ``sched_lag_ms``; 0 while the queue is empty; read at every
admission) or psutil's system CPU (``cpu``, the seed's choice, read at most every 50 ms). Lag says what matters here: a loop that is
busy but keeping up sheds nothing (its busy share would read ~100 % and shed work it could
do), and a board whose AI agents keep every core busy does not make edged shed while it keeps
up. The wait is measured from intake, not from the agent's send: in scheduled mode the socket
is read between any two evaluations, so the backlog is in the queue, while the transport's
own delays (libzmq's I/O threads, a busy machine) would read as overload and shed work the
loop could do. Under sustained overload the queue's wait settles at the threshold
(``sched_shed_threshold`` x ``sched_lag_ms``, 8 ms by default): new low work is shed while the
wait is above it and queued again as soon as it is below, so the loop never idles while
work is shed, and queued work is at most that stale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import zmq

from ..config import EdgeConfig
from ..wire import MessageType, decode_metric_batch, lean_type
from ._lifecycle import AgentState
from ._registry import AgentRecord
from ._scheduler import (
    ITEM,
    DropReason,
    Event,
    PriorityScheduler,
    business_weight_of_priority,
    psutil_utilisation,
)

if TYPE_CHECKING:
    from ._loop import ControlLoop

log = logging.getLogger("edge.loop")

SLICE_NS = 1_000_000
"""Longest stretch of scheduled work before the loop runs its timers and housekeeping."""
INTAKE_MAX = 16
"""Most frames taken per intake (then one queued batch is evaluated), so a flood cannot keep
the loop from evaluating: libzmq reads its peers' pipes in turn, so with up to this many
peers a newly arrived frame is taken at the next intake."""
INLINE_SAMPLES = 8
"""A batch of at most this many samples is evaluated on intake, never queued or shed: its
evaluation (~20 µs) costs about what verifying, queueing and popping it does, so holding it
back would not free the loop, and shedding it would save nothing."""

COUNTERS = (
    "sched_overloads",
    "sched_queued",
    "sched_run",
    "sched_shed",
    "sched_evicted",
    "sched_rejected",
    "sched_samples_dropped",
    "sched_stale",
)
"""Loop counters of overload control (``edgectl status``/``stats``, Prometheus
``edge_events_total{event=...}``): times scheduled mode was entered; batches queued, evaluated
from the queue, shed under load, evicted from a full queue, refused by a full queue; samples in
the batches dropped; queued batches whose agent left or re-registered before their turn."""

_REASON_INDEX = {DropReason.SHED: 2, DropReason.EVICTED: 3, DropReason.REJECTED: 4}
_REASON_COUNTER = {
    DropReason.SHED: "sched_shed",
    DropReason.EVICTED: "sched_evicted",
    DropReason.REJECTED: "sched_rejected",
}
BY_PRIORITY_FIELDS = ("queued", "run", "shed", "evicted", "rejected")


class Batch(NamedTuple):
    """A queued MetricBatch frame and what is needed to evaluate or account for it."""

    rid: bytes
    buf: bytes
    t_recv: int
    rec: AgentRecord
    seq: int
    samples: int
    priority: int
    """The agent's highest bound rule priority; -1 when no rule is bound."""


class Rank(NamedTuple):
    eval: Any
    priority: int
    business: float
    sla_ms: float


def rank_of_rules(rules: Any) -> tuple[int, float]:
    """(highest priority, smallest sla_ms at that priority) of CompiledRules; (-1, inf) if none."""
    prio, sla = -1, math.inf
    for r in rules:
        p = r.priority
        s = r.sla_ns / 1e6
        if p > prio:
            prio, sla = p, s
        elif p == prio and s < sla:
            sla = s
    return prio, sla


class OverloadControl:
    """The loop's scheduled mode. Runs on the loop thread; ``snapshot`` on any thread."""

    def __init__(
        self,
        loop: ControlLoop,
        cfg: EdgeConfig,
        *,
        utilisation: Callable[[], float] | None = None,
    ) -> None:
        self.loop = loop
        self.active = False
        """In scheduled mode (batches go through the queue)."""
        self.budget_ns = cfg.sched_budget_us * 1000
        self.lag_full_ns = int(cfg.sched_lag_ms * 1e6)
        self.lag_ns = 0
        """How long the last batch evaluated from the queue waited in it (intake to turn)."""
        self.probe = "injected" if utilisation is not None else cfg.sched_probe
        if utilisation is None:
            utilisation = self.lag_load if cfg.sched_probe == "lag" else psutil_utilisation
        self._utilisation = utilisation
        self.sched: PriorityScheduler[Batch] = PriorityScheduler(
            capacity=cfg.sched_queue,
            shed_threshold=cfg.sched_shed_threshold,
            shed_below=cfg.sched_shed_below,
            utilisation=self._sample,
            # the lag is a subtraction: read it at every admission, no stale verdicts
            utilisation_period_ns=0 if cfg.sched_probe == "lag" else 50_000_000,
            clock=loop.clock,
            on_drop=self._dropped,
        )
        self._now = loop.clock.monotonic_ns
        self._ranks: dict[AgentRecord, Rank] = {}
        self._queued: dict[AgentRecord, int] = {}
        """Batches each agent has in the queue: a later batch of an agent with queued ones
        queues behind them, whatever its size, so its samples are never evaluated before
        older ones (a series' latest value must not go back in time)."""
        self.by_priority: dict[int, list[int]] = {}
        """Rule priority -> counts in BY_PRIORITY_FIELDS order."""
        self.last_util = 0.0

    # ---------------------------------------------------------------- load probe

    def lag_load(self) -> float:
        """The queue's current wait over ``sched_lag_ms``, at most 1.0; 0 when it is empty."""
        if not self.sched._heap:
            return 0.0
        return min(1.0, self.lag_ns / self.lag_full_ns)

    def _sample(self) -> float:
        self.last_util = u = float(self._utilisation())
        return u

    # ---------------------------------------------------------------- modes

    def behind(self, buf: bytes, t_recv: int) -> bool:
        """Past its budget, the direct drain asks: is this (verified) batch worth queueing,
        and did it wait in the transport at least the budget? Then the loop is behind."""
        view = decode_metric_batch(buf)
        if view.count <= INLINE_SAMPLES:
            return False  # not worth queueing: the drain goes on
        t_send = view.t_send_ns
        return not 0 < t_send <= t_recv or t_recv - t_send >= self.budget_ns

    def take_over(self, rid: bytes, buf: bytes, t_recv: int) -> None:
        """Enter scheduled mode with the verified batch in hand, and work the backlog."""
        loop = self.loop
        self.active = True
        loop.counters["sched_overloads"] += 1
        if loop._limiter.allow("sched_overload", t_recv):
            loop._event("overload", "", "", 0, "backlog: batches now run by priority")
        if not self._admit_guarded(rid, buf, t_recv):
            loop._handle(loop._on_batch, MessageType.METRIC_BATCH, rid, buf, t_recv)
        self.drain()

    @property
    def pending(self) -> bool:
        """Queued batches wait for their turn: the loop polls without blocking."""
        return bool(self.sched._heap)

    def drain(self) -> None:
        """Intake, then evaluate the highest-scored batch, until the queue and the socket are
        empty or a slice is used up (then the loop polls and calls again). The mode ends when
        the backlog is gone and the load probe last read below the threshold; while it reads
        above, scheduled mode stays (low batches go on being shed, not evaluated in arrival
        order between two bursts of shedding)."""
        loop = self.loop
        sched = self.sched
        now = self._now
        counters = loop.counters
        end = now() + SLICE_NS
        while True:
            more = self.intake()
            ev = sched.pop()
            if ev is None:
                if more and now() < end:
                    continue
                if not more and self.last_util <= sched.shed_threshold:
                    self.active = False
                return
            self._run(ev)
            counters["sched_run"] += 1
            if sched._heap and now() >= end:
                return  # (an empty queue goes round once more: the mode may end)

    def intake(self) -> bool:
        """Receive waiting frames (at most INTAKE_MAX): batches to the queue, the rest handled
        now. True when it stopped at INTAKE_MAX (more may be waiting)."""
        sock = self.loop.sock
        recv = sock.recv_multipart
        events = sock.getsockopt
        now = self._now
        counters = self.loop.counters
        for _ in range(INTAKE_MAX):
            if not cast(int, events(zmq.EVENTS)) & zmq.POLLIN:
                return False
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return False
            counters["frames_in"] += 1
            self.take(frames, now())
        return True

    def take(self, frames: list[bytes], t_recv: int) -> None:
        """One received frame: verified; a batch is queued, anything else handled now."""
        loop = self.loop
        if len(frames) != 2:
            loop._bad(
                "bad_frames", frames[0], f"{len(frames) - 1} frames; send one message per frame"
            )
            return
        rid, buf = frames
        mtype = lean_type(buf, loop.cfg.max_msg_bytes) or loop._verified(rid, buf)
        if mtype is None:
            return
        if mtype is MessageType.METRIC_BATCH and self._admit_guarded(rid, buf, t_recv):
            return
        loop._handle_any(mtype, rid, buf, t_recv)

    def _admit_guarded(self, rid: bytes, buf: bytes, t_recv: int) -> bool:
        try:
            return self._admit(rid, buf, t_recv)
        except Exception as exc:  # a bug must not take control down with it: counted, logged
            self.loop._handler_failed(exc, MessageType.METRIC_BATCH, rid, t_recv)
            return True

    def _admit(self, rid: bytes, buf: bytes, t_recv: int) -> bool:
        """Queue a batch; False when the loop should handle it now (a small batch, or one to
        refuse: unknown session, too big)."""
        loop = self.loop
        view = decode_metric_batch(buf)
        t_send = view.t_send_ns
        t0 = t_send if 0 < t_send <= t_recv else t_recv
        rec = loop.registry.by_session.get(view.session)
        if rec is None or rec.eval is None or view.count > loop.cfg.max_batch:
            return False
        if view.count <= INLINE_SAMPLES and not self._queued.get(rec):
            return False  # small, and nothing of this agent's is waiting: evaluate it now
        rank = self._rank(rec)
        # Liveness counts every batch, evaluated or not: overload must not make agents "lost".
        rec.last_seen_ns = t_recv
        if rec.state is AgentState.LOST:
            loop._revive(rec, t_recv)
        item = Batch(rid, buf, t_recv, rec, view.seq, view.count, rank.priority)
        counts = self._counts(rank.priority)
        self._queued[rec] = self._queued.get(rec, 0) + 1  # _dropped / _run take it back
        if self.sched.push(item, rank.business, rank.sla_ms, 1.0, t0):
            loop.counters["sched_queued"] += 1
            counts[0] += 1
        return True

    def _run(self, ev: Event) -> None:
        loop = self.loop
        item = cast(Batch, ev[ITEM])
        rec = item.rec
        self._unqueue(rec)
        if loop.registry.by_session.get(rec.session) is not rec:
            loop.counters["sched_stale"] += 1  # left or re-registered while queued
            return
        self._counts(item.priority)[1] += 1
        self.lag_ns = self._now() - item.t_recv
        # Batch gaps are a transport matter, judged in arrival order: evaluating out of
        # order (or after shed batches) must not count as gaps.
        # Nor may evaluating an old batch move the agent's last sign of life back.
        arrived, seen = rec.last_batch_seq, rec.last_seen_ns
        rec.last_batch_seq = item.seq - 1
        try:
            loop._handle(loop._on_batch, MessageType.METRIC_BATCH, item.rid, item.buf, item.t_recv)
        finally:
            rec.last_batch_seq = max(arrived, item.seq)
            rec.last_seen_ns = max(seen, rec.last_seen_ns)
        self.sched.executed(ev)

    # ---------------------------------------------------------------- ranking, accounting

    def _rank(self, rec: AgentRecord) -> Rank:
        r = self._ranks.get(rec)
        ev = rec.eval
        if r is None or r.eval is not ev:
            instances = list(ev.instances.values()) if ev is not None else []
            prio, sla = rank_of_rules({id(i.rule): i.rule for i in instances}.values())
            if len(self._ranks) > 4 * max(16, len(self.loop.registry.by_session)):
                live = set(self.loop.registry.by_session.values())
                self._ranks = {k: v for k, v in self._ranks.items() if k in live}
            r = self._ranks[rec] = Rank(ev, prio, business_weight_of_priority(max(prio, 0)), sla)
        return r

    def _counts(self, priority: int) -> list[int]:
        c = self.by_priority.get(priority)
        if c is None:
            c = self.by_priority[priority] = [0] * len(BY_PRIORITY_FIELDS)
        return c

    def _unqueue(self, rec: AgentRecord) -> None:
        n = self._queued.get(rec, 0) - 1
        if n > 0:
            self._queued[rec] = n
        else:
            self._queued.pop(rec, None)

    def _dropped(self, item: Batch, reason: DropReason) -> None:
        self._unqueue(item.rec)
        # it arrived: the agent's sequence moves on, so the next batch is not a transport gap
        item.rec.last_batch_seq = max(item.rec.last_batch_seq, item.seq)
        loop = self.loop
        counters = loop.counters
        counters[_REASON_COUNTER[reason]] += 1
        counters["sched_samples_dropped"] += item.samples
        self._counts(item.priority)[_REASON_INDEX[reason]] += 1
        kind = "overload_" + reason.value
        now = self._now()
        if not loop._limiter.allow(kind, now):
            return
        suppressed = loop._limiter.take_suppressed(kind)
        log.warning(
            "overload: batch from %s (rule priority %d) %s%s",
            item.rec.agent_id,
            item.priority,
            reason.value,
            f" ({suppressed} more since last report)" if suppressed else "",
        )
        loop._audit(
            "overload_drop",
            reason=reason.value,
            agent_id=item.rec.agent_id,
            priority=item.priority,
            samples=item.samples,
            queued=len(self.sched),
            load=round(self.last_util, 3),
            suppressed=suppressed,
        )
        loop._event("overload_drop", item.rec.agent_id, "", 0, f"{reason.value} p{item.priority}")

    def reset_counts(self) -> None:
        """Zero ``by_priority`` (with the loop's counters, on the loop thread)."""
        self.by_priority.clear()

    def snapshot(self) -> dict[str, Any]:
        """For status/stats (any thread: copies are atomic under the GIL)."""
        by = dict(self.by_priority)
        return {
            "enabled": True,
            "active": self.active,
            "queued": len(self.sched),
            "probe": self.probe,
            "load": round(self.last_util, 3),
            "weights": [round(w, 4) for w in self.sched.weights],
            "missed_sla": self.sched.missed,
            "by_priority": {
                ("none" if p < 0 else str(p)): dict(zip(BY_PRIORITY_FIELDS, list(c), strict=True))
                for p, c in sorted(by.items())
            },
        }
