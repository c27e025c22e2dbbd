"""A stuck agent (stops reading, keeps sending) and a vanishing agent (connects, sends, goes
without a Bye, again and again) beside a probe, against the same traffic from a healthy
agent. The conditions are interleaved in segments, as the latency bench interleaves edged's
loop with its baselines: round after round, one segment of each condition (the order rotated
each round, so none always follows the same one), >= 10 segments of each in the campaign, so
the machine's noise falls on all of them alike. Each condition's p50 and p99 are over all its
segments' samples (counts reported); the ratios are to the healthy condition's, and, less
swayed by a slow drift of the machine's load, the median over rounds of the ratio of the
round's own segments. Goal (issue 9): the probe's p99 with a stuck or a vanishing neighbour
<= 1.2x its p99 beside a healthy one (campaign; the smoke only reports it)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from edge.wire import Heartbeat, encode_heartbeat, encode_metric_batch

from . import tools

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PERIOD_S = 0.002  # the neighbour's samples: a rising edge (an instruction) every 4 ms


def _send_load(sock: zmq.Socket[bytes], session: int, mid: int, seq: int) -> None:
    t = time.monotonic_ns()
    try:
        sock.send(encode_metric_batch(session, seq, t, [(mid, float(seq % 2), t)]), zmq.NOBLOCK)
    except zmq.Again:
        pass


def stuck(run_dir: Path, stop: threading.Event) -> None:
    """Hello, then samples and heartbeats, never reading what edged sends back."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = tools.dealer(ctx, run_dir, rcvhwm=1)
    try:
        w = tools.hello(s, f"stuck-{time.monotonic_ns()}", ("load_x",))
        assert w is not None
        seq = 0
        while not stop.wait(PERIOD_S):
            seq += 1
            _send_load(s, w.session, w.metric_ids[0], seq)
            if seq % 50 == 0:
                s.send(encode_heartbeat(Heartbeat(w.session, time.monotonic_ns(), seq)))
    finally:
        s.close()
        ctx.term()


def vanishing(run_dir: Path, stop: threading.Event) -> None:
    """Again and again: a new connection, Hello, 100 ms of samples, gone without a Bye."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    k = 0
    try:
        while not stop.is_set():
            s = tools.dealer(ctx, run_dir)
            try:
                k += 1
                w = tools.hello(s, f"vanisher-{time.monotonic_ns()}-{k}", ("load_x",))
                if w is None:
                    continue
                for seq in range(50):
                    if stop.wait(PERIOD_S):
                        break
                    _send_load(s, w.session, w.metric_ids[0], seq)
            finally:
                s.close()
    finally:
        ctx.term()


def healthy(run_dir: Path, stop: threading.Event) -> None:
    with tools.Load(run_dir, agent_id=f"healthy-{time.monotonic_ns()}", period_s=PERIOD_S):
        stop.wait()


NEIGHBOURS: dict[str, Callable[[Path, threading.Event], None]] = {
    "healthy": healthy, "stuck": stuck, "vanishing": vanishing,
}


def run_neighbour(name: str, run_dir: str, seconds: float) -> None:
    """Entry point of a neighbour's own process (so its work does not share the probe's
    interpreter): run ``name`` for ``seconds``."""
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    NEIGHBOURS[name](Path(run_dir), stop)


def _segment(name: str, run_dir: Path, probe: tools.Probe, settle_s: float,
             seconds: float) -> list[float]:
    """One segment of condition ``name``: its neighbour in its own process, ``settle_s`` for
    it to settle in (not measured), then the probe's latencies over ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tests.chaos.test_peers import run_neighbour; "
         f"run_neighbour({name!r}, {str(run_dir)!r}, {settle_s + seconds})"],
        cwd=ROOT,
    )
    try:
        time.sleep(settle_s)  # the neighbour settles in before the segment counts
        mark = probe.mark()
        time.sleep(seconds)  # the segment's duration
        got = probe.latencies_us[mark : probe.mark()]
        assert proc.wait(30) == 0, f"the {name} neighbour failed"
        return got
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def test_stuck_and_vanishing_neighbours(
    mode: str, edged_proc: Callable[..., tools.EdgedProcess]
) -> None:
    rounds = tools.scaled(1, 10, mode)
    segment_s = tools.scaled(1.5, 6.0, mode)
    settle_s = 0.5
    edged = edged_proc(agent_forget_s=5, ack_timeout_ms=1000)
    names = list(NEIGHBOURS)
    latencies: dict[str, list[float]] = {k: [] for k in names}
    per_round: dict[str, list[float | None]] = {k: [] for k in names}  # each segment's p99
    with tools.Probe(edged.run_dir, period_s=0.005) as probe:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                got = _segment(name, edged.run_dir, probe, settle_s, segment_s)
                latencies[name] += got
                per_round[name].append(tools.pctl(got, 0.99))
    counters = edged.counters()
    p50 = {k: tools.pctl(v, 0.5) for k, v in latencies.items()}
    p99 = {k: tools.pctl(v, 0.99) for k, v in latencies.items()}
    bad = ("stuck", "vanishing")
    ratio = {k: _ratio(p99[k], p99["healthy"]) for k in bad}
    paired = {k: tools.pctl([x for x in (_ratio(a, h) for a, h in
                                         zip(per_round[k], per_round["healthy"], strict=True))
                             if x is not None], 0.5) for k in bad}
    tools.report(
        "stuck_vanishing", mode, rounds=rounds, segments_per_condition=rounds,
        segment_s=segment_s, probe_samples={k: len(v) for k, v in latencies.items()},
        probe_p50_us={k: round(v or 0) for k, v in p50.items()},
        probe_p99_us={k: round(v or 0) for k, v in p99.items()}, p99_ratio=ratio,
        p50_ratio={k: _ratio(p50[k], p50["healthy"]) for k in bad},
        p99_ratio_median_of_rounds=paired,
        segment_p99_us={k: [round(x or 0) for x in v] for k, v in per_round.items()},
        instructions_dropped_full=counters["instructions_dropped_full"],
        instructions_suppressed_stalled=counters.get("instructions_suppressed_stalled"),
        agents_stalled=counters.get("agents_stalled"),
        ack_timeouts=counters["ack_timeouts"], handler_errors=counters["handler_errors"],
    )
    assert all(latencies.values()), "the probe was not served in some condition"
    assert counters["handler_errors"] == 0 and edged.alive()
    if mode == "campaign":
        assert ratio["stuck"] is not None and ratio["stuck"] <= 1.2, ratio
        assert ratio["vanishing"] is not None and ratio["vanishing"] <= 1.2, ratio
