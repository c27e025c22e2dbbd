"""Rule files (the seed's rule objects, YAML or JSON) -> RuleSet, with every error at once.

Errors name the file, the rule (index and rule_id), the line and column in the file, and
for rule_content the column inside it, with a caret under the spot and a hint. A rule_content
is compiled by ``_compiler.compile_condition``; each of its errors becomes one Problem, placed
in the file through the YAML/JSON quoting (``_value_position``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import RuleError
from ..wire import Action, Param, action_from_name
from ._compiler import compile_condition
from ._ir import Condition
from ._lexer import DURATION_UNITS, ConditionError
from ._model import Rule, RuleSet

MAX_FILE_BYTES = 10 << 20

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)\Z")
_RULE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")
_KNOWN_KEYS = {
    "rule_id",
    "rule_name",
    "rule_content",
    "action",
    "priority",
    "sla_threshold",
    "agents",
    "params",
    "cooldown",
    "escalate",
    "target",
    "board",
    "rearm",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    col: int
    message: str
    rule: str = ""
    content: str = ""
    content_col: int = -1
    hint: str = ""

    def render(self) -> str:
        # line 0: the file as a whole (it cannot be read), no position to give
        where = f"{self.file}:{self.line}:{self.col}" if self.line > 0 else self.file
        text = f"{where}: {self.rule + ': ' if self.rule else ''}{self.message}"
        if self.content and self.content_col >= 0:
            # the content's line holding the spot (a block scalar can span lines), caret below
            first = self.content.rfind("\n", 0, self.content_col) + 1
            last = self.content.find("\n", self.content_col)
            shown = self.content[first : last if last >= 0 else len(self.content)]
            pad = "".join(c if c == "\t" else " " for c in shown[: self.content_col - first])
            text += f"\n    {shown}\n    {pad}^"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class RuleFileError(RuleError):
    """All the problems found in one rule file."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


