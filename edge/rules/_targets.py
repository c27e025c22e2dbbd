"""Where a rule's instruction goes: the agents its ``target`` globs match, bounded.

One instruction per matching known agent, each once, in agent-id order. A glob can match a
whole fleet, so the fan-out is capped at ``MAX_TARGETS`` per firing: the first that many ids
in order get the instruction and the rest are counted (edged: ``instructions_targets_cut``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

MAX_TARGETS = 64
"""Instructions one firing may send; the agents beyond it (in id order) are cut and counted."""


def resolve_targets(
    globs: tuple[str, ...], known: Iterable[str], cap: int = MAX_TARGETS
) -> tuple[list[str], int]:
    """The agent ids in ``known`` matching any of ``globs`` (case-sensitive), sorted and each
    once, at most ``cap`` of them; and how many more matched (cut)."""
    hits = sorted({a for a in known if any(fnmatch.fnmatchcase(a, g) for g in globs)})
    return hits[:cap], max(0, len(hits) - cap)
