"""Fixtures for the store tests: real LMDB environments in pytest's tmp_path."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.store import Store, StoreWriter


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> Iterator[Store]:
    s = Store.open(state_dir)
    yield s
    s.close()


@pytest.fixture
def make_writer(store: Store) -> Iterator[Callable[..., StoreWriter]]:
    """Started writers on ``store`` (or another store given as ``on=``), closed afterwards."""
    made: list[StoreWriter] = []

    def make(*, on: Store | None = None, start: bool = True, **kw: Any) -> StoreWriter:
        w = StoreWriter(on if on is not None else store, **kw)
        made.append(w)
        if start:
            w.start()
        return w

    yield make
    for w in made:
        w.close()


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.001)


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """``wait_for(predicate, timeout=10.0, what=...)``: poll until true, fail at the deadline."""
    return _wait_for
