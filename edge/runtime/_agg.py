"""Aggregation windows for the upstream: one Aggregate per ``agg_window_s`` into the outbox.

::

    edge-loop                          edge-ctl (tick, every ~100 ms)
    ---------                          ------------------------------
    _on_batch: verified MetricBatch    digest(): read pending batches' samples into per-series
      -> BatchTap.offer(rec, buf)        count/min/max/sum/last + a systematic sample (p99)
         one deque append per batch;   window end: + the window's StatsBook (per-rule outcomes,
         beyond the window's sample      stage latencies), counter deltas, device health
         budget only counted           -> encode_aggregate -> StoreWriter.put_outbox (LMDB)
                                       edge-sync publishes the outbox upstream (edge/sync)

The loop never does per-sample work for aggregation: it hands over the frame it already holds.
The digest runs on the ctl thread, which shares the GIL with the loop, so its work per window is
bounded by ``agg_max_samples`` (samples beyond it are counted in ``samples`` but not summarised
into ``series``) and ``agg_max_series``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from array import array
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clock import Clock
from ..wire import decode_metric_batch, encode_aggregate
from ._stats import STAGES, StatsBook, _summary, jitter_pct

if TYPE_CHECKING:
    from ._registry import AgentRecord

log = logging.getLogger("edge.agg")

SAMPLE_CAP = 2048
"""Values kept per series and window for its p99 (a systematic sample: every k-th value)."""


class BatchTap:
    """The loop's side: verified batches handed to the digest, within a sample budget.

    Only the loop writes ``used`` and ``skipped``; only the digest writes ``limit``, so neither
    needs a lock."""

    __slots__ = ("pending", "used", "limit", "skipped")

    def __init__(self, limit: int) -> None:
        self.pending: deque[tuple[AgentRecord, bytes]] = deque()
        self.used = 0
        self.limit = limit
        self.skipped = 0

    def offer(self, rec: AgentRecord, buf: bytes, count: int) -> None:
        if self.used < self.limit:
            self.used += count
            self.pending.append((rec, buf))
        else:
            self.skipped += count


class SeriesAcc:
    """One series' window: exact count/min/max/sum/last, and a systematic sample for p99."""

    __slots__ = ("count", "total", "lo", "hi", "last", "last_t", "kept", "stride", "phase")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.last = math.nan
        self.last_t = -(2**63)
        self.kept = array("d")
        self.stride = 1
        self.phase = 0

    def add(self, t_ns: int, v: float) -> None:
        self.count += 1
        self.total += v
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v
        if t_ns >= self.last_t:
            self.last_t = t_ns
            self.last = v
        self.phase += 1
        if self.phase >= self.stride:
            self.phase = 0
            kept = self.kept
            kept.append(v)
            if len(kept) >= SAMPLE_CAP:  # halve the sample, double the stride
                self.kept = kept[::2]
                self.stride *= 2

    def p99(self) -> float:
        kept = sorted(self.kept)
        if not kept:
            return math.nan
        return kept[min(len(kept) - 1, max(0, math.ceil(0.99 * len(kept)) - 1))]

    def doc(
        self, agent_id: str, metric: str, labels: tuple[tuple[str, str], ...]
    ) -> dict[str, Any]:
        n = self.count
        return {
            "agent_id": agent_id,
            "metric": metric,
            "labels": [{"key": k, "value": v} for k, v in labels],
            "count": n,
            "min": self.lo if n else math.nan,
            "max": self.hi if n else math.nan,
            "mean": self.total / n if n else math.nan,
            "last": self.last,
            "p99": self.p99(),
        }


SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]


class HealthProbe:
    """Device health with psutil (imported on first use: edged without aggregation never
    loads it). Every reading degrades to NaN / 0 when the board cannot tell."""

    def __init__(self, data_dir: Path) -> None:
        import psutil

        self._psutil = psutil
        self._data_dir = data_dir
        self._proc = psutil.Process(os.getpid())
        psutil.cpu_percent(None)  # starts the measuring interval
        self._proc.cpu_percent(None)

    def read(self) -> dict[str, Any]:
        ps = self._psutil
        out: dict[str, Any] = {
            "cpu_pct": _or_nan(lambda: ps.cpu_percent(None)),
            "mem_used_pct": _or_nan(lambda: ps.virtual_memory().percent),
            "load1": _or_nan(lambda: os.getloadavg()[0]),
            "disk_free_bytes": int(_or_nan(lambda: shutil.disk_usage(self._data_dir).free, 0)),
            "temp_c": _or_nan(self._hottest),
            "edged_rss_bytes": int(_or_nan(lambda: self._proc.memory_info().rss, 0)),
            "edged_cpu_pct": _or_nan(lambda: self._proc.cpu_percent(None)),
        }
        return out

    def _hottest(self) -> float:
        read = getattr(self._psutil, "sensors_temperatures", None)
        temps = [t.current for ts in (read() if read else {}).values() for t in ts]
        return max(temps) if temps else math.nan


def _or_nan(read: Callable[[], float], default: float = math.nan) -> float:
    try:
        return float(read())
    except (OSError, AttributeError, ValueError, RuntimeError):
        return default


