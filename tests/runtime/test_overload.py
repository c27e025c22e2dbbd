"""Overload control on a real edged: raw DEALER agents on a tmp-path ipc:// socket, real LMDB.

The loop is driven into overload deterministically: a function run on the loop thread (through
``ControlLoop.call``, so nothing else runs meanwhile) puts it in scheduled mode and takes the
frames the agents sent through the real intake until what is expected has arrived; the load
probe is injected (a value the test sets) instead of the lag or psutil."""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig
from edge.errors import ConfigError
from edge.runtime import Edged
from edge.runtime._overload import INLINE_SAMPLES, rank_of_rules
from edge.wire import (
    Ack,
    AckStatus,
    Heartbeat,
    MessageType,
    decode_instruction,
    encode_ack,
    encode_heartbeat,
    encode_metric_batch,
    verify,
)

from ..support import RawPeer, wait_for

pytestmark = pytest.mark.integration

RULES = """\
- {rule_id: hi, rule_content: "hi_m > 0.5", action: safe_state, priority: 220, sla_threshold: 5}
- {rule_id: lo, rule_content: "lo_m > 0.5", action: alert, priority: 1, sla_threshold: 50}
"""
N_LOW = 12
SAMPLES = INLINE_SAMPLES + 4  # big enough to be queued, not evaluated on intake


class Load:
    """The injected load probe (0-1)."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def batch(session: int, seq: int, mid: int, n: int = SAMPLES) -> bytes:
    """``n`` samples; the last is high, so an edge-triggered rule fires once per batch."""
    t = time.monotonic_ns()
    values = [0.0] * (n - 1) + [1.0]
    return encode_metric_batch(session, seq, t, [(mid, v, t + k) for k, v in enumerate(values)])


def instructions(peer: RawPeer, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        buf = peer.recv()
        assert verify(buf) is MessageType.INSTRUCTION
        out.append(decode_instruction(buf))
    return out


def no_more(peer: RawPeer) -> bool:
    return not peer.sock.poll(50)


@pytest.fixture
def rig(
    make_cfg: Callable[..., EdgeConfig], run_dir: Path, tmp_path: Path
) -> Any:
    rules = tmp_path / "overload.yaml"
    rules.write_text(RULES)
    load = Load()
    d = Edged(
        make_cfg(rules_file=rules, sched_budget_us=0, heartbeat_ms=1000),
        utilisation=load,
    ).start()
    low, high = RawPeer(run_dir, b"low#1"), RawPeer(run_dir, b"high#1")
    try:
        wl, wh = low.hello("low-1", ("lo_m",)), high.hello("high-1", ("hi_m",))
        yield d, load, (low, wl), (high, wh)
    finally:
        low.close()
        high.close()
        d.close()


def pump(d: Edged, done: Callable[[], bool]) -> None:
    """On the loop thread, in scheduled mode: intake until ``done`` (the agents' frames are on
    their way through libzmq; nothing queued is evaluated meanwhile)."""
    ov = d.loop.overload
    assert ov is not None
    ov.active = True
    deadline = time.monotonic() + 5.0
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the agents' frames did not arrive: queue {len(ov.sched)}, "
                f"{ {k: v for k, v in d.loop.counters.items() if v} }"
            )
        if not ov.intake():
            d.loop.sock.poll(10)  # a blocking wait for the next frame, on the loop's socket


def take_until(d: Edged, send: Callable[[], None], done: Callable[[], bool]) -> None:
    """Hold the loop, ``send`` (the agents' sockets are used from the loop thread meanwhile:
    ``call`` hands them over and back), intake until ``done``; then the loop goes on working
    its queue as in overload."""

    def work() -> None:
        send()
        pump(d, done)

    d.loop.call(work, timeout=10)


def test_high_priority_batch_runs_before_queued_low_ones(rig: Any) -> None:
    d, _load, (low, wl), (high, wh) = rig
    ov = d.loop.overload

    def send() -> None:
        for seq in range(1, N_LOW + 1):
            low.send(batch(wl.session, seq, wl.metric_ids[0]))
        high.send(batch(wh.session, 1, wh.metric_ids[0]))  # sent last

    take_until(d, send, lambda: len(ov.sched) == N_LOW + 1)
    [h] = instructions(high, 1)
    lows = instructions(low, N_LOW)
    assert h.rule_id == "hi" and {i.rule_id for i in lows} == {"lo"}
    # instruction ids are given in the order edged dispatches: the high one went first
    assert h.instruction_id < min(i.instruction_id for i in lows)
    assert [i.instruction_id for i in lows] == sorted(i.instruction_id for i in lows)  # FIFO
    c = d.loop.counters
    wait_for(lambda: c["sched_run"] == N_LOW + 1, what="every queued batch evaluated")
    assert c["sched_queued"] == N_LOW + 1 and c["sched_shed"] == 0
    assert c["batch_gaps"] == 0  # out of arrival order across agents is not a transport gap
    by = ov.snapshot()["by_priority"]
    assert by["1"] == {"queued": N_LOW, "run": N_LOW, "shed": 0, "evicted": 0, "rejected": 0}
    assert by["220"]["run"] == 1
    wait_for(lambda: not ov.active, what="back to the direct drain once the backlog is gone")


def test_a_small_batch_queues_behind_its_agents_earlier_ones(rig: Any) -> None:
    """Small batches are evaluated on intake, except behind a queued batch of the same agent:
    the series' latest value must never go back in time, and a rule must not fire on it."""
    d, _load, _low, (high, wh) = rig
    ov = d.loop.overload
    mid = wh.metric_ids[0]

    def send() -> None:
        t = time.monotonic_ns()
        values = [0.0] * (SAMPLES - 1) + [1.0]  # queued; its last sample fires `hi`
        high.send(encode_metric_batch(wh.session, 1, t, [(mid, v, t + k) for k, v in
                                                         enumerate(values)]))
        high.send(encode_metric_batch(wh.session, 2, t + 100, [(mid, 0.0, t + 100)]))  # later

    take_until(d, send, lambda: len(ov.sched) == 2)  # the small one queued behind, not run
    c = d.loop.counters
    wait_for(lambda: c["sched_run"] == 2, what="both batches evaluated, in order")

    def latest() -> Any:
        rec = next(r for r in d.loop.registry.by_session.values() if r.agent_id == "high-1")
        return rec.eval.slots[mid].state.last_v

    assert d.loop.call(latest) == 0.0  # the later sample is the latest
    [ins] = instructions(high, 1)  # fired by the first batch, evaluated first
    assert ins.rule_id == "hi" and ins.value == 1.0
    assert c["batch_gaps"] == 0 and not ov._queued  # noqa: SLF001 - the count drained


