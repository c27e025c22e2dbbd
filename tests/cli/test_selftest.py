"""``edged --self-test``: passes on a healthy install (the real console script, in a child
process), names the failing stage in one line otherwise, and never touches the real dirs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli._selftest import SELF_TEST_RULES, run
from edge.runtime import main as runtime_main

STAGES = ("open", "loop", "ctl", "hello", "trigger", "ack", "close")


def test_the_console_script_passes_and_prints_every_stage(tmp_path: Path) -> None:
    edged = Path(sys.executable).parent / "edged"
    # the board's own dirs must stay untouched: point the defaults somewhere we can check
    env = {**os.environ, "EDGE_RUN_DIR": str(tmp_path / "run"), "EDGE_DATA_DIR": str(tmp_path / "d")}
    proc = subprocess.run(
        [str(edged), "--self-test"], capture_output=True, text=True, timeout=100, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("edged self-test: edge-runtime ")
    assert [line.split()[0] for line in lines[1:-1]] == list(STAGES)
    assert all(line.rstrip().endswith(" ms") for line in lines[1:])
    assert lines[-1].startswith("edged self-test passed in ")
    assert not (tmp_path / "run").exists() and not (tmp_path / "d").exists()


def test_a_rule_that_never_fires_fails_at_the_trigger_stage() -> None:
    out = io.StringIO()
    rules = SELF_TEST_RULES.replace("> 0.5", "> 5")
    assert run(out, rules=rules, timeout_s=0.3) == 1
    last = out.getvalue().splitlines()[-1]
    assert last == "edged self-test FAILED at stage trigger: no instruction within 0.3 s of the trigger"


def test_a_broken_table_fails_at_open_with_the_rule_error() -> None:
    out = io.StringIO()
    assert run(out, rules=SELF_TEST_RULES.replace("> 0.5", ">"), timeout_s=1) == 1
    verdict = [x for x in out.getvalue().splitlines() if "FAILED" in x]
    assert len(verdict) == 1 and verdict[0].startswith("edged self-test FAILED at stage open: ")
    assert "rules.yaml:3:" in out.getvalue()


def test_without_the_console_script_self_test_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        runtime_main(["--self-test"])
    assert info.value.code == 2
    assert "--self-test needs the edged console script" in capsys.readouterr().err
