"""The cap on agents.sock's ZeroMQ connections (``max_connections``): real ipc sockets, a real
edged; past the cap a connection is refused in its handshake, counted and audited, and the
first ``max_connections`` keep working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq

from edge.runtime import CtlClient, Edged
from edge.transport import AGENTS_SOCK, endpoint
from edge.wire import CtlOp, Hello, MessageType, MetricDecl, encode_hello, verify

from ..support import wait_for

pytestmark = pytest.mark.integration

CAP = 5
EXTRA = 3


def _dealer(ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path) -> zmq.Socket[bytes]:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RECONNECT_IVL, 60_000)  # a refused one does not come back in this test
    s.connect(endpoint(run_dir, AGENTS_SOCK))
    return s


def _welcomed(s: zmq.Socket[bytes], agent_id: str, timeout_ms: int) -> bool:
    try:  # a refused DEALER has no pipe: a send would wait for one
        s.send(encode_hello(Hello(agent_id, (MetricDecl("cpu_usage"),))), zmq.NOBLOCK)
    except zmq.Again:
        return False
    return bool(s.poll(timeout_ms)) and verify(s.recv()) is MessageType.WELCOME


def test_connections_past_the_cap_are_refused(make_cfg: Any, run_dir: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []
    try:
        with Edged(make_cfg(max_connections=CAP)) as d:
            assert d.loop is not None and d.loop.conncap is not None
            for i in range(CAP):  # one at a time: each counted before the next comes
                socks.append(_dealer(ctx, run_dir))
                assert _welcomed(socks[-1], f"capped-{i}", 3000), f"connection {i} refused"
            extra = [_dealer(ctx, run_dir) for _ in range(EXTRA)]
            socks += extra
            wait_for(lambda: d.loop.counters["connections_refused"] >= EXTRA, 10,
                     "the extra connections to be refused")
            assert not any(_welcomed(s, f"extra-{i}", 300) for i, s in enumerate(extra))
            assert d.loop.counters["connections_refused"] == EXTRA
            for i, s in enumerate(socks[:CAP]):  # the first CAP still work
                assert _welcomed(s, f"capped-{i}", 3000)
            with CtlClient(run_dir) as c:
                status = c.request(CtlOp.STATUS)
            assert status["connections"]["max"] == CAP
            assert status["connections"]["refused"] == EXTRA
            wait_for(lambda: d.loop.conncap.connections() == CAP, 5, "refused ones closed")
            # a slot freed is a slot to take
            socks[0].close()
            wait_for(lambda: d.loop.conncap.connections() == CAP - 1, 5, "the close seen")
            late = _dealer(ctx, run_dir)
            socks.append(late)
            assert _welcomed(late, "late", 3000)
            assert d.writer is not None and d.writer.flush(10)
            assert d.store is not None
            refused = list(d.store.iter_audit(kind="connection_refused"))
            assert 1 <= len(refused) <= EXTRA and refused[0]["max_connections"] == CAP
    finally:
        for s in socks:
            s.close(0)
        ctx.term()


def test_max_connections_zero_is_no_cap(make_cfg: Any, run_dir: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks = []
    try:
        with Edged(make_cfg(max_connections=0)) as d:
            assert d.loop is not None and d.loop.conncap is None
            for i in range(4):
                socks.append(_dealer(ctx, run_dir))
                assert _welcomed(socks[-1], f"free-{i}", 3000)
            with CtlClient(run_dir) as c:
                assert c.request(CtlOp.STATUS)["connections"] is None
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
