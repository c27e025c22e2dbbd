"""Real-time discipline for the control loop's thread, each switch off by default.

Every switch degrades gracefully: when the OS refuses (no CAP_SYS_NICE for SCHED_FIFO, an
RLIMIT_MEMLOCK too small for mlockall, a CPU that does not exist), edged logs a warning, counts
it in ``applied``, and runs without it. Call ``apply_to_current_thread`` on the loop thread.

The loop thread is only half of the path: a frame is read from and written to the socket by
libzmq's I/O thread (named ``ZMQbg/IO/<n>``), which wakes the loop. ``apply_to_zmq_threads``
gives those threads the same CPU set and SCHED_FIFO priority, found by name under
``/proc/self/task`` (Linux schedules threads by id, so this needs no help from libzmq).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("edge.rt")

_MCL_CURRENT, _MCL_FUTURE = 1, 2


def parse_cpus(text: str) -> set[int]:
    """``"1"``, ``"0,2"``, ``"2-3"`` -> a set of CPU numbers. Raises ValueError."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, sep, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi) + 1) if sep else {int(lo)})
    return cpus


def zmq_io_threads(task_dir: str = "/proc/self/task") -> list[int]:
    """Thread ids of libzmq's I/O threads in this process (``ZMQbg/IO/<n>``)."""
    tids = []
    try:
        entries = os.listdir(task_dir)
    except OSError:
        return []
    for tid in entries:
        try:
            with open(os.path.join(task_dir, tid, "comm"), "rb") as f:
                if f.read().startswith(b"ZMQbg/IO"):
                    tids.append(int(tid))
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return sorted(tids)


def _schedule(
    tids: list[int], cpu_affinity: str, rt_priority: int, who: str
) -> tuple[list[int] | None, int | None]:
    """Give threads ``tids`` (0: the calling one) the CPU set and SCHED_FIFO priority asked
    for; returns what took effect, each switch on its own (a refusal logs a warning)."""
    cpus_applied: list[int] | None = None
    fifo_applied: int | None = None
    if cpu_affinity:
        try:
            cpus = parse_cpus(cpu_affinity)
            for tid in tids:
                os.sched_setaffinity(tid, cpus)
            cpus_applied = sorted(cpus)
        except (ValueError, OSError) as exc:
            log.warning("%s: cpu_affinity %r not applied: %s", who, cpu_affinity, exc)
    if rt_priority:
        try:
            for tid in tids:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(rt_priority))
            fifo_applied = rt_priority
        except (PermissionError, OSError) as exc:
            log.warning(
                "%s: SCHED_FIFO priority %d not applied (%s): grant CAP_SYS_NICE or run "
                "under a systemd unit with CPUSchedulingPolicy=fifo",
                who,
                rt_priority,
                exc,
            )
    return cpus_applied, fifo_applied


def apply_to_zmq_threads(*, cpu_affinity: str, rt_priority: int) -> dict[str, Any]:
    """Give libzmq's I/O threads the loop's CPU set and SCHED_FIFO priority; returns what took
    effect: ``{"threads": [tid, ...], "cpu_affinity": ..., "sched_fifo": ...}``."""
    applied: dict[str, Any] = {"threads": [], "cpu_affinity": None, "sched_fifo": None}
    if not (cpu_affinity or rt_priority):
        return applied
    tids = zmq_io_threads()
    applied["threads"] = tids
    if not tids:
        log.warning("no libzmq I/O thread found: the real-time switches reach the loop only")
        return applied
    applied["cpu_affinity"], applied["sched_fifo"] = _schedule(
        tids, cpu_affinity, rt_priority, "libzmq I/O threads"
    )
    return applied


def _is_edged_thread(name: str) -> bool:
    return name.startswith("edge-") and not name.startswith("edge-agent-")


