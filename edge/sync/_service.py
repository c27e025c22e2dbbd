"""edge-sync's main: config, single-instance lock, store, link, and the components.

::

    edge-sync (asyncio, one thread)
     +-- Link.run             one NATS connection at a time (see _link)
     +-- component tasks      each `await component.run(ctx)`, supervised: a component that
     |                        raises is logged and restarted after a bounded backoff
     +-- SIGTERM / SIGINT     set ctx.stopping; components return, the link closes, exit 0

A component is a small class with ``name`` and ``async def run(self, ctx)``; the table in
:mod:`edge.sync._components` lists them. ``run`` must return soon after ``ctx.stopping`` is set
and must not block the event loop (LMDB writes go through :meth:`SyncContext.in_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._sdnotify import Notifier
from ..clock import SYSTEM_CLOCK, Clock
from ..config import EdgeConfig
from ..errors import AlreadyRunningError, ConfigError, RuntimeStateError
from ..runtime import InstanceLock
from ..store import Outbox, Store
from ._link import Backoff, Link, LinkOptions, check_upstream_config

log = logging.getLogger("edge.sync")

LOCK_NAME = "edge-sync.lock"
STATUS_FILE = "sync-status.json"

_T = TypeVar("_T")


class SyncStatus:
    """The live state of edge-sync: a flat JSON-able document that components update.

    ``version`` increases on every change, so the status file writer can tell when to write.
    """

    def __init__(self, **initial: Any) -> None:
        self._doc: dict[str, Any] = dict(initial)
        self.version = 0
        self.changed = asyncio.Event()

    def update(self, **fields: Any) -> None:
        """Set these fields (a no-op when every value is unchanged)."""
        if all(self._doc.get(k, _MISSING) == v for k, v in fields.items()):
            return
        self._doc.update(fields)
        self.version += 1
        self.changed.set()

    def get(self, key: str, default: Any = None) -> Any:
        return self._doc.get(key, default)

    def snapshot(self) -> dict[str, Any]:
        return dict(self._doc)


_MISSING = object()


@dataclass
class SyncContext:
    """What every component shares. ``store``/``outbox`` are this process's handles on edged's
    LMDB environment (edge-sync holds no lock of edged's)."""

    config: EdgeConfig
    link: Link
    store: Store
    outbox: Outbox
    status: SyncStatus
    clock: Clock
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` (a synced LMDB write, a file write) off the event loop."""
        return await asyncio.to_thread(fn, *args)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken early because edge-sync is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return True
        return False


class Component:
    """One concurrent duty of edge-sync (publishing the outbox, watching rule tables, ...).

    Subclasses set ``name`` and implement :meth:`run`. Raising from ``run`` is a failure: the
    service logs it and runs the component again after a bounded backoff; returning while not
    stopping is treated the same way.
    """

    name = "component"

    async def run(self, ctx: SyncContext) -> None:
        raise NotImplementedError


class SyncLock(InstanceLock):
    """``<run_dir>/edge-sync.lock``: flock'd, holding the pid; the kernel drops it with the
    process. Not edged's lock: both run side by side."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, owner="edge-sync", hint="use another --run-dir")


class SyncService:
    """edge-sync in one object: :meth:`run` until :meth:`request_stop` (or a signal, in
    :func:`main`). ``components`` defaults to the table in :mod:`edge.sync._components`."""

    def __init__(
        self,
        cfg: EdgeConfig,
        *,
        components: list[Component] | None = None,
        link_options: LinkOptions | None = None,
        clock: Clock = SYSTEM_CLOCK,
        restart_backoff: Backoff | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """``notifier``: systemd's notify socket (default from $NOTIFY_SOCKET; inert without)."""
        self.cfg = cfg
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.clock = clock
        self._components = components
        self._link_options = link_options
        self._restart_backoff = restart_backoff
        self._lock: SyncLock | None = None
        self._store: Store | None = None
        self.ctx: SyncContext | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Take the lock and open the store. Raises AlreadyRunningError, StoreError,
        RuntimeStateError."""
        cfg = self.cfg
        check_upstream_config(cfg)
        try:
            cfg.run_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._lock = SyncLock(cfg.run_dir / LOCK_NAME).acquire()
        except OSError as exc:
            raise RuntimeStateError(
                f"run dir {cfg.run_dir}: {exc.strerror}; make it writable or choose another "
                "--run-dir"
            ) from exc
        try:
            self._store = Store.open(
                cfg.data_dir / "state",
                map_size=cfg.map_size,
                max_map_size=cfg.max_map_size,
                clock=self.clock,
            )
        except OSError as exc:
            self.close()
            raise RuntimeStateError(
                f"data dir {cfg.data_dir}: {exc.strerror}; make it writable or choose another "
                "--data-dir"
            ) from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the store and release the lock; idempotent."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)

    async def run(self) -> None:
        """Run the link and every component until stopped. Call :meth:`open` first."""
        if self._store is None:
            raise RuntimeStateError("SyncService.open() first")
        from ._components import default_components

        cfg = self.cfg
        self._loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        status = SyncStatus(
            device_id=cfg.device_id,
            pid=os.getpid(),
            upstream_url=cfg.upstream_url,
            started_wall_ms=self.clock.wall_ms(),
        )
        link = Link(cfg, self._link_options, on_change=lambda: _link_status(status, link))
        outbox = Outbox(
            self._store,
            max_bytes=cfg.outbox_max_bytes,
            max_age_s=cfg.outbox_max_age_s,
            policy=cfg.outbox_policy,
        )
        ctx = SyncContext(cfg, link, self._store, outbox, status, self.clock, stopping)
        self.ctx = ctx
        _link_status(status, link)
        components = self._components if self._components is not None else default_components(cfg)
        tasks = [asyncio.create_task(link.run(stopping), name="edge-sync link")]
        tasks += [
            asyncio.create_task(self._supervise(c, ctx), name=f"edge-sync {c.name}")
            for c in components
        ]
        tasks.append(asyncio.create_task(self._health(ctx), name="edge-sync health"))
        log.info(
            "edge-sync running: device %s, upstream %s, components %s",
            cfg.device_id,
            cfg.upstream_url,
            ", ".join(c.name for c in components),
        )
        try:
            await stopping.wait()
        finally:
            stopping.set()
            done, pending = await asyncio.wait(tasks, timeout=10.0)
            for t in pending:
                log.warning("%s did not stop within 10 s: cancelling it", t.get_name())
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            self._loop = None

    async def _health(self, ctx: SyncContext) -> None:
        """READY once the store is open and every task is started, then WATCHDOG and STATUS
        from a task on the event loop itself: a blocked event loop stops the pings."""
        notifier = self.notifier
        if not notifier.active:
            return
        notifier.ready(_status_line(ctx.status))
        period = notifier.watchdog_ns / 4e9 if notifier.watchdog_ns else 5.0
        last_status = 0.0
        try:
            while not await ctx.sleep(min(period, 5.0)):
                now = self.clock.monotonic_ns()
                notifier.watchdog(now)
                if now / 1e9 - last_status >= 5.0:
                    last_status = now / 1e9
                    notifier.status(_status_line(ctx.status))
        finally:
            notifier.stopping()
            notifier.close()

    async def _supervise(self, component: Component, ctx: SyncContext) -> None:
        backoff = self._restart_backoff or Backoff(0.5, 30.0)
        while not ctx.stopping.is_set():
            try:
                await component.run(ctx)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("edge-sync component %s failed; restarting it", component.name)
                ctx.status.update(**{f"{component.name}_restarts": backoff.attempt + 1})
            else:
                if ctx.stopping.is_set():
                    return
                log.warning("edge-sync component %s returned early; restarting it", component.name)
            await ctx.sleep(backoff.next())


def _status_line(status: SyncStatus) -> str:
    """One line for systemd's STATUS: the link and the outbox publisher's progress."""
    doc = status.snapshot()
    line = f"link {doc.get('link_state', '?')}, {doc.get('link_connects', 0)} connects"
    if doc.get("link_error"):
        line += f", last error: {doc['link_error']}"
    return line


def _link_status(status: SyncStatus, link: Link) -> None:
    status.update(
        link_state=link.state.value,
        link_error=link.last_error,
        link_connects=link.connects,
        link_disconnects=link.disconnects,
        link_retry_in_s=round(link.retry_in_s, 3),
        link_max_retry_in_s=round(link.max_retry_in_s, 3),
    )


def serve(cfg: EdgeConfig, **kw: Any) -> int:
    """Run edge-sync in the foreground with signal handling; returns the exit code
    (0 clean stop, 1 cannot start, 3 already running)."""
    service = SyncService(cfg, **kw)
    try:
        service.open()
    except AlreadyRunningError as exc:
        print(f"edge-sync: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"edge-sync: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - any start failure is reported, not a traceback
        text = "; ".join(str(exc).splitlines())
        print(f"edge-sync: cannot start: {text}", file=sys.stderr)
        return 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, service, sig)
        await service.run()

    try:
        asyncio.run(main())
    finally:
        service.close()
    log.info("edge-sync stopped cleanly")
    return 0


def _on_signal(service: SyncService, sig: signal.Signals) -> None:
    log.info("%s: stopping", sig.name)
    service.request_stop()
