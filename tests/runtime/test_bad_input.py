"""Every bad input the closed-loop issue names: counted, audited, no crash, no effect on others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.runtime import Edged
from edge.wire import (
    Ack,
    AckStatus,
    Hello,
    MessageType,
    MetricDecl,
    NoticeCode,
    encode_ack,
    encode_hello,
    encode_metric_batch,
    verify,
)

from ..support import RawPeer, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def peer(run_dir: Path, edged: Edged) -> Iterator[RawPeer]:
    p = RawPeer(run_dir, b"raw#1")
    yield p
    p.close()


@pytest.fixture
def healthy(agent_factory: Any, edged: Edged) -> Iterator[Any]:
    got: list[Any] = []
    agent = agent_factory("healthy-1", ["cpu_usage"], handler=got.append)
    agent.got = got
    with agent:
        yield agent


def still_controls(edged: Edged, healthy: Any) -> None:
    """The loop still serves a well-behaved agent end to end."""
    n = len(healthy.got)
    healthy.report("cpu_usage", 0.1)
    healthy.report("cpu_usage", 0.99)
    wait_for(lambda: len(healthy.got) > n, what="the healthy agent's instruction")


def bad_audit(edged: Edged, reason: str) -> list[dict[str, Any]]:
    edged.writer.flush()
    return [r for r in edged.store.iter_audit(kind="bad_input") if r["reason"] == reason]


@pytest.mark.parametrize(
    ("frame", "counter", "code"),
    [
        (b"\x00" * 3, "bad_malformed", NoticeCode.MALFORMED),
        (b"garbage that is not a flatbuffer", "bad_malformed", NoticeCode.MALFORMED),
        (b"\x0c\x00\x00\x00XXXX\x00\x00\x00\x00\x00\x00", "bad_malformed", NoticeCode.MALFORMED),
    ],
    ids=["short", "garbage", "wrong-identifier"],
)
def test_malformed_frames(
    edged: Edged, peer: RawPeer, healthy: Any, frame: bytes, counter: str, code: NoticeCode
) -> None:
    peer.send(frame)
    assert peer.notice().code == code
    assert edged.loop.counters[counter] == 1
    assert bad_audit(edged, counter)
    still_controls(edged, healthy)


def test_truncated_batch(edged: Edged, peer: RawPeer, healthy: Any) -> None:
    w = peer.hello("trunc-1")
    buf = encode_metric_batch(w.session, 1, 0, [(0, 0.5, 1)] * 10)
    for cut in (len(buf) - 1, len(buf) // 2, 9):
        peer.send(buf[:cut])
        assert peer.notice().code == NoticeCode.MALFORMED
    assert edged.loop.counters["bad_malformed"] == 3
    assert edged.loop.counters["samples"] == 0
    still_controls(edged, healthy)


def test_oversized_frame(make_cfg: Any, run_dir: Path, agent_factory: Any) -> None:
    with Edged(make_cfg(max_msg_bytes=8192, max_batch=300)) as d:
        p = RawPeer(run_dir, b"big#1")
        try:
            w = p.hello("big-1")
            p.send(encode_metric_batch(w.session, 1, 0, [(0, 0.5, 1)] * 400))  # 9.6 KB
            assert p.notice().code == NoticeCode.TOO_LARGE
            assert d.loop.counters["bad_too_large"] == 1
            assert d.loop.counters["samples"] == 0
        finally:
            p.close()


def test_batch_over_max_batch(make_cfg: Any, run_dir: Path) -> None:
    with Edged(make_cfg(max_batch=10)) as d:
        p = RawPeer(run_dir, b"many#1")
        try:
            w = p.hello("many-1")
            assert w.max_batch == 10
            p.send(encode_metric_batch(w.session, 1, 0, [(0, 0.5, 1)] * 11))
            assert p.notice().code == NoticeCode.TOO_LARGE
            assert d.loop.counters["bad_batch_too_big"] == 1
        finally:
            p.close()


def test_multipart_message(edged: Edged, peer: RawPeer, healthy: Any) -> None:
    peer.send(b"a", b"b")
    wait_for(lambda: edged.loop.counters["bad_frames"] == 1)
    still_controls(edged, healthy)


def test_metrics_before_hello(edged: Edged, peer: RawPeer, healthy: Any) -> None:
    peer.send(encode_metric_batch(12345, 1, 0, [(0, 0.99, 1)]))
    assert peer.notice().code == NoticeCode.HELLO_REQUIRED
    assert edged.loop.counters["bad_unknown_session"] == 1
    assert edged.loop.counters["instructions_sent"] == 0
    assert bad_audit(edged, "bad_unknown_session")
    still_controls(edged, healthy)


def test_unknown_metric_id(edged: Edged, peer: RawPeer, healthy: Any) -> None:
    w = peer.hello("unk-1", ("cpu_usage",))
    peer.send(encode_metric_batch(w.session, 1, 0, [(7, 0.99, 1), (0, 0.1, 1)]))
    assert peer.notice().code == NoticeCode.UNKNOWN_METRIC
    assert edged.loop.counters["bad_unknown_metric"] == 1
    assert edged.loop.counters["samples"] == 2  # the known one in the batch is still used
    still_controls(edged, healthy)


def test_bad_hello(edged: Edged, peer: RawPeer) -> None:
    peer.send(encode_hello(Hello("bad id with spaces", (MetricDecl("cpu"),))))
    n = peer.notice()
    assert n.code == NoticeCode.BAD_HELLO and "agent_id" in n.detail
    peer.send(encode_hello(Hello("dup-metrics", (MetricDecl("cpu"), MetricDecl("cpu")))))
    assert "declared twice" in peer.notice().detail
    peer.send(encode_hello(Hello("old", (), protocol_version=99)))
    assert peer.notice().code == NoticeCode.PROTOCOL_VERSION
    assert edged.loop.counters["bad_hello"] == 2
    assert edged.loop.counters["bad_protocol_version"] == 1


def test_duplicate_agent_id(edged: Edged, agent_factory: Any, run_dir: Path) -> None:
    from edge.sdk import ConnectError

    got: list[Any] = []
    with agent_factory("perception-1", ["cpu_usage"], handler=got.append) as first:
        dup = agent_factory("perception-1", ["cpu_usage"])
        with pytest.raises(ConnectError, match="DUPLICATE_AGENT"):
            dup.connect(timeout=3)
        assert edged.loop.counters["duplicate_agent"] == 1
        edged.writer.flush()
        assert [
            r for r in edged.store.iter_audit(kind="bad_input") if r["reason"] == "duplicate_agent"
        ]
        first.report("cpu_usage", 0.99)  # the original is untouched
        wait_for(lambda: got)
    # once the first has gone, the id is free again
    with agent_factory("perception-1", ["cpu_usage"]) as again:
        assert again.connected


def test_dead_connection_is_replaced_not_refused(edged: Edged, run_dir: Path) -> None:
    p1 = RawPeer(run_dir, b"crashy#1")
    p1.hello("crashy")
    p1.close()  # the process died without a Bye
    p2 = RawPeer(run_dir, b"crashy#2")
    try:
        wait_for(lambda: _hello_ok(p2, "crashy"), what="the restarted agent to be accepted")
        assert edged.loop.counters["agents_replaced"] == 1
    finally:
        p2.close()


def _hello_ok(p: RawPeer, agent_id: str) -> bool:
    p.send(encode_hello(Hello(agent_id, (MetricDecl("cpu_usage"),))))
    return verify(p.recv()) is MessageType.WELCOME


def test_agent_that_stops_reading(make_cfg: Any, run_dir: Path, agent_factory: Any) -> None:
    with Edged(make_cfg(sndhwm=5)) as d:
        stuck = RawPeer(run_dir, b"stuck#1", rcvhwm=1)
        got: list[Any] = []
        try:
            w = stuck.hello("stuck-1", ("cpu_usage",))
            with agent_factory("healthy-2", ["cpu_usage"], handler=got.append) as healthy:
                # toggle the rule so every high sample is an instruction nobody reads
                wait_for(
                    lambda: (
                        _flood(stuck, w.session) or d.loop.counters["instructions_dropped_full"]
                    ),
                    timeout=10,
                    what="the stuck agent's queue to fill",
                )
                # libzmq's HWM accounting is approximate: a few were queued, then refused
                assert d.loop.counters["instructions_sent"] >= 1
                assert d.stats.snapshot()["rules"]["cpu_hot"]["undeliverable"] >= 1
                healthy.report("cpu_usage", 0.99)
                wait_for(
                    lambda: got, what="the healthy agent's instruction while the other is stuck"
                )
            d.writer.flush()
            assert [
                r for r in d.store.iter_audit(kind="instruction") if r["status"] == "undeliverable"
            ]
        finally:
            stuck.close()


def _flood(p: RawPeer, session: int) -> bool:
    for i in range(50):
        p.send(encode_metric_batch(session, i, 0, [(0, 0.1, 1), (0, 0.99, 2)]))
    return False


def test_agent_vanishes_mid_instruction(make_cfg: Any, run_dir: Path) -> None:
    with Edged(make_cfg(ack_timeout_ms=200)) as d:
        p = RawPeer(run_dir, b"vanish#1")
        w = p.hello("vanish-1")
        p.send(encode_metric_batch(w.session, 1, 0, [(0, 0.99, 1)]))
        assert verify(p.recv()) is MessageType.INSTRUCTION
        p.close()  # gone without acking
        wait_for(lambda: d.loop.counters["ack_timeouts"] == 1, what="the ack timeout")
        assert d.stats.snapshot()["rules"]["cpu_hot"]["timeout"] == 1
        d.writer.flush()
        (rec,) = [r for r in d.store.iter_audit(kind="instruction")]
        assert rec["status"] == "timeout" and rec["agent_id"] == "vanish-1"


def test_late_or_bogus_ack(edged: Edged, peer: RawPeer, healthy: Any) -> None:
    w = peer.hello("acker")
    peer.send(encode_ack(Ack(w.session, 999_999, AckStatus.OK, 1, 2)))
    wait_for(lambda: edged.loop.counters["acks_unknown"] == 1)
    still_controls(edged, healthy)


def test_loop_survives_a_flood_of_garbage(edged: Edged, peer: RawPeer, healthy: Any) -> None:
    for i in range(2000):
        peer.send(bytes([i % 256]) * (i % 64 + 1))
    wait_for(lambda: edged.loop.counters["bad_malformed"] == 2000, timeout=10)
    still_controls(edged, healthy)
    edged.writer.flush()
    # audited at a bounded rate, not 2000 times
    assert len(bad_audit(edged, "bad_malformed")) < 100
