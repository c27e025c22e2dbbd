"""The chaos campaign's tools, shared by the attacks (``make chaos``) and their smoke runs
(``make test``): a real edged process, an RSS sampler on its pid, a probe agent whose metric
fires a rule, the frame pool and mutator of the live fuzzer, and the figures every attack
reports (printed at the end of the run, and written as JSON by the campaign).

Scale: ``CHAOS_SCALE`` (environment; ``make chaos CHAOS_SCALE=0.2``) multiplies the campaign's
counts and durations; 1 is the issue's goals (10^6 fuzzed frames, 200 SIGKILLs, 100,000
churned agents, ...). The smoke runs use fixed small counts whatever it says.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from edge.runtime import CtlClient
from edge.sdk import Agent
from edge.transport import AGENTS_SOCK, endpoint
from edge.wire import (
    Bye,
    CtlOp,
    Heartbeat,
    Hello,
    MetricDecl,
    encode_bye,
    encode_heartbeat,
    encode_hello,
    encode_metric_batch,
)

from ..support import wait_for

SCALE = float(os.environ.get("CHAOS_SCALE", "1"))
OUT = Path(os.environ.get("CHAOS_OUT", "bench-out/chaos.json"))
MB = 1 << 20
RSS_LIMIT = 64 * MB
"""The issue's goal: edged's RSS never above this under any single-peer attack."""
RSS_SAFETY = 512 * MB
"""An attack stops (and fails) when edged grows past this: the machine is shared."""

RULES = """\
- rule_id: probe
  rule_content: probe_load > 0.5
  action: alert
  priority: 150
  sla_threshold: 50
- rule_id: load
  rule_content: load_x > 0.5
  action: throttle
  priority: 10
  sla_threshold: 100
"""
"""The probe's rule fires on every probe sample; the load rule on every load sample."""

FIGURES: dict[str, dict[str, Any]] = {}
"""attack -> its figures, for the end-of-run table and the campaign's JSON."""


def scaled(smoke: int | float, campaign: int | float, mode: str) -> Any:
    """``smoke`` in the smoke run, ``campaign`` x CHAOS_SCALE in the campaign (same type)."""
    if mode == "smoke":
        return smoke
    value = campaign * SCALE
    return type(campaign)(max(value, smoke))


def report(attack: str, mode: str, **figures: Any) -> dict[str, Any]:
    """Record (and print) an attack's figures."""
    doc = {"mode": mode, **figures}
    FIGURES[f"{attack}[{mode}]"] = doc
    print(f"\nchaos {attack} [{mode}]: {json.dumps(doc, default=str)}")
    return doc


def write_summary(path: Path = OUT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"scale": SCALE, "written_unix": round(time.time()),
           "steady_state": f"rss_steady_mb: edged's RSS after {WARMUP_S:g} s of normal traffic "
                           "(a load agent firing a rule every 2 ms) and a settle, the figure "
                           "'back within 10 %' is judged by; rss_fresh_mb: idle as started",
           "attacks": FIGURES}
    path.write_text(json.dumps(doc, indent=1, default=str))


