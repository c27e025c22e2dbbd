"""edgectl bench, run as the operator runs it (the console script in a child process).

No timing assertions: the figures are the benchmark's output, not a test's pass mark.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration


def edgectl(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("edgectl")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from edge.cli import main; main()", *args]


def _summary(d: object) -> None:
    assert isinstance(d, dict), d
    for key in ("p50", "p99"):
        assert isinstance(d[key], int | float) and math.isfinite(d[key]) and d[key] > 0, (key, d)
    assert d["p50"] <= d["p99"] <= d.get("max", math.inf)


@pytest.mark.timeout(300)  # every scenario and both profiles, on a machine others share
def test_quick_bench_writes_every_required_key(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "bench.json"
    r = subprocess.run(edgectl("bench", "--quick", "--duration", "1", "--json", str(out)),
                       capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    doc = json.loads(out.read_text())

    _summary(doc["e2e_us"])
    assert doc["e2e_us"]["p999"] >= doc["e2e_us"]["p99"]
    for stage in ("collect", "trans1", "compute", "rule", "trans2", "execute"):
        _summary(doc["stages_us"][stage])
    _summary(doc["baseline_pingpong_us"])
    _summary(doc["baseline_pingpong_idle_us"])
    _summary(doc["probe_e2e_us"])
    for base in (doc["baseline_pingpong_us"], doc["baseline_pingpong_idle_us"]):
        # what the transport alone attains, the evidence for the SLA and jitter goals
        assert 0.0 <= base["within_sla_pct"] <= 100.0 and base["jitter_pct"] >= 0.0

    # both transports, each against its own floor measured in interleaved segments
    assert set(doc["lanes"]) == {"zmq", "seqpacket"}
    for name, lane in doc["lanes"].items():
        assert lane["transport"] == name  # the fast lane was taken, not fallen back from
        _summary(lane["e2e_us"])
        _summary(lane["baseline_pingpong_us"])
        assert lane["ratio_p99"] > 0 and lane["probe"]["answered"] > 0
    _summary(doc["baseline_seqpacket_idle_us"])
    assert doc["segments"]["count"] >= 2
    rt = doc["rt_profile"]  # the second pass: both ends pinned, at SCHED_FIFO where permitted
    assert set(rt["lanes"]) == {"zmq", "seqpacket"} and rt["edged_realtime"]["cpu_affinity"]
    for lane in rt["lanes"].values():
        _summary(lane["e2e_us"])
        assert lane["rt_applied"]["cpu_affinity"] == rt["edged_realtime"]["cpu_affinity"]
    # the scheduler's share, the evidence for what bounds a tail: edged's loop among its threads
    for sched in (doc["sched"], rt["sched"]):
        assert {"edged", "probe_zmq", "probe_seqpacket", "pong"} <= set(sched)
        loop = sched["edged"]["threads"]["loop"]
        assert loop["cpu_pct"] > 0 and loop["runq_wait_pct"] >= 0
        assert {"edge-ctl", "edge-store-writer"} <= set(sched["edged"]["threads"])
    assert "scheduler (% of the window" in r.stdout
    assert isinstance(doc["instructions"], int) and doc["instructions"] > 0
    assert isinstance(doc["acks"], int) and doc["acks"] > 0
    assert abs(doc["instructions"] - doc["acks"]) <= 2  # one may be in flight at the cut
    assert 0.0 <= doc["sla_rate"] <= 1.0
    assert doc["jitter_pct"] >= 0.0
    assert doc["ratio_p99"] > 0
    assert doc["background_metrics_per_s"] > 0
    assert doc["probe"]["answered"] > 0

    m = doc["machine"]
    assert m["cpu_count"] >= 1 and m["python"].count(".") == 2 and m["platform"]
    assert "cpu_model" in m
    cfg = doc["config"]
    assert cfg["quick"] is True and cfg["duration_s"] == 1.0 and cfg["sla_ms"] > 0
    assert cfg["message_bytes"]["instruction"] > 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", doc["timestamp"])
    assert doc["edged_exit_code"] == 0
    assert "e2e (edged)" in r.stdout  # the one-screen summary
    # every edged it started is gone (the real-time pass's once outlived the bench, at FIFO)
    run = re.search(r"run directory (\S+)", r.stdout + r.stderr)
    assert run, r.stdout + r.stderr
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(run.group(1) in a for a in p.info["cmdline"] or ())]
    assert not left, f"processes of the bench's run left running: {left}"


def _read_until(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
            if re.search(pattern, seen.decode(errors="replace")):
                return seen.decode(errors="replace")
    so_far = seen.decode(errors="replace")
    raise AssertionError(f"no {pattern!r} within {timeout} s; output so far:\n{so_far}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_bench_leaves_nothing_behind(sig: signal.Signals) -> None:
    proc = subprocess.Popen(edgectl("bench", "--quick", "--duration", "30"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        text = _read_until(proc, r"closed loop", timeout=60)
        root = re.search(r"run directory (/tmp/edge-\S+)", text)
        assert root, text
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert b"interrupted" in rest
    assert not Path(root[1]).exists()
    leftovers = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if root[1] in " ".join(p.info["cmdline"] or ()):
            leftovers.append((p.info["pid"], p.info["cmdline"]))
    assert not leftovers
