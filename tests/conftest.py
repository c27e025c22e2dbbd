"""Shared fixtures. An autouse leak check fails any test that leaves threads, child
processes, sockets or LMDB files open behind it (pymodbus's system_health_check idea)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from edge.config import EdgeConfig, load_config
from edge.runtime import Edged

from .support import RULES


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


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    f = tmp_path / "rules.yaml"
    f.write_text(RULES)
    return f


@pytest.fixture
def make_cfg(run_dir: Path, tmp_path: Path, rules_file: Path) -> Callable[..., EdgeConfig]:
    def make(**over: Any) -> EdgeConfig:
        flags: dict[str, Any] = {
            "run_dir": run_dir,
            "data_dir": tmp_path / "data",
            "rules_file": rules_file,
            "metrics_addr": "",
            "heartbeat_ms": 100,
            "missed_beats": 3,
            "ack_timeout_ms": 1000,
            "stats_interval_ms": 200,
        }
        flags.update(over)
        return load_config(flags, env={})

    return make


@pytest.fixture
def edged(make_cfg: Callable[..., EdgeConfig]) -> Iterator[Edged]:
    d = Edged(make_cfg()).start()
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def agent_factory(run_dir: Path) -> Generator[Callable[..., Any], None, None]:
    from edge.sdk import Agent

    made: list[Agent] = []

    def make(agent_id: str, metrics: Any, **kw: Any) -> Agent:
        a = Agent(agent_id, metrics, run_dir=run_dir, **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()
