"""A small TCP fault proxy for the sync tests and the HIL rig's network faults: the client
connects to the proxy, the proxy to the server, and the test (or the rig) decides what the
wire does.

::

    edge-sync ---> 127.0.0.1:<proxy port> ===(faults)===> 127.0.0.1:<server port>

Faults (each can be switched at any time, from any thread):

* ``delay(s)``        every chunk is held ``s`` seconds before it is forwarded (both ways)
* ``blackhole()``     connections stay open but nothing is forwarded any more (both ways:
                      bytes are read and discarded), like a dead route with no RST
* ``drop_new()``      new connections are accepted and closed at once
* ``reset_all()``     every open connection is reset (RST) now, mid-stream
* ``heal()``          no delay, no blackhole, new connections accepted again

One thread runs a selector loop over the listening socket and every connection.
"""

from __future__ import annotations

import collections
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Pipe:
    """One direction of one connection: bytes read from ``src``, due at a time, for ``dst``."""

    src: socket.socket
    dst: socket.socket
    pending: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.up = _Pipe(client, upstream)
        self.down = _Pipe(upstream, client)
        self.closed = False


class FaultProxy:
    """Listens on a free loopback port and forwards to ``target_port``. Close it (or use it as
    a context manager): the thread stops and every socket is closed."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._delay_s = 0.0
        self._blackhole = False
        self._drop_new = False
        self._reset_requested = False
        self._stop = False
        self.accepted = 0
        self.dropped = 0
        self.resets = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns if not c.closed)

    # -- faults ------------------------------------------------------------------------------

    def delay(self, seconds: float) -> None:
        with self._lock:
            self._delay_s = seconds

    def blackhole(self, on: bool = True) -> None:
        with self._lock:
            self._blackhole = on

    def drop_new(self, on: bool = True) -> None:
        with self._lock:
            self._drop_new = on

    def reset_all(self) -> None:
        """Reset every open connection; returns once done."""
        done = threading.Event()
        with self._lock:
            self._reset_requested = True
            self._reset_done = done
        self._wake()
        done.wait(5.0)

    def heal(self) -> None:
        with self._lock:
            self._delay_s = 0.0
            self._blackhole = False
            self._drop_new = False

    def close(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(5.0)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop ----------------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        try:
            while not self._stop:
                timeout = self._next_due()
                for key, _ in self._sel.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            self._wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                    else:
                        conn, pipe = key.data
                        self._read(conn, pipe)
                with self._lock:
                    reset, self._reset_requested = self._reset_requested, False
                if reset:
                    for c in list(self._conns):
                        self._close(c, rst=True)
                        self.resets += 1
                    self._reset_done.set()
                self._flush()
        finally:
            for c in list(self._conns):
                self._close(c, rst=True)
            self._sel.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _next_due(self) -> float:
        due = [p.pending[0][0] for c in self._conns for p in (c.up, c.down) if p.pending]
        if not due:
            return 0.5
        return max(0.001, min(due) - time.monotonic())  # never a busy spin

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            drop = self._drop_new
        if drop:
            self.dropped += 1
            _rst(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2.0)
        except OSError:
            self.dropped += 1
            _rst(client)
            return
        self.accepted += 1
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(client, upstream)
        self._conns.append(conn)
        self._sel.register(client, selectors.EVENT_READ, (conn, conn.up))
        self._sel.register(upstream, selectors.EVENT_READ, (conn, conn.down))

    def _read(self, conn: _Conn, pipe: _Pipe) -> None:
        if conn.closed:
            return
        try:
            data = pipe.src.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn, rst=True)
            return
        if not data:
            self._close(conn, rst=False)
            return
        with self._lock:
            blackhole, delay = self._blackhole, self._delay_s
        if blackhole:
            return  # swallowed
        pipe.pending.append((time.monotonic() + delay, data))

    def _flush(self) -> None:
        now = time.monotonic()
        with self._lock:
            blackhole = self._blackhole
        for conn in list(self._conns):
            for pipe in (conn.up, conn.down):
                if blackhole:
                    pipe.pending.clear()
                while pipe.pending and pipe.pending[0][0] <= now and not conn.closed:
                    due, data = pipe.pending[0]
                    try:
                        n = pipe.dst.send(data)
                    except BlockingIOError:
                        break
                    except OSError:
                        self._close(conn, rst=True)
                        break
                    if pipe is conn.up:
                        self.bytes_up += n
                    else:
                        self.bytes_down += n
                    if n < len(data):
                        pipe.pending[0] = (due, data[n:])
                        break
                    pipe.pending.popleft()

    def _close(self, conn: _Conn, *, rst: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        for s in (conn.client, conn.upstream):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if rst:
                _rst(s)
            else:
                s.close()
        self._conns.remove(conn)


def _rst(s: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()
