"""Checking YAML source files node by node, every mistake kept as a placed Problem: the base
of the rule files' siblings (the bridge's device profiles, the HIL rig's scenarios).

A subclass walks its format with these helpers; each helper records a Problem at the node
(file:line:col, with a hint) and returns a harmless value, so one pass finds every mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._source import Problem, parse_duration, problem_at

MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"


def plain_value(node: Any) -> Any:
    """The Python value of a YAML node (scalars typed as YAML 1.1 SafeLoader would)."""
    return yaml.safe_load(yaml.serialize(node))


class NodeChecker:
    def __init__(self, name: str, base: Path):
        self.name = name
        self.base = base
        self.problems: list[Problem] = []

    def bad(self, node: Any, message: str, hint: str = "", where: str = "") -> None:
        self.problems.append(problem_at(self.name, node, message, where, hint))

    def mapping(
        self, node: Any, what: str, known: set[str] | None, where: str = ""
    ) -> dict[str, Any]:
        """The mapping's keys -> value nodes ({} for None); ``known`` None: any key."""
        if node is None:
            return {}
        if node.tag != MAP_TAG:
            self.bad(node, f"{what} must be a mapping", where=where)
            return {}
        out = {k.value: v for k, v in node.value}
        for k, _ in node.value:
            if known is not None and k.value not in known:
                self.bad(
                    k,
                    f"unknown key {k.value!r} in {what}",
                    "keys: " + ", ".join(sorted(known)),
                    where,
                )
        return out

    def seq(self, node: Any, what: str, where: str = "") -> list[Any]:
        """The list's item nodes ([] for None)."""
        if node is None:
            return []
        if node.tag != SEQ_TAG:
            self.bad(node, f"{what} must be a list", where=where)
            return []
        return list(node.value)

    def number(
        self, node: Any, what: str, where: str = "", *, integer: bool = False
    ) -> float | None:
        v = plain_value(node)
        ok = isinstance(v, int) if integer else isinstance(v, int | float)
        if not ok or isinstance(v, bool):
            self.bad(
                node,
                f"{what} must be {'an integer' if integer else 'a number'}, not {v!r}",
                where=where,
            )
            return None
        return v

    def text(self, node: Any, what: str, where: str = "") -> str:
        v = plain_value(node)
        if not isinstance(v, str) or not v:
            self.bad(node, f"{what} must be text, not {v!r}", where=where)
            return ""
        return v

    def duration(self, node: Any, what: str, where: str = "", *, zero: bool = False) -> int:
        """A duration with its unit (250ms, 2s) in ns; > 0 unless ``zero``."""
        v = plain_value(node)
        try:
            if not isinstance(v, str):
                raise ValueError(f"{v!r} has no unit: write e.g. 250ms or 2s")
            ns = parse_duration(v)
            if ns < 0 or (ns == 0 and not zero):
                raise ValueError("must be > 0")
            return ns
        except ValueError as exc:
            self.bad(node, f"{what}: {exc}", where=where)
            return 0
