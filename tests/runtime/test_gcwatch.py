"""GC pauses are measured per generation and attributed to the loop thread."""

from __future__ import annotations

import gc
import threading

from edge.runtime._gcwatch import GcWatch


def test_collections_are_counted_timed_and_attributed_to_their_thread() -> None:
    w = GcWatch().install()
    try:
        gc.collect(2)
        gc.collect(0)
        assert w.collections[2] >= 1 and w.collections[0] >= 1
        assert w.max_ns[2] > 0 and w.total_ns[2] >= w.max_ns[2]
        assert w.on_loop == [0, 0, 0]  # no loop thread named yet

        def loop() -> None:
            w.loop_thread = threading.get_ident()
            gc.collect(1)

        t = threading.Thread(target=loop)
        t.start()
        t.join()
        assert w.on_loop[1] == 1
        snap = w.snapshot()
        assert snap["collections"][1] >= 1 and snap["max_pause_us"][2] > 0
        assert snap["threshold"] == list(gc.get_threshold())
        w.reset()
        assert w.collections == [0, 0, 0] and w.max_ns == [0, 0, 0]
    finally:
        w.uninstall()
        w.uninstall()  # idempotent
    assert w._callback not in gc.callbacks


def test_gc_off_loop_collects_on_its_timer_and_restores_automatic_collection() -> None:
    from edge.runtime._gcwatch import GcOffLoop

    assert gc.isenabled()
    off = GcOffLoop(100, full_every=100, min_young=0).start()
    try:
        assert not gc.isenabled()
        gens = [off.tick(t) for t in range(0, 100 * 100, 100)]
        assert off.tick(9_950) is None  # not due yet
        assert gens.count(2) == 1 and gens.count(1) == 9 and gens.count(0) == 90
        assert gens[9] == 1 and gens[99] == 2
    finally:
        off.stop()
    assert gc.isenabled()
    assert off.tick(10**12) is None  # stopped: no more collections


def test_gc_off_loop_skips_a_young_collection_with_little_to_collect() -> None:
    """Generation 0 only once enough young objects wait; generations 1 and 2 stay on time."""
    from edge.runtime._gcwatch import GcOffLoop

    off = GcOffLoop(100, full_every=100, min_young=10**9).start()
    try:
        gens = [off.tick(t) for t in range(0, 100 * 100, 100)]
        assert gens.count(0) == 0 and off.skipped == 90
        assert gens.count(1) == 9 and gens.count(2) == 1
        off.min_young = 1
        keep = [[] for _ in range(50)]  # young container objects alive at the next tick
        assert off.tick(10_000) == 0 and keep
    finally:
        off.stop()
