"""``edgectl bench``: the closed loop's latency on this machine, measured against raw IPC.

What runs (each a separate process, so each has its own GIL)::

    edged            the daemon, started with a two-rule table in a throw-away directory
    load agent       background samples at --background-rate, in batches, on 16 series a
                     (never-firing) rule watches, so edged evaluates every one of them
    probe agent      the measured loop: a high sample trips ``bench_probe > 0.5`` (no hold),
                     edged sends an instruction, the handler runs, the SDK Acks it; a low
                     sample re-arms the edge-triggered rule; paced at --loop-rate iterations/s
    pong             the baseline: a bare pyzmq ROUTER answering a DEALER, polling like edged,
                     with frames the size of a MetricBatch and an Instruction

Sequence: baseline ping-pong on an idle machine -> edged + load + probe -> warm-up ->
STATS_RESET -> the measured window -> STATS -> baseline ping-pong again, under the same
background load (``ratio_p99`` uses this one: same conditions) -> everything stopped, the
directory removed (also on Ctrl-C, SIGTERM or a failure).

Stage and e2e figures are edged's (its HDR histograms); the probe also times e2e itself,
from the sample's t_ns to the end of its handler, as a cross-check (``probe_e2e_us``).

Reading the figures: the loop and the baseline are paced at the same rate because the pace
changes the answer. Every hop wakes a sleeping thread, and waking an idle CPU is expensive on
small and virtualised boards: on the 2-vCPU development VM, raw pyzmq ping-pong costs ~140 µs
p50 paced at 1000/s but ~300 µs at 100/s. ``cpu_pct.others`` says how much CPU other
processes took during the window; a shared machine makes the tail theirs as much as ours.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import EdgeError
from ..sim import (
    new_hist,
    psi_cpu_some_us,
    record_ns,
    sigterm_as_interrupt,
    summary_us,
)
from ._bench_goals import E2E_P99_GOAL_US, goal_lines, goal_rows
from ._bench_rules import ACTIVATION_RULES, activation_table, eval_cost, memory_per_rule
from ._bench_scenarios import (
    SCENARIOS,
    ScenarioRig,
    run_scenarios,
    scenario_config,
    write_latency_plot,
)
from ._bench_scenarios import summary_lines as scenario_summary_lines

STAGES = ("collect", "trans1", "compute", "rule", "trans2", "execute")
PROBES = {"zmq": "bench-probe", "seqpacket": "bench-probe-seq"}
"""One probe agent per transport: the ZeroMQ default and the fast lane."""
_INTERLEAVED = ("interleaved with the loop's segments in the same window; the same background "
                "load sent to the pong process (over ZeroMQ, as edged gets it) meanwhile")
PROBE_METRIC = "bench_probe"
PROBE_RULE = f"{PROBE_METRIC} > 0.5"
LOAD_RULE = "load_value > 1000000"
LOAD_SERIES = 16
_PROBE_COUNTS = ("iterations", "answered", "lost", "mismatched", "late", "dropped", "samples_sent")
OTHERS_WARN_PCT = 10.0  # CPU (% of one core) used by processes outside the bench


def _rules_yaml(sla_ms: float) -> str:
    return (
        "# edgectl bench: written per run, removed with the run directory\n"
        "- rule_id: bench_probe\n"
        "  rule_name: bench closed loop (threshold, no hold, edge-triggered)\n"
        f'  rule_content: "{PROBE_RULE}"\n'
        "  action: throttle\n"
        "  params: {rate: 0.5}\n"
        "  priority: 9\n"
        f"  sla_threshold: {sla_ms:g}\n"
        "  agents: [bench-probe*]\n"
        "- rule_id: bench_load_guard\n"
        "  rule_name: background series guard (evaluated on every sample, never fires)\n"
        f'  rule_content: "{LOAD_RULE}"\n'
        "  action: alert\n"
        "  priority: 1\n"
        "  sla_threshold: 10\n"
    )


def _message_sizes() -> dict[str, int]:
    """Bytes of a one-sample MetricBatch and of the probe's Instruction, for the baseline."""
    from ..wire import Action, Instruction, Param, encode_instruction, encode_metric_batch

    t = time.monotonic_ns()
    batch = encode_metric_batch(1 << 62, 1, t, [(0, 1.0, t)])
    ins = encode_instruction(Instruction(1 << 40, "bench_probe", Action.THROTTLE, "",
                                         (Param("rate", 0.5),), 9, t, 0, 1.0, t))
    return {"metric_batch_1": len(batch), "instruction": len(ins)}


