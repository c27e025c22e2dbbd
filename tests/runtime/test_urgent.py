"""Urgent instructions (rule priority >= urgent_priority) leave as soon as a sample fires them,
before the rest of the MetricBatch is evaluated; the others leave after it, highest first.
A real edged and a raw DEALER agent on a tmp-path ipc:// socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged
from edge.wire import MessageType, decode_instruction, encode_metric_batch, verify

from ..support import RawPeer, wait_for

RULES = """\
- {rule_id: low, rule_content: "a > 1", action: alert, priority: 10, sla_threshold: 50}
- {rule_id: urgent_a, rule_content: "a > 1", action: safe_state, priority: 250, sla_threshold: 50}
- {rule_id: urgent_b, rule_content: "b > 1", action: safe_state, priority: 255, sla_threshold: 50}
- {rule_id: mid_b, rule_content: "b > 1", action: alert, priority: 100, sla_threshold: 50}
"""


@pytest.mark.parametrize(
    ("level", "order"),
    [
        # urgent_a fires at the first sample and leaves before the second sample is evaluated,
        # so it arrives before the higher urgent_b; low and mid_b wait for the batch's end
        (200, ["urgent_a", "urgent_b", "mid_b", "low"]),
        # nothing urgent: the whole batch's firings leave at its end, in priority order
        (256, ["urgent_b", "urgent_a", "mid_b", "low"]),
    ],
)
def test_urgent_instructions_leave_before_the_rest_of_the_batch(
    make_cfg: Any, run_dir: Path, tmp_path: Path, level: int, order: list[str]
) -> None:
    rules = tmp_path / "urgent.yaml"
    rules.write_text(RULES)
    with Edged(make_cfg(rules_file=rules, urgent_priority=level)) as d:
        p = RawPeer(run_dir, b"urgent#1")
        try:
            w = p.hello("urgent-1", ("a", "b"))
            p.send(encode_metric_batch(w.session, 1, 0, [(0, 2.0, 1000), (1, 2.0, 2000)]))
            got = []
            for _ in range(4):
                buf = p.recv()
                assert verify(buf) is MessageType.INSTRUCTION
                got.append(decode_instruction(buf).rule_id)
            assert got == order
            # counted just after the send: the peer can read the 4th before the count moves
            wait_for(lambda: d.loop.counters["instructions_sent"] == 4, what="4 counted")
        finally:
            p.close()