def parse_duration(text: str) -> int:
    """``250ms``, ``10s``, ``1.5m``, ``2h`` -> nanoseconds. Raises ValueError."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration: use a number with ms, s, m or h")
    return round(float(m.group(1)) * DURATION_UNITS[m.group(2)])


def parse_condition(text: str) -> Condition:
    """The former name of :func:`compile_condition`, kept for existing callers."""
    return compile_condition(text)


def load_rule_file(path: Path | str) -> RuleSet:
    """Read and check a rule file; raise RuleFileError listing every problem."""
    return parse_rule_text(read_source(path), str(path))


def read_source(path: Path | str) -> str:
    """A YAML/JSON source file's text: at most MAX_FILE_BYTES of UTF-8, else RuleFileError
    with the one Problem (also used for the bridge's device profiles)."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RuleFileError([Problem(name, 0, 0, f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise RuleFileError(
            [Problem(name, 1, 1, f"file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")]
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RuleFileError(
            [Problem(name, line, 1, "not UTF-8 text", hint="save the file as UTF-8")]
        ) from None


def compose_source(text: str, name: str) -> Any:
    """The YAML node tree of ``text`` (every node carries its line and column; None for an
    empty file), or RuleFileError placing the syntax error."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise RuleFileError([_yaml_problem(name, exc)]) from None


def parse_rule_text(text: str, name: str = "<rules>") -> RuleSet:
    root = compose_source(text, name)
    if root is None:
        raise RuleFileError(
            [
                Problem(
                    name,
                    1,
                    1,
                    "the file holds no rules",
                    hint="a list of rule objects, or a mapping with rules:",
                )
            ]
        )
    problems: list[Problem] = []
    version, description = 0, ""
    custom: tuple[str, ...] = ()
    rules_node: Any = root
    if isinstance(root, yaml.MappingNode):
        top = {k.value: v for k, v in root.value}
        rules_node = top.get("rules")
        if rules_node is None:
            raise RuleFileError([Problem(name, 1, 1, "a mapping needs a rules: list")])
        data = yaml.safe_load(text)
        version = data.get("version", 0)
        description = str(data.get("description", "") or "")
        custom = tuple(str(a) for a in data.get("actions", []) or [])
        if not isinstance(version, int) or version < 0:
            problems.append(_at(name, top["version"], "version must be a non-negative integer"))
            version = 0
    if not isinstance(rules_node, yaml.SequenceNode):
        raise RuleFileError([_at(name, rules_node, "rules must be a list of rule objects")])
    if not rules_node.value:
        raise RuleFileError([_at(name, rules_node, "the file holds no rules")])
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, node in enumerate(rules_node.value):
        rule = _rule(name, text, index, node, custom, problems)
        rid_node = (
            dict((k.value, v) for k, v in node.value).get("rule_id")
            if isinstance(node, yaml.MappingNode)
            else None
        )
        rid = getattr(rid_node, "value", None)
        if isinstance(rid, str) and rid in seen:
            problems.append(
                _at(
                    name,
                    rid_node,
                    f"duplicate rule_id {rid!r} (first at rule #{seen[rid]})",
                    f"rule #{index} {rid}",
                )
            )
            continue
        if isinstance(rid, str):
            seen[rid] = index
        if rule is not None:
            rules.append(rule)
    if problems:
        raise RuleFileError(problems)
    return RuleSet(tuple(rules), version=version, description=description, custom_actions=custom)


def _yaml_problem(name: str, exc: yaml.YAMLError) -> Problem:
    """Placed where the mistake starts: an unclosed quote is reported at the quote, where
    PyYAML notices it only at the end of the file (its "context" mark)."""
    problem = getattr(exc, "problem", None) or str(exc)
    found, opened = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None)
    if opened is not None and context:
        message = f"not valid YAML/JSON: {context.removeprefix('while ')} that starts here: {problem}"
        if found is not None and found.line != opened.line:
            message += f" (line {found.line + 1})"
        return Problem(name, opened.line + 1, opened.column + 1, message, hint=_yaml_hint(problem))
    line, col = (found.line + 1, found.column + 1) if found is not None else (1, 1)
    return Problem(name, line, col, f"not valid YAML/JSON: {problem}", hint=_yaml_hint(problem))


def _yaml_hint(problem: str) -> str:
    if "end of stream" in problem:
        return "a quote or bracket opened here is never closed"
    return ""


def problem_at(name: str, node: Any, message: str, rule: str = "", hint: str = "") -> Problem:
    """A Problem placed at the start of YAML ``node`` (from :func:`compose_source`)."""
    mark = node.start_mark
    return Problem(name, mark.line + 1, mark.column + 1, message, rule=rule, hint=hint)


_at = problem_at


def _rule(
    name: str,
    source: str,
    index: int,
    node: Any,
    custom: tuple[str, ...],
    problems: list[Problem],
) -> Rule | None:
    if not isinstance(node, yaml.MappingNode):
        problems.append(_at(name, node, f"rule #{index} must be an object"))
        return None
    nodes = {k.value: v for k, v in node.value}
    values = yaml.safe_load(yaml.serialize(node))
    rid = values.get("rule_id")
    label = f"rule #{index}" + (f" {rid}" if rid else "")
    before = len(problems)

    def bad(key: str, message: str, hint: str = "") -> None:
        problems.append(_at(name, nodes.get(key, node), message, label, hint))

    key_nodes = {k.value: k for k, _ in node.value}
    meant: set[str] = set()  # required keys a misspelling stands for: not also "missing"
    for key in nodes:
        if key not in _KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), sorted(_KNOWN_KEYS), n=1, cutoff=0.6)
            meant.update(close)
            problems.append(
                _at(
                    name,
                    key_nodes[key],
                    f"unknown key {key!r}" + (f" (did you mean {close[0]}?)" if close else ""),
                    label,
                    "" if close else "keys: " + ", ".join(sorted(_KNOWN_KEYS)),
                )
            )
    for key in ("rule_id", "rule_content", "action", "priority", "sla_threshold"):
        if key not in nodes and key not in meant:
            problems.append(_at(name, node, f"missing {key}", label))
    if not isinstance(rid, str) or not _RULE_ID_RE.match(rid):
        if "rule_id" in nodes:
            bad("rule_id", "rule_id must be 1-128 characters of letters, digits, _ . : -")
    board = values.get("board", False)
    if not isinstance(board, bool):
        bad("board", f"board must be true or false, not {board!r}")
        board = False

    def condition(key: str, text: Any, what: str) -> Condition | None:
        if not isinstance(text, str):
            bad(key, f"{key} must be text like {what!r}")
            return None
        try:
            return compile_condition(text, board=board)
        except ConditionError as exc:
            cnode = nodes[key]
            for d in exc.errors:
                line, col = _value_position(source, cnode, text, d.column)
                problems.append(Problem(name, line, col, d.message, label, text, d.column, d.hint))
            return None

    cond = None
    content = values.get("rule_content")
    if "rule_content" in nodes:
        cond = condition("rule_content", content, "cpu_usage > 0.9 for 10s")
    rearm, rearm_content = None, ""
    if "rearm" in nodes:
        rearm_content = values.get("rearm")
        rearm = condition("rearm", rearm_content, "cpu_usage < 0.7 for 30s")
    action, custom_action = Action.UNSPECIFIED, ""
    if "action" in nodes:
        action, custom_action = _action(
            values.get("action"), custom, lambda m, h="": bad("action", m, h)
        )
    priority = values.get("priority")
    if "priority" in nodes and (
        not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255
    ):
        bad(
            "priority",
            f"priority must be an integer 0-255, not {priority!r}",
            "higher is more important",
        )
    sla = values.get("sla_threshold")
    if "sla_threshold" in nodes and (
        not isinstance(sla, int | float)
        or isinstance(sla, bool)
        or not math.isfinite(sla)
        or sla <= 0
    ):
        bad(
            "sla_threshold", f"sla_threshold must be a positive number of milliseconds, not {sla!r}"
        )
    agents = values.get("agents", [])
    if isinstance(agents, str):
        agents = [agents]
    if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
        bad("agents", "agents must be a list of glob patterns on agent ids")
        agents = []
    target = values.get("target", [])
    if isinstance(target, str):
        target = [target]
    if not isinstance(target, list) or not all(isinstance(a, str) and a for a in target):
        bad(
            "target",
            f"target must be an agent-id glob or a list of them, not {values.get('target')!r}",
            'e.g. target: "cell-ctl" or target: ["brake-*", "vcu"]',
        )
        target = []
    if board:
        if "agents" in nodes:
            bad(
                "agents",
                "a board rule has no agents: list; its selectors name their agents",
                'write temp{agent="motor-1"} in rule_content and drop agents:',
            )
        if "target" not in nodes:
            problems.append(
                _at(
                    name,
                    nodes.get("board", node),
                    "a board rule needs a target: the agent(s) its instruction goes to",
                    label,
                    'add target: "cell-ctl" (an agent id or glob, or a list)',
                )
            )
    params: list[Param] = []
    raw_params = values.get("params", {}) or {}
    if not isinstance(raw_params, dict):
        bad("params", "params must be a flat mapping of name -> number, boolean or text")
    else:
        for key, val in raw_params.items():
            if not isinstance(val, int | float | str | bool):
                bad("params", f"param {key!r} must be a number, boolean or text")
            elif isinstance(val, float) and not math.isfinite(val):
                bad("params", f"param {key!r} is {val}; numbers must be finite")
            else:
                # numbers travel as doubles: 2 and 2.0 are the same parameter (and hash)
                number = isinstance(val, int | float) and not isinstance(val, bool)
                params.append(Param(str(key), float(val) if number else val))
    cooldown = 0
    if "cooldown" in nodes:
        try:
            cooldown = parse_duration(str(values["cooldown"]))
        except ValueError as exc:
            bad("cooldown", str(exc))
    escalate, escalate_custom = Action.UNSPECIFIED, ""
    if values.get("escalate"):
        escalate, escalate_custom = _action(
            values["escalate"], custom, lambda m, h="": bad("escalate", m, h)
        )
    if len(problems) > before or cond is None or ("rearm" in nodes and rearm is None):
        return None
    return Rule(
        rule_id=rid,
        condition=cond,
        action=action,
        priority=priority,
        sla_ms=float(sla),
        name=str(values.get("rule_name", "") or ""),
        content=content,
        custom_action=custom_action,
        agents=tuple(agents),
        params=tuple(params),
        cooldown_ns=cooldown,
        escalate=escalate,
        escalate_custom=escalate_custom,
        target=tuple(target),
        board=board,
        rearm=rearm,
        rearm_content=rearm_content if rearm is not None else "",
    )


def _value_position(source: str, node: Any, value: str, index: int) -> tuple[int, int]:
    """1-based (line, column) in ``source`` of character ``index`` of the scalar ``value``
    that ``node`` was read from (``index == len(value)``: just past its last character).

    The value's characters appear in the source in order, separated only by what YAML and
    JSON add around them: quotes, doubled single quotes, backslash escapes in double quotes,
    block headers, indentation and folded line breaks. So walk both in step, skipping source
    characters until the next value character appears.
    """
    j, end = node.start_mark.index, node.end_mark.index
    style = node.style
    if style in ("'", '"'):
        j += 1
    elif style in ("|", ">"):
        nl = source.find("\n", j, end)
        j = end if nl < 0 else nl + 1
    pos = j
    for ch in value[: index + 1]:
        pos = -1
        while j < end:
            if style == '"' and source[j] == "\\":
                if source[j + 1 : j + 2] in ("\n", "\r"):  # an escaped line break: no character
                    j += 2
                    continue
                pos, j = j, j + 2 + _ESCAPE_LENGTH.get(source[j + 1 : j + 2], 0)
                break
            if style == "'" and ch == "'" and source.startswith("''", j):
                pos, j = j, j + 2
                break
            if source[j] == ch:
                pos, j = j, j + 1
                break
            j += 1
        if pos < 0:  # not found (cannot happen for a value YAML read from here): best effort
            pos = j
    if index >= len(value):
        pos = j
    line = source.count("\n", 0, pos) + 1
    return line, pos - (source.rfind("\n", 0, pos) + 1) + 1


_ESCAPE_LENGTH = {"x": 2, "u": 4, "U": 8}
"""Hex digits after a double-quoted ``\\x``, ``\\u`` or ``\\U`` escape."""


def _action(value: Any, custom: tuple[str, ...], bad: Any) -> tuple[Action, str]:
    if not isinstance(value, str):
        bad(f"action must be text, not {value!r}")
        return Action.UNSPECIFIED, ""
    try:
        return action_from_name(value), ""
    except ValueError:
        if value in custom:
            return Action.CUSTOM, value
        bad(
            f"unknown action {value!r}",
            "built-in: restart_agent, stop_agent, pause_agent, resume_agent, "
            "throttle, set_param, alert, safe_state; others must be listed under actions:",
        )
        return Action.UNSPECIFIED, ""