def machine_info() -> dict[str, Any]:
    import psutil
    import zmq

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "uarch", "isa")):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_model": model,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "memory_bytes": psutil.virtual_memory().total,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The checkout's commit (short, ``+dirty`` with local changes); None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def pingpong_into(
    hist: Any, target: str, request_bytes: int, seconds: float, rate: float, rt: str | None = None
) -> int:
    """Round trips to the pong process (another process), paced at ``rate``/s like the loop,
    recorded into ``hist`` (ns); returns how many got no answer within 1 s. ``target`` is an
    ``ipc://`` endpoint (DEALER -> ROUTER) or ``seqpacket:PATH`` (AF_UNIX SOCK_SEQPACKET, the
    fast lane's floor). ``rt``: the real-time profile for this thread and libzmq's threads
    while it runs (restored afterwards)."""
    import select
    import socket

    import zmq

    from .._rt import apply_rt_profile

    payload = bytes(request_bytes)
    now = time.monotonic_ns
    period = int(1e9 / rate) if rate > 0 else 0
    lost = 0
    if target.startswith("seqpacket:"):
        lane = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        lane.connect(target[len("seqpacket:") :])
        poll = select.poll()
        poll.register(lane.fileno(), select.POLLIN)

        def send() -> None:
            lane.send(payload)

        def answered(timeout_ms: int) -> bool:
            if not poll.poll(timeout_ms):
                return False
            lane.recv(1 << 16)
            return True

        def close() -> None:
            lane.close()
    else:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(target)

        def send() -> None:
            sock.send(payload)

        def answered(timeout_ms: int) -> bool:
            if not sock.poll(timeout_ms):
                return False
            sock.recv()
            return True

        def close() -> None:
            sock.close(linger=0)
            ctx.term()

    saved = (os.sched_getaffinity(0), os.sched_getscheduler(0), os.sched_getparam(0))
    if rt:
        apply_rt_profile(rt, mlock=False)
    try:
        for _ in range(50):  # connect and warm both sides up; not recorded
            send()
            answered(2000)
        end = now() + int(seconds * 1e9)
        next_ns = now()
        while now() < end:
            t0 = now()
            send()
            if answered(1000):
                record_ns(hist, now() - t0)
            else:
                lost += 1
            if period:
                next_ns += period
                gap = next_ns - now()
                if gap > 0:
                    time.sleep(gap / 1e9)  # pacing, same as the probe's loop
                else:
                    next_ns = now()
    finally:
        close()
        if rt:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, saved[1], saved[2])
                os.sched_setaffinity(0, saved[0])
    return lost


def hist_summary(hist: Any, lost: int, sla_ns: int) -> dict[str, Any]:
    """µs summary of a ns histogram plus ``lost``, the seed's jitter and the share within
    ``sla_ns``."""
    from ..runtime._stats import jitter_pct, share_at_or_below

    within = share_at_or_below(hist, sla_ns)
    return {
        **summary_us(hist),
        "lost": lost,
        "jitter_pct": jitter_pct(hist),
        "within_sla_pct": None if within is None else round(within * 100, 4),
    }


def pingpong(
    endpoint: str, request_bytes: int, seconds: float, rate: float, sla_ns: int = 1_000_000
) -> dict[str, Any]:
    """One run of ``pingpong_into``, summarised (µs, lost, jitter, share within ``sla_ns``)."""
    hist = new_hist()
    lost = pingpong_into(hist, endpoint, request_bytes, seconds, rate)
    return hist_summary(hist, lost, sla_ns)


class _CpuMeter:
    """CPU use between start() and stop(), in percent of one core: each of our processes, the
    whole machine, and everything else (other people's work on a shared box skews a bench, so
    the result says how much of it there was)."""

    def __init__(self, pids: dict[str, int]):
        import psutil

        self._psutil = psutil
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._procs["bench"] = psutil.Process()
        self._ncpu = psutil.cpu_count() or 1
        self._t0 = 0.0
        self._c0: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name, p in self._procs.items():
            try:
                c = p.cpu_times()
                out[name] = c.user + c.system + c.children_user + c.children_system
            except Exception:  # the process is gone: nothing to report for it
                out[name] = float("nan")
        # Busy = wall x cores - idle: idle time is measured exactly on tickless kernels,
        # while the busy fields of /proc/stat are tick-sampled and miss short wake-ups.
        t = self._psutil.cpu_times()
        out["machine"] = (time.monotonic() * self._ncpu - t.idle - getattr(t, "iowait", 0.0))
        psi = psi_cpu_some_us()
        out["psi"] = float("nan") if psi is None else psi / 1e6
        return out

    def start(self) -> None:
        self._t0, self._c0 = time.monotonic(), self._cpu()

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._t0
        c1 = self._cpu()
        pct: dict[str, Any] = {k: round((c1[k] - self._c0[k]) / elapsed * 100.0, 1) for k in c1}
        psi = pct.pop("psi")
        ours = sum(v for k, v in pct.items() if k != "machine")
        pct["others"] = round(max(0.0, pct["machine"] - ours), 1)
        pct["psi_cpu_some"] = None if psi != psi else psi  # NaN: no PSI on this kernel
        return pct


