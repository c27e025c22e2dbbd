"""The outbox: records waiting to go upstream, in the store's LMDB environment.

edged appends (inside its StoreWriter group commit, :meth:`Outbox.append_in`); edge-sync, in
its own process, reads them in order (:meth:`Outbox.peek`) and deletes them only after the
upstream acknowledged them (:meth:`Outbox.delete_upto`). LMDB serialises the two processes'
write transactions, so every operation below sees and leaves consistent counters.

Named database ``outbox``::

    key    +-------------------------------+
           | seq: u64 big-endian, 8 bytes  |   per-device sequence, from 1, never reused
           +-------------------------------+
    value  +-------------------------------+---------------------------------------+
           | wall_ns: u64 big-endian, 8 B  | body (opaque: an Aggregate FlatBuffer) |
           +-------------------------------+---------------------------------------+

``wall_ns`` is the wall-clock time of the append (the age cap needs it); :meth:`peek` returns
the body only. Counters live in ``meta`` (u64 values) so both processes see them::

    outbox.next_seq       the sequence the next append gets (absent: 1)
    outbox.bytes          sum of the bodies' lengths now in the outbox
    outbox.dropped        records dropped by the caps, ever
    outbox.dropped_bytes  their bodies' bytes

Caps, applied on every append (the appender never blocks and never fails for them):

* age: records appended more than ``max_age_s`` before the new one are dropped, oldest first;
* bytes: when the bodies would exceed ``max_bytes``, ``policy`` decides: ``drop-oldest`` deletes
  from the front until the new record fits, ``drop-newest`` refuses the new record. A record
  larger than ``max_bytes`` on its own is always refused.

A refused record still consumes its sequence number, so every loss shows upstream as a gap in
``Edge-Seq``. Every drop adds to the counters and writes one audit record of kind
``outbox_drop`` (``reason``: ``max_age`` | ``max_bytes`` | ``too_large``; ``policy``;
``records``; ``bytes``; ``first_seq``; ``last_seq``) in the same transaction.
"""

from __future__ import annotations

import enum
import logging
import struct
import threading
from typing import Any

import lmdb

from edge.errors import StoreError

from . import _codec
from ._store import K_LAST_SEQ, Store, last_audit_seq_in

log = logging.getLogger("edge.store")

DB_NAME = b"outbox"

_K_NEXT = b"outbox.next_seq"
_K_BYTES = b"outbox.bytes"
_K_DROPPED = b"outbox.dropped"
_K_DROPPED_BYTES = b"outbox.dropped_bytes"

SANE_WALL_NS = 1_577_836_800 * 10**9
"""2020-01-01T00:00:00Z: wall times before it are a clock not set yet (see append_in)."""

_HDR = struct.Struct(">Q")
_HDR_LEN = _HDR.size

# Records deleted per delete_upto() transaction at most: a long outage's backlog is deleted in
# several short transactions rather than one that pins the writer lock of both processes.
DELETE_CHUNK = 4096


class OutboxPolicy(enum.Enum):
    """What a full outbox does with a new record."""

    DROP_OLDEST = "drop-oldest"
    DROP_NEWEST = "drop-newest"


