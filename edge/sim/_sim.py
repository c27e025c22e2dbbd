"""The rig behind ``edgectl bench`` and ``edgectl demo``: edged and simulated agents as child
processes in a throw-away directory, and the simulated agents themselves.

Separate processes, not threads, so that each side has its own GIL, as on a real board.
Each agent role runs as ``python -m edge.sim._sim ROLE ...``:

    probe   the bench's measured agent: high sample -> instruction -> Ack -> low sample, paced
    load    background metric load: batches at a fixed rate on series a rule watches
    pong    the baseline: a bare pyzmq ROUTER that answers each frame, polling like edged does
    fleet   the demo's agents (threads in one process), one of which runs away

Parent <-> child protocol (line-based, so a dead parent is noticed as EOF on stdin)::

    parent -> child stdin     one word per line: run | pause | mark | report | hold | quit
    child  -> parent stdout   one JSON object per line, {"event": ...}: ready, paused, marked,
                              report, held, status (fleet, 4 Hz), error (then the child exits)

``Rig.close()`` stops every child (``quit``, then SIGTERM, then SIGKILL, each after a grace
period) and removes the directory, whatever state the run is in.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import RuntimeStateError

HIST_MAX_NS = 10_000_000_000  # 10 s: anything slower is clamped (and would be a failure anyway)
_ENV_DROP = ("EDGE_",)  # the children get exactly the settings the rig passes, nothing inherited


# ------------------------------------------------------------------ shared helpers


def new_hist() -> Any:
    """An HDR histogram of nanoseconds, 1 ns .. 10 s, 3 significant digits."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, HIST_MAX_NS, 3)


def record_ns(hist: Any, ns: int) -> None:
    hist.record_value(min(max(ns, 1), HIST_MAX_NS))


def _pct_or_none(share: float | None) -> float | None:
    return None if share is None else round(share * 100, 4)


def summary_us(hist: Any) -> dict[str, Any]:
    """count, min, mean, p50, p90, p99, p999, max of a ns histogram, in µs (count 0: only count)."""
    n = hist.get_total_count()
    if not n:
        return {"count": 0}
    out: dict[str, Any] = {"count": n, "min": hist.get_min_value() / 1000.0,
                           "mean": round(hist.get_mean_value() / 1000.0, 3)}
    for name, pct in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)):
        out[name] = hist.get_value_at_percentile(pct) / 1000.0
    out["max"] = hist.get_max_value() / 1000.0
    return out


# edged aggregates only for a configured upstream; the bench measures a board that has one
# (edged never connects to it: edge-sync would)
WITH_UPSTREAM = {"EDGE_UPSTREAM_URL": "nats://127.0.0.1:1"}