def _task_sched(pid: int) -> dict[int, tuple[str, int, int, int]]:
    """Per thread of ``pid``: (comm, ns on a CPU, ns runnable but waiting for one, timeslices),
    from /proc/PID/task/TID/schedstat (empty when the kernel has no schedstat)."""
    out = {}
    root = Path(f"/proc/{pid}/task")
    try:
        tids = [int(t) for t in os.listdir(root)]
    except OSError:
        return out
    for tid in tids:
        try:
            run, wait, slices = (int(x) for x in (root / str(tid) / "schedstat").read_text().split())
            comm = (root / str(tid) / "comm").read_text().strip()
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        out[tid] = (comm, run, wait, slices)
    return out


class _SchedMeter:
    """What the scheduler did to each process over a window, and to each of edged's threads:
    CPU used and time spent runnable but waiting for a CPU (run-queue wait), in percent of the
    window, and the mean wait per timeslice. The wait is what bounds a tail on a busy 2-vCPU
    box: a message that arrives while its thread waits for a CPU waits with it."""

    def __init__(self, pids: dict[str, int], edged_pid: int, edged_threads: dict[str, int]):
        self._pids = pids
        self._edged = edged_pid
        names = {tid: name for name, tid in edged_threads.items()}
        self._names = names
        self._t0 = 0.0
        self._s0: dict[int, dict[int, tuple[str, int, int, int]]] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._s0 = {pid: _task_sched(pid) for pid in self._pids.values()}

    def stop(self) -> dict[str, Any]:
        elapsed_ns = (time.monotonic() - self._t0) * 1e9
        out: dict[str, Any] = {}
        for label, pid in self._pids.items():
            before, after = self._s0.get(pid, {}), _task_sched(pid)
            per: dict[str, list[int]] = {}
            total = [0, 0, 0]
            for tid, (comm, run, wait, slices) in after.items():
                c0 = before.get(tid, (comm, 0, 0, 0))
                d = [run - c0[1], wait - c0[2], slices - c0[3]]
                total = [a + b for a, b in zip(total, d, strict=True)]
                if pid == self._edged:
                    name = self._names.get(tid, comm)
                    acc = per.setdefault(name, [0, 0, 0])
                    per[name] = [a + b for a, b in zip(acc, d, strict=True)]
            out[label] = _sched_row(total, elapsed_ns)
            if per:
                out[label]["threads"] = {n: _sched_row(v, elapsed_ns) for n, v in
                                         sorted(per.items(), key=lambda kv: -kv[1][0])}
        return out


def _sched_row(d: list[int], elapsed_ns: float) -> dict[str, float]:
    run, wait, slices = d
    return {"cpu_pct": round(run / elapsed_ns * 100, 2),
            "runq_wait_pct": round(wait / elapsed_ns * 100, 2),
            "wait_per_slice_us": round(wait / slices / 1000, 1) if slices else 0.0}


def _lanes(
    probe_reps: dict[str, dict[str, Any]], bases: dict[str, dict[str, Any]], rt: str | None
) -> dict[str, Any]:
    """Per transport: the probe's figures against that transport's own ping-pong."""
    lanes = {}
    for lane, rep in probe_reps.items():
        p_e2e = rep.get("e2e_us") or {}
        lanes[lane] = {
            "transport": rep.get("transport"),
            "rt": rt,
            "rt_applied": rep.get("rt_applied") or None,
            "e2e_us": p_e2e,
            "rtt_us": rep.get("rtt_us"),
            "sla_1ms_pct": rep.get("e2e_within_1ms_pct"),
            "jitter_pct": rep.get("e2e_jitter_pct"),
            "baseline_pingpong_us": bases[lane],
            "ratio_p99": _ratio(p_e2e.get("p99"), bases[lane].get("p99")),
            "ratio_p999": _ratio(p_e2e.get("p999"), bases[lane].get("p999")),
            "probe": {k: rep.get(k, 0) for k in _PROBE_COUNTS},
        }
    return lanes


