"""Helpers for the sync tests: read what the stream holds with a JetStream consumer, and run
edge-sync in this process (a thread with its own event loop) or as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats

from edge.config import EdgeConfig
from edge.store import Outbox
from edge.sync import AGG_STREAM, AGG_SUBJECT_PREFIX, Component, LinkOptions, SyncService

T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    """One message of EDGE_AGG as a consumer sees it."""

    stream_seq: int
    subject: str
    edge_seq: int
    msg_id: str
    device: str
    data: bytes


async def _read_stream(url: str, device: str, connect_kw: dict[str, Any]) -> list[Stored]:
    nc = await nats.connect(url, allow_reconnect=False, **connect_kw)
    try:
        js = nc.jetstream(timeout=5.0)
        try:
            info = await js.stream_info(AGG_STREAM)
        except nats.js.errors.NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        sub = await js.pull_subscribe(AGG_SUBJECT_PREFIX + device, stream=AGG_STREAM)
        try:
            pending = (await sub.consumer_info()).num_pending or 0
            out: list[Stored] = []
            while len(out) < pending:
                for m in await sub.fetch(min(256, pending - len(out)), timeout=5.0):
                    h = m.headers or {}
                    out.append(
                        Stored(
                            m.metadata.sequence.stream,
                            m.subject,
                            int(h["Edge-Seq"]),
                            h["Nats-Msg-Id"],
                            h["Edge-Device"],
                            m.data,
                        )
                    )
                    await m.ack()
            return out
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def read_stream(url: str, device: str, **connect_kw: Any) -> list[Stored]:
    """Every message of ``device`` in EDGE_AGG, in stream order (an ephemeral pull consumer).
    ``connect_kw`` go to ``nats.connect`` (credentials)."""
    return asyncio.run(_read_stream(url, device, connect_kw))


def assert_exactly_once_in_order(stored: list[Stored], expected: dict[int, bytes]) -> None:
    """The stream holds each expected record once, in sequence order, and nothing else."""
    seqs = [s.edge_seq for s in stored]
    dups = sorted({q for q in seqs if seqs.count(q) > 1})
    assert not dups, f"duplicates in the stream: {dups[:20]}"
    assert seqs == sorted(seqs), "records out of order in the stream"
    assert seqs == sorted(expected), (
        f"missing {sorted(set(expected) - set(seqs))[:20]}, extra {sorted(set(seqs) - set(expected))[:20]}"
    )
    for s in stored:
        assert s.data == expected[s.edge_seq], f"seq {s.edge_seq}: body differs"
        assert s.msg_id == f"{s.device}-{s.edge_seq}"
        assert s.subject == AGG_SUBJECT_PREFIX + s.device


class SyncRunner:
    """edge-sync's SyncService in a thread of this process. ``outbox`` shares its store (LMDB
    allows one open per process), so the test appends as edged would."""

    def __init__(
        self,
        cfg: EdgeConfig,
        *,
        components: list[Component] | None = None,
        link_options: LinkOptions | None = None,
        **kw: Any,
    ) -> None:
        self.service = SyncService(cfg, components=components, link_options=link_options, **kw)
        self.service.open()
        store = self.service._store
        assert store is not None
        self.outbox = Outbox(
            store,
            max_bytes=cfg.outbox_max_bytes,
            max_age_s=cfg.outbox_max_age_s,
            policy=cfg.outbox_policy,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="edge-sync-under-test")
        self._thread.start()
        assert self._ready.wait(10), "edge-sync did not start"

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            task = asyncio.create_task(self.service.run())
            while self.service.ctx is None and not task.done():
                await asyncio.sleep(0.001)
            self._ready.set()
            await task

        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self._error = exc
        finally:
            self._ready.set()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on edge-sync's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def status(self) -> dict[str, Any]:
        """A consistent copy of the live status (taken on edge-sync's loop)."""
        ctx = self.service.ctx
        assert ctx is not None

        async def snap() -> dict[str, Any]:
            return ctx.status.snapshot()

        return self.call(snap())

    def stop(self) -> None:
        if self._thread.is_alive():
            self.service.request_stop()
            self._thread.join(30)
        self.service.close()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> SyncRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(path: Path, **settings: Any) -> Path:
    """A TOML config file with these settings (for edge-sync as a subprocess)."""
    lines = ["[edge]"]
    for k, v in settings.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int | float):
            lines.append(f"{k} = {v}")
        else:
            lines.append(f"{k} = {json.dumps(str(v))}")
    path.write_text("\n".join(lines) + "\n")
    return path


class SyncProcess:
    """``edge-sync --config FILE`` as a real subprocess."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        exe = Path(sys.executable).parent / "edge-sync"
        self._log_f = open(log, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [str(exe), "--config", str(config)],
            stdout=self._log_f,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("EDGE_")},
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, no goodbye."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log_f.close()

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_f.close()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""
