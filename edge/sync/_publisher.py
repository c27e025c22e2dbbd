"""Outbox -> stream EDGE_AGG, in sequence order, deleting a record only after its PubAck.

::

    outbox (LMDB) --peek(after last sent, <= window)--> publish edge.agg.<device>
         ^                                                 headers Nats-Msg-Id: <device>-<seq>
         |                                                         Edge-Seq: <seq>
         |                                                         Edge-Device: <device>
         |                                                 reply to <inbox>.<seq>
         +---- delete_upto(n) <-- every seq <= n acked <-- PubAck (duplicate: true counts)

Records go out pipelined: up to ``max_inflight`` records (and ``max_inflight_bytes``) are
published before the oldest ack is awaited, so a link with a long round trip still moves a
backlog; memory holds at most that window, never the whole outbox. Publishes are awaited one
after the other on one connection, so they reach the server in sequence order.

On a missing ack (timeout), an error ack or a lost connection the window is abandoned and
publishing starts again from the oldest record not deleted, after a bounded, jittered backoff.
Records the server had stored already come back as duplicates of their ``Nats-Msg-Id``
(within the stream's duplicate window) and are acknowledged as such, so nothing is stored twice.
On every (re)start the publisher also asks the stream for this device's last message and
deletes the outbox records up to its ``Edge-Seq``: records published but not deleted before a
crash are not published again, however long the outage. When that read is not permitted the
duplicate window is the only guard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from ._link import AGG_STREAM, AGG_SUBJECT_PREFIX, Backoff, Session
from ._service import Component, SyncContext

log = logging.getLogger("edge.sync")


class _RetryError(Exception):
    """Abandon the window and publish again from the oldest record not deleted."""


class Publisher(Component):
    """Publishes the outbox upstream. Status fields: ``published`` (records acked),
    ``duplicates`` (of them, acked as duplicates), ``resends`` (records published again after
    a retry), ``last_acked_seq``, ``last_publish_wall_ms`` (wall ms of the last ack),
    ``inflight``, ``publish_error``, ``publish_retry_in_s`` / ``publish_max_retry_in_s``."""

    name = "publisher"

    def __init__(
        self,
        *,
        max_inflight: int = 64,
        max_inflight_bytes: int = 1 << 20,
        ack_timeout_s: float | None = None,
        poll_s: float = 0.2,
        backoff: Backoff | None = None,
    ) -> None:
        """``ack_timeout_s`` and the backoff's bound default to ``upstream_ack_timeout_s`` and
        ``upstream_backoff_max_s`` of the running service's config."""
        if max_inflight < 1 or max_inflight_bytes < 1:
            raise ValueError("max_inflight and max_inflight_bytes must be >= 1")
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.ack_timeout_s = ack_timeout_s or 5.0
        self._ack_timeout_given = ack_timeout_s is not None
        self.poll_s = poll_s
        self.backoff = backoff
        self.published = 0
        self.duplicates = 0
        self.resends = 0
        self.last_acked_seq = 0
        self.max_retry_in_s = 0.0
        self._highest_sent = 0

    async def run(self, ctx: SyncContext) -> None:
        if not self._ack_timeout_given:
            self.ack_timeout_s = ctx.config.upstream_ack_timeout_s
        if self.backoff is None:
            cap = ctx.config.upstream_backoff_max_s
            self.backoff = Backoff(min(0.2, cap), cap)
        backoff = self.backoff
        while not ctx.stopping.is_set():
            session = await _until(ctx, ctx.link.session())
            if session is None:
                return
            try:
                await self._pump(ctx, session)
                continue
            except _RetryError as exc:
                reason = str(exc)
            except Exception as exc:
                if session.closed.is_set() or not session.nc.is_connected:
                    continue  # the link is gone: wait for the next session
                reason = f"publishing failed: {exc!r}"
            delay = backoff.next()
            self.max_retry_in_s = max(self.max_retry_in_s, delay)
            log.info("publisher: %s; again in %.2f s", reason, delay)
            ctx.status.update(
                publish_error=reason,
                publish_retry_in_s=round(delay, 3),
                publish_max_retry_in_s=round(self.max_retry_in_s, 3),
                inflight=0,
            )
            await ctx.sleep(delay)
            ctx.status.update(publish_retry_in_s=0.0)

    # -- one session -------------------------------------------------------------------------

    async def _pump(self, ctx: SyncContext, session: Session) -> None:
        device = ctx.config.device_id
        subject = AGG_SUBJECT_PREFIX + device
        await self._resync(ctx, session, subject)
        nc = session.nc
        loop = asyncio.get_running_loop()
        inbox = nc.new_inbox()
        acks: dict[int, asyncio.Future[Msg]] = {}

        async def on_ack(msg: Msg) -> None:
            try:
                seq = int(msg.subject.rsplit(".", 1)[1])
            except ValueError:
                return
            fut = acks.get(seq)
            if fut is not None and not fut.done():
                fut.set_result(msg)

        sub = await nc.subscribe(inbox + ".*", cb=on_ack)
        # (seq, body bytes, ack future, monotonic send time)
        window: collections.deque[tuple[int, int, asyncio.Future[Msg], float]] = collections.deque()
        window_bytes = 0
        last_sent = 0
        try:
            while not ctx.stopping.is_set() and not session.closed.is_set():
                room = self.max_inflight - len(window)
                byte_room = self.max_inflight_bytes - window_bytes
                if room > 0 and byte_room > 0:
                    recs = await ctx.in_thread(ctx.outbox.peek, last_sent, room, byte_room)
                    if window and recs and len(recs[0][1]) > byte_room:
                        recs = []  # a big record waits for the window to drain
                    for seq, body in recs:
                        fut: asyncio.Future[Msg] = loop.create_future()
                        acks[seq] = fut
                        headers = {
                            "Nats-Msg-Id": f"{device}-{seq}",
                            "Edge-Seq": str(seq),
                            "Edge-Device": device,
                        }
                        await nc.publish(subject, body, reply=f"{inbox}.{seq}", headers=headers)
                        if seq <= self._highest_sent:
                            self.resends += 1
                        self._highest_sent = max(self._highest_sent, seq)
                        window.append((seq, len(body), fut, time.monotonic()))
                        window_bytes += len(body)
                        last_sent = seq
                    if recs:
                        ctx.status.update(inflight=len(window))
                if not window:
                    await _wait_any(ctx, session, None, self.poll_s)
                    continue
                seq0, _, fut0, sent0 = window[0]
                left = self.ack_timeout_s - (time.monotonic() - sent0)
                if not fut0.done() and left > 0:
                    await _wait_any(ctx, session, fut0, left)
                if not fut0.done():
                    if session.closed.is_set() or ctx.stopping.is_set():
                        return
                    raise _RetryError(f"no ack for seq {seq0} within {self.ack_timeout_s:g} s")
                acked = count = dups = 0
                while window and window[0][2].done():
                    seq, n, fut, _ = window[0]
                    dups += _check_ack(fut.result(), seq)  # raises _RetryError: stays in the window
                    window.popleft()
                    acks.pop(seq, None)
                    window_bytes -= n
                    acked = seq
                    count += 1
                if acked:
                    await ctx.in_thread(ctx.outbox.delete_upto, acked)
                    self._acked(ctx, acked, count, dups, len(window))
        finally:
            for _, _, fut, _ in window:
                fut.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _acked(self, ctx: SyncContext, upto: int, count: int, dups: int, inflight: int) -> None:
        self.published += count
        self.duplicates += dups
        self.last_acked_seq = upto
        if self.backoff is not None:
            self.backoff.reset()
        ctx.status.update(
            published=self.published,
            duplicates=self.duplicates,
            resends=self.resends,
            last_acked_seq=upto,
            last_publish_wall_ms=ctx.clock.wall_ms(),
            inflight=inflight,
            publish_error=None,
        )

    async def _resync(self, ctx: SyncContext, session: Session, subject: str) -> None:
        """Delete what the stream already holds of ours (the last Edge-Seq on our subject)."""
        try:
            msg = await session.js.get_last_msg(AGG_STREAM, subject)
        except NotFoundError:
            return  # nothing of ours stored yet (or no stream: publishing will say so)
        except Exception as exc:  # noqa: BLE001 - not permitted / not supported: rely on dedup
            if session.closed.is_set():
                raise _RetryError("link lost while reading the stream") from exc
            log.info("publisher: cannot read the last stored record (%s); dedup window only", exc)
            return
        raw = (msg.headers or {}).get("Edge-Seq")
        try:
            stored = int(raw) if raw is not None else 0
        except ValueError:
            return
        if stored <= 0:
            return
        assigned = (await ctx.in_thread(ctx.outbox.stats))["next_seq"] - 1
        if stored > assigned:
            # The stream holds a sequence this outbox never assigned: the board's store was
            # wiped (re-flashed) and its sequence restarted. Trusting it would delete
            # unpublished records; the duplicate window still guards a short crash.
            log.warning(
                "publisher: the stream's last Edge-Seq for %s is %d but this outbox assigned "
                "only up to %d (a wiped store?); not deleting by it",
                subject,
                stored,
                assigned,
            )
            ctx.status.update(stream_last_seq=stored, stream_ahead=True)
            return
        if stored > 0:
            n = await ctx.in_thread(ctx.outbox.delete_upto, stored)
            if n:
                log.info("publisher: %d record(s) up to seq %d were stored already", n, stored)
            ctx.status.update(stream_last_seq=stored)