def _rt_pass(
    rig: ScenarioRig, rules: Path, cfg: dict[str, Any], say: Callable[[str], None],
    req: int, reply: int,
) -> dict[str, Any]:
    """The same window with the real-time profile on both ends: edged (``rt``), the probes
    (``Agent(rt=)``), the pong and the ping-pong's client, all pinned to one CPU at
    SCHED_FIFO (the lowest p50 and the tightest tails on a 2-core board)."""
    from ..wire import CtlOp
    from ._client import CtlClient

    rt = cfg["rt"]
    conf = rig.root / "edged-rt.toml"
    base = cfg["edged_config"].read_text(encoding="utf-8") if cfg["edged_config"] else ""
    conf.write_text(f'{base}\nrt = "{rt}"\n', encoding="utf-8")
    ep, seq = rig.root / "pong-rt.sock", rig.root / "pong-rt.seq"
    pong = rig.spawn("pong", "--endpoint", f"ipc://{ep}", "--seq-path", str(seq),
                     "--reply-bytes", str(reply), "--rt", rt)  # fmt: skip
    pong.expect("ready")
    say(f"the real-time profile ({rt}) on every process of the loop and of the baselines")
    targets = {"zmq": f"ipc://{ep}", "seqpacket": f"seqpacket:{seq}"}
    w = _loop_window(rig, rules, cfg, say, targets, pong, req, rt, conf)
    with CtlClient(rig.run_dir, timeout=10.0) as ctl:
        edged_rt = ctl.request(CtlOp.STATUS).get("realtime")
    rig.stop_sims()
    rig.stop_edged()
    return {
        "rt": rt,
        "edged_realtime": edged_rt,
        "lanes": _lanes(w["probe_reps"], w["bases"], rt),
        "stages_us": {s: w["stats"]["stages_us"].get(s, {"count": 0}) for s in STAGES},
        "e2e_us": w["stats"]["e2e_us"],
        "cpu_pct": w["cpu_pct"],
        "sched": w["sched"],
        "gc": w["gc"],
    }


def _loop_window(
    rig: ScenarioRig,
    rules: Path,
    cfg: dict[str, Any],
    say: Callable[[str], None],
    targets: dict[str, str],
    pong: Any,
    req: int,
    rt: str | None,
    config_file: Path | None,
) -> dict[str, Any]:
    """edged, the background load, a probe per transport and the pong's own load, then the
    measured window: segments of each loop and of each baseline (``targets``), alternating.
    ``rt``: the real-time profile (CPU:PRIO) for edged and the probes. Leaves edged running
    (the caller measures activation on it, then stops everything)."""
    from ..wire import CtlOp
    from ._client import CtlClient

    sla_ns = int(cfg["sla_ms"] * 1e6)
    pong_ep = targets["zmq"]
    # 2. edged, the background load, a probe per transport, and the pong's own load
    say("starting edged and the agents")
    edged = rig.start_edged(rules, log_level="WARNING", config_file=config_file)
    rd = str(rig.run_dir)
    bg_rate = cfg["background_rate"] or 1
    load = rig.spawn("load", "--run-dir", rd, "--rate", str(bg_rate),
                     "--batch", str(cfg["background_batch"]), "--series", str(LOAD_SERIES))
    rt_args = ("--rt", rt) if rt else ()
    probes = {
        lane: rig.spawn("probe", "--run-dir", rd, "--rate", str(cfg["loop_rate"]),
                        "--agent-id", agent_id, "--transport", lane, *rt_args)
        for lane, agent_id in PROBES.items()
    }  # fmt: skip
    # the ping-pong's peer gets the same background load as edged, over ZeroMQ as edged does
    pong_load = rig.spawn_bench("blast", "--endpoint", pong_ep, "--raw", "--series",
                                str(LOAD_SERIES), "--batch", str(cfg["background_batch"]),
                                "--rate", str(bg_rate), tag="-pong")  # fmt: skip
    for child in (load, *probes.values(), pong_load):
        child.expect("ready")
    loads = [c for c in (load, pong_load) if cfg["background_rate"]]
    segments = cfg["segments"]
    seg_s = cfg["duration_s"] / segments
    pp_hists = {lane: new_hist() for lane in PROBES}
    pp_lost = dict.fromkeys(PROBES, 0)
    with CtlClient(rig.run_dir, timeout=10.0) as ctl:
        if cfg["background_rate"]:
            load.send("run")
        say(f"warm-up {cfg['warmup_s']:g} s per transport")
        for p in probes.values():
            p.send("run")
            time.sleep(cfg["warmup_s"])  # the warm-up runs in the children meanwhile
            p.send("pause")
            p.expect("paused")

        # 3. the measured window: segments of each loop and each baseline, alternating
        ctl.request(CtlOp.STATS_RESET)
        for c in (*loads, *probes.values()):
            c.send("mark")
            c.expect("marked")
        pids = {"edged": edged.pid, "load": load.pid, "pong": pong.pid,
                "pong_load": pong_load.pid}  # fmt: skip
        pids.update({f"probe_{lane}": p.pid for lane, p in probes.items()})
        cpu = _CpuMeter(pids)
        sched = _SchedMeter(pids, edged.pid, ctl.request(CtlOp.STATUS).get("threads", {}))
        cpu.start()
        sched.start()
        t0 = time.monotonic()
        say(f"closed loop and baselines interleaved: {segments} segments of {seg_s:g} s "
            f"each, per transport, at {cfg['loop_rate']:g}/s under "
            f"{cfg['background_rate']:g} metrics/s")  # fmt: skip
        for _ in range(segments):
            for p in probes.values():  # the loops: the load goes to edged
                p.send("run")
                time.sleep(seg_s)  # measuring: the children do the work
                p.send("pause")
                p.expect("paused")
            if cfg["background_rate"]:  # the baselines: the same load goes to the pong
                load.send("pause")
                load.expect("paused")
                pong_load.send("run")
            for lane, target in targets.items():
                pp_lost[lane] += pingpong_into(pp_hists[lane], target, req, seg_s,
                                               cfg["loop_rate"], rt)  # fmt: skip
            if cfg["background_rate"]:
                pong_load.send("pause")
                pong_load.expect("paused")
                load.send("run")
        stats = ctl.request(CtlOp.STATS)
        window = time.monotonic() - t0
        gc_window = ctl.request(CtlOp.STATUS).get("gc")  # reset with the stats
        cpu_pct = cpu.stop()
        sched_pct = sched.stop()
        load_rep: dict[str, Any] = {}
        if cfg["background_rate"]:
            load.send("report")
            load_rep = load.expect("report")
        probe_reps = {}
        for lane, p in probes.items():
            p.send("report")
            probe_reps[lane] = p.expect("report")
    return {
        "edged": edged, "stats": stats, "window": window, "gc": gc_window, "cpu_pct": cpu_pct,
        "sched": sched_pct,
        "load_rep": load_rep, "probe_reps": probe_reps, "seg_s": seg_s,
        # the baselines' figures: measured in the same window, under the same load
        "bases": {lane: hist_summary(pp_hists[lane], pp_lost[lane], sla_ns) for lane in PROBES},
    }  # fmt: skip