def pctl(values: list[float], q: float) -> float | None:
    """The q-quantile (0-1) by nearest rank; None without values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# --- edged as a real process ---------------------------------------------------------------------


class EdgedProcess:
    """``edged`` as a subprocess on ``run_dir``/``data_dir`` with the chaos rules; settings
    as ``EDGE_*`` environment (unknown names are ignored by edged: a setting of a fix that
    has not landed yet is harmless)."""

    def __init__(self, run_dir: Path, data_dir: Path, rules: Path, log: Path, **settings: Any):
        self.run_dir, self.data_dir, self.rules, self.log = run_dir, data_dir, rules, log
        self.settings = {"metrics_addr": "", "heartbeat_ms": 200, "missed_beats": 3,
                         "stats_interval_ms": 1000, **settings}
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctl: CtlClient | None = None
        self.ready_s = 0.0

    def start(self, timeout: float = 30.0) -> EdgedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env.update({f"EDGE_{k.upper()}": str(v) for k, v in self.settings.items()})
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from edge.runtime import main; main()",
                 "--run-dir", str(self.run_dir), "--data-dir", str(self.data_dir),
                 "--rules", str(self.rules)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        self.wait_ready(timeout)
        self.ready_s = time.monotonic() - t0
        return self

    def wait_ready(self, timeout: float) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"edged exited with {self.proc.returncode}: {self.tail()}")
            try:
                return self.status(timeout=0.5).get("pid") == self.proc.pid
            except Exception:
                self.close_ctl()
                return False

        wait_for(up, timeout, "edged ready")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        if self._ctl is None:
            self._ctl = CtlClient(self.run_dir, timeout=timeout)
        return self._ctl.request(CtlOp.STATUS)

    def counters(self) -> dict[str, int]:
        return dict(self.status()["counters"])

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def close_ctl(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None

    def kill9(self) -> None:
        self.close_ctl()
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.close_ctl()
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def tracebacks(self) -> int:
        """Uncaught-exception reports in edged's log (handler errors are counted apart)."""
        try:
            return self.log.read_text(errors="replace").count("Traceback")
        except OSError:
            return 0

    def __enter__(self) -> EdgedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            self.stop()
        self.close_ctl()


class RssSampler:
    """Samples a pid's RSS every ``interval_s`` on a thread: ``peak``, ``samples``. Calls
    ``on_limit`` once if RSS passes RSS_SAFETY (the attack should stop)."""

    def __init__(self, pid: int, interval_s: float = 0.01):
        self._proc = psutil.Process(pid)
        self._interval = interval_s
        self.peak = 0
        self.samples: list[int] = []
        self.over_safety = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = int(self._proc.memory_info().rss)
            except psutil.Error:
                return
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            if rss > RSS_SAFETY:
                self.over_safety.set()
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def steady_rss(edged: EdgedProcess, settle_s: float = 1.0) -> int:
    """edged's RSS once it has run idle for ``settle_s`` (the median of a few reads)."""
    time.sleep(settle_s)  # a settling period, not a wait for a condition
    reads = []
    for _ in range(5):
        reads.append(edged.rss())
        time.sleep(0.05)
    return sorted(reads)[2]


WARMUP_S = 8.0
"""The normal traffic before a steady state is read (see :func:`warm_steady_rss`)."""


def warm_steady_rss(edged: EdgedProcess, seconds: float = WARMUP_S) -> tuple[int, int]:
    """``(fresh, warm)``: edged's idle RSS as started, and after ``seconds`` of normal traffic
    (a load agent whose samples fire a rule every 2 ms, its instructions acknowledged) and a
    settle. The warm figure is the steady state of a running board (its event ring full, its
    caches and pools in use) and the one an attack's "back within 10 %" is judged by; the
    fresh one is reported beside it."""
    fresh = steady_rss(edged, 0.5)
    with Load(edged.run_dir, agent_id="warmup"):
        time.sleep(seconds)  # the warm-up's duration: the traffic runs meanwhile
    return fresh, steady_rss(edged, 2.0)


def rss_recovery(edged: EdgedProcess, steady: int, deadline_s: float) -> dict[str, Any]:
    """Poll edged's RSS for ``deadline_s``: ``back_s``, the seconds until it was first within
    10 % of ``steady`` (None: not within the deadline), ``rss_back_mb`` the read then, and
    ``rss_mb``, the read at the deadline (a minute after, in the campaign)."""
    t0 = time.monotonic()
    back: dict[str, Any] = {"back_s": None, "rss_back_mb": None}
    rss = edged.rss()
    while time.monotonic() - t0 < deadline_s:
        rss = edged.rss()
        if back["back_s"] is None and rss <= steady * 1.10:
            back = {"back_s": round(time.monotonic() - t0, 2), "rss_back_mb": round(rss / MB, 1)}
        time.sleep(0.25)
    return {**back, "rss_mb": round(rss / MB, 1)}


