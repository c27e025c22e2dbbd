"""The agent side of the loop: declare metrics, report them, execute instructions.

Two ZeroMQ connections, so no call ever waits on another thread: ``report()`` sends on a
send-only DEALER from the caller's thread (serialised by a lock); a background I/O thread owns
the control DEALER (Hello/Welcome, heartbeats, instructions and their Acks). edged matches
metrics to the agent by session, not by connection. The I/O thread keeps beating while the
caller is busy, and re-sends Hello when edged restarts (a new connection, or a
Notice{HelloRequired}); reports made while disconnected are dropped and counted, never queued
stale.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from .._rt import apply_rt_profile, apply_to_current_thread, parse_rt
from ..clock import SYSTEM_CLOCK, Clock
from ..config import load_config
from ..errors import (
    AgentClosedError,
    ConnectError,
    EdgeError,
    InstructionRejected,
    UndeclaredMetricError,
)
from ..transport import AGENTS_SEQ, AGENTS_SOCK, make_dealer
from ..transport import endpoint as make_endpoint
from ..wire import (
    Ack,
    AckStatus,
    Bye,
    Heartbeat,
    Hello,
    Instruction,
    MessageType,
    MetricDecl,
    NoticeCode,
    decode_instruction,
    decode_notice,
    decode_welcome,
    encode_ack,
    encode_bye,
    encode_heartbeat,
    encode_hello,
    encode_metric_batch,
    lean_instruction,
    verify,
)

log = logging.getLogger("edge.sdk")

MetricSpec = str | tuple[str, Mapping[str, str]] | MetricDecl
Handler = Callable[[Instruction], Any]


class _Deferred:
    """The type of :data:`DEFERRED`."""

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED: Any = _Deferred()
"""Return this from a handler to answer later with :meth:`Agent.ack` (from any thread): for an
agent whose work finishes after the handler returns (a device confirming a write)."""
_REFUSALS = {NoticeCode.DUPLICATE_AGENT, NoticeCode.BAD_HELLO, NoticeCode.PROTOCOL_VERSION}


_LANE_RECV = 1 << 20  # bytes read per datagram: far above any Instruction edged sends


def _lane_path(endpoint: str) -> Path | None:
    """The fast lane's socket beside an ``ipc://`` agents endpoint (None for other schemes)."""
    if not endpoint.startswith("ipc://"):
        return None
    return Path(endpoint[len("ipc://") :]).with_name(AGENTS_SEQ)


def _ipc_path_exists(endpoint: str) -> bool:
    return endpoint.startswith("ipc://") and Path(endpoint[len("ipc://") :]).exists()


def _lane_connect(path: Path | None) -> socket.socket | None:
    """A connected SOCK_SEQPACKET socket to edged's fast lane, or None (not offered, not
    running, or not permitted)."""
    if path is None:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        return None
    return s


def _decl(spec: MetricSpec) -> MetricDecl:
    if isinstance(spec, MetricDecl):
        return spec
    if isinstance(spec, str):
        return MetricDecl(spec)
    name, labels = spec
    return MetricDecl(name, tuple(sorted((str(k), str(v)) for k, v in labels.items())))