def run_bench(cfg: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """Run the whole benchmark; return the result document. Raises EdgeError subclasses."""
    from ..wire import CtlOp
    from ._client import CtlClient

    sizes = _message_sizes()
    started = datetime.datetime.now(datetime.UTC)
    machine = machine_info()
    with ScenarioRig() as rig:  # its edged has WITH_UPSTREAM in its environment
        say(f"run directory {rig.root} (removed afterwards)")
        rules = rig.root / "bench_rules.yaml"
        rules.write_text(_rules_yaml(cfg["sla_ms"]), encoding="utf-8")

        # 1. the baselines on a quiet machine (no edged yet): ZeroMQ and SEQPACKET round trips
        pong_ep = f"ipc://{rig.root / 'pong.sock'}"
        pong_seq = f"seqpacket:{rig.root / 'pong.seq'}"
        pong = rig.spawn("pong", "--endpoint", pong_ep, "--seq-path", str(rig.root / "pong.seq"),
                         "--reply-bytes", str(sizes["instruction"]))  # fmt: skip
        pong.expect("ready")
        say(f"baseline ping-pong, idle machine, {cfg['baseline_s']:g} s per transport")
        sla_ns = int(cfg["sla_ms"] * 1e6)
        req = sizes["metric_batch_1"]
        base_idle = pingpong(pong_ep, req, cfg["baseline_s"], cfg["loop_rate"], sla_ns)
        base_idle_seq = pingpong(pong_seq, req, cfg["baseline_s"], cfg["loop_rate"], sla_ns)

        # 2.-4. the measured window, default profile
        targets = {"zmq": pong_ep, "seqpacket": pong_seq}
        w = _loop_window(rig, rules, cfg, say, targets, pong, req, None, cfg["edged_config"])
        stats, window, gc_window, cpu_pct = w["stats"], w["window"], w["gc"], w["cpu_pct"]
        load_rep, probe_reps, bases, seg_s = w["load_rep"], w["probe_reps"], w["bases"], w["seg_s"]
        probe_rep = probe_reps["zmq"]
        base_loaded = bases["zmq"]
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        # 5. activation: a 10,000-rule table, all bound to the probe's series
        say(f"activation of a {ACTIVATION_RULES:,}-rule table on the live edged")
        with CtlClient(rig.run_dir, timeout=60.0) as ctl:
            blob = activation_table(PROBE_METRIC)
            t_push = time.perf_counter()
            pushed = ctl.request(CtlOp.RULES_PUSH, blob=blob)
            push_ms = (time.perf_counter() - t_push) * 1000
            if cfg["rt"]:  # the next pass's edged recovers the bench's own table, not this one
                ctl.request(CtlOp.RULES_ROLLBACK)
        rig.stop_sims()
        edged_exit = rig.stop_edged()
        rt_doc = _rt_pass(rig, rules, cfg, say, req, sizes["instruction"]) if cfg["rt"] else None
    say("rule engine: memory per rule and evaluation cost (in process)")
    rules_doc = {
        "activation": {"rules": pushed["rules"], "loop_pause_us": round(pushed["pause_us"], 1),
                       "push_total_ms": round(push_ms, 1), "goal_pause_us": 1000,
                       "note": "loop_pause_us is the swap on edged's loop; push_total_ms "
                               "includes verify, compile and per-agent preparation off the loop"},
        "memory": memory_per_rule(),
        "eval": eval_cost(samples=20_000 if cfg["quick"] else 200_000),
    }

    counters = stats.get("counters", {})
    probe_samples = sum(int(r.get("samples_sent", 0)) for r in probe_reps.values())
    bg_received = max(0, int(counters.get("samples", 0)) - probe_samples)
    load_s = float(load_rep.get("elapsed_s") or window)  # the load pauses for the baselines
    lanes = _lanes(probe_reps, bases, None)
    e2e = stats["e2e_us"]
    base_p99 = base_loaded.get("p99")
    doc: dict[str, Any] = {
        "timestamp": started.isoformat(timespec="seconds"),
        "e2e_us": e2e,
        "stages_us": {s: stats["stages_us"].get(s, {"count": 0}) for s in STAGES},
        "ack_us": stats["stages_us"].get("ack", {"count": 0}),
        "jitter_pct": stats.get("jitter_pct"),
        "sla_rate": stats.get("sla_rate"),
        "sla_met": stats.get("sla_met"),
        "sla_judged": stats.get("sla_judged"),
        "instructions": int(counters.get("instructions_sent", 0)),
        "acks": int(counters.get("acks", 0)),
        "acks_ok": int(counters.get("acks_ok", 0)),
        "ack_timeouts": int(counters.get("ack_timeouts", 0)),
        "probe_e2e_us": probe_rep.get("e2e_us"),
        "probe_rtt_us": probe_rep.get("rtt_us"),
        "probe": {k: probe_rep.get(k, 0) for k in _PROBE_COUNTS},
        "baseline_pingpong_us": {**base_loaded, "conditions": _INTERLEAVED},
        "baseline_pingpong_idle_us": {**base_idle, "conditions": "idle machine, no edged"},
        "baseline_seqpacket_idle_us": {**base_idle_seq, "conditions": "idle machine, no edged"},
        "lanes": lanes,
        "rt_profile": rt_doc,
        "lanes_note": "per transport, from the probe agents (sample t_ns to the end of the "
                      "handler, same clock); e2e_us/stages_us above are edged's, over both",
        "segments": {"count": cfg["segments"], "seconds_each": seg_s},
        "ratio_p99": _ratio(e2e.get("p99"), base_p99),
        "ratio_p99_idle": _ratio(e2e.get("p99"), base_idle.get("p99")),
        "background_metrics_per_s": round(bg_received / load_s, 1) if load_s > 0 else 0.0,
        "background_sent_per_s": round(float(load_rep.get("sent_per_s", 0.0)), 1),
        "background_late_batches": load_rep.get("late", 0),
        "window_s": round(window, 3),
        "cpu_pct": cpu_pct,
        "sched": w["sched"],
        "sched_note": "per process (and per edged thread) over the window, from "
                      "/proc/PID/task/TID/schedstat: cpu_pct on a CPU, runq_wait_pct runnable "
                      "but waiting for a CPU, wait_per_slice_us the mean wait per timeslice",
        "cpu_pct_note": "percent of one core over the window; machine = all cores busy; "
                        "others = machine minus the bench's processes (work not ours); "
                        "psi_cpu_some = share of time some runnable task waited for a CPU",
        # the goal table's e2e P99 goal (``goals`` holds every row): one goal, not two
        "goal": {"e2e_p99_us_at_most": E2E_P99_GOAL_US,
                 "met": bool(e2e.get("p99") is not None and e2e["p99"] <= E2E_P99_GOAL_US)},
        "edged_exit_code": edged_exit,
        "rules": rules_doc,
        "counters": {k: v for k, v in sorted(counters.items()) if v},
        "gc": gc_window,
        "clock_skewed": stats.get("clock_skewed", 0),
        "machine": machine,
        "config": {
            **{k: v for k, v in cfg.items() if k != "edged_config"},
            "edged_config": None if cfg["edged_config"] is None
            else cfg["edged_config"].read_text(encoding="utf-8"),
            "edged": "subprocess (edged console script)",
            "probe_rule": PROBE_RULE,
            "load_rule": LOAD_RULE,
            "background_series": LOAD_SERIES,
            "message_bytes": sizes,
            "e2e_definition": "sample t_ns (agent, CLOCK_MONOTONIC) -> Ack.t_done_ns",
        },
    }
    return doc


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} %" if v > 99 else f"{v:.1f} %"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if v < 10_000 else f"{v:,.0f}"


