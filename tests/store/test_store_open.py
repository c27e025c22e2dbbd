"""Opening, schema stamping and lifecycle of Store."""

from __future__ import annotations

import stat
from pathlib import Path

import lmdb
import pytest

from edge.errors import StoreError
from edge.store import SCHEMA_VERSION, Store, StoreWriter


def _raw_meta_put(path: Path, key: bytes, value: bytes) -> None:
    """Write into meta behind the Store's back (the Store must be closed)."""
    with lmdb.open(str(path), max_dbs=16) as env:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(key, value, db=meta)


def test_fresh_store_is_stamped_and_private(state_dir: Path) -> None:
    with Store.open(state_dir) as s:
        info = s.info()
    assert info["schema_version"] == SCHEMA_VERSION == 1
    assert set(info["entries"]) == {"meta", "agents", "rule_tables", "audit", "stats"}
    assert info["map_size"] == 64 << 20
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert (state_dir / "data.mdb").exists()


def test_existing_directory_keeps_its_mode(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o750)
    state_dir.chmod(0o750)
    Store.open(state_dir).close()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o750


def test_newer_schema_is_refused_with_a_clear_message(state_dir: Path) -> None:
    Store.open(state_dir).close()
    _raw_meta_put(state_dir, b"schema_version", (SCHEMA_VERSION + 1).to_bytes(8, "big"))
    with pytest.raises(StoreError, match=r"newer schema \(version 2\).*reads up to version 1"):
        Store.open(state_dir)
    with pytest.raises(StoreError, match="newer schema"):
        Store.open(state_dir, readonly=True)


def test_reopen_keeps_the_stamp(state_dir: Path) -> None:
    Store.open(state_dir).close()
    with Store.open(state_dir) as s:
        assert s.info()["schema_version"] == SCHEMA_VERSION


def test_unstamped_data_is_not_taken_for_a_store(state_dir: Path) -> None:
    Store.open(state_dir).close()
    with lmdb.open(str(state_dir), max_dbs=16) as env:
        meta, audit = env.open_db(b"meta"), env.open_db(b"audit")
        with env.begin(write=True) as txn:
            txn.delete(b"schema_version", db=meta)
            txn.put(b"\0" * 8, b"{}", db=audit)
    with pytest.raises(StoreError, match="no schema version"):
        Store.open(state_dir)


def test_second_open_in_one_process_says_to_share_the_store(store: Store) -> None:
    with pytest.raises(StoreError, match="already open in this process"):
        Store.open(store.path)


def test_readonly_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        Store.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()


def test_readonly_store_reads_but_cannot_have_a_writer(state_dir: Path) -> None:
    with Store.open(state_dir) as s:
        s.put_rule_table(1, b"t1")
    with Store.open(state_dir, readonly=True) as ro:
        assert ro.active_rule_table() == (1, b"t1")
        with pytest.raises(StoreError, match="readonly"):
            StoreWriter(ro)
        with pytest.raises(StoreError):
            ro.put_rule_table(2, b"t2")


def test_close_is_idempotent_and_later_calls_say_closed(state_dir: Path) -> None:
    s = Store.open(state_dir)
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(StoreError, match="closed"):
        s.last_audit_seq()
    with pytest.raises(StoreError, match="closed"):
        s.put_rule_table(1, b"x")


@pytest.mark.parametrize(("map_size", "max_map_size"), [(1 << 20, 1 << 19), (0, 1 << 20)])
def test_nonsense_sizes_are_refused(state_dir: Path, map_size: int, max_map_size: int) -> None:
    with pytest.raises(ValueError):
        Store.open(state_dir, map_size=map_size, max_map_size=max_map_size)