def recovery_ratios(recovered: dict[str, Any], fresh: int, steady: int) -> dict[str, Any]:
    """The RSS a minute after as % over the warm steady state (the goal: <= 10) and over the
    fresh one (reported beside it); {} in the smoke (no recovery measured)."""
    if recovered.get("rss_mb") is None:
        return {}
    after = recovered["rss_mb"] * MB
    return {"rss_back_mb": recovered.get("rss_back_mb"),
            "rss_a_minute_after_over_steady_pct": round(100 * (after / steady - 1), 1),
            "rss_a_minute_after_over_fresh_pct": round(100 * (after / fresh - 1), 1)}


# --- the probe -------------------------------------------------------------------------------------


class Probe:
    """An edge.sdk agent reporting ``probe_load`` 1, 0, 1, ... every ``period_s``; each 1 fires
    the ``probe`` rule, whose instruction the agent acknowledges. Records the latency from the
    sample to its instruction's arrival (``latencies_us``) and when each arrived (``arrivals``,
    monotonic s), to tell whether it was served in every window."""

    def __init__(self, run_dir: Path, agent_id: str = "probe", period_s: float = 0.02):
        self.latencies_us: list[float] = []
        self.arrivals: list[float] = []
        self.reports = 0
        self._period = period_s
        self._stop = threading.Event()
        self.agent = Agent(agent_id, ["probe_load"], run_dir=run_dir, handler=self._on)
        self._thread = threading.Thread(target=self._run, name="chaos-probe", daemon=True)
        self.t_start = 0.0

    def _on(self, ins: Any) -> None:
        now = time.monotonic_ns()
        self.latencies_us.append((now - ins.t_sample_ns) / 1000)
        self.arrivals.append(now / 1e9)

    def _run(self) -> None:
        high = False
        while not self._stop.wait(self._period):
            if self.agent.connected:
                high = not high  # rules fire on the rising edge: every other sample
                self.agent.report("probe_load", 1.0 if high else 0.0)
                self.reports += 1

    def start(self) -> Probe:
        self.agent.connect(10)
        self.t_start = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.agent.close()

    def mark(self) -> int:
        """An index into latencies_us: figures of a phase are latencies_us[mark0:mark1]."""
        return len(self.latencies_us)

    def empty_windows(self, window_s: float, t0: float, t1: float) -> int:
        """Windows of ``window_s`` within [t0, t1] in which no instruction arrived."""
        n = max(1, int((t1 - t0) // window_s))
        hit = [False] * n
        for t in self.arrivals:
            i = int((t - t0) // window_s)
            if 0 <= i < n:
                hit[i] = True
        return hit.count(False)

    def __enter__(self) -> Probe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Load:
    """An agent reporting load_x 1, 0, 1, ... every ``period_s`` (each 1 fires the load rule,
    whose instructions it acknowledges)."""

    def __init__(self, run_dir: Path, agent_id: str = "load", period_s: float = 0.001):
        self.agent = Agent(agent_id, ["load_x"], run_dir=run_dir, handler=lambda ins: None)
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def _run(self) -> None:
        high = False
        while not self._stop.wait(self._period):
            high = not high
            try:
                self.agent.report("load_x", 1.0 if high else 0.0)
            except Exception:  # the agent closed under us: the round is over
                return

    def __enter__(self) -> Load:
        self.agent.connect(10)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.agent.close()


# --- raw peers and frames -------------------------------------------------------------------------


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path, *, sndhwm: int = 1000,
           rcvhwm: int = 1000) -> zmq.Socket[bytes]:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, sndhwm)
    s.setsockopt(zmq.RCVHWM, rcvhwm)
    s.setsockopt(zmq.RECONNECT_IVL, 20)
    s.connect(endpoint(run_dir, AGENTS_SOCK))
    return s


def hello(sock: zmq.Socket[bytes], agent_id: str, metrics: tuple[str, ...] = ("load_x",),
          timeout_ms: int = 5000, heartbeat_ms: int = 0) -> Any:
    """Hello on ``sock``; the Welcome (None if refused or none came)."""
    sock.send(encode_hello(Hello(agent_id, tuple(MetricDecl(m) for m in metrics),
                                 heartbeat_ms=heartbeat_ms)))
    return next_welcome(sock, timeout_ms)


def next_welcome(sock: zmq.Socket[bytes], timeout_ms: int = 5000) -> Any:
    """The next Welcome on ``sock``; None when a Notice refused the Hello or none came in
    ``timeout_ms`` (other frames are skipped)."""
    from edge.sim._bench_sims import _await_welcome  # the bench's, for its loop

    try:
        return _await_welcome(sock, timeout_ms / 1000)
    except TimeoutError:
        return None


def bye(sock: zmq.Socket[bytes], session: int) -> None:
    sock.send(encode_bye(Bye(session, "chaos")))


def drain(sock: zmq.Socket[bytes]) -> int:
    n = 0
    while True:
        try:
            sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return n
        n += 1


def frame_pool(rnd: random.Random, sessions: list[int], n: int = 150) -> list[bytes]:
    """Valid frames of every message type (tests/wire's hypothesis strategies, encoded with the
    lean codec and with flatbuffers.Builder), plus hot messages carrying live ``sessions`` so
    that mutants reach past the session lookup."""
    from ..wire import wire_strategies as ws
    from ..wire.test_codec import encode
    from ..wire.test_verify import sample_buffers
    from ..wire.wire_builders import builder_encode

    pool = list(sample_buffers().values())
    with warnings.catch_warnings():  # .example() outside a test is what we want here
        warnings.simplefilter("ignore")
        examples = [ws.messages.example() for _ in range(n)]
    for m in examples:
        try:
            pool.append(encode(m) if type(m).__name__ in ("Heartbeat", "Ack", "Instruction")
                        else builder_encode(m, rnd))
        except Exception:
            pool.append(builder_encode(m, rnd))
    for s in sessions:
        pool.append(encode_heartbeat(Heartbeat(s, time.monotonic_ns(), 1)))
        pool.append(encode_metric_batch(s, 1, time.monotonic_ns(),
                                        [(1, 0.7, time.monotonic_ns()), (2, 1e9, 0)]))
    return pool


@dataclass
class Drops:
    """Frames a DEALER could not hand to libzmq at once (its queue to edged full)."""

    again: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def send_or_count(sock: zmq.Socket[bytes], frames: list[bytes], drops: Drops) -> bool:
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
        return True
    except zmq.Again:
        drops.again += 1
        return False


def settled(read: Callable[[], int], timeout: float, quiet_s: float = 0.5,
            slack: int = 200) -> int:
    """Poll ``read()`` until it grows by at most ``slack`` in ``quiet_s`` (background traffic,
    e.g. a probe, goes on), at most ``timeout`` s; returns the last value."""
    last, t_end = read(), time.monotonic() + timeout
    while time.monotonic() < t_end:
        time.sleep(quiet_s)
        now = read()
        if now - last <= slack:
            return now
        last = now
    return last


def until(deadline_s: float) -> Iterator[float]:
    """Yields the time left until ``deadline_s`` seconds from now, while there is some."""
    t_end = time.monotonic() + deadline_s
    while (left := t_end - time.monotonic()) > 0:
        yield left


def need_root_mount(what: str) -> Callable[[Path, str], None]:
    def mount(path: Path, size: str) -> None:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"{what} needs `mount -t tmpfs` (as root): {r.stderr.strip()}")

    return mount
