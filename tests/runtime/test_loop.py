"""The closed loop end to end: metric -> rule -> instruction -> ack, timed and audited."""

from __future__ import annotations

import os
import stat
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge.errors import AlreadyRunningError
from edge.runtime import Edged
from edge.wire import AckStatus, Action, Heartbeat, encode_heartbeat

from ..support import RawPeer, wait_for

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self, result: Any = None):
        self.got: list[Any] = []
        self.result = result
        self.event = threading.Event()

    def __call__(self, ins: Any) -> Any:
        self.got.append(ins)
        self.event.set()
        return self.result


def audit(d: Edged, kind: str) -> list[dict[str, Any]]:
    assert d.writer is not None and d.store is not None
    d.writer.flush()
    return list(d.store.iter_audit(kind=kind))


def test_metric_rule_instruction_ack(edged: Edged, agent_factory: Any) -> None:
    rec = Recorder()
    with agent_factory("perception-1", ["cpu_usage"], handler=rec) as agent:
        assert agent.report("cpu_usage", 0.95)
        wait_for(lambda: rec.got, what="the instruction")
        ins = rec.got[0]
        assert ins.rule_id == "cpu_hot" and ins.action is Action.RESTART_AGENT
        assert ins.priority == 8 and ins.value == pytest.approx(0.95)
        assert ins.deadline_ns == ins.t_sample_ns + 50_000_000
        wait_for(lambda: edged.loop.counters["acks_ok"] == 1, what="the ack")
        stats = edged.stats.snapshot()
        for stage in ("collect", "trans1", "compute", "rule", "trans2", "execute", "e2e", "ack"):
            assert stats["stages_us"][stage]["count"] == 1, stage
        assert stats["rules"]["cpu_hot"]["ok"] == 1
        assert stats["sla_judged"] == 1
        assert stats["jitter_pct"] == 0.0  # one sample: no deviation
        records = audit(edged, "instruction")
        assert [(r["rule_id"], r["agent_id"], r["status"]) for r in records] == [
            ("cpu_hot", "perception-1", "ok")
        ]
        # edge-triggered: still hot is no new instruction; cool then hot again is one
        agent.report("cpu_usage", 0.97)
        agent.report("cpu_usage", 0.2)
        agent.report("cpu_usage", 0.99)
        wait_for(lambda: len(rec.got) == 2, what="the second instruction")
        wait_for(lambda: edged.loop.counters["acks"] == 2)
        assert edged.loop.counters["instructions_sent"] == 2


def test_instructions_leave_in_priority_order(edged: Edged, agent_factory: Any) -> None:
    rec = Recorder()
    with agent_factory("plc-line-3", ["temp"], handler=rec) as agent:
        agent.report("temp", 95.0)
        wait_for(lambda: len(rec.got) == 2)
        assert [i.rule_id for i in rec.got] == ["temp_critical", "temp_hot"]
        assert [i.action for i in rec.got] == [Action.SAFE_STATE, Action.THROTTLE]
        assert [(p.key, p.value) for p in rec.got[1].params] == [("rate", 0.5)]


def test_held_for_fires_on_its_timer_without_a_new_sample(edged: Edged, agent_factory: Any) -> None:
    rec = Recorder()
    with agent_factory("planner-1", ["load"], handler=rec) as agent:
        t0 = time.monotonic_ns()
        agent.report("load", 2.0)
        t1 = time.monotonic_ns()
        ins = wait_for(lambda: rec.got, what="the held-for instruction")[0]
        assert ins.rule_id == "held"
        # a timer firing's trigger time is the deadline: the sample's time + 200 ms
        assert t0 + 200_000_000 <= ins.t_sample_ns <= t1 + 200_000_000
        assert edged.loop.counters["timer_firings"] == 1
        assert edged.loop.counters["samples"] == 1