def summary_table(doc: dict[str, Any]) -> Table:
    cfg = doc["config"]
    t = Table(title=f"edgectl bench: {cfg['duration_s']:g} s closed loop at "
                    f"{cfg['loop_rate']:g}/s, background {doc['background_metrics_per_s']:,.0f} "
                    "metrics/s (measured)")
    t.add_column("µs", style="bold")
    for col in ("count", "p50", "p90", "p99", "p99.9", "max"):
        t.add_column(col, justify="right")

    def row(name: str, s: dict[str, Any] | None, style: str = "") -> None:
        s = s or {}
        t.add_row(name, str(s.get("count", 0)), _fmt(s.get("p50")), _fmt(s.get("p90")),
                  _fmt(s.get("p99")), _fmt(s.get("p999")), _fmt(s.get("max")), style=style)

    row("e2e (edged)", doc["e2e_us"], "green" if doc["goal"]["met"] else "red")
    row("e2e (probe's own clock)", doc["probe_e2e_us"])
    for stage in STAGES:
        row(f"  {stage}", doc["stages_us"][stage])
    row("  ack (after e2e)", doc["ack_us"])
    row("baseline ping-pong, loaded", doc["baseline_pingpong_us"], "cyan")
    row("baseline ping-pong, idle", doc["baseline_pingpong_idle_us"], "cyan")
    return t


