"""A short real control loop inside a board image (run there by test_emulated.py, under
qemu-user): ``/usr/bin/edged`` as its own process on a temp run and data dir with a one-rule
table, and an edge.sdk agent in this process that reports a value over the threshold, waits
for the rule's Instruction, acks it, reports a value under it (the rule re-arms), N times.

Usage: python3 loop_probe.py [CYCLES [TIMEOUT_S [EDGED]]] (defaults 20, 60, /usr/bin/edged).
Prints one JSON line: the cycle count, edged's cold start (spawn -> ctl STATUS answered), the
trigger -> instruction times (p50/p90/max, ms) and edged's own counters at the end (acks_ok,
instructions). Exit 0 when every cycle came back and edged counted every Ack; 1 otherwise,
with the reason in the JSON. Standard library plus the image's own edge-runtime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, "/usr/lib/edge-runtime/python")

from edge.runtime import CtlClient  # noqa: E402
from edge.sdk import Agent, Instruction  # noqa: E402
from edge.wire import CtlOp  # noqa: E402

RULES = """\
- rule_id: probe
  rule_name: cross loop probe
  rule_content: "probe_value > 0.5"
  action: alert
  priority: 5
  sla_threshold: 1000
"""


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def main() -> int:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    edged_cmd = sys.argv[3] if len(sys.argv) > 3 else "/usr/bin/edged"
    base = Path(tempfile.mkdtemp(prefix="edge-loop-"))
    (base / "rules.yaml").write_text(RULES)
    run = base / "run"
    t0 = time.monotonic()
    edged = subprocess.Popen(
        [edged_cmd, "--run-dir", str(run), "--data-dir", str(base / "data"),
         "--rules", str(base / "rules.yaml"), "--metrics-addr", ""],
        env={**os.environ, "EDGE_CONFIG": "", "EDGE_LOG_LEVEL": "WARNING"},
    )
    result: dict[str, object] = {"cycles": cycles}
    agent: Agent | None = None
    try:
        deadline = time.monotonic() + timeout
        while not (run / "ctl.sock").exists():  # cold start: ctl.sock bound, then STATUS
            if edged.poll() is not None:
                raise RuntimeError(f"edged exited with {edged.returncode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"edged bound no ctl.sock within {timeout:g} s")
            time.sleep(0.02)
        with CtlClient(run, timeout=timeout) as c:
            c.request(CtlOp.STATUS)
        result["cold_start_ms"] = round((time.monotonic() - t0) * 1000)
        got = threading.Event()

        def on_instruction(ins: Instruction) -> bool:
            if ins.rule_id == "probe":
                got.set()
            return True  # the Ack

        agent = Agent("loop-probe", ["probe_value"], handler=on_instruction, run_dir=run,
                      connect_timeout=timeout).connect()
        lat: list[float] = []
        for i in range(cycles):
            got.clear()
            t = time.perf_counter()
            agent.report("probe_value", 1.0)
            if not got.wait(timeout):
                raise RuntimeError(f"cycle {i}: no instruction within {timeout:g} s")
            lat.append((time.perf_counter() - t) * 1000)
            agent.report("probe_value", 0.0)  # not true: the rule re-arms
        deadline = time.monotonic() + timeout
        while True:  # edged records the last Ack after the agent sent it
            with CtlClient(run, timeout=timeout) as c:
                counters = c.request(CtlOp.STATUS)["counters"]
            if counters.get("acks_ok", 0) >= cycles or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        result.update(
            trigger_to_instruction_ms={"p50": pct(lat, 0.5), "p90": pct(lat, 0.9),
                                       "max": round(max(lat), 2)},
            acks_ok=counters.get("acks_ok", 0),
            instructions_sent=counters.get("instructions_sent", 0),
        )
        result["ok"] = result["acks_ok"] == cycles
        if not result["ok"]:
            result["error"] = f"edged counted {result['acks_ok']} Acks for {cycles} cycles"
    except Exception as exc:
        result.update(ok=False, error=str(exc))
    finally:
        if agent is not None:
            agent.close()
        edged.send_signal(signal.SIGTERM)
        try:
            result["edged_exit"] = edged.wait(timeout)
        except subprocess.TimeoutExpired:
            edged.kill()
            result.update(ok=False, edged_exit="killed: no exit within the timeout after SIGTERM")
    print(json.dumps(result))
    return 0 if result["ok"] and result["edged_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
