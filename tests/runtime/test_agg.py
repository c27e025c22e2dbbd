"""Aggregation windows: per-series summaries off the loop, bounded work, one Aggregate per window."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.clock import MockClock
from edge.runtime._agg import SAMPLE_CAP, Aggregator, BatchTap, SeriesAcc
from edge.runtime._registry import AgentRecord
from edge.runtime._stats import StatsBook
from edge.wire import decode_aggregate, encode_metric_batch

WINDOW_NS = 10_000_000_000


def add_one(acc: SeriesAcc, t_ns: int, v: float) -> None:
    """The reference: one sample at a time, the obvious way (SeriesAcc.add_many must agree)."""
    acc.count += 1
    acc.total += v
    if v < acc.lo:
        acc.lo = v
    if v > acc.hi:
        acc.hi = v
    if t_ns >= acc.last_t:
        acc.last_t = t_ns
        acc.last = v
    acc.phase += 1
    if acc.phase >= acc.stride:
        acc.phase = 0
        acc.kept.append(v)
        if len(acc.kept) >= SAMPLE_CAP:  # halve the sample, double the stride
            acc.kept = acc.kept[::2]
            acc.stride *= 2


def _agent(agent_id: str = "a1") -> AgentRecord:
    series = [(0, "cpu", ()), (1, "temp", (("zone", "x"),))]
    return AgentRecord(
        agent_id, 7, b"r", series, kind="t", pid=1, heartbeat_ms=100, now_ns=0, wall_ms=0
    )


class Rig:
    def __init__(self, *, max_samples: int = 1000, max_series: int = 100) -> None:
        self.clock = MockClock()
        self.tap = BatchTap(max_samples)
        self.counters = {"samples": 0, "bad_input": 0}
        self.book = StatsBook()
        self.out: list[tuple[bytes, int]] = []
        self.agg = Aggregator(
            device_id="board-1",
            window_s=WINDOW_NS / 1e9,
            max_samples=max_samples,
            max_series=max_series,
            clock=self.clock,
            tap=self.tap,
            counters=lambda: dict(self.counters),
            table=lambda: (4, "ab" * 16),
            agents_active=lambda: 1,
            take_book=self._take_book,
            emit=lambda buf, wall_ns: self.out.append((buf, wall_ns)),
            health=None,
        )

    def _take_book(self) -> StatsBook:
        book, self.book = self.book, StatsBook()
        return book

    def send(self, rec: AgentRecord, samples: list[tuple[int, float, int]]) -> None:
        """What the loop does for a verified batch: count it, offer the frame."""
        self.counters["samples"] += len(samples)
        self.tap.offer(rec, encode_metric_batch(rec.session, 0, 0, samples), len(samples))

    def window(self) -> dict[str, Any]:
        self.clock.advance(WINDOW_NS)
        self.agg.tick()
        assert self.out, "no aggregate emitted"
        return decode_aggregate(self.out[-1][0])


def test_a_window_summarises_each_series_exactly() -> None:
    rig = Rig()
    a = _agent()
    rig.send(a, [(0, 0.5, 1), (0, 0.9, 3), (1, 40.0, 2)])
    rig.send(a, [(0, 0.1, 2), (1, 42.0, 4)])
    rig.agg.tick()  # digests the pending batches before the window ends
    assert not rig.tap.pending and not rig.out
    rig.counters["bad_input"] += 2
    doc = rig.window()
    assert doc["device_id"] == "board-1" and doc["rules_version"] == 4
    assert doc["samples"] == doc["samples_summarised"] == 5
    by = {(s["agent_id"], s["metric"]): s for s in doc["series"]}
    cpu = by["a1", "cpu"]
    assert (cpu["count"], cpu["min"], cpu["max"], cpu["last"]) == (3, 0.1, 0.9, 0.9)
    assert cpu["mean"] == pytest.approx(0.5)
    temp = by["a1", "temp"]
    assert temp["labels"] == [{"key": "zone", "value": "x"}] and temp["last"] == 42.0
    assert {"name": "bad_input", "delta": 2} in doc["counters"]
    assert doc["window_end_unix_ns"] - doc["window_start_unix_ns"] == WINDOW_NS


def test_windows_do_not_overlap_and_an_empty_window_still_reports() -> None:
    rig = Rig()
    rig.send(_agent(), [(0, 1.0, 1)])
    first = rig.window()
    second = rig.window()
    assert first["samples"] == 1 and second["samples"] == 0 and second["series"] == []
    assert second["window_start_unix_ns"] == first["window_end_unix_ns"]
    assert math.isnan(second["jitter_pct"])


def test_work_per_window_is_bounded_and_what_is_not_summarised_is_still_counted() -> None:
    # 40 samples a window: 4 may be banked at any time, the rest accrue evenly
    rig = Rig(max_samples=40, max_series=1)
    a = _agent()
    rig.send(a, [(0, 1.0, 1), (0, 2.0, 2), (0, 3.0, 3)])
    rig.send(a, [(1, 9.0, 4), (0, 4.0, 5)])  # within the budget when offered (3 < 4)
    rig.send(a, [(0, 5.0, 6)])  # over it: counted, not summarised
    rig.clock.advance(WINDOW_NS // 4)
    rig.agg.tick()  # a quarter window accrues 10, capped at the 4 banked
    rig.send(a, [(0, 6.0, 7)] * 5)
    rig.send(a, [(0, 7.0, 8)])  # over again
    doc = rig.window()
    assert doc["samples"] == 12
    assert doc["samples_summarised"] == 9  # temp is beyond max_series
    assert doc["series_omitted"] == 1 and [s["metric"] for s in doc["series"]] == ["cpu"]
    assert rig.tap.skipped == 2
    # the next window starts with its own banked budget
    rig.send(a, [(0, 6.0, 7)])
    assert rig.window()["samples_summarised"] == 1


def test_per_rule_outcomes_and_latency_come_from_the_window_book() -> None:
    rig = Rig()
    rc = rig.book.rule("hot")
    rc.fired = 3
    for ok, e2e in ((0, 300_000), (0, 2_000_000), (1, 400_000)):
        rig.book.record_ack("hot", ok, 1_000_000, 0, 0, 0, 0, 0, 0, e2e, e2e, False)
    rig.book.record_unacked("hot", "timeout")
    doc = rig.window()
    (rule,) = doc["rules"]
    assert rule == {
        "rule_id": "hot",
        "instructions": 3,
        "acks_ok": 2,
        "acks_failed": 1,
        "acks_rejected": 0,
        "unacked": 1,
        "sla_judged": 4,
        "sla_misses": 3,  # the late ack, the failed one, the timeout
    }
    e2e = next(x for x in doc["latency"] if x["stage"] == "e2e")
    assert e2e["count"] == 3 and 1900 <= e2e["max_us"] <= 2100
    assert doc["jitter_pct"] > 0


def test_p99_comes_from_a_bounded_systematic_sample() -> None:
    acc = SeriesAcc()
    n = 100_000
    for start in range(0, n, 500):  # as the digest feeds it: one batch's run at a time
        ts = list(range(start, start + 500))
        acc.add_many(ts, [float(t) for t in ts])
    assert len(acc.kept) < SAMPLE_CAP
    assert acc.count == n and acc.lo == 0 and acc.hi == n - 1 and acc.last == n - 1
    assert acc.p99() == pytest.approx(0.99 * n, rel=0.01)


def test_last_is_the_latest_sample_by_time_not_by_arrival() -> None:
    acc = SeriesAcc()
    acc.add_many([20], [2.0])
    acc.add_many([10], [1.0])
    assert acc.last == 2.0


UPSTREAM = "nats://127.0.0.1:1"  # configured; edged itself never connects to it


def test_a_live_edged_appends_aggregates_to_the_outbox_and_keeps_the_last_partial_window(
    make_cfg: Any, agent_factory: Any
) -> None:
    from edge.runtime import Edged
    from tests.support import wait_for

    d = Edged(make_cfg(agg_window_s=0.2, device_id="board-7", upstream_url=UPSTREAM)).start()
    try:
        got: list[Any] = []
        with agent_factory("agg-1", ["cpu_usage"], handler=got.append) as agent:
            agent.report_many([("cpu_usage", 0.2), ("cpu_usage", 0.4)])
            agent.report("cpu_usage", 0.99)  # fires cpu_hot
            wait_for(lambda: got, what="the instruction")
            assert d.outbox is not None and d.writer is not None

            def summarised() -> list[dict[str, Any]]:
                d.writer.flush()
                docs = [decode_aggregate(b) for _, b in d.outbox.peek(0, 100)]
                return [x for x in docs if x["series"]]

            docs = wait_for(summarised, what="an aggregate with the agent's series")
        assert docs[0]["device_id"] == "board-7"
        (cpu,) = (s for doc in docs for s in doc["series"] if s["agent_id"] == "agg-1")
        assert (cpu["count"], cpu["min"], cpu["max"], cpu["last"]) == (3, 0.2, 0.99, 0.99)
        rules = {
            r["rule_id"]: r
            for doc in wait_for(
                lambda: [
                    x for x in (decode_aggregate(b) for _, b in d.outbox.peek(0, 100)) if x["rules"]
                ],
                what="the rule's outcome in a window",
            )
            for r in doc["rules"]
        }
        assert rules["cpu_hot"]["instructions"] == 1 and rules["cpu_hot"]["acks_ok"] == 1
        from edge.cli import CtlClient
        from edge.wire import CtlOp

        with CtlClient(d.cfg.run_dir) as c:
            up = c.request(CtlOp.STATUS)["upstream"]
        assert up["windows"] >= 1 and up["outbox"]["depth"] >= 1 and up["outbox"]["dropped"] == 0
    finally:
        d.close()


def test_no_aggregates_until_an_upstream_is_configured(
    make_cfg: Any, agent_factory: Any, caplog: Any
) -> None:
    """Nothing would ever send them: with no upstream_url the outbox stays empty (a board
    without an upstream otherwise fills 64 MiB of flash over a week), and the log says so."""
    import logging

    from edge.runtime import Edged
    from edge.store import Outbox, Store
    from tests.support import wait_for

    cfg = make_cfg(agg_window_s=0.05)
    assert not cfg.upstream_url and not cfg.aggregating
    with caplog.at_level(logging.INFO, logger="edge"):
        d = Edged(cfg).start()
    try:
        with agent_factory("agg-3", ["cpu_usage"]) as agent:
            agent.report("cpu_usage", 0.5)
            wait_for(lambda: d.loop is not None and d.loop.counters["samples"] == 1)
        assert d.agg is None
    finally:
        d.close()
    assert "aggregates off: no upstream configured" in caplog.text
    with Store.open(cfg.data_dir / "state") as store:
        assert Outbox(store).peek(0, 10) == []


def test_closing_edged_keeps_the_partial_window(make_cfg: Any, agent_factory: Any) -> None:
    from edge.runtime import Edged
    from edge.store import Outbox, Store
    from tests.support import wait_for

    cfg = make_cfg(agg_window_s=3600, upstream_url=UPSTREAM)
    d = Edged(cfg).start()
    try:
        with agent_factory("agg-2", ["cpu_usage"]) as agent:
            agent.report("cpu_usage", 0.5)
            wait_for(lambda: d.loop is not None and d.loop.counters["samples"] == 1)
    finally:
        d.close()
    with Store.open(cfg.data_dir / "state") as store:
        records = Outbox(store).peek(0, 10)
    assert len(records) == 1  # no window ended: this is the one close() wrote
    (series,) = decode_aggregate(records[0][1])["series"]
    assert (series["agent_id"], series["count"], series["last"]) == ("agg-2", 1, 0.5)


def test_health_is_read_from_proc_and_sys_and_degrades_to_nan(tmp_path: Path) -> None:
    from edge.runtime._agg import HealthProbe

    proc, sys_dir = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    zone = sys_dir / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("61500\n")
    (sys_dir / "class" / "thermal" / "thermal_zone1").mkdir()  # a zone without a reading
    # user nice system idle iowait irq softirq steal
    (proc / "stat").write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n")
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 250 kB\n")
    (proc / "self" / "statm").write_text("900 25 3 1 0 20 0\n")
    probe = HealthProbe(tmp_path, proc=proc, sys_dir=sys_dir)
    (proc / "stat").write_text("cpu  250 0 150 800 100 0 0 0 0 0\n")  # +200 busy of +300
    h = probe.read()
    assert h["cpu_pct"] == pytest.approx(200 / 300 * 100)
    assert h["mem_used_pct"] == pytest.approx(75.0)
    assert h["temp_c"] == 61.5
    assert h["edged_rss_bytes"] == 25 * os.sysconf("SC_PAGE_SIZE")
    assert h["disk_free_bytes"] > 0 and h["edged_cpu_pct"] >= 0

    bare = HealthProbe(tmp_path / "nowhere", proc=tmp_path / "none", sys_dir=tmp_path / "none")
    h = bare.read()
    assert all(math.isnan(h[k]) for k in ("cpu_pct", "mem_used_pct", "temp_c"))
    assert h["edged_rss_bytes"] == 0 and h["disk_free_bytes"] == 0


@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.floats(-1e9, 1e9)), min_size=1, max_size=300),
    st.lists(st.integers(1, 40), max_size=10),
    st.integers(1, 8),
)
def test_add_many_agrees_with_one_sample_at_a_time(
    samples: list[tuple[int, float]], cuts: list[int], stride: int
) -> None:
    one, many = SeriesAcc(), SeriesAcc()
    one.stride = many.stride = stride  # as after earlier halvings
    for t, v in samples:
        add_one(one, t, v)
    i = 0
    for size in [*cuts, len(samples)]:
        run = samples[i : i + size]
        many.add_many([t for t, _ in run], [v for _, v in run])
        i += size
    assert (many.count, many.lo, many.hi, many.last) == (one.count, one.lo, one.hi, one.last)
    assert many.total == pytest.approx(one.total, rel=1e-9, abs=1e-3)
    assert list(many.kept) == list(one.kept) and many.phase == one.phase  # no halving here
