"""The loop's event ring (``edgectl tail``): the last ``capacity`` events in one fixed block.

A ring of Python tuples kept ~7 small objects per event alive (the tuple, its ints, the detail
string, the agent id it outlived its record by). Allocated in the middle of a burst (100,000
agents churned, a fuzz flood), the last 4,096 of them sat scattered over pymalloc's 1 MiB
arenas, each arena freed only when it is empty: ~5 MB of RSS stayed after the burst for ~1 MB
of live events, and malloc_trim cannot give back what pymalloc holds. Here an event is packed
into a fixed slot of one anonymous mmap made at start (its pages resident only once written),
so recording an event allocates nothing that outlives the call.

Each slot: seq, wall_ms, instruction id, the lengths of kind, agent id and rule id (one byte
each: longer ones are cut at 32, 128 and 128 bytes) and of the detail, then their UTF-8 bytes; a detail that does not
fit is cut at the slot's end (an event is for people: ``"... "`` marks the cut). One writer
(the loop thread); readers on any thread copy a slot with one call (atomic under the GIL) and
check its seq, so an event overwritten meanwhile is skipped, never torn.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

_HEAD = struct.Struct("<QqqBBBH")
KEYS = ("seq", "wall_ms", "kind", "agent_id", "rule_id", "instruction_id", "detail")
_CUT = "…".encode()
_KIND, _ID = 32, 128
"""At most this many bytes of the kind, and of the agent and rule ids (valid ids are shorter)."""
_IDS = _KIND + 2 * _ID


def _cut(s: str, limit: int) -> bytes:
    b = s.encode("utf-8", "replace")
    return b if len(b) <= limit else b[:limit]


class EventRing:
    """The last ``capacity`` events, ``slot_bytes`` each (see the module doc)."""

    __slots__ = ("capacity", "seq", "_slot", "_mm", "_pack", "_payload")

    def __init__(self, capacity: int = 4096, slot_bytes: int = 320):
        if capacity < 1 or slot_bytes < _HEAD.size + _IDS + len(_CUT):
            raise ValueError(f"an event ring needs capacity >= 1 and slots of >= "
                             f"{_HEAD.size + _IDS + len(_CUT)} bytes")
        self.capacity = capacity
        self.seq = 0
        """The newest event's sequence number (0: none yet)."""
        self._slot = slot_bytes
        self._payload = slot_bytes - _HEAD.size
        self._pack = struct.Struct(f"<QqqBBBH{self._payload}s").pack_into
        self._mm = mmap.mmap(-1, capacity * slot_bytes)  # zero pages: resident once written

    def append(self, wall_ms: int, kind: str, agent_id: str, rule_id: str, iid: int,
               detail: str) -> int:
        """Record an event; returns its sequence number (1, 2, ...)."""
        k, a, r = _cut(kind, _KIND), _cut(agent_id, _ID), _cut(rule_id, _ID)
        room = self._payload - len(k) - len(a) - len(r)
        d = detail.encode("utf-8", "replace")
        if len(d) > room:
            d = d[: max(0, room - len(_CUT))] + _CUT
        self.seq += 1
        seq = self.seq
        self._pack(self._mm, ((seq - 1) % self.capacity) * self._slot, seq, wall_ms, iid,
                   len(k), len(a), len(r), len(d), k + a + r + d)
        return seq

    def _read(self, seq: int) -> dict[str, Any] | None:
        off = ((seq - 1) % self.capacity) * self._slot
        raw = self._mm[off : off + self._slot]  # one copy: the writer cannot tear it
        s, wall_ms, iid, lk, la, lr, ld = _HEAD.unpack_from(raw)
        if s != seq:
            return None  # overwritten since (the reader fell a whole ring behind)
        p = _HEAD.size
        text = [raw[p : p + lk], raw[p + lk : p + lk + la], raw[p + lk + la : p + lk + la + lr],
                raw[p + lk + la + lr : p + lk + la + lr + ld]]
        kind, agent_id, rule_id, detail = (t.decode("utf-8", "ignore") for t in text)
        return dict(zip(KEYS, (seq, wall_ms, kind, agent_id, rule_id, iid, detail),
                        strict=True))

    def after(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Events newer than ``seq``, oldest first, at most ``limit`` (any thread)."""
        newest = self.seq
        first = max(seq + 1, newest - self.capacity + 1, 1)
        out = []
        for s in range(first, min(newest, first + limit - 1) + 1):
            ev = self._read(s)
            if ev is not None:
                out.append(ev)
        return out

    def __len__(self) -> int:
        return min(self.seq, self.capacity)

    def close(self) -> None:
        self._mm.close()
