"""Group commits off the control loop: a queue in front of one writer thread.

::

    hot loop ──audit()/put_agent()/put_stats()──> deque (queue_cap) ──> edge-store-writer thread
      ~1 µs, never blocks, drops+counts                │ linger ≤ commit_interval_ms, or until
      when full                                        │ max_batch records / a flush() / close()
                                                       v
                                 encode JSON ──> one write txn ──> synced commit (fsync)
                                 (off the txn)   audit seqs,        │ MapFullError: grow map,
                                                 retention prune;   │ prune oldest audit, drop
                                                 at max_map_size,   │
                                                 keep room (audit   │
                                                 ≤ half the map)    │
                                                                    │ I/O error: retry w/ backoff,
                                                                    │ then drop
                                          every drop is counted and, once a commit succeeds
                                          again, written as an audit record saying what was lost

Time (the linger deadline, retry backoff) is read from the injected clock; the thread sleeps on
events with real timeouts and re-reads the clock when it wakes, so with a MockClock records
commit on flush(), close(), max_batch, or once the test advances the clock past the interval.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lmdb

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import StoreError

from . import _codec
from ._outbox import Outbox
from ._store import K_LAST_SEQ, Store, last_audit_seq_in

log = logging.getLogger("edge.store")


class _Op(enum.IntEnum):
    AUDIT = 0
    AGENT = 1
    STATS = 2
    OUTBOX = 3


_AUDIT, _AGENT, _STATS, _OUTBOX = _Op.AUDIT, _Op.AGENT, _Op.STATS, _Op.OUTBOX
_DB_OF = {_AUDIT: "audit", _AGENT: "agents", _STATS: "stats", _OUTBOX: "outbox"}


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


# A queued record: (op, kind or agent id or None, fields/record/snapshot, wall_ms, mono_ns).
_Item = tuple[_Op, Any, Any, int, int]

# Audit fields that would overwrite the record's own keys are kept under "<name>_".
_RESERVED = frozenset({"seq", "wall_ms", "mono_ns"})

# An I/O error (disk full, EIO) keeps a batch for this many retries, with a backoff starting at
# twice commit_interval_ms and doubling up to _BACKOFF_CAP_MS, before the batch is dropped.
IO_RETRIES = 5
_BACKOFF_CAP_MS = 1000.0
# Map full at max_map_size: rounds of pruning the oldest audit records before dropping.
_PRUNE_ROUNDS = 3
# Pages a commit needs besides its records' (copy-on-write of branch pages and of LMDB's main
# and free databases, freelist records), and pages LMDB's own databases hold: estimates that
# err on the side of room.
_COMMIT_OVERHEAD_PAGES = 8
_LMDB_OWN_PAGES = 4
# Loss notices that could not be written are retried this often (seconds) while idle.
_NOTICE_RETRY_S = 1.0
# Bound on what one loss notice lists.
_NOTICE_LIST_MAX = 16


class _Barrier:
    """A flush() marker in the queue: everything ahead of it is written before it resolves."""

    __slots__ = ("done", "ok", "drops_at_call")

    def __init__(self, drops_at_call: int) -> None:
        self.done = threading.Event()
        self.ok = False
        self.drops_at_call = drops_at_call


@dataclass
class _Loss:
    """What was dropped for one reason since it was last written to the audit log."""

    kind: str
    dropped: int = 0
    by_db: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    agent_ids: list[str] = field(default_factory=list)
    first_wall_ms: int | None = None
    last_wall_ms: int | None = None
    error: str | None = None

    def add(self, item: _Item) -> None:
        op, a, _, wall_ms, _ = item
        self.dropped += 1
        self.by_db[_DB_OF[op]] += 1
        if op is _AUDIT and (str(a) in self.kinds or len(self.kinds) < _NOTICE_LIST_MAX):
            self.kinds[str(a)] += 1
        if op is _AGENT and len(self.agent_ids) < _NOTICE_LIST_MAX:
            self.agent_ids.append(str(a))
        if self.first_wall_ms is None:
            self.first_wall_ms = wall_ms
        self.last_wall_ms = wall_ms

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dropped": self.dropped, **{db: self.by_db[db] for db in
                                                          ("audit", "agents", "stats")}}
        if self.by_db["outbox"]:
            out["outbox"] = self.by_db["outbox"]
        if self.kinds:
            out["audit_kinds"] = dict(self.kinds)
        if self.agent_ids:
            out["agent_ids"] = self.agent_ids
        if self.first_wall_ms is not None:
            out["first_wall_ms"] = self.first_wall_ms
            out["last_wall_ms"] = self.last_wall_ms
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class _Rec:
    """A record encoded for the transaction; ``key`` is None for audit (seq assigned inside)."""

    op: _Op
    key: bytes | None
    value: bytes | None  # None: delete ``key`` (a forgotten agent)
    item: _Item | None  # None for loss notices


class StoreWriter:
    """Writes audit records, agent records and stats snapshots in synced group commits.

    The enqueue methods (:meth:`audit`, :meth:`put_agent`, :meth:`put_stats`) are O(1), never
    block and never raise for store trouble; call them from the control loop. One thread,
    ``edge-store-writer`` (not a daemon: close() it), commits every ``commit_interval_ms``
    (float, milliseconds) while records are pending, or as soon as ``max_batch`` records are
    queued, in one synced LMDB transaction of at most ``max_batch`` records.

    ``queue_cap`` bounds the queue (records; past it enqueues are dropped and counted).
    ``audit_retention`` and ``stats_retention`` bound the audit log and the stats snapshots
    (entries); the oldest go first.

    When the map is full the writer doubles it (up to the store's max_map_size), then prunes the
    oldest audit records, then drops the batch; an I/O error (disk full, EIO) is retried
    ``IO_RETRIES`` times with backoff, then the batch is dropped. Every drop is counted in
    :attr:`counters` and written to the audit log (kind ``store_full``, ``store_io_error`` or
    ``queue_full``) once a commit succeeds again. The thread survives all of it.
    """

    def __init__(
        self,
        store: Store,
        *,
        commit_interval_ms: float = 5.0,
        max_batch: int = 1024,
        queue_cap: int = 100_000,
        audit_retention: int = 1_000_000,
        stats_retention: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
        outbox: Outbox | None = None,
    ) -> None:
        if store.readonly:
            raise StoreError(f"cannot write to {store.path}: the store was opened readonly")
        for name, value in (
            ("commit_interval_ms", commit_interval_ms),
            ("max_batch", max_batch),
            ("queue_cap", queue_cap),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in (("audit_retention", audit_retention),
                            ("stats_retention", stats_retention)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self._store = store
        self._outbox = outbox
        self._interval_ms = float(commit_interval_ms)
        self._interval_ns = int(commit_interval_ms * 1_000_000)
        self._max_batch = max_batch
        self._queue_cap = queue_cap
        self._audit_retention = audit_retention
        self._stats_retention = stats_retention
        # Bounded so that lowering a retention does not make one huge transaction.
        self._prune_cap = max(4 * max_batch, 4096)
        self._clock = clock

        self._q: deque[_Item | _Barrier] = deque()
        self._wake = threading.Event()  # something was queued (or stop)
        self._kick = threading.Event()  # stop lingering: max_batch reached, flush, close
        self._stopping = threading.Event()
        self._take_lock = threading.Lock()  # writer's dequeue vs. counters / flush markers
        self._drop_lock = threading.Lock()  # producers' drop counts
        self._life_lock = threading.Lock()
        self._state = _State.NEW
        self._thread: threading.Thread | None = None

        self._urgent = 0  # flush markers queued and not yet taken
        self._dequeued = 0
        # Queue-full drops by op; every key exists up front so that producers never add one
        # while the writer thread iterates it.
        self._refused: Counter[_Op] = Counter(dict.fromkeys(_Op, 0))
        self._refused_seen: Counter[_Op] = Counter()
        self._refused_noted = 0
        self._dropped_closed = 0
        self._writer_drops = 0
        self._losses: dict[str, _Loss] = {}
        self._seen_map_size = 0
        self._c: dict[str, int] = dict.fromkeys(
            (
                "committed_records",
                "commits",
                "dropped_store_full",
                "dropped_io_error",
                "dropped_invalid",
                "map_grows",
                "disk_errors",
                "pruned_audit",
                "pruned_stats",
                "last_commit_us",
                "max_commit_us",
                "total_commit_us",
            ),
            0,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread; a no-op when running. Raises StoreError after close()."""
        with self._life_lock:
            if self._state is _State.RUNNING:
                return
            if self._state is _State.CLOSED:
                raise StoreError("this store writer is closed: make a new StoreWriter")
            self._store._live_env()
            self._thread = threading.Thread(
                target=self._run, name="edge-store-writer", daemon=False
            )
            self._thread.start()
            self._state = _State.RUNNING
            self._store._writers.add(self)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds until every record enqueued before the call is
        committed and synced.

        True when they all are; False on timeout, when the writer is not running, or when any of
        them was dropped instead (map full, I/O error, invalid input: see :attr:`counters`).
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._q
        barrier = _Barrier(self._writer_drops)
        with self._take_lock:
            self._urgent += 1
            self._q.append(barrier)
        self._kick.set()
        self._wake.set()
        return barrier.done.wait(timeout) and barrier.ok

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to ``timeout`` seconds), then stop the thread; idempotent.

        Records enqueued after close() are dropped and counted (``dropped_closed``). Raises
        StoreError if the thread is still stuck in a commit ``timeout`` seconds later (the disk
        is stalled); it then ends by itself once that commit returns.
        """
        with self._life_lock:
            if self._state is _State.CLOSED:
                return
            was_running = self._state is _State.RUNNING
            self._state = _State.CLOSED
        deadline = time.monotonic() + timeout
        try:
            if was_running and self._thread is not None:
                if not self.flush(timeout):
                    log.warning("store writer: closing before everything was committed")
                self._stopping.set()
                self._kick.set()
                self._wake.set()
                self._thread.join(max(deadline - time.monotonic(), 0.1))
                if self._thread.is_alive():
                    raise StoreError(
                        f"the store writer for {self._store.path} did not stop within "
                        f"{timeout} s: a commit is stuck (stalled disk?)"
                    )
            # A record that slipped in as the thread ended is counted, not silently kept.
            self._discard_queue()
        finally:
            self._store._writers.discard(self)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def counters(self) -> dict[str, int]:
        """A copy of the writer's counters (records unless noted):

        ``enqueued`` accepted into the queue; ``queued`` still waiting; ``committed_records``,
        ``commits`` (synced transactions); ``dropped_queue_full`` refused at enqueue;
        ``dropped_closed`` enqueued after close() or still queued when the writer stopped (or
        never started); ``dropped_store_full`` map full at
        max_map_size even after pruning; ``dropped_io_error`` given up after I/O errors (or an
        unexpected error); ``dropped_invalid`` bad input (e.g. an agent id LMDB cannot key);
        ``map_grows``; ``disk_errors`` failed commit attempts; ``pruned_audit``,
        ``pruned_stats`` (retention and map-full pruning); ``last_commit_us``,
        ``max_commit_us``, ``total_commit_us`` (microseconds from begin to synced commit).
        """
        with self._take_lock:
            c = dict(self._c)
            queued = len(self._q) - self._urgent
            c["enqueued"] = self._dequeued + queued
            c["queued"] = queued
        c["dropped_queue_full"] = sum(self._refused.values())
        c["dropped_closed"] = self._dropped_closed
        return c

    # -- enqueue (hot path) ------------------------------------------------------------------

    def audit(self, kind: str, **fields: Any) -> None:
        """Append an audit record ``{"seq", "wall_ms", "mono_ns", "kind", **fields}``.

        Times are taken now from the clock; the fields are encoded later on the writer thread,
        so do not mutate values passed in afterwards. Values JSON cannot hold become text.
        """
        q = self._q
        if len(q) >= self._queue_cap or self._state is _State.CLOSED:
            self._refuse(_AUDIT)
            return
        clock = self._clock
        q.append((_AUDIT, kind, fields, clock.wall_ms(), clock.monotonic_ns()))
        self._signal(len(q))

    def put_agent(self, agent_id: str, record: dict[str, Any]) -> None:
        """Set the registry record of ``agent_id`` (a shallow copy of ``record`` is taken)."""
        q = self._q
        if len(q) >= self._queue_cap or self._state is _State.CLOSED:
            self._refuse(_AGENT)
            return
        rec = record.copy() if isinstance(record, dict) else record
        clock = self._clock
        q.append((_AGENT, agent_id, rec, clock.wall_ms(), clock.monotonic_ns()))
        self._signal(len(q))

    def forget_agent(self, agent_id: str) -> None:
        """Delete the registry record of ``agent_id`` (the audit log keeps its history)."""
        q = self._q
        if len(q) >= self._queue_cap or self._state is _State.CLOSED:
            self._refuse(_AGENT)
            return
        clock = self._clock
        q.append((_AGENT, agent_id, None, clock.wall_ms(), clock.monotonic_ns()))
        self._signal(len(q))

    def put_stats(self, snapshot: dict[str, Any]) -> None:
        """Store a stats snapshot keyed by the clock's wall time now (ms); a snapshot without a
        ``"wall_ms"`` key gets that time added. A shallow copy is taken."""
        q = self._q
        if len(q) >= self._queue_cap or self._state is _State.CLOSED:
            self._refuse(_STATS)
            return
        snap = snapshot.copy() if isinstance(snapshot, dict) else snapshot
        clock = self._clock
        q.append((_STATS, None, snap, clock.wall_ms(), clock.monotonic_ns()))
        self._signal(len(q))

    def put_outbox(self, body: bytes, wall_ns: int) -> None:
        """Append ``body`` to the upstream outbox (the Outbox given at construction), with
        its caps and policy applied in the commit; appended at wall-clock ``wall_ns``."""
        q = self._q
        if self._outbox is None:
            raise StoreError("this writer was made without an outbox")
        if len(q) >= self._queue_cap or self._state is _State.CLOSED:
            self._refuse(_OUTBOX)
            return
        clock = self._clock
        q.append((_OUTBOX, wall_ns, bytes(body), clock.wall_ms(), clock.monotonic_ns()))
        self._signal(len(q))

    def _signal(self, n: int) -> None:
        # Event.set() takes a lock; skip it while the event is still set from a previous record.
        if not self._wake.is_set():
            self._wake.set()
        if n >= self._max_batch and not self._kick.is_set():
            self._kick.set()

    def _refuse(self, op: _Op) -> None:
        with self._drop_lock:
            if self._state is _State.CLOSED:
                self._dropped_closed += 1
            else:
                self._refused[op] += 1

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._q:
                    if self._stopping.is_set():
                        break
                    self._wake.clear()
                    if not self._q:  # re-check: an append before clear() did not set it again
                        owed = bool(self._losses) or self._refused_total() > self._refused_noted
                        if not self._wake.wait(_NOTICE_RETRY_S if owed else None):
                            self._write_batch([])
                        continue
                self._linger()
                batch, barrier = self._take()
                self._write_batch(batch)
                if barrier is not None:
                    barrier.ok = self._writer_drops == barrier.drops_at_call
                    barrier.done.set()
            except Exception:  # noqa: BLE001 - the writer thread must not die
                log.exception("store writer: unexpected error; carrying on")
                self._stopping.wait(0.01)
        if self._losses or self._refused_total() > self._refused_noted:
            self._write_batch([])  # a last try at writing what was lost
        self._discard_queue()

    def _linger(self) -> None:
        """Wait until the oldest queued record is ``commit_interval_ms`` old (by the clock),
        unless a batch is full, a flush is waiting or the writer is stopping."""
        head = self._q[0]  # only this thread takes from the queue: it stays non-empty
        if isinstance(head, _Barrier):
            return
        deadline = head[4] + self._interval_ns
        while True:
            self._kick.clear()
            if self._stopping.is_set() or self._urgent or len(self._q) >= self._max_batch:
                return
            remaining = deadline - self._clock.monotonic_ns()
            if remaining <= 0:
                return
            self._kick.wait(remaining / 1e9)

    def _take(self) -> tuple[list[_Item], _Barrier | None]:
        """Up to max_batch records from the queue, stopping at a flush marker."""
        batch: list[_Item] = []
        barrier = None
        q = self._q
        with self._take_lock:
            while q and len(batch) < self._max_batch:
                item = q.popleft()
                if isinstance(item, _Barrier):
                    self._urgent -= 1
                    barrier = item
                    break
                batch.append(item)
            self._dequeued += len(batch)
        return batch, barrier

    def _discard_queue(self) -> None:
        """Account for whatever is left once the thread is gone (or never started)."""
        with self._take_lock:
            left = list(self._q)
            self._q.clear()
            self._urgent = 0
        n = 0
        for item in left:
            if isinstance(item, _Barrier):
                item.done.set()  # ok stays False
            else:
                n += 1
        if n:
            with self._take_lock:
                self._dequeued += n
            with self._drop_lock:
                self._dropped_closed += n
            log.warning("store writer: %d records dropped at close", n)

    def _write_batch(self, batch: list[_Item]) -> None:
        """Commit ``batch`` plus any loss notices owed, applying the map-full and I/O policies.
        Never raises."""
        records = self._encode(batch)
        self._note_refused()
        if not records and not self._losses:
            return
        io_failures = 0
        prunes = 0
        error: BaseException | None = None
        for _ in range(64):
            notices = self._encode(
                [(_AUDIT, loss.kind, loss.fields(), self._clock.wall_ms(),
                  self._clock.monotonic_ns()) for loss in self._losses.values()],
                notices=True,
            )
            try:
                self._commit(notices + records)
            except lmdb.MapResizedError:
                self._store._adopt_map_size()  # another process grew the map
                continue
            except lmdb.MapFullError as e:
                error = e
                if self._store._grow_map(self._seen_map_size):
                    self._c["map_grows"] += 1
                    continue
                room = _batch_bytes(notices + records)
                if prunes < _PRUNE_ROUNDS and self._emergency_prune(room):
                    prunes += 1
                    continue
                self._lose(records, "store_full", e)
                return
            except (lmdb.Error, OSError) as e:
                error = e
                self._c["disk_errors"] += 1
                log.warning("store writer: commit failed (%s); %d records held", e, len(records))
                if not records:
                    return  # only notices: retried when idle
                io_failures += 1
                if io_failures > IO_RETRIES or not self._backoff(io_failures):
                    self._lose(records, "store_io_error", e)
                    return
                continue
            except Exception as e:  # noqa: BLE001 - a bug must cost a batch, not the thread
                log.exception("store writer: unexpected error committing %d records",
                              len(records))
                self._lose(records, "store_io_error", e)
                return
            else:
                self._losses.clear()
                return
        self._lose(records, "store_io_error", error)

    def _encode(self, items: list[_Item], *, notices: bool = False) -> list[_Rec]:
        """Encode records for the transaction (off it). Bad input is dropped and counted.
        Loss ``notices`` are the writer's own: they are not counted as records."""
        out: list[_Rec] = []
        for item in items:
            op, a, payload, wall_ms, mono_ns = item
            try:
                if op is _AUDIT:
                    fields = payload
                    clash = fields.keys() & _RESERVED
                    if clash:
                        fields = dict(fields)
                        for name in clash:
                            fields[name + "_"] = fields.pop(name)
                    kind = a if isinstance(a, str) else _codec._safe_str(a)
                    body = {"wall_ms": wall_ms, "mono_ns": mono_ns, "kind": kind, **fields}
                    out.append(_Rec(op, None, _codec.dumps(body), None))
                elif op is _OUTBOX:
                    if not isinstance(payload, bytes) or not isinstance(a, int) or a < 0:
                        raise TypeError("an outbox record is bytes with a wall_ns >= 0")
                    out.append(_Rec(op, _codec.u64(a), payload, None))
                elif op is _AGENT:
                    key = a.encode() if isinstance(a, str) else b""
                    if not 0 < len(key) <= 511:
                        raise ValueError(f"agent id {a!r} is not a str of 1..511 UTF-8 bytes")
                    if payload is None:  # forget_agent
                        out.append(_Rec(op, key, None, None))
                    elif not isinstance(payload, Mapping):
                        raise TypeError(f"expected a dict, got {type(payload).__name__}")
                    else:
                        out.append(_Rec(op, key, _codec.dumps(payload), None))
                elif not isinstance(payload, Mapping):
                    raise TypeError(f"expected a dict, got {type(payload).__name__}")
                else:
                    snap = dict(payload)
                    snap.setdefault("wall_ms", wall_ms)
                    out.append(_Rec(op, _codec.u64(wall_ms), _codec.dumps(snap), None))
            except Exception as e:  # noqa: BLE001 - bad input must never take the writer down
                self._c["dropped_invalid"] += 1
                self._writer_drops += 1
                log.warning("store writer: dropping invalid %s record: %s", op.name.lower(), e)
                continue
            if not notices:
                out[-1].item = item
        return out

    def _begin_write(self) -> lmdb.Transaction:
        """The vendor-binding seam: every write transaction of the writer starts here."""
        return self._store._live_env().begin(write=True)

    def _commit(self, recs: list[_Rec]) -> None:
        """One synced write transaction for ``recs``, with retention pruning."""
        store = self._store
        dbs = store._dbs
        audit_db = dbs["audit"]
        t0 = self._clock.monotonic_ns()
        with store._gate.shared():
            self._seen_map_size = int(store._live_env().info()["map_size"])
            txn = self._begin_write()
            try:
                seq = 0
                if any(r.op is _AUDIT for r in recs):
                    seq = last_audit_seq_in(txn, dbs) + 1
                outgoing: list[_Rec] = []
                for r in recs:
                    if r.op is _AUDIT:
                        assert r.value is not None
                        txn.put(_codec.u64(seq), _codec.with_seq(seq, r.value), append=True,
                                db=audit_db)
                        seq += 1
                    elif r.op is _OUTBOX:
                        outgoing.append(r)
                    elif r.value is None:  # a forgotten agent
                        assert r.key is not None
                        txn.delete(r.key, db=dbs[_DB_OF[r.op]])
                    else:
                        assert r.key is not None
                        txn.put(r.key, r.value, db=dbs[_DB_OF[r.op]])
                if seq:
                    txn.put(K_LAST_SEQ, _codec.u64(seq - 1), db=dbs["meta"])
                # after the audit sequence is settled: a cap's drop writes an audit record
                for r in outgoing:
                    assert r.key is not None and r.value is not None and self._outbox is not None
                    self._outbox.append_in(txn, r.value, _codec.from_u64(r.key))
                pruned_audit = self._prune(txn, audit_db, self._audit_retention)
                if self._seen_map_size >= store.max_map_size:
                    pruned_audit += self._trim_audit(
                        txn, self._seen_map_size, _batch_bytes(recs),
                        keep=sum(1 for r in recs if r.op is _AUDIT),
                    )
                pruned_stats = self._prune(txn, dbs["stats"], self._stats_retention)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
        us = (self._clock.monotonic_ns() - t0) // 1000
        c = self._c
        c["commits"] += 1
        c["committed_records"] += sum(1 for r in recs if r.item is not None)
        c["pruned_audit"] += pruned_audit
        c["pruned_stats"] += pruned_stats
        c["last_commit_us"] = us
        c["total_commit_us"] += us
        if us > c["max_commit_us"]:
            c["max_commit_us"] = us

    def _prune(self, txn: lmdb.Transaction, db: Any, keep: int) -> int:
        """Delete the oldest entries of ``db`` beyond ``keep`` (at most _prune_cap per call)."""
        excess = txn.stat(db)["entries"] - keep
        if excess <= 0:
            return 0
        cur = txn.cursor(db=db)
        cur.first()
        n = 0
        while n < min(excess, self._prune_cap) and cur.delete():
            n += 1
        return n

    def _pages(self, txn: lmdb.Transaction, map_size: int) -> tuple[int, int, int, int]:
        """``(map_pages, audit_pages, other_pages, page_size)`` as seen by ``txn``; other pages
        are every other database's plus a few for LMDB's own (main and free databases)."""
        dbs = self._store._dbs
        psize = 0
        audit = other = 0
        for name, db in dbs.items():
            st = txn.stat(db)
            psize = st["psize"]
            pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            if name == "audit":
                audit = pages
            else:
                other += pages
        return map_size // psize, audit, other + _LMDB_OWN_PAGES, psize

    def _trim_audit(
        self, txn: lmdb.Transaction, map_size: int, batch_bytes: int, keep: int
    ) -> int:
        """The map cannot grow any more: keep room for the next commits by pruning the oldest
        audit records ahead of time, in this transaction (at most _prune_cap per commit).

        Every commit needs free pages, deletions included (copy-on-write, freelist records),
        and LMDB reuses the pages a commit frees only after the next commit. Waiting for
        MapFullError would leave no room to prune in. So the audit log is kept within half the
        map (the rest is for rule tables, agents and stats) and below what leaves room for two
        batches like this one (the pages this commit frees, and the next commit's). The ``keep``
        newest records (this batch's) are never pruned here.
        """
        map_pages, audit_pages, other_pages, psize = self._pages(txn, map_size)
        batch_pages = -(-batch_bytes // psize) + _COMMIT_OVERHEAD_PAGES
        budget = min(map_pages // 2, map_pages - other_pages - 2 * batch_pages)
        st = txn.stat(self._store._dbs["audit"])
        if audit_pages <= budget or st["entries"] <= keep:
            return 0
        per_page = st["entries"] / max(audit_pages, 1)
        n = min(int((audit_pages - max(budget, 0)) * per_page) + 1, self._prune_cap,
                st["entries"] - keep)
        cur = txn.cursor(db=self._store._dbs["audit"])
        cur.first()
        deleted = 0
        while deleted < n and cur.delete():
            deleted += 1
        return deleted

    def _emergency_prune(self, batch_bytes: int) -> int:
        """MapFullError at max_map_size: delete the oldest audit records to make room for a
        batch of ``batch_bytes``.

        Returns how many were deleted; 0 when even an empty audit log would not make room
        (pruning would destroy history without saving the batch) or pruning itself fails.
        LMDB reuses the pages a commit frees only after the next commit, so a second, tiny
        commit follows the deletion to make the room usable by the very next attempt.
        """
        store = self._store
        dbs = store._dbs
        audit_db = dbs["audit"]
        n = 0
        try:
            with store._gate.shared():
                txn = self._begin_write()
                try:
                    map_pages, _, other_pages, psize = self._pages(txn, self._seen_map_size)
                    batch_pages = -(-batch_bytes // psize) + _COMMIT_OVERHEAD_PAGES
                    if batch_pages > map_pages - other_pages - _COMMIT_OVERHEAD_PAGES:
                        txn.abort()
                        return 0
                    # Sequences must go on after the last one even if this empties the log.
                    txn.put(K_LAST_SEQ, _codec.u64(last_audit_seq_in(txn, dbs)), db=dbs["meta"])
                    need = batch_pages * psize
                    cur = txn.cursor(db=audit_db)
                    freed = deleted = 0
                    while freed < need and cur.first():
                        freed += len(cur.key()) + len(cur.value()) + 16
                        cur.delete()
                        deleted += 1
                    txn.commit()
                    n = deleted
                except BaseException:
                    txn.abort()
                    raise
                txn = self._begin_write()
                try:
                    txn.put(K_LAST_SEQ, _codec.u64(last_audit_seq_in(txn, dbs)), db=dbs["meta"])
                    txn.commit()
                except BaseException:
                    txn.abort()
                    raise
        except lmdb.Error as e:
            log.warning("store writer: pruning the audit log to make room failed: %s", e)
        if n:
            self._c["pruned_audit"] += n
            log.warning("store writer: map full at max_map_size; pruned the %d oldest audit "
                        "records", n)
        return n

    def _backoff(self, attempt: int) -> bool:
        """Sleep before retry ``attempt`` (1-based); False when the writer is told to stop."""
        delay_ms = min(self._interval_ms * 2.0**attempt, _BACKOFF_CAP_MS)
        deadline = self._clock.monotonic_ns() + int(delay_ms * 1_000_000)
        while not self._stopping.is_set():
            remaining = deadline - self._clock.monotonic_ns()
            if remaining <= 0:
                return True
            self._stopping.wait(remaining / 1e9)
        return False

    def _lose(self, records: list[_Rec], kind: str, error: BaseException | None) -> None:
        """Drop ``records`` for good: count them and owe an audit notice."""
        lost = [r.item for r in records if r.item is not None]
        if not lost:
            return
        loss = self._losses.setdefault(kind, _Loss(kind))
        for item in lost:
            loss.add(item)
        if error is not None:
            loss.error = f"{type(error).__name__}: {error}"
        key = "dropped_store_full" if kind == "store_full" else "dropped_io_error"
        self._c[key] += len(lost)
        self._writer_drops += len(lost)
        log.error("store writer: dropped %d records (%s): %s", len(lost), kind, error)

    def _refused_total(self) -> int:
        return sum(self._refused.values())

    def _note_refused(self) -> None:
        """Turn queue-full drops since the last notice into an owed ``queue_full`` notice."""
        total = self._refused_total()
        if total <= self._refused_noted:
            return
        with self._drop_lock:
            by_op = self._refused.copy()
        new = by_op - self._refused_seen
        self._refused_seen = by_op
        loss = self._losses.setdefault("queue_full", _Loss("queue_full"))
        for op, n in new.items():
            loss.dropped += n
            loss.by_db[_DB_OF[op]] += n
        self._refused_noted = sum(by_op.values())


def _batch_bytes(recs: list[_Rec]) -> int:
    """Bytes ``recs`` take in LMDB, roughly: keys, values and per-node headers."""
    return sum(
        len(r.value or b"") + (len(r.key) if r.key is not None else 8) + 16 for r in recs
    )
