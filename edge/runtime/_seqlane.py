"""The fast lane: the agent protocol over ``AF_UNIX SOCK_SEQPACKET``, beside ZeroMQ.

ZeroMQ ipc stays the protocol's transport and the default; libzmq's I/O threads cost two thread
wake-ups per hop, which is most of a round trip on a small board. An agent on the same board
that needs the extreme class opts in (``Agent(..., transport="seqpacket")``): the same
FlatBuffers messages, **one per datagram**, on ``<run_dir>/agents.seq`` (the run directory's
permissions: only the runtime's group reaches it). The kernel keeps datagram boundaries, so
there is no framing; a datagram is a message or it is refused, as a ZeroMQ frame is.

The lane gives each connection a routing id that no ZeroMQ peer can have (libzmq's own ids are
5 bytes starting with a zero byte, and it refuses ids starting with zero from peers), so the
loop's handlers, the registry and the audit treat both transports alike; ``send`` raises
``zmq.Again`` for a full socket buffer and ``zmq.ZMQError(EHOSTUNREACH)`` for a gone
connection, exactly as the ROUTER does with ROUTER_MANDATORY, so every send site is shared.

Bounds: at most ``max_conns`` connections (the rest are accepted and closed at once, counted);
a connection that has not said Hello within ``hello_timeout_ns`` is closed (counted); a
datagram over ``max_bytes`` is read truncated (the kernel discards the rest) and refused;
edged never blocks on a connection (every socket is non-blocking). Peer credentials
(SO_PEERCRED) are recorded per connection and shown in the agent's row.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ..transport import AGENTS_SEQ

_UCRED = struct.Struct("3i")  # pid, uid, gid
RID_PREFIX = b"\x00seq"
COUNTERS = ("seq_accepted", "seq_refused_full", "seq_closed", "seq_silent_closed")


@dataclass
class Conn:
    sock: socket.socket
    rid: bytes
    pid: int
    uid: int
    gid: int
    t_open_ns: int
    spoke: bool = False
    """Has sent at least one message (a connection that never speaks is closed)."""
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})


class SeqLane:
    """The listening socket and its connections; owned by the loop thread."""

    def __init__(
        self,
        run_dir: Path,
        *,
        max_bytes: int,
        max_conns: int,
        hello_timeout_ns: int,
        counters: dict[str, int],
        sndbuf: int = 0,
    ) -> None:
        self.path = run_dir / AGENTS_SEQ
        self.max_bytes = max_bytes
        self.max_conns = max_conns
        self.hello_timeout_ns = hello_timeout_ns
        self.sndbuf = sndbuf
        try:
            self.path.unlink()  # a stale one from a killed edged: the instance lock is ours
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
        try:
            s.bind(str(self.path))
            os.chmod(self.path, 0o660)
            s.listen(64)
        except OSError:
            s.close()
            raise
        self.listener = s
        self.conns: dict[int, Conn] = {}  # fd -> connection
        self.by_rid: dict[bytes, Conn] = {}
        self._ids = itertools.count(1)
        self.counters = counters  # the loop's: COUNTERS are among them

    def fileno(self) -> int:
        return self.listener.fileno()

    def accept(self, now_ns: int) -> list[Conn]:
        """Take every pending connection (non-blocking); returns the new ones."""
        new: list[Conn] = []
        while True:
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return new
            except OSError:  # EMFILE and the like: counted, tried again on the next event
                self.counters["seq_refused_full"] += 1
                return new
            if len(self.conns) >= self.max_conns:
                self.counters["seq_refused_full"] += 1  # counted before the peer can see it
                s.close()
                continue
            s.setblocking(False)
            if self.sndbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            pid, uid, gid = _UCRED.unpack(
                s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
            rid = RID_PREFIX + struct.pack(">Q", next(self._ids))
            c = Conn(s, rid, pid, uid, gid, now_ns)
            self.conns[s.fileno()] = c
            self.by_rid[rid] = c
            self.counters["seq_accepted"] += 1
            new.append(c)

    def recv(self, c: Conn, budget: int) -> tuple[list[bytes], bool]:
        """Up to ``budget`` datagrams from ``c``; and whether the connection ended. A datagram
        over ``max_bytes`` comes back as ``max_bytes + 1`` bytes (for the caller to refuse)."""
        out: list[bytes] = []
        size = self.max_bytes + 1
        sock = c.sock
        for _ in range(budget):
            try:
                buf = sock.recv(size)
            except (BlockingIOError, InterruptedError):
                return out, False
            except OSError:  # ECONNRESET: the peer is gone
                return out, True
            if not buf:
                return out, True  # EOF (a zero-length datagram is not a message either)
            c.spoke = True
            c.counts["in"] += 1
            out.append(buf)
        return out, False

    def send(self, rid: bytes, buf: bytes) -> None:
        """Send one message to connection ``rid`` without blocking; raises as a ROUTER with
        ROUTER_MANDATORY does: ``zmq.Again`` when its buffer is full, ``zmq.ZMQError``
        EHOSTUNREACH when it is gone."""
        c = self.by_rid.get(rid)
        if c is None:
            raise zmq.ZMQError(zmq.EHOSTUNREACH)
        try:
            c.sock.send(buf, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            raise zmq.Again() from None
        except OSError as exc:  # EPIPE / ECONNRESET: gone
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise zmq.ZMQError(zmq.EHOSTUNREACH) from None
            raise zmq.ZMQError(exc.errno or zmq.EHOSTUNREACH) from None
        c.counts["out"] += 1

    def close_conn(self, c: Conn) -> None:
        if self.conns.pop(c.sock.fileno(), None) is None:
            return
        self.by_rid.pop(c.rid, None)
        c.sock.close()
        self.counters["seq_closed"] += 1

    def silent(self, now_ns: int) -> list[Conn]:
        """Connections that have not spoken within hello_timeout: the caller closes them."""
        limit = now_ns - self.hello_timeout_ns
        return [c for c in self.conns.values() if not c.spoke and c.t_open_ns <= limit]

    def peer(self, rid: bytes) -> dict[str, Any] | None:
        c = self.by_rid.get(rid)
        if c is None:
            return None
        return {"transport": "seqpacket", "peer_pid": c.pid, "peer_uid": c.uid,
                "peer_gid": c.gid}  # fmt: skip

    def close(self) -> None:
        for c in list(self.conns.values()):
            self.close_conn(c)
        self.listener.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def is_lane_rid(rid: bytes) -> bool:
    return rid[:4] == RID_PREFIX and len(rid) == 12
