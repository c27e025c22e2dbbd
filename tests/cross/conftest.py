"""The cross tests' report: every test's outcome, the arch, where it ran (qemu-user chroot or a
qemu-system boot) and the figures it measured, written as JSON to ``$EDGE_CROSS_REPORT``
(default ``cross/out/cross-test.json``) at the end of the session. Only when a ``cross``
test ran (``make cross-test``/``cross-quick``), never by ``make test``."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_ROWS: dict[str, dict[str, Any]] = {}


def report_path() -> Path:
    return Path(os.environ.get("EDGE_CROSS_REPORT", ROOT / "cross/out/cross-test.json"))


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A test's row in the report: put ``arch``, ``where`` and figures in it."""
    row = _ROWS.setdefault(request.node.nodeid, {"test": request.node.nodeid})
    yield row


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if item.get_closest_marker("cross") is None:
        return
    if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
        row = _ROWS.setdefault(item.nodeid, {"test": item.nodeid})
        row["outcome"] = "skipped" if rep.skipped else rep.outcome
        row["duration_s"] = round(rep.duration, 1)
        if rep.skipped and isinstance(rep.longrepr, tuple):
            row["reason"] = rep.longrepr[2]


def pytest_sessionfinish(session: pytest.Session) -> None:
    rows = [r for r in _ROWS.values() if "outcome" in r]
    if not rows:
        return
    out = report_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    doc = {
        "note": "EMULATED on an x86-64 host (qemu-user / qemu-system TCG): timings are not a board's",
        "host": f"{platform.machine()} {os.cpu_count()} CPUs, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tests": rows,
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"\ncross: report {out}")
