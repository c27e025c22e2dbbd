"""Device status up: this board's JSON document in KV bucket ``EDGE_DEVICES``, key ``<device_id>``.

Put every ``sync_status_interval_s`` and soon after a change that matters (link state, edged
up/down or its active table, a rule table received, refused, applied or pending), at most one
put per ``MIN_GAP_S``. The document (schema 1; README "Upstream sync: device status")::

    {"schema": 1, "device_id", "groups": [..], "last_seen_unix_ms", "last_seen" (ISO 8601 UTC),
     "link":   {"state", "connects", "disconnects", "error"},
     "edged":  {"running", "rules_version", "rules_hash", "rules", "uptime_s", "error"},
     "outbox": {"depth", "bytes", "first_seq", "last_seq", "oldest_age_s", "dropped",
                "dropped_bytes", "next_seq"},
     "last_publish": {"wall_ms", "acked_seq", "published", "duplicates", "error"},
     "rules":  {"keys", "last_received", "last_refused", "last_applied", "pending"},
     "edge_sync": {"pid", "version", "started_wall_ms"}}

``last_refused`` is ``{"key", "revision", "version", "reason", "wall_ms", "by"}``; the lag a
fleet view shows is now minus ``last_seen_unix_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from .. import __version__
from ..errors import NotRunningError
from ._link import DEVICES_BUCKET, LinkState
from ._rules_down import CtlEdged
from ._service import Component, SyncContext

log = logging.getLogger("edge.sync.status")

SCHEMA = 1
MIN_GAP_S = 0.25
"""The least time between two puts, so a flapping link cannot flood the bucket."""


def _iso(unix_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix_ms / 1000)) + (
        f".{unix_ms % 1000:03d}Z"
    )


def status_document(
    ctx: SyncContext, edged: dict[str, Any], outbox: dict[str, Any] | None
) -> dict[str, Any]:
    """The document from the shared state, edged's Status reply (or ``{"running": False}``)
    and the outbox's stats."""
    cfg, st, now = ctx.config, ctx.status, ctx.clock.wall_ms()
    return {
        "schema": SCHEMA,
        "device_id": cfg.device_id,
        "groups": [g.strip() for g in cfg.device_groups.split(",") if g.strip()],
        "last_seen_unix_ms": now,
        "last_seen": _iso(now),
        "link": {
            "state": st.get("link_state", LinkState.DOWN.value),
            "connects": st.get("link_connects", 0),
            "disconnects": st.get("link_disconnects", 0),
            "error": st.get("link_error"),
        },
        "edged": edged,
        "outbox": outbox,
        "last_publish": {
            "wall_ms": st.get("last_publish_wall_ms"),
            "acked_seq": st.get("last_acked_seq"),
            "published": st.get("published", 0),
            "duplicates": st.get("duplicates", 0),
            "error": st.get("publish_error"),
        },
        "rules": st.get("rules"),
        "edge_sync": {
            "pid": st.get("pid"),
            "version": __version__,
            "started_wall_ms": st.get("started_wall_ms"),
        },
    }


def _edged_summary(port: CtlEdged) -> dict[str, Any]:
    try:
        s = port.status()
    except NotRunningError as exc:
        return {"running": False, "error": str(exc)}
    rules = s.get("rules") or {}
    return {
        "running": True,
        "rules_version": rules.get("version"),
        "rules_hash": rules.get("hash"),
        "rules": rules.get("rules"),
        "uptime_s": s.get("uptime_s"),
        "error": None,
    }


def _significant(doc: dict[str, Any]) -> Any:
    """The part of a document whose change is worth a put before the interval is up."""
    e = doc["edged"]
    return (
        doc["link"]["state"],
        e.get("running"),
        e.get("rules_version"),
        e.get("rules_hash"),
        json.dumps(doc["rules"], sort_keys=True, default=str),
    )


class DeviceStatus(Component):
    """Puts the status document to ``EDGE_DEVICES`` while the link is up."""

    name = "device_status"

    def __init__(self) -> None:
        self.puts = 0
        self.last_doc: dict[str, Any] | None = None

    async def run(self, ctx: SyncContext) -> None:
        interval = ctx.config.sync_status_interval_s
        port = CtlEdged(ctx.config.run_dir, timeout_s=min(2.0, interval))
        last_put = -1e9
        last_key: Any = None
        try:
            while not ctx.stopping.is_set():
                edged = await ctx.in_thread(_edged_summary, port)
                outbox = await ctx.in_thread(ctx.outbox.stats)
                doc = status_document(ctx, edged, outbox)
                key = _significant(doc)
                now = ctx.clock.monotonic_ns() / 1e9
                due = now - last_put >= interval or key != last_key
                if due and now - last_put >= MIN_GAP_S and await self._put(ctx, doc):
                    last_put, last_key = now, key
                wait = max(MIN_GAP_S, interval - (ctx.clock.monotonic_ns() / 1e9 - last_put))
                await self._wait(ctx, wait)
        finally:
            await ctx.in_thread(port.close)

    async def _wait(self, ctx: SyncContext, seconds: float) -> None:
        """Until ``seconds`` pass, edge-sync stops, or the shared state changes."""
        changed = asyncio.ensure_future(ctx.status.changed.wait())
        stop = asyncio.ensure_future(ctx.stopping.wait())
        try:
            await asyncio.wait({changed, stop}, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            changed.cancel()
            stop.cancel()
        if changed.done() and not changed.cancelled():
            ctx.status.changed.clear()  # as the status file writer does: seen
            # let a burst of updates settle into one document
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), MIN_GAP_S)

    async def _put(self, ctx: SyncContext, doc: dict[str, Any]) -> bool:
        session = ctx.link.current
        if session is None:
            return False
        try:
            kv = await session.js.key_value(DEVICES_BUCKET)
            await kv.put(ctx.config.device_id, json.dumps(doc, sort_keys=True).encode())
        except Exception as exc:  # noqa: BLE001 - retried at the next interval or change
            log.info("status put to %s failed: %s", DEVICES_BUCKET, exc)
            return False
        self.puts += 1
        self.last_doc = doc
        ctx.status.update(status_put_wall_ms=doc["last_seen_unix_ms"])
        return True
