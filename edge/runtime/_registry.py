"""The agent registry: who is connected, their series, sessions, and rule bindings."""

from __future__ import annotations

import heapq
import re
from typing import Any

from ..rules import AgentEval
from ._lifecycle import AgentState, check_transition

AGENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
METRIC_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]{0,127}\Z")


HEALTH_PREFIX = "health_"
"""Series an agent names ``health_<what>`` report its own health (see AgentRecord.health)."""


class AgentRecord:
    """One agent as the loop sees it. Mutated only on the loop thread."""

    __slots__ = (
        "agent_id",
        "session",
        "routing_id",
        "state",
        "kind",
        "pid",
        "heartbeat_ms",
        "series",
        "eval",
        "first_seen_ns",
        "last_seen_ns",
        "registered_wall_ms",
        "samples",
        "batches",
        "instructions",
        "acks",
        "last_batch_seq",
        "batch_gaps",
        "timeouts_in_row",
        "stalled_until_ns",
        "stall_backoff_ns",
        "stall_probe",
        "suppressed",
    )

    def __init__(
        self,
        agent_id: str,
        session: int,
        routing_id: bytes,
        series: list[tuple[int, str, tuple[tuple[str, str], ...]]],
        *,
        kind: str,
        pid: int,
        heartbeat_ms: int,
        now_ns: int,
        wall_ms: int,
    ):
        self.agent_id = agent_id
        self.session = session
        self.routing_id = routing_id
        self.state = AgentState.ACTIVE
        self.kind = kind
        self.pid = pid
        self.heartbeat_ms = heartbeat_ms
        self.series = series
        self.eval: AgentEval | None = None
        """The agent's rule evaluator under the active table (set at registration)."""
        self.first_seen_ns = now_ns
        self.last_seen_ns = now_ns
        self.registered_wall_ms = wall_ms
        self.samples = 0
        self.batches = 0
        self.instructions = 0
        self.acks = 0
        self.last_batch_seq = -1
        self.batch_gaps = 0
        self.timeouts_in_row = 0
        """Ack timeouts since its last Ack."""
        self.stalled_until_ns = 0
        """Stalled (not reading): instructions are suppressed until then; 0: not stalled."""
        self.stall_backoff_ns = 0
        """The current stall's back-off (0: not stalled)."""
        self.stall_probe = 0
        """The instruction sent as the stall's probe, while its fate is open (0: none)."""
        self.suppressed = 0
        """Instructions suppressed in the current stall."""

    @property
    def last_value(self) -> list[float | None]:
        """Latest sample per metric id (None before the first one)."""
        return [st.last_v for st in self.eval.series] if self.eval else [None] * len(self.series)

    def set_state(self, new: AgentState) -> None:
        check_transition(self.state, new)
        self.state = new

    def describe(self, now_ns: int) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "state": self.state.value,
            "kind": self.kind,
            "pid": self.pid,
            "series": len(self.series),
            "last_seen_ms_ago": round((now_ns - self.last_seen_ns) / 1e6, 1),
            "registered_wall_ms": self.registered_wall_ms,
            "samples": self.samples,
            "batches": self.batches,
            "batch_gaps": self.batch_gaps,
            "instructions": self.instructions,
            "acks": self.acks,
            "stalled": bool(self.stall_backoff_ns),
            "rules_bound": self.eval.rules_bound() if self.eval else 0,
            "health": self.health(),
        }

    def health(self) -> dict[str, float]:
        """The latest value of each ``health_*`` series, by name without the prefix: an
        agent's own health (a bridged device's online, errors, ...), shown by ``edgectl
        agents`` and exported as ``edge_agent_health``. Labels are not part of the key."""
        out: dict[str, float] = {}
        if any(name.startswith(HEALTH_PREFIX) for _, name, _ in self.series):
            for (_, name, _), v in zip(self.series, self.last_value, strict=True):
                if v is not None and name.startswith(HEALTH_PREFIX):
                    out[name[len(HEALTH_PREFIX) :]] = v
        return out

    def persistent(self) -> dict[str, Any]:
        """What the store keeps across restarts."""
        return {
            "agent_id": self.agent_id,
            "kind": self.kind,
            "state": self.state.value,
            "pid": self.pid,
            "series": [[name, [list(kv) for kv in labels]] for _, name, labels in self.series],
            "registered_wall_ms": self.registered_wall_ms,
        }


