"""Issue 10 in edged: instructions to other agents (``target``, ``source_agent``), board rules
across agents, bounded fan-out, and the reserved ``agent`` label at Hello."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig
from edge.runtime import Edged
from edge.runtime._prom import render
from edge.wire import Hello, MetricDecl, NoticeCode, encode_hello

from ..support import RawPeer, wait_for

pytestmark = pytest.mark.integration

RULES = """\
- rule_id: plc_silent
  board: true
  rule_content: absent(cycle_ms{agent="plc-3"}, 300ms)
  target: cell-*
  action: safe_state
  priority: 250
  sla_threshold: 50
- rule_id: perception_hot
  rule_content: cpu_usage > 0.9
  agents: [perception-*]
  target: [vcu, cell-*]
  action: throttle
  priority: 20
  sla_threshold: 50
- rule_id: to_nobody
  rule_content: temp > 80
  target: nobody-*
  action: alert
  priority: 5
  sla_threshold: 50
- rule_id: fleet
  rule_content: load > 1
  target: "*"
  action: alert
  priority: 4
  sla_threshold: 50
"""


class Recorder:
    def __init__(self) -> None:
        self.got: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, ins: Any) -> None:
        with self.lock:
            self.got.append(ins)

    def of(self, rule_id: str) -> list[Any]:
        with self.lock:
            return [i for i in self.got if i.rule_id == rule_id]


@pytest.fixture
def edged_t(make_cfg: Callable[..., EdgeConfig], tmp_path: Path) -> Iterator[Edged]:
    f = tmp_path / "targets.yaml"
    f.write_text(RULES)
    d = Edged(make_cfg(rules_file=f, max_targets=3, heartbeat_ms=1000)).start()
    try:
        yield d
    finally:
        d.close()


def audit(d: Edged, kind: str) -> list[dict[str, Any]]:
    assert d.writer is not None and d.store is not None
    d.writer.flush()
    return list(d.store.iter_audit(kind=kind))


def test_target_sends_to_other_agents_with_the_source(edged_t: Edged, agent_factory: Any) -> None:
    vcu, cell, per = Recorder(), Recorder(), Recorder()
    with (
        agent_factory("vcu", ["speed"], handler=vcu),
        agent_factory("cell-a", ["x"], handler=cell),
        agent_factory("perception-1", ["cpu_usage"], handler=per) as p,
    ):
        wait_for(lambda: edged_t.loop.counters["agents_registered"] == 3)
        p.report("cpu_usage", 0.95)
        wait_for(lambda: vcu.of("perception_hot") and cell.of("perception_hot"))
        (ins,) = vcu.of("perception_hot")
        assert ins.source_agent == "perception-1"
        assert cell.of("perception_hot")[0].source_agent == "perception-1"
        assert per.of("perception_hot") == []  # the agent that fired is not a target
        wait_for(lambda: edged_t.loop.counters["acks_ok"] >= 2)
        # the board rule: plc-3 never came up; its absence counts from activation
        wait_for(lambda: cell.of("plc_silent"), what="the board rule's instruction")
        assert cell.of("plc_silent")[0].source_agent == "@board"
        assert vcu.of("plc_silent") == []
    records = {(r["rule_id"], r["agent_id"]) for r in audit(edged_t, "instruction")}
    assert {("perception_hot", "vcu"), ("perception_hot", "cell-a")} <= records


def test_no_target_is_counted_and_audited(edged_t: Edged, agent_factory: Any) -> None:
    with agent_factory("plc-1", ["temp"]) as a:
        a.report("temp", 95.0)
        wait_for(lambda: edged_t.loop.counters["instructions_no_target"] == 1)
    (rec,) = [r for r in audit(edged_t, "instruction") if r["rule_id"] == "to_nobody"]
    assert rec["status"] == "no_target" and rec["source_agent"] == "plc-1"
    assert "nobody-*" in rec["detail"]
    assert edged_t._ctl_status({}, b"")["counters"]["instructions_no_target"] == 1
    page = render(edged_t._metrics_read())
    assert 'edge_events_total{event="instructions_no_target"} 1' in page


def test_fan_out_is_bounded_and_what_is_cut_is_counted(edged_t: Edged, agent_factory: Any) -> None:
    recs = {f"cell-{i}": Recorder() for i in range(5)}
    with contextlib.ExitStack() as stack:
        agents = [
            stack.enter_context(agent_factory(aid, ["load"], handler=r)) for aid, r in recs.items()
        ]
        wait_for(lambda: edged_t.loop.counters["agents_registered"] == 5)
        agents[4].report("load", 2.0)
        wait_for(lambda: edged_t.loop.counters["instructions_targets_cut"] >= 2)
        wait_for(lambda: sum(len(r.of("fleet")) for r in recs.values()) == 3)
        got = sorted(aid for aid, r in recs.items() if r.of("fleet"))
        assert got == ["cell-0", "cell-1", "cell-2"]  # max_targets = 3, in agent-id order
        assert all(recs[aid].of("fleet")[0].source_agent == "cell-4" for aid in got)
    # plc_silent (target cell-*) may fire meanwhile too: look at fleet's own record
    (cut,) = [c for c in audit(edged_t, "instructions_targets_cut") if c["rule_id"] == "fleet"]
    assert (cut["rule_id"], cut["sent"], cut["cut"]) == ("fleet", 3, 2)


def test_hello_declaring_the_reserved_agent_label_is_refused(edged_t: Edged, run_dir: Path) -> None:
    peer = RawPeer(run_dir, b"peer-agent-label")
    try:
        peer.send(encode_hello(Hello("dev-1", (MetricDecl("temp", (("agent", "x"),)),))))
        notice = peer.notice()
        assert notice.code is NoticeCode.BAD_HELLO
        assert "'agent'" in notice.detail and "reserved" in notice.detail
        assert edged_t.loop.counters["bad_hello"] == 1
        assert "dev-1" not in edged_t.loop.registry.by_id
    finally:
        peer.close()


def test_board_and_rearm_state_carry_over_a_push_that_keeps_the_rule(
    edged_t: Edged, agent_factory: Any
) -> None:
    from edge.rules import encode_rule_table, parse_rule_text
    from edge.runtime import CtlClient
    from edge.wire import CtlOp

    cell = Recorder()
    with agent_factory("cell-a", ["x"], handler=cell):
        wait_for(lambda: cell.of("plc_silent"), what="the board rule's first firing")
        assert edged_t.loop.board is not None
        (before,) = edged_t.loop.board.instances.values()
        assert not before.armed
        extra = "- rule_id: new_one\n  rule_content: y > 1\n  action: alert\n"
        extra += "  priority: 1\n  sla_threshold: 5\n"
        table = encode_rule_table(parse_rule_text(RULES + extra))
        with CtlClient(edged_t.cfg.run_dir) as ctl:
            assert ctl.request(CtlOp.RULES_PUSH, blob=table)["rules"] == 5
        (after,) = edged_t.loop.board.instances.values()
        assert after is before and not after.armed  # the same instance, still disarmed
        fired = edged_t.loop.counters["firings"]
        # plc-3 is still silent, but the unchanged rule stays disarmed: no second firing,
        # while a changed copy of it (a new rule id) starts armed and fires on its own
        moved = RULES.replace("rule_id: plc_silent", "rule_id: plc_silent_v2")
        with CtlClient(edged_t.cfg.run_dir) as ctl:
            ctl.request(CtlOp.RULES_PUSH, blob=encode_rule_table(parse_rule_text(moved)))
        wait_for(lambda: cell.of("plc_silent_v2"), what="the renamed rule's firing")
        assert len(cell.of("plc_silent")) == 1
        assert edged_t.loop.counters["firings"] >= fired + 1
