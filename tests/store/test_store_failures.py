"""Map full and I/O errors: grow, prune, drop, retry; count and audit it; never die.

Map-full cases use a real tiny LMDB map. Disk errors cannot be produced for real here, so they
are injected at the one vendor-binding seam, ``StoreWriter._begin_write`` (the factory of every
write transaction the writer opens), with an autospec'd mock whose transactions wrap real ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import lmdb
import pytest

from edge.store import Store, StoreWriter
from edge.store._writer import IO_RETRIES

MakeWriter = Callable[..., StoreWriter]

SMALL = 256 << 10  # bytes; a tiny map fills after a few hundred records


def _inject(writer: StoreWriter, fail: Callable[[int], BaseException | None]) -> list[Any]:
    """Make the ``n``-th write transaction's commit raise ``fail(n)`` (when not None)."""
    real = writer._begin_write
    made: list[Any] = []

    def begin() -> Any:
        txn = mock.Mock(spec=lmdb.Transaction, wraps=real())
        error = fail(len(made))
        if error is not None:
            txn.commit.side_effect = error
        made.append(txn)
        return txn

    writer._begin_write = mock.create_autospec(  # type: ignore[method-assign]
        writer._begin_write, side_effect=begin
    )
    return made


def _writer_alive() -> bool:
    return any(t.name == "edge-store-writer" for t in threading.enumerate())