def test_low_priority_is_shed_and_counted_while_acks_and_beats_all_get_through(
    rig: Any,
) -> None:
    d, load, (low, wl), (high, wh) = rig
    ov = d.loop.overload
    c = d.loop.counters
    load.value = 1.0  # overloaded from the start
    # two low instructions from small batches (evaluated on intake, never shed), unacknowledged
    for seq in (1, 2):
        low.send(batch(wl.session, seq, wl.metric_ids[0], n=2))
    pending = instructions(low, 2)
    beats = 5

    def send() -> None:
        for seq in range(3, 3 + N_LOW):
            low.send(batch(wl.session, seq, wl.metric_ids[0]))
            if seq < 3 + beats:
                low.send(encode_heartbeat(Heartbeat(wl.session, time.monotonic_ns(), seq)))
        for ins in pending:  # the Acks arrive behind (and among) the batches being shed
            t = time.monotonic_ns()
            low.send(encode_ack(Ack(wl.session, ins.instruction_id, AckStatus.OK, t, t)))
        high.send(batch(wh.session, 1, wh.metric_ids[0]))

    take_until(d, send, lambda: c["sched_shed"] == N_LOW and len(ov.sched) == 1)
    assert c["acks_ok"] == 2 and c["heartbeats"] == beats  # handled on intake, none dropped
    [h] = instructions(high, 1)
    assert h.rule_id == "hi"
    t = time.monotonic_ns()
    high.send(encode_ack(Ack(wh.session, h.instruction_id, AckStatus.OK, t, t)))
    wait_for(lambda: c["acks_ok"] == 3, what="the high-priority Ack")
    assert no_more(low)  # the shed batches were never evaluated: nothing fired
    assert c["sched_samples_dropped"] == N_LOW * SAMPLES
    assert c["batches"] == 3  # the two small ones, and the high one
    assert c["agents_lost"] == 0 and c["handler_errors"] == 0
    by = ov.snapshot()["by_priority"]
    assert by["1"]["shed"] == N_LOW and by["1"]["run"] == 0
    assert by["220"] == {"queued": 1, "run": 1, "shed": 0, "evicted": 0, "rejected": 0}
    # audited at a bounded rate (log_rate_per_s 5, burst 10): fewer records than drops
    assert d.writer is not None and d.store is not None
    d.writer.flush()
    records = list(d.store.iter_audit(kind="overload_drop"))
    assert 1 <= len(records) <= 10
    assert records[0]["agent_id"] == "low-1" and records[0]["reason"] == "shed_overload"
    assert records[0]["priority"] == 1 and records[0]["samples"] == SAMPLES
    # the next batch after the shed ones is in sequence: shedding is not a transport gap
    low.send(batch(wl.session, 3 + N_LOW, wl.metric_ids[0], n=2))
    wait_for(lambda: c["batches"] == 4, what="the small batch after the shed ones")
    assert c["batch_gaps"] == 0


