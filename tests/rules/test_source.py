from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rules import (
    Problem,
    RuleFileError,
    load_rule_file,
    parse_condition,
    parse_duration,
    parse_rule_text,
)
from edge.rules._compiler import compile_condition
from edge.rules._ir import NodeOp
from edge.rules._lexer import ConditionError
from edge.rules._source import _value_position
from edge.wire import Action

from ..support import SEED_RULE

SEED = SEED_RULE


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


# -- rule_content errors placed in the file -----------------------------------------------------


def _problems(text: str) -> list[Problem]:
    with pytest.raises(RuleFileError) as info:
        parse_rule_text(text, "r.yaml")
    return info.value.problems


def _rule_with(content_line: str) -> str:
    return f"- rule_id: r\n  {content_line}\n  action: alert\n  priority: 1\n  sla_threshold: 5\n"


@pytest.mark.parametrize(
    ("content_line", "line", "col"),
    [
        # `$` is the first error in each; line 2 unless the value spans lines
        ("rule_content: cpu > 0.9 $", 2, 27),
        ("rule_content: 'cpu > 0.9 $'", 2, 28),
        ("rule_content: 'x{a=\"it''s\"} > 0.9 $'", 2, 37),
        ('rule_content: "x{a=\\"1\\"} > 0.9 $"', 2, 35),
        ('rule_content: "x{a=\\u0022b\\"} > 0.9 $"', 2, 39),
        ("rule_content: |\n    cpu > 0.9 and\n      mem > 1 $", 4, 15),
        ("rule_content: >-\n    cpu > 0.9 and\n    mem > 1 $", 4, 13),
        ("rule_content: cpu > 0.9 and\n    mem > 1 $", 3, 13),
        ('rule_content: "cpu > 0.9 and \\\n    mem > 1 $"', 3, 13),
    ],
)
def test_condition_error_column_in_the_file_through_quoting(
    content_line: str, line: int, col: int
) -> None:
    (p,) = _problems(_rule_with(content_line))
    assert (p.line, p.col) == (line, col), p.render()
    assert p.content[p.content_col] == "$"
    assert p.message == "unexpected character '$'"


def test_condition_error_in_json() -> None:
    text = (
        '[{"rule_id": "j", "rule_content": "cpu{core=\\"0\\"} > 0.9 junk",'
        ' "action": "alert", "priority": 1, "sla_threshold": 5}]'
    )
    (p,) = _problems(text)
    assert text[p.col - 1 : p.col + 3] == "junk"
    assert p.render() == (
        "r.yaml:1:58: rule #0 j: unexpected 'junk' after the condition\n"
        '    cpu{core="0"} > 0.9 junk\n'
        "                        ^\n"
        "    hint: join conditions with and / or"
    )


def test_every_condition_error_of_every_rule_in_one_report() -> None:
    text = """\
- rule_id: speed
  rule_content: avg(speed_kmh{axle="front"}, 10) > 120 and median(rpm, 5s) > 1 for 5
  action: alert
  priority: 5
  sla_threshold: 20
- rule_id: oil
  rule_content: |
    oil_temp > 130 and
      (oil_pressure < 1.5 for 2s)
  action: safe_state
  priority: 300
  sla_threshold: 5
"""
    probs = _problems(text)
    got = [(p.line, p.col, p.rule, p.message) for p in probs]
    assert got == [
        (2, 46, "rule #0 speed", "10 has no unit, but 'avg' needs a duration"),
        (2, 60, "rule #0 speed", "unknown function 'median'"),
        (2, 84, "rule #0 speed", "5 has no unit, but 'for' needs a duration"),
        (9, 27, "rule #1 oil", "'for' is only allowed at the end of the whole condition"),
        (11, 13, "rule #1 oil", "priority must be an integer 0-255, not 300"),
    ]
    # the caret of a block scalar's error is shown under its own line
    assert probs[3].render() == (
        "r.yaml:9:27: rule #1 oil: 'for' is only allowed at the end of the whole condition\n"
        "      (oil_pressure < 1.5 for 2s)\n"
        "                          ^\n"
        "    hint: for comes last and holds the whole condition: a > 1 and b < 2 for 5s; "
        "holding only part of a condition is not supported"
    )
    assert probs[1].hint.startswith("did you mean min?")


_VALUE_CHARS = st.text(
    alphabet=st.sampled_from(list("ab c>{}=,()'\"\\\té#:-9")), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None)
@given(
    _VALUE_CHARS,
    st.sampled_from([None, "'", '"', "|", ">", "json", "json-ascii"]),
    st.sampled_from([12, 80]),
)
def test_value_position_finds_each_character_in_the_source(
    value: str, style: str | None, width: int
) -> None:
    doc = [{"rule_content": value}]
    if style == "json":
        source = json.dumps(doc, ensure_ascii=False)
    elif style == "json-ascii":
        source = json.dumps(doc)
    else:
        source = yaml.dump(doc, default_style=style, width=width, allow_unicode=width > 20)
    root = yaml.compose(source, Loader=yaml.SafeLoader)
    node = root.value[0].value[0][1]
    assert node.value == value
    line_starts = [0] + [i + 1 for i, ch in enumerate(source) if ch == "\n"]
    prev = -1
    for i, ch in enumerate(value):
        line, col = _value_position(source, node, value, i)
        at = line_starts[line - 1] + col - 1
        assert at > prev  # in order
        prev = at
        if not ch.isspace():  # folded white space has no one source character
            assert source[at] == ch or (node.style == '"' and source[at] == "\\"), (i, source)
    line, col = _value_position(source, node, value, len(value))
    assert line_starts[line - 1] + col - 1 > prev


def test_a_misspelt_field_gets_did_you_mean_at_the_key_and_no_missing_noise() -> None:
    text = "- rule_id: a\n  rule_contnet: x > 1\n  action: alert\n  priority: 1\n  sla_threshold: 5\n"
    with pytest.raises(RuleFileError) as info:
        parse_rule_text(text, "r.yaml")
    (p,) = info.value.problems
    assert (p.line, p.col) == (2, 3)
    assert "unknown key 'rule_contnet' (did you mean rule_content?)" in p.message


def test_an_unclosed_quote_is_reported_where_it_opens() -> None:
    text = '- rule_id: a\n  rule_content: "x > 1\n  action: alert\n  priority: 1\n'
    with pytest.raises(RuleFileError) as info:
        parse_rule_text(text, "r.yaml")
    (p,) = info.value.problems
    assert (p.line, p.col) == (2, 17) and "never closed" in p.render()


def test_an_unreadable_file_has_no_made_up_position(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError) as info:
        load_rule_file(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
