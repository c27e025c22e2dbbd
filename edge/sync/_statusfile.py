"""``<run_dir>/sync-status.json``: edge-sync's live state for ``edgectl sync status``.

Written atomically (a temporary file renamed over it, mode 0640) every second and whenever the
state changes; the last write on a clean stop says ``"running": false``. The outbox's counters
are read from LMDB at each write and kept in the document under ``"outbox"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ._service import STATUS_FILE, Component, SyncContext

log = logging.getLogger("edge.sync")


def status_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATUS_FILE


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``doc`` as JSON (mode 0640)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The last status edge-sync wrote, or None when there is none (never started here)."""
    try:
        doc: dict[str, Any] = json.loads(status_path(run_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return doc


class StatusFileWriter(Component):
    name = "status_file"

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s

    async def run(self, ctx: SyncContext) -> None:
        path = status_path(ctx.config.run_dir)
        status = ctx.status
        status.update(running=True, data_dir=str(ctx.config.data_dir))
        try:
            while not ctx.stopping.is_set():
                await self._write(ctx, path)
                status.changed.clear()
                changed = asyncio.ensure_future(status.changed.wait())
                stop = asyncio.ensure_future(ctx.stopping.wait())
                try:
                    await asyncio.wait(
                        {changed, stop},
                        timeout=self.interval_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    changed.cancel()
                    stop.cancel()
        finally:
            status.update(running=False)
            with contextlib.suppress(Exception):
                await self._write(ctx, path)

    async def _write(self, ctx: SyncContext, path: Path) -> None:
        try:
            ctx.status.update(outbox=await ctx.in_thread(ctx.outbox.stats))
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop status reports
            ctx.status.update(outbox_error=str(exc))
        doc = ctx.status.snapshot()
        doc["written_wall_ms"] = ctx.clock.wall_ms()
        await ctx.in_thread(write_status, path, doc)
