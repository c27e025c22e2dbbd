"""edge-sync under systemd: READY once running, WATCHDOG from its event loop (a blocked loop
stops them), STOPPING on the way out; a real AF_UNIX datagram socket as NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edge._sdnotify import Notifier
from edge.config import load_config

from ..support import FakeSystemd
from .syncsupport import SyncRunner


def test_edge_sync_notifies_and_its_watchdog_follows_the_event_loop(
    run_dir: Path, tmp_path: Path
) -> None:
    cfg = load_config(
        {"run_dir": run_dir, "data_dir": tmp_path / "data", "device_id": "b1",
         "metrics_addr": "", "upstream_url": "nats://127.0.0.1:1"},
        env={},
    )
    systemd = FakeSystemd(str(run_dir / "notify"))
    runner = SyncRunner(cfg, components=[], notifier=Notifier(systemd.address, watchdog_usec=200_000))
    try:
        assert systemd.wait_for("READY")["STATUS"].startswith("link ")
        systemd.wait_for("WATCHDOG")

        async def block() -> None:
            time.sleep(0.6)  # deliberately blocks edge-sync's event loop

        fut = asyncio.run_coroutine_threadsafe(block(), runner._loop)  # type: ignore[arg-type]
        systemd.count("WATCHDOG", 0.1)  # one already in flight
        assert systemd.count("WATCHDOG", 0.4) == 0
        fut.result(5)
        systemd.wait_for("WATCHDOG")
    finally:
        runner.stop()
        try:
            assert systemd.wait_for("STOPPING", timeout=2)["STOPPING"] == "1"
        finally:
            systemd.close()