def sched_lines(sched: dict[str, Any] | None, profile: str = "") -> list[str]:
    """The scheduler's share: CPU and run-queue wait of every process, and of edged's threads."""
    if not sched:
        return []
    procs = ", ".join(f"{k} {v['cpu_pct']:g}/{v['runq_wait_pct']:g}" for k, v in sched.items())
    threads = sched.get("edged", {}).get("threads", {})
    ths = ", ".join(f"{k} {v['cpu_pct']:g}/{v['runq_wait_pct']:g} "
                    f"({v['wait_per_slice_us']:g} µs per slice)" for k, v in threads.items())
    return [f"scheduler{profile} (% of the window on a CPU / runnable but waiting): {procs}",
            f"  edged's threads: {ths}"] if ths else [
            f"scheduler{profile} (% of the window on a CPU / runnable but waiting): {procs}"]


def summary_lines(doc: dict[str, Any]) -> list[str]:
    sla = doc["sla_rate"]
    jitter = doc["jitter_pct"]
    ratio = doc["ratio_p99"]
    p = doc["probe"]
    base = doc["baseline_pingpong_us"]
    cpu = ", ".join(f"{k} {v:g} %" for k, v in doc["cpu_pct"].items()
                    if k not in ("psi_cpu_some", "bench") and v is not None)
    lines = [
        f"instructions {doc['instructions']:,}, acks {doc['acks']:,} (ok {doc['acks_ok']:,}), "
        f"probe lost {p['lost']}, late iterations {p['late']}",
        f"SLA ({doc['config']['sla_ms']:g} ms) attainment "
        f"{'n/a' if sla is None else f'{sla * 100:.3f} %'}; jitter (MAD/mean) "
        f"{'n/a' if jitter is None else f'{jitter:.1f} %'}; "
        f"e2e p99 / ping-pong p99 = {'n/a' if ratio is None else f'{ratio:.2f}'} (same load)",
        f"same-load ping-pong alone: {_pct(base.get('within_sla_pct'))} within "
        f"{doc['config']['sla_ms']:g} ms, jitter {_pct(base.get('jitter_pct'))} "
        "(what the transport allows before edged does anything)",
        f"CPU (one core = 100 %): {cpu}"
        + ("" if doc["cpu_pct"]["psi_cpu_some"] is None
           else f"; CPU pressure {doc['cpu_pct']['psi_cpu_some']:g} % of the time"),
    ]
    lines.extend(sched_lines(doc.get("sched")))
    g = doc.get("gc")
    if g:
        lines.append(
            "GC in edged during the window (gen 0/1/2): collections "
            + "/".join(str(x) for x in g["collections"])
            + ", longest pause " + "/".join(f"{x:g}" for x in g["max_pause_us"]) + " µs"
            + f", {g['frozen']:,} objects frozen"
        )
    r = doc.get("rules")
    if r:
        a, m, e = r["activation"], r["memory"], r["eval"]
        lines.append(
            f"rules: activating {a['rules']:,} rules paused the loop {a['loop_pause_us']:g} µs "
            f"(push {a['push_total_ms']:g} ms in all); {m['bytes_per_rule']:,} bytes per loaded "
            f"rule at {m['rules']:,}; {e['ns_per_sample_loaded']:,} ns per sample with "
            f"{e['rules']:,} rules vs {e['ns_per_sample_no_rules']:,} ns with none "
            f"({e['ratio']:g}x)"
        )
    others = doc["cpu_pct"].get("others", 0.0)
    if others >= OTHERS_WARN_PCT:
        lines.append(f"[yellow]other processes used {others:g} % of a core during the window: "
                     "these figures include their interference; rerun on a quiet machine[/]")
    return lines


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full result document here (directories are created).")
@click.option("--duration", type=float,
              help="Seconds of measured closed loop. [default: 20; --quick 2]")
@click.option("--warmup", type=float,
              help="Seconds of loop before STATS_RESET. [default: 3; --quick 0.5]")
@click.option("--background-rate", type=float, default=50_000.0, show_default=True,
              help="Background samples per second (sent in batches by a separate process); "
                   "0: none.")