def psi_cpu_some_us() -> int | None:
    """Linux pressure stall information: total µs some runnable task waited for a CPU (None
    without PSI). Two readings over a window say how busy the machine was meanwhile."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1])


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_DROP)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def edged_command() -> list[str]:
    """The ``edged`` console script next to this interpreter, or the same entry point via -c."""
    script = Path(sys.executable).with_name("edged")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from edge.runtime import main; main()"]


# ------------------------------------------------------------------ parent side


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. from CI) unwinds like Ctrl-C, so the rig is cleaned up either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)



class Child:
    """One child process with a line protocol on its stdin/stdout; stderr goes to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *, pipes: bool = True,
                 cwd: Path | None = None, env: Mapping[str, str] | None = None):
        self.name = name
        self.log = log
        self._buf = b""
        self._lines: collections.deque[dict[str, Any]] = collections.deque()
        with open(log, "ab") as err:
            # A session of its own: a Ctrl-C at the terminal reaches only the parent, which
            # then stops the children in order (agents first, edged last).
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else err,
                stderr=err,
                env=child_env(env),
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, word: str) -> None:
        """Write one command line; a child that has gone is not an error here (see expect)."""
        if self.proc.stdin is None or self.proc.stdin.closed:
            return
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def _read_lines(self, timeout: float) -> None:
        out = self.proc.stdout
        if out is None:
            return
        ready, _, _ = select.select([out], [], [], max(0.0, timeout))
        if not ready:
            return
        chunk = os.read(out.fileno(), 65536)
        if not chunk:
            raise RuntimeStateError(self._died("closed its output"))
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    self._lines.append(json.loads(line))
                except ValueError:
                    self._lines.append({"event": "text", "text": line.decode("utf-8", "replace")})

    def events(self) -> list[dict[str, Any]]:
        """Every complete line received so far, without waiting."""
        with contextlib.suppress(RuntimeStateError):
            self._read_lines(0)
        out = list(self._lines)
        self._lines.clear()
        return out

    def expect(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for ``{"event": event}``; other lines before it are dropped.

        Raises RuntimeStateError (with the tail of the child's log) on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            while self._lines:
                msg = self._lines.popleft()
                if msg.get("event") == event:
                    return msg
                if msg.get("event") == "error":
                    raise RuntimeStateError(f"{self.name} failed: {msg.get('message')}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeStateError(self._died(f"sent no {event!r} within {timeout:g} s"))
            if not self.alive() and not self._lines:
                self._read_lines(0)  # whatever it wrote before exiting
                if not self._lines:
                    raise RuntimeStateError(self._died("exited"))
                continue
            self._read_lines(min(left, 0.2))

    def _died(self, what: str) -> str:
        code = self.proc.poll()
        status = "" if code is None else f" (exit code {code})"
        return f"{self.name} {what}{status}; {self.log_tail()}"

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            text = []
        if not text:
            return "its log is empty"
        return f"last lines of {self.log.name}:\n    " + "\n    ".join(text[-lines:])

    def stop(self, grace: float = 5.0) -> int | None:
        """``quit`` (sims) or SIGTERM (edged), SIGKILL after ``grace`` s; returns the exit code."""
        if self.alive():
            if self.proc.stdin is not None:
                self.send("quit")
            else:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        return self.proc.returncode


class Rig:
    """A throw-away directory (``/tmp/edge-XXXX``: AF_UNIX paths are short) holding edged's
    run and data directories, its log, and the simulated agents' logs."""

    def __init__(self, *, edged_env: Mapping[str, str] | None = None) -> None:
        """``edged_env``: EDGE_* settings for edged (the bench gives it an upstream_url so that
        it aggregates, as a board with an upstream does)."""
        self.edged_env = dict(edged_env or {})
        self.root = Path(tempfile.mkdtemp(prefix="edge-", dir="/tmp"))
        self.run_dir = self.root / "run"
        self.data_dir = self.root / "data"
        self.edged: Child | None = None
        self.edged_exit: int | None = None
        self._sims: list[Child] = []
        self._closed = False

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_edged(self, rules_file: Path, *, timeout: float = 20.0, log_level: str = "INFO",
                    config_file: Path | None = None) -> Child:
        """Start edged (``config_file``: a TOML config for it) and wait until ctl.sock answers
        STATUS.

        Raises RuntimeStateError saying why (its exit code and log tail) if it does not."""
        from ..runtime import CtlClient
        from ..wire import CtlOp

        self.stop_edged()  # a rig runs one edged at a time (the bench's second pass starts anew)
        self.edged_exit = None
        argv = [*edged_command(), "--run-dir", str(self.run_dir), "--data-dir", str(self.data_dir),
                "--rules", str(rules_file), "--metrics-addr", "", "--log-level", log_level]
        if config_file is not None:
            argv += ["--config", str(config_file)]
        edged = self.edged = Child("edged", argv, self.root / "edged.log", pipes=False,
                                   cwd=self.root, env=self.edged_env)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not edged.alive():
                raise RuntimeStateError(f"edged did not start: it exited with code "
                                        f"{edged.proc.returncode}; {edged.log_tail()}")
            if (self.run_dir / "ctl.sock").exists():
                try:
                    with CtlClient(self.run_dir, timeout=1.0) as client:
                        client.request(CtlOp.STATUS)
                    return edged
                except Exception as exc:  # not answering yet, or a bug worth showing below
                    last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)  # polling for a child process to come up
        raise RuntimeStateError(f"edged did not answer within {timeout:g} s"
                                f"{' (' + last + ')' if last else ''}; {edged.log_tail()}")

    def spawn(self, role: str, *args: str) -> Child:
        """Start ``python -m edge.sim._sim ROLE ARGS``."""
        argv = [sys.executable, "-m", "edge.sim._sim", role, *args]
        child = Child(role, argv, self.root / f"{role}-{len(self._sims)}.log", cwd=self.root)
        self._sims.append(child)
        return child

    def spawn_command(self, name: str, argv: Sequence[str]) -> Child:
        """Start a command (no line protocol: SIGTERM stops it) that is stopped with the
        simulated agents, before edged."""
        child = Child(name, argv, self.root / f"{name}.log", pipes=False, cwd=self.root)
        self._sims.append(child)
        return child

    def stop_sims(self) -> None:
        for child in reversed(self._sims):
            child.stop()

    def stop_edged(self) -> int | None:
        if self.edged is not None and self.edged_exit is None:
            self.edged_exit = self.edged.stop(grace=10.0)
        return self.edged_exit

    def close(self) -> None:
        """Stop agents, then edged, then remove the directory. Idempotent; never raises for a
        child that is already gone."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop_sims()
            self.stop_edged()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------ child side


class Commands:
    """The parent's words, read on a daemon thread. EOF on stdin (the parent is gone) and
    SIGTERM both read as ``quit``, so an orphaned child exits by itself."""

    def __init__(self) -> None:
        self._q: collections.deque[str] = collections.deque()
        self.quit = False
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        threading.Thread(target=self._read, name="sim-stdin", daemon=True).start()

    def _on_term(self, signum: int, frame: object) -> None:
        self.quit = True  # only a flag: a signal handler must not take locks

    def _read(self) -> None:
        for line in sys.stdin:
            word = line.strip()
            if word:
                self._q.append(word)
        self._q.append("quit")

    def poll(self) -> str | None:
        if self.quit:
            return "quit"
        try:
            word = self._q.popleft()
        except IndexError:
            return None
        if word == "quit":
            self.quit = True
        return word

    def wait(self, timeout: float) -> str | None:
        """The next word, waiting up to ``timeout`` s in 5 ms steps (idle children only)."""
        deadline = time.monotonic() + timeout
        while True:
            word = self.poll()
            if word is not None or time.monotonic() >= deadline:
                return word
            time.sleep(0.005)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _reported_errors() -> Iterator[None]:
    """An exception in a child becomes an ``error`` line the parent shows, plus a traceback
    in the child's log."""
    try:
        yield
    except Exception as exc:
        import traceback

        traceback.print_exc()
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from None


@click.group(hidden=True)
def sim() -> None:
    """Simulated agents for edgectl bench and demo (children of the rig, not for people)."""


# ---- probe: the measured closed loop


@sim.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@click.option("--agent-id", default="bench-probe")
@click.option("--metric", default="bench_probe")
@click.option("--rate", type=float, default=1000.0, help="Iterations per second; 0 = free-running.")
@click.option("--high", type=float, default=1.0)
@click.option("--low", type=float, default=0.0)
@click.option("--timeout-ms", type=float, default=1000.0, help="Give up on one instruction then.")
@click.option("--transport", type=click.Choice(["zmq", "seqpacket"]), default="zmq")
@click.option("--rt", default=None, help="The SDK's real-time profile, CPU[:PRIO].")
def probe(run_dir: Path, agent_id: str, metric: str, rate: float, high: float, low: float,
          timeout_ms: float, transport: str, rt: str | None) -> None:
    """High sample -> wait for the instruction (timed in the handler) -> low sample -> pace.
    ``run`` and ``pause`` switch the loop on and off (segments add up); ``mark`` zeroes the
    figures; ``report`` sends them."""
    from ..runtime._stats import jitter_pct, share_at_or_below
    from ..sdk import Agent

    cmds = Commands()
    now = time.monotonic_ns
    got = threading.Event()
    last: list[Any] = [None]  # (t_sample_ns carried back by edged, t in handler, instruction id)

    def on_instruction(ins: Any) -> None:
        last[0] = (ins.t_sample_ns, now(), ins.instruction_id)

    def acked(ins: Any, status: Any) -> None:
        got.set()  # after the Ack: waking the loop thread is not part of the execute stage

    with _reported_errors(), Agent(agent_id, [metric], handler=on_instruction, run_dir=run_dir,
                                   kind="bench-probe", after_ack=acked, transport=transport,
                                   rt=rt) as agent:
        mid = agent.metric_id(metric)
        agent.pin_current_thread()  # this thread reports: with --rt, beside the I/O thread
        period_ns = int(1e9 / rate) if rate > 0 else 0
        wait_s = timeout_ms / 1000.0
        e2e, rtt = new_hist(), new_hist()
        counts = collections.Counter[str]()
        emit("ready", pid=os.getpid())
        running = False
        next_ns = seg_started = now()
        elapsed_ns = 0
        while True:
            word = cmds.poll() if running else cmds.wait(0.2)
            if word == "quit":
                break
            if word == "run" and not running:
                running, next_ns = True, now()
                seg_started = now()
            elif word == "pause":
                if running:
                    elapsed_ns += now() - seg_started
                running = False
                emit("paused")
            elif word == "mark":
                e2e, rtt = new_hist(), new_hist()
                counts = collections.Counter()
                elapsed_ns = 0
                emit("marked")
            elif word == "report":
                emit("report", e2e_us=summary_us(e2e), rtt_us=summary_us(rtt),
                     e2e_jitter_pct=jitter_pct(e2e),
                     e2e_within_1ms_pct=_pct_or_none(share_at_or_below(e2e, 1_000_000)),
                     elapsed_s=elapsed_ns / 1e9, transport=agent.transport,
                     rt_applied=agent.rt_applied, **counts)
            if not running:
                continue
            # one iteration of the closed loop
            got.clear()
            last[0] = None
            t0 = now()
            if agent.report_ids(((mid, high, t0),)) != 1:
                counts["dropped"] += 1
            counts["samples_sent"] += 1
            counts["iterations"] += 1
            if got.wait(wait_s):
                t_back = now()
                t_sample, t_done, _iid = last[0]
                if t_sample == t0:
                    record_ns(e2e, t_done - t0)
                    record_ns(rtt, t_back - t0)
                    counts["answered"] += 1
                else:
                    counts["mismatched"] += 1  # a late answer to an earlier, timed-out sample
            else:
                counts["lost"] += 1
            agent.report_ids(((mid, low, now()),))  # re-arms the edge-triggered rule
            counts["samples_sent"] += 1
            if period_ns:
                next_ns += period_ns
                gap = next_ns - now()
                if gap > 0:
                    time.sleep(gap / 1e9)  # pacing between iterations, not a wait-for-it
                else:
                    counts["late"] += 1
                    next_ns = now()


# ---- load: background samples at a fixed rate


@sim.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@click.option("--agent-id", default="bench-load")
@click.option("--metric", default="load_value")
@click.option("--series", type=int, default=16, help="Series (one label value each).")
@click.option("--rate", type=float, default=5000.0, help="Samples per second.")
@click.option("--batch", type=int, default=50, help="Samples per MetricBatch.")
@click.option("--catch-up-ms", type=float, default=0.0,
              help="Behind schedule by at most this much: send the missed batches (a rate on "
                   "average); further behind, skip ahead. 0: never catch up (a steady pace).")
def load(run_dir: Path, agent_id: str, metric: str, series: int, rate: float, batch: int,
         catch_up_ms: float) -> None:
    """Send ``rate`` samples/s as batches of ``batch`` on a fixed schedule (no catch-up bursts).
    Words on stdin: run, pause, mark, report, ``rate N`` (a new pace), quit."""
    from ..sdk import Agent

    cmds = Commands()
    decls = [(metric, {"ch": str(i)}) for i in range(series)]
    batch = max(1, min(batch, int(rate) or 1))
    with _reported_errors(), Agent(agent_id, decls, handler=lambda ins: None, run_dir=run_dir,
                                   kind="bench-load") as agent:
        ids = [agent.metric_id(name, labels) for name, labels in decls]
        values = [0.25 + 0.5 * (i % 97) / 97 for i in range(batch)]
        n = len(ids)
        cycle = [ids[j % n] for j in range(batch + n)]  # batch k: cycle[k % n:][:batch]
        period = batch / rate
        sent = late = 0
        mark_sent = mark_dropped = 0
        active_s = 0.0  # time spent running since the last mark (pauses do not count)
        run_t = time.monotonic()
        emit("ready", pid=os.getpid())
        running = False
        next_t = 0.0
        k = 0
        while True:
            word = cmds.poll() if running else cmds.wait(0.2)
            if word == "quit":
                break
            if word == "run":
                if not running:
                    running, next_t = True, time.monotonic()
                    run_t = next_t
            elif word == "pause":
                if running:
                    active_s += time.monotonic() - run_t
                running = False
                emit("paused")
            elif word == "mark":
                mark_sent, active_s, run_t = sent, 0.0, time.monotonic()
                mark_dropped = agent.counters["dropped"]
                emit("marked")
            elif word is not None and word.startswith("rate "):  # a new pace from now on (the rig's calibration)
                rate = max(float(word[5:]), 1.0)
                period = batch / rate
                next_t = time.monotonic()
                emit("rate", rate=rate)
            elif word == "report":
                elapsed = active_s + (time.monotonic() - run_t if running else 0.0)
                dropped = agent.counters["dropped"] - mark_dropped  # edged's queue was full
                emit("report", sent=sent - mark_sent, elapsed_s=elapsed,
                     sent_per_s=(sent - mark_sent) / elapsed if elapsed > 0 else 0.0,
                     offered_per_s=(sent - mark_sent + dropped) / elapsed if elapsed > 0 else 0.0,
                     late=late, dropped=dropped)
            if not running:
                continue
            t = time.monotonic()
            if t < next_t:
                time.sleep(min(next_t - t, 0.05))  # pacing to the schedule
                continue
            off = k % n
            sent += agent.report_ids(list(zip(cycle[off:off + batch], values,
                                              itertools.repeat(time.monotonic_ns(), batch), strict=True)))
            k += batch
            next_t += period
            if next_t < t - max(period, catch_up_ms / 1000.0):  # fell behind: skip ahead
                late += 1
                next_t = t


# ---- pong: the baseline's server side


@sim.command()
@click.option("--endpoint", required=True, help="ipc://... to bind.")
@click.option("--reply-bytes", type=int, default=128)
@click.option("--seq-path", type=click.Path(path_type=Path), default=None,
              help="Also answer on an AF_UNIX SOCK_SEQPACKET socket bound here (the fast lane's "
                   "floor).")
@click.option("--rt", default=None, help="The real-time profile, CPU[:PRIO], for this process.")
def pong(endpoint: str, reply_bytes: int, seq_path: Path | None, rt: str | None) -> None:
    """Answer each frame with ``reply-bytes`` bytes, the way edged's loop reads: poll, then
    recv NOBLOCK until empty, send NOBLOCK; on both transports, like edged. MetricBatch
    frames (a background load sent to this peer, as edged gets one) are read and dropped."""
    import socket

    import zmq

    from .._rt import apply_rt_profile

    cmds = Commands()
    reply = bytes(reply_bytes)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    if rt:  # after the socket: libzmq's I/O thread exists
        apply_rt_profile(rt)
    lane: socket.socket | None = None
    conns: dict[int, socket.socket] = {}
    batch = b"EMBT"
    try:
        with _reported_errors():
            sock.bind(endpoint)
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            if seq_path is not None:
                lane = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
                lane.bind(str(seq_path))
                lane.listen(8)
                poller.register(lane.fileno(), zmq.POLLIN)
            emit("ready", pid=os.getpid())
            while cmds.poll() != "quit":
                for s, _ in poller.poll(100):
                    if s is sock:
                        while True:
                            try:
                                rid, msg = sock.recv_multipart(zmq.NOBLOCK)
                            except zmq.Again:
                                break
                            if msg[4:8] != batch:
                                sock.send_multipart((rid, reply), zmq.NOBLOCK)
                    elif lane is not None and s == lane.fileno():
                        c, _ = lane.accept()
                        c.setblocking(False)
                        conns[c.fileno()] = c
                        poller.register(c.fileno(), zmq.POLLIN)
                    elif s in conns:
                        c = conns[s]
                        try:
                            msg = c.recv(1 << 16)
                        except BlockingIOError:
                            continue
                        if not msg:
                            poller.unregister(s)
                            conns.pop(s).close()
                        elif msg[4:8] != batch:
                            c.send(reply, socket.MSG_DONTWAIT)
    finally:
        for c in conns.values():
            c.close()
        if lane is not None:
            lane.close()
        sock.close(linger=0)
        ctx.term()


# ---- fleet: the demo's agents


class SimAgent:
    """One simulated agent: a small model stepped at 10 Hz and reported through the SDK.

    ``on_instruction`` runs on the SDK's I/O thread; the model and reporting run on the
    fleet's driver thread; ``lock`` keeps the two consistent."""

    kind = "ai-agent"

    def __init__(self, agent_id: str, rng: random.Random, run_dir: Path, t0: float):
        self.agent_id = agent_id
        self.t0 = t0
        self.rng = rng
        self.run_dir = run_dir
        self.lock = threading.Lock()
        self.state = "starting"
        self.restarts = 0
        self.handled: collections.Counter[str] = collections.Counter()
        self.agent: Any = None
        self.values: dict[str, float] = {}

    def metrics(self) -> list[Any]:
        return ["cpu_usage", "memory_usage"]

    def connect(self) -> None:
        from ..sdk import Agent

        self.agent = Agent(self.agent_id, self.metrics(), handler=self.on_instruction,
                           run_dir=self.run_dir, kind=self.kind).connect(timeout=10.0)
        self.state = "running"

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()
            self.agent = None

    def on_instruction(self, ins: Any) -> Any:
        with self.lock:
            self.handled[ins.action_name] += 1
            return self.apply(ins.action_name, {p.key: p.value for p in ins.params})

    def apply(self, action: str, params: dict[str, Any]) -> Any:
        return None  # alerts and the like: acknowledged, nothing to change

    def clock(self) -> float:
        """Seconds since the fleet started (the models' time axis)."""
        return time.monotonic() - self.t0

    def noise(self, mean: float, spread: float) -> float:
        return mean + self.rng.uniform(-spread, spread)

    def model(self, t: float) -> list[tuple[Any, ...]]:
        return [("cpu_usage", self.noise(0.35, 0.05)), ("memory_usage", self.noise(0.52, 0.01))]

    def step(self, t: float) -> None:
        with self.lock:
            items = self.model(t)
        for item in items:
            self.values[item[0]] = item[1]
        if self.agent is not None and items:
            self.agent.report_many(items)

    def status(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "kind": self.kind, "state": self.state,
                "restarts": self.restarts, "handled": dict(self.handled),
                "connected": self.agent is not None and self.agent.connected,
                "values": {k: round(v, 3) for k, v in self.values.items()}}


class Perception(SimAgent):
    """Steady CPU; inference latency spikes for ~1 s every ~7 s (an alert rule watches it)."""

    def metrics(self) -> list[Any]:
        return [*super().metrics(), "inference_latency_ms"]

    def model(self, t: float) -> list[tuple[Any, ...]]:
        spike = 3.0 < t % 7.0 < 4.0
        lat = self.noise(62.0, 4.0) if spike else self.noise(28.0, 3.0)
        return [("cpu_usage", self.noise(0.55, 0.06)), ("memory_usage", self.noise(0.61, 0.01)),
                ("inference_latency_ms", lat)]


class Gateway(SimAgent):
    kind = "firmware-bridge"

    def metrics(self) -> list[Any]:
        return [*super().metrics(), "can_bus_load_pct"]

    def model(self, t: float) -> list[tuple[Any, ...]]:
        return [("cpu_usage", self.noise(0.12, 0.03)), ("memory_usage", self.noise(0.2, 0.01)),
                ("can_bus_load_pct", 35.0 + 10.0 * math.sin(t / 3.0) + self.rng.uniform(-2, 2))]


class Plc(SimAgent):
    """A drive that heats up under load; a throttle instruction cools it, and after a while
    production speeds up again."""

    kind = "plc"

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.temp = 72.0
        self.cool_until = -1.0

    def metrics(self) -> list[Any]:
        return ["cpu_usage", ("temperature_c", {"zone": "drive"})]

    def apply(self, action: str, params: dict[str, Any]) -> Any:
        if action == "throttle":
            self.state = f"throttled x{params.get('rate', 0.5):g}"
            self.cool_until = self.clock() + 4.0
        return None

    def model(self, t: float) -> list[tuple[Any, ...]]:
        if t < self.cool_until:
            self.temp = max(64.0, self.temp - 1.2)
        else:
            self.state = "running"
            self.temp += 1.0
        return [("cpu_usage", self.noise(0.3, 0.04)),
                ("temperature_c", self.temp + self.rng.uniform(-0.3, 0.3), {"zone": "drive"})]


class Runaway(SimAgent):
    """Misbehaves: CPU climbs past 0.9 and stays there until a restart_agent instruction; the
    restart (a real reconnect: Bye, new process-like session, Hello) brings it back to normal,
    and some seconds later it runs away again."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.cpu = 0.45
        self.calm_until = 0.6
        self.restart_at = -1.0
        self.back_at = -1.0

    def apply(self, action: str, params: dict[str, Any]) -> Any:
        if action == "restart_agent" and self.restart_at < 0 and self.back_at < 0:
            self.restart_at = self.clock() + 0.1  # shut down shortly: let the Ack leave first
        return None

    def model(self, t: float) -> list[tuple[Any, ...]]:
        if t < self.calm_until:
            self.cpu = self.noise(0.45, 0.05)
            self.state = "running"
        else:
            self.cpu = min(0.98, self.cpu + 0.08) + self.rng.uniform(-0.01, 0.01)
            self.state = "running away" if self.cpu > 0.9 else "climbing"
        return [("cpu_usage", self.cpu), ("memory_usage", self.noise(0.7, 0.02))]

    def step(self, t: float) -> None:
        if 0 <= self.restart_at <= t:
            self.restart_at = -1.0
            self.state = "restarting"
            self.close()
            self.back_at = t + 0.5
            return
        if self.back_at >= 0:
            if t < self.back_at:
                return
            self.back_at = -1.0
            self.restarts += 1
            self.connect()
            self.calm_until = t + 4.0
        super().step(t)


FLEET: tuple[tuple[str, Callable[..., SimAgent]], ...] = (
    ("perception-1", Perception),
    ("planner-1", SimAgent),
    ("can-gateway", Gateway),
    ("plc-line-3", Plc),
    ("llm-assistant-2", Runaway),
)


@sim.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@click.option("--hz", type=float, default=10.0, help="Model steps (and reports) per second.")
@click.option("--status-hz", type=float, default=4.0)
@click.option("--seed", type=int, default=7)
def fleet(run_dir: Path, hz: float, status_hz: float, seed: int) -> None:
    """The demo's agents, one thread of models plus one SDK I/O thread per agent."""
    cmds = Commands()
    rng = random.Random(seed)
    t0 = time.monotonic()
    agents = [cls(agent_id, random.Random(rng.random()), run_dir, t0) for agent_id, cls in FLEET]
    try:
        with _reported_errors():
            for a in agents:
                a.connect()
            emit("ready", pid=os.getpid(), agents=[a.agent_id for a in agents])
            step, status_every = 1.0 / hz, 1.0 / status_hz
            next_step = next_status = t0
            holding = False
            while True:
                word = cmds.poll()
                if word == "quit":
                    break
                if word == "hold":  # stop reporting so in-flight instructions can settle
                    holding = True
                    emit("held")
                now = time.monotonic()
                if now >= next_step:
                    next_step += step
                    if not holding:
                        for a in agents:
                            a.step(now - t0)
                if now >= next_status:
                    next_status += status_every
                    emit("status", t=round(now - t0, 2), agents=[a.status() for a in agents])
                time.sleep(max(0.0, min(next_step, next_status) - time.monotonic()))
    finally:
        for a in agents:
            a.close()


def main(argv: list[str] | None = None) -> None:
    sim(args=argv, prog_name="python -m edge.sim._sim")


if __name__ == "__main__":
    main()
