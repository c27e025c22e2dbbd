"""The board keeps controlling while the upstream is down: edged (real, in this process) serves
an agent end to end while edge-sync (a real subprocess beside it) cannot reach nats-server;
when the server comes back, every aggregate edged wrote meanwhile arrives exactly once, in
order. Also `edgectl sync status` against the running pair."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig
from edge.runtime import Edged
from edge.store import Outbox, Store
from edge.wire import decode_aggregate

from ..support import wait_for
from .conftest import NatsServer
from .syncsupport import SyncProcess, read_stream, write_config

pytestmark = pytest.mark.integration

DEVICE = "board-7"


def _status(run_dir: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((run_dir / "sync-status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return doc


def _edgectl_sync_status(run_dir: Path) -> dict[str, Any]:
    """`edgectl sync status --json` as an operator runs it: its own process (LMDB allows one
    open of an environment per process, and edged holds this one here)."""
    exe = Path(sys.executable).parent / "edgectl"
    res = subprocess.run(
        [str(exe), "--run-dir", str(run_dir), "sync", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def test_control_keeps_running_while_the_upstream_is_down_then_aggregates_catch_up(
    make_cfg: Callable[..., EdgeConfig],
    agent_factory: Any,
    nats_server_factory: Callable[[], NatsServer],
    tmp_path: Path,
) -> None:
    server = nats_server_factory()  # down at boot
    cfg = make_cfg(agg_window_s=0.2, device_id=DEVICE, upstream_url=server.url)
    conf = write_config(
        tmp_path / "edge.toml",
        run_dir=cfg.run_dir,
        data_dir=cfg.data_dir,
        device_id=DEVICE,
        upstream_url=server.url,
        upstream_ping_interval_s=0.3,
        upstream_ack_timeout_s=1.0,
        upstream_backoff_max_s=1.0,
        metrics_addr="",
    )
    d = Edged(cfg).start()
    sync = SyncProcess(conf, tmp_path / "sync.log")
    try:
        _run(d, cfg, sync, server, agent_factory)
    finally:
        sync.kill()


def _run(
    d: Edged, cfg: EdgeConfig, sync: SyncProcess, server: NatsServer, agent_factory: Any
) -> None:
    try:
        got: list[Any] = []
        with agent_factory("ctl-1", ["cpu_usage"], handler=got.append) as agent:

            def control_round() -> None:
                n = len(got)
                agent.report("cpu_usage", 0.1)
                agent.report("cpu_usage", 0.99)  # cpu_hot fires
                wait_for(lambda: len(got) > n, what="an instruction")

            wait_for(
                lambda: _status(cfg.run_dir).get("link_max_retry_in_s", 0) > 0,
                timeout=20,
                what="edge-sync retrying against the down server",
            )
            outbox = d.outbox
            assert outbox is not None
            for _ in range(5):  # control flows while the upstream is down
                control_round()
            wait_for(lambda: outbox.stats()["depth"] >= 5, timeout=20, what="aggregates held")
            st = _status(cfg.run_dir)
            assert st["link_state"] != "up" and st.get("published", 0) == 0
            shown = _edgectl_sync_status(cfg.run_dir)
            assert shown["state"] == "running" and shown["outbox"]["depth"] >= 5
            held = outbox.stats()["last_seq"]

            server.start()
            for _ in range(3):  # and keeps flowing while edge-sync catches up
                control_round()
            wait_for(
                lambda: _status(cfg.run_dir).get("last_acked_seq", 0) >= held,
                timeout=30,
                what="the held aggregates published",
            )
        assert len(got) >= 8
    finally:
        d.close()  # writes the last, partial window
    try:
        with Store.open(cfg.data_dir / "state") as store:
            ob = Outbox(store)
            wait_for(lambda: ob.stats()["depth"] == 0, timeout=30, what="the last aggregates")
            last = ob.stats()["next_seq"] - 1
            assert ob.stats()["dropped"] == 0
    finally:
        code = sync.terminate()
    assert code == 0, sync.output()
    stored = read_stream(server.url, DEVICE)
    assert [s.edge_seq for s in stored] == list(range(1, last + 1)), "each once, in order"
    docs = [decode_aggregate(s.data) for s in stored]
    assert all(doc["device_id"] == DEVICE for doc in docs)
    assert sum(r["instructions"] for doc in docs for r in doc["rules"]) >= 8
    starts = [doc["window_start_unix_ns"] for doc in docs]
    assert starts == sorted(starts) and max(starts) <= time.time_ns(), "windows in time order"
