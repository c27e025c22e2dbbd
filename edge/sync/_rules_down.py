"""Rule tables down: watch ``EDGE_RULES`` for this device, pick, verify, and have edged activate.

The contract (README "Upstream sync: rule tables down")::

    KV bucket EDGE_RULES
      device.<device_id>   value: SignedRuleTable bytes ("ESRT", `edgectl fleet push`)
      group.<group>        one key per entry of device_groups

    precedence   device.<device_id>  >  group.<g1>  >  group.<g2> ...   (device_groups order)

Each key is watched (initial value on start, then every put, delete and purge). The key that
decides is the highest-precedence key that holds a value; its table is checked in this order,
the first failure being the refusal's reason (the other keys' tables are checked too, so that
a bad one is reported before it could matter):

    1. signed   an unsigned RuleTable is refused on the fleet path whatever
                rules_require_signed says (a table from the network must carry its author)
    2. signature by a key in rules_trusted_keys, over the exact bytes (one flipped byte fails)
    3. structure, schema version, content hash, IR (edge.rules.decode_table_with_info)
    4. scope    names this device or one of its groups (empty scope = any device)
    5. expiry   not expired now (wall clock)

Then:

    6. version  strictly newer than edged's active version; the same version with the same
                content hash is the table already running (nothing to do); anything else is
                a rollback and refused.

A refused table never lets a lower-precedence key take over: the board keeps running its
active table (a broken or forged device table must not switch the board to another one).

Deleting the device key makes the first valid group table the winner, and rule 6 still
applies: the board keeps its active table until a group table *newer* than it is published
(`edgectl fleet push --group G` gives every push a fresh, time-based version). Letting a
delete bring back an older version would let anyone who can write the bucket, without any
signing key, roll a board back by deleting one key and replaying an old signed table.

edged is asked to activate the winner over ctl.sock with RulesPush ``require_signed`` and
``require_newer`` (edged checks the version again, atomically with the swap) and a ``source``
naming the key. While edged is not running the winner stays pending and is retried with a
bounded backoff. A refusal leaves the active table running, is audited (``rules_refused``,
by edged when edged refused it, else by this component) and appears in the device status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, CtlRefused, EdgeError, NotRunningError, RuleTableError
from ..rules import RuleSet, TableInfo, TrustedKeys, decode_table_with_info, load_trusted_keys
from ..runtime import CtlClient
from ..wire import CtlOp, MessageType, message_type
from ._link import RULES_BUCKET, Backoff
from ._service import Component, SyncContext

log = logging.getLogger("edge.sync.rules")

SOURCE = "edge-sync"
PUSH_TIMEOUT_S = 30.0
"""How long to wait for edged to verify, compile and swap in a table (a 10,000-rule table
takes over a second on the ctl thread); a timeout leaves the table pending."""


def rule_keys(device_id: str, groups: Iterable[str]) -> tuple[str, ...]:
    """The keys this device watches, highest precedence first."""
    return (f"device.{device_id}", *(f"group.{g}" for g in dict.fromkeys(groups)))


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One value of a watched key, as received."""

    key: str
    revision: int
    value: bytes
    received_wall_ms: int

    def brief(self) -> dict[str, Any]:
        return {"key": self.key, "revision": self.revision, "bytes": len(self.value)}


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    """An entry whose table passed checks 1-5."""

    entry: Entry
    ruleset: RuleSet
    info: TableInfo

    @property
    def version(self) -> int:
        return self.ruleset.version

    @property
    def hash(self) -> str:
        return self.info.content_hash.hex()


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """A table this device will not run, and why (reported upstream and audited)."""

    key: str
    revision: int
    version: int | None
    reason: str
    wall_ms: int
    by: str = SOURCE
    """Who refused it: edge-sync's own checks, or "edged" (edged audited it then)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Active:
    """What edged runs: its Status reply's ``rules`` version and content hash (hex)."""

    version: int
    hash: str


def check_table(
    value: bytes,
    *,
    trusted_keys: TrustedKeys,
    device_id: str,
    groups: Iterable[str],
    now_unix_ms: int,
) -> tuple[RuleSet, TableInfo]:
    """Checks 1-5 of the module docstring on one value. Raises RuleTableError with the reason."""
    kind = message_type(value) if len(value) >= 8 else None
    if kind is MessageType.RULE_TABLE:
        raise RuleTableError(
            "unsigned rule table refused: the fleet path accepts Ed25519-signed tables only; "
            "publish it with `edgectl fleet push ... --key KEY`"
        )
    if kind is not MessageType.SIGNED_RULE_TABLE:
        raise RuleTableError(
            f"not a signed rule table ({len(value)} bytes, "
            f"identifier {value[4:8]!r}); publish tables with `edgectl fleet push`"
        )
    ruleset, info = decode_table_with_info(value, trusted_keys=trusted_keys, require_signed=True)
    info.check_applies(now_unix_ms=now_unix_ms, device_id=device_id, groups=groups)
    return ruleset, info


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do about the watched keys (decide())."""

    action: str
    """"none" (no key holds a table), "current" (the winner is what edged runs), "activate",
    "refuse" (the winner is not newer than the active table), "wait" (edged unknown)."""
    winner: Verified | None
    refused: tuple[Refusal, ...]
    """Every watched key whose table failed checks 1-5, plus the winner when it is not newer.
    With action "refuse" and no winner, the deciding key's table failed checks 1-5."""