class Agent:
    """One agent's connection to edged.

    ::

        def on_instruction(ins):            # runs on the SDK's I/O thread; keep it short
            if ins.action_name == "throttle":
                set_rate(ins.params)
            # return None/True -> Ack ok; False -> failed; raise InstructionRejected -> rejected

        with Agent("perception-1", ["cpu_usage", ("temp", {"zone": "a"})],
                   handler=on_instruction) as agent:
            agent.report("cpu_usage", 0.93)

    ``run_dir`` defaults to edged's (EDGE_RUN_DIR / config); ``endpoint`` overrides it.

    ``wait_for_edged``: ``connect()`` waits for edged however long it takes (a line in the log
    every ``connect_timeout`` seconds) instead of raising ConnectError, so the boot order of
    agents and edged does not matter. A refusal (duplicate id, bad declaration) still raises.

    While edged is unreachable (not started yet, restarting) reports are dropped, never queued
    stale: ``report()`` returns False, ``report_many()``/``report_ids()`` return how many
    samples were sent, and ``counters["dropped"]`` counts the rest. Samples handed to ZeroMQ
    in the moment between edged dying and the SDK noticing (milliseconds) are lost without
    being counted here.

    ``rt="CPU[:PRIO]"`` (e.g. ``"1:80"``) is the real-time profile: the I/O thread, which runs
    the handler and sends its Ack, and libzmq's I/O threads are pinned to that CPU at
    SCHED_FIFO, memory locked where permitted; each refusal (no CAP_SYS_NICE, a small
    RLIMIT_MEMLOCK) is a warning and the agent runs without it (``rt_applied`` tells). The
    handler runs on the I/O thread between receipt and Ack, with no thread hand-off: a handler
    whose work takes longer returns :data:`DEFERRED` and calls :meth:`ack` when done.
    ``after_ack(instruction, status)``, when given, runs on the I/O thread once the Ack has
    left: the place for work that must not count in the execute stage (logging, waking
    another thread). The application's own threads share the I/O thread's GIL: one that an
    ordinary task preempts while it holds the GIL stalls the I/O thread, SCHED_FIFO or not;
    :meth:`pin_current_thread` puts the calling thread (the one that calls ``report()``) on
    the profile's CPU one priority below the I/O thread.
    """

    def __init__(
        self,
        agent_id: str,
        metrics: Iterable[MetricSpec],
        *,
        handler: Handler | None = None,
        run_dir: Path | str | None = None,
        endpoint: str | None = None,
        kind: str = "",
        heartbeat_ms: int = 0,
        connect_timeout: float = 5.0,
        wait_for_edged: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        rt: str | None = None,
        after_ack: Callable[[Instruction, AckStatus], Any] | None = None,
        transport: str = "zmq",
    ):
        if transport not in ("zmq", "seqpacket"):
            raise ValueError(f"transport {transport!r}: expected 'zmq' or 'seqpacket'")
        if rt is not None:
            parse_rt(rt)  # a malformed profile is the caller's mistake: raise it here
        self.agent_id = agent_id
        self.decls = tuple(_decl(m) for m in metrics)
        if endpoint is None:
            rd = Path(run_dir) if run_dir is not None else load_config().run_dir
            endpoint = make_endpoint(rd, AGENTS_SOCK)
        self.endpoint = endpoint
        self.transport = transport
        """``seqpacket``: the fast lane (``<run_dir>/agents.seq``); ``zmq`` otherwise,
        including after a fallback because edged does not offer the lane."""
        self._lane_path = _lane_path(endpoint)
        self._lane: socket.socket | None = None
        self.kind = kind
        self._handler = handler
        self._heartbeat_ms = heartbeat_ms
        self._connect_timeout = connect_timeout
        self._wait_for_edged = wait_for_edged
        self._drop_logged = False
        self._clock = clock
        self._rt = rt
        self._after_ack = after_ack
        self.rt_applied: dict[str, Any] = {}
        """What the real-time profile (``rt=``) took, once the I/O thread runs."""
        # many agents in one process (a bridge's devices) may share one context and its
        # I/O thread; an agent terms only a context it made
        self._own_ctx = context is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context() if context is None else context
        self._acks_in: zmq.Socket[bytes] | None = None  # deferred Acks -> the I/O thread
        self._acks_out: zmq.Socket[bytes] | None = None
        self._deferred: dict[int, tuple[int, int]] = {}  # instruction id -> (session, t_delivered)
        self._send_lock = threading.Lock()
        self._send_sock: zmq.Socket[bytes] | None = None
        self._ids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._session = 0
        self._seq = 0
        self._max_batch = 4096
        self._hb_ms = 0
        self._welcomed = threading.Event()
        self._refusal: str | None = None
        self._stop = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.counters = {
            "reported": 0,
            "dropped": 0,
            "batches": 0,
            "instructions": 0,
            "acks": 0,
            "handler_errors": 0,
            "hellos": 0,
            "reconnects": 0,
            "deferred": 0,
            "late_acks": 0,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Agent:
        """Start the I/O thread without waiting for edged: it says Hello until edged answers
        (a process that must run before edged does, like a bridge); ``connected`` tells."""
        if self._closed:
            raise AgentClosedError(f"agent {self.agent_id} is closed")
        if self._thread is None:
            if self.transport == "seqpacket":
                self._lane = _lane_connect(self._lane_path)
                # edged not up yet and the agent waits for it: stay on the lane, which the
                # I/O thread reconnects; edged up without a lane: ZeroMQ
                if self._lane is None and not (
                    self._wait_for_edged and not _ipc_path_exists(self.endpoint)
                ):
                    log.warning(
                        "agent %s: edged offers no fast lane at %s (fast_lane = false, or "
                        "not running); using ZeroMQ at %s", self.agent_id, self._lane_path,
                        self.endpoint,
                    )  # fmt: skip
                    self.transport = "zmq"
            if self.transport == "zmq":
                self._send_sock = make_dealer(self._ctx, self.endpoint)
            pipe = f"inproc://edge-agent-acks-{id(self):x}-{secrets.token_hex(4)}"
            self._acks_in = self._ctx.socket(zmq.PULL)
            self._acks_in.bind(pipe)
            self._acks_out = self._ctx.socket(zmq.PUSH)
            self._acks_out.connect(pipe)
            io = self._io_lane if self.transport == "seqpacket" else self._io
            self._thread = threading.Thread(target=io, name=f"edge-agent-{self.agent_id}")
            self._thread.start()
        return self

    def connect(self, timeout: float | None = None) -> Agent:
        """Start the I/O thread and wait for edged's Welcome.

        Raises ConnectError if edged refuses (duplicate id, bad declaration) or does not
        answer within ``timeout`` seconds (default ``connect_timeout``)."""
        self.start()
        wait = self._connect_timeout if timeout is None else timeout
        if self._wait_for_edged:
            waited = 0.0
            while not self._welcomed.wait(wait):
                waited += wait
                log.info(
                    "agent %s: waiting for edged at %s (%.0f s so far)",
                    self.agent_id,
                    self.endpoint,
                    waited,
                )
        if not self._welcomed.wait(wait) or self._refusal:
            why = self._refusal or (
                f"no answer from edged at {self.endpoint} within {wait:g} s; is edged running? "
                "(start it with `edged`, or pass the right run_dir)"
            )
            self.close()
            raise ConnectError(f"agent {self.agent_id}: {why}")
        return self

    def close(self) -> None:
        """Say Bye, stop the I/O thread, close sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop = True
        if self._thread is not None:
            self._thread.join(10)
        with self._send_lock:
            for sock in (self._send_sock, self._acks_out, self._acks_in):
                if sock is not None:
                    sock.close(linger=0)
            self._send_sock = self._acks_out = self._acks_in = None
            if self._lane is not None:
                self._lane.close()
                self._lane = None
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Agent:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._session != 0 and not self._closed

    @property
    def session(self) -> int:
        return self._session

    @property
    def dropped(self) -> int:
        """Samples not sent because edged was unreachable or not reading (since creation)."""
        return self.counters["dropped"]

    def on_instruction(self, fn: Handler) -> Handler:
        """Decorator form of ``handler=``."""
        self._handler = fn
        return fn

    def ack(
        self,
        instruction_id: int,
        status: AckStatus = AckStatus.OK,
        detail: str = "",
        *,
        t_done_ns: int | None = None,
    ) -> bool:
        """Answer an instruction whose handler returned :data:`DEFERRED`; any thread may call
        it. ``t_done_ns`` (CLOCK_MONOTONIC) defaults to now. Returns False when the
        instruction is unknown, already answered, or was delivered in an earlier session
        (edged has closed it since: counted as ``late_acks``)."""
        with self._send_lock:
            pending = self._deferred.pop(instruction_id, None)
            out = self._acks_out
            if pending is None or out is None or self._closed:
                self.counters["late_acks"] += 1
                return False
            session, t_delivered = pending
            if session != self._session:
                self.counters["late_acks"] += 1
                return False
            t_done = self._clock.monotonic_ns() if t_done_ns is None else t_done_ns
            buf = encode_ack(Ack(session, instruction_id, status, t_delivered, t_done, detail[:500]))
            out.send(buf)
        return True

    def pin_current_thread(self) -> dict[str, Any]:
        """The real-time profile for the calling thread: the ``rt=`` CPU at SCHED_FIFO one
        below the I/O thread, so no ordinary task preempts it while it holds the GIL the I/O
        thread needs. Returns what took effect; {} without ``rt=``."""
        if self._rt is None:
            return {}
        cpus, prio = parse_rt(self._rt)
        return apply_to_current_thread(cpu_affinity=cpus, rt_priority=max(1, prio - 1),
                                       mlock=False)  # fmt: skip

    # ------------------------------------------------------------ reporting

    def metric_id(self, name: str, labels: Mapping[str, str] | None = None) -> int:
        """The id edged gave (name, labels). Raises UndeclaredMetricError."""
        key = (name, tuple(sorted(labels.items())) if labels else ())
        try:
            return self._ids[key]
        except KeyError:
            if self._closed:
                raise AgentClosedError(f"agent {self.agent_id} is closed") from None
            if not self._ids:
                raise EdgeError(
                    f"agent {self.agent_id}: not connected yet; call connect()"
                ) from None
            declared = ", ".join(sorted({d.name for d in self.decls}))
            raise UndeclaredMetricError(
                f"metric {name!r} with labels {dict(key[1])} was not declared by {self.agent_id}; "
                f"declared: {declared}"
            ) from None

    def report(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        t_ns: int | None = None,
    ) -> bool:
        """Send one sample now. Returns False if it was dropped (edged unreachable)."""
        mid = self.metric_id(name, labels)
        t = self._clock.monotonic_ns() if t_ns is None else t_ns
        return self.report_ids(((mid, float(value), t),)) == 1

    def report_many(self, items: Iterable[tuple[Any, ...]], t_ns: int | None = None) -> int:
        """Send ``(name, value)`` or ``(name, value, labels)`` items as one batch (or a few,
        at most max_batch samples each). Returns how many samples were handed to ZeroMQ."""
        t = self._clock.monotonic_ns() if t_ns is None else t_ns
        samples = []
        for item in items:
            labels = item[2] if len(item) > 2 else None
            samples.append((self.metric_id(item[0], labels), float(item[1]), t))
        return self.report_ids(samples)

    def report_ids(self, samples: Sequence[tuple[int, float, int]]) -> int:
        """The fast path: ``(metric_id, value, t_ns)`` samples, ids from ``metric_id()``."""
        if self._closed:
            raise AgentClosedError(f"agent {self.agent_id} is closed")
        sent = 0
        step = self._max_batch
        now = self._clock.monotonic_ns
        with self._send_lock:
            sock = self._send_sock
            lane = self._lane
            if sock is None and lane is None:
                raise AgentClosedError(f"agent {self.agent_id} is not connected")
            if not self._session:  # between edged restarts: drop, don't queue stale data
                self.counters["dropped"] += len(samples)
                if not self._drop_logged:  # once per outage: the counter has the rest
                    self._drop_logged = True
                    log.warning(
                        "agent %s: edged is unreachable: reports are dropped (counted in "
                        "counters['dropped']) until it answers again",
                        self.agent_id,
                    )
                return 0
            for start in range(0, len(samples), step):
                chunk = samples[start : start + step]
                self._seq += 1
                buf = encode_metric_batch(self._session, self._seq, now(), chunk)
                try:
                    if lane is not None:
                        lane.send(buf, socket.MSG_DONTWAIT)
                    else:
                        sock.send(buf, zmq.NOBLOCK)  # type: ignore[union-attr]
                except (zmq.Again, OSError):  # full, or the lane's connection just ended
                    self.counters["dropped"] += len(chunk)
                    continue
                sent += len(chunk)
                self.counters["batches"] += 1
        self.counters["reported"] += sent
        return sent

    # ------------------------------------------------------------ I/O thread

    def _io(self) -> None:
        if self._rt is not None:  # this thread and libzmq's, pinned at SCHED_FIFO
            self.rt_applied = {"thread": threading.get_native_id(), **apply_rt_profile(self._rt)}
        nonce = secrets.token_hex(4)
        sock = make_dealer(self._ctx, self.endpoint, identity=f"{self.agent_id}#{nonce}".encode())
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        acks_in = self._acks_in
        if acks_in is not None:
            poller.register(acks_in, zmq.POLLIN)
        now = self._clock.monotonic_ns
        hello_due = 0
        next_beat = 0
        beat_seq = 0

        def send(buf: bytes) -> None:
            sock.send(buf, zmq.NOBLOCK)

        try:
            while not self._stop:
                t = now()
                if not self._session and t >= hello_due:
                    if self._send_hello(send):
                        hello_due = t + 500_000_000  # re-ask if no Welcome within 0.5 s
                    else:
                        hello_due = t + 20_000_000
                if self._session and t >= next_beat:
                    beat_seq += 1
                    try:
                        sock.send(
                            encode_heartbeat(Heartbeat(self._session, t, beat_seq)), zmq.NOBLOCK
                        )
                    except zmq.Again:
                        pass
                    next_beat = t + self._beat_ns()
                wait_ns = (next_beat if self._session else hello_due) - now()
                timeout = max(1, min(100, wait_ns // 1_000_000))
                for s, _ in poller.poll(timeout):
                    if s is sock:
                        self._drain(sock)
                    elif acks_in is not None and s is acks_in:
                        self._forward_acks(send, acks_in)
                    else:
                        if recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
                            # edged went away: reports drop until the next Welcome, and Hello
                            # is retried every 20 ms until the new connection takes it
                            self._session = 0
                            hello_due = 0
                            self.counters["reconnects"] += 1
            self._say_bye(send)
        except Exception:
            self._io_failed()
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            # a bounded linger: the Bye (and a last Ack) still leave; nothing waits longer
            sock.close(linger=200 if self._session else 0)
            self._session = 0

    def _io_lane(self) -> None:
        """The I/O thread on the fast lane: as ``_io``, over one SOCK_SEQPACKET connection
        (one message per datagram) that the callers' ``report()`` shares; reconnects every
        20 ms while edged is away."""
        if self._rt is not None:
            self.rt_applied = {"thread": threading.get_native_id(), **apply_rt_profile(self._rt)}
        poller = zmq.Poller()
        acks_in = self._acks_in
        if acks_in is not None:
            poller.register(acks_in, zmq.POLLIN)
        fd = -1
        if self._lane is not None:
            fd = self._lane.fileno()
            poller.register(fd, zmq.POLLIN)
        now = self._clock.monotonic_ns
        hello_due = next_beat = beat_seq = reconnect_due = 0

        def send(buf: bytes) -> None:
            lane = self._lane
            if lane is None:
                raise zmq.Again()
            lane.send(buf, socket.MSG_DONTWAIT)  # full: BlockingIOError, gone: EPIPE

        try:
            while not self._stop:
                t = now()
                if self._lane is None and t >= reconnect_due:
                    fresh = _lane_connect(self._lane_path)
                    if fresh is None:
                        reconnect_due = t + 20_000_000
                    else:
                        with self._send_lock:
                            self._lane = fresh
                        fd = fresh.fileno()
                        poller.register(fd, zmq.POLLIN)
                        hello_due = 0
                if self._lane is not None and not self._session and t >= hello_due:
                    hello_due = t + (500_000_000 if self._send_hello(send) else 20_000_000)
                if self._session and t >= next_beat:
                    beat_seq += 1
                    try:
                        send(encode_heartbeat(Heartbeat(self._session, t, beat_seq)))
                    except (zmq.Again, OSError):
                        pass
                    next_beat = t + self._beat_ns()
                if self._lane is None:
                    wait_ns = reconnect_due - now()
                else:
                    wait_ns = (next_beat if self._session else hello_due) - now()
                timeout = max(1, min(100, wait_ns // 1_000_000))
                for s, _ in poller.poll(timeout):
                    if acks_in is not None and s is acks_in:
                        self._forward_acks(send, acks_in)
                    elif s == fd and self._lane is not None and self._lane_drain(send):
                        # edged went away: drop reports until the next Welcome, reconnect
                        poller.unregister(fd)
                        fd = -1
                        with self._send_lock:
                            self._lane.close()
                            self._lane = None
                        self._session = 0
                        reconnect_due = 0
                        self.counters["reconnects"] += 1
            self._say_bye(send)
        except Exception:
            self._io_failed()
        finally:
            self._session = 0

    def _say_bye(self, send: Callable[[bytes], None]) -> None:
        if self._session:
            try:
                send(encode_bye(Bye(self._session, "closed")))
            except (zmq.ZMQError, OSError):
                pass  # edged is gone or not reading: it will see the connection end

    def _io_failed(self) -> None:
        log.exception("agent %s I/O thread failed", self.agent_id)
        self._refusal = self._refusal or "the SDK's I/O thread failed (see log)"
        self._welcomed.set()

    def _lane_drain(self, send: Callable[[bytes], None]) -> bool:
        """Every datagram waiting on the lane; True when the connection has ended."""
        lane = self._lane
        assert lane is not None
        while True:
            try:
                buf = lane.recv(_LANE_RECV, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE):
                    return True
                raise
            if not buf:
                return True
            self._on_message(send, buf, self._clock.monotonic_ns())

    def _forward_acks(self, send: Callable[[bytes], None], acks_in: zmq.Socket[bytes]) -> None:
        while True:
            try:
                buf = acks_in.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                send(buf)
                self.counters["acks"] += 1
            except (zmq.Again, OSError):
                log.warning("agent %s: could not send a deferred Ack (edged unreachable)",
                            self.agent_id)

    def _beat_ns(self) -> int:
        return (self._hb_ms or 1000) * 1_000_000

    def _send_hello(self, send: Callable[[bytes], None]) -> bool:
        hello = Hello(
            self.agent_id,
            self.decls,
            agent_kind=self.kind,
            pid=os.getpid(),
            heartbeat_ms=self._heartbeat_ms,
        )
        try:
            send(encode_hello(hello))
        except (zmq.Again, OSError):
            return False  # not connected yet (IMMEDIATE) or the lane is full: try again shortly
        self.counters["hellos"] += 1
        return True

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        def send(buf: bytes) -> None:
            sock.send(buf, zmq.NOBLOCK)

        while cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # cheaper than raising Again
            try:
                buf = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_message(send, buf, self._clock.monotonic_ns())

    def _on_message(self, send: Callable[[bytes], None], buf: bytes, t_delivered: int) -> None:
        """One message from edged, over either transport."""
        ins = lean_instruction(buf)  # our encoder's layout: checked and decoded at once
        if ins is not None:
            self._execute(send, ins, t_delivered)
            return
        try:
            mtype = verify(buf)
        except EdgeError as exc:
            log.warning(
                "agent %s: dropped a malformed message from edged: %s", self.agent_id, exc
            )
            return
        if mtype is MessageType.INSTRUCTION:
            self._execute(send, decode_instruction(buf), t_delivered)
        elif mtype is MessageType.WELCOME:
            w = decode_welcome(buf)
            self._ids = {
                (d.name, d.labels): mid for d, mid in zip(self.decls, w.metric_ids, strict=True)
            }
            self._hb_ms = w.heartbeat_ms
            with self._send_lock:  # edged closed the last session's open instructions
                self._deferred.clear()
            self._max_batch = max(1, w.max_batch)
            self._session = w.session
            self._drop_logged = False
            self._welcomed.set()
        elif mtype is MessageType.NOTICE:
            n = decode_notice(buf)
            if n.code == NoticeCode.HELLO_REQUIRED:
                self._session = 0  # edged restarted: Hello again on the next turn
            elif n.code in _REFUSALS and not self._welcomed.is_set():
                self._refusal = f"edged refused: {n.code.name}: {n.detail}"
                self._welcomed.set()
            else:
                log.warning("agent %s: edged says %s: %s", self.agent_id, n.code.name, n.detail)

    def _execute(self, send: Callable[[bytes], None], ins: Instruction, t_delivered: int) -> None:
        self.counters["instructions"] += 1
        status, detail = AckStatus.OK, ""
        if self._handler is None:
            status, detail = AckStatus.REJECTED, "this agent has no instruction handler"
        else:
            # registered before the handler runs: the device may confirm (ack()) before the
            # handler has returned DEFERRED. Whoever pops the entry answers: dict operations
            # are atomic, so no lock is taken on this path (ack() holds one for its send).
            deferred = self._deferred
            iid = ins.instruction_id
            deferred[iid] = (self._session, t_delivered)
            try:
                result = self._handler(ins)
                if result is DEFERRED:
                    self.counters["deferred"] += 1
                    return
                if deferred.pop(iid, None) is None:
                    return  # answered by ack() already
                if result is False:
                    status = AckStatus.FAILED
                elif isinstance(result, AckStatus):
                    status = result
                elif isinstance(result, tuple):
                    status, detail = AckStatus(result[0]), str(result[1])
            except InstructionRejected as exc:
                deferred.pop(iid, None)
                status, detail = AckStatus.REJECTED, str(exc)
            except Exception as exc:
                deferred.pop(iid, None)
                self.counters["handler_errors"] += 1
                status, detail = AckStatus.FAILED, f"{type(exc).__name__}: {exc}"[:500]
        t_done = self._clock.monotonic_ns()
        ack = Ack(self._session, ins.instruction_id, status, t_delivered, t_done, detail)
        try:
            send(encode_ack(ack))
            self.counters["acks"] += 1
        except (zmq.Again, OSError):
            log.warning(
                "agent %s: could not send Ack %d (edged unreachable)",
                self.agent_id,
                ins.instruction_id,
            )
        if self._after_ack is not None:
            try:
                self._after_ack(ins, status)
            except Exception:
                self.counters["handler_errors"] += 1
                log.exception("agent %s: after_ack failed", self.agent_id)