def test_a_full_queue_evicts_the_lowest(make_cfg: Any, run_dir: Path, tmp_path: Path) -> None:
    rules = tmp_path / "overload.yaml"
    rules.write_text(RULES)
    with Edged(make_cfg(rules_file=rules, sched_budget_us=0, sched_queue=4),
               utilisation=Load(0.0)) as d:
        low, high = RawPeer(run_dir, b"low#1"), RawPeer(run_dir, b"high#1")
        try:
            wl, wh = low.hello("low-1", ("lo_m",)), high.hello("high-1", ("hi_m",))
            ov = d.loop.overload
            c = d.loop.counters
            def work() -> None:
                for seq in range(1, 7):  # a full queue refuses more of the same score...
                    low.send(batch(wl.session, seq, wl.metric_ids[0]))
                pump(d, lambda: len(ov.sched) == 4 and c["sched_rejected"] == 2)
                high.send(batch(wh.session, 1, wh.metric_ids[0]))  # ...and evicts the lowest
                pump(d, lambda: c["sched_evicted"] == 1)

            d.loop.call(work, timeout=10)
            assert [i.rule_id for i in instructions(high, 1)] == ["hi"]
            lows = instructions(low, 3)
            assert {i.rule_id for i in lows} == {"lo"} and no_more(low)
            by = ov.snapshot()["by_priority"]["1"]
            assert (by["queued"], by["run"], by["evicted"], by["rejected"]) == (4, 3, 1, 2)
            assert c["sched_samples_dropped"] == 3 * SAMPLES
        finally:
            low.close()
            high.close()


def test_a_flood_is_all_accounted_for(make_cfg: Any, run_dir: Path, tmp_path: Path) -> None:
    """Black box: the loop is held while an agent sends 40 batches, then let go. However the
    frames and the scheduler interleave, every batch is evaluated or shed (counted), every Ack
    is taken, and the agent stays alive."""
    rules = tmp_path / "overload.yaml"
    rules.write_text(RULES)
    with Edged(make_cfg(rules_file=rules, sched_budget_us=0, sched_queue=8),
               utilisation=Load(1.0)) as d:
        low = RawPeer(run_dir, b"low#1")
        try:
            wl = low.hello("low-1", ("lo_m",))
            low.send(batch(wl.session, 1, wl.metric_ids[0], n=2))  # small: never shed
            [ins] = instructions(low, 1)
            gate = threading.Event()
            held = threading.Thread(target=lambda: d.loop.call(lambda: gate.wait(10)))
            held.start()
            try:
                for seq in range(2, 42):
                    low.send(batch(wl.session, seq, wl.metric_ids[0]))
                t = time.monotonic_ns()
                low.send(encode_ack(Ack(wl.session, ins.instruction_id, AckStatus.OK, t, t)))
            finally:
                gate.set()
                held.join()
            c = d.loop.counters
            dropped = ("sched_shed", "sched_evicted", "sched_rejected")
            wait_for(lambda: c["batches"] + sum(c[k] for k in dropped) == 41,
                     what="every batch evaluated or dropped")
            wait_for(lambda: c["acks_ok"] == 1, what="the Ack")
            assert c["sched_samples_dropped"] == SAMPLES * sum(c[k] for k in dropped)
            assert c["agents_lost"] == 0 and c["handler_errors"] == 0
        finally:
            low.close()


def test_a_bug_in_admission_is_counted_and_control_goes_on(rig: Any) -> None:
    d, _load, (low, wl), (high, wh) = rig
    ov = d.loop.overload
    c = d.loop.counters

    def boom(rec: Any) -> Any:
        raise RuntimeError("ranking bug")

    ov._rank = boom  # an instance attribute shadows the method
    take_until(d, lambda: low.send(batch(wl.session, 1, wl.metric_ids[0])),
               lambda: c["handler_errors"] == 1)
    del ov._rank
    high.send(batch(wh.session, 1, wh.metric_ids[0], n=2))  # the loop still controls
    assert [i.rule_id for i in instructions(high, 1)] == ["hi"]


