"""The normalised rule model: what a rule file compiles to and a RuleTable carries."""

from __future__ import annotations

import dataclasses
import json

from .._digest import sha256
from ..wire import Action, Param, action_name
from ._ir import Condition


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    condition: Condition
    action: Action
    priority: int
    """0-255, higher is more important; ties keep file order."""
    sla_ms: float
    """From the triggering sample's t_ns to the agent's Ack.t_done_ns."""
    name: str = ""
    content: str = ""
    custom_action: str = ""
    agents: tuple[str, ...] = ()
    """Glob patterns on agent_id; empty means every agent."""
    params: tuple[Param, ...] = ()
    cooldown_ns: int = 0
    escalate: Action = Action.UNSPECIFIED
    escalate_custom: str = ""
    target: tuple[str, ...] = ()
    """Glob patterns on agent_id: the instruction goes to every known agent matching one
    (each once, agent-id order), carrying the firing agent as its source. Empty: to the agent
    whose instance fired ("self")."""
    board: bool = False
    """One evaluation context for the whole board; selectors name agents with ``agent="id"``."""
    rearm: Condition | None = None
    """When a disarmed instance becomes armed again; None: when its condition is not true."""
    rearm_content: str = ""
    """The author's text of ``rearm``, for display only."""

    @property
    def action_name(self) -> str:
        return action_name(self.action, self.custom_action)

    def normalised(self) -> dict[str, object]:
        """Everything that changes behaviour, in a canonical form (for hashes and carry-over)."""
        out: dict[str, object] = {
            "rule_id": self.rule_id,
            "condition": self.condition.text(),
            "action": self.action_name,
            "priority": self.priority,
            "sla_ms": self.sla_ms,
            "agents": list(self.agents),
            "params": [[p.key, p.value] for p in self.params],
            "cooldown_ns": self.cooldown_ns,
            "escalate": action_name(self.escalate, self.escalate_custom)
            if self.escalate != Action.UNSPECIFIED
            else "",
        }
        # keys added by schema 3 appear only when used, so a schema-2 table keeps its hash
        if self.target:
            out["target"] = list(self.target)
        if self.board:
            out["board"] = True
        if self.rearm is not None:
            out["rearm"] = self.rearm.text()
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    """A whole table: rules in file order, plus identity."""

    rules: tuple[Rule, ...]
    version: int = 0
    description: str = ""
    custom_actions: tuple[str, ...] = ()
    created_at_unix_ms: int = 0

    @property
    def content_hash(self) -> bytes:
        """SHA-256 over every rule field, display text included (not version or description)."""
        doc = json.dumps(
            [
                {**r.normalised(), "name": r.name, "content": r.content}
                | ({"rearm_content": r.rearm_content} if r.rearm_content else {})
                for r in self.rules
            ]
            + [list(self.custom_actions)],
            sort_keys=True,
        )
        return sha256(doc.encode()).digest()
