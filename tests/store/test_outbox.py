"""The outbox on a real LMDB environment: sequences, reads, deletes, the caps and their
policies, and two processes (an appender and a deleter) sharing it while the map grows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edge.errors import StoreError
from edge.store import Outbox, OutboxPolicy, Store
from edge.store import _outbox as outbox_mod

T0 = 1_700_000_000 * 10**9  # wall ns of the first append in these tests
S = 10**9


def drops(store: Store) -> list[dict[str, Any]]:
    return list(store.iter_audit(kind="outbox_drop"))


def test_sequences_start_at_one_and_survive_a_reopen(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        ob = Outbox(store)
        assert [ob.append(b"a%d" % i, T0 + i) for i in range(3)] == [1, 2, 3]
        assert ob.delete_upto(3) == 3
    with Store.open(state_dir) as store:
        ob = Outbox(store)
        assert ob.stats(T0)["depth"] == 0
        assert ob.append(b"next", T0 + 10) == 4, "a sequence is never reused"
        assert ob.peek(0, 10) == [(4, b"next")]


def test_peek_reads_in_order_after_a_sequence_within_limits(store: Store) -> None:
    ob = Outbox(store)
    for i in range(10):
        ob.append(bytes([i]) * 100, T0 + i)
    assert [s for s, _ in ob.peek(0, 4)] == [1, 2, 3, 4]
    assert [s for s, _ in ob.peek(7, 100)] == [8, 9, 10]
    assert ob.peek(10, 5) == []
    assert ob.peek(0, 0) == []
    assert ob.peek(2, 1) == [(3, bytes([2]) * 100)]
    assert [s for s, _ in ob.peek(0, 100, max_bytes=250)] == [1, 2]
    # a record bigger than max_bytes still comes alone, or a reader would stall on it
    assert [s for s, _ in ob.peek(0, 100, max_bytes=10)] == [1]


def test_delete_upto_removes_acknowledged_records_and_their_bytes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_mod, "DELETE_CHUNK", 3)  # several transactions
    ob = Outbox(store)
    for i in range(10):
        ob.append(b"x" * 10, T0 + i)
    assert ob.delete_upto(0) == 0
    assert ob.delete_upto(7) == 7
    st = ob.stats(T0 + 10)
    assert (st["depth"], st["bytes"], st["first_seq"], st["last_seq"]) == (3, 30, 8, 10)
    assert ob.delete_upto(7) == 0, "idempotent"
    assert ob.delete_upto(99) == 3
    st = ob.stats(T0)
    assert (st["depth"], st["bytes"], st["first_seq"], st["last_seq"]) == (0, 0, 0, 0)
    assert st["next_seq"] == 11 and st["oldest_age_s"] is None
    assert st["dropped"] == 0 and drops(store) == []


def test_stats_report_the_oldest_age(store: Store) -> None:
    ob = Outbox(store)
    ob.append(b"a", T0)
    ob.append(b"b", T0 + 5 * S)
    assert ob.stats(T0 + 12 * S)["oldest_age_s"] == 12.0


def test_drop_oldest_makes_room_counts_and_audits(store: Store) -> None:
    ob = Outbox(store, max_bytes=100, policy="drop-oldest")
    seqs = [ob.append(b"r" * 30, T0 + i) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5], "the appender always gets its record in"
    st = ob.stats(T0)
    assert (st["depth"], st["bytes"], st["first_seq"]) == (3, 90, 3)
    assert (st["dropped"], st["dropped_bytes"]) == (2, 60)
    audit = drops(store)
    assert [
        (a["reason"], a["first_seq"], a["last_seq"], a["records"], a["bytes"]) for a in audit
    ] == [
        ("max_bytes", 1, 1, 1, 30),
        ("max_bytes", 2, 2, 1, 30),
    ]
    assert all(a["policy"] == "drop-oldest" for a in audit)


def test_drop_oldest_drops_as_many_as_a_big_record_needs(store: Store) -> None:
    ob = Outbox(store, max_bytes=100)
    for i in range(5):
        ob.append(b"s" * 20, T0 + i)
    assert ob.append(b"B" * 70, T0 + 9) == 6
    assert [s for s, _ in ob.peek(0, 10)] == [5, 6]
    (audit,) = drops(store)
    assert (audit["records"], audit["bytes"], audit["first_seq"], audit["last_seq"]) == (
        4,
        80,
        1,
        4,
    )


def test_drop_newest_refuses_the_new_record_and_keeps_the_gap_visible(store: Store) -> None:
    ob = Outbox(store, max_bytes=100, policy=OutboxPolicy.DROP_NEWEST)
    assert [ob.append(b"r" * 40, T0 + i) for i in range(3)] == [1, 2, 0]
    assert [s for s, _ in ob.peek(0, 10)] == [1, 2]
    ob.delete_upto(1)
    assert ob.append(b"r" * 40, T0 + 5) == 4, "the refused record's sequence stays consumed"
    st = ob.stats(T0)
    assert (st["dropped"], st["dropped_bytes"], st["bytes"]) == (1, 40, 80)
    (audit,) = drops(store)
    assert (audit["reason"], audit["policy"], audit["first_seq"]) == ("max_bytes", "drop-newest", 3)


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_a_record_larger_than_the_cap_is_refused_whatever_the_policy(
    store: Store, policy: str
) -> None:
    ob = Outbox(store, max_bytes=100, policy=policy)
    ob.append(b"k" * 10, T0)
    assert ob.append(b"L" * 101, T0 + 1) == 0
    assert [s for s, _ in ob.peek(0, 10)] == [1], "nothing else was sacrificed for it"
    (audit,) = drops(store)
    assert (audit["reason"], audit["bytes"], audit["first_seq"]) == ("too_large", 101, 2)


def test_records_from_before_the_clock_was_set_survive_its_first_step(store: Store) -> None:
    """A board without an RTC boots in 1970: when NTP steps the clock to now, what it wrote
    meanwhile is minutes old, not 55 years: the age cap leaves it (the byte cap bounds it)."""
    ob = Outbox(store, max_age_s=60)
    for i in range(5):
        ob.append(b"boot%d" % i, (10 + i) * S)  # 1970-01-01T00:00:10Z ...
    ob.append(b"synced", T0)  # the clock was set
    assert [s for s, _ in ob.peek(0, 10)] == [1, 2, 3, 4, 5, 6]
    assert drops(store) == []


def test_records_past_the_age_cap_are_dropped_at_the_next_append(store: Store) -> None:
    ob = Outbox(store, max_age_s=60)
    ob.append(b"old1", T0)
    ob.append(b"old2", T0 + 10 * S)
    ob.append(b"young", T0 + 50 * S)
    assert ob.append(b"now", T0 + 71 * S) == 4  # old2 is 61 s old, young 21 s
    assert [s for s, _ in ob.peek(0, 10)] == [3, 4]
    (audit,) = drops(store)
    assert (audit["reason"], audit["records"], audit["first_seq"], audit["last_seq"]) == (
        "max_age",
        2,
        1,
        2,
    )
    assert ob.stats(T0 + 71 * S)["dropped"] == 2


def test_append_in_is_part_of_the_callers_transaction(store: Store) -> None:
    ob = Outbox(store, max_bytes=50)
    ob.append(b"z" * 40, T0)

    class AbortError(Exception):
        pass

    def op(txn: Any) -> None:
        assert ob.append_in(txn, b"y" * 40, T0 + 1) == 2  # drops seq 1 inside this txn
        raise AbortError

    with pytest.raises(AbortError):
        store._write(op, "test")
    st = ob.stats(T0)
    assert (st["depth"], st["first_seq"], st["next_seq"], st["dropped"]) == (1, 1, 2, 0)
    assert drops(store) == [], "the drop's audit record went with the aborted transaction"


def test_a_readonly_outbox_is_empty_until_edged_creates_it(state_dir: Path) -> None:
    Store.open(state_dir).close()  # a store from before the outbox existed
    with Store.open(state_dir, readonly=True) as ro:
        ob = Outbox(ro)
        assert ob.stats(T0)["depth"] == 0 and ob.peek(0, 10) == []
        with pytest.raises(StoreError, match="readonly"):
            ob.append(b"x", T0)


def test_caps_must_make_sense(store: Store) -> None:
    with pytest.raises(ValueError):
        Outbox(store, max_bytes=0)
    with pytest.raises(ValueError):
        Outbox(store, max_age_s=0)
    with pytest.raises(ValueError):
        Outbox(store, policy="drop-random")


_APPENDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edge.store import Outbox, Store
    path, n = Path(sys.argv[1]), int(sys.argv[2])
    # a 64 KiB map that must grow many times: the deleter has to adopt each new size
    with Store.open(path, map_size=64 << 10, max_map_size=64 << 20) as store:
        ob = Outbox(store, max_bytes=1 << 30)
        for i in range(n):
            ob.append(i.to_bytes(4, "big") * 512, time.time_ns())
    """
)

