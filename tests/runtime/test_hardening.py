"""Broken and hostile peers (the hardening issue): acks bound to their recipient, a registry
that lives for months, a receive path bounded by bytes, memory given back after bursts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq

from edge.runtime import Edged
from edge.runtime._loop import hard_msg_cap, rcv_hwm
from edge.runtime._memory import MemoryWatch, rss_bytes, rss_hwm_bytes
from edge.wire import (
    Ack,
    AckStatus,
    Bye,
    Heartbeat,
    Hello,
    MessageType,
    MetricDecl,
    NoticeCode,
    decode_instruction,
    decode_notice,
    encode_ack,
    encode_bye,
    encode_heartbeat,
    encode_hello,
    encode_metric_batch,
    verify,
)

from ..support import RawPeer, wait_for

pytestmark = pytest.mark.integration


def _instruction(p: RawPeer) -> Any:
    while True:
        buf = p.recv()
        if verify(buf) is MessageType.INSTRUCTION:
            return decode_instruction(buf)


def _audit(d: Edged, kind: str, **match: Any) -> list[dict[str, Any]]:
    d.writer.flush()
    return [
        r for r in d.store.iter_audit(kind=kind) if all(r.get(k) == v for k, v in match.items())
    ]


def _stored_agents(d: Edged) -> set[str]:
    d.writer.flush()
    return set(d.store.load_agents())


# ---------------------------------------------------------------- 1. honest acks


@pytest.mark.parametrize("attacker_has_session", [False, True], ids=["no-hello", "other-agent"])
def test_only_the_recipient_closes_its_instruction(
    edged: Edged, run_dir: Path, attacker_has_session: bool
) -> None:
    real = RawPeer(run_dir, b"plc#1")
    evil = RawPeer(run_dir, b"evil#1")
    try:
        w = real.hello("plc-1")
        real.send(encode_metric_batch(w.session, 1, 0, [(0, 0.99, 1)]))
        ins = _instruction(real)  # the real agent's handler is "still running"
        session = evil.hello("evil-1").session if attacker_has_session else 999
        evil.send(encode_ack(Ack(session, ins.instruction_id, AckStatus.OK, 1, 2)))
        notice = decode_notice(evil.recv())
        assert notice.code == NoticeCode.FOREIGN_ACK
        c = edged.loop.counters
        assert c["acks_foreign"] == 1 and c["acks"] == 0
        assert ins.instruction_id in edged.loop.inflight  # still open
        # a real agent's own session over another connection is not the recipient either
        evil.send(encode_ack(Ack(w.session, ins.instruction_id, AckStatus.OK, 1, 2)))
        wait_for(lambda: c["acks_foreign"] == 2)
        real.send(encode_ack(Ack(w.session, ins.instruction_id, AckStatus.FAILED, 3, 4)))
        wait_for(lambda: c["acks"] == 1)
        assert c["acks_failed"] == 1 and c["acks_ok"] == 0 and c["acks_unknown"] == 0
        (rec,) = _audit(edged, "instruction", id=ins.instruction_id)
        assert rec["status"] == "failed" and rec["agent_id"] == "plc-1"
        assert len(_audit(edged, "bad_input", reason="acks_foreign")) >= 1
    finally:
        real.close()
        evil.close()


def test_lifecycle_messages_only_over_the_hello_connection(edged: Edged, run_dir: Path) -> None:
    real = RawPeer(run_dir, b"cam#1")
    evil = RawPeer(run_dir, b"evil#2")
    try:
        w = real.hello("cam-1")
        evil.send(encode_bye(Bye(w.session, "spoofed")))
        evil.send(encode_heartbeat(Heartbeat(w.session, 0, 1)))
        wait_for(lambda: edged.loop.counters["bad_foreign_session"] == 2)
        assert edged.loop.registry.by_id["cam-1"].state.value == "active"
        assert edged.loop.counters["byes"] == 0 and edged.loop.counters["heartbeats"] == 0
        # batches may come over a second connection presenting the session (the SDK does so)
        evil.send(encode_metric_batch(w.session, 1, 0, [(0, 0.1, 1)]))
        wait_for(lambda: edged.loop.counters["samples"] == 1)
    finally:
        real.close()
        evil.close()


# ---------------------------------------------------------------- 2. a registry for months


def test_lost_agents_free_their_slot_after_the_grace(make_cfg: Any, run_dir: Path) -> None:
    cfg = make_cfg(max_agents=3, heartbeat_ms=50, missed_beats=2, agent_forget_s=0.3)
    peers = [RawPeer(run_dir, f"crash#{i}".encode()) for i in range(4)]
    try:
        with Edged(cfg) as d:
            for i, p in enumerate(peers[:3]):
                p.hello(f"crash-{i}", heartbeat_ms=50)  # and then never beat: they crashed
            # while they are within their grace, a fourth is refused
            peers[3].send(encode_hello(Hello("late-1", (MetricDecl("x"),))))
            assert peers[3].notice().code == NoticeCode.BAD_HELLO
            assert d.loop.counters["agents_refused_full"] == 1
            wait_for(lambda: d.loop.counters["agents_lost"] == 3, what="the agents to be lost")
            wait_for(lambda: d.loop.counters["agents_forgotten"] == 3, what="the grace to end")
            assert d.loop.registry.by_id == {} and d.loop.registry.by_session == {}
            peers[3].hello("late-1")
            assert d.loop.registry.counts()["active"] == 1
            assert {r["agent_id"] for r in _audit(d, "agent_forgotten")} == {
                "crash-0", "crash-1", "crash-2"
            }
            # the record is written after the Welcome leaves: wait for the writer to have it
            wait_for(lambda: _stored_agents(d) == {"late-1"}, what="late-1's record")
    finally:
        for p in peers:
            p.close()


def test_a_lost_agent_that_comes_back_in_its_grace_keeps_its_state(
    make_cfg: Any, run_dir: Path
) -> None:
    cfg = make_cfg(heartbeat_ms=50, missed_beats=2, agent_forget_s=60)
    p = RawPeer(run_dir, b"flaky#1")
    try:
        with Edged(cfg) as d:
            w = p.hello("flaky-1", heartbeat_ms=50)
            p.send(encode_metric_batch(w.session, 1, 0, [(0, 0.5, 1)]))
            wait_for(lambda: d.loop.counters["agents_lost"] == 1)
            rec = d.loop.registry.by_id["flaky-1"]
            p.send(encode_heartbeat(Heartbeat(w.session, 0, 1)))
            wait_for(lambda: rec.state.value == "active")
            assert rec.last_value == [0.5] and d.loop.counters["agents_forgotten"] == 0
            # and it is watched again: silent once more, lost once more
            wait_for(lambda: d.loop.counters["agents_lost"] == 2)
    finally:
        p.close()


def test_hello_bye_churn_leaves_nothing_behind(edged: Edged, run_dir: Path) -> None:
    p = RawPeer(run_dir, b"churn#1")
    try:
        for i in range(2000):
            w = p.hello(f"churn-{i}")
            p.send(encode_bye(Bye(w.session, "done")))
        wait_for(lambda: edged.loop.counters["agents_forgotten"] == 2000, timeout=20)
        reg = edged.loop.registry
        assert reg.by_id == {} and reg.by_session == {} and reg.live() == 0
        # the deadline heap holds at most one entry per agent ever seen, and drains as they
        # come due: housekeeping never walks the agents that left
        assert reg.pending() <= 2000
        edged.writer.flush()
        assert edged.store.load_agents() == {}
    finally:
        p.close()


# ---------------------------------------------------------------- a stalled agent


def _fire(p: RawPeer, session: int, n: int, seq0: int = 0) -> None:
    """``n`` rising edges of cpu_usage: ``n`` firings of cpu_hot."""
    for i in range(n):
        p.send(encode_metric_batch(session, seq0 + i, 0, [(0, 0.1, 1), (0, 0.99, 2)]))


def test_an_agent_that_stops_acking_is_stalled_not_flooded(make_cfg: Any, run_dir: Path) -> None:
    """What a stuck agent cost its neighbours: every instruction encoded, sent and then timed
    out (an audit record and an event each). After stall_after_timeouts in a row it is
    stalled: its instructions are counted and suppressed (one audit record per stall), one
    probe goes out per back-off, and its first Ack ends the stall."""
    with Edged(make_cfg(ack_timeout_ms=100, stall_after_timeouts=3)) as d:
        p = RawPeer(run_dir, b"deaf#1")
        try:
            w = p.hello("deaf-1")
            c = d.loop.counters
            _fire(p, w.session, 5)  # read, never acked
            wait_for(lambda: c["agents_stalled"] == 1, what="the stall")
            sent = c["instructions_sent"]
            _fire(p, w.session, 200, seq0=5)
            wait_for(lambda: c["instructions_suppressed_stalled"] >= 150, what="suppression")
            assert c["instructions_sent"] - sent <= 5  # a probe per back-off at most
            rec = d.loop.registry.by_id["deaf-1"]
            assert rec.describe(0)["stalled"] and rec.suppressed >= 150
            # it reads again: its Ack of whatever it got (the probe, once one is out) ends it
            seq = iter(range(1000, 10**6, 2))
            wait_for(lambda: _fire(p, w.session, 1, next(seq)) or rec.stall_probe, timeout=10,
                     what="a probe once the back-off is over")
            ins = _instruction(p)
            while ins.instruction_id != rec.stall_probe:
                ins = _instruction(p)
            p.send(encode_ack(Ack(w.session, ins.instruction_id, AckStatus.OK, 1, 2)))
            wait_for(lambda: not rec.describe(0)["stalled"], what="the stall to end")
            (end,) = _audit(d, "agent_unstalled", agent_id="deaf-1")
            assert end["suppressed"] >= 150
            assert len(_audit(d, "agent_stalled", agent_id="deaf-1")) == 1
            assert d.stats.snapshot()["rules"]["cpu_hot"]["undeliverable"] >= 150
            before = c["instructions_sent"]
            _fire(p, w.session, 3, seq0=300)
            wait_for(lambda: c["instructions_sent"] == before + 3, what="sending again")
        finally:
            p.close()


# ---------------------------------------------------------------- 3. bounded receive path


def test_receive_queue_is_bounded_by_bytes(edged: Edged) -> None:
    cap = hard_msg_cap(edged.cfg.max_msg_bytes)
    hwm = edged.loop.sock.getsockopt(zmq.RCVHWM)
    assert edged.loop.sock.getsockopt(zmq.MAXMSGSIZE) == cap
    assert hwm == rcv_hwm(edged.cfg.rcv_conn_bytes, cap)
    assert hwm * cap <= edged.cfg.rcv_conn_bytes
    assert rcv_hwm(1 << 30, 4096) == 1000 and rcv_hwm(1 << 20, 1 << 20) == 4


def test_a_frame_over_the_hard_cap_drops_only_that_connection(
    make_cfg: Any, run_dir: Path, agent_factory: Any
) -> None:
    with Edged(make_cfg(max_msg_bytes=8192, max_batch=300)) as d:
        big = RawPeer(run_dir, b"huge#1")
        got: list[Any] = []
        try:
            w = big.hello("huge-1")
            n0 = d.loop.counters["frames_in"]
            for _ in range(50):  # each is dropped by libzmq before it is allocated
                big.send(b"\x00" * (hard_msg_cap(8192) + 1))
            with agent_factory("healthy-h", ["cpu_usage"], handler=got.append) as healthy:
                healthy.report("cpu_usage", 0.99)
                wait_for(lambda: got, what="control to go on beside the flood")
            assert d.loop.counters["bad_too_large"] == 0  # never reached the loop
            assert d.loop.counters["frames_in"] - n0 < 10  # the healthy agent's few frames
            del w
        finally:
            big.close()


# ---------------------------------------------------------------- 5. memory given back


def test_memory_watch_trims_only_above_steady_plus_margin() -> None:
    readings = iter([100, 100, 90, 150, 200, 95, 96, 130, 100])
    trims: list[int] = []
    m = MemoryWatch(50, read_rss=lambda: next(readings), trim=lambda pad: trims.append(pad) or 1)
    assert m.steady == 100
    m.tick()  # 100
    m.tick()  # 90: the steady state follows it down
    assert m.steady == 90 and not trims
    m.tick()  # 150: within 90 + 50? no: 150 > 140 -> trim, reads 200 after (grew meanwhile)
    assert trims == [0] and m.trims == 1 and m.steady == 200
    m.tick()  # 95
    m.tick()  # 96
    assert m.steady == 95 and m.trims == 1
    m.tick()  # 130: within the margin
    assert m.trims == 1
    snap = m.snapshot()
    assert snap["trims"] == 1 and snap["rss_bytes"] == 130 and snap["trim_margin_bytes"] == 50


def test_memory_watch_releases_file_pages_above_their_own_margin() -> None:
    files = iter([10, 10, 8, 11, 13, 9, 9])
    released: list[int] = []
    m = MemoryWatch(0, file_margin=4, release_files=lambda: released.append(1) or 1,
                    read_rss=lambda: 100, read_file_rss=lambda: next(files), trim=lambda _: 0)
    m.tick()  # 10
    m.tick()  # 8: its steady state follows it down
    m.tick()  # 11: within 8 + 4
    assert m.file_steady == 8 and not released
    m.tick()  # 13 > 12: released, and what is left (9) is the new steady state
    assert released == [1] and m.file_releases == 1 and m.file_steady == 9
    assert m.file_released_bytes == 4 and m.snapshot()["file_releases"] == 1


def _mapped_rss(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, mine = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):
                mine = line.rstrip("\n").endswith(str(path))
            elif mine and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def test_the_stores_pages_leave_rss_when_released(tmp_path: Path) -> None:
    """What grew RSS with every agent that ever came and went: each page of the audit log
    LMDB read stays mapped. Released, the mapping holds (almost) nothing; read again, it works."""
    from edge.store import Store, StoreWriter

    with Store.open(tmp_path / "state") as store:
        w = StoreWriter(store)
        w.start()
        for i in range(20_000):
            w.audit("agent_registered", agent_id=f"churn-{i}", pid=i, series=1)
        assert w.flush(30)
        w.close()
        assert sum(1 for _ in store.iter_audit(kind="agent_registered")) == 20_000
        data = store.path / "data.mdb"
        before = _mapped_rss(data)
        assert before > 1 << 20  # the log was read through the map
        assert store.release_resident() > 0
        assert _mapped_rss(data) < before // 10
        assert sum(1 for _ in store.iter_audit(kind="agent_registered")) == 20_000


def test_churn_gives_the_stores_pages_back(make_cfg: Any, run_dir: Path) -> None:
    with Edged(make_cfg(mem_file_margin_bytes=256 << 10)) as d:
        p = RawPeer(run_dir, b"churn#2")
        try:
            for i in range(1500):
                w = p.hello(f"churn-{i}")
                p.send(encode_bye(Bye(w.session, "done")))
            wait_for(lambda: d.memory.file_releases >= 1, timeout=20,
                     what="the store's pages to be released")
        finally:
            p.close()


def test_memory_watch_margin_zero_never_trims() -> None:
    m = MemoryWatch(0, read_rss=lambda: 10**9, trim=lambda pad: pytest.fail("trimmed"))
    m.tick()
    assert m.trims == 0


def test_rss_is_read_from_proc() -> None:
    assert 1 << 20 < rss_bytes() <= rss_hwm_bytes()


def test_status_shows_rss_and_its_high_water_mark(edged: Edged) -> None:
    from edge.runtime import CtlClient
    from edge.wire import CtlOp

    with CtlClient(edged.cfg.run_dir) as c:
        mem = c.request(CtlOp.STATUS)["memory"]
    assert mem["rss_bytes"] > 1 << 20 and mem["rss_hwm_bytes"] >= mem["rss_bytes"]
    assert mem["trims"] == 0


def test_stats_refreshes_leave_no_histograms_behind(make_cfg: Any) -> None:
    """The idle growth after churn (~0.8 MB/s with a 1 s stats interval): every refresh
    dropped a book of 8 histograms that only the cyclic GC could free, and edged runs that
    once a minute. With collection off, the histograms alive stay those of the live books."""
    import gc

    from hdrh.histogram import HdrHistogram

    from edge.runtime import CtlClient
    from edge.wire import CtlOp

    def histograms() -> int:
        return sum(isinstance(o, HdrHistogram) for o in gc.get_objects())

    with Edged(make_cfg()) as d, CtlClient(d.cfg.run_dir) as c:
        gc.collect()
        gc.disable()
        try:
            before = histograms()
            for _ in range(30):
                c.request(CtlOp.STATS)
            assert histograms() <= before + 8  # at most one book in flight somewhere
        finally:
            gc.enable()
