"""The agent SDK's contract: clear errors for misuse, batching, heartbeats while busy."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged
from edge.sdk import Agent, AgentClosedError, ConnectError, UndeclaredMetricError

from ..support import wait_for

pytestmark = pytest.mark.integration


def test_connect_to_absent_edged_is_a_clear_error(run_dir: Path) -> None:
    a = Agent("lonely", ["cpu"], run_dir=run_dir, connect_timeout=0.3)
    with pytest.raises(ConnectError, match="is edged running"):
        a.connect()
    a.close()


def test_undeclared_metric_and_closed_agent(edged: Edged, agent_factory: Any) -> None:
    agent = agent_factory("a1", ["cpu", ("temp", {"zone": "a"})]).connect()
    with pytest.raises(UndeclaredMetricError, match="'mem'.*declared: cpu, temp"):
        agent.report("mem", 1.0)
    with pytest.raises(UndeclaredMetricError):
        agent.report("temp", 1.0, {"zone": "b"})
    assert agent.report("temp", 1.0, {"zone": "a"})
    agent.close()
    with pytest.raises(AgentClosedError):
        agent.report("cpu", 1.0)
    agent.close()  # idempotent


def test_batched_report_and_labels(edged: Edged, agent_factory: Any) -> None:
    with agent_factory("a2", ["cpu", ("temp", {"zone": "a"}), ("temp", {"zone": "b"})]) as agent:
        n = agent.report_many(
            [("cpu", 0.1), ("temp", 20.0, {"zone": "a"}), ("temp", 21.0, {"zone": "b"})]
        )
        assert n == 3
        wait_for(lambda: edged.loop.counters["samples"] == 3)
        rec = edged.loop.registry.by_id["a2"]
        assert rec.last_value == [0.1, 20.0, 21.0]
        assert edged.loop.counters["batches"] == 1


def test_heartbeats_continue_while_the_caller_is_busy(edged: Edged, agent_factory: Any) -> None:
    with agent_factory("busy", ["cpu"], heartbeat_ms=20) as agent:
        rec = edged.loop.registry.by_id["busy"]
        before = edged.loop.counters["heartbeats"]
        done = threading.Event()
        # the caller's thread is busy (blocked) and reports nothing
        wait_for(lambda: edged.loop.counters["heartbeats"] >= before + 10, what="10 more beats")
        done.set()
        assert rec.state.value == "active"
        assert agent.connected


def test_no_handler_rejects(edged: Edged, agent_factory: Any) -> None:
    with agent_factory("nohandler", ["cpu_usage"]) as agent:
        agent.report("cpu_usage", 0.99)
        wait_for(lambda: edged.loop.counters["acks_rejected"] == 1)


def test_wait_for_edged_connects_whenever_edged_comes_up_and_drops_are_counted(
    make_cfg: Any, run_dir: Path, caplog: Any
) -> None:
    """Boot order does not matter with wait_for_edged; while edged is away report() says
    what it dropped (returns False, counts it) instead of dropping silently."""
    import logging

    got: list[Any] = []
    agent = Agent(
        "early", ["cpu_usage"], run_dir=run_dir, connect_timeout=0.1, wait_for_edged=True,
        handler=got.append,
    )
    done = threading.Event()
    failed: list[BaseException] = []

    def connect() -> None:
        try:
            agent.connect()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failed.append(exc)
        done.set()

    with caplog.at_level(logging.INFO, logger="edge.sdk"):
        t = threading.Thread(target=connect)
        t.start()
        wait_for(lambda: "waiting for edged" in caplog.text, what="the waiting line")
        assert not done.is_set()  # several connect_timeouts passed: still waiting
        d = Edged(make_cfg()).start()
        try:
            assert done.wait(20) and not failed
            t.join()
            assert agent.report("cpu_usage", 0.99)
            wait_for(lambda: got, what="an instruction")
            d.close()
            wait_for(lambda: not agent.connected, what="the SDK to notice edged is gone")
            assert agent.report("cpu_usage", 0.5) is False
            assert agent.report_many([("cpu_usage", 0.5), ("cpu_usage", 0.6)]) == 0
            assert agent.dropped == 3 and agent.counters["dropped"] == 3
            assert "reports are dropped" in caplog.text
        finally:
            d.close()
            agent.close()


def test_deferred_ack_from_another_thread_carries_the_devices_time(
    edged: Edged, agent_factory: Any
) -> None:
    """A handler returning DEFERRED answers later with ack(); t_done is the caller's."""
    from edge.sdk import DEFERRED, AckStatus

    got: list[Any] = []

    def handler(ins: Any) -> Any:
        got.append(ins)
        return DEFERRED

    with agent_factory("dev-1", ["cpu_usage"], handler=handler) as agent:
        agent.report("cpu_usage", 0.95)
        wait_for(lambda: got, what="the instruction")
        assert edged.loop.counters["acks"] == 0  # nothing answered yet
        t_done = agent._clock.monotonic_ns()
        done = threading.Thread(
            target=lambda: agent.ack(got[0].instruction_id, AckStatus.OK, "confirmed",
                                     t_done_ns=t_done)
        )
        done.start()
        done.join()
        wait_for(lambda: edged.loop.counters["acks_ok"] == 1, what="the deferred ack")
        assert agent.counters["deferred"] == 1
        assert not agent.ack(got[0].instruction_id)  # a second answer is refused, counted
        assert agent.counters["late_acks"] == 1


def test_ack_inside_the_handler_before_it_returns_deferred(
    edged: Edged, agent_factory: Any
) -> None:
    from edge.sdk import DEFERRED

    box: dict[str, Any] = {}

    def handler(ins: Any) -> Any:
        box["first"] = box["agent"].ack(ins.instruction_id)  # a device faster than the handler
        return DEFERRED

    with agent_factory("dev-2", ["cpu_usage"], handler=handler) as agent:
        box["agent"] = agent
        agent.report("cpu_usage", 0.95)
        wait_for(lambda: edged.loop.counters["acks_ok"] == 1, what="the ack")
        assert box["first"] is True


def test_agents_sharing_one_context(edged: Edged, run_dir: Path) -> None:
    import zmq

    ctx: zmq.Context[Any] = zmq.Context()
    try:
        a = Agent("shared-a", ["cpu_usage"], run_dir=run_dir, context=ctx).connect()
        b = Agent("shared-b", ["cpu_usage"], run_dir=run_dir, context=ctx).connect()
        assert a.report("cpu_usage", 0.1) and b.report("cpu_usage", 0.2)
        wait_for(lambda: edged.loop.counters["samples"] == 2)
        a.close()
        assert b.report("cpu_usage", 0.3)  # closing one leaves the shared context usable
        b.close()
    finally:
        ctx.term()
