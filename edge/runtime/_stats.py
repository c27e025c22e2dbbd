"""Latency accounting: per-stage HDR histograms, SLA attainment per rule, the seed's jitter.

The loop thread records into an *interval* ``StatsBook`` (a few record_value calls per ack,
~0.7 µs each). Readers never touch it: ``StatsView.refresh()`` asks the loop to swap in a fresh
book (a pointer swap between two iterations) and merges the old one into its cumulative book on
the reader's thread, where percentile walks (~1 ms each) cannot stall control.

Stages (CLOCK_MONOTONIC ns; docs/protocol.md):
  collect  = batch.t_send_ns - sample.t_ns        (the sample waiting in the agent's batch)
  trans1   = edged receive - batch.t_send_ns
  compute  = evaluation start - edged receive      (verify + decode + lookup)
  rule     = decision - evaluation start
  trans2   = Ack.t_delivered_ns - decision         (encode + send + IPC to the agent)
  execute  = Ack.t_done_ns - Ack.t_delivered_ns
  e2e      = Ack.t_done_ns - sample.t_ns           (the sum; SLA is judged on it)
  ack      = edged receives the Ack - Ack.t_done_ns (not part of e2e)
Timer-triggered instructions (held-for deadlines) have no collect/trans1 stage; their compute
stage is the timer's lateness (deadline -> evaluation), so the stages still add up to e2e.

Memory: one histogram (1 ns .. 10 s, 3 significant digits) is 25,600 counters, all touched at
allocation, and a book holds 8 of them. Interval and window books count in 4 bytes (~100 KB
per histogram): they live seconds, and 2**31 - 1 counts in one 0.1 %-wide bucket would take
200,000 acks/s for 3 hours. Only the cumulative book, which lives as long as edged, counts in
8 bytes (~200 KB). The range is what the stages need (an Ack may come 5 s late, ack_timeout_ms)
and the precision is what edgectl reports; neither is narrowed.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from hdrh.histogram import HdrHistogram

STAGES = ("collect", "trans1", "compute", "rule", "trans2", "execute", "e2e", "ack")
_MAX_NS = 10_000_000_000  # values above 10 s are clamped (and counted as such)
_PCTS = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


INTERVAL_WORD = 4
"""Bytes per counter in interval and window books."""
TOTAL_WORD = 8
"""Bytes per counter in the cumulative book."""


WINDOW_DIGITS = 2
"""Significant digits of the upstream aggregation window's book: its percentiles go out as
1 %-precise figures, and 2 digits take an eighth of 3 digits' counters (~14 KB a histogram)."""


def _hist(word_size: int = INTERVAL_WORD, digits: int = 3) -> HdrHistogram:
    h = HdrHistogram(1, _MAX_NS, digits, word_size=word_size)
    # hdrh's histogram and its encoder point at each other: a reference cycle, which only the
    # cyclic GC frees. edged swaps a book (8 histograms, ~800 KB) at every stats refresh and
    # collects generation 2 once a minute (GcOffLoop), so freed books piled up at ~0.8 MB/s
    # with a 1 s stats interval. With the back-reference weak, a book is freed the moment it
    # is dropped.
    h.encoder.histogram = weakref.proxy(h)
    return h


LE_NS = tuple(
    round(ms * 1_000_000)
    for ms in (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000,
               2500, 5000, 10000)
)
"""Upper bounds (ns) of the latency histograms Prometheus gets (``le``: 10 µs .. 10 s, then
+Inf): fixed, so that boards aggregate and ``rate()`` works across restarts."""


