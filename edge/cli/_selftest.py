"""``edged --self-test``: the check a technician runs on a freshly flashed board.

In a temporary run and data directory (never the board's own), one after the other::

    open        the lock, LMDB, agents.sock and ctl.sock bound, the built-in table activated
    loop        the control loop polling
    ctl         a STATUS request answered over ctl.sock
    hello       an edge.sdk agent's Hello answered by a Welcome
    trigger     a sample over the threshold -> the rule fires -> the Instruction reaches the agent
    ack         the agent's Ack recorded by edged (the loop's acks_ok counter)
    close       everything flushed and released

Prints each stage's wall time and exits 0; on the first failure prints one line naming the
stage and what went wrong and exits 1. It lives here, above edge.sdk, and is handed to
edged's ``main`` (edge.runtime must not import the SDK).
"""

from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from .._sdnotify import Notifier
from ..config import load_config
from ..errors import EdgeError
from ..runtime import CtlClient, Edged
from ..sdk import Agent, Instruction
from ..wire import CtlOp

SELF_TEST_RULES = """\
- rule_id: self_test
  rule_name: edged self-test (built in)
  rule_content: "self_test_value > 0.5"
  action: alert
  priority: 5
  sla_threshold: 1000
"""

_TIMEOUT_S = 30.0
"""Per stage; generous, because the board may be an emulated one."""


class SelfTestError(EdgeError):
    """A self-test stage did not do what it must."""


def run(
    out: TextIO | None = None, *, rules: str = SELF_TEST_RULES, timeout_s: float = _TIMEOUT_S
) -> int:
    """Run the self-test; returns the exit code (0 passed, 1 failed). ``rules`` and
    ``timeout_s`` (per stage) are for tests."""
    out = out or sys.stdout
    print(
        f"edged self-test: edge-runtime {__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}",
        file=out,
    )
    stages: list[tuple[str, float]] = []
    stage = "setup"
    base = Path(tempfile.mkdtemp(prefix="edge-self-test-"))
    daemon: Edged | None = None
    agent: Agent | None = None
    t_all = time.perf_counter()
    try:

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            nonlocal stage
            stage = name
            t0 = time.perf_counter()
            value = fn()
            stages.append((name, (time.perf_counter() - t0) * 1000))
            print(f"  {name:<8} {stages[-1][1]:9.1f} ms", file=out)
            return value

        rules_file = base / "rules.yaml"
        rules_file.write_text(rules, encoding="utf-8")
        cfg = load_config(
            {
                "run_dir": base / "run",
                "data_dir": base / "data",
                "rules_file": rules_file,
                "metrics_addr": "",
                "device_id": "self-test",
                "log_level": "WARNING",
            },
            env={},
        )
        daemon = Edged(cfg, notifier=Notifier(None))  # never READY to a real systemd
        timed("open", daemon.open)
        loop = daemon.loop
        assert loop is not None
        if loop.table.version < 1 or not loop.table.rules:
            raise SelfTestError("the built-in rule table is not active after open")
        timed("loop", daemon.start)

        def ctl() -> None:
            with CtlClient(cfg.run_dir, timeout=timeout_s) as client:
                status = client.request(CtlOp.STATUS)
            if status["rules"]["rules"] != 1:
                raise SelfTestError(f"ctl STATUS reports {status['rules']} rules, not 1")

        timed("ctl", ctl)
        got: list[Instruction] = []
        delivered = threading.Event()

        def on_instruction(ins: Instruction) -> bool:
            got.append(ins)
            delivered.set()
            return True

        agent = Agent(
            "self-test-agent", ["self_test_value"], handler=on_instruction, run_dir=cfg.run_dir,
            connect_timeout=timeout_s,
        )
        timed("hello", agent.connect)

        def trigger() -> None:
            assert agent is not None
            agent.report("self_test_value", 1.0)
            if not delivered.wait(timeout_s):
                raise SelfTestError(f"no instruction within {timeout_s:g} s of the trigger")
            if got[0].rule_id != "self_test":
                raise SelfTestError(f"instruction from rule {got[0].rule_id!r}, not self_test")

        timed("trigger", trigger)

        def ack() -> None:
            deadline = time.monotonic() + timeout_s
            while loop.call(lambda: loop.counters["acks_ok"]) < 1:
                if time.monotonic() > deadline:
                    raise SelfTestError(f"edged recorded no Ack within {timeout_s:g} s")
                time.sleep(0.002)

        timed("ack", ack)

        def close() -> None:
            assert agent is not None and daemon is not None
            agent.close()
            daemon.close()

        timed("close", close)
    except Exception as exc:  # every failure becomes one line, never a traceback
        first, *more = (str(exc) or type(exc).__name__).splitlines()
        print(f"edged self-test FAILED at stage {stage}: {first}", file=out)
        for line in more:  # a rule error's caret lines, indented under the verdict
            print(f"    {line}", file=out)
        return 1
    finally:
        if agent is not None:
            agent.close()
        if daemon is not None:
            daemon.close()
        shutil.rmtree(base, ignore_errors=True)
    total = (time.perf_counter() - t_all) * 1000
    print(f"edged self-test passed in {total:.0f} ms", file=out)
    return 0
