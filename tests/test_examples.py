"""examples/agent.py is what the README shows: it runs, and every demo rule reaches it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_the_example_agent_runs_and_obeys_every_demo_rule(make_cfg: Callable[..., Any]) -> None:
    cfg = make_cfg(rules_file=ROOT / "examples" / "demo_rules.yaml", heartbeat_ms=1000)
    with Edged(cfg):
        env = {**os.environ, "EDGE_RUN_DIR": str(cfg.run_dir)}
        r = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "agent.py"), "5", "0.02"],
            env=env, capture_output=True, text=True, timeout=60,
        )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for action in ("restart_agent {}", "throttle {'rate': 0.5}", "alert {}"):
        assert f" {action} (rule " in out, out
    assert "done: " in out and " 0 dropped" in out


def test_the_readme_shows_the_example_agent_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    source = (ROOT / "examples" / "agent.py").read_text(encoding="utf-8")
    assert f"```python\n{source}```" in readme
