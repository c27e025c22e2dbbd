"""The fast lane (AF_UNIX SOCK_SEQPACKET beside ZeroMQ): the same protocol, the same semantics,
the same bad-input handling, peer credentials in the agent's row, bounded connections."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig
from edge.runtime import Edged
from edge.sdk import Agent
from edge.wire import (
    Hello,
    Instruction,
    MetricDecl,
    NoticeCode,
    decode_notice,
    decode_welcome,
    encode_hello,
    encode_metric_batch,
)

from ..support import wait_for

pytestmark = pytest.mark.integration


def _raw(run_dir: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(str(run_dir / "agents.seq"))
    return s


def test_an_agent_on_the_fast_lane_closes_the_loop(edged: Edged, run_dir: Path) -> None:
    seen: list[Instruction] = []
    with Agent("fast-1", ["cpu_usage"], run_dir=run_dir, transport="seqpacket",
               handler=seen.append) as a:  # fmt: skip
        assert a.transport == "seqpacket"
        a.report("cpu_usage", 0.95)
        wait_for(lambda: seen and edged.loop.counters["acks_ok"] == 1, what="instruction acked")
        assert seen[0].rule_id == "cpu_hot"
        row = next(r for r in edged.loop.agents_snapshot() if r["agent_id"] == "fast-1")
        assert row["transport"] == "seqpacket"
        assert (row["peer_pid"], row["peer_uid"]) == (os.getpid(), os.getuid())
        assert edged.loop.counters["seq_accepted"] == 1
    wait_for(lambda: edged.loop.counters["byes"] == 1, what="Bye over the lane")


def test_the_lane_socket_is_only_for_the_runtimes_group(edged: Edged, run_dir: Path) -> None:
    assert stat.S_IMODE(os.stat(run_dir / "agents.seq").st_mode) == 0o660
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o750


def test_without_the_lane_the_sdk_falls_back_to_zeromq(
    make_cfg: Callable[..., EdgeConfig], run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = Edged(make_cfg(fast_lane=False)).start()
    try:
        assert not (run_dir / "agents.seq").exists()
        with Agent("fb-1", ["cpu_usage"], run_dir=run_dir, transport="seqpacket") as a:
            assert a.transport == "zmq"
            assert a.report("cpu_usage", 0.1)
        assert "offers no fast lane" in caplog.text
    finally:
        d.close()


def test_a_vanished_lane_agent_is_lost_at_once_and_comes_back(edged: Edged, run_dir: Path) -> None:
    s = _raw(run_dir)
    s.send(encode_hello(Hello("raw-1", (MetricDecl("cpu_usage"),), pid=1)))
    w = decode_welcome(s.recv(65536))
    s.close()  # no Bye: the kernel tells edged at once
    wait_for(lambda: edged.loop.counters["agents_lost"] == 1, what="lost on close")
    rec = edged.loop.registry.by_id["raw-1"]
    assert rec.state.value == "lost"
    s = _raw(run_dir)  # the same agent, a new connection: welcomed again
    s.send(encode_hello(Hello("raw-1", (MetricDecl("cpu_usage"),), pid=1)))
    assert decode_welcome(s.recv(65536)).session != w.session
    s.close()


def test_bad_input_on_the_lane_is_counted_and_answered(
    make_cfg: Callable[..., EdgeConfig], run_dir: Path
) -> None:
    edged = Edged(make_cfg(max_msg_bytes=65536, max_batch=1024)).start()
    try:
        s = _raw(run_dir)
        counters = edged.loop.counters
        s.send(b"\x00" * 40)  # not a FlatBuffer
        assert decode_notice(s.recv(65536)).code is NoticeCode.MALFORMED
        s.send(encode_metric_batch(12345, 1, 1, [(0, 1.0, 1)]))  # unknown session
        assert decode_notice(s.recv(65536)).code is NoticeCode.HELLO_REQUIRED
        s.send(b"x" * (edged.cfg.max_msg_bytes + 100))  # over the limit: truncated and refused
        assert decode_notice(s.recv(65536)).code is NoticeCode.TOO_LARGE
        s.send(b"")  # an empty datagram is not a message; edged reads it as the end
        assert s.recv(10) == b""
        assert (counters["bad_malformed"], counters["bad_unknown_session"],
                counters["bad_too_large"]) == (1, 1, 1)  # fmt: skip
        s.close()
    finally:
        edged.close()


def test_a_connection_that_never_speaks_is_closed(
    make_cfg: Callable[..., EdgeConfig], run_dir: Path
) -> None:
    d = Edged(make_cfg(fast_lane_hello_ms=100)).start()
    try:
        s = _raw(run_dir)
        assert s.recv(10) == b""  # closed by edged
        assert d.loop.counters["seq_silent_closed"] == 1
        s.close()
    finally:
        d.close()


def test_connections_over_the_cap_are_refused(
    make_cfg: Callable[..., EdgeConfig], run_dir: Path
) -> None:
    d = Edged(make_cfg(fast_lane_max_conns=2)).start()
    try:
        held = [_raw(run_dir) for _ in range(2)]
        wait_for(lambda: d.loop.counters["seq_accepted"] == 2, what="two accepted")
        extra = _raw(run_dir)
        assert extra.recv(10) == b""
        assert d.loop.counters["seq_refused_full"] == 1
        for s in [*held, extra]:
            s.close()
    finally:
        d.close()


def test_an_agent_that_stops_reading_costs_undeliverables_not_a_stall(
    edged: Edged, run_dir: Path
) -> None:
    """A lane peer whose socket buffer is full: sends fail at once (counted), edged goes on."""
    s = _raw(run_dir)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.send(encode_hello(Hello("deaf-1", (MetricDecl("cpu_usage"),), pid=1)))
    w = decode_welcome(s.recv(65536))
    mid = w.metric_ids[0]
    seq = 0
    # fire and re-arm cpu_hot until edged can no longer hand it an instruction; never read
    for _ in range(2000):
        seq += 1
        s.send(encode_metric_batch(w.session, seq, 1, [(mid, 0.95 if seq % 2 else 0.1, seq)]))
        if edged.loop.counters["instructions_dropped_full"]:
            break
    wait_for(lambda: edged.loop.counters["instructions_dropped_full"] > 0, what="dropped full")
    # meanwhile a healthy agent is served
    got: list[Any] = []
    with Agent("ok-1", ["cpu_usage"], run_dir=run_dir, transport="seqpacket",
               handler=got.append) as a:  # fmt: skip
        a.report("cpu_usage", 0.99)
        wait_for(lambda: got, what="the healthy agent's instruction")
    s.close()



def test_a_lane_agent_reconnects_when_edged_restarts(
    make_cfg: Callable[..., EdgeConfig], run_dir: Path
) -> None:
    from edge.sdk import DEFERRED

    pending: list[int] = []

    def later(ins: Instruction) -> Any:
        pending.append(ins.instruction_id)
        return DEFERRED  # acknowledged from the test's thread, through the I/O thread

    d = Edged(make_cfg()).start()
    with Agent("again-1", ["cpu_usage"], run_dir=run_dir, transport="seqpacket",
               handler=later) as a:  # fmt: skip
        first = a.session
        d.close()
        wait_for(lambda: not a.connected, what="the lane's end noticed")
        d = Edged(make_cfg()).start()
        try:
            wait_for(lambda: a.connected, timeout=10, what="welcomed by the new edged")
            assert a.session != first and a.counters["reconnects"] >= 1
            a.report("cpu_usage", 0.97)
            wait_for(lambda: pending, what="an instruction")
            assert a.ack(pending[0])
            wait_for(lambda: d.loop.counters["acks_ok"] == 1, what="the deferred Ack")
        finally:
            a.close()
            d.close()


def test_a_duplicate_agent_id_across_transports_is_refused(edged: Edged, run_dir: Path) -> None:
    with Agent("dup-1", ["cpu_usage"], run_dir=run_dir):  # on ZeroMQ, alive
        s = _raw(run_dir)
        s.send(encode_hello(Hello("dup-1", (MetricDecl("cpu_usage"),), pid=2)))
        assert decode_notice(s.recv(65536)).code is NoticeCode.DUPLICATE_AGENT
        assert edged.loop.counters["duplicate_agent"] == 1
        s.send(b"\x00" * 12)  # truncated: refused, the connection stays usable
        assert decode_notice(s.recv(65536)).code is NoticeCode.MALFORMED
        s.close()