def test_a_full_map_is_grown_and_nothing_is_lost(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", map_size=SMALL, max_map_size=8 << 20) as s:
        with StoreWriter(s, max_batch=256) as w:
            w.start()
            for i in range(3000):
                w.audit("tick", i=i, pad="x" * 400)
            assert w.flush()
            c = w.counters
        assert c["map_grows"] >= 1
        assert (c["dropped_store_full"], c["pruned_audit"]) == (0, 0)
        assert s.info()["map_size"] > SMALL
        assert [r["seq"] for r in s.iter_audit()] == list(range(1, 3001))


def test_at_max_map_size_the_oldest_audit_records_make_room(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", map_size=SMALL, max_map_size=SMALL) as s:
        with StoreWriter(s, max_batch=64) as w:
            w.start()
            for i in range(2000):
                w.audit("tick", i=i, pad="x" * 400)
            assert w.flush()
            c = w.counters
        assert (c["map_grows"], c["dropped_store_full"]) == (0, 0)
        assert c["pruned_audit"] > 0
        seqs = [r["seq"] for r in s.iter_audit()]
        # Newest kept, oldest gone, still dense.
        assert seqs[-1] == 2000 and seqs[0] > 1
        assert seqs == list(range(seqs[0], 2001))
        assert s.info()["map_size"] == SMALL


def test_a_batch_that_does_not_fit_prunes_the_oldest_audit_records_then_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store.open(tmp_path / "s", map_size=SMALL, max_map_size=SMALL) as s:
        s.put_rule_table(1, b"r" * (40 << 10))
        with StoreWriter(s, max_batch=16) as w:
            w.start()
            for i in range(200):
                w.audit("tick", i=i, pad="x" * 400)
            assert w.flush()
            assert w.counters["dropped_store_full"] == 0
            w.audit("big", blob="y" * (100 << 10))  # more than the room kept free
            assert w.flush()
            c = w.counters
        assert any("map full at max_map_size; pruned" in m for m in caplog.messages)
        assert (c["dropped_store_full"], c["map_grows"]) == (0, 0)
        assert c["pruned_audit"] > 0
        seqs = [r["seq"] for r in s.iter_audit()]
        assert seqs[-1] == 201 and seqs == list(range(seqs[0], 202))
        assert s.active_rule_table() is not None  # rules are never pruned


def test_a_batch_that_cannot_fit_is_dropped_counted_and_audited(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", map_size=SMALL, max_map_size=SMALL) as s:
        with StoreWriter(s) as w:
            w.start()
            w.audit("small", i=0)
            assert w.flush()
            w.audit("huge", blob="x" * (1 << 20))  # bigger than the whole map
            w.put_agent("a1", {"state": "connected"})
            assert not w.flush()  # they were dropped, and flush says so
            c = w.counters
            assert (c["dropped_store_full"], c["committed_records"]) == (2, 1)
            # Pruning could not have saved the batch, so history was not destroyed for it.
            assert c["pruned_audit"] == 0
            w.audit("after", i=1)
            assert w.flush()
            assert _writer_alive()
        kinds = [r["kind"] for r in s.iter_audit()]
        assert kinds == ["small", "store_full", "after"]
        (notice,) = s.iter_audit(kind="store_full")
        assert notice["dropped"] == 2
        assert (notice["audit"], notice["agents"], notice["stats"]) == (1, 1, 0)
        assert notice["audit_kinds"] == {"huge": 1}
        assert notice["agent_ids"] == ["a1"]
        assert "MapFullError" in notice["error"]


def test_a_transient_disk_error_is_retried_and_nothing_is_lost(
    store: Store, make_writer: MakeWriter
) -> None:
    w = make_writer(commit_interval_ms=1)
    error = lmdb.DiskError("mdb_txn_commit: No space left on device")
    made = _inject(w, lambda n: error if n < 2 else None)
    for i in range(10):
        w.audit("tick", i=i)
    assert w.flush()
    c = w.counters
    assert (c["disk_errors"], c["dropped_io_error"], c["committed_records"]) == (2, 0, 10)
    assert [r["i"] for r in store.iter_audit()] == list(range(10))
    assert all(t.abort.called for t in made[:2])  # the failed transactions were released


@pytest.mark.parametrize(
    "error",
    [
        lmdb.DiskError("mdb_txn_commit: No space left on device"),
        lmdb.Error("mdb_txn_commit: Input/output error"),
        OSError(5, "Input/output error"),
    ],
    ids=["enospc", "lmdb-eio", "oserror"],
)
def test_a_lasting_disk_error_drops_the_batch_after_retries_and_audits_it(
    store: Store, make_writer: MakeWriter, error: BaseException
) -> None:
    w = make_writer(commit_interval_ms=1)
    failing = True
    _inject(w, lambda n: error if failing else None)
    for i in range(5):
        w.audit("tick", i=i)
    assert not w.flush()
    c = w.counters
    assert c["disk_errors"] == IO_RETRIES + 1
    assert (c["dropped_io_error"], c["committed_records"]) == (5, 0)
    assert _writer_alive()
    failing = False  # the disk recovers
    w.audit("after")
    assert w.flush()
    (notice,) = store.iter_audit(kind="store_io_error")
    assert notice["dropped"] == 5 and notice["audit_kinds"] == {"tick": 5}
    assert type(error).__name__ in notice["error"]
    assert [r["kind"] for r in store.iter_audit()] == ["store_io_error", "after"]


def test_a_map_full_error_at_the_seam_grows_the_map(store: Store, make_writer: MakeWriter) -> None:
    w = make_writer()
    before = store.info()["map_size"]
    _inject(w, lambda n: lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL") if n == 0 else None)
    w.audit("tick")
    assert w.flush()
    assert w.counters["map_grows"] == 1
    assert store.info()["map_size"] == 2 * before


def test_close_during_a_lasting_error_does_not_hang(
    store: Store, make_writer: MakeWriter
) -> None:
    w = make_writer(commit_interval_ms=200)  # backoffs of 0.4 s, 0.8 s, 1 s, ...
    _inject(w, lambda n: lmdb.DiskError("mdb_txn_commit: No space left on device"))
    w.audit("tick")
    w.close(timeout=0.2)  # the flush times out; stopping cuts the backoff short
    assert not _writer_alive()
    c = w.counters
    assert c["dropped_io_error"] == 1 and c["committed_records"] == 0