class Aggregator:
    """Builds one Aggregate document per window; ``tick()`` runs on the ctl thread.

    ``counters`` reads the loop's counters (a copy), ``table`` the active rule table's
    ``(version, hash hex)``, ``agents_active`` the number of active agents; ``take_book``
    returns the window's StatsBook (and starts the next); ``emit`` receives the encoded
    Aggregate and the window end in wall ns (the daemon puts it into the outbox).
    """

    def __init__(
        self,
        *,
        device_id: str,
        window_s: float,
        max_samples: int,
        max_series: int,
        clock: Clock,
        tap: BatchTap,
        counters: Callable[[], dict[str, int]],
        table: Callable[[], tuple[int, str]],
        agents_active: Callable[[], int],
        take_book: Callable[[], StatsBook],
        emit: Callable[[bytes, int], None],
        health: HealthProbe | None,
    ) -> None:
        self.device_id = device_id
        self.window_ns = int(window_s * 1e9)
        self.max_samples = max_samples
        self.max_series = max_series
        self.clock = clock
        self.tap = tap
        self._counters = counters
        self._table = table
        self._agents_active = agents_active
        self._take_book = take_book
        self._emit = emit
        self._health = health
        self.windows = 0
        self._begin(counters())

    def _begin(self, base: dict[str, int]) -> None:
        self._start_mono = self.clock.monotonic_ns()
        self._start_wall_ns = self.clock.wall_ms() * 1_000_000
        self._base = base
        self._series: dict[SeriesKey, SeriesAcc] = {}
        self._keys: dict[int, tuple[AgentRecord, list[SeriesKey | None]]] = {}
        self._summarised = 0
        self._omitted: set[SeriesKey] = set()
        self._skipped_base = self.tap.skipped
        self.tap.limit = self.tap.used + self.max_samples

    def tick(self) -> None:
        self.digest()
        if self.clock.monotonic_ns() - self._start_mono >= self.window_ns:
            self.close_window()

    def digest(self) -> int:
        """Summarise the batches the loop handed over; returns the samples read."""
        pending = self.tap.pending
        n = 0
        while pending:
            rec, buf = pending.popleft()
            keys = self._keys_of(rec)
            series = self._series
            for t_ns, value, mid, _flags in decode_metric_batch(buf).samples():
                key = keys[mid] if mid < len(keys) else None
                if key is None:
                    continue
                acc = series.get(key)
                if acc is None:
                    if len(series) >= self.max_series:
                        self._omitted.add(key)
                        continue
                    acc = series[key] = SeriesAcc()
                acc.add(t_ns, value)
                n += 1
        self._summarised += n
        return n

    def _keys_of(self, rec: AgentRecord) -> list[SeriesKey | None]:
        got = self._keys.get(id(rec))
        if got is not None and got[0] is rec:
            return got[1]
        keys: list[SeriesKey | None] = []
        for mid, name, labels in rec.series:
            keys.extend([None] * (mid + 1 - len(keys)))
            keys[mid] = (rec.agent_id, name, labels)
        self._keys[id(rec)] = (rec, keys)
        return keys

    def close_window(self) -> dict[str, Any]:
        """Emit the current window (also at shutdown, so a partial window is not lost) and
        start the next; returns the document emitted."""
        self.digest()
        now_counters = self._counters()
        base = self._base
        book = self._take_book()
        version, table_hash = self._table()
        deltas = {
            k: v - base.get(k, 0) for k, v in sorted(now_counters.items()) if v != base.get(k, 0)
        }
        doc: dict[str, Any] = {
            "device_id": self.device_id,
            "window_start_unix_ns": self._start_wall_ns,
            "window_end_unix_ns": self.clock.wall_ms() * 1_000_000,
            "rules_version": version,
            "rules_hash": table_hash,
            "agents_active": self._agents_active(),
            "samples": max(0, deltas.get("samples", 0)),
            "samples_summarised": self._summarised,
            "series": [acc.doc(*key) for key, acc in self._series.items()],
            "series_omitted": len(self._omitted),
            "rules": [_rule_doc(rid, rc) for rid, rc in sorted(book.rules.items())],
            "latency": [_latency_doc(s, book) for s in STAGES if book.hists[s].get_total_count()],
            "counters": [{"name": k, "delta": v} for k, v in deltas.items() if v > 0],
            "health": self._health.read() if self._health is not None else {},
            "jitter_pct": _nan_if_none(jitter_pct(book.hists["e2e"])),
        }
        self._emit(encode_aggregate(doc), doc["window_end_unix_ns"])
        self.windows += 1
        self._begin(now_counters)
        return doc


def _rule_doc(rule_id: str, rc: Any) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "instructions": rc.fired,
        "acks_ok": rc.ok,
        "acks_failed": rc.failed,
        "acks_rejected": rc.rejected,
        "unacked": rc.timeout + rc.undeliverable,
        "sla_judged": rc.sla_judged,
        "sla_misses": rc.sla_judged - rc.sla_met,
    }


def _latency_doc(stage: str, book: StatsBook) -> dict[str, Any]:
    s = _summary(book.hists[stage])
    return {
        "stage": stage,
        "count": s["count"],
        "p50_us": s["p50"],
        "p90_us": s["p90"],
        "p99_us": s["p99"],
        "p999_us": s["p999"],
        "max_us": s["max"],
    }


def _nan_if_none(v: float | None) -> float:
    return math.nan if v is None else v
