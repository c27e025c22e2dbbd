"""The chaos campaign's fixtures: ``mode`` runs each attack twice, as a short smoke (part of
``make test``) and as the campaign (marker ``chaos``, ``make chaos``); dirs and rules for a real
edged; the figures table at the end of the run, and the campaign's JSON summary."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import tools


@pytest.fixture(params=["smoke", pytest.param("campaign", marks=pytest.mark.chaos)])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A short run dir (AF_UNIX paths are limited to 107 bytes) and a data dir."""
    run = Path(tempfile.mkdtemp(prefix="edge-chaos-", dir="/tmp"))
    yield run, tmp_path / "data"
    shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
def chaos_rules(tmp_path: Path) -> Path:
    f = tmp_path / "chaos-rules.yaml"
    f.write_text(tools.RULES)
    return f


@pytest.fixture
def edged_proc(dirs: tuple[Path, Path], chaos_rules: Path, tmp_path: Path) -> Any:
    """A factory: ``edged_proc(**settings)`` -> a started EdgedProcess, stopped after."""
    made: list[tools.EdgedProcess] = []

    def make(**settings: Any) -> tools.EdgedProcess:
        run, data = dirs
        e = tools.EdgedProcess(run, data, chaos_rules, tmp_path / f"edged{len(made)}.log",
                               **settings)
        made.append(e)
        return e.start()

    yield make
    for e in made:
        if e.alive():
            e.stop()
        e.close_ctl()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # the campaign's attacks run for minutes: pyproject's 120 s is the smoke's
        if item.get_closest_marker("chaos"):
            item.add_marker(pytest.mark.timeout(3600))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not tools.FIGURES:
        return
    terminalreporter.section("chaos figures")
    for name, doc in tools.FIGURES.items():
        brief = {k: v for k, v in doc.items() if k != "mode"}
        terminalreporter.write_line(f"{name}: {brief}")
    if any(doc["mode"] == "campaign" for doc in tools.FIGURES.values()):
        tools.write_summary()
        terminalreporter.write_line(f"written: {tools.OUT}")
