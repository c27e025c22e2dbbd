"""In-process fuzzing of the verifier and the lean codec (tests/chaos/inproc_fuzz.py), in a
subprocess: atheris where it is installed (the process ends when libFuzzer is done), and our
own mutator. Goal (issue 9): 0 malformed buffers accepted in >= 10^6 inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import tools

ROOT = Path(__file__).resolve().parents[2]


def _run(engine: str, runs: int, out: Path) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-m", "tests.chaos.inproc_fuzz", "--engine", engine, "--runs",
         str(runs), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=3000,
    )
    assert out.exists(), f"the fuzzer wrote no figures (exit {r.returncode}): {r.stderr[-2000:]}"
    doc: dict[str, object] = json.loads(out.read_text())
    return doc


@pytest.mark.parametrize("engine", ["atheris", "mutator"])
def test_inproc_fuzz(mode: str, engine: str, tmp_path: Path) -> None:
    if engine == "atheris":
        pytest.importorskip("atheris", reason="atheris has wheels for x86-64 Linux only")
    runs = tools.scaled(20_000, 1_000_000, mode)
    doc = _run(engine, runs, tmp_path / "fuzz.json")
    figures = {k: v for k, v in doc.items() if k != "examples"}
    tools.report(f"inproc_fuzz_{engine}", mode, **figures)
    assert doc["inputs"] == runs
    assert doc["malformed_accepted"] == 0, doc["examples"]
    by_type = doc["accepted_by_type"]
    assert isinstance(by_type, dict) and len(by_type) >= 10, "mutants of every message type"