class Outbox:
    """Bounded store-and-forward of opaque records, in ``store``'s environment.

    ``max_bytes`` bounds the bodies' total size, ``max_age_s`` (seconds of wall time) their age;
    ``policy`` (an :class:`OutboxPolicy` or its value) says what a full outbox drops. The caps
    matter only to appenders: a reader-deleter (edge-sync) may pass the defaults.

    Methods may be called from any thread. A readonly store gives a readonly outbox (``stats``
    and ``peek`` only; empty until edged creates it). Raises StoreError for LMDB failures and
    StoreFullError when the map cannot hold a record.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_bytes: int = 64 << 20,
        max_age_s: float = 7 * 24 * 3600.0,
        policy: OutboxPolicy | str = OutboxPolicy.DROP_OLDEST,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        self.store = store
        self.max_bytes = int(max_bytes)
        self.max_age_ns = int(max_age_s * 1e9)
        self.policy = OutboxPolicy(policy)
        self._db: Any = None
        self._db_lock = threading.Lock()
        self._open_db()

    # -- writing -----------------------------------------------------------------------------

    def append_in(self, txn: lmdb.Transaction, body: bytes, wall_ns: int) -> int:
        """Append ``body`` (appended at wall-clock ``wall_ns``) inside the caller's write
        transaction, applying the caps. Returns its sequence number, or 0 when the policy
        refused it (its sequence is consumed all the same). Drops are counted and audited in
        ``txn``. Call it outside any loop over the audit database (it assigns an audit
        sequence of its own)."""
        db = self._require_db()
        meta = self.store._dbs["meta"]
        data = bytes(body)
        size = len(data)
        seq = _get_u64(txn, meta, _K_NEXT, 1)
        txn.put(_K_NEXT, _codec.u64(seq + 1), db=meta)
        total = _get_u64(txn, meta, _K_BYTES, 0)

        # a record stamped before SANE_WALL_NS was written before the clock was set (a board
        # without an RTC boots in 1970): its age is unknown, so the age cap leaves it (the
        # byte cap still bounds it) rather than drop it at the first NTP step
        cutoff = wall_ns - self.max_age_ns
        aged = self._drop_front(txn, db, lambda _s, t, _n: SANE_WALL_NS <= t < cutoff)
        total -= aged[1]
        if aged[0]:
            self._note_drop(txn, "max_age", *aged, wall_ns)

        if size > self.max_bytes:
            self._note_drop(txn, "too_large", 1, size, seq, seq, wall_ns)
            txn.put(_K_BYTES, _codec.u64(total), db=meta)
            return 0
        if total + size > self.max_bytes:
            if self.policy is OutboxPolicy.DROP_NEWEST:
                self._note_drop(txn, "max_bytes", 1, size, seq, seq, wall_ns)
                txn.put(_K_BYTES, _codec.u64(total), db=meta)
                return 0
            room = [total + size - self.max_bytes]

            def over(_s: int, _t: int, n: int) -> bool:
                if room[0] <= 0:
                    return False
                room[0] -= n
                return True

            full = self._drop_front(txn, db, over)
            total -= full[1]
            if full[0]:
                self._note_drop(txn, "max_bytes", *full, wall_ns)

        txn.put(_codec.u64(seq), _HDR.pack(wall_ns) + data, db=db, append=True)
        txn.put(_K_BYTES, _codec.u64(total + size), db=meta)
        return seq

    def append(self, body: bytes, wall_ns: int) -> int:
        """:meth:`append_in` in a synced transaction of its own (tests, tools)."""
        return self.store._write(
            lambda txn: self.append_in(txn, body, wall_ns),
            f"appending {len(body)} bytes to the outbox",
        )

    def delete_upto(self, seq: int) -> int:
        """Delete every record with a sequence ``<= seq`` (they were acknowledged upstream),
        durably. Returns how many were deleted (0 when none was left)."""
        if seq <= 0:
            return 0
        deleted = 0
        while True:
            n = self.store._write(
                lambda txn: self._delete_chunk(txn, seq), "deleting from the outbox"
            )
            deleted += n
            if n < DELETE_CHUNK:
                return deleted

    def _delete_chunk(self, txn: lmdb.Transaction, seq: int) -> int:
        db = self._require_db()
        meta = self.store._dbs["meta"]
        left = [DELETE_CHUNK]

        def upto(s: int, _t: int, _n: int) -> bool:
            if s > seq or left[0] <= 0:
                return False
            left[0] -= 1
            return True

        n, size, _, _ = self._drop_front(txn, db, upto)
        if n:
            total = _get_u64(txn, meta, _K_BYTES, 0)
            txn.put(_K_BYTES, _codec.u64(max(total - size, 0)), db=meta)
        return n

    # -- reading -----------------------------------------------------------------------------

    def peek(
        self, after_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records with a sequence ``> after_seq``, oldest first, as
        ``(seq, body)``. With ``max_bytes``, stops before the bodies exceed it (but returns at
        least one record), so a reader's memory stays bounded."""
        if limit <= 0 or self._db is None and not self._open_db():
            return []
        out: list[tuple[int, bytes]] = []
        used = 0
        with self.store._read() as txn:
            cur = txn.cursor(db=self._db)
            if not cur.set_range(_codec.u64(max(after_seq, 0) + 1)):
                return out
            for k, v in cur:
                body = bytes(v[_HDR_LEN:])
                if out and max_bytes is not None and used + len(body) > max_bytes:
                    break
                out.append((_codec.from_u64(k), body))
                used += len(body)
                if len(out) >= limit:
                    break
        return out

    def stats(self, now_wall_ns: int | None = None) -> dict[str, Any]:
        """``{"depth", "bytes", "first_seq", "last_seq", "oldest_age_s", "dropped",
        "dropped_bytes", "next_seq"}``: records and body bytes waiting, the first and last
        waiting sequence (0 when empty), the age in seconds of the oldest (None when empty)
        against ``now_wall_ns`` (default: the store's clock), drops ever, and the sequence the
        next append gets."""
        now = now_wall_ns if now_wall_ns is not None else self.store.clock.wall_ms() * 1_000_000
        doc: dict[str, Any] = {
            "depth": 0,
            "bytes": 0,
            "first_seq": 0,
            "last_seq": 0,
            "oldest_age_s": None,
            "dropped": 0,
            "dropped_bytes": 0,
            "next_seq": 1,
        }
        have_db = self._db is not None or self._open_db()
        with self.store._read() as txn:
            meta = self.store._dbs["meta"]
            doc["bytes"] = _get_u64(txn, meta, _K_BYTES, 0)
            doc["dropped"] = _get_u64(txn, meta, _K_DROPPED, 0)
            doc["dropped_bytes"] = _get_u64(txn, meta, _K_DROPPED_BYTES, 0)
            doc["next_seq"] = _get_u64(txn, meta, _K_NEXT, 1)
            if not have_db:
                return doc
            doc["depth"] = txn.stat(self._db)["entries"]
            cur = txn.cursor(db=self._db)
            if cur.first():
                doc["first_seq"] = _codec.from_u64(cur.key())
                (t,) = _HDR.unpack_from(cur.value())
                doc["oldest_age_s"] = round(max(now - t, 0) / 1e9, 3)
                cur.last()
                doc["last_seq"] = _codec.from_u64(cur.key())
        return doc

    # -- internals ---------------------------------------------------------------------------

    def _open_db(self) -> bool:
        """Open (creating unless readonly) the named database; False when a readonly store
        does not have it yet."""
        with self._db_lock:
            if self._db is not None:
                return True
            env = self.store._live_env()
            # LMDB: opening a database must not overlap another transaction's open in this
            # process, so it runs with the store's transactions held off.
            with self.store._gate.exclusive():
                for attempt in range(3):
                    try:
                        if self.store.readonly:
                            self._db = env.open_db(DB_NAME, create=False)
                        else:
                            self._db = env.open_db(DB_NAME)
                        break
                    except lmdb.NotFoundError:
                        return False
                    except lmdb.MapResizedError as e:  # the other process grew the map
                        if attempt == 2:
                            raise StoreError(
                                f"cannot open the outbox in {self.store.path}: {e}"
                            ) from e
                        env.set_mapsize(0)  # take the size the file has now
                    except lmdb.Error as e:
                        raise StoreError(
                            f"cannot open the outbox in {self.store.path}: {e}"
                        ) from e
            return True

    def _require_db(self) -> Any:
        if self._db is None:
            raise StoreError(f"the outbox of {self.store.path} is readonly and not created yet")
        return self._db

    def _drop_front(self, txn: lmdb.Transaction, db: Any, pred: Any) -> tuple[int, int, int, int]:
        """Delete records from the front while ``pred(seq, wall_ns, body_len)`` holds.
        Returns ``(records, body bytes, first seq, last seq)``."""
        n = size = first = last = 0
        cur = txn.cursor(db=db)
        if not cur.first():
            return 0, 0, 0, 0
        while True:
            seq = _codec.from_u64(cur.key())
            value = cur.value()
            (t,) = _HDR.unpack_from(value)
            blen = len(value) - _HDR_LEN
            if not pred(seq, t, blen):
                break
            n += 1
            size += blen
            first = first or seq
            last = seq
            if not cur.delete():  # moves to the next record; False at the end
                break
            if cur.key() == b"":
                break
        return n, size, first, last

    def _note_drop(
        self,
        txn: lmdb.Transaction,
        reason: str,
        records: int,
        size: int,
        first_seq: int,
        last_seq: int,
        wall_ns: int,
    ) -> None:
        meta = self.store._dbs["meta"]
        txn.put(_K_DROPPED, _codec.u64(_get_u64(txn, meta, _K_DROPPED, 0) + records), db=meta)
        txn.put(
            _K_DROPPED_BYTES,
            _codec.u64(_get_u64(txn, meta, _K_DROPPED_BYTES, 0) + size),
            db=meta,
        )
        fields = {
            "wall_ms": wall_ns // 1_000_000,
            "mono_ns": self.store.clock.monotonic_ns(),
            "kind": "outbox_drop",
            "reason": reason,
            "policy": self.policy.value,
            "records": records,
            "bytes": size,
            "first_seq": first_seq,
            "last_seq": last_seq,
        }
        dbs = self.store._dbs
        aseq = last_audit_seq_in(txn, dbs) + 1
        txn.put(_codec.u64(aseq), _codec.with_seq(aseq, _codec.dumps(fields)), db=dbs["audit"])
        txn.put(K_LAST_SEQ, _codec.u64(aseq), db=meta)
        log.warning(
            "%s: outbox dropped %d record(s), %d bytes, seq %d..%d (%s, policy %s)",
            self.store.path,
            records,
            size,
            first_seq,
            last_seq,
            reason,
            self.policy.value,
        )


def _get_u64(txn: lmdb.Transaction, db: Any, key: bytes, default: int) -> int:
    raw = txn.get(key, db=db)
    return default if raw is None else _codec.from_u64(raw)
