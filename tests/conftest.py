"""Shared fixtures. An autouse leak check fails any test that leaves threads, child
processes, sockets or LMDB files open behind it (pymodbus's system_health_check idea)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import psutil
import pytest


def _open_resources() -> set[str]:
    """Sockets and LMDB files this process holds open, by fd target."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:") or target.endswith(".mdb"):
            found.add(f"{fd}->{target}")
    return found


def _snapshot() -> tuple[set[threading.Thread], set[int], set[str]]:
    me = psutil.Process()
    return (
        set(threading.enumerate()),
        {p.pid for p in me.children(recursive=True)},
        _open_resources(),
    )


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    threads0, procs0, res0 = _snapshot()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        threads1, procs1, res1 = _snapshot()
        new_threads = {t for t in threads1 - threads0 if t.is_alive()}
        new_procs = procs1 - procs0
        new_res = res1 - res0
        if not (new_threads or new_procs or new_res) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if new_threads:
        problems.append(f"threads left running: {sorted(t.name for t in new_threads)}")
    if new_procs:
        problems.append(f"child processes left running: {sorted(new_procs)}")
    if new_res:
        problems.append(f"sockets/LMDB files left open: {sorted(new_res)}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def run_dir(tmp_path: Path) -> Generator[Path, None, None]:
    """A short run directory: AF_UNIX paths are limited to 107 bytes."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="edge-", dir="/tmp"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)
