"""The real `edged` process: starts, serves, flushes and exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.store import Store

from ..support import wait_for

pytestmark = pytest.mark.integration


def test_sigterm_flushes_state_and_exits_cleanly(
    run_dir: Path, tmp_path: Path, rules_file: Path
) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from edge.runtime import main; main()",
            "--run-dir",
            str(run_dir),
            "--data-dir",
            str(data),
            "--rules",
            str(rules_file),
            "--metrics-addr",
            "",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (run_dir / "ctl.sock").exists() or proc.poll() is not None, timeout=20)
        from edge.cli import CtlClient
        from edge.wire import CtlOp

        with CtlClient(run_dir) as c:
            status = c.request(CtlOp.STATUS)
            assert status["pid"] == proc.pid
            # the edged command collects garbage from the ctl thread, never from the loop's
            assert status["gc"]["automatic"] is False and status["gc"]["frozen"] > 0
            wait_for(lambda: sum(c.request(CtlOp.STATUS)["gc"]["collections"]) > 0)
            assert c.request(CtlOp.STATUS)["gc"]["on_loop_thread"] == [0, 0, 0]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err
    assert not (run_dir / "agents.sock").exists() and not (run_dir / "ctl.sock").exists()
    with Store.open(data / "state", readonly=True) as store:
        kinds = [r["kind"] for r in store.iter_audit()]
        assert kinds[0] == "edged_started" and kinds[-1] == "edged_stopped"
        assert store.active_rule_table() is not None
        assert store.latest_stats() is not None


def test_second_instance_refused_with_exit_3(
    run_dir: Path, tmp_path: Path, make_cfg: object
) -> None:
    from edge.runtime import Edged

    with Edged(make_cfg()):  # type: ignore[operator]
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "from edge.runtime import main; main()",
                "--run-dir",
                str(run_dir),
                "--data-dir",
                str(tmp_path / "data"),
                "--metrics-addr",
                "",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 3
    assert "already running" in r.stderr and str(os.getpid()) in r.stderr


def test_bad_config_exit_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", "from edge.runtime import main; main()", "--heartbeat-ms", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "EDGE_CONFIG": ""},
    )
    assert r.returncode == 2 and "heartbeat_ms must be > 0" in r.stderr


def test_ctl_survives_a_handler_bug(edged: object, run_dir: Path) -> None:
    from edge.cli import CtlClient
    from edge.errors import CtlRefused
    from edge.wire import CtlOp

    d = edged
    d.ctl._handlers[CtlOp.STATUS] = lambda args, blob: {"oops": object()}  # type: ignore[attr-defined]
    with CtlClient(run_dir) as c:
        with pytest.raises(CtlRefused, match="internal error"):
            c.request(CtlOp.STATUS)
        assert "agents" in c.request(CtlOp.AGENTS)  # the ctl thread is still serving
