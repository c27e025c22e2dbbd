"""An agent's lifecycle as an explicit state machine.

::

    (Hello) --> ACTIVE --(missed beats)--> LOST --(any message)--> ACTIVE
                  |  \\                      |
                  |   +----(Bye)---> GONE <--+--(Bye)
                  +--(Hello again on a new connection after the old one died)--> ACTIVE (new session)
"""

from __future__ import annotations

import enum


class AgentState(enum.Enum):
    ACTIVE = "active"
    LOST = "lost"
    GONE = "gone"


_ALLOWED = {
    (AgentState.ACTIVE, AgentState.LOST),
    (AgentState.ACTIVE, AgentState.GONE),
    (AgentState.LOST, AgentState.ACTIVE),
    (AgentState.LOST, AgentState.GONE),
}


def check_transition(old: AgentState, new: AgentState) -> None:
    """Raise ValueError for a transition the machine does not have (a coding error)."""
    if (old, new) not in _ALLOWED:
        raise ValueError(f"agent state {old.value} -> {new.value} is not a transition")