class RuleCounts:
    __slots__ = (
        "fired",
        "ok",
        "failed",
        "rejected",
        "timeout",
        "undeliverable",
        "sla_met",
        "sla_judged",
        "e2e_le",
        "e2e_sum_ns",
    )
    _COUNTS = __slots__[:8]

    def __init__(self) -> None:
        self.fired = self.ok = self.failed = self.rejected = 0
        self.timeout = self.undeliverable = self.sla_met = self.sla_judged = 0
        self.e2e_le = [0] * (len(LE_NS) + 1)
        """Acknowledged instructions' e2e per LE_NS bucket (not cumulative; the last: +Inf)."""
        self.e2e_sum_ns = 0

    def add(self, other: RuleCounts) -> None:
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.e2e_le = [a + b for a, b in zip(self.e2e_le, other.e2e_le, strict=True)]
        self.e2e_sum_ns += other.e2e_sum_ns

    def minus(self, base: RuleCounts | None) -> RuleCounts:
        """These counts since ``base`` (an earlier copy of them)."""
        out = RuleCounts()
        out.add(self)
        if base is not None:
            for name in self._COUNTS:
                setattr(out, name, getattr(out, name) - getattr(base, name))
            out.e2e_le = [a - b for a, b in zip(out.e2e_le, base.e2e_le, strict=True)]
            out.e2e_sum_ns -= base.e2e_sum_ns
        return out

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {name: getattr(self, name) for name in self._COUNTS}
        d["sla_rate"] = (self.sla_met / self.sla_judged) if self.sla_judged else None
        return d


class StatsBook:
    """One interval's histograms and per-rule counts. Owned by exactly one thread at a time.

    ``word_size``: bytes per histogram counter; INTERVAL_WORD unless the book accumulates for
    the process's lifetime (TOTAL_WORD)."""

    __slots__ = ("hists", "rules", "clamped", "skewed")

    def __init__(self, word_size: int = INTERVAL_WORD, digits: int = 3) -> None:
        self.hists = {s: _hist(word_size, digits) for s in STAGES}
        self.rules: dict[str, RuleCounts] = {}
        self.clamped = 0
        self.skewed = 0

    def rule(self, rule_id: str) -> RuleCounts:
        rc = self.rules.get(rule_id)
        if rc is None:
            rc = self.rules[rule_id] = RuleCounts()
        return rc

    def _rec(self, stage: str, ns: int) -> None:
        if ns < 0:
            self.skewed += 1  # a peer on another clock: not a latency we can judge
            return
        if ns > _MAX_NS:
            self.clamped += 1
            ns = _MAX_NS
        self.hists[stage].record_value(ns or 1)

    def record_ack(
        self,
        rule_id: str,
        status: int,
        sla_ns: int,
        t_sample: int,
        t_batch_send: int,
        t_recv: int,
        t_eval: int,
        t_decide: int,
        t_delivered: int,
        t_done: int,
        t_ack_recv: int,
        from_timer: bool,
    ) -> bool:
        """Record one acknowledged instruction; returns whether its SLA was met."""
        rc = self.rule(rule_id)
        if status == 0:
            rc.ok += 1
        elif status == 1:
            rc.failed += 1
        else:
            rc.rejected += 1
        rec = self._rec
        if from_timer:
            # no sample, no transport: compute is how late the loop served the deadline
            rec("compute", t_eval - t_sample)
        else:
            rec("collect", t_batch_send - t_sample)
            rec("trans1", t_recv - t_batch_send)
            rec("compute", t_eval - t_recv)
        rec("rule", t_decide - t_eval)
        rec("trans2", t_delivered - t_decide)
        rec("execute", t_done - t_delivered)
        e2e = t_done - t_sample
        rec("e2e", e2e)
        rec("ack", t_ack_recv - t_done)
        if e2e >= 0:
            rc.e2e_le[bisect_left(LE_NS, e2e)] += 1
            rc.e2e_sum_ns += e2e
        met = status == 0 and 0 <= e2e <= sla_ns
        rc.sla_judged += 1
        rc.sla_met += met
        return met

    def record_unacked(self, rule_id: str, reason: str) -> None:
        """An instruction that got no Ack (timeout) or could not be sent: an SLA miss."""
        rc = self.rule(rule_id)
        if reason == "timeout":
            rc.timeout += 1
        else:
            rc.undeliverable += 1
        rc.sla_judged += 1

    def merge(self, other: StatsBook) -> None:
        for s in STAGES:
            src, dst = other.hists[s], self.hists[s]
            if not src.get_total_count():
                continue
            if src.word_size == dst.word_size and src.sub_bucket_count == dst.sub_bucket_count:
                dst.add(src)  # hdrh adds the arrays in place
            else:  # hdrh would walk all 25,600 counters in Python: add the non-empty ones
                for value, count in _buckets(src):
                    dst.record_value(value, count)
        for rid, rc in other.rules.items():
            self.rule(rid).add(rc)
        self.clamped += other.clamped
        self.skewed += other.skewed


