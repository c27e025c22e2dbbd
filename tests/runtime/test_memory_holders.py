"""What kept RSS up after a burst (issue 9, "back within 10 % of steady a minute after"): long-
lived objects made in the middle of the burst pin pymalloc's arenas, which are freed only when
empty. Each holder found has a test here that fails if it comes back."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from edge.runtime import Edged
from edge.runtime._events import EventRing
from edge.runtime._memory import MemoryWatch
from edge.runtime._registry import SHRINK_FROM, AgentRecord, Registry

from ..support import RawPeer, wait_for


def _blocks_after(fn: Any) -> int:
    """Python's allocated blocks after ``fn()`` minus before (the objects it left alive)."""
    before = sys.getallocatedblocks()
    fn()
    return sys.getallocatedblocks() - before


def test_events_leave_no_objects_alive() -> None:
    """The ring of 4,096 tuples kept ~7 objects per event (tuple, ints, detail, agent id)."""
    ring = EventRing(4096)

    def burst() -> None:
        for i in range(20_000):
            ring.append(10**12 + i, "agent_registered", f"churn-{i}", "", 10**15 + i,
                        f"{i % 7} series")

    burst()  # the first pass touches the ring's pages and warms what struct caches
    assert _blocks_after(burst) < 100  # a tuple ring: +~28,000


def test_the_ring_keeps_the_last_events_in_order() -> None:
    ring = EventRing(8)
    for i in range(1, 21):
        assert ring.append(i, "k", f"a{i}", "r", i * 10, f"d{i}") == i
    got = ring.after(0)
    assert [e["seq"] for e in got] == list(range(13, 21)) and len(ring) == 8
    assert got[-1] == {"seq": 20, "wall_ms": 20, "kind": "k", "agent_id": "a20", "rule_id": "r",
                       "instruction_id": 200, "detail": "d20"}
    assert [e["seq"] for e in ring.after(15, limit=2)] == [16, 17]
    assert ring.after(20) == [] and EventRing(4).after(0) == []


def test_a_long_detail_is_cut_at_the_slot() -> None:
    ring = EventRing(2, slot_bytes=400)
    ring.append(1, "bad_input", "x" * 300, "r" * 300, 0, "é" * 500)
    ev = ring.after(0)[0]
    assert ev["agent_id"] == "x" * 128 and ev["rule_id"] == "r" * 128
    assert ev["detail"].endswith("…") and set(ev["detail"][:-1]) == {"é"}
    with pytest.raises(ValueError):
        EventRing(2, slot_bytes=100)


def test_edged_tails_events_from_the_ring(edged: Edged, run_dir: Any) -> None:
    assert edged.loop is not None and isinstance(edged.loop.events, EventRing)
    p = RawPeer(run_dir, b"holders#1")
    try:
        p.hello("ring-agent")
        wait_for(lambda: any(e["agent_id"] == "ring-agent" for e in edged.loop.events_after(0)),
                 5, "the agent's event")
    finally:
        p.close()
    assert edged.loop.event_seq == edged.loop.events.seq >= 1


def _rec(i: int) -> AgentRecord:
    return AgentRecord(f"a{i}", i + 1, b"r", [], kind="t", pid=1, heartbeat_ms=100, now_ns=0,
                       wall_ms=0)


def test_the_registry_gives_back_its_table_when_agents_are_forgotten() -> None:
    """A dict keeps its table after its entries are deleted: 100,000 lost agents, forgotten,
    left the registry's two dicts at their peak size for good."""
    reg = Registry()
    empty = sys.getsizeof(reg.by_id) + sys.getsizeof(reg.by_session)
    recs = [_rec(i) for i in range(20 * SHRINK_FROM)]
    for r in recs:
        reg.add(r)
    peak = sys.getsizeof(reg.by_id) + sys.getsizeof(reg.by_session)
    for r in recs[:-3]:
        assert reg.forget(r)
    assert list(reg.by_id) == ["a20477", "a20478", "a20479"] and len(reg.by_session) == 3
    assert sys.getsizeof(reg.by_id) + sys.getsizeof(reg.by_session) < max(empty * 4, peak // 50)


def test_memory_watch_settles_after_a_burst_under_its_margin() -> None:
    """A burst under mem_trim_margin_bytes (churn: ~8 MB) left its free memory for good."""
    now = [0.0]
    rss = [100]
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(pad)
        rss[0] -= 6  # what the allocator gives back
        return 1

    m = MemoryWatch(1000, read_rss=lambda: rss[0], trim=trim, settle_margin=5, quiet_s=5.0,
                    clock=lambda: now[0])

    def at(t: float, value: int) -> None:
        now[0], rss[0] = t, value
        m.tick()

    at(1, 104)  # within the settle margin
    at(2, 112)  # growing: a burst goes on
    at(6, 112)  # 4 s quiet: not yet
    assert not trims
    at(7.5, 112)  # 5.5 s without growth, 12 above its level: one trim
    assert trims == [0] and m.settles == 1 and m.rss == 106
    at(20, 106)
    at(40, 110)  # 4 above the level after the settle: nothing
    assert m.settles == 1 and m.snapshot()["settles"] == 1


def test_memory_watch_settle_margin_zero_never_settles() -> None:
    m = MemoryWatch(0, read_rss=lambda: 10**9, trim=lambda pad: pytest.fail("trimmed"),
                    settle_margin=0, clock=lambda: 10**6)
    m.tick()
    assert m.settles == 0