def test_handler_outcomes_become_ack_statuses(edged: Edged, agent_factory: Any) -> None:
    from edge.sdk import InstructionRejected

    def reject(ins: Any) -> None:
        raise InstructionRejected("maintenance window")

    def explode(ins: Any) -> None:
        raise RuntimeError("actuator jammed")

    with (
        agent_factory("a-reject", ["cpu_usage"], handler=reject) as a1,
        agent_factory("a-fail", ["cpu_usage"], handler=explode) as a2,
    ):
        a1.report("cpu_usage", 1.0)
        a2.report("cpu_usage", 1.0)
        wait_for(lambda: edged.loop.counters["acks"] == 2)
    c = edged.loop.counters
    assert (c["acks_rejected"], c["acks_failed"]) == (1, 1)
    by_agent = {r["agent_id"]: r for r in audit(edged, "instruction")}
    assert by_agent["a-reject"]["status"] == "rejected"
    assert by_agent["a-reject"]["detail"] == "maintenance window"
    assert "actuator jammed" in by_agent["a-fail"]["detail"]
    rules = edged.stats.snapshot()["rules"]["cpu_hot"]
    assert rules["sla_met"] == 0 and rules["sla_judged"] == 2  # failures never meet the SLA


def test_agent_without_beats_is_lost_then_recovers(edged: Edged, run_dir: Path) -> None:
    peer = RawPeer(run_dir, b"can-gateway#1")
    try:
        w = peer.hello("can-gateway", heartbeat_ms=50)
        assert w.heartbeat_ms == 50 and w.missed_beats == 3
        rec = edged.loop.registry.by_id["can-gateway"]
        wait_for(lambda: rec.state.value == "lost", what="the agent to be declared lost")
        assert edged.loop.counters["agents_lost"] == 1
        assert audit(edged, "agent_lost")[0]["agent_id"] == "can-gateway"
        peer.send(encode_heartbeat(Heartbeat(w.session, 0, 1)))  # any message brings it back
        wait_for(lambda: rec.state.value == "active", what="recovery")
        assert edged.loop.counters["agents_recovered"] == 1
        assert audit(edged, "agent_recovered")
    finally:
        peer.close()


def test_bye_forgets_the_agent_at_once(edged: Edged, agent_factory: Any) -> None:
    with agent_factory("short-lived", ["cpu_usage"]):
        wait_for(lambda: "short-lived" in edged.loop.registry.by_id)
    wait_for(lambda: edged.loop.counters["agents_gone"] == 1)
    assert "short-lived" not in edged.loop.registry.by_id
    assert edged.loop.counters["agents_forgotten"] == 1
    assert audit(edged, "agent_gone")[0]["reason"] == "closed"
    assert audit(edged, "agent_forgotten")[0]["agent_id"] == "short-lived"
    assert edged.store.load_agents() == {}  # its record is deleted too


def test_bye_keeps_the_agent_listed_when_configured(make_cfg: Any, agent_factory: Any) -> None:
    with Edged(make_cfg(agent_keep_gone_s=60)) as d:
        with agent_factory("short-lived", ["cpu_usage"]):
            wait_for(lambda: "short-lived" in d.loop.registry.by_id)
        wait_for(lambda: d.loop.registry.by_id["short-lived"].state.value == "gone")
        assert d.loop.counters["agents_forgotten"] == 0


def test_state_recovered_after_restart(make_cfg: Any, agent_factory: Any, tmp_path: Path) -> None:
    cfg = make_cfg(agent_keep_gone_s=60)
    with Edged(cfg) as d:
        with agent_factory("perception-1", ["cpu_usage"]):
            wait_for(lambda: "perception-1" in d.loop.registry.by_id)
        version = d.loop.table.version
    # the rules file is gone: the table must come from the store
    with Edged(make_cfg(rules_file=None)) as d2:
        assert d2.loop.table.version == version
        assert [r.rule_id for r in d2.loop.table.rules][:1] == ["cpu_hot"]
        assert "perception-1" in d2.loop.registry.known
        d2.writer.flush()
        kinds = [r["kind"] for r in d2.store.iter_audit()]
        assert kinds.count("edged_started") == 2 and "edged_stopped" in kinds
        assert d2.store.latest_stats() is not None  # the final snapshot was flushed