def _buckets(h: HdrHistogram) -> list[tuple[int, int]]:
    """``(value, count)`` of the non-empty buckets, in value order.

    hdrh's own percentile and mean walk every bucket in Python (~27k here, ~5 ms each, all
    while holding the GIL the control loop needs); finding the non-empty ones with
    ``itertools.compress`` runs at C speed, so a whole summary costs well under a millisecond.
    """
    counts = h.counts[: h.counts_len]
    value = h.get_value_from_index
    return [(value(i), counts[i]) for i in itertools.compress(range(len(counts)), counts)]


def _since(buckets: list[tuple[int, int]], base: dict[int, int] | None) -> list[tuple[int, int]]:
    """The buckets' counts minus ``base`` (value -> count of an earlier copy)."""
    if not base:
        return buckets
    return [(v, c - base.get(v, 0)) for v, c in buckets if c > base.get(v, 0)]


def _summary(h: HdrHistogram, base: dict[int, int] | None = None) -> dict[str, Any]:
    """count, mean, min, max and percentiles (µs), with hdrh's semantics: a percentile is the
    highest value equivalent to the bucket where the cumulative count reaches it. ``base``:
    only what was recorded since that copy of the buckets (the operator's reset)."""
    buckets = _since(_buckets(h), base)
    n = sum(c for _, c in buckets)
    if not n:
        return {"count": 0}
    median = h._hdr_median_equiv_value  # noqa: SLF001 - the value hdrh's mean uses
    out: dict[str, Any] = {
        "count": n,
        "mean": sum(median(v) * c for v, c in buckets) / n / 1000.0,
    }
    # hdrh's target count: round half up, at least one
    targets = [(name, max(1, int(pct * n / 100.0 + 0.5))) for name, pct in _PCTS]
    cum = 0
    k = 0
    for v, c in buckets:
        cum += c
        while k < len(targets) and cum >= targets[k][1]:
            out[targets[k][0]] = h.get_highest_equivalent_value(v) / 1000.0
            k += 1
    if base:
        out["max"] = h.get_highest_equivalent_value(buckets[-1][0]) / 1000.0
        out["min"] = h.get_lowest_equivalent_value(buckets[0][0]) / 1000.0
    else:
        out["max"] = h.get_max_value() / 1000.0
        out["min"] = h.get_min_value() / 1000.0
    return out


def cumulative_le(h: HdrHistogram) -> tuple[list[int], int, float]:
    """Prometheus's view of ``h``: cumulative counts at or below each LE_NS bound (then +Inf),
    the count, and the sum in seconds (from bucket midpoints: within 0.1 %)."""
    buckets = _buckets(h)
    median = h._hdr_median_equiv_value  # noqa: SLF001 - the value hdrh's mean uses
    out, cum, i = [], 0, 0
    for v, c in buckets:
        while i < len(LE_NS) and v > LE_NS[i]:
            out.append(cum)
            i += 1
        cum += c
    out += [cum] * (len(LE_NS) + 1 - len(out))
    return out, cum, sum(median(v) * c for v, c in buckets) / 1e9


def jitter_pct(h: HdrHistogram, base: dict[int, int] | None = None) -> float | None:
    """The seed's jitter: mean absolute deviation of e2e over its mean, in percent.

    Both mean and deviation use the histogram's bucket values (3 significant digits)."""
    items = _since(_buckets(h), base)
    n = sum(c for _, c in items)
    if not n:
        return None
    mean = sum(v * c for v, c in items) / n
    if mean <= 0:
        return 0.0
    return sum(abs(v - mean) * c for v, c in items) / n / mean * 100.0


def share_at_or_below(h: HdrHistogram, ns: int) -> float | None:
    """The fraction of recorded values at or below ``ns``, None if empty. A bucket counts when
    its lowest value is within ``ns`` (3 significant digits: off by at most 0.1 % of ``ns``)."""
    items = _buckets(h)
    n = sum(c for _, c in items)
    if not n:
        return None
    return sum(c for v, c in items if v <= ns) / n


