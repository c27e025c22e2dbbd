"""Real-time switches: applied when permitted, a warning and a clean fallback when not."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from edge._rt import apply_to_current_thread, parse_cpus
from edge.runtime import Edged

from ..support import wait_for


def test_parse_cpus() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2-3") == {0, 2, 3}
    with pytest.raises(ValueError):
        parse_cpus("x")


def _in_thread(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(apply_to_current_thread(**kw)))
    t.start()
    t.join()
    return out


def test_affinity_applies_to_the_calling_thread_only() -> None:
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    assert _in_thread(cpu_affinity=str(cpu), rt_priority=0, mlock=False)["cpu_affinity"] == [cpu]
    assert os.sched_getaffinity(0) == before  # this thread is untouched


def test_refusals_fall_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    got = _in_thread(cpu_affinity="4096", rt_priority=0, mlock=False)
    assert got["cpu_affinity"] is None
    assert "cpu_affinity" in caplog.text


def test_busy_poll_window_keeps_the_loop_polling(make_cfg: Any, agent_factory: Any) -> None:
    with Edged(make_cfg(busy_poll_us=200_000)) as d:
        got: list[Any] = []
        with agent_factory("p1", ["cpu_usage"], handler=got.append) as agent:
            agent.report("cpu_usage", 0.99)
            wait_for(lambda: got)
            wait_for(lambda: d.loop.counters["busy_polls"] > 10, what="busy polls after traffic")
        status = d._ctl_status({}, b"")  # noqa: SLF001 - the ctl handler, without a socket
        assert status["realtime"] == {
            "cpu_affinity": None,
            "sched_fifo": None,
            "mlockall": False,
            "zmq_io": {"threads": [], "cpu_affinity": None, "sched_fifo": None},
            "helpers": {},  # no SCHED_FIFO asked for: the other threads are left alone
        }


def test_libzmq_io_threads_get_the_loops_cpu_set(make_cfg: Any) -> None:
    """The socket work happens on libzmq's I/O thread: the switches reach it too."""
    from edge._rt import zmq_io_threads

    cpu = max(os.sched_getaffinity(0))
    with Edged(make_cfg(cpu_affinity=str(cpu))) as d:
        assert d.loop is not None
        zio = d.loop.rt_applied["zmq_io"]
        assert zio["threads"] and set(zio["threads"]) <= set(zmq_io_threads())
        assert zio["cpu_affinity"] == [cpu]
        for tid in zio["threads"]:
            assert os.sched_getaffinity(tid) == {cpu}
    assert zmq_io_threads("/nonexistent") == []


def test_the_rt_switch_sets_the_three_real_time_settings(make_cfg: Any) -> None:
    """``rt = "CPU[:PRIO]"`` (edged --rt) is cpu_affinity + rt_priority + mlock in one."""
    from edge.errors import ConfigError

    cfg = make_cfg(rt="1:70")
    assert (cfg.cpu_affinity, cfg.rt_priority, cfg.mlock) == ("1", 70, True)
    assert make_cfg(rt="0").rt_priority == 50
    assert make_cfg().mlock is False
    with pytest.raises(ConfigError, match=r"expected CPU\[:PRIO\]"):
        make_cfg(rt="fast")
    with pytest.raises(ConfigError, match="1 to 99"):
        make_cfg(rt="1:200")


def test_status_names_the_threads_by_native_id(edged: Any) -> None:
    """Pinning or profiling one thread (top -H, taskset -p, py-spy) needs its native id."""
    from edge.runtime import CtlClient
    from edge.wire import CtlOp

    with CtlClient(edged.cfg.run_dir) as c:
        threads = c.request(CtlOp.STATUS)["threads"]
    assert {"loop", "edge-ctl", "edge-store-writer"} <= set(threads)
    assert threads["loop"] == edged._thread.native_id
    assert all(os.path.isdir(f"/proc/self/task/{tid}") for tid in threads.values())


def test_the_threads_beside_the_loop_follow_it_one_priority_below(make_cfg: Any) -> None:
    """With SCHED_FIFO, the store writer and the ctl thread (they take the GIL the loop needs)
    run on the loop's CPU one priority below it, so no ordinary task preempts one of them
    while it holds the GIL; without the privilege, the affinity still applies."""
    cpu = max(os.sched_getaffinity(0))
    with Edged(make_cfg(cpu_affinity=str(cpu), rt_priority=10)) as d:
        helpers = d._ctl_status({}, b"")["realtime"]["helpers"]  # noqa: SLF001
        threads = {t.name: t.native_id for t in threading.enumerate()}
        assert {"edge-ctl", "edge-store-writer"} <= set(helpers)
        assert "edge-loop" not in helpers  # the loop has its own, one priority higher
        # never the embedding program's threads: a FIFO main thread pinned beside a FIFO
        # thread of its own that spins starves (it hung this test suite once)
        assert threading.main_thread().name not in helpers
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert os.sched_getaffinity(0) != {cpu} or os.cpu_count() == 1
        fifo_ok = d.loop is not None and d.loop.rt_applied["sched_fifo"] == 10
        for name in ("edge-ctl", "edge-store-writer"):
            assert helpers[name]["cpu_affinity"] == [cpu]
            assert os.sched_getaffinity(threads[name]) == {cpu}
            if fifo_ok:
                assert helpers[name]["sched_fifo"] == 9
                assert os.sched_getscheduler(threads[name]) == os.SCHED_FIFO
                assert os.sched_getparam(threads[name]).sched_priority == 9
            else:
                assert helpers[name]["sched_fifo"] is None
