"""The LMDB environment of edged: opening, schema, rule tables and every read.

One environment (``subdir=True``: ``<path>/data.mdb`` + ``<path>/lock.mdb``), opened with normal
locking so that edge-sync and edgectl can open it from their own processes, and with sync on:
a committed transaction is on disk. Named databases::

    meta         schema_version, rules.active, rules.lkg, audit.last_seq, edged.starts (u64),
                 rules.file (SHA-256 + u64)
    rule_tables  version -> RuleTable blob
    agents       agent id -> JSON record
    audit        sequence -> JSON record (append-only, pruned oldest-first)
    stats        wall_ms -> JSON snapshot (pruned oldest-first)

Writes from the control loop go through :class:`edge.store.StoreWriter`; this module writes only
on the cold path (rule tables), synchronously.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import StoreError, StoreFullError

from . import _codec
from ._gate import TxnGate

if TYPE_CHECKING:
    from ._writer import StoreWriter

log = logging.getLogger("edge.store")

SCHEMA_VERSION = 1

DB_NAMES = ("meta", "agents", "rule_tables", "audit", "stats")
# Room for the databases the design still adds (outbox, rule window checkpoints) without
# reopening every process that shares the environment.
_MAX_DBS = 16

_K_SCHEMA = b"schema_version"
RULE_TABLE_RETENTION = 16  # stored rule table versions kept (plus active and last-known-good)
_K_ACTIVE = b"rules.active"
_K_LKG = b"rules.lkg"
# The last audit sequence ever assigned, so that sequences go on after the log is pruned empty.
K_LAST_SEQ = b"audit.last_seq"
_K_STARTS = b"edged.starts"
# the --rules file edged last ran: its bytes' SHA-256 (32 bytes) + the table version (u64)
_K_RULES_FILE = b"rules.file"

# Audit records decoded per read transaction in iter_audit(): keeps each transaction (and so
# the pages it pins, and a pending map growth) short while the caller consumes the iterator.
_AUDIT_CHUNK = 256

_PAGE = os.sysconf("SC_PAGE_SIZE")

_T = TypeVar("_T")


def _round_to_page(n: int) -> int:
    return -(-n // _PAGE) * _PAGE


class Store:
    """The state store of one board: rule tables, agents, audit log and stats in LMDB.

    Make one with :meth:`Store.open`. Every method may be called from any thread. A process can
    hold one Store per environment (LMDB forbids opening the same files twice in one process);
    other processes open their own.

    Raises :class:`edge.errors.StoreError` for a closed store or an LMDB failure (its message
    names the store's path), :class:`edge.errors.StoreFullError` when a rule table does not fit.
    """

    def __init__(
        self,
        env: lmdb.Environment,
        dbs: dict[str, Any],
        path: Path,
        *,
        max_map_size: int,
        readonly: bool,
        clock: Clock,
    ) -> None:
        """Internal: use :meth:`Store.open`."""
        self._env: lmdb.Environment | None = env
        self._dbs = dbs
        self.path = path
        self.max_map_size = max_map_size
        self.readonly = readonly
        self.clock = clock
        self._gate = TxnGate()
        self._writers: weakref.WeakSet[StoreWriter] = weakref.WeakSet()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        map_size: int = 64 << 20,
        max_map_size: int = 1 << 30,
        readonly: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Store:
        """Open (and, unless ``readonly``, create) the store in the directory ``path``.

        ``map_size`` is the initial LMDB map in bytes (rounded up to the page size); writers
        double it on demand up to ``max_map_size`` bytes. A new directory is created with mode
        0o700 (an existing one keeps its mode). A fresh store is stamped with
        :data:`SCHEMA_VERSION`.

        Raises StoreError when the directory holds a store written by a newer schema, something
        that is not a store, a store already open in this process, or cannot be opened;
        ValueError for sizes that make no sense.
        """
        path = Path(path)
        map_size = _round_to_page(map_size)
        if map_size <= 0:
            raise ValueError(f"map_size must be positive, got {map_size}")
        if max_map_size < map_size:
            raise ValueError(
                f"max_map_size ({max_map_size} bytes) is below map_size ({map_size} bytes)"
            )
        if readonly and not (path / "data.mdb").exists():
            raise StoreError(f"no store at {path} (no data.mdb): start edged once to create it")
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                pass
        try:
            env = lmdb.open(
                str(path),
                map_size=map_size,
                subdir=True,
                readonly=readonly,
                create=False,  # the directory is made above, with our mode
                mode=0o700,
                max_dbs=_MAX_DBS,
                sync=True,
                metasync=True,
                lock=True,
                # writemap stays off: a stray write through the mapping could corrupt the
                # file, processes with and without it do not mix, and it buys little here.
                writemap=False,
            )
        except lmdb.Error as e:
            if "already open in this process" in str(e):
                raise StoreError(
                    f"the store at {path} is already open in this process: LMDB allows one "
                    "open per process, so share that Store object"
                ) from e
            raise StoreError(f"cannot open the store at {path}: {e}") from e
        try:
            dbs = _open_dbs(env, path, readonly)
        except BaseException:
            env.close()
            raise
        store = cls(env, dbs, path, max_map_size=max_map_size, readonly=readonly, clock=clock)
        log.debug("opened store %s (map %d bytes)", path, env.info()["map_size"])
        return store

    def close(self) -> None:
        """Close the store; idempotent. Closes (and so flushes) any writer still running on it
        first, then waits for transactions in flight on other threads."""
        for writer in list(self._writers):
            writer.close()
        with self._gate.exclusive():
            if self._env is not None:
                self._env.close()
                self._env = None

    @property
    def closed(self) -> bool:
        return self._env is None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._env is None else ("readonly" if self.readonly else "open")
        return f"<Store {self.path} {state}>"

    # -- rule tables (synced, synchronous) ---------------------------------------------------

    def put_rule_table(self, version: int, blob: bytes, *, activate: bool = True) -> None:
        """Store ``blob`` as rule table ``version`` (durably, before returning).

        With ``activate`` it becomes the active table and the previously active one becomes
        last-known-good (unless ``version`` was already active). Versions are immutable:
        storing the same bytes again is a no-op, different bytes raise StoreError.

        Blocks for one synced commit (~0.3 ms here), longer if the store writer is committing.
        Raises StoreFullError when the table does not fit even after growing the map to
        ``max_map_size`` (the table is refused, nothing changes), or on disk full;
        StoreError on any other failure; ValueError for a version outside 0..2**64-1.
        """
        key = _codec.u64(version)
        data = bytes(blob)

        def op(txn: lmdb.Transaction[bytes]) -> None:
            existing = txn.get(key, db=self._dbs["rule_tables"])
            if existing is None:
                txn.put(key, data, db=self._dbs["rule_tables"])
            elif existing != data:
                raise StoreError(
                    f"rule table v{version} is already stored with different content "
                    f"({len(existing)} bytes vs {len(data)} bytes): versions are immutable, "
                    "compile the table with a new version"
                )
            if activate:
                self._activate_in(txn, version)
            self._prune_rule_tables(txn)

        self._write(op, f"storing rule table v{version} ({len(data)} bytes)")

    def set_active_rule_table(self, version: int) -> None:
        """Make the stored table ``version`` active (e.g. a rollback), durably; the previously
        active table becomes last-known-good. Raises StoreError if ``version`` is not stored."""
        key = _codec.u64(version)

        def op(txn: lmdb.Transaction[bytes]) -> None:
            if txn.get(key, db=self._dbs["rule_tables"]) is None:
                stored = [str(t["version"]) for t in self._rule_table_rows(txn)]
                raise StoreError(
                    f"cannot activate rule table v{version}: it is not stored in {self.path} "
                    f"(stored: {', '.join(stored) or 'none'})"
                )
            self._activate_in(txn, version)

        self._write(op, f"activating rule table v{version}")

    def count_start(self) -> int:
        """Count one more start of edged, durably; return the count (1 the first time).
        Instruction ids are numbered per start from it, so they are unique across restarts."""

        def op(txn: lmdb.Transaction[bytes]) -> int:
            raw = txn.get(_K_STARTS, db=self._dbs["meta"])
            starts = (_codec.from_u64(raw) if raw is not None else 0) + 1
            txn.put(_K_STARTS, _codec.u64(starts), db=self._dbs["meta"])
            return starts

        return self._write(op, "counting a start")

    def rules_file_mark(self) -> tuple[bytes, int] | None:
        """(SHA-256 of the rule file's bytes, table version) edged last ran from --rules."""
        with self._read() as txn:
            raw = txn.get(_K_RULES_FILE, db=self._dbs["meta"])
        return (bytes(raw[:32]), _codec.from_u64(raw[32:])) if raw and len(raw) == 40 else None

    def set_rules_file_mark(self, digest: bytes, version: int) -> None:
        """Remember that rule table ``version`` is the rule file whose bytes hash to ``digest``,
        so that the next start with the same file need not compile it."""
        value = bytes(digest) + _codec.u64(version)

        def op(txn: lmdb.Transaction[bytes]) -> None:
            txn.put(_K_RULES_FILE, value, db=self._dbs["meta"])

        self._write(op, "remembering the rules file")

    def get_rule_table(self, version: int) -> bytes | None:
        """The blob of rule table ``version``; None when it is not stored."""
        with self._read() as txn:
            return txn.get(_codec.u64(version), db=self._dbs["rule_tables"])

    def active_rule_table(self) -> tuple[int, bytes] | None:
        """``(version, blob)`` of the active table; None when none was ever activated."""
        return self._pointed_table(_K_ACTIVE)

    def lkg_rule_table(self) -> tuple[int, bytes] | None:
        """``(version, blob)`` of the last-known-good table (the one active before the current
        one); None when there is none yet."""
        return self._pointed_table(_K_LKG)

    def list_rule_tables(self) -> list[dict[str, Any]]:
        """Every stored table, oldest version first:
        ``[{"version": int, "bytes": blob length, "active": bool, "lkg": bool}]``."""
        with self._read() as txn:
            return self._rule_table_rows(txn)

    # -- agents, audit, stats (written by StoreWriter) ---------------------------------------

    def load_agents(self) -> dict[str, dict[str, Any]]:
        """Every agent record, by agent id (as last written by ``StoreWriter.put_agent``).
        A record that does not decode is skipped and logged."""
        out: dict[str, dict[str, Any]] = {}
        with self._read() as txn:
            for k, v in txn.cursor(db=self._dbs["agents"]):
                try:
                    out[bytes(k).decode()] = _codec.loads_object(v)
                except ValueError as e:
                    log.warning("%s: skipping agent record %r: %s", self.path, bytes(k), e)
        return out

    def iter_audit(
        self, after_seq: int = 0, limit: int | None = None, kind: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Audit records with ``seq > after_seq``, in sequence order.

        ``limit`` caps how many are yielded (None: no cap); ``kind`` keeps only records of
        that kind (None: every kind). Records are read in short transactions of a few hundred,
        so holding the iterator open pins nothing; records pruned meanwhile are skipped.
        """
        if limit is not None and limit <= 0:
            return
        next_seq = max(after_seq, 0) + 1
        left = limit
        while next_seq <= _codec.U64_MAX:
            chunk, next_seq, more = self._audit_chunk(next_seq, kind)
            for rec in chunk:
                yield rec
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
            if not more:
                return

    def last_audit_seq(self) -> int:
        """The last audit sequence assigned (the next record gets this + 1); 0 when none was."""
        with self._read() as txn:
            return last_audit_seq_in(txn, self._dbs)

    def latest_stats(self) -> dict[str, Any] | None:
        """The stats snapshot with the highest ``wall_ms`` key (it carries ``"wall_ms"``);
        None when there is none."""
        with self._read() as txn:
            cur = txn.cursor(db=self._dbs["stats"])
            if not cur.last():
                return None
            return _codec.loads_object(cur.value())

    def info(self) -> dict[str, Any]:
        """``{"path", "readonly", "schema_version", "map_size", "max_map_size", "used_bytes",
        "page_size", "entries": {db: n}, "readers"}``. Sizes in bytes; ``used_bytes`` is the
        high-water mark of the data file (freed pages that LMDB reuses are still counted)."""
        with self._read() as txn:
            env = self._live_env()
            ei = env.info()
            psize = env.stat()["psize"]
            entries = {name: txn.stat(self._dbs[name])["entries"] for name in DB_NAMES}
            raw = txn.get(_K_SCHEMA, db=self._dbs["meta"])
        return {
            "path": str(self.path),
            "readonly": self.readonly,
            "schema_version": _codec.from_u64(raw) if raw is not None else None,
            "map_size": ei["map_size"],
            "max_map_size": self.max_map_size,
            "used_bytes": (ei["last_pgno"] + 1) * psize,
            "page_size": psize,
            "entries": entries,
            "readers": ei["num_readers"],
        }

    def release_resident(self) -> int:
        """Take this process's mapped pages of the data file out of its RSS; returns the
        bytes of mapping advised (0: nothing mapped, or not possible here).

        Every page LMDB reads goes through its read-only shared mapping, and a page the writer
        once read (each page of an append-only log, as it fills) stays mapped: RSS grows with
        what was ever written (~0.5 KB per agent that came and went). Those pages are clean
        copies of the file (writes go through ``pwrite``: ``writemap`` is off), so
        ``MADV_DONTNEED`` only unmaps them; the next read faults them in again from the page
        cache. Held under the gate so that the map cannot be resized (and its address range
        reused) meanwhile."""
        with self._gate.shared():
            self._live_env()
            return release_file_mapping(str(self.path / "data.mdb"))

    # -- internals shared with the writer ----------------------------------------------------

    def _live_env(self) -> lmdb.Environment:
        env = self._env
        if env is None:
            raise StoreError(f"the store at {self.path} is closed")
        return env

    def _map_size(self) -> int:
        with self._gate.shared():
            return int(self._live_env().info()["map_size"])

    def _grow_map(self, seen: int) -> bool:
        """Double the map (capped at max_map_size) after a MapFullError at map size ``seen``.

        True when the map is now larger than ``seen`` (possibly grown by another thread
        meanwhile); False when it is already at max_map_size. The caller must hold no
        transaction and not the gate.
        """
        with self._gate.exclusive():
            env = self._live_env()
            current = int(env.info()["map_size"])
            if current > seen:
                return True
            if current >= self.max_map_size:
                return False
            new = min(_round_to_page(current * 2), self.max_map_size)
            env.set_mapsize(new)
        log.info("%s: map grown from %d to %d bytes", self.path, current, new)
        return True

    def _adopt_map_size(self) -> None:
        """Take on the map size another process grew the environment to (MapResizedError)."""
        with self._gate.exclusive():
            self._live_env().set_mapsize(0)

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction[bytes]]:
        """A short read transaction under the gate; lmdb errors become StoreError."""
        for _ in range(3):
            with self._gate.shared():
                env = self._live_env()
                try:
                    txn = env.begin()
                except lmdb.MapResizedError:
                    pass  # adopted below, outside the shared hold
                except lmdb.Error as e:
                    raise StoreError(f"reading the store at {self.path} failed: {e}") from e
                else:
                    try:
                        yield txn
                    except lmdb.Error as e:
                        raise StoreError(f"reading the store at {self.path} failed: {e}") from e
                    finally:
                        txn.abort()
                    return
            self._adopt_map_size()
        raise StoreError(f"the map of {self.path} keeps being resized under this reader")

    def _write(self, op: Callable[[lmdb.Transaction[bytes]], _T], what: str) -> _T:
        """Run ``op`` in one synced write transaction, growing the map when it is full."""
        for _ in range(64):
            with self._gate.shared():
                env = self._live_env()
                seen = int(env.info()["map_size"])
                try:
                    txn = env.begin(write=True)
                except lmdb.MapResizedError:
                    txn = None
                except lmdb.Error as e:
                    raise StoreError(f"{what} in {self.path} failed: {e}") from e
                if txn is not None:
                    try:
                        result = op(txn)
                        txn.commit()
                        return result
                    except lmdb.MapFullError:
                        txn.abort()
                    except lmdb.DiskError as e:
                        txn.abort()
                        raise StoreFullError(
                            f"{what} in {self.path} failed: the disk is full ({e}); "
                            "free space on the data partition"
                        ) from e
                    except lmdb.Error as e:
                        txn.abort()
                        raise StoreError(f"{what} in {self.path} failed: {e}") from e
                    except BaseException:
                        txn.abort()
                        raise
            if txn is None:
                self._adopt_map_size()
            elif not self._grow_map(seen):
                raise StoreFullError(
                    f"{what} in {self.path} refused: the LMDB map is full at max_map_size "
                    f"({self.max_map_size} bytes); raise max_map_size or free space"
                )
        raise StoreError(f"{what} in {self.path} failed: the map kept changing under it")

    # -- helpers -----------------------------------------------------------------------------

    def _activate_in(self, txn: lmdb.Transaction, version: int) -> None:
        meta = self._dbs["meta"]
        active = txn.get(_K_ACTIVE, db=meta)
        if active is not None and _codec.from_u64(active) == version:
            return
        if active is not None:
            txn.put(_K_LKG, active, db=meta)
        txn.put(_K_ACTIVE, _codec.u64(version), db=meta)

    def _prune_rule_tables(self, txn: lmdb.Transaction) -> None:
        """Keep the newest RULE_TABLE_RETENTION versions (never the active or last-known-good
        one): a board stores every pushed table, and its flash is not infinite."""
        meta, tables = self._dbs["meta"], self._dbs["rule_tables"]
        keep = {txn.get(_K_ACTIVE, db=meta), txn.get(_K_LKG, db=meta)}
        with txn.cursor(db=tables) as cur:
            keys = [k for k in cur.iternext(keys=True, values=False)]
        excess = len(keys) - RULE_TABLE_RETENTION
        for key in keys:  # ascending big-endian versions: oldest first
            if excess <= 0:
                break
            if key not in keep:
                txn.delete(key, db=tables)
                excess -= 1

    def _pointed_table(self, which: bytes) -> tuple[int, bytes] | None:
        with self._read() as txn:
            ptr = txn.get(which, db=self._dbs["meta"])
            if ptr is None:
                return None
            blob = txn.get(ptr, db=self._dbs["rule_tables"])
        version = _codec.from_u64(ptr)
        if blob is None:
            raise StoreError(
                f"{self.path}: {which.decode()} points at rule table v{version}, which is not "
                "stored (the store is damaged): activate a stored version"
            )
        return version, blob

    def _rule_table_rows(self, txn: lmdb.Transaction[bytes]) -> list[dict[str, Any]]:
        meta = self._dbs["meta"]
        active, lkg = txn.get(_K_ACTIVE, db=meta), txn.get(_K_LKG, db=meta)
        rows = []
        for k, v in txn.cursor(db=self._dbs["rule_tables"]):
            rows.append(
                {
                    "version": _codec.from_u64(k),
                    "bytes": len(v),
                    "active": active is not None and bytes(k) == bytes(active),
                    "lkg": lkg is not None and bytes(k) == bytes(lkg),
                }
            )
        return rows

    def _audit_chunk(
        self, first_seq: int, kind: str | None
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """Up to _AUDIT_CHUNK records from ``first_seq`` on; returns them, the next sequence to
        ask for, and whether the log may go on past them."""
        out: list[dict[str, Any]] = []
        scanned = 0
        next_seq = first_seq
        with self._read() as txn:
            cur = txn.cursor(db=self._dbs["audit"])
            if not cur.set_range(_codec.u64(first_seq)):
                return out, next_seq, False
            for k, v in cur:
                seq = _codec.from_u64(k)
                next_seq = seq + 1
                scanned += 1
                try:
                    rec = _codec.loads_object(v)
                except ValueError as e:
                    log.warning("%s: skipping audit record %d: %s", self.path, seq, e)
                else:
                    if kind is None or rec.get("kind") == kind:
                        out.append(rec)
                if scanned >= _AUDIT_CHUNK:
                    return out, next_seq, True
        return out, next_seq, False


def last_audit_seq_in(txn: lmdb.Transaction, dbs: dict[str, Any]) -> int:
    """The last audit sequence ever assigned: the last key, or what meta remembers when the
    log has been pruned empty."""
    cur = txn.cursor(db=dbs["audit"])
    last_key = _codec.from_u64(cur.key()) if cur.last() else 0
    raw = txn.get(K_LAST_SEQ, db=dbs["meta"])
    return max(last_key, _codec.from_u64(raw) if raw is not None else 0)


def _open_dbs(env: lmdb.Environment, path: Path, readonly: bool) -> dict[str, Any]:
    """Open the named databases and check (or stamp) the schema version. Another process
    (edged beside edge-sync) may have grown the map since: adopt its size and go on."""
    for _ in range(3):
        try:
            return _open_dbs_once(env, path, readonly)
        except StoreError as e:
            if not isinstance(e.__cause__, lmdb.MapResizedError):
                raise
            env.set_mapsize(0)  # 0: take the size the file has now
    return _open_dbs_once(env, path, readonly)


def _open_dbs_once(env: lmdb.Environment, path: Path, readonly: bool) -> dict[str, Any]:
    try:
        if readonly:
            dbs = {name: env.open_db(name.encode(), create=False) for name in DB_NAMES}
            with env.begin() as txn:
                _check_schema(txn, dbs, path, stamp=False)
            return dbs
        with env.begin(write=True) as txn:
            dbs = {name: env.open_db(name.encode(), txn=txn) for name in DB_NAMES}
            _check_schema(txn, dbs, path, stamp=True)
        return dbs
    except lmdb.NotFoundError as e:
        raise StoreError(
            f"{path} is not an edge store (a named database is missing): point the data "
            "directory elsewhere"
        ) from e
    except lmdb.Error as e:
        raise StoreError(f"cannot open the store at {path}: {e}") from e


def _check_schema(txn: lmdb.Transaction, dbs: dict[str, Any], path: Path, *, stamp: bool) -> None:
    raw = txn.get(_K_SCHEMA, db=dbs["meta"])
    if raw is None:
        if any(txn.stat(dbs[name])["entries"] for name in DB_NAMES):
            raise StoreError(
                f"{path} holds data but no schema version: it was not written by edged; "
                "point the data directory elsewhere"
            )
        if not stamp:
            raise StoreError(f"{path} is not initialised yet: start edged once to create it")
        txn.put(_K_SCHEMA, _codec.u64(SCHEMA_VERSION), db=dbs["meta"])
        return
    try:
        found = _codec.from_u64(raw)
    except ValueError:
        found = 0
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the store at {path} was written by a newer schema (version {found}); this "
            f"edge-runtime reads up to version {SCHEMA_VERSION}: upgrade edge-runtime"
        )
    if found < 1:
        raise StoreError(f"the store at {path} has an invalid schema version {bytes(raw)!r}")


_MADV_DONTNEED = 4


def release_file_mapping(path: str) -> int:
    """``madvise(MADV_DONTNEED)`` every read-only shared mapping of ``path`` in this process
    (from /proc/self/maps); returns the bytes advised. A writable or private mapping is never
    touched (its pages may hold data the file does not). 0 where it cannot be done (no /proc,
    no libc madvise)."""
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].rstrip("\n") == path and parts[1] == "r--s":
                    lo, hi = parts[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16) - int(lo, 16)))
    except OSError:
        return 0
    if not ranges:
        return 0
    madvise = _libc_madvise()
    if madvise is None:
        return 0
    done = 0
    for addr, size in ranges:
        if madvise(addr, size, _MADV_DONTNEED) == 0:
            done += size
    return done


_madvise: Any = None


def _libc_madvise() -> Any:
    global _madvise
    if _madvise is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).madvise
        except (OSError, AttributeError):
            _madvise = False
            return None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
        _madvise = fn
    return _madvise or None