_DELETER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from edge.store import Outbox, Store
    path, n = Path(sys.argv[1]), int(sys.argv[2])
    seen = []
    deadline = time.monotonic() + 60
    with Store.open(path, map_size=64 << 10, max_map_size=64 << 20) as store:
        ob = Outbox(store)
        while len(seen) < n and time.monotonic() < deadline:
            recs = ob.peek(seen[-1] if seen else 0, 37)
            for seq, body in recs:
                assert body == (seq - 1).to_bytes(4, "big") * 512, seq
                seen.append(seq)
            if recs:
                ob.delete_upto(recs[-1][0])
        print(json.dumps({"seen": seen, "stats": ob.stats()}))
    """
)


def test_an_appender_and_a_deleter_process_share_the_outbox(state_dir: Path) -> None:
    n = 600
    Store.open(state_dir, map_size=64 << 10, max_map_size=64 << 20).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(state_dir), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for code in (_DELETER, _APPENDER)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        outs.append(out)
    result = json.loads(outs[0])
    assert result["seen"] == list(range(1, n + 1)), "every record once, in order"
    st = result["stats"]
    assert (st["depth"], st["bytes"], st["next_seq"], st["dropped"]) == (0, 0, n + 1, 0)
    with Store.open(state_dir, map_size=64 << 10, max_map_size=64 << 20) as store:
        assert store.info()["map_size"] > 64 << 10, "the map grew while both were at work"