@click.option("--background-batch", type=int, default=50, show_default=True,
              help="Samples per batch.")
@click.option("--loop-rate", type=float, default=1000.0, show_default=True,
              help="Closed-loop iterations (instructions) per second; 0 runs free.")
@click.option("--sla-ms", type=float, default=1.0, show_default=True,
              help="The probe rule's sla_threshold (ms).")
@click.option("--baseline", "baseline_s", type=float,
              help="Seconds of each baseline ping-pong run. [default: 3; --quick 0.5]")
@click.option("--edged-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A TOML config for edged (e.g. commit_interval_ms), for experiments.")
@click.option("--rt", "rt", default=None, metavar="CPU[:PRIO]",
              help="The real-time profile's pass: every process of the loop and of the "
                   "baselines pinned to CPU at SCHED_FIFO PRIO. [default: the last CPU, "
                   "priority 50; '' skips the pass]")
@click.option("--quick", is_flag=True, help="A smoke run of a few seconds (tests, CI).")
@click.option("--scenarios", default=",".join(SCENARIOS), show_default=True,
              help="Comma-separated scenarios to run, in this order.")
def bench(json_path: Path | None, duration: float | None, warmup: float | None,
          background_rate: float, background_batch: int, loop_rate: float, sla_ms: float,
          baseline_s: float | None, edged_config: Path | None, rt: str | None, quick: bool,
          scenarios: str) -> None:
    """Measure the metric -> rule -> instruction -> Ack loop against raw pyzmq ping-pong.

    Starts its own edged and agents in a temporary directory and removes them afterwards.
    """
    console = Console(highlight=False)
    cfg: dict[str, Any] = {
        "duration_s": duration if duration is not None else (2.0 if quick else 20.0),
        "warmup_s": warmup if warmup is not None else (0.5 if quick else 3.0),
        "baseline_s": baseline_s if baseline_s is not None else (0.5 if quick else 3.0),
        "segments": 2 if quick else 10,
        "background_rate": background_rate,
        "background_batch": background_batch,
        "loop_rate": loop_rate,
        "sla_ms": sla_ms,
        "quick": quick,
        "edged_config": edged_config,
        "rt": f"{max(os.sched_getaffinity(0))}:50" if rt is None else rt,
    }
    if cfg["rt"]:
        from .._rt import parse_rt

        try:
            parse_rt(cfg["rt"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rt") from None
    if min(cfg["duration_s"], cfg["warmup_s"], cfg["baseline_s"]) <= 0:
        raise click.BadParameter("durations must be > 0")
    if background_rate < 0 or background_batch < 1 or loop_rate < 0 or sla_ms <= 0:
        raise click.BadParameter("rates, batch and SLA must be positive")
    names = [n.strip() for n in scenarios.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown or not names:
        raise click.BadParameter(f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; "
                                 f"choose from {', '.join(SCENARIOS)}", param_hint="--scenarios")
    cfg["scenarios"] = names

    def say(text: str) -> None:
        console.print(f"[dim]bench:[/] {text}", soft_wrap=True)

    try:
        with sigterm_as_interrupt():
            if "latency" in names:
                doc = run_bench(cfg, say)
            else:
                doc = {"timestamp": datetime.datetime.now(datetime.UTC)
                       .isoformat(timespec="seconds"),
                       "machine": machine_info(),
                       "config": {k: v for k, v in cfg.items() if k != "edged_config"}}
            sc_cfg = scenario_config(quick)
            doc.update(run_scenarios(names, sc_cfg, say, sla_ms))
            doc["config"]["scenario_sizes"] = sc_cfg
    except KeyboardInterrupt:
        console.print("[yellow]bench interrupted; edged and the agents are stopped and the "
                      "run directory removed[/]")
        sys.exit(130)
    except EdgeError as exc:
        console.print(f"[bold red]bench failed:[/] {exc}")
        sys.exit(1)
    if "latency" in names:
        doc["latency_plot"] = (
            write_latency_plot(doc, json_path.with_name(json_path.stem + "_latency.png"))
            if json_path is not None
            else {"written": False, "reason": "no --json path to write the PNG next to"})
    doc["goals"] = goal_rows(doc)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if "latency" in names:
        console.print(summary_table(doc))
        for line in summary_lines(doc):
            console.print(line)
    for line in scenario_summary_lines(doc):
        console.print(line)
    from ._bench_bridge import summary_lines as bridge_lines

    for line in bridge_lines(doc):
        console.print(line, soft_wrap=True)
    console.rule("the performance issue's goals (same run)")
    for line in goal_lines(doc):
        console.print(line, soft_wrap=True)
    if json_path is not None:
        console.print(f"[dim]full result: {json_path}[/]")
    if "latency" in names and (doc["instructions"] == 0 or doc["acks"] == 0):
        console.print("[bold red]bench failed:[/] the loop produced no acknowledged instructions")
        sys.exit(1)