class Registry:
    """Agents by id and by session, with the deadlines that move them through their lifecycle.

    Memory and housekeeping are bounded by the agents that matter now, not by every agent that
    ever connected: a GONE agent is forgotten at once (or after ``keep_gone_ns``), a LOST one
    after ``forget_ns`` of silence, and liveness runs off a deadline heap (each record has at
    most one live entry per kind; a popped entry that is no longer current is dropped or pushed
    again at the record's real deadline), so a turn of housekeeping touches only the records
    whose deadline passed.
    """

    def __init__(self, *, forget_ns: int = 600 * 10**9, keep_gone_ns: int = 0) -> None:
        self.by_id: dict[str, AgentRecord] = {}
        self.by_session: dict[int, AgentRecord] = {}
        self.known: dict[str, dict[str, Any]] = {}
        """Agents recovered from the store: known but not connected since edged started."""
        self.forget_ns = forget_ns
        self.keep_gone_ns = keep_gone_ns
        self._states = dict.fromkeys(AgentState, 0)
        self._heap: list[tuple[int, int, int, AgentRecord]] = []
        self._seq = 0
        self._peak = 0
        """The most records by_id held since it was last rebuilt (see :meth:`forget`)."""

    def add(self, rec: AgentRecord) -> AgentRecord | None:
        """Register ``rec``; returns the record it replaces, if any."""
        old = self.by_id.get(rec.agent_id)
        if old is not None:
            self.by_session.pop(old.session, None)
            self._states[old.state] -= 1
        self.by_id[rec.agent_id] = rec
        self.by_session[rec.session] = rec
        self._peak = max(self._peak, len(self.by_id))
        self._states[rec.state] += 1
        self.known.pop(rec.agent_id, None)
        return old

    def set_state(self, rec: AgentRecord, new: AgentState, now_ns: int) -> None:
        """Move ``rec`` to ``new`` (a transition of the lifecycle) and schedule what follows."""
        old = rec.state
        rec.set_state(new)
        if self.by_id.get(rec.agent_id) is rec:
            self._states[old] -= 1
            self._states[new] += 1
        if new is AgentState.LOST:
            self.schedule(now_ns + self.forget_ns, _FORGET, rec)
        elif new is AgentState.GONE:
            self.by_session.pop(rec.session, None)
            if self.keep_gone_ns:
                self.schedule(now_ns + self.keep_gone_ns, _FORGET, rec)

    def live(self) -> int:
        """Agents that hold a slot: connected (ACTIVE) or silent within their grace (LOST)."""
        return self._states[AgentState.ACTIVE] + self._states[AgentState.LOST]

    def forget(self, rec: AgentRecord) -> bool:
        """Drop ``rec`` if it is still the record for its id; True if it was."""
        if self.by_id.get(rec.agent_id) is not rec:
            return False
        del self.by_id[rec.agent_id]
        self._states[rec.state] -= 1
        if self.by_session.get(rec.session) is rec:
            del self.by_session[rec.session]
        if self._peak >= SHRINK_FROM and len(self.by_id) < self._peak // 4:
            # a dict keeps its table when entries go: 100,000 lost agents forgotten would
            # leave ~10 MB of empty slots for good. Rebuilt at a quarter of the peak: O(1)
            # amortised per forget
            self.by_id, self.by_session = dict(self.by_id), dict(self.by_session)
            self._peak = len(self.by_id)
        return True

    def schedule(self, due_ns: int, kind: int, rec: AgentRecord) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ns, self._seq, kind, rec))

    def due(self, now_ns: int) -> list[tuple[int, int, AgentRecord]]:
        """Pop every deadline <= ``now_ns`` as ``(due_ns, kind, record)``; the caller decides
        whether each is still current (see :data:`LIVENESS`, :data:`FORGET`)."""
        heap = self._heap
        out = []
        while heap and heap[0][0] <= now_ns:
            due, _, kind, rec = heapq.heappop(heap)
            out.append((due, kind, rec))
        return out

    def pending(self) -> int:
        """Deadlines waiting in the heap (for status and tests)."""
        return len(self._heap)

    def counts(self) -> dict[str, int]:
        out = {s.value: n for s, n in self._states.items()}
        out["known_offline"] = len(self.known)
        return out


SHRINK_FROM = 1024
"""The registry's dicts are rebuilt once they fall below a quarter of a peak of this many."""
LIVENESS = 0
"""A deadline kind: the agent's heartbeat grace may have run out."""
FORGET = 1
"""A deadline kind: a LOST (or kept GONE) agent's grace may have run out."""
_FORGET = FORGET