def test_agent_reconnects_when_edged_restarts(make_cfg: Any, agent_factory: Any) -> None:
    rec = Recorder()
    d = Edged(make_cfg()).start()
    agent = agent_factory("perception-2", ["cpu_usage"], handler=rec, heartbeat_ms=50)
    try:
        agent.connect()
        d.close()
        d = Edged(make_cfg()).start()
        wait_for(lambda: "perception-2" in d.loop.registry.by_id, what="the agent to re-register")
        wait_for(lambda: agent.connected)
        agent.report("cpu_usage", 0.99)
        wait_for(lambda: rec.got, what="an instruction from the new edged")
    finally:
        agent.close()
        d.close()


def test_single_instance_lock(edged: Edged, make_cfg: Any) -> None:
    with pytest.raises(AlreadyRunningError, match="already running") as info:
        Edged(make_cfg()).open()
    assert edged.loop.ready.is_set()
    # the message says exactly what to run: the holder's pid, not a placeholder
    assert f"`kill -TERM {os.getpid()}`" in str(info.value) and "<pid>" not in str(info.value)


def test_run_dir_is_group_only(edged: Edged) -> None:
    mode = stat.S_IMODE(os.stat(edged.cfg.run_dir).st_mode)
    assert mode == 0o750


def test_prometheus_endpoint_on_loopback(make_cfg: Any, agent_factory: Any) -> None:
    with Edged(make_cfg(metrics_addr="127.0.0.1:0")) as d:
        with agent_factory("p1", ["cpu_usage"], handler=Recorder()) as agent:
            agent.report("cpu_usage", 1.0)
            wait_for(lambda: d.loop.counters["acks"] == 1)
            url = f"http://127.0.0.1:{d.metrics.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        assert 'edge_events_total{event="acks_ok"} 1.0' in text
        assert 'edge_stage_latency_seconds_count{stage="e2e"} 1.0' in text
        assert 'edge_rule_sla_attainment_ratio{rule_id="cpu_hot"}' in text


def test_ack_status_enum_values_are_the_wire_values() -> None:
    assert [int(s) for s in AckStatus] == [0, 1, 2]


def test_hot_swap_keeps_held_for_state_and_drops_no_sample(
    edged: Edged, agent_factory: Any, tmp_path: Path
) -> None:
    """Push a table that keeps the held-for rule unchanged (and adds 2,000 others) while an
    agent streams samples: the pending hold fires at its original deadline, no sample is lost."""
    from edge.cli import CtlClient
    from edge.rules import encode_rule_table, parse_rule_text
    from edge.wire import CtlOp

    rec = Recorder()
    extra = "".join(
        f"- {{rule_id: x{i}, rule_content: other > {i}, action: alert, priority: 1, sla_threshold: 5}}\n"
        for i in range(2000)
    )
    current = (Path(edged.cfg.rules_file)).read_text()
    table = encode_rule_table(parse_rule_text(current + extra))
    with agent_factory("planner-2", ["load"], handler=rec) as agent:
        t0 = time.monotonic_ns()
        agent.report("load", 2.0, t_ns=t0)  # `held` (load > 1 for 200ms) starts its hold at t0
        sent = 1
        with CtlClient(edged.cfg.run_dir) as ctl:
            stop = threading.Event()

            def stream() -> None:
                nonlocal sent
                while not stop.is_set():
                    sent += agent.report("load", 2.0)  # False: dropped by the SDK, not sent

            th = threading.Thread(target=stream)
            th.start()
            try:
                reply = ctl.request(CtlOp.RULES_PUSH, blob=table)
            finally:
                stop.set()
                th.join()
        assert reply["rules"] == 2004
        ins = wait_for(lambda: rec.got, what="the held-for firing")[0]
        assert ins.rule_id == "held"
        assert ins.t_sample_ns == t0 + 200_000_000  # the original deadline: the hold carried over
        # every sample sent is evaluated, or shed by overload control and counted as such
        c = edged.loop.counters
        wait_for(
            lambda: c["samples"] + c["sched_samples_dropped"] == sent, what="every sample counted"
        )
