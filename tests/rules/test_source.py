from __future__ import annotations

from pathlib import Path

import pytest

from edge.rules import (
    RuleFileError,
    load_rule_file,
    parse_condition,
    parse_duration,
    parse_rule_text,
)
from edge.rules._compiler import compile_condition
from edge.rules._ir import NodeOp
from edge.rules._lexer import ConditionError
from edge.wire import Action

SEED = """\
- rule_id: rule_001
  rule_name: restart agent on high CPU
  rule_content: cpu_usage > 0.9 for 10s
  action: restart_agent
  priority: 8
  sla_threshold: 10
"""


def test_seed_rule_object_verbatim() -> None:
    rs = parse_rule_text(SEED)
    (r,) = rs.rules
    assert r.rule_id == "rule_001"
    assert r.action is Action.RESTART_AGENT
    assert r.priority == 8 and r.sla_ms == 10.0
    c = r.condition
    assert c.text() == "cpu_usage > 0.9 for 10s"
    assert c.selectors[0].metric == "cpu_usage" and c.nodes[-1].op is NodeOp.GT
    assert c.hold_ns == 10_000_000_000


def test_seed_rule_object_as_json() -> None:
    text = (
        '[{"rule_id": "rule_001", "rule_name": "restart agent on high CPU", "rule_content": '
        '"cpu_usage > 0.9 for 10s", "action": "restart_agent", "priority": 8, "sla_threshold": 10}]'
    )
    assert parse_rule_text(text).rules[0].condition.hold_ns == 10_000_000_000


def test_mapping_form_with_optional_fields() -> None:
    rs = parse_rule_text("""
version: 7
description: line 3
actions: [open_valve]
rules:
  - rule_id: r1
    rule_content: 'temp{zone="a"} >= 80.5'
    action: open_valve
    priority: 200
    sla_threshold: 2.5
    agents: ["plc-*"]
    params: {rate: 0.5, mode: safe, hard: true}
    cooldown: 250ms
    escalate: safe_state
""")
    (r,) = rs.rules
    assert rs.version == 7 and rs.custom_actions == ("open_valve",)
    assert r.action is Action.CUSTOM and r.custom_action == "open_valve"
    assert r.condition.selectors[0].labels == (("zone", "a"),)
    assert r.agents == ("plc-*",) and r.cooldown_ns == 250_000_000
    assert [(p.key, p.value) for p in r.params] == [("rate", 0.5), ("mode", "safe"), ("hard", True)]
    assert r.escalate is Action.SAFE_STATE


@pytest.mark.parametrize(
    ("text", "ns"),
    [("250ms", 250_000_000), ("10s", 10**10), ("1.5m", 90 * 10**9), ("2h", 7200 * 10**9)],
)
def test_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("content", "col", "words"),
    [
        ("> 0.9", 0, "metric name"),
        ("cpu 0.9", 4, "comparison"),
        ("cpu > ", 6, "number"),
        ("cpu > 0.9 for 10", 14, "unit"),
        ("cpu > 0.9 junk", 10, "unexpected"),
        ("cpu{core=1} > 1", 9, "quoted label value"),
        ("cpu > 0.9 $", 10, "unexpected character"),
    ],
)
def test_condition_errors_point_at_the_column(content: str, col: int, words: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(content)
    (d,) = info.value.errors
    assert words in d.message
    assert d.column == col


def test_parse_condition_is_the_compiler_under_its_old_name() -> None:
    assert parse_condition("0.9 < cpu") == compile_condition("cpu > 0.9")
    with pytest.raises(ValueError, match="column 4"):  # old callers caught ValueError
        parse_condition("cpu 0.9")


def test_every_error_at_once_with_file_line_col(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("""\
- rule_id: a
  rule_content: cpu_usage > 0.9 for 10
  action: restart_agent
  priority: 8
  sla_threshold: 10
- rule_id: b
  rule_content: cpu_usage > 0.9
  action: reboot_world
  priority: 300
  sla_threshold: 10
- rule_id: a
  rule_content: mem > 1
  action: alert
  priority: 1
  sla_threshold: 5
- rule_id: c
  rule_content: mem > 1
  action: alert
  priority: 1
""")
    with pytest.raises(RuleFileError) as info:
        load_rule_file(f)
    text = str(info.value)
    probs = info.value.problems
    assert len(probs) == 5, text
    assert f"{f}:2:" in text and "^" in text and "unit" in text  # caret under the spot
    assert f"{f}:8:11: rule #1 b: unknown action 'reboot_world'" in text
    assert f"{f}:9:13: rule #1 b: priority must be an integer 0-255" in text
    assert "duplicate rule_id 'a'" in text
    assert "missing sla_threshold" in text


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "no rules"),
        (b"[]", "no rules"),
        (b"\xff\xfe- x", "not UTF-8"),
        (b"- rule_id: [unclosed", "not valid YAML"),
        (b"version: 1\n", "rules: list"),
    ],
)
def test_bad_files(tmp_path: Path, data: bytes, words: str) -> None:
    f = tmp_path / "r.yaml"
    f.write_bytes(data)
    with pytest.raises(RuleFileError, match=words):
        load_rule_file(f)


def test_oversized_file_refused_before_parsing(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    f.write_bytes(b"#" * (10 * 1024 * 1024 + 1))
    with pytest.raises(RuleFileError, match="limit"):
        load_rule_file(f)
