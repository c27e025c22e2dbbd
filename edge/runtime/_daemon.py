"""edged: assembles the loop, the store, the ctl server and the metrics endpoint.

Threads: ``edge-loop`` (or the main thread under ``edged``) owns agents.sock and all control
state; ``edge-ctl`` serves ctl.sock and writes periodic stats snapshots; ``edge-store-writer``
does synced group commits; ``edge-metrics`` serves Prometheus scrapes. The process never forks
after opening LMDB.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import zmq

from .. import __version__
from .._digest import sha256
from .._log import configure as configure_logging
from .._log import dropped_records as dropped_log_records
from .._rt import apply_to_helper_threads
from .._sdnotify import Notifier
from ..clock import SYSTEM_CLOCK, Clock
from ..config import LOG_LEVEL_HELP, LOG_LEVELS, EdgeConfig, load_config
from ..errors import (
    AlreadyRunningError,
    ConfigError,
    EdgeError,
    RuleError,
    RuleTableError,
    RuntimeStateError,
    StoreError,
)
from ..rules import (
    CompiledTable,
    RuleSet,
    TableInfo,
    TrustedKeys,
    decode_table_with_info,
    encode_rule_table,
    load_trusted_keys,
    rule_json,
)
from ..store import Outbox, Store, StoreWriter
from ..transport import prepare_run_dir
from ..wire import CtlOp
from ._agg import Aggregator, BatchTap, HealthProbe
from ._conncap import ensure_fd_limit
from ._ctl import BadRequestError, CtlServer, RefusedError
from ._gcwatch import GcOffLoop, GcWatch
from ._lifecycle import AgentState
from ._lock import InstanceLock
from ._loop import ControlLoop
from ._memory import MemoryWatch
from ._prom import MetricsServer
from ._stats import StatsBook, StatsView

log = logging.getLogger("edge.edged")

_TICK_MS = 50
_STATUS_NS = 5_000_000_000
"""How often the STATUS line to systemd is refreshed (sent only when it changed)."""
"""The ctl thread's periodic work (aggregation digest, timed GC, stats snapshots) runs at
least this often."""


class Edged:
    """The runtime daemon. ``start()`` runs the loop on a thread (tests, bench);
    ``serve()`` runs it on the calling thread (the ``edged`` command)."""

    def __init__(
        self,
        cfg: EdgeConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        utilisation: Callable[[], float] | None = None,
        notifier: Notifier | None = None,
    ):
        """``utilisation`` replaces the overload scheduler's load probe (0-1; tests);
        ``notifier`` is systemd's notify socket (default: from $NOTIFY_SOCKET, inert without)."""
        self.cfg = cfg
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self._notified_ready = False
        self._next_status_ns = 0
        self.clock = clock
        self._utilisation = utilisation
        self._locks: list[InstanceLock] = []
        self.store: Store | None = None
        self.writer: StoreWriter | None = None
        self.outbox: Outbox | None = None
        self.loop: ControlLoop | None = None
        self.ctl: CtlServer | None = None
        self.metrics: MetricsServer | None = None
        self.stats: StatsView | None = None
        self.agg: Aggregator | None = None
        self.gcwatch = GcWatch()
        self.memory = MemoryWatch(cfg.mem_trim_margin_bytes, file_margin=cfg.mem_file_margin_bytes,
                                  settle_margin=cfg.mem_settle_margin_bytes)
        """RSS, its high-water mark, and malloc_trim after bursts (the ctl thread's tick)."""
        """Collections and their pauses since start (or the last stats reset)."""
        self.fd_limit: dict[str, int] = {}
        """RLIMIT_NOFILE as edged raised it at start-up, and what its caps need."""
        self.rt_helpers: dict[str, Any] = {}
        """The real-time profile of the threads beside the loop (set once they run)."""
        self.gc_off_loop: GcOffLoop | None = None
        """Set by serve() (the edged command) unless gc_interval_ms is 0."""
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._thread: threading.Thread | None = None
        self._next_snapshot_ns = 0
        self._trusted: TrustedKeys = {}
        self._groups = tuple(g.strip() for g in cfg.device_groups.split(",") if g.strip())
        self._infos: dict[int, TableInfo] = {}
        self._counter_base: dict[str, int] = {}
        """The loop's counters at the operator's last reset (edgectl stats --reset)."""
        self._closed = False
        self._ready = False
        """open() went all the way (the stop records are written only then)."""
        self.started_wall_ms = clock.wall_ms()

    # ------------------------------------------------------------ lifecycle

    def open(self) -> Edged:
        """Acquire the lock, open state, bind sockets. Raises EdgeError subclasses (an OS
        error on the way becomes a RuntimeStateError saying what failed and what to do);
        whatever fails, everything opened or started before it is closed again first."""
        cfg = self.cfg
        t0 = time.perf_counter()
        try:
            with _starting(f"run dir {cfg.run_dir}", "make it writable or choose another --run-dir"):
                prepare_run_dir(cfg.run_dir, cfg.run_dir_group)
                self._locks.append(InstanceLock(cfg.run_dir / "edged.lock").acquire())
            with _starting("file descriptors", "raise LimitNOFILE (ulimit -Hn) or lower "
                           "max_connections / fast_lane_max_conns"):
                self.fd_limit = ensure_fd_limit(
                    cfg.max_connections, cfg.fast_lane_max_conns if cfg.fast_lane else 0)
            with _starting(f"data dir {cfg.data_dir}",
                           "make it writable or choose another --data-dir"):
                cfg.data_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
                self._locks.append(InstanceLock(cfg.data_dir / "edged.lock").acquire())
            if cfg.metrics_addr:  # bound first, served once ready: a taken port costs nothing
                with _starting(f"metrics_addr {cfg.metrics_addr}",
                               "set metrics_addr (--metrics-addr) to a free local host:port, "
                               "or '' to turn /metrics off"):
                    self.metrics = MetricsServer(cfg.metrics_addr, self._metrics_read,
                                                 start=False)
            self.store = _open_store(cfg, self.clock)
            self.memory.release_files = self.store.release_resident
            self.outbox = Outbox(
                self.store,
                max_bytes=cfg.outbox_max_bytes,
                max_age_s=cfg.outbox_max_age_s,
                policy=cfg.outbox_policy,
            )
            self.writer = StoreWriter(
                self.store,
                commit_interval_ms=cfg.commit_interval_ms,
                clock=self.clock,
                outbox=self.outbox,
            )
            self._trusted = load_trusted_keys(
                k.strip() for k in cfg.rules_trusted_keys.split(",") if k.strip()
            )
            table = self._recover_table()
            starts = self.store.count_start()
            self.writer.start()
            self._ctx = zmq.Context()
            with _starting(f"the sockets in {cfg.run_dir}",
                           "make the run dir writable or choose another --run-dir"):
                self.loop = ControlLoop(
                    cfg,
                    self._ctx,
                    # start n numbers its instructions from n * 10^12 + 1: unique across
                    # restarts (an agent or a log reader never confuses two), still readable
                    first_instruction_id=starts * IDS_PER_START + 1,
                    writer=self.writer,
                    clock=self.clock,
                    table=table,
                    utilisation=self._utilisation,
                )
                self.ctl = CtlServer(
                    self._ctx, cfg.run_dir, self._handlers(), tick=self._tick, tick_ms=_TICK_MS
                )
            self.loop.registry.known = self.store.load_agents()
            self.loop.on_housekeeping = self._health
            aggregating = cfg.aggregating
            self.stats = StatsView(
                lambda fresh: self._loop_call(lambda: self._require_loop().swap_book(fresh)),
                windowed=aggregating,
            )
            if aggregating:
                self.agg = self._make_aggregator(self.loop)
                log.info(
                    "aggregates every %g s into the outbox for edge-sync (upstream %s)",
                    cfg.agg_window_s,
                    cfg.upstream_url,
                )
            else:
                log.info(
                    "aggregates off: %s", "agg_window_s = 0" if cfg.upstream_url else
                    "no upstream configured (set upstream_url to keep them for edge-sync)"
                )
            self.gcwatch.install()
            if self.metrics is not None:
                self.metrics.start()
        except BaseException:
            self.close()
            raise
        self._ready = True
        self.writer.audit(
            "edged_started",
            pid=os.getpid(),
            version=__version__,
            rules_version=table.version,
            run_dir=str(cfg.run_dir),
        )
        log.info(
            "edged %s ready in %.0f ms: agents %s, ctl %s%s",
            __version__,
            (time.perf_counter() - t0) * 1000,
            self.loop.endpoint,
            self.ctl.endpoint,
            f", metrics http://{self.metrics.host}:{self.metrics.port}/metrics"
            if self.metrics
            else "",
        )
        return self

    def _decode(
        self, blob: bytes, *, check_applies: bool = True, require_signed: bool = False
    ) -> tuple[RuleSet, TableInfo]:
        """Verify a stored or pushed table: structure, signature (trusted keys), schema
        version, hash, and (when ``check_applies``) expiry and scope. Unsigned tables are
        refused when the config or ``require_signed`` says so. Raises RuleError."""
        ruleset, info = decode_table_with_info(
            blob,
            trusted_keys=self._trusted,
            require_signed=self.cfg.rules_require_signed or require_signed,
        )
        if check_applies:
            info.check_applies(
                now_unix_ms=self.clock.wall_ms(), device_id=self.cfg.device_id, groups=self._groups
            )
        return ruleset, info

    def _recover_table(self) -> CompiledTable:
        """The table to run at start, and one log line saying which and why.

        Without a rules file: the active table from the store, else last-known-good, else
        none. A stored table that no longer verifies (a key removed from the trust list, an
        older schema) is skipped with an error in the log, never a failed start. Expiry is not
        checked here: a board keeps controlling with the table it has.

        With a rules file (``--rules``) the file wins: when its rules differ from the stored
        table's they are activated as a new version (the stored one becomes last-known-good,
        so ``edgectl rules rollback`` brings it back). The one exception is a stored table
        that is signed (the fleet path, a signed push): it keeps running, and a warning names
        the conflict; a local file must not undo what the fleet decided.
        """
        assert self.store is not None
        recovered: tuple[str, RuleSet, TableInfo] | None = None
        for which, stored in (
            ("active", self.store.active_rule_table()),
            ("last-known-good", self.store.lkg_rule_table()),
        ):
            if stored is None:
                continue
            version, blob = stored
            try:
                ruleset, info = self._decode(blob, check_applies=False)
            except RuleError as exc:
                log.error("stored %s rule table %d refused: %s", which, version, exc)
                continue
            self._infos[ruleset.version] = info
            recovered = (which, ruleset, info)
            break
        if self.cfg.rules_file is not None:
            return self._table_from_file(self.cfg.rules_file, recovered)
        if recovered is None:
            log.info("no rule table: none stored and no --rules file (edgectl rules push FILE)")
            return CompiledTable(RuleSet(()))
        which, ruleset, _ = recovered
        log.info(
            "running the stored %s rule table version %d (%d rules)",
            which,
            ruleset.version,
            len(ruleset.rules),
        )
        return CompiledTable(ruleset)

    def _table_from_file(
        self, path: Path, recovered: tuple[str, RuleSet, TableInfo] | None
    ) -> CompiledTable:
        """``--rules FILE`` at start: see :meth:`_recover_table`. A file with mistakes is a
        failed start (RuleFileError, every mistake listed), never a silent fallback."""
        assert self.store is not None
        try:
            digest = sha256(path.read_bytes()).digest()
        except OSError:
            digest = b""  # load_rule_file below says what is wrong with the file
        if recovered is not None and recovered[0] == "active":
            stored = recovered[1]
            if digest and self.store.rules_file_mark() == (digest, stored.version):
                # the file edged last activated, byte for byte: no compiler, no PyYAML (~1.4
                # MB of RSS and ~40 ms of start-up on every boot)
                log.info(
                    "running the stored active rule table version %d: %s is unchanged",
                    stored.version,
                    path,
                )
                return CompiledTable(stored)
        from ..rules import RuleFileError, load_rule_file  # the compiler, for a changed file

        try:
            ruleset = load_rule_file(path)
        except RuleFileError as exc:  # one line: each problem's place and message
            problems = "; ".join(p.render().splitlines()[0] for p in exc.problems)
            raise RuleError(
                f"rule file {path}: {problems}; fix it (`edgectl rules check {path}` shows "
                "every problem) or start without --rules"
            ) from exc
        if recovered is not None:
            which, stored, info = recovered
            if stored.content_hash == ruleset.content_hash:
                log.info(
                    "running the stored %s rule table version %d: the same rules as %s",
                    which,
                    stored.version,
                    path,
                )
                if which == "active" and digest:
                    self.store.set_rules_file_mark(digest, stored.version)
                return CompiledTable(stored)
            if info.key_id is not None:
                log.warning(
                    "%s differs from the stored %s rule table version %d, which is signed "
                    "(key %s): running the signed table and ignoring the file; drop --rules, "
                    "or push a signed table of the file (edgectl rules compile --sign, "
                    "edgectl fleet push)",
                    path,
                    which,
                    stored.version,
                    info.key_id.hex()[:16],
                )
                return CompiledTable(stored)
        # above every stored version (a rollback leaves newer ones stored): versions are immutable
        floor = max((row["version"] for row in self.store.list_rule_tables()), default=0) + 1
        ruleset = _with_version(ruleset, max(ruleset.version, floor))
        blob = encode_rule_table(ruleset)
        self._infos[ruleset.version] = self._decode(blob, check_applies=False)[1]
        self.store.put_rule_table(ruleset.version, blob, activate=True)
        if digest:
            self.store.set_rules_file_mark(digest, ruleset.version)
        if recovered is None:
            log.info("activated %s as rule table version %d", path, ruleset.version)
        else:
            log.info(
                "activated %s as rule table version %d: its rules differ from the stored %s "
                "table version %d (now last-known-good: edgectl rules rollback brings it back)",
                path,
                ruleset.version,
                recovered[0],
                recovered[1].version,
            )
        return CompiledTable(ruleset)

    def start(self) -> Edged:
        """Open (if needed) and run the loop on a thread; returns once it is polling."""
        if self.loop is None:
            self.open()
        assert self.loop is not None and self.ctl is not None
        self._thread = threading.Thread(target=self.loop.run, name="edge-loop")
        self._thread.start()
        self.gcwatch.loop_thread = self._thread.ident
        self.loop.ready.wait(10)
        self.ctl.start()
        self._pin_helpers(skip={self._thread.native_id or 0})
        return self

    def _pin_helpers(self, skip: set[int]) -> None:
        """The real-time profile for the threads beside the loop (edge._rt: why)."""
        self.rt_helpers = apply_to_helper_threads(
            cpu_affinity=self.cfg.cpu_affinity, rt_priority=self.cfg.rt_priority, skip=skip
        )

    def serve(self) -> None:
        """Run the loop on this thread until SIGTERM/SIGINT or ``request_stop``."""
        if self.loop is None:
            self.open()
        assert self.loop is not None and self.ctl is not None
        self.gcwatch.loop_thread = threading.get_ident()
        if self.cfg.gc_interval_ms > 0:
            self.gc_off_loop = GcOffLoop(self.cfg.gc_interval_ms * 1_000_000).start()
        self.ctl.start()  # after the GC policy: the first STATUS already reports it
        self._pin_helpers(skip={threading.get_native_id()})  # this thread: the loop's own
        try:
            self.loop.run()
        finally:
            if self.gc_off_loop is not None:
                self.gc_off_loop.stop()

    def request_stop(self) -> None:
        if self.loop is not None:
            self.loop.stop()

    def close(self) -> None:
        """Stop everything, flush state (final stats snapshot, synced), release the lock.

        Also the undo of a failed :meth:`open`: each step runs whatever the previous ones did
        (a step that fails is logged and the rest still run), so no thread, socket, store or
        lock outlives it."""
        if self._closed:
            return
        self._closed = True
        if self._notified_ready:
            _quietly("sd_notify STOPPING", self.notifier.stopping)
        _quietly("gc watch", self.gcwatch.uninstall)
        if self.loop is not None:
            _quietly("loop stop", self.loop.stop)
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(10)
        if self.ctl is not None:
            _quietly("ctl server", self.ctl.stop)
        if self.metrics is not None:
            _quietly("metrics server", self.metrics.close)
        if self.writer is not None:
            if self._ready:
                _quietly("final stats snapshot", self._final_records)
            _quietly("store writer", self.writer.close)
        if self.loop is not None:
            _quietly("agents.sock", self.loop.close)
        if self._ctx is not None:
            # destroy, not term: a socket a failed start left open must not hang the exit
            _quietly("zmq context", lambda: self._ctx.destroy(linger=0) if self._ctx else None)
        if self.store is not None:
            _quietly("store", self.store.close)
        for lock in reversed(self._locks):
            _quietly(f"lock {lock.path}", lock.release)
        self._locks.clear()
        _quietly("sd_notify socket", self.notifier.close)

    def _final_records(self) -> None:
        assert self.writer is not None and self.stats is not None and self.loop is not None
        try:
            self.stats.refresh(self.loop.swap_book)
            self.writer.put_stats(self._stats_doc(refresh=False))
        except Exception:
            log.exception("final stats snapshot failed")
        if self.agg is not None:
            try:
                self.agg.close_window()  # the partial window is kept, not lost
            except Exception:
                log.exception("final aggregate failed")
        self.writer.audit(
            "edged_stopped",
            pid=os.getpid(),
            counters={k: v for k, v in self.loop.counters.items() if v},
        )

    def __enter__(self) -> Edged:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ helpers

    def _health(self, now_ns: int) -> None:
        """The loop's housekeeping hook (loop thread, every 50 ms): READY once the loop turns
        (sockets bound, store open, table loaded: ``open`` did those), then WATCHDOG pings and
        a STATUS line every few seconds. Nothing here runs when the loop is stuck."""
        notifier = self.notifier
        if not notifier.active:
            return
        if not self._notified_ready:
            self._notified_ready = True
            notifier.ready(self.status_line())
            self._next_status_ns = now_ns + _STATUS_NS
        notifier.watchdog(now_ns)
        if now_ns >= self._next_status_ns:
            self._next_status_ns = now_ns + _STATUS_NS
            notifier.status(self.status_line())

    def status_line(self) -> str:
        """One line of health for systemd's STATUS (loop thread, or after it stopped)."""
        loop = self._require_loop()
        c = loop.counters
        counts = loop.registry.counts()
        bad = sum(v for k, v in c.items() if k.startswith("bad_"))
        return (
            f"agents {counts[AgentState.ACTIVE.value]} active {counts[AgentState.LOST.value]} lost"
            f", rules v{loop.table.version} ({len(loop.table.rules)})"
            f", {c['batches']} batches, {c['instructions_sent']} instructions"
            f", {c['ack_timeouts']} ack timeouts, {bad} bad frames, {len(loop.inflight)} in flight"
        )

    def _require_loop(self) -> ControlLoop:
        if self.loop is None:
            raise RefusedError("edged is not running")
        return self.loop

    def _loop_call(self, fn: Any) -> Any:
        return self._require_loop().call(fn)

    def _make_aggregator(self, loop: ControlLoop) -> Aggregator:
        cfg = self.cfg
        tap = loop.tap = BatchTap(cfg.agg_max_samples)
        return Aggregator(
            device_id=cfg.device_id,
            window_s=cfg.agg_window_s,
            max_samples=cfg.agg_max_samples,
            max_series=cfg.agg_max_series,
            clock=self.clock,
            tap=tap,
            counters=lambda: dict(loop.counters),
            table=lambda: (loop.table.version, loop.table.ruleset.content_hash.hex()),
            agents_active=lambda: loop.registry.counts()[AgentState.ACTIVE.value],
            take_book=self._take_window,
            emit=self._emit_aggregate,
            health=HealthProbe(cfg.data_dir),
        )

    def _take_window(self) -> StatsBook:
        assert self.stats is not None and self.loop is not None
        loop = self.loop
        # once the loop has stopped (the final window at close), swap its book directly
        return self.stats.take_window(loop.swap_book if loop.stopped.is_set() else None)

    def _emit_aggregate(self, buf: bytes, wall_ns: int) -> None:
        assert self.writer is not None
        self.writer.put_outbox(buf, wall_ns)

    def _tick(self) -> None:
        """On the ctl thread: the aggregation digest and windows, and a stats snapshot into
        the store every stats_interval_ms."""
        if self.agg is not None and self.loop is not None and not self.loop.stopped.is_set():
            try:
                self.agg.tick()
            except Exception:  # the stats snapshot below must still happen
                log.exception("aggregation window failed")
        now = self.clock.monotonic_ns()
        if self.gc_off_loop is not None:
            self.gc_off_loop.tick(time.monotonic_ns())  # real time: it is about real pauses
        self.memory.tick()
        if now < self._next_snapshot_ns or self.writer is None:
            return
        self._next_snapshot_ns = now + self.cfg.stats_interval_ms * 1_000_000
        if self._next_snapshot_ns and self.loop is not None and not self.loop.stopped.is_set():
            self.writer.put_stats(self._stats_doc())

    def _stats_doc(self, refresh: bool = True) -> dict[str, Any]:
        assert self.stats is not None and self.loop is not None
        doc = self.stats.snapshot(refresh=refresh)
        doc["counters"], doc["scheduler"] = self._counts(since_reset=True)
        doc["wall_ms"] = self.clock.wall_ms()
        doc["rules_version"] = self.loop.table.version
        return doc

    def _metrics_read(self) -> dict[str, Any]:
        loop = self._require_loop()
        assert self.stats is not None and self.writer is not None
        # since start, whatever an operator reset: Prometheus's counters only ever grow
        return {
            "counters": dict(loop.counters),
            "agents": loop.registry.counts(),
            "agent_health": [
                (rec.agent_id, name, v)
                for rec in list(loop.registry.by_id.values())
                for name, v in sorted(rec.health().items())
            ],
            "stats": self.stats.snapshot(since_reset=False),
            "histograms": self.stats.prometheus(),
            "store": self.writer.counters,
        }

    # ------------------------------------------------------------ ctl handlers

    def _handlers(self) -> dict[CtlOp, Any]:
        return {
            CtlOp.STATUS: self._ctl_status,
            CtlOp.AGENTS: lambda args, blob: {"agents": self._require_loop().agents_snapshot()},
            CtlOp.STATS: self._ctl_stats,
            CtlOp.STATS_RESET: self._ctl_stats_reset,
            CtlOp.RULES_PUSH: self._ctl_rules_push,
            CtlOp.RULES_LIST: self._ctl_rules_list,
            CtlOp.RULES_ROLLBACK: self._ctl_rules_rollback,
            CtlOp.TAIL: self._ctl_tail,
        }

    def _ctl_status(self, args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        loop = self._require_loop()
        assert self.writer is not None and self.store is not None
        table = loop.table
        counters, scheduler = self._counts(since_reset=True)
        return {
            "device_id": self.cfg.device_id,
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round((self.clock.monotonic_ns() - loop.started_ns) / 1e9, 3),
            "run_dir": str(self.cfg.run_dir),
            "data_dir": str(self.cfg.data_dir),
            "agents": loop.registry.counts(),
            "rules": {
                "version": table.version,
                "rules": len(table.rules),
                "hash": table.ruleset.content_hash.hex(),
            },
            "inflight": len(loop.inflight),
            "realtime": {**loop.rt_applied, "helpers": self.rt_helpers},
            # Python's thread names by native id: what `top -H` / /proc/PID/task show as
            # "edged" (libzmq names its own "ZMQbg/..."), for pinning and for profiling
            "threads": {
                "loop" if t.ident == self.gcwatch.loop_thread else t.name: t.native_id
                for t in threading.enumerate()
            },
            "gc": {
                **self.gcwatch.snapshot(),
                "young_skipped": self.gc_off_loop.skipped if self.gc_off_loop else 0,
            },
            "memory": self.memory.snapshot(),
            "connections": loop.conncap.snapshot() if loop.conncap is not None else None,
            "fd_limit": self.fd_limit,
            "counters": counters,
            "scheduler": scheduler,
            "store": self.writer.counters,
            "log_dropped": dropped_log_records(),
            "upstream": self._upstream_status(),
            "metrics_url": f"http://{self.metrics.host}:{self.metrics.port}/metrics"
            if self.metrics
            else None,
        }

    def _upstream_status(self) -> dict[str, Any]:
        """The aggregation windows and the outbox edge-sync drains (docs: README, Upstream)."""
        agg = self.agg
        return {
            "agg_window_s": self.cfg.agg_window_s if agg is not None else 0,
            "windows": agg.windows if agg is not None else 0,
            "samples_not_summarised": agg.tap.skipped if agg is not None else 0,
            "outbox": self.outbox.stats() if self.outbox is not None else None,
        }

    def _counts(self, *, since_reset: bool = False) -> tuple[dict[str, int], dict[str, Any]]:
        """The loop's counters and the scheduler's counts, copied together on the loop thread
        (between two iterations) so that they agree; directly once the loop has stopped.
        ``since_reset``: the counters since the operator's last ``edgectl stats --reset``
        (the loop's own never go back: Prometheus and the aggregates read them)."""
        loop = self._require_loop()

        def read() -> tuple[dict[str, int], dict[str, Any]]:
            return dict(loop.counters), self._scheduler_status()

        result: tuple[dict[str, int], dict[str, Any]]
        if loop.stopped.is_set() or not loop.ready.is_set():
            result = read()
        else:
            try:
                result = loop.call(read)
            except RuntimeStateError:  # stopping meanwhile
                result = read()
        if since_reset and self._counter_base:
            base = self._counter_base
            return {k: v - base.get(k, 0) for k, v in result[0].items()}, result[1]
        return result

    def _scheduler_status(self) -> dict[str, Any]:
        """Overload control: mode, queue, load, weights, batches by rule priority (the totals
        are the ``sched_*`` counters)."""
        ov = self._require_loop().overload
        return {"enabled": False} if ov is None else ov.snapshot()

    def _ctl_stats(self, args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        return self._stats_doc()

    def _ctl_stats_reset(self, args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        assert self.stats is not None
        # the operator's view only: stats and status count from here, Prometheus and the
        # upstream aggregates keep counting from the start (a client must not reset them)
        self.stats.reset()
        self.gcwatch.reset()
        loop = self._require_loop()

        def reset() -> None:
            self._counter_base = dict(loop.counters)
            if loop.overload is not None:
                loop.overload.reset_counts()

        loop.call(reset)
        return {"reset": True}

    def _ctl_rules_push(self, args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        """Verify and activate a table. Optional args (edge-sync's fleet path sets them all):
        ``require_signed`` refuses an unsigned table whatever the config says;
        ``require_newer`` refuses a version that is not newer than the active one instead of
        renumbering an unsigned table (checked here, on the ctl thread that serialises every
        activation, so nothing can activate in between); ``source`` (text) is copied into the
        audit record of the activation or refusal."""
        loop = self._require_loop()
        assert self.store is not None and self.writer is not None
        if not blob:
            raise BadRequestError("RulesPush needs a RuleTable in blob (edgectl rules push FILE)")
        require_signed, require_newer = _flag(args, "require_signed"), _flag(args, "require_newer")
        source = args.get("source")
        if source is not None and not isinstance(source, str):
            raise BadRequestError("RulesPush: source must be a string")
        tag = {"source": source} if source else {}
        try:
            ruleset, info = self._decode(blob, require_signed=require_signed)
            active = loop.table.version
            if ruleset.version <= active:
                if info.key_id is not None or require_newer:  # cannot or must not renumber
                    raise RuleTableError(
                        f"{'signed ' if info.key_id is not None else ''}rule table version "
                        f"{ruleset.version} is not newer than the active version {active}; "
                        "sign a table with a higher --version"
                    )
                ruleset = _with_version(ruleset, active + 1)
                blob = encode_rule_table(
                    ruleset, expires_at_unix_ms=info.expires_at_unix_ms, scope=info.scope
                )
                info = self._decode(blob)[1]
        except RuleError as exc:
            self.writer.audit("rules_refused", reason=str(exc), bytes=len(blob), **tag)
            raise RefusedError(f"rule table refused: {exc}") from None
        self.store.put_rule_table(ruleset.version, blob, activate=False)
        return self._activate(ruleset, info, "rules_activated", **tag)

    def _activate(
        self, ruleset: RuleSet, info: TableInfo, event: str, **audit: Any
    ) -> dict[str, Any]:
        """Compile and prepare off the loop, mark active in the store, swap on the loop."""
        loop = self._require_loop()
        assert self.store is not None and self.writer is not None
        table = CompiledTable(ruleset, previous=loop.table)  # compiled here, off the loop
        prepared = loop.prepare(table)  # and every agent's evaluator too
        self.store.set_active_rule_table(ruleset.version)
        self._infos[ruleset.version] = info
        result = loop.call(lambda: loop.activate(table, prepared))
        result["hash"] = ruleset.content_hash.hex()
        result["signed_by"] = info.key_id.hex() if info.key_id is not None else None
        self.writer.audit(event, **result, **audit)
        log.info(
            "rule table version %d active (%d rules, loop pause %.0f µs)",
            result["version"],
            result["rules"],
            result["pause_us"],
        )
        return result

    def _ctl_rules_rollback(self, args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        """Activate the last-known-good table; the current one becomes last-known-good."""
        assert self.store is not None and self.writer is not None
        lkg = self.store.lkg_rule_table()
        if lkg is None:
            raise RefusedError("there is no last-known-good rule table to roll back to")
        try:
            ruleset, info = self._decode(lkg[1], check_applies=False)
        except RuleError as exc:
            self.writer.audit("rules_refused", reason=f"rollback: {exc}", version=lkg[0])
            raise RefusedError(f"last-known-good table {lkg[0]} refused: {exc}") from None
        return self._activate(ruleset, info, "rules_rolled_back")

    def _ctl_rules_list(self, args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        loop = self._require_loop()
        assert self.store is not None
        table = loop.table
        info = self._infos.get(table.version)
        return {
            "active": table.version,
            # from the store, what rollback uses: the loop's own pointer is empty after a restart
            "lkg": lkg[0] if (lkg := self.store.lkg_rule_table()) is not None else None,
            "hash": table.ruleset.content_hash.hex(),
            "table": info.to_json() if info is not None else None,
            "rules": [rule_json(r) for r in table.ruleset.rules],
            "stored": self.store.list_rule_tables(),
        }

    def _ctl_tail(self, args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        loop = self._require_loop()
        after = args.get("after", 0)
        if not isinstance(after, int) or after < 0:
            raise BadRequestError("tail: after must be a non-negative integer")
        if after == 0 and args.get("from_end"):
            return {"events": [], "last": loop.event_seq}
        events = loop.events_after(after)
        # newest: the loop's own count, lower than `after` when this is a new edged (a tail
        # that followed the previous one starts again from 0)
        return {
            "events": events,
            "last": events[-1]["seq"] if events else after,
            "newest": loop.event_seq,
        }


def _open_store(cfg: EdgeConfig, clock: Clock) -> Store:
    path = cfg.data_dir / "state"
    with _starting(f"the store in {path}", "check the disk and the directory's permissions"):
        try:
            return Store.open(
                path, map_size=cfg.map_size, max_map_size=cfg.max_map_size, clock=clock
            )
        except StoreError as exc:
            raise StoreError(
                f"{exc}; move {path} aside to start with an empty store (or restore a backup)"
            ) from exc


@contextlib.contextmanager
def _starting(what: str, todo: str) -> Iterator[None]:
    """Turn an OS or ZeroMQ error of one start-up step into a RuntimeStateError that says
    what failed, why, and what to do: the one line edged prints before it exits."""
    try:
        yield
    except (OSError, zmq.ZMQError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RuntimeStateError(f"{what}: {reason}; {todo}") from exc


def _quietly(what: str, step: Callable[[], object]) -> None:
    """One step of close(): a failure is logged, and the steps after it still run."""
    try:
        step()
    except Exception:
        log.exception("edged: closing the %s failed", what)


def _flag(args: dict[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"RulesPush: {name} must be true or false")
    return value


def _with_version(ruleset: RuleSet, version: int) -> RuleSet:
    import dataclasses

    return dataclasses.replace(ruleset, version=version)


IDS_PER_START = 10**12
"""Instruction ids of one start of edged: start n uses n * 10^12 + 1 onwards."""


# ---------------------------------------------------------------- the command


def _path(kind: str) -> Callable[[str], Path]:
    """An argparse type: a path that, if it exists, must be a ``kind`` ("file" or "directory")."""

    def convert(value: str) -> Path:
        path = Path(value)
        if kind == "file" and path.is_dir():
            raise argparse.ArgumentTypeError(f"file {value!r} is a directory")
        if kind == "directory" and path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"directory {value!r} is a file")
        return path

    return convert


def _parser() -> argparse.ArgumentParser:
    # argparse rather than click: edged pays in RSS for every module it imports (click and
    # what it alone pulls in were ~0.7 MB; `edgectl bench --scenarios footprint`)
    p = argparse.ArgumentParser(
        prog="edged",
        allow_abbrev=False,  # as before: an option is spelled in full
        description="edged: the edge runtime daemon (metrics in, rules, instructions out).",
        epilog="exit codes: 0 stopped cleanly (SIGTERM/SIGINT), 1 cannot start, 2 bad command "
        "line or configuration, 3 another edged holds the run or data directory.",
    )
    p.add_argument("--config", dest="config_file", metavar="FILE", type=_path("file"),
                   help="TOML config file (also $EDGE_CONFIG).")
    p.add_argument("--run-dir", metavar="DIRECTORY", type=_path("directory"),
                   help="Sockets and lock (default $XDG_RUNTIME_DIR/edge or /tmp/edge-$UID).")
    p.add_argument("--data-dir", metavar="DIRECTORY", type=_path("directory"),
                   help="LMDB state (default ~/.local/state/edge).")
    p.add_argument("--device-id", metavar="TEXT", help="This board's id (default: hostname).")
    p.add_argument("--rules", dest="rules_file", metavar="FILE", type=_path("file"),
                   help="Rule file to run: activated as a new version when its rules differ "
                   "from the stored table (unless that one is signed: see the log).")
    p.add_argument("--metrics-addr", metavar="TEXT",
                   help="host:port for /metrics; '' disables (default 127.0.0.1:9108).")
    # the value is checked by load_config, with the file's and environment's mistakes
    p.add_argument("--heartbeat-ms", metavar="INTEGER",
                   help="Heartbeat interval agents are told to use.")
    p.add_argument("--run-dir-group", metavar="TEXT", help="Group allowed to reach the sockets.")
    p.add_argument("--rt", metavar="CPU[:PRIO]",
                   help="Real-time profile: the loop and libzmq's threads pinned to CPU at "
                        "SCHED_FIFO PRIO (default 50), memory locked.")
    p.add_argument("--log-level", type=str.upper, choices=[v.upper() for v in LOG_LEVELS],
                   metavar="LEVEL", help=LOG_LEVEL_HELP)
    p.add_argument("--version", action="version", version=f"edged, version {__version__}",
                   help="Show the version and exit.")
    # default None, like every unset flag: load_config ignores None (main pops it first)
    p.add_argument("--self-test", action="store_true", default=None,
                   help="Start on a temporary run and data dir, run one built-in agent through "
                   "a rule, its instruction and Ack, print the stage timings, exit 0 (1 on failure).")
    return p


def main(
    argv: Sequence[str] | None = None, *, self_test: Callable[[], int] | None = None
) -> None:
    """edged's command line (``argv`` defaults to ``sys.argv[1:]``).

    Exits 2 on a bad command line or configuration, 3 when another edged holds the run
    directory, 1 when it cannot start (or is interrupted before it serves); returns after a
    clean stop on SIGTERM/SIGINT. ``self_test`` runs ``--self-test`` (the console script
    passes edge.cli's, which drives an SDK agent: this layer may not import it).
    """
    flags = vars(_parser().parse_args(argv))
    config_file: Path | None = flags.pop("config_file")
    if flags.pop("self_test"):
        if self_test is None:
            print("edged: --self-test needs the edged console script", file=sys.stderr)
            sys.exit(2)
        sys.exit(self_test())
    try:
        _run(config_file, flags)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are installed
        print("\nAborted!", file=sys.stderr)
        sys.exit(1)


def _fail(stop_logging: Callable[[], None], code: int, message: str) -> NoReturn:
    """A start that failed: one line on stderr (a multi-line message, e.g. every problem of
    a rule file, is joined with "; "), then exit ``code`` at once. open() has stopped what it
    started; should a thread still be alive anyway, the process leaves without waiting for it
    (a service manager must see the exit, not a process that hangs on)."""
    stop_logging()
    print("edged: " + "; ".join(message.splitlines()), file=sys.stderr, flush=True)
    me = threading.current_thread()
    if any(t.is_alive() and not t.daemon and t is not me for t in threading.enumerate()):
        os._exit(code)
    sys.exit(code)


def _run(config_file: Path | None, flags: dict[str, Any]) -> None:
    try:
        cfg = load_config(flags, file=config_file)
    except ConfigError as exc:
        print(f"edged: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    # the loop only enqueues log records; a listener thread writes them (a blocked stderr
    # pipe must not stall control)
    stop_logging = configure_logging(cfg.log_level, queued=True)
    # A background thread holding the GIL can delay the loop's wake-up by up to the switch
    # interval (5 ms by default); 250 µs bounds that cost.
    sys.setswitchinterval(0.00025)
    clock: Clock = SYSTEM_CLOCK
    if cfg.wall_clock_file is not None:
        from ..clock import SteppedWallClock

        clock = SteppedWallClock(cfg.wall_clock_file)
    daemon = Edged(cfg, clock=clock)
    try:
        daemon.open()  # on any failure it has closed what it opened before raising
    except AlreadyRunningError as exc:
        _fail(stop_logging, 3, str(exc))
    except ConfigError as exc:
        _fail(stop_logging, 2, f"configuration error: {exc}")
    except EdgeError as exc:
        _fail(stop_logging, 1, f"cannot start: {exc}")
    except Exception as exc:  # a bug: its traceback, then the same one line
        import traceback

        traceback.print_exc()
        _fail(stop_logging, 1, f"cannot start: internal error {exc!r}; please report it")

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if cfg.gc_freeze:
        gc.collect()
        gc.freeze()
    try:
        daemon.serve()
    finally:
        daemon.close()
        log.info("edged stopped cleanly")
        stop_logging()