def decide(
    order: Iterable[str],
    entries: Mapping[str, Entry],
    check: Callable[[Entry], Verified],
    active: Active | None,
    now_wall_ms: int,
) -> Decision:
    """Precedence and the version rule, as a pure function of what the keys hold.

    check: checks 1-5 of one entry, raising RuleTableError. active: None while edged's active
    table is not known (edged down), which yields "wait" when there is a winner.
    """
    winner: Verified | None = None
    first: str | None = None
    refused: list[Refusal] = []
    for key in order:
        entry = entries.get(key)
        if entry is None:
            continue
        first = first or key
        try:
            verified = check(entry)
        except RuleTableError as exc:
            refused.append(Refusal(key, entry.revision, None, str(exc), now_wall_ms))
            continue
        if key == first:
            winner = verified
    if first is None:
        return Decision("none", None, tuple(refused))
    if winner is None:  # the key that decides holds a bad table: keep what runs
        return Decision("refuse", None, tuple(refused))
    if active is None:
        return Decision("wait", winner, tuple(refused))
    if winner.version == active.version and winner.hash == active.hash:
        return Decision("current", winner, tuple(refused))
    if winner.version <= active.version:
        reason = (
            f"rule table version {winner.version} from {winner.entry.key} is not newer than "
            f"the active version {active.version}: rollback refused; publish a newer table "
            "(`edgectl fleet push` numbers each push afresh)"
        )
        if winner.version == active.version:
            reason += " (same version, different content)"
        refused.append(
            Refusal(winner.entry.key, winner.entry.revision, winner.version, reason, now_wall_ms)
        )
        return Decision("refuse", winner, tuple(refused))
    return Decision("activate", winner, tuple(refused))


class EdgedPort(Protocol):
    """What this component needs from edged (a ctl.sock client; blocking calls, run in a
    worker thread). Both raise NotRunningError when edged does not answer."""

    def status(self) -> dict[str, Any]: ...

    def push(self, blob: bytes, args: dict[str, Any]) -> dict[str, Any]:
        """RulesPush; raises CtlRefused when edged refuses the table."""
        ...


Audit = Callable[..., None]
"""audit(kind, **fields): append an audit record to the board's store."""


