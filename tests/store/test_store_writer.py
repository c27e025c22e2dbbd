"""StoreWriter: group commits, sequences, flush/close, queue cap, retention, bad input."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.clock import MockClock
from edge.errors import StoreError
from edge.store import Store, StoreWriter

MakeWriter = Callable[..., StoreWriter]


def _strict_json(raw: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(raw, parse_constant=refuse)


def test_many_records_land_in_one_synced_commit(store: Store, make_writer: MakeWriter) -> None:
    # The interval is long, so only flush() ends the linger: everything goes in one group.
    w = make_writer(commit_interval_ms=60_000, max_batch=10_000)
    for i in range(500):
        w.audit("instruction", i=i)
    assert w.flush()
    c = w.counters
    assert (c["commits"], c["committed_records"], c["enqueued"]) == (1, 500, 500)
    assert [r["i"] for r in store.iter_audit()] == list(range(500))


def test_max_batch_bounds_a_commit(store: Store, make_writer: MakeWriter) -> None:
    w = make_writer(commit_interval_ms=60_000, max_batch=1000)
    for i in range(2500):
        w.audit("instruction", i=i)
    assert w.flush()
    c = w.counters
    assert c["commits"] == 3  # 1000 + 1000 when full, the last 500 on flush()
    assert c["committed_records"] == 2500


def test_pending_records_commit_within_the_interval_without_flush(
    store: Store, make_writer: MakeWriter, wait_for: Callable[..., None]
) -> None:
    w = make_writer(commit_interval_ms=5)
    w.audit("one")
    wait_for(lambda: w.counters["committed_records"] == 1, what="the interval commit")
    assert store.last_audit_seq() == 1


def test_with_a_mock_clock_the_interval_runs_on_virtual_time(
    store: Store, make_writer: MakeWriter, wait_for: Callable[..., None]
) -> None:
    clock = MockClock()
    w = make_writer(commit_interval_ms=5, clock=clock)
    w.audit("one")
    clock.advance(5_000_000)
    wait_for(lambda: w.counters["committed_records"] == 1, what="the interval commit")
    (rec,) = store.iter_audit()
    assert (rec["wall_ms"], rec["mono_ns"]) == (1_700_000_000_000, 1_000_000_000)


def test_audit_record_shape(store: Store, make_writer: MakeWriter) -> None:
    clock = MockClock()
    w = make_writer(clock=clock)
    clock.advance(2_000_000)
    w.audit("instruction", rule="r1", agent="a1", seq=99, wall_ms="mine")
    assert w.flush()
    (rec,) = store.iter_audit()
    # Fields named like the record's own keys are kept under "<name>_".
    assert rec == {
        "seq": 1, "wall_ms": 1_700_000_000_002, "mono_ns": 1_002_000_000,
        "kind": "instruction", "rule": "r1", "agent": "a1", "seq_": 99, "wall_ms_": "mine",
    }


def test_audit_seqs_are_dense_across_restarts(state_dir: Path) -> None:
    for run in range(3):
        with Store.open(state_dir) as s, StoreWriter(s) as w:
            w.start()
            for i in range(10):
                w.audit("tick", run=run, i=i)
            assert w.flush()
    with Store.open(state_dir) as s:
        seqs = [r["seq"] for r in s.iter_audit()]
        assert seqs == list(range(1, 31))
        assert s.last_audit_seq() == 30


def test_seqs_go_on_after_the_log_was_pruned(state_dir: Path) -> None:
    with Store.open(state_dir) as s, StoreWriter(s, audit_retention=1) as w:
        w.start()
        for i in range(5):
            w.audit("tick", i=i)
        assert w.flush()
    with Store.open(state_dir) as s, StoreWriter(s) as w:
        w.start()
        w.audit("tick", i=5)
        assert w.flush()
        assert [r["seq"] for r in s.iter_audit()] == [5, 6]


def test_iter_audit_after_limit_and_kind(store: Store, make_writer: MakeWriter) -> None:
    w = make_writer()
    for i in range(600):  # more than one read chunk
        w.audit("even" if i % 2 == 0 else "odd", i=i)
    assert w.flush()
    assert [r["seq"] for r in store.iter_audit(after_seq=595)] == [596, 597, 598, 599, 600]
    assert [r["seq"] for r in store.iter_audit(limit=3)] == [1, 2, 3]
    odd = list(store.iter_audit(kind="odd"))
    assert len(odd) == 300 and all(r["kind"] == "odd" for r in odd)
    assert [r["i"] for r in store.iter_audit(after_seq=500, limit=2, kind="odd")] == [501, 503]
    assert list(store.iter_audit(limit=0)) == []
    assert list(store.iter_audit(after_seq=600)) == []


def test_agents_and_latest_stats(store: Store, make_writer: MakeWriter) -> None:
    clock = MockClock()
    w = make_writer(clock=clock)
    w.put_agent("a1", {"state": "connected", "metrics": ["t"]})
    w.put_agent("a2", {"state": "connected"})
    w.put_agent("a1", {"state": "gone"})
    w.put_stats({"loops": 1})
    clock.advance(1_000_000)
    w.put_stats({"loops": 2})
    assert w.flush()
    assert store.load_agents() == {"a1": {"state": "gone"}, "a2": {"state": "connected"}}
    assert store.latest_stats() == {"loops": 2, "wall_ms": 1_700_000_000_001}


def test_recovery_after_reopen(state_dir: Path) -> None:
    with Store.open(state_dir) as s:
        s.put_rule_table(1, b"one")
        s.put_rule_table(2, b"two")
        w = StoreWriter(s)
        w.start()
        w.put_agent("a1", {"state": "connected"})
        w.audit("rules_activated", version=2)
        w.put_stats({"p99_us": 120})
        # No flush: Store.close() closes (and so flushes) the writer still running on it.
    assert w.counters["committed_records"] == 3
    assert not any(t.name == "edge-store-writer" for t in threading.enumerate())
    with Store.open(state_dir) as s:
        assert s.active_rule_table() == (2, b"two")
        assert s.lkg_rule_table() == (1, b"one")
        assert s.load_agents() == {"a1": {"state": "connected"}}
        assert [r["kind"] for r in s.iter_audit()] == ["rules_activated"]
        stats = s.latest_stats()
        assert stats is not None and stats["p99_us"] == 120


def test_queue_full_drops_and_counts_then_audits_the_loss(
    store: Store, make_writer: MakeWriter
) -> None:
    w = make_writer(queue_cap=10, start=False)  # nothing drains: the queue fills
    for i in range(12):
        w.audit("tick", i=i)
    w.put_agent("a1", {})
    w.put_stats({})
    c = w.counters
    assert (c["enqueued"], c["queued"], c["dropped_queue_full"]) == (10, 10, 4)
    w.start()
    assert w.flush()
    notices = list(store.iter_audit(kind="queue_full"))
    assert len(notices) == 1
    assert notices[0]["dropped"] == 4
    assert (notices[0]["audit"], notices[0]["agents"], notices[0]["stats"]) == (2, 1, 1)
    assert w.counters["committed_records"] == 10


def test_audit_retention_prunes_oldest_first(store: Store, make_writer: MakeWriter) -> None:
    w = make_writer(audit_retention=10)
    for i in range(25):
        w.audit("tick", i=i)
        if i % 7 == 0:
            assert w.flush()
    assert w.flush()
    assert [r["seq"] for r in store.iter_audit()] == list(range(16, 26))
    assert w.counters["pruned_audit"] == 15
    assert store.last_audit_seq() == 25


def test_stats_retention_prunes_oldest_first(store: Store, make_writer: MakeWriter) -> None:
    clock = MockClock()
    w = make_writer(stats_retention=3, clock=clock)
    for i in range(5):
        w.put_stats({"i": i})
        clock.advance(1_000_000)
    assert w.flush()
    assert store.info()["entries"]["stats"] == 3
    assert w.counters["pruned_stats"] == 2
    latest = store.latest_stats()
    assert latest is not None and latest["i"] == 4


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


def test_bad_input_is_converted_never_crashes_the_writer(
    store: Store, make_writer: MakeWriter
) -> None:
    w = make_writer()
    loop: list[Any] = []
    loop.append(loop)
    deep: Any = 0
    for _ in range(5000):
        deep = [deep]
    w.audit("objects", o=object(), s={1, 2}, b=b"\x00\xff", p=Path("/x"))
    w.audit("floats", nan=math.nan, inf=-math.inf, nested={"v": [math.nan]})
    w.audit("keys", d={(1, 2): "tuple key", None: 1})
    w.audit("circular", loop=loop)
    w.audit("unprintable", u=_Unprintable())
    w.audit("deep", deep=deep)
    w.audit(123)  # type: ignore[arg-type]
    w.put_agent("", {"x": 1})
    w.put_agent("a" * 600, {"x": 1})
    w.put_agent(7, {"x": 1})  # type: ignore[arg-type]
    w.put_agent("ok", [1, 2])  # type: ignore[arg-type]
    w.put_stats("not a dict")  # type: ignore[arg-type]
    w.audit("after")
    assert not w.flush()  # some records were dropped as invalid
    c = w.counters
    assert c["dropped_invalid"] == 5
    assert c["committed_records"] == 8
    recs = {r["kind"]: r for r in store.iter_audit()}
    assert set(recs) == {"objects", "floats", "keys", "circular", "unprintable", "deep",
                         "123", "after"}
    assert recs["objects"]["b"] == "b'\\x00\\xff'"
    assert recs["floats"]["nan"] == "nan" and recs["floats"]["nested"] == {"v": ["nan"]}
    assert recs["unprintable"]["u"] == "<unprintable _Unprintable>"
    assert store.load_agents() == {}
    # Every stored value is strict JSON (no NaN/Infinity tokens) for parsers upstream.
    for r in store.iter_audit():
        _strict_json(json.dumps(r, allow_nan=False))
    assert w.flush()  # the writer is alive and fine


def test_flush_and_close_lifecycle(store: Store, make_writer: MakeWriter) -> None:
    w = make_writer(start=False)
    assert w.flush()  # nothing pending
    w.audit("early")
    assert not w.flush()  # pending, but nobody is writing
    w.start()
    w.start()  # a no-op when running
    (thread,) = [t for t in threading.enumerate() if t.name == "edge-store-writer"]
    assert not thread.daemon
    assert w.flush()
    w.close()
    w.close()
    assert not thread.is_alive()
    w.audit("late")
    w.put_agent("a", {})
    assert w.counters["dropped_closed"] == 2
    with pytest.raises(StoreError, match="closed"):
        w.start()
    assert [r["kind"] for r in store.iter_audit()] == ["early"]


def test_closing_a_writer_that_never_started_counts_what_it_held(
    store: Store, make_writer: MakeWriter
) -> None:
    w = make_writer(start=False)
    w.audit("never written")
    w.close()
    assert w.counters["dropped_closed"] == 1
    assert store.last_audit_seq() == 0


def test_counters_are_a_copy(make_writer: MakeWriter) -> None:
    w = make_writer()
    c = w.counters
    c["commits"] = 999
    assert w.counters["commits"] == 0
    assert {"enqueued", "committed_records", "commits", "dropped_queue_full",
            "dropped_store_full", "map_grows", "disk_errors", "pruned_audit",
            "last_commit_us", "max_commit_us"} <= set(c)


@pytest.mark.parametrize(
    "kwargs",
    [{"commit_interval_ms": 0}, {"max_batch": 0}, {"queue_cap": 0}, {"audit_retention": 0}],
)
def test_nonsense_settings_are_refused(store: Store, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StoreWriter(store, **kwargs)
