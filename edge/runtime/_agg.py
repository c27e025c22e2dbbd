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
import time
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

BANKED = 10
"""At most max_samples / BANKED of a window's sample budget accrues unused (see _refill)."""

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

    def add_many(self, ts: list[int], vs: list[float]) -> None:
        """Add a run of samples (one batch's samples of this series, times ``ts`` and values
        ``vs``), the per-value work in C: sum/min/max over the lists, the systematic sample by
        slicing. The latest by sample time wins ``last`` (the last to arrive among equals)."""
        n = len(vs)
        if not n:
            return
        self.count += n
        self.total += math.fsum(vs)
        lo, hi = min(vs), max(vs)
        if lo < self.lo:
            self.lo = lo
        if hi > self.hi:
            self.hi = hi
        # the latest by sample time, the last to arrive among equal times
        rts = ts[::-1]
        i = n - 1 - max(range(n), key=rts.__getitem__)
        if ts[i] >= self.last_t:
            self.last_t = ts[i]
            self.last = vs[i]
        # every stride-th value, continuing the phase across runs
        first = (self.stride - 1 - self.phase) % self.stride
        self.kept.extend(vs[first :: self.stride])
        self.phase = (self.phase + n) % self.stride
        while len(self.kept) >= SAMPLE_CAP:  # halve the sample, double the stride
            self.kept = self.kept[::2]
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
    """Device health read from Linux's /proc and /sys (what psutil reads there, without its
    ~2 MB in edged's memory). Every reading degrades to NaN / 0 where the board cannot tell
    (another OS, a container without /sys/class/thermal)."""

    def __init__(self, data_dir: Path, proc: Path = Path("/proc"), sys_dir: Path = Path("/sys")):
        self._data_dir = data_dir
        self._proc = proc
        self._thermal = sys_dir / "class" / "thermal"
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._cpu = self._machine_cpu()
        self._self_cpu = (time.monotonic(), _own_cpu_s())

    def read(self) -> dict[str, Any]:
        """cpu_pct (machine, since the last read), mem_used_pct, load1, disk_free_bytes
        (data_dir's file system), temp_c (hottest thermal zone), edged_rss_bytes,
        edged_cpu_pct (of one core, since the last read)."""
        cpu_now = self._machine_cpu()
        cpu_pct = math.nan
        if cpu_now is not None and self._cpu is not None:
            busy, total = cpu_now[0] - self._cpu[0], cpu_now[1] - self._cpu[1]
            cpu_pct = 100.0 * busy / total if total > 0 else math.nan
        self._cpu = cpu_now
        t, own = time.monotonic(), _own_cpu_s()
        t0, own0 = self._self_cpu
        self._self_cpu = (t, own)
        return {
            "cpu_pct": cpu_pct,
            "mem_used_pct": _or_nan(self._mem_used_pct),
            "load1": _or_nan(lambda: os.getloadavg()[0]),
            "disk_free_bytes": int(_or_nan(self._disk_free, 0)),
            "temp_c": _or_nan(self._hottest),
            "edged_rss_bytes": int(_or_nan(self._rss, 0)),
            "edged_cpu_pct": 100.0 * (own - own0) / (t - t0) if t > t0 else math.nan,
        }

    def _machine_cpu(self) -> tuple[int, int] | None:
        """(busy, total) jiffies of all CPUs from /proc/stat's first line."""
        try:
            with open(self._proc / "stat", "rb") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 4:
            return None
        total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest in user)
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return total - idle, total

    def _mem_used_pct(self) -> float:
        info: dict[str, int] = {}
        with open(self._proc / "meminfo", "rb") as f:
            for line in f:
                key, _, rest = line.partition(b":")
                if key in (b"MemTotal", b"MemAvailable"):
                    info[key.decode()] = int(rest.split()[0])
        return 100.0 * (1.0 - info["MemAvailable"] / info["MemTotal"])

    def _disk_free(self) -> float:
        st = os.statvfs(self._data_dir)
        return float(st.f_bavail * st.f_frsize)

    def _rss(self) -> float:
        with open(self._proc / "self" / "statm", "rb") as f:
            return float(int(f.read().split()[1]) * self._page)

    def _hottest(self) -> float:
        temps = []
        with os.scandir(self._thermal) as it:
            for zone in it:
                if zone.name.startswith("thermal_zone"):
                    try:
                        with open(os.path.join(zone.path, "temp"), "rb") as f:
                            temps.append(int(f.read()) / 1000.0)
                    except (OSError, ValueError):
                        continue
        return max(temps) if temps else math.nan


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _or_nan(read: Callable[[], float], default: float = math.nan) -> float:
    try:
        return float(read())
    except (OSError, KeyError, ValueError, ZeroDivisionError, IndexError):
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
        self._refilled = self._start_mono
        self.tap.limit = self.tap.used + self.max_samples // BANKED

    def _refill(self, now: int) -> None:
        """The sample budget accrues evenly over the window (max_samples per window), with at
        most a tenth of it banked: summaries cover the whole window, and the digest's work on
        the ctl thread comes in small pieces rather than one burst at the window's start."""
        tap = self.tap
        room = tap.limit - tap.used + self.max_samples * (now - self._refilled) / self.window_ns
        self._refilled = now
        tap.limit = tap.used + int(min(room, self.max_samples // BANKED))

    def tick(self) -> None:
        now = self.clock.monotonic_ns()
        self._refill(now)
        self.digest()
        if now - self._start_mono >= self.window_ns:
            self.close_window()

    def digest(self) -> int:
        """Summarise the batches the loop handed over; returns the samples read."""
        pending = self.tap.pending
        series = self._series
        n = 0
        while pending:
            rec, buf = pending.popleft()
            keys = self._keys_of(rec)
            # group the batch's samples by series first: two appends per sample here, the
            # arithmetic per series in C (SeriesAcc.add_many)
            runs: dict[int, tuple[list[int], list[float]]] = {}
            for t_ns, value, mid, _flags in decode_metric_batch(buf).samples():
                run = runs.get(mid)
                if run is None:
                    run = runs[mid] = ([], [])
                run[0].append(t_ns)
                run[1].append(value)
            for mid, (ts, vs) in runs.items():
                key = keys[mid] if mid < len(keys) else None
                if key is None:
                    continue
                acc = series.get(key)
                if acc is None:
                    if len(series) >= self.max_series:
                        self._omitted.add(key)
                        continue
                    acc = series[key] = SeriesAcc()
                acc.add_many(ts, vs)
                n += len(vs)
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