class RulesDown:
    """The rules-down component: feed it key updates (``on_update``/``on_delete``, or let
    ``watch()`` do it from a KV bucket) and run ``run()``; it activates on edged what wins.

    State for the device status (``snapshot()``): last table received, last refused (with its
    reason), pending (waiting for edged), last applied. ``on_change`` is called after each
    change of that state.
    """

    def __init__(
        self,
        *,
        device_id: str,
        groups: Iterable[str],
        trusted_keys: TrustedKeys,
        edged: EdgedPort,
        audit: Audit,
        clock: Clock = SYSTEM_CLOCK,
        on_change: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.device_id = device_id
        self.groups = tuple(dict.fromkeys(groups))
        self.keys = rule_keys(device_id, self.groups)
        self._trusted = trusted_keys
        self.edged = edged
        self.audit_fn = audit
        self._clock = clock
        self.on_change = on_change
        self._backoff = backoff or Backoff(0.25, 30.0)
        self.entries: dict[str, Entry] = {}
        self._wake = asyncio.Event()
        self._reported: set[tuple[str, int, str]] = set()
        self.edged_refused: dict[tuple[str, int], Refusal] = {}
        self.last_received: dict[str, Any] | None = None
        self.last_refused: dict[str, Any] | None = None
        self.last_applied: dict[str, Any] | None = None
        self.pending: dict[str, Any] | None = None
        self.active: Active | None = None

    # ---------------------------------------------------------------- inputs

    def on_update(self, key: str, revision: int, value: bytes) -> None:
        if key not in self.keys:
            return
        entry = Entry(key, revision, bytes(value), self._clock.wall_ms())
        self.entries[key] = entry
        self.last_received = {**entry.brief(), "wall_ms": entry.received_wall_ms}
        log.info("rule table received: %s revision %d (%d bytes)", key, revision, len(value))
        self._changed()
        self._wake.set()

    def on_delete(self, key: str, revision: int) -> None:
        if self.entries.pop(key, None) is not None:
            log.info("rule table key %s deleted (revision %d)", key, revision)
            self._wake.set()

    # ---------------------------------------------------------------- the decision

    def _check(self, entry: Entry) -> Verified:
        ruleset, info = check_table(
            entry.value,
            trusted_keys=self._trusted,
            device_id=self.device_id,
            groups=self.groups,
            now_unix_ms=self._clock.wall_ms(),
        )
        return Verified(entry, ruleset, info)

    def _report(self, refusal: Refusal) -> None:
        """Audit (when edge-sync refused it) and expose a refusal, once per key revision and
        reason."""
        ident = (refusal.key, refusal.revision, refusal.reason)
        if ident in self._reported:
            return
        self._reported.add(ident)
        log.warning("rule table %s revision %d refused: %s", refusal.key, refusal.revision,
                    refusal.reason)  # fmt: skip
        if refusal.by == SOURCE:
            try:
                self.audit_fn(
                    "rules_refused",
                    source=SOURCE,
                    key=refusal.key,
                    revision=refusal.revision,
                    version=refusal.version,
                    reason=refusal.reason,
                )
            except EdgeError as exc:
                log.error("cannot audit the refusal of %s: %s", refusal.key, exc)
        self.last_refused = refusal.to_json()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def step(self) -> float | None:
        """One evaluation: read edged's active table, decide, report, activate.

        Returns the delay after which to try again (edged unreachable), or None when there is
        nothing to retry (the next key update wakes ``run()``).
        """
        try:
            status = await asyncio.to_thread(self.edged.status)
            rules = status["rules"]
            self.active = Active(int(rules["version"]), str(rules["hash"]))
        except NotRunningError as exc:
            self.active = None
            log.debug("edged not reachable: %s", exc)
        decision = decide(self.keys, self.entries, self._check, self.active, self._clock.wall_ms())
        live = {(e.key, e.revision) for e in self.entries.values()}
        self._reported = {r for r in self._reported if r[:2] in live}
        for refusal in decision.refused:
            self._report(refusal)
        winner = decision.winner
        if decision.action == "wait":
            assert winner is not None
            return self._set_pending(winner, "edged is not running")
        self._set_pending(None)
        if decision.action == "current" and winner is not None:
            self._applied(winner)
        if decision.action != "activate":
            return None
        assert winner is not None
        known = self.edged_refused.get((winner.entry.key, winner.entry.revision))
        if known is not None:  # edged said no to this very value; wait for a new one
            return None
        try:
            reply = await asyncio.to_thread(
                self.edged.push,
                winner.entry.value,
                {
                    "require_signed": True,
                    "require_newer": True,
                    "source": f"{SOURCE} {winner.entry.key} revision {winner.entry.revision}",
                },
            )
        except NotRunningError as exc:
            return self._set_pending(winner, str(exc))
        except CtlRefused as exc:
            refusal = Refusal(
                winner.entry.key,
                winner.entry.revision,
                winner.version,
                str(exc),
                self._clock.wall_ms(),
                by="edged",
            )
            self.edged_refused[(refusal.key, refusal.revision)] = refusal
            self._report(refusal)
            return None
        self.active = Active(int(reply["version"]), str(reply["hash"]))
        log.info("rule table %s version %d active on edged", winner.entry.key, winner.version)
        self._applied(winner)
        return None

    def _set_pending(self, winner: Verified | None, why: str = "") -> float | None:
        if winner is None:
            self._backoff.reset()
            if self.pending is not None:
                self.pending = None
                self._changed()
            return None
        delay = self._backoff.next()
        pending = {**winner.entry.brief(), "version": winner.version, "waiting_for": why}
        if pending != self.pending:
            self.pending = pending
            self._changed()
        return delay

    def _applied(self, winner: Verified) -> None:
        applied = {
            **winner.entry.brief(),
            "version": winner.version,
            "hash": winner.hash,
            "key_id": winner.info.key_id.hex() if winner.info.key_id else None,
        }
        if self.last_applied is None or {**self.last_applied, "wall_ms": 0} != {
            **applied,
            "wall_ms": 0,
        }:
            self.last_applied = {**applied, "wall_ms": self._clock.wall_ms()}
            self._changed()

    async def run(self) -> None:
        """Evaluate whenever a key changes, and retry while a winner waits for edged."""
        delay: float | None = None
        while True:
            if delay is None:
                await self._wake.wait()
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
            self._wake.clear()
            delay = await self.step()

    def snapshot(self) -> dict[str, Any]:
        """The rules part of the device status document."""
        return {
            "keys": list(self.keys),
            "last_received": self.last_received,
            "last_refused": self.last_refused,
            "last_applied": self.last_applied,
            "pending": self.pending,
        }

    # ---------------------------------------------------------------- the KV side

    async def watch(self, kv: Any) -> None:
        """Feed this component from a nats-py KeyValue bucket: one watcher per key (never the
        whole bucket: a fleet's tables are not this board's business). Once every watcher
        has delivered its initial values, keys it did not deliver are forgotten (deleted
        while the link was down). Runs until a watcher fails (raises; the caller watches
        again on the next session)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        watchers: list[Any] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            for key in self.keys:
                watchers.append(await kv.watch(key))
            tasks = [asyncio.create_task(_pump(w, queue)) for w in watchers]
            seen: set[str] = set()
            initial = len(watchers)
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:  # a watcher's "initial values delivered" marker
                    initial -= 1
                    if initial == 0:
                        for key in set(self.entries) - seen:
                            self.on_delete(key, 0)
                    continue
                seen.add(item.key)
                if item.operation in ("DEL", "PURGE"):
                    self.on_delete(item.key, item.revision)
                else:
                    self.on_update(item.key, item.revision, item.value or b"")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in watchers:
                try:
                    await w.stop()
                except Exception as exc:  # a dead connection cannot unsubscribe; fine
                    log.debug("watcher stop: %s", exc)


async def _pump(watcher: Any, queue: asyncio.Queue[Any]) -> None:
    try:
        async for entry in watcher:
            await queue.put(entry)
        await queue.put(ConnectionError("KV watcher stopped"))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await queue.put(exc)


class CtlEdged:
    """EdgedPort over ctl.sock (blocking; one request at a time)."""

    def __init__(self, run_dir: Any, timeout_s: float = 5.0) -> None:
        self._status = CtlClient(run_dir, timeout_s)
        self._push = CtlClient(run_dir, PUSH_TIMEOUT_S)

    def status(self) -> dict[str, Any]:
        return self._status.request(CtlOp.STATUS)

    def push(self, blob: bytes, args: dict[str, Any]) -> dict[str, Any]:
        return self._push.request(CtlOp.RULES_PUSH, args, blob)

    def close(self) -> None:
        self._status.close()
        self._push.close()


class RulesDownComponent(Component):
    """edge-sync's rules-down duty: watch EDGE_RULES on every session, activate on edged.

    The state survives link sessions (a table received before the link dropped is still
    activated when edged comes back); ``ctx.status["rules"]`` carries :meth:`RulesDown.snapshot`.
    """

    name = "rules_down"

    def __init__(self) -> None:
        self.core: RulesDown | None = None

    async def run(self, ctx: SyncContext) -> None:
        from ..store import StoreWriter

        cfg = ctx.config
        try:
            trusted: TrustedKeys = load_trusted_keys(
                k.strip() for k in cfg.rules_trusted_keys.split(",") if k.strip()
            )
        except ConfigError as exc:  # every table will be refused, saying so
            log.error("rules_trusted_keys: %s; every fleet rule table will be refused", exc)
            trusted = {}
        edged = CtlEdged(cfg.run_dir)
        writer = StoreWriter(ctx.store, clock=ctx.clock)  # audit records (rules_refused)
        writer.start()
        core = self.core
        if core is None:
            core = self.core = RulesDown(
                device_id=cfg.device_id,
                groups=[g.strip() for g in cfg.device_groups.split(",") if g.strip()],
                trusted_keys=trusted,
                edged=edged,
                audit=writer.audit,
                clock=ctx.clock,
            )
        core.edged, core.audit_fn = edged, writer.audit  # a restarted component's new handles
        core.on_change = lambda: ctx.status.update(rules=core.snapshot())
        core.on_change()
        tasks = [
            asyncio.create_task(core.run(), name="rules_down decide"),
            asyncio.create_task(self._follow(ctx, core), name="rules_down watch"),
        ]
        try:
            stop = asyncio.ensure_future(ctx.stopping.wait())
            done, _ = await asyncio.wait({stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop:
                    t.result()  # a failure: raise it to the supervisor
        finally:
            for t in [*tasks, stop]:
                t.cancel()
            await asyncio.gather(*tasks, stop, return_exceptions=True)
            await ctx.in_thread(writer.close)
            edged.close()

    async def _follow(self, ctx: SyncContext, core: RulesDown) -> None:
        backoff = Backoff(0.5, 30.0)
        while not ctx.stopping.is_set():
            session = await ctx.link.session()
            try:
                kv = await session.js.key_value(RULES_BUCKET)
                watch = asyncio.ensure_future(core.watch(kv))
                lost = asyncio.ensure_future(session.closed.wait())
                try:
                    await asyncio.wait({watch, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    watch.cancel()
                    lost.cancel()
                    await asyncio.gather(watch, lost, return_exceptions=True)
                if watch.done() and not watch.cancelled() and watch.exception() is not None:
                    raise watch.exception()  # type: ignore[misc]
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - no bucket yet, a watcher lost: retry
                log.warning("watching %s: %s", RULES_BUCKET, exc)
                await ctx.sleep(backoff.next())
