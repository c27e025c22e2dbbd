"""A cap on the connections to agents.sock (``max_connections``), as the fast lane has one.

libzmq accepts every connection a ROUTER is offered and gives each its pipes, session and
buffers before a message is read: a peer opening connections in a loop grows edged without
bound. With a ZAP domain set on the ROUTER (mechanism NULL: no credentials), libzmq asks the
ZAP handler of its context (a REP on ``inproc://zeromq.zap.01``) about every new connection
after its greeting and before any message of it reaches the loop; a refusal (status 400)
closes it there.

The handler runs on its own thread, ``edge-zap``, so a flood of handshakes waits for it, never
the control loop. It counts live connections from a socket monitor on the ROUTER: ACCEPTED
adds the connection's fd, DISCONNECTED removes it (a refused one too, as soon as libzmq has
closed it). The monitor's events are read before each ZAP request is answered; the accept of
the connection asking comes before its greeting, so it is already counted. More than
``max_connections`` live: refused, counted (``connections_refused``), logged and audited at the
log rate (with the peer's uid:gid:pid libzmq reports for ipc).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from typing import Any

import zmq

from .._log import RateLimiter

log = logging.getLogger("edge.loop")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"edge"
_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
_EVENT = struct.Struct("=HI")  # a monitor event's first frame: event id, value (the fd)
_POLL_MS = 100


class ConnectionCap:
    """The ZAP handler and the monitor that bound a ROUTER's connections (see the module doc).
    ``bind()`` before the ROUTER binds; ``watch(router)`` before it binds too (so no accept is
    missed); ``close()`` stops the thread and closes its sockets."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        max_connections: int,
        counters: dict[str, int],
        *,
        audit: Callable[..., None] | None = None,
        clock_ns: Callable[[], int],
        log_rate_per_s: float = 5.0,
    ):
        self.max_connections = max_connections
        self.counters = counters
        self._audit = audit
        self._now_ns = clock_ns
        self._limiter = RateLimiter(log_rate_per_s)
        self.live: set[int] = set()
        """The fds of the ROUTER's connections that are open now (the handler thread's)."""
        self._zap = ctx.socket(zmq.REP)
        self._zap.setsockopt(zmq.LINGER, 0)
        self._monitor: zmq.Socket[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-zap", daemon=True)
        try:
            self._zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            self._zap.close(0)
            raise

    def watch(self, router: zmq.Socket[bytes]) -> None:
        """Set the ZAP domain on ``router`` and monitor it; call before it binds."""
        router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        self._monitor = router.get_monitor_socket(_EVENTS)
        self._thread.start()

    def connections(self) -> int:
        return len(self.live)

    def snapshot(self) -> dict[str, Any]:
        return {"live": len(self.live), "max": self.max_connections,
                "refused": self.counters.get("connections_refused", 0)}

    def _run(self) -> None:
        zap, monitor = self._zap, self._monitor
        assert monitor is not None
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(_POLL_MS))
                self._read_events(monitor)
                if zap in ready:
                    self._answer(zap)
            except zmq.ZMQError as exc:  # the context is going away: edged is stopping
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                log.exception("the connection cap's handler failed; it goes on")
            except Exception:  # never let a bad request stop the handler (it would hang peers)
                log.exception("the connection cap's handler failed; it goes on")

    def _read_events(self, monitor: zmq.Socket[bytes]) -> None:
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event, fd = _EVENT.unpack_from(frames[0])
            if event == zmq.EVENT_ACCEPTED:
                self.live.add(fd)
            elif event == zmq.EVENT_DISCONNECTED:
                self.live.discard(fd)

    def _answer(self, zap: zmq.Socket[bytes]) -> None:
        req = zap.recv_multipart()
        if len(req) < 6 or req[0] != b"1.0":  # not libzmq's: answer as the protocol says
            zap.send_multipart([b"1.0", req[1] if len(req) > 1 else b"", b"500",
                                b"bad ZAP request", b"", b""])
            return
        live = len(self.live)
        if live <= self.max_connections:
            zap.send_multipart([b"1.0", req[1], b"200", b"OK", b"", b""])
            return
        self.counters["connections_refused"] += 1
        zap.send_multipart([b"1.0", req[1], b"400", b"max_connections reached", b"", b""])
        now = self._now_ns()
        if self._limiter.allow("connection_refused", now):
            peer = req[3].decode("ascii", "replace")
            suppressed = self._limiter.take_suppressed("connection_refused")
            log.warning("connection refused: %d connections open, max_connections %d "
                        "(peer %s; %d more refused unlogged)", live - 1,
                        self.max_connections, peer, suppressed)
            if self._audit is not None:
                self._audit("connection_refused", peer=peer, connections=live - 1,
                            max_connections=self.max_connections, suppressed=suppressed)

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)
        if self._monitor is not None:
            self._monitor.close(0)
        self._zap.close(0)


FD_RESERVE = 256
"""File descriptors edged needs beside its agents' connections: LMDB, the log, ctl.sock,
/metrics, the listeners, libzmq's own eventfds and epoll instances, and the handshakes the cap
has yet to refuse."""
FD_TARGET = 65_536
"""The soft limit edged raises itself to (at most the hard one), as services are meant to."""


def ensure_fd_limit(max_connections: int, fast_lane_conns: int) -> dict[str, int]:
    """Raise RLIMIT_NOFILE's soft limit towards the hard one and check the connections fit.

    libzmq aborts the whole process when ``accept`` on agents.sock fails with EMFILE (4.3.5's
    ipc listener asserts on it): the process's file-descriptor limit must never be what bounds
    the connections. systemd gives services a soft limit of 1,024, under the default
    ``max_connections``. Raises OSError (edged's start-up turns it into its one line) when even
    the hard limit leaves no room; returns ``{"soft", "hard", "needed"}``."""
    import errno
    import resource

    needed = max_connections + fast_lane_conns + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = FD_TARGET if hard == resource.RLIM_INFINITY else min(hard, max(FD_TARGET, soft))
    if soft != resource.RLIM_INFINITY and soft < top:
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
        soft = top
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise OSError(errno.EMFILE, f"the hard limit of open files is {hard}, and max_connections "
                      f"{max_connections} + fast_lane_max_conns {fast_lane_conns} + {FD_RESERVE} "
                      f"for edged itself need {needed}")
    return {"soft": int(soft), "hard": int(hard), "needed": needed}