def test_status_stats_and_prometheus_show_the_scheduler(rig: Any) -> None:
    from edge.cli import CtlClient
    from edge.wire import CtlOp

    d, load, (low, wl), _high = rig
    load.value = 1.0
    c = d.loop.counters

    def send() -> None:
        for seq in range(1, 4):
            low.send(batch(wl.session, seq, wl.metric_ids[0]))

    take_until(d, send, lambda: c["sched_shed"] == 3)
    with CtlClient(d.cfg.run_dir) as ctl:
        status = ctl.request(CtlOp.STATUS)
        stats = ctl.request(CtlOp.STATS)
        for doc in (status, stats):
            assert doc["counters"]["sched_shed"] == 3
            assert doc["scheduler"]["enabled"] is True and doc["scheduler"]["probe"] == "injected"
            assert doc["scheduler"]["by_priority"]["1"]["shed"] == 3
        from click.testing import CliRunner

        from edge.cli._main import cli

        shown = CliRunner().invoke(cli, ["--run-dir", str(d.cfg.run_dir), "status"])
        assert shown.exit_code == 0, shown.output
        flat = "".join(c for c in shown.output if c.isalnum() or c in ",()")  # rich wraps it
        assert "overload" in flat and "3shed,0evicted,0refusedbatches" in flat
        ctl.request(CtlOp.STATS_RESET)
        after = ctl.request(CtlOp.STATUS)
    assert after["counters"]["sched_shed"] == 0 and after["scheduler"]["by_priority"] == {}


def test_prometheus_counts_shed_batches(make_cfg: Any, run_dir: Path, tmp_path: Path) -> None:
    rules = tmp_path / "overload.yaml"
    rules.write_text(RULES)
    with Edged(make_cfg(rules_file=rules, sched_budget_us=0, metrics_addr="127.0.0.1:0"),
               utilisation=Load(1.0)) as d:
        low = RawPeer(run_dir, b"low#1")
        try:
            wl = low.hello("low-1", ("lo_m",))
            take_until(d, lambda: low.send(batch(wl.session, 1, wl.metric_ids[0])),
                       lambda: d.loop.counters["sched_shed"] == 1)
        finally:
            low.close()
        assert d.metrics is not None
        url = f"http://127.0.0.1:{d.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    assert 'edge_events_total{event="sched_shed"} 1.0' in text
    assert f'edge_events_total{{event="sched_samples_dropped"}} {float(SAMPLES)}' in text


def test_disabled_scheduler_keeps_arrival_order(make_cfg: Any, run_dir: Path,
                                                tmp_path: Path) -> None:
    rules = tmp_path / "overload.yaml"
    rules.write_text(RULES)
    with Edged(make_cfg(rules_file=rules, sched_enabled=False)) as d:
        assert d.loop.overload is None
        from edge.cli import CtlClient
        from edge.wire import CtlOp

        with CtlClient(d.cfg.run_dir) as ctl:
            assert ctl.request(CtlOp.STATUS)["scheduler"] == {"enabled": False}


# ---------------------------------------------------------------- units


class _Rule:
    def __init__(self, priority: int, sla_ms: float) -> None:
        self.priority = priority
        self.sla_ns = int(sla_ms * 1e6)


def test_rank_is_the_highest_priority_and_its_tightest_sla() -> None:
    assert rank_of_rules([]) == (-1, math.inf)
    rules = [_Rule(5, 1.0), _Rule(200, 50.0), _Rule(200, 10.0), _Rule(100, 0.5)]
    assert rank_of_rules(rules) == (200, 10.0)


def test_lag_probe_reads_the_queue_wait_over_its_full_scale(
    make_cfg: Callable[..., EdgeConfig],
) -> None:
    with Edged(make_cfg(sched_lag_ms=4.0)) as d:
        assert d.loop is not None and d.loop.overload is not None
        ov = d.loop.overload
        assert ov.probe == "lag"

        def probe() -> tuple[float, float, float]:
            ov.lag_ns = 1_000_000
            empty = ov.lag_load()  # nothing queued: nothing to wait behind
            ov.sched.push(object(), 0.0, math.inf, 0.0)
            quarter = ov.lag_load()
            ov.lag_ns = 9_000_000
            full = ov.lag_load()
            ov.sched.pop()
            return empty, quarter, full

        assert d.loop.call(probe) == (0.0, pytest.approx(0.25), 1.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("sched_probe", "loop"), ("sched_lag_ms", "0"), ("sched_queue", "0"),
     ("sched_shed_threshold", "1.5"), ("sched_budget_us", "-1")],
)
def test_bad_scheduler_settings_are_refused(
    make_cfg: Callable[..., EdgeConfig], key: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        make_cfg(**{key: value})
