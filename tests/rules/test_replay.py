"""Offline replay: deterministic, on a virtual clock, the same engine as edged."""

from __future__ import annotations

import pytest

from edge.rules import TraceError, parse_rule_text, parse_trace, replay

from ..support import SEED_RULE

SEED = SEED_RULE + """\
- rule_id: hot
  rule_content: temp > 80
  action: throttle
  priority: 3
  sla_threshold: 5
  params: {rate: 0.5}
- rule_id: hot_critical
  rule_content: temp > 80
  action: safe_state
  priority: 9
  sla_threshold: 5
"""

TRACE = """\
t_ms,agent_id,metric,value,labels
0,perception-1,cpu_usage,0.95,
2000,perception-1,cpu_usage,0.97,
500,plc-3,temp,85,zone=a
500,plc-2,temp,85,zone=b
"""


def test_seed_rule_fires_at_the_hold_deadline_and_order_is_stable() -> None:
    out = replay(parse_rule_text(SEED), parse_trace(TRACE), end_ms=15000)
    assert out == [
        {
            "t_ms": 500,
            "rule_id": "hot_critical",
            "agent_id": "plc-2",
            "target": "plc-2",
            "action": "safe_state",
            "params": {},
        },
        {
            "t_ms": 500,
            "rule_id": "hot_critical",
            "agent_id": "plc-3",
            "target": "plc-3",
            "action": "safe_state",
            "params": {},
        },
        {
            "t_ms": 500,
            "rule_id": "hot",
            "agent_id": "plc-2",
            "target": "plc-2",
            "action": "throttle",
            "params": {"rate": 0.5},
        },
        {
            "t_ms": 500,
            "rule_id": "hot",
            "agent_id": "plc-3",
            "target": "plc-3",
            "action": "throttle",
            "params": {"rate": 0.5},
        },
        {
            "t_ms": 10000,
            "rule_id": "rule_001",
            "agent_id": "perception-1",
            "target": "perception-1",
            "action": "restart_agent",
            "params": {},
        },
    ]


def test_clock_stops_at_the_last_row_without_end_ms() -> None:
    out = replay(parse_rule_text(SEED), parse_trace(TRACE))
    assert [o["rule_id"] for o in out] == ["hot_critical", "hot_critical", "hot", "hot"]


def test_replay_is_deterministic() -> None:
    rs, rows = parse_rule_text(SEED), parse_trace(TRACE)
    assert replay(rs, rows, 20000) == replay(rs, list(reversed(rows)), 20000)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("t,agent,metric,value\n", "header"),
        ("t_ms,agent_id,metric,value\nx,a,m,1\n", ":2:"),
        ("t_ms,agent_id,metric,value\n1,a,m\n", "4 or 5 columns"),
        ("t_ms,agent_id,metric,value,labels\n1,a,m,1,zone\n", "not k=v"),
    ],
)
def test_bad_traces_name_the_line(text: str, words: str) -> None:
    with pytest.raises(TraceError, match=words):
        parse_trace(text, "t.csv")