class StatsView:
    """The reader side: cumulative stats, refreshed by swapping the loop's interval book.

    ``swap`` runs a callable on the loop thread that installs a new book and returns the old.
    """

    def __init__(self, swap: Callable[[StatsBook], StatsBook | None], *, windowed: bool = False):
        self._swap = swap
        self._lock = threading.Lock()
        self._total = StatsBook(TOTAL_WORD)
        self._window: StatsBook | None = StatsBook(digits=WINDOW_DIGITS) if windowed else None
        """Since the last ``take_window()`` (the upstream aggregation window), when windowed."""
        self._base: _Baseline | None = None
        """What the cumulative book held at the operator's last reset (``edgectl stats
        --reset``); snapshots report since then. The book itself is never reset: Prometheus
        reads it, and its histograms and counters only grow."""

    def refresh(self, swap: Callable[[StatsBook], StatsBook | None] | None = None) -> None:
        """Merge the loop's interval book; ``swap`` overrides the usual one (e.g. a direct
        swap once the loop has stopped)."""
        fresh = StatsBook()  # allocated here, not on the loop (~60 µs per histogram)
        with self._lock:
            old = (swap or self._swap)(fresh)
            if old is not None:
                self._total.merge(old)
                if self._window is not None:
                    self._window.merge(old)

    def take_window(self, swap: Callable[[StatsBook], StatsBook | None] | None = None) -> StatsBook:
        """Refresh, then return the window's book and start a new window (windowed only)."""
        self.refresh(swap)
        fresh = StatsBook(digits=WINDOW_DIGITS)
        with self._lock:
            book, self._window = self._window, fresh
        if book is None:
            raise RuntimeError("take_window() on a StatsView made without windowed=True")
        return book

    def reset(self) -> None:
        """The operator's reset: later snapshots count from now. Prometheus's histograms and
        counters (``prometheus()``, ``snapshot(since_reset=False)``) are not touched."""
        self.refresh()
        with self._lock:
            self._base = _Baseline(self._total)

    def snapshot(self, refresh: bool = True, *, since_reset: bool = True) -> dict[str, Any]:
        """Percentiles in µs per stage, SLA per rule and overall, jitter in percent; since the
        operator's last reset, or (``since_reset=False``) since edged started."""
        if refresh:
            self.refresh()
        with self._lock:
            t = self._total
            base = self._base if since_reset else None
            hb = base.hists if base is not None else {}
            stages = {s: _summary(t.hists[s], hb.get(s)) for s in STAGES}
            counts = {
                rid: rc.minus(base.rules.get(rid) if base is not None else None)
                for rid, rc in sorted(t.rules.items())
            }
            rules = {rid: rc.as_dict() for rid, rc in counts.items() if rc.sla_judged or rc.fired}
            met = sum(rc.sla_met for rc in counts.values())
            judged = sum(rc.sla_judged for rc in counts.values())
            return {
                "stages_us": stages,
                "e2e_us": stages["e2e"],
                "jitter_pct": jitter_pct(t.hists["e2e"], hb.get("e2e")),
                "sla_rate": (met / judged) if judged else None,
                "sla_met": met,
                "sla_judged": judged,
                "rules": rules,
                "clamped": t.clamped - (base.clamped if base is not None else 0),
                "clock_skewed": t.skewed - (base.skewed if base is not None else 0),
            }

    def prometheus(self) -> dict[str, Any]:
        """Since start, never reset: per stage and per rule, ``(cumulative counts per LE_NS
        bound then +Inf, count, sum in seconds)``. Call after ``snapshot()`` (no refresh)."""
        with self._lock:
            t = self._total
            stages = {s: cumulative_le(t.hists[s]) for s in STAGES}
            rules = {
                rid: (list(itertools.accumulate(rc.e2e_le)), sum(rc.e2e_le), rc.e2e_sum_ns / 1e9)
                for rid, rc in sorted(t.rules.items())
            }
        return {"le_s": [ns / 1e9 for ns in LE_NS], "stages": stages, "rules": rules}


class _Baseline:
    """A copy of the cumulative book's counts at the operator's reset: the non-empty buckets
    only (a few hundred at most), not the 25,600-counter histograms."""

    __slots__ = ("hists", "rules", "clamped", "skewed")

    def __init__(self, book: StatsBook):
        self.hists = {s: dict(_buckets(h)) for s, h in book.hists.items()}
        self.rules = {rid: rc.minus(None) for rid, rc in book.rules.items()}
        self.clamped = book.clamped
        self.skewed = book.skewed