def _check_ack(msg: Msg, seq: int) -> bool:
    """True for a duplicate ack; raises _RetryError for an error or a no-responders status."""
    status = (msg.headers or {}).get("Status")
    if status and not msg.data:
        if status == "503":
            raise _RetryError(f"no stream for {msg.subject}: is {AGG_STREAM} missing? (503)")
        raise _RetryError(f"seq {seq}: server status {status}")
    try:
        doc: dict[str, Any] = json.loads(msg.data)
    except ValueError as exc:
        raise _RetryError(f"seq {seq}: unreadable ack {msg.data[:80]!r}") from exc
    if "error" in doc:
        err = doc["error"]
        raise _RetryError(f"seq {seq} refused: {err.get('description', err)}")
    return bool(doc.get("duplicate", False))


async def _wait_any(
    ctx: SyncContext, session: Session, fut: asyncio.Future[Any] | None, timeout: float
) -> None:
    """Wait until ``fut`` completes, the session closes or edge-sync stops, or ``timeout``."""
    waits: set[asyncio.Future[Any]] = {
        asyncio.ensure_future(ctx.stopping.wait()),
        asyncio.ensure_future(session.closed.wait()),
    }
    try:
        await asyncio.wait(
            waits | ({fut} if fut is not None else set()),
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for w in waits:
            w.cancel()


async def _until(ctx: SyncContext, aw: Any) -> Any:
    """Await ``aw`` unless edge-sync stops first (then None)."""
    task = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(ctx.stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
