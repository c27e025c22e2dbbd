"""The control loop: one thread, one ROUTER, no blocking work.

Each iteration: poll agents.sock (and a wake-up eventfd for calls from other threads) with a
timeout no later than the next timer; drain up to ``_BUDGET`` frames, each verified before it is
read; evaluate samples against the agent's bindings (indexed by metric id); send instructions
in priority order with NOBLOCK; then run due held-for timers and housekeeping (ack timeouts,
liveness). Durable writes and percentile math happen on other threads; this one only enqueues.

Bad input never raises out of here: every refusal is counted in ``counters``, logged and
audited at a bounded rate, and answered with at most a rate-limited Notice.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from random import SystemRandom
from typing import Any, cast

import zmq

from .._log import RateLimiter
from .._rt import apply_to_current_thread, apply_to_zmq_threads
from ..clock import SYSTEM_CLOCK, Clock
from ..config import EdgeConfig
from ..errors import RuntimeStateError, TooLargeError, VerifyError
from ..rules import (
    AGENT_LABEL,
    BOARD_AGENT,
    BoardEval,
    CompiledTable,
    Firing,
    RuleSet,
    Timers,
    bind_board,
    resolve_targets,
)
from ..store import StoreWriter
from ..transport import AGENTS_SOCK, endpoint, make_router
from ..wire import (
    PROTOCOL_VERSION,
    AckStatus,
    Instruction,
    MessageType,
    Notice,
    NoticeCode,
    Welcome,
    decode_ack,
    decode_bye,
    decode_heartbeat,
    decode_hello,
    decode_metric_batch,
    encode_instruction,
    encode_notice,
    encode_welcome,
    lean_type,
    verify,
)
from ._agg import BatchTap
from ._conncap import ConnectionCap
from ._events import EventRing
from ._lifecycle import AgentState
from ._overload import COUNTERS as SCHED_COUNTERS
from ._overload import OverloadControl
from ._registry import AGENT_ID_RE, FORGET, LIVENESS, METRIC_NAME_RE, AgentRecord, Registry
from ._seqlane import COUNTERS as SEQ_COUNTERS
from ._seqlane import RID_PREFIX as LANE_RID_PREFIX
from ._seqlane import SeqLane
from ._stats import StatsBook

log = logging.getLogger("edge.loop")

_BOARD = "@board"  # prepare()'s key for the board rules' binding
_BUDGET = 256  # frames per drain before timers and housekeeping get a turn
_HOUSEKEEPING_NS = 50_000_000
_MAX_IDLE_MS = 100  # bounds how long a stop request waits
_STALL_MIN_NS = 100_000_000  # a stalled agent's first back-off; doubled per failed probe
_STALL_MAX_NS = 5_000_000_000
_SESSIONS = SystemRandom()  # what `secrets` uses, without its hmac -> OpenSSL import (~3.5 MB)

_LANE_RID = LANE_RID_PREFIX

COUNTERS = (
    "frames_in",
    "batches",
    "samples",
    "heartbeats",
    "hellos",
    "byes",
    "acks",
    "acks_ok",
    "acks_failed",
    "acks_rejected",
    "acks_unknown",
    "acks_foreign",
    "connections_refused",
    "firings",
    "timer_firings",
    "instructions_sent",
    "instructions_dropped_full",
    "instructions_suppressed_stalled",
    "instructions_unroutable",
    "instructions_agent_gone",
    "instructions_no_target",
    "instructions_targets_cut",
    "ack_timeouts",
    "agents_registered",
    "agents_replaced",
    "agents_lost",
    "agents_recovered",
    "agents_gone",
    "agents_forgotten",
    "agents_stalled",
    "bad_frames",
    "bad_malformed",
    "bad_too_large",
    "bad_unexpected_type",
    "bad_unknown_session",
    "bad_foreign_session",
    "bad_unknown_metric",
    "bad_batch_too_big",
    "bad_hello",
    "bad_protocol_version",
    "duplicate_agent",
    "agents_refused_full",
    "batch_gaps",
    "notices_sent",
    "notices_dropped",
    "handler_errors",
    "rule_tables_activated",
    "loop_iterations",
    "busy_polls",
    *SCHED_COUNTERS,
    *SEQ_COUNTERS,
)


class ControlLoop:
    """Owns agents.sock and all control state. Everything here runs on the loop thread,
    except ``call`` (any thread) and the read-only snapshot helpers (any thread)."""

    def __init__(
        self,
        cfg: EdgeConfig,
        ctx: zmq.Context[zmq.Socket[bytes]],
        *,
        writer: StoreWriter | None = None,
        clock: Clock = SYSTEM_CLOCK,
        table: CompiledTable | None = None,
        utilisation: Callable[[], float] | None = None,
        first_instruction_id: int = 1,
    ):
        self.cfg = cfg
        self.clock = clock
        self.writer = writer
        self.endpoint = endpoint(cfg.run_dir, AGENTS_SOCK)
        # Frames over max_msg_bytes are refused by verify() (counted, answered); libzmq's own
        # MAXMSGSIZE is a hard cap just above that, where it drops the connection unread (the
        # frame is never allocated). With RCVHWM from rcv_conn_bytes, what one connection can
        # make edged hold is bounded by bytes, whatever it sends.
        cap = hard_msg_cap(cfg.max_msg_bytes)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.conncap: ConnectionCap | None = None
        """The cap on agents.sock's connections (edge.runtime._conncap); None: no cap."""
        if cfg.max_connections:
            self.conncap = ConnectionCap(ctx, cfg.max_connections, self.counters,
                                         audit=self._audit_later, clock_ns=clock.monotonic_ns,
                                         log_rate_per_s=cfg.log_rate_per_s)
        try:
            self.sock = make_router(
                ctx,
                self.endpoint,
                max_msg_bytes=cap,
                sndhwm=cfg.sndhwm,
                rcvhwm=rcv_hwm(cfg.rcv_conn_bytes, cap),
                before_bind=self.conncap.watch if self.conncap is not None else None,
            )
        except BaseException:
            if self.conncap is not None:
                self.conncap.close()
            raise
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.lane: SeqLane | None = None
        """The fast lane (AF_UNIX SOCK_SEQPACKET, edge.runtime._seqlane); None: not offered."""
        if cfg.fast_lane:
            try:
                self.lane = SeqLane(
                    cfg.run_dir,
                    max_bytes=cfg.max_msg_bytes,
                    max_conns=cfg.fast_lane_max_conns,
                    hello_timeout_ns=cfg.fast_lane_hello_ms * 1_000_000,
                    counters=self.counters,
                )
            except OSError:
                if self.conncap is not None:
                    self.conncap.close()
                self.sock.close(linger=0)
                os.close(self._wake_fd)
                raise
        self._poller = zmq.Poller()
        self._calls: collections.deque[tuple[Callable[[], Any], Future[Any]]] = collections.deque()
        self.registry = Registry(
            forget_ns=int(cfg.agent_forget_s * 1e9), keep_gone_ns=int(cfg.agent_keep_gone_s * 1e9)
        )
        self.timers = Timers()
        self.table = table or CompiledTable(RuleSet(()))
        self.lkg_table: CompiledTable | None = None
        self.board: BoardEval | None = None
        """The active table's board rules over every agent seen (None: it has none)."""
        if self.table.board_rules:
            self._rebind_board(clock.monotonic_ns())
        self._targets: dict[tuple[str, ...], tuple[list[AgentRecord], int]] = {}
        """Resolved ``target`` globs -> (recipients, how many the cap cut); emptied whenever
        an agent registers or goes."""
        self.inflight: dict[int, tuple[Any, ...]] = {}
        self._sent_order: collections.deque[tuple[int, int]] = collections.deque()
        self.book = StatsBook()
        self.tap: BatchTap | None = None
        """Set by edged when upstream aggregation is on: batches handed to the digest."""
        self.events = EventRing(4096)
        """The last 4,096 events (``edgectl tail``), packed: nothing of a burst outlives it."""
        self._limiter = RateLimiter(cfg.log_rate_per_s)
        self._next_iid = first_instruction_id
        self._stop = False
        self._thread: threading.Thread | None = None
        self.started_ns = clock.monotonic_ns()
        self.ready = threading.Event()
        self.rt_applied: dict[str, Any] = {}
        self.stopped = threading.Event()
        self._hb_grace_ns = cfg.heartbeat_ms * 1_000_000 * cfg.missed_beats
        self._ack_timeout_ns = cfg.ack_timeout_ms * 1_000_000
        self._handlers: dict[MessageType, Callable[[bytes, bytes, int], None]] = {
            MessageType.METRIC_BATCH: self._on_batch,
            MessageType.ACK: self._on_ack,
            MessageType.HEARTBEAT: self._on_heartbeat,
            MessageType.HELLO: self._on_hello,
            MessageType.BYE: self._on_bye,
        }
        self.overload: OverloadControl | None = (
            OverloadControl(self, cfg, utilisation=utilisation) if cfg.sched_enabled else None
        )
        """Priority order and shedding when the loop is behind (``_overload``); None: off.
        ``utilisation`` replaces its load probe (tests)."""
        self.on_housekeeping: Callable[[int], None] | None = None
        """Called on the loop thread at every housekeeping pass (every 50 ms while the loop
        turns; monotonic ns): edged feeds systemd's watchdog from here, so the pings stop
        when the loop is stuck."""

    # ---------------------------------------------------------------- running

    def run(self) -> None:
        """Run until ``stop()``. Call from the thread that will own the loop."""
        self._thread = threading.current_thread()
        poller = self._poller
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake_fd, zmq.POLLIN)
        wake_fd = self._wake_fd
        if self.lane is not None:
            poller.register(self.lane.fileno(), zmq.POLLIN)
        sock = self.sock
        now_ns = self.clock.monotonic_ns
        counters = self.counters
        timers = self.timers
        next_house = now_ns() + _HOUSEKEEPING_NS
        cfg = self.cfg
        self.rt_applied = apply_to_current_thread(
            cpu_affinity=cfg.cpu_affinity, rt_priority=cfg.rt_priority, mlock=cfg.mlock
        )
        self.rt_applied["zmq_io"] = apply_to_zmq_threads(
            cpu_affinity=cfg.cpu_affinity, rt_priority=cfg.rt_priority
        )
        busy_ns = cfg.busy_poll_us * 1000
        busy_until = 0
        ov = self.overload
        self.ready.set()
        try:
            while not self._stop:
                now = now_ns()
                due = timers.next_due()
                until = next_house if due is None or due > next_house else due
                # Round down: within the last millisecond before a timer, poll without
                # blocking (a bounded spin) so held-for deadlines fire on time, not up to 1 ms late.
                timeout = min(_MAX_IDLE_MS, max(0, (until - now) // 1_000_000))
                if now < busy_until:
                    timeout = 0  # the busy-poll window after traffic: no kernel sleep
                    counters["busy_polls"] += 1
                if ov is not None and ov.pending:
                    timeout = 0  # queued batches are waiting for their turn
                events = poller.poll(timeout)
                drained = False
                for s, _ in events:
                    if s is sock:
                        self._drain()
                        drained = True
                    elif s == wake_fd:
                        self._run_calls()
                    else:
                        self._lane_event(s)
                if not drained and ov is not None and ov.pending:
                    ov.drain()
                if events and busy_ns:
                    busy_until = now_ns() + busy_ns
                counters["loop_iterations"] += 1
                now = now_ns()
                if due is not None and due <= now:
                    fired = timers.run_due(now)
                    if fired:
                        counters["timer_firings"] += len(fired)
                        self._dispatch(fired, now, now, 0, from_timer=True)
                if now >= next_house:
                    self._housekeeping(now)
                    next_house = now + _HOUSEKEEPING_NS
        finally:
            self._stop = True
            self.stopped.set()
            self._run_calls(fail=True)  # nothing queued is left waiting

    def stop(self) -> None:
        """Ask the loop to finish its iteration and return (any thread, signal-safe)."""
        self._stop = True
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass

    def close(self) -> None:
        if self.conncap is not None:
            self.conncap.close()
        self.sock.close(linger=0)
        if self.lane is not None:
            self.lane.close()
        os.close(self._wake_fd)
        path = self.endpoint[len("ipc://") :]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the loop thread between two iterations and return its result."""
        if self._thread is threading.current_thread():
            return fn()
        if self._stop or self.stopped.is_set():
            raise RuntimeStateError("the control loop is stopping")
        fut: Future[Any] = Future()
        self._calls.append((fn, fut))
        os.eventfd_write(self._wake_fd, 1)
        if self.stopped.is_set():  # raced with the loop's exit
            self._run_calls(fail=True)
        return fut.result(timeout)

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop thread between two iterations; do not wait for it (a
        thread that must never wait on the loop: the connection cap's). Dropped if the
        loop is stopping."""
        if self._stop or self.stopped.is_set():
            return
        self._calls.append((fn, Future()))
        os.eventfd_write(self._wake_fd, 1)

    def _run_calls(self, fail: bool = False) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except (BlockingIOError, OSError):
            pass
        calls = self._calls
        while calls:
            try:
                fn, fut = calls.popleft()
            except IndexError:  # another thread took it
                return
            if fail:
                fut.set_exception(RuntimeStateError("the control loop has stopped"))
                continue
            try:
                fut.set_result(fn())
            except Exception as exc:  # the caller gets it; the loop goes on
                fut.set_exception(exc)

    # ---------------------------------------------------------------- ingest

    def _drain(self) -> None:
        ov = self.overload
        if ov is not None and ov.active:
            ov.drain()
            return
        sock = self.sock
        recv = sock.recv_multipart
        events = sock.getsockopt
        now_ns = self.clock.monotonic_ns
        counters = self.counters
        handlers = self._handlers
        max_bytes = self.cfg.max_msg_bytes
        # a drain still finding frames this long after its first one may be behind: past the
        # budget, a batch that waited as long in the transport hands over to the scheduler
        budget_ns = ov.budget_ns if ov is not None else 1 << 62
        budget_end = 0
        for _ in range(_BUDGET):
            # Asking EVENTS (~0.5 µs) is much cheaper than letting recv raise zmq.Again (~8 µs)
            if not cast(int, events(zmq.EVENTS)) & zmq.POLLIN:
                return
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            t_recv = now_ns()
            counters["frames_in"] += 1
            if len(frames) != 2:
                self._bad(
                    "bad_frames", frames[0], f"{len(frames) - 1} frames; send one message per frame"
                )
                continue
            rid, buf = frames
            # the agents' own encoders' layouts are checked in ~1 µs; anything else is walked
            mtype = lean_type(buf, max_bytes) or self._verified(rid, buf)
            if mtype is None:
                continue
            if not budget_end:
                budget_end = t_recv + budget_ns
            elif t_recv >= budget_end and mtype is MessageType.METRIC_BATCH and ov is not None:
                if ov.behind(buf, t_recv):
                    ov.take_over(rid, buf, t_recv)
                    return
                budget_end = t_recv + budget_ns  # busy, but keeping up
            handler = handlers.get(mtype)
            if handler is None:
                self._bad("bad_unexpected_type", rid, f"{mtype.name} is not sent by agents")
                continue
            try:
                handler(rid, buf, t_recv)
            except Exception as exc:  # a bug must not take control down with it
                self._handler_failed(exc, mtype, rid, t_recv)

    def _verified(self, rid: bytes, buf: bytes) -> MessageType | None:
        """verify() for a frame the lean checks did not take: its type, or None when it is
        refused (counted and answered)."""
        try:
            return verify(buf, max_bytes=self.cfg.max_msg_bytes)
        except TooLargeError as exc:
            self._bad("bad_too_large", rid, str(exc), NoticeCode.TOO_LARGE)
        except VerifyError as exc:
            self._bad("bad_malformed", rid, str(exc), NoticeCode.MALFORMED)
        return None

    def _handle_any(self, mtype: MessageType, rid: bytes, buf: bytes, t_recv: int) -> None:
        """Run a verified message's handler (a type agents do not send is refused)."""
        handler = self._handlers.get(mtype)
        if handler is None:
            self._bad("bad_unexpected_type", rid, f"{mtype.name} is not sent by agents")
            return
        self._handle(handler, mtype, rid, buf, t_recv)

    def _handle(
        self,
        handler: Callable[[bytes, bytes, int], None],
        mtype: MessageType,
        rid: bytes,
        buf: bytes,
        t_recv: int,
    ) -> None:
        """Run one message's handler as ``_drain`` does (for the scheduler's path)."""
        try:
            handler(rid, buf, t_recv)
        except Exception as exc:  # a bug must not take control down with it
            self._handler_failed(exc, mtype, rid, t_recv)

    # ---------------------------------------------------------------- the fast lane

    def _lane_event(self, fd: int) -> None:
        lane = self.lane
        if lane is None:
            return
        now = self.clock.monotonic_ns()
        if fd == lane.fileno():
            for new in lane.accept(now):
                self._poller.register(new.sock.fileno(), zmq.POLLIN)
            return
        c = lane.conns.get(fd)
        if c is None:
            self._poller.unregister(fd)
            return
        bufs, ended = lane.recv(c, _BUDGET)
        t_recv = self.clock.monotonic_ns()
        for buf in bufs:
            self._take(c.rid, buf, t_recv)
        if ended:
            self._lane_closed(c, "the fast-lane connection closed")

    def _lane_closed(self, c: Any, why: str) -> None:
        """A fast-lane connection ended: its agent, if still registered on it, is lost at once
        (no beats need to be missed: the kernel says so), and comes back with a new Hello."""
        assert self.lane is not None
        self._poller.unregister(c.sock.fileno())
        self.lane.close_conn(c)
        for rec in list(self.registry.by_session.values()):
            if rec.routing_id == c.rid and rec.state is AgentState.ACTIVE:
                now = self.clock.monotonic_ns()
                self.registry.set_state(rec, AgentState.LOST, now)
                self.counters["agents_lost"] += 1
                self._event("agent_lost", rec.agent_id, "", 0, why)
                self._audit("agent_lost", agent_id=rec.agent_id, reason=why)
                log.warning("agent %s lost: %s", rec.agent_id, why)

    def _take(self, rid: bytes, buf: bytes, t_recv: int) -> None:
        """One fast-lane message: what ``_drain`` does for a ZeroMQ frame (the overload
        scheduler takes over ZeroMQ batches only)."""
        self.counters["frames_in"] += 1
        mtype = lean_type(buf, self.cfg.max_msg_bytes) or self._verified(rid, buf)
        if mtype is not None:
            self._handle_any(mtype, rid, buf, t_recv)

    def _send(self, rid: bytes, buf: bytes) -> None:
        """Send to a peer of either transport; raises zmq.Again (full) or zmq.ZMQError
        EHOSTUNREACH (gone), as the ROUTER does."""
        if rid[:4] == _LANE_RID and self.lane is not None:
            self.lane.send(rid, buf)
        else:
            self.sock.send_multipart((rid, buf), zmq.NOBLOCK)

    def _handler_failed(self, exc: Exception, mtype: MessageType, rid: bytes, t: int) -> None:
        self.counters["handler_errors"] += 1
        if self._limiter.allow("handler_errors", t):
            log.exception("error handling %s from %r", mtype.name, rid, exc_info=exc)
            self._audit("loop_error", message=mtype.name, error=repr(exc))

    def _on_batch(self, rid: bytes, buf: bytes, t_recv: int) -> None:
        view = decode_metric_batch(buf)
        rec = self.registry.by_session.get(view.session)
        counters = self.counters
        if rec is None:
            self._bad(
                "bad_unknown_session",
                rid,
                f"MetricBatch for unknown session {view.session}",
                NoticeCode.HELLO_REQUIRED,
            )
            return
        count = view.count
        if count > self.cfg.max_batch:
            self._bad(
                "bad_batch_too_big",
                rid,
                f"{count} samples > max_batch {self.cfg.max_batch}",
                NoticeCode.TOO_LARGE,
                agent_id=rec.agent_id,
            )
            return
        if rec.state is not AgentState.ACTIVE:
            self._revive(rec, t_recv)
        rec.last_seen_ns = t_recv
        rec.batches += 1
        if rec.last_batch_seq >= 0 and view.seq != rec.last_batch_seq + 1:
            rec.batch_gaps += 1
            counters["batch_gaps"] += 1
        rec.last_batch_seq = view.seq
        counters["batches"] += 1
        counters["samples"] += count
        rec.samples += count
        tap = self.tap
        if tap is not None:  # upstream aggregation: the frame itself, summarised off the loop
            tap.offer(rec, buf, count)
        t_eval = self.clock.monotonic_ns()
        ev = rec.eval
        assert ev is not None
        t_send = view.t_send_ns

        def urgent(fs: list[Firing], from_timer: bool) -> None:
            # a rule at or above urgent_priority: its instruction leaves now, not after the batch
            if from_timer:
                counters["timer_firings"] += len(fs)
            self._dispatch(fs, t_recv, t_eval, 0 if from_timer else t_send, from_timer=from_timer)

        fired, early, unknown = ev.on_batch(
            view.samples(), self.timers, self.cfg.urgent_priority, urgent
        )
        n_series = len(ev.slots)
        if unknown:
            self._bad(
                "bad_unknown_metric",
                rid,
                f"{unknown} samples with metric ids >= {n_series}",
                NoticeCode.UNKNOWN_METRIC,
                agent_id=rec.agent_id,
                n=unknown,
            )
        if early:
            counters["timer_firings"] += len(early)
            self._dispatch(early, t_recv, t_eval, 0, from_timer=True)
        if fired:
            self._dispatch(fired, t_recv, t_eval, t_send, from_timer=False)

    def _dispatch(
        self, fired: list[Firing], t_recv: int, t_eval: int, t_batch_send: int, *, from_timer: bool
    ) -> None:
        """Send the instructions for ``fired`` in priority order (then file order): to the
        agent that fired, or to every known agent its rule's ``target`` matches."""
        t_decide = self.clock.monotonic_ns()
        if len(fired) > 1:
            order = self.table.order
            fired.sort(key=lambda f: order(f.rule))
        counters = self.counters
        for f in fired:
            counters["firings"] += 1
            rule = f.rule
            self.book.rule(rule.rule_id).fired += 1
            rec = f.agent
            timing = (t_batch_send, t_recv, t_eval, t_decide, from_timer)
            if not rule.target:
                assert isinstance(rec, AgentRecord)
                if rec.state is AgentState.GONE:
                    counters["instructions_agent_gone"] += 1
                    self.book.record_unacked(rule.rule_id, "gone")
                    continue
                self._send_instruction(rec, f, "", timing)
                continue
            source = rec.agent_id if isinstance(rec, AgentRecord) else BOARD_AGENT
            recipients, cut = self._recipients(rule.target)
            if cut:
                counters["instructions_targets_cut"] += cut
                if self._limiter.allow("instructions_targets_cut", t_decide):
                    log.warning(
                        "rule %s: target matches %d agents; the first %d got the instruction",
                        rule.rule_id, len(recipients) + cut, len(recipients),
                    )  # fmt: skip
                    self._audit(
                        "instructions_targets_cut",
                        rule_id=rule.rule_id,
                        source_agent=source,
                        sent=len(recipients),
                        cut=cut,
                    )
            if not recipients:
                counters["instructions_no_target"] += 1
                self.book.record_unacked(rule.rule_id, "undeliverable")
                self._event("no_target", source, rule.rule_id, 0, ", ".join(rule.target))
                self._audit(
                    "instruction",
                    agent_id=None,
                    source_agent=source,
                    rule_id=rule.rule_id,
                    action=rule.rule.action_name,
                    status="no_target",
                    detail=f"no known agent matches target {', '.join(rule.target)}",
                )
                continue
            for target in recipients:
                self._send_instruction(target, f, source, timing)

    def _recipients(self, globs: tuple[str, ...]) -> tuple[list[AgentRecord], int]:
        """The known agents (registered, not gone) ``globs`` match, in id order, capped."""
        got = self._targets.get(globs)
        if got is None:
            live = {
                r.agent_id: r
                for r in self.registry.by_id.values()
                if r.state is not AgentState.GONE
            }
            ids, cut = resolve_targets(globs, live, self.cfg.max_targets)
            got = self._targets[globs] = ([live[a] for a in ids], cut)
        return got

    def _send_instruction(
        self, rec: AgentRecord, f: Firing, source: str, timing: tuple[int, int, int, int, bool]
    ) -> None:
        """One instruction for firing ``f`` to ``rec`` (``source``: the agent that fired when
        that is another one; empty when it is ``rec`` itself)."""
        rule = f.rule
        if rec.stall_backoff_ns and self._suppress(rec, timing[3]):
            self.counters["instructions_suppressed_stalled"] += 1
            self.book.record_unacked(rule.rule_id, "undeliverable")
            rec.suppressed += 1
            return
        iid = self._next_iid
        self._next_iid = iid + 1
        r = rule.rule
        buf = encode_instruction(
            Instruction(
                iid,
                rule.rule_id,
                r.action,
                r.custom_action,
                rule.params,
                rule.priority,
                f.t_sample_ns + rule.sla_ns,
                f.metric_id,
                f.value,
                f.t_sample_ns,
                source,
            )
        )
        try:
            self._send(rec.routing_id, buf)
        except zmq.Again:
            self._undeliverable(
                rec,
                rule.rule_id,
                iid,
                "instructions_dropped_full",
                "agent is not reading: its queue is full",
            )
            self._stall(rec, timing[3], "its queue is full")
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._undeliverable(
                rec, rule.rule_id, iid, "instructions_unroutable", "agent connection is gone"
            )
            return
        t_send = self.clock.monotonic_ns()
        t_batch_send, t_recv, t_eval, t_decide, from_timer = timing
        self.inflight[iid] = (
            rec,
            rule,
            f.t_sample_ns,
            t_batch_send,
            t_recv,
            t_eval,
            t_decide,
            t_send,
            from_timer,
        )
        self._sent_order.append((t_send, iid))
        if rec.stall_backoff_ns:
            rec.stall_probe = iid  # the rest wait for its Ack (or its timeout)
        rec.instructions += 1
        self.counters["instructions_sent"] += 1
        self._event(
            "instruction", rec.agent_id, rule.rule_id, iid, _trigger(r.action_name, f.agent, f)
        )

    def _suppress(self, rec: AgentRecord, now: int) -> bool:
        """Is ``rec`` (stalled) to be spared this instruction? Not when its back-off is over
        and no probe is out: then this one is the probe."""
        return bool(rec.stall_probe) or now < rec.stalled_until_ns

    def _stall(self, rec: AgentRecord, now: int, why: str) -> None:
        """``rec`` is not reading: suppress its instructions for a back-off (doubled when it
        was stalled already and its probe failed). One audit record per stall, not one per
        instruction: the stall's count goes into the record that ends it."""
        first = not rec.stall_backoff_ns
        rec.stall_backoff_ns = (
            _STALL_MIN_NS if first else min(rec.stall_backoff_ns * 2, _STALL_MAX_NS)
        )
        rec.stalled_until_ns = now + rec.stall_backoff_ns
        rec.stall_probe = 0
        if first:
            rec.suppressed = 0
            self.counters["agents_stalled"] += 1
            self._event("agent_stalled", rec.agent_id, "", 0, why)
            self._audit("agent_stalled", agent_id=rec.agent_id, reason=why)
            if self._limiter.allow("agents_stalled", now):
                log.warning("agent %s stalled (%s): instructions suppressed", rec.agent_id, why)

    def _unstall(self, rec: AgentRecord) -> None:
        """``rec`` acknowledged again: its stall is over."""
        rec.timeouts_in_row = 0
        if not rec.stall_backoff_ns:
            return
        self._event("agent_unstalled", rec.agent_id, "", 0, f"{rec.suppressed} suppressed")
        self._audit("agent_unstalled", agent_id=rec.agent_id, suppressed=rec.suppressed)
        rec.stall_backoff_ns = rec.stalled_until_ns = rec.stall_probe = rec.suppressed = 0

    def _undeliverable(
        self, rec: AgentRecord, rule_id: str, iid: int, counter: str, why: str
    ) -> None:
        self.counters[counter] += 1
        self.book.record_unacked(rule_id, "undeliverable")
        self._event("undeliverable", rec.agent_id, rule_id, iid, why)
        if self._limiter.allow(counter, self.clock.monotonic_ns()):
            log.warning("instruction %d (%s) to %s not sent: %s", iid, rule_id, rec.agent_id, why)
        self._audit(
            "instruction",
            id=iid,
            agent_id=rec.agent_id,
            rule_id=rule_id,
            status="undeliverable",
            detail=why,
        )

    def _on_ack(self, rid: bytes, buf: bytes, t_recv: int) -> None:
        ack = decode_ack(buf)
        inflight = self.inflight
        p = inflight.get(ack.instruction_id)
        counters = self.counters
        if p is not None and (ack.session != p[0].session or rid != p[0].routing_id):
            # Only the recipient closes its instruction: the session it was sent to, over the
            # connection it was sent on. Anything else leaves it open (it may still be acked).
            self._bad(
                "acks_foreign",
                rid,
                f"Ack for instruction {ack.instruction_id} from session {ack.session}: "
                "it was sent to another agent",
                NoticeCode.FOREIGN_ACK,
                agent_id=_session_agent(self.registry, ack.session),
            )
            return
        if p is not None:
            del inflight[ack.instruction_id]
        if p is None:
            counters["acks_unknown"] += 1
            if self._limiter.allow("acks_unknown", t_recv):
                self._audit(
                    "bad_input",
                    reason="acks_unknown",
                    peer=_peer(rid),
                    detail=f"Ack for unknown or timed-out instruction {ack.instruction_id}",
                )
            return
        rec, rule, t_sample, t_bsend, t_recv0, t_eval, t_decide, _t_send, from_timer = p
        if rec.timeouts_in_row or rec.stall_backoff_ns:
            self._unstall(rec)
        rec.acks += 1
        rec.last_seen_ns = t_recv
        status = int(ack.status)
        met = self.book.record_ack(
            rule.rule_id,
            status,
            rule.sla_ns,
            t_sample,
            t_bsend,
            t_recv0,
            t_eval,
            t_decide,
            ack.t_delivered_ns,
            ack.t_done_ns,
            t_recv,
            from_timer,
        )
        counters["acks"] += 1
        name = _ACK_NAMES.get(status, "failed")
        counters["acks_" + name] += 1
        e2e_us = (ack.t_done_ns - t_sample) / 1000.0
        self._event(
            "ack", rec.agent_id, rule.rule_id, ack.instruction_id, f"{name}, e2e {e2e_us:,.0f} µs"
        )
        self._audit(
            "instruction",
            id=ack.instruction_id,
            agent_id=rec.agent_id,
            rule_id=rule.rule_id,
            action=rule.rule.action_name,
            status=name,
            e2e_us=e2e_us,
            sla_met=met,
            detail=ack.detail,
        )

    def _on_heartbeat(self, rid: bytes, buf: bytes, t_recv: int) -> None:
        hb = decode_heartbeat(buf)
        rec = self.registry.by_session.get(hb.session)
        if rec is None:
            self._bad(
                "bad_unknown_session",
                rid,
                f"Heartbeat for unknown session {hb.session}",
                NoticeCode.HELLO_REQUIRED,
            )
            return
        if rid != rec.routing_id:
            self._foreign_session(rid, rec, "Heartbeat")
            return
        self.counters["heartbeats"] += 1
        rec.last_seen_ns = t_recv
        if rec.state is AgentState.LOST:
            self._revive(rec, t_recv)

    def _on_bye(self, rid: bytes, buf: bytes, t_recv: int) -> None:
        bye = decode_bye(buf)
        rec = self.registry.by_session.get(bye.session)
        if rec is None:
            self._bad("bad_unknown_session", rid, f"Bye for unknown session {bye.session}")
            return
        if rid != rec.routing_id:
            self._foreign_session(rid, rec, "Bye")
            return
        self.counters["byes"] += 1
        self._gone(rec, bye.reason or "bye")

    def _foreign_session(self, rid: bytes, rec: AgentRecord, what: str) -> None:
        # Lifecycle messages are honoured only over the connection that said Hello (the one
        # Welcome went to); MetricBatches may come over any connection presenting the session.
        self._bad(
            "bad_foreign_session",
            rid,
            f"{what} for session of {rec.agent_id!r} over a connection that did not say its Hello",
            NoticeCode.HELLO_REQUIRED,
            agent_id=rec.agent_id,
        )

    def _on_hello(self, rid: bytes, buf: bytes, t_recv: int) -> None:
        counters = self.counters
        counters["hellos"] += 1
        try:
            hello = decode_hello(buf)
        except VerifyError as exc:
            self._bad("bad_hello", rid, str(exc), NoticeCode.BAD_HELLO)
            return
        if hello.protocol_version != PROTOCOL_VERSION:
            self._bad(
                "bad_protocol_version",
                rid,
                f"protocol_version {hello.protocol_version} unsupported; edged speaks {PROTOCOL_VERSION}",
                NoticeCode.PROTOCOL_VERSION,
            )
            return
        problem = self._check_hello(hello)
        if problem:
            self._bad("bad_hello", rid, problem, NoticeCode.BAD_HELLO)
            return
        reg = self.registry
        old = reg.by_id.get(hello.agent_id)
        if old is not None and old.state is not AgentState.GONE and old.routing_id != rid:
            if self._connection_alive(old):
                self._bad(
                    "duplicate_agent",
                    rid,
                    f"agent_id {hello.agent_id!r} is already connected (pid {old.pid})",
                    NoticeCode.DUPLICATE_AGENT,
                    agent_id=hello.agent_id,
                    always_audit=True,
                )
                return
        if (old is None or old.state is AgentState.GONE) and reg.live() >= self.cfg.max_agents:
            self._bad(
                "agents_refused_full",
                rid,
                f"max_agents {self.cfg.max_agents} reached",
                NoticeCode.BAD_HELLO,
                agent_id=hello.agent_id,
                always_audit=True,
            )
            return
        session = _SESSIONS.getrandbits(63) or 1
        while session in reg.by_session:
            session = _SESSIONS.getrandbits(63) or 1
        hb_ms = min(max(hello.heartbeat_ms or self.cfg.heartbeat_ms, 10), 60_000)
        series = [(i, m.name, tuple(sorted(m.labels))) for i, m in enumerate(hello.metrics)]
        rec = AgentRecord(
            hello.agent_id,
            session,
            rid,
            series,
            kind=hello.agent_kind,
            pid=hello.pid,
            heartbeat_ms=hb_ms,
            now_ns=t_recv,
            wall_ms=self.clock.wall_ms(),
        )
        ev, pending = self.table.bind(rec, rec.agent_id, series, first_seen_ns=t_recv)
        ev.make_current()
        self.timers.schedule_absent(pending)
        rec.eval = ev
        replaced = reg.add(rec)
        reg.schedule(t_recv + self._grace_ns(rec), LIVENESS, rec)
        if replaced is not None:
            if replaced.eval is not None:
                replaced.eval.retire()
            counters["agents_replaced"] += 1
        counters["agents_registered"] += 1
        self._targets.clear()
        if self.table.board_rules:
            self._rebind_board(t_recv)
        welcome = Welcome(
            session,
            tuple(range(len(series))),
            hb_ms,
            self.cfg.missed_beats,
            self.cfg.max_batch,
            self.cfg.max_msg_bytes,
        )
        self._send_control(rid, encode_welcome(welcome))
        self._event("agent_registered", rec.agent_id, "", 0, f"{len(series)} series")
        self._audit(
            "agent_registered",
            agent_id=rec.agent_id,
            agent_kind=rec.kind,
            pid=rec.pid,
            series=len(series),
            replaced=replaced is not None,
        )
        if self.writer is not None:
            self.writer.put_agent(rec.agent_id, rec.persistent())
        self._log_agent(
            logging.INFO,
            "agents_registered",
            t_recv,
            "agent %s registered (%d series, pid %d)",
            rec.agent_id,
            len(series),
            rec.pid,
        )

    def _check_hello(self, hello: Any) -> str:
        if not AGENT_ID_RE.match(hello.agent_id):
            return (
                f"agent_id {hello.agent_id[:64]!r} invalid: 1-128 of letters, digits, _ . : -, "
                "starting with a letter or digit"
            )
        if len(hello.metrics) > self.cfg.max_metrics_per_agent:
            return f"{len(hello.metrics)} metrics > max_metrics_per_agent {self.cfg.max_metrics_per_agent}"
        seen = set()
        for i, m in enumerate(hello.metrics):
            if not METRIC_NAME_RE.match(m.name):
                return f"metrics[{i}] name {m.name[:64]!r} invalid"
            for k, _v in m.labels:
                if not METRIC_NAME_RE.match(k):
                    return f"metrics[{i}] label key {k[:64]!r} invalid"
                if k == AGENT_LABEL:
                    return (
                        f"metrics[{i}] {m.name} declares the label {AGENT_LABEL!r}, which is "
                        "reserved (board rules name agents with it): rename the label"
                    )
            key = (m.name, tuple(sorted(m.labels)))
            if key in seen:
                return f"metrics[{i}] {m.name} with the same labels is declared twice"
            seen.add(key)
        return ""

    def _connection_alive(self, rec: AgentRecord) -> bool:
        """Is ``rec``'s connection still there? With ROUTER_MANDATORY a send to a gone peer
        raises EHOSTUNREACH, so a short Notice doubles as an exact probe."""
        probe = encode_notice(
            Notice(
                NoticeCode.DUPLICATE_AGENT,
                "another connection tried to register with your agent_id",
            )
        )
        try:
            self._send(rec.routing_id, probe)
        except zmq.Again:
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        return True

    # ---------------------------------------------------------------- lifecycle

    def _revive(self, rec: AgentRecord, now: int) -> None:
        if rec.state is AgentState.LOST:
            self.registry.set_state(rec, AgentState.ACTIVE, now)
            self.registry.schedule(now + self._grace_ns(rec), LIVENESS, rec)
            self.counters["agents_recovered"] += 1
            self._event("agent_recovered", rec.agent_id, "", 0, "")
            self._audit("agent_recovered", agent_id=rec.agent_id)
            self._log_agent(logging.INFO, "agents_recovered", now, "agent %s is back", rec.agent_id)

    def _gone(self, rec: AgentRecord, reason: str) -> None:
        self.registry.set_state(rec, AgentState.GONE, self.clock.monotonic_ns())
        self._targets.clear()
        if rec.eval is not None:
            rec.eval.retire()
        self._event("agent_gone", rec.agent_id, "", 0, reason)
        self._audit("agent_gone", agent_id=rec.agent_id, reason=reason)
        self._log_agent(
            logging.INFO,
            "agents_gone",
            self.clock.monotonic_ns(),
            "agent %s left: %s",
            rec.agent_id,
            reason,
        )
        if self.cfg.agent_keep_gone_s:
            if self.writer is not None:
                self.writer.put_agent(rec.agent_id, rec.persistent())
        else:
            self._forget(rec, "gone")
        self.counters["agents_gone"] += 1  # last: what it counts is done (records enqueued)

    def _forget(self, rec: AgentRecord, why: str) -> None:
        """Free a record that no longer holds a slot: its series state and rule instances go
        with it; the audit log keeps its history."""
        if not self.registry.forget(rec):
            return
        self._targets.clear()
        if rec.eval is not None:
            rec.eval.retire()
            rec.eval = None
        self._audit("agent_forgotten", agent_id=rec.agent_id, reason=why)
        if self.writer is not None:
            self.writer.forget_agent(rec.agent_id)
        self.counters["agents_forgotten"] += 1

    def _log_agent(self, level: int, kind: str, now: int, msg: str, *args: Any) -> None:
        """An agent's lifecycle line, at the log rate (each one is audited anyway): agents
        that come and go by the thousand would otherwise queue a LogRecord per event (the
        queue holds up to 10,000, ~1 KB each) and cost the loop a record's making each."""
        lim = self._limiter
        if not lim.allow(kind, now):
            return
        more = lim.take_suppressed(kind)
        if more:
            msg += f" ({more} more like it since the last one: see the audit log)"
        log.log(level, msg, *args)

    def _grace_ns(self, rec: AgentRecord) -> int:
        return rec.heartbeat_ms * 1_000_000 * self.cfg.missed_beats

    def _housekeeping(self, now: int) -> None:
        # Instructions with no Ack within ack_timeout: close them as SLA misses.
        order = self._sent_order
        limit = now - self._ack_timeout_ns
        inflight = self.inflight
        while order and order[0][0] <= limit:
            _, iid = order.popleft()
            p = inflight.pop(iid, None)
            if p is None:
                continue
            rec, rule = p[0], p[1]
            self.counters["ack_timeouts"] += 1
            rec.timeouts_in_row += 1
            stall_after = self.cfg.stall_after_timeouts
            if rec.stall_probe == iid or (
                stall_after and rec.timeouts_in_row >= stall_after and not rec.stall_backoff_ns
            ):
                self._stall(rec, now, f"{rec.timeouts_in_row} instructions in a row not acked")
            self.book.record_unacked(rule.rule_id, "timeout")
            self._event("ack_timeout", rec.agent_id, rule.rule_id, iid, "")
            self._audit(
                "instruction",
                id=iid,
                agent_id=rec.agent_id,
                rule_id=rule.rule_id,
                action=rule.rule.action_name,
                status="timeout",
                detail=f"no Ack within {self.cfg.ack_timeout_ms} ms",
            )
        lane = self.lane
        if lane is not None and lane.conns:
            for c in lane.silent(now):
                self.counters["seq_silent_closed"] += 1
                self._lane_closed(c, "said nothing")
        # Liveness and forgetting, off the registry's deadline heap: only records whose
        # deadline passed are touched, however many agents ever connected.
        reg = self.registry
        for _due, kind, rec in reg.due(now):
            if reg.by_id.get(rec.agent_id) is not rec:
                continue  # forgotten or replaced since
            if kind == FORGET:
                if rec.state is AgentState.GONE:
                    self._forget(rec, "gone")
                elif rec.state is AgentState.LOST and (
                    now - rec.last_seen_ns >= self._grace_ns(rec) + reg.forget_ns
                ):
                    self._forget(rec, f"lost for {self.cfg.agent_forget_s:g} s")
                continue
            if rec.state is not AgentState.ACTIVE:
                continue  # LOST or GONE: reviving schedules a new liveness deadline
            deadline = rec.last_seen_ns + self._grace_ns(rec)
            if deadline >= now:
                reg.schedule(deadline + 1, LIVENESS, rec)  # heard from since: look again then
                continue
            reg.set_state(rec, AgentState.LOST, now)
            self.counters["agents_lost"] += 1
            silent_ms = (now - rec.last_seen_ns) / 1e6
            self._event("agent_lost", rec.agent_id, "", 0, f"no message for {silent_ms:.0f} ms")
            self._audit("agent_lost", agent_id=rec.agent_id, silent_ms=round(silent_ms, 1))
            self._log_agent(
                logging.WARNING,
                "agents_lost",
                now,
                "agent %s lost: %d beats missed",
                rec.agent_id,
                self.cfg.missed_beats,
            )
        # Agents recovered from the store that never came back are forgotten after the grace.
        if reg.known and now - self.started_ns >= reg.forget_ns:
            for agent_id in list(reg.known):
                del reg.known[agent_id]
                self.counters["agents_forgotten"] += 1
                self._audit("agent_forgotten", agent_id=agent_id, reason="never came back")
                if self.writer is not None:
                    self.writer.forget_agent(agent_id)
        hook = self.on_housekeeping
        if hook is not None:
            try:
                hook(now)
            except Exception:  # a broken health hook must not take control down
                self.counters["handler_errors"] += 1
                if self._limiter.allow("handler_errors", now):
                    log.exception("housekeeping hook failed")

    # ---------------------------------------------------------------- rule tables

    def prepare(self, table: CompiledTable) -> dict[Any, Any]:
        """Build every live agent's evaluator under ``table``, and its board rules over every
        agent seen (any thread: reads live state, mutates none of it), so that ``activate``
        is a pointer swap per agent."""
        out: dict[Any, Any] = {}
        for rec in list(self.registry.by_id.values()):
            old = rec.eval
            if rec.state is AgentState.GONE or old is None:
                continue
            ev, pending = table.bind(
                rec,
                rec.agent_id,
                rec.series,
                first_seen_ns=rec.first_seen_ns,
                previous=old,
                link=not table.board_rules,  # linked once, with the board rules, below
            )
            out[rec] = (old, ev, pending)
        if table.board_rules:
            out[_BOARD] = self._bind_board(table, out, self.clock.monotonic_ns())
        return out

    def _bind_board(
        self, table: CompiledTable, prepared: dict[Any, Any], t_ns: int
    ) -> tuple[BoardEval, Any]:
        """``table``'s board rules over every agent seen: the evaluators in ``prepared``, else
        the current ones (a gone agent's too: its silence is what a board rule may catch)."""
        evals, fresh = {}, []
        for rec in list(self.registry.by_id.values()):
            got = prepared.get(rec)
            ev = got[1] if got is not None else rec.eval
            if ev is not None:
                evals[rec.agent_id] = ev
                if got is not None:
                    fresh.append(rec.agent_id)
        board, pending = bind_board(
            table, evals.items(), origin_ns=t_ns, owner=BOARD_AGENT, previous=self.board
        )
        for aid in fresh:  # bound unlinked by prepare: link the ones bind_board did not
            ev = evals[aid]
            if not ev.board:
                ev.link()
        return board, pending

    def _rebind_board(self, t_ns: int) -> None:
        """Rebind the active table's board rules (on the loop thread: an agent registered)."""
        board, pending = self._bind_board(self.table, {}, t_ns)
        board.make_current()
        self.timers.schedule_absent(pending)
        self.board = board

    def activate(
        self, table: CompiledTable, prepared: dict[Any, Any] | None = None
    ) -> dict[str, Any]:
        """Swap the active table (on the loop thread, between two iterations).

        Series state (latest samples, windows) always carries over; rule state (held-for,
        edge, re-arm, cooldown) carries over for rules whose id and normalised content are
        unchanged, board rules included. Agents that registered or re-registered after
        ``prepare`` are bound here (and then the board rules are bound again, here)."""
        t0 = time.perf_counter_ns()
        prepared = prepared or {}
        rebound = False
        for rec in self.registry.by_id.values():
            if rec.state is AgentState.GONE or rec.eval is None:
                continue
            got = prepared.get(rec)
            if got is not None and got[0] is rec.eval:
                _, ev, pending = got
            else:
                rebound = True
                ev, pending = table.bind(
                    rec,
                    rec.agent_id,
                    rec.series,
                    first_seen_ns=rec.first_seen_ns,
                    previous=rec.eval,
                )
            ev.make_current()
            self.timers.schedule_absent(pending)
            rec.eval = ev
        previous = self.table
        self.lkg_table = previous
        self.table = table
        now = self.clock.monotonic_ns()
        bound = prepared.get(_BOARD)
        if not table.board_rules:
            self.board = None
        elif bound is None or rebound:  # an agent (re)registered since prepare: bind here
            self._rebind_board(now)
        else:
            self.board, pending = bound
            self.board.make_current()
            self.timers.schedule_absent(pending)
        if self.board is not None:
            self.board.activated_at(now)
        self.counters["rule_tables_activated"] += 1
        pause_us = (time.perf_counter_ns() - t0) / 1000.0
        self._event("rules_activated", "", "", 0, f"version {table.version}")
        return {
            "version": table.version,
            "previous": previous.version,
            "rules": len(table.rules),
            "pause_us": pause_us,
        }

    def swap_book(self, fresh: StatsBook) -> StatsBook:
        old, self.book = self.book, fresh
        return old

    # ---------------------------------------------------------------- reporting

    def _bad(
        self,
        counter: str,
        rid: bytes,
        detail: str,
        notice: NoticeCode | None = None,
        *,
        agent_id: str = "",
        n: int = 1,
        always_audit: bool = False,
    ) -> None:
        """Count a refusal; log, audit and answer it at a bounded rate."""
        self.counters[counter] += n
        now = self.clock.monotonic_ns()
        if not (self._limiter.allow(counter, now) or always_audit):
            return
        suppressed = self._limiter.take_suppressed(counter)
        log.warning(
            "refused from %s: %s: %s%s",
            agent_id or _peer(rid),
            counter,
            detail,
            f" ({suppressed} more since last report)" if suppressed else "",
        )
        self._audit(
            "bad_input",
            reason=counter,
            peer=_peer(rid),
            agent_id=agent_id,
            detail=detail[:500],
            suppressed=suppressed,
        )
        self._event("bad_input", agent_id, "", 0, f"{counter}: {detail[:200]}")
        if notice is not None:
            self._send_control(rid, encode_notice(Notice(notice, detail[:500])))

    def _send_control(self, rid: bytes, buf: bytes) -> None:
        try:
            self._send(rid, buf)
            self.counters["notices_sent"] += 1
        except zmq.ZMQError:  # gone or not reading: the refusal is counted already
            self.counters["notices_dropped"] += 1

    def _event(self, kind: str, agent_id: str, rule_id: str, iid: int, detail: str) -> None:
        self.events.append(self.clock.wall_ms(), kind, agent_id, rule_id, iid, detail)

    @property
    def event_seq(self) -> int:
        """The newest event's sequence number (0: none yet)."""
        return self.events.seq

    def _audit(self, event: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.audit(event, **fields)

    def _audit_later(self, event: str, **fields: Any) -> None:
        """:meth:`_audit` from another thread: the writer's queue has one producer, the loop."""
        self.post(lambda: self._audit(event, **fields))

    # ------------------------------------------------- snapshots (any thread)

    def agents_snapshot(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic_ns()
        lane = self.lane
        out = []
        for r in list(self.registry.by_id.values()):
            row = r.describe(now)
            peer = lane.peer(r.routing_id) if lane is not None else None
            if peer is not None:  # a fast-lane agent: its transport and peer credentials
                row.update(peer)
            out.append(row)
        for agent_id, rec in list(self.registry.known.items()):
            out.append(
                {
                    "agent_id": agent_id,
                    "state": "offline",
                    "kind": rec.get("kind", ""),
                    "series": len(rec.get("series", [])),
                    "last_state": rec.get("state", ""),
                    "registered_wall_ms": rec.get("registered_wall_ms"),
                }
            )
        return sorted(out, key=lambda d: d["agent_id"])

    def events_after(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        return self.events.after(seq, limit)


def _trigger(action: str, owner: object, f: Firing) -> str:
    """An instruction event's detail: the action and the sample that fired it (``owner``:
    the firing's agent record, whose series name the metric; a board rule's has none)."""
    series = owner.series if isinstance(owner, AgentRecord) else ()
    mid = f.metric_id
    name = series[mid][1] if mid < len(series) and series[mid][0] == mid else f"metric {mid}"
    return f"{action} ({name} = {f.value:g})"


def hard_msg_cap(max_msg_bytes: int) -> int:
    """The libzmq MAXMSGSIZE for a soft limit of ``max_msg_bytes``: a frame up to 64 KiB over
    the limit is still read, refused and answered (TOO_LARGE); a bigger one drops the
    connection before libzmq allocates it."""
    return max_msg_bytes + 65536


def rcv_hwm(rcv_conn_bytes: int, frame_cap: int) -> int:
    """The per-connection RCVHWM (frames) that keeps a connection's queue under
    ``rcv_conn_bytes`` even if every frame is as big as ``frame_cap``."""
    return max(4, min(1000, rcv_conn_bytes // frame_cap))


_ACK_NAMES = {
    int(AckStatus.OK): "ok",
    int(AckStatus.FAILED): "failed",
    int(AckStatus.REJECTED): "rejected",
}


def _session_agent(registry: Registry, session: int) -> str:
    rec = registry.by_session.get(session)
    return rec.agent_id if rec is not None else ""


def _peer(rid: bytes) -> str:
    if rid[:4] == _LANE_RID:
        return f"fast-lane connection {int.from_bytes(rid[4:], 'big')}"
    return rid.decode("utf-8", "replace")[:160] if rid else "?"
