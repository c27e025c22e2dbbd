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

import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..clock import SYSTEM_CLOCK, Clock
from ..config import load_config
from ..errors import (
    AgentClosedError,
    ConnectError,
    EdgeError,
    InstructionRejected,
    UndeclaredMetricError,
)
from ..transport import AGENTS_SOCK, make_dealer
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
    ):
        self.agent_id = agent_id
        self.decls = tuple(_decl(m) for m in metrics)
        if endpoint is None:
            rd = Path(run_dir) if run_dir is not None else load_config().run_dir
            endpoint = make_endpoint(rd, AGENTS_SOCK)
        self.endpoint = endpoint
        self.kind = kind
        self._handler = handler
        self._heartbeat_ms = heartbeat_ms
        self._connect_timeout = connect_timeout
        self._wait_for_edged = wait_for_edged
        self._drop_logged = False
        self._clock = clock
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
            self._send_sock = make_dealer(self._ctx, self.endpoint)
            pipe = f"inproc://edge-agent-acks-{id(self):x}-{secrets.token_hex(4)}"
            self._acks_in = self._ctx.socket(zmq.PULL)
            self._acks_in.bind(pipe)
            self._acks_out = self._ctx.socket(zmq.PUSH)
            self._acks_out.connect(pipe)
            self._thread = threading.Thread(target=self._io, name=f"edge-agent-{self.agent_id}")
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
            if sock is None:
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
                    sock.send(buf, zmq.NOBLOCK)
                except zmq.Again:
                    self.counters["dropped"] += len(chunk)
                    continue
                sent += len(chunk)
                self.counters["batches"] += 1
        self.counters["reported"] += sent
        return sent

    # ------------------------------------------------------------ I/O thread

    def _io(self) -> None:
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
        try:
            while not self._stop:
                t = now()
                if not self._session and t >= hello_due:
                    if self._send_hello(sock):
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
                        self._forward_acks(sock, acks_in)
                    else:
                        if recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
                            # edged went away: reports drop until the next Welcome, and Hello
                            # is retried every 20 ms until the new connection takes it
                            self._session = 0
                            hello_due = 0
                            self.counters["reconnects"] += 1
            if self._session:
                try:
                    sock.send(encode_bye(Bye(self._session, "closed")), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        except Exception:
            log.exception("agent %s I/O thread failed", self.agent_id)
            self._refusal = self._refusal or "the SDK's I/O thread failed (see log)"
            self._welcomed.set()
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            # a bounded linger: the Bye (and a last Ack) still leave; nothing waits longer
            sock.close(linger=200 if self._session else 0)
            self._session = 0

    def _forward_acks(self, sock: zmq.Socket[bytes], acks_in: zmq.Socket[bytes]) -> None:
        while True:
            try:
                buf = acks_in.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                sock.send(buf, zmq.NOBLOCK)
                self.counters["acks"] += 1
            except zmq.Again:
                log.warning("agent %s: could not send a deferred Ack (edged unreachable)",
                            self.agent_id)

    def _beat_ns(self) -> int:
        return (self._hb_ms or 1000) * 1_000_000

    def _send_hello(self, sock: zmq.Socket[bytes]) -> bool:
        hello = Hello(
            self.agent_id,
            self.decls,
            agent_kind=self.kind,
            pid=os.getpid(),
            heartbeat_ms=self._heartbeat_ms,
        )
        try:
            sock.send(encode_hello(hello), zmq.NOBLOCK)
        except zmq.Again:
            return False  # not connected yet (IMMEDIATE): try again shortly
        self.counters["hellos"] += 1
        return True

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        while cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # cheaper than raising Again
            try:
                buf = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            t_delivered = self._clock.monotonic_ns()
            try:
                mtype = verify(buf)
            except EdgeError as exc:
                log.warning(
                    "agent %s: dropped a malformed message from edged: %s", self.agent_id, exc
                )
                continue
            if mtype is MessageType.INSTRUCTION:
                self._execute(sock, decode_instruction(buf), t_delivered)
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

    def _execute(self, sock: zmq.Socket[bytes], ins: Instruction, t_delivered: int) -> None:
        self.counters["instructions"] += 1
        status, detail = AckStatus.OK, ""
        if self._handler is None:
            status, detail = AckStatus.REJECTED, "this agent has no instruction handler"
        else:
            # registered before the handler runs: the device may confirm (ack()) before the
            # handler has returned DEFERRED
            with self._send_lock:
                self._deferred[ins.instruction_id] = (self._session, t_delivered)
            try:
                result = self._handler(ins)
                if result is DEFERRED:
                    self.counters["deferred"] += 1
                    return
                with self._send_lock:
                    if self._deferred.pop(ins.instruction_id, None) is None:
                        return  # answered by ack() already
                if result is False:
                    status = AckStatus.FAILED
                elif isinstance(result, AckStatus):
                    status = result
                elif isinstance(result, tuple):
                    status, detail = AckStatus(result[0]), str(result[1])
            except InstructionRejected as exc:
                self._deferred.pop(ins.instruction_id, None)
                status, detail = AckStatus.REJECTED, str(exc)
            except Exception as exc:
                self._deferred.pop(ins.instruction_id, None)
                self.counters["handler_errors"] += 1
                status, detail = AckStatus.FAILED, f"{type(exc).__name__}: {exc}"[:500]
        t_done = self._clock.monotonic_ns()
        ack = Ack(self._session, ins.instruction_id, status, t_delivered, t_done, detail)
        try:
            sock.send(encode_ack(ack), zmq.NOBLOCK)
            self.counters["acks"] += 1
        except zmq.Again:
            log.warning(
                "agent %s: could not send Ack %d (edged unreachable)",
                self.agent_id,
                ins.instruction_id,
            )
