"""Rule tables: versions, the active and last-known-good pointers, refusal when full."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import StoreError, StoreFullError
from edge.store import Store


def test_activation_moves_the_old_active_to_lkg(store: Store) -> None:
    assert store.active_rule_table() is None
    assert store.lkg_rule_table() is None
    store.put_rule_table(1, b"one")
    assert store.active_rule_table() == (1, b"one")
    assert store.lkg_rule_table() is None
    store.put_rule_table(2, b"two")
    assert store.active_rule_table() == (2, b"two")
    assert store.lkg_rule_table() == (1, b"one")


def test_storing_without_activating_changes_no_pointer(store: Store) -> None:
    store.put_rule_table(1, b"one")
    store.put_rule_table(2, b"two", activate=False)
    assert store.get_rule_table(2) == b"two"
    assert store.active_rule_table() == (1, b"one")
    assert store.lkg_rule_table() is None


def test_reactivating_the_active_version_keeps_lkg(store: Store) -> None:
    store.put_rule_table(1, b"one")
    store.put_rule_table(2, b"two")
    store.put_rule_table(2, b"two")  # same bytes again: a no-op
    store.set_active_rule_table(2)
    assert store.active_rule_table() == (2, b"two")
    assert store.lkg_rule_table() == (1, b"one")


def test_rollback_swaps_active_and_lkg(store: Store) -> None:
    store.put_rule_table(1, b"one")
    store.put_rule_table(2, b"two")
    store.set_active_rule_table(1)
    assert store.active_rule_table() == (1, b"one")
    assert store.lkg_rule_table() == (2, b"two")


def test_versions_are_immutable(store: Store) -> None:
    store.put_rule_table(1, b"one")
    with pytest.raises(StoreError, match="already stored with different content"):
        store.put_rule_table(1, b"uno")
    assert store.get_rule_table(1) == b"one"


def test_activating_a_missing_version_names_what_is_stored(store: Store) -> None:
    store.put_rule_table(3, b"three")
    with pytest.raises(StoreError, match=r"v7.*not stored.*stored: 3"):
        store.set_active_rule_table(7)
    assert store.active_rule_table() == (3, b"three")


def test_get_missing_and_bad_versions(store: Store) -> None:
    assert store.get_rule_table(42) is None
    with pytest.raises(ValueError):
        store.put_rule_table(-1, b"x")
    with pytest.raises(ValueError):
        store.put_rule_table(1 << 64, b"x")


def test_list_rule_tables(store: Store) -> None:
    store.put_rule_table(10, b"a" * 10)
    store.put_rule_table(2, b"b" * 2, activate=False)
    store.put_rule_table(11, b"c" * 11)
    assert store.list_rule_tables() == [
        {"version": 2, "bytes": 2, "active": False, "lkg": False},
        {"version": 10, "bytes": 10, "active": False, "lkg": True},
        {"version": 11, "bytes": 11, "active": True, "lkg": False},
    ]


def test_a_table_bigger_than_the_map_grows_it(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", map_size=256 << 10, max_map_size=4 << 20) as s:
        blob = bytes(range(256)) * 2048  # 512 KiB
        s.put_rule_table(1, blob)
        assert s.active_rule_table() == (1, blob)
        assert s.info()["map_size"] > 256 << 10


def test_a_table_that_cannot_fit_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", map_size=256 << 10, max_map_size=256 << 10) as s:
        s.put_rule_table(1, b"small")
        with pytest.raises(StoreFullError, match="max_map_size"):
            s.put_rule_table(2, b"x" * (1 << 20))
        assert s.active_rule_table() == (1, b"small")
        assert s.get_rule_table(2) is None
        s.put_rule_table(3, b"still works")
        assert s.active_rule_table() == (3, b"still works")


def test_old_rule_tables_are_pruned_but_never_active_or_lkg(tmp_path) -> None:
    from edge.store import Store
    from edge.store._store import RULE_TABLE_RETENTION

    with Store.open(tmp_path / "s") as store:
        store.put_rule_table(1, b"one", activate=True)
        for v in range(2, RULE_TABLE_RETENTION + 10):
            store.put_rule_table(v, b"t%d" % v, activate=False)
        store.put_rule_table(100, b"hundred", activate=True)
        versions = [t["version"] for t in store.list_rule_tables()]
        assert len(versions) == RULE_TABLE_RETENTION
        assert 1 in versions  # last-known-good survives although oldest
        assert store.active_rule_table() == (100, b"hundred")
        assert store.lkg_rule_table() == (1, b"one")
