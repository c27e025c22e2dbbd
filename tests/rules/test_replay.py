"""Offline replay: deterministic, on a virtual clock, the same engine as edged."""

from __future__ import annotations

import pytest

from edge.rules import TraceError, parse_rule_text, parse_trace, replay, unmatched_series

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
        # other spellings of labels are refused, not read as a label nobody selects
        ('t_ms,agent_id,metric,value,labels\n1,a,m,1,{zone="drive"}\n', "k=v;k2=v2"),
        ('t_ms,agent_id,metric,value,labels\n1,a,m,1,"zone=drive,x=y"\n', "not plain text"),
        ("t_ms,agent_id,metric,value,labels\n1,a,m,1,zone=a;zone=b\n", "given twice"),
    ],
)
def test_bad_traces_name_the_line(text: str, words: str) -> None:
    with pytest.raises(TraceError, match=words):
        parse_trace(text, "t.csv")


def test_labels_in_the_documented_form_and_series_no_selector_matches() -> None:
    rules = parse_rule_text(
        '- {rule_id: t, rule_content: \'temp{zone="drive"} > 80\', action: alert, '
        "priority: 1, sla_threshold: 5}\n"
    )
    rows = parse_trace(
        "t_ms,agent_id,metric,value,labels\n0,a,temp,90,zone=drive;line=3\n1,a,temp,90,zone=cab\n"
        "2,a,tmp,90,zone=drive\n"
    )
    assert rows[0].labels == (("line", "3"), ("zone", "drive"))
    assert unmatched_series(rules, rows) == ['temp{zone="cab"}', 'tmp{zone="drive"}']
    assert [f["t_ms"] for f in replay(rules, rows)] == [0]


def test_series_a_board_rule_names_are_matched_for_their_agent_only() -> None:
    """A board rule's selector carries the reserved agent label: the series it names are not
    'matched by no rule', and the same series of another agent is."""
    rules = parse_rule_text(
        "- {rule_id: plc_silent, board: true, rule_content: 'absent(cycle_ms{agent=\"plc-3\"}, 2s)',"
        " target: cell-1, action: safe_state, priority: 9, sla_threshold: 5}\n"
    )
    rows = parse_trace(
        "t_ms,agent_id,metric,value\n0,plc-3,cycle_ms,10\n1,plc-3,cycle_ms,10\n"
        "2,cell-1,cycle_ms,10\n3,cell-1,temp,1\n"
    )
    assert unmatched_series(rules, rows) == ["temp"]
    only_other = parse_trace("t_ms,agent_id,metric,value\n0,plc-4,cycle_ms,10\n")
    assert unmatched_series(rules, only_other) == ["cycle_ms"]