def apply_to_helper_threads(
    *, cpu_affinity: str, rt_priority: int, skip: set[int]
) -> dict[str, Any]:
    """With SCHED_FIFO asked for: edged's other threads (those it named ``edge-*``: store
    writer, ctl server, metrics exporter; not those in ``skip``, never a thread of the
    embedding program, such as its main thread when Edged runs in-process) on the loop's CPUs at
    SCHED_FIFO one step below the loop. These threads take the GIL the loop needs: at
    SCHED_OTHER an ordinary task on a busy CPU preempts one of them while it holds the GIL,
    and the loop, real-time or not, waits until the scheduler gives that thread a CPU again
    (milliseconds on a loaded 2-core board). One step below, nothing but the loop's own side
    preempts them, and the loop, which does, gets the GIL back within the switch interval.
    Returns ``{thread name: {"cpu_affinity": ..., "sched_fifo": ...}}`` for what took effect."""
    import threading

    out: dict[str, Any] = {}
    if not rt_priority:
        return out
    prio = max(1, rt_priority - 1)
    for t in threading.enumerate():
        tid = t.native_id
        if tid is None or tid in skip or not t.is_alive() or not _is_edged_thread(t.name):
            continue
        cpus, fifo = _schedule([tid], cpu_affinity, prio, f"thread {t.name}")
        out[t.name] = {"cpu_affinity": cpus, "sched_fifo": fifo}
    return out


def apply_to_current_thread(*, cpu_affinity: str, rt_priority: int, mlock: bool) -> dict[str, Any]:
    """Apply what was asked; return what took effect (shown by `edgectl status`)."""
    applied: dict[str, Any] = {"cpu_affinity": None, "sched_fifo": None, "mlockall": False}
    # 0 = the calling thread on Linux
    applied["cpu_affinity"], applied["sched_fifo"] = _schedule(
        [0], cpu_affinity, rt_priority, "loop thread"
    )
    if mlock:
        # here, not at import: ctypes.util brings subprocess, shutil, bz2 and lzma (~0.7 MB)
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) == 0:
            applied["mlockall"] = True
        else:
            err = ctypes.get_errno()
            log.warning(
                "mlockall not applied (%s): raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity)",
                os.strerror(err),
            )
    return applied


DEFAULT_RT_PRIORITY = 50
"""SCHED_FIFO priority of ``--rt CPU`` without ``:PRIO`` (1-99; the kernel's own threads that
must preempt ours, like the timer and RCU ones, run at 50 and above only when configured so)."""


def parse_rt(text: str) -> tuple[str, int]:
    """The real-time profile's one switch, ``CPU[:PRIO]``: ``"1"``, ``"1:80"``, ``"2-3:60"``
    -> (the CPU set as ``cpu_affinity`` text, the SCHED_FIFO priority). Raises ValueError with
    what is wrong and what is expected."""
    cpus, sep, prio = text.strip().partition(":")
    try:
        if not parse_cpus(cpus):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"rt {text!r}: expected CPU[:PRIO], e.g. '1' or '1:80' (CPUs as '0,2' or '2-3')"
        ) from None
    if not sep:
        return cpus.strip(), DEFAULT_RT_PRIORITY
    try:
        p = int(prio)
    except ValueError:
        p = 0
    if not 1 <= p <= 99:
        raise ValueError(f"rt {text!r}: the priority must be a whole number from 1 to 99")
    return cpus.strip(), p


def apply_rt_profile(spec: str, *, mlock: bool = True) -> dict[str, Any]:
    """The real-time profile for this process's side of the loop: the calling thread (an
    agent's I/O thread, edged's loop) and libzmq's I/O threads pinned to the CPUs of ``spec``
    (``CPU[:PRIO]``) at SCHED_FIFO, memory locked where permitted. Each refusal is a warning
    and a ``None`` in the result; nothing raises but a malformed ``spec`` (ValueError)."""
    cpus, prio = parse_rt(spec)
    applied = apply_to_current_thread(cpu_affinity=cpus, rt_priority=prio, mlock=mlock)
    applied["zmq_io"] = apply_to_zmq_threads(cpu_affinity=cpus, rt_priority=prio)
    return applied
