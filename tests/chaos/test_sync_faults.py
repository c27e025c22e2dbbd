"""Sync faults, as a campaign: edge-sync (a real process) publishes a growing outbox to a real
nats-server through tests/sync's fault proxy, while each round appends records and applies one
fault at random: connections reset mid-stream, a blackholed link, new connections refused, a
slow link, edge-sync SIGKILLed and restarted. Then the link heals; the stream must hold every
record exactly once, in order (tests/sync/syncsupport.py reads and checks it)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from edge.store import Outbox, Store
from edge.sync import LocalNatsServer, NatsServerError

from ..support import wait_for
from ..sync.faultproxy import FaultProxy
from ..sync.syncsupport import SyncProcess, assert_exactly_once_in_order, read_stream, write_config
from . import tools

pytestmark = pytest.mark.integration

DEVICE = "chaos-board"
FAULTS = ("reset", "blackhole", "drop_new", "delay", "sigkill")


def test_sync_faults(mode: str, dirs: tuple[Path, Path], tmp_path: Path) -> None:
    rounds = tools.scaled(len(FAULTS), 60, mode)
    run, data = dirs
    try:
        server = LocalNatsServer(tmp_path / "nats").start()
    except NatsServerError as exc:
        pytest.skip(str(exc))
    rnd = random.Random(5)
    expected: dict[int, bytes] = {}
    applied = dict.fromkeys(FAULTS, 0)
    sync: SyncProcess | None = None
    try:
        with FaultProxy(server.port) as proxy, Store.open(data / "state") as store:
            conf = write_config(
                tmp_path / "sync.toml", run_dir=run, data_dir=data, device_id=DEVICE,
                metrics_addr="", upstream_url=proxy.url, upstream_ping_interval_s=0.3,
                upstream_ack_timeout_s=1.0, upstream_backoff_max_s=1.0,
            )
            outbox = Outbox(store)
            sync = SyncProcess(conf, tmp_path / "sync.log")
            t0 = time.monotonic()
            for i in range(rounds):
                for _ in range(20):
                    body = f"agg-{len(expected):06d}|".encode() + b"." * rnd.randrange(8, 400)
                    expected[outbox.append(body, time.time_ns())] = body
                fault = FAULTS[i] if i < len(FAULTS) else rnd.choice(FAULTS)
                applied[fault] += 1
                if fault == "reset":
                    proxy.reset_all()
                elif fault == "blackhole":
                    proxy.blackhole()
                elif fault == "drop_new":
                    proxy.reset_all()
                    proxy.drop_new()
                elif fault == "delay":
                    proxy.delay(0.2)
                else:
                    sync.kill()
                    sync = SyncProcess(conf, tmp_path / "sync.log")
                time.sleep(rnd.uniform(0.3, 1.2))  # the fault lasts this long
                proxy.heal()
            wait_for(lambda: outbox.stats()["depth"] == 0, 120, "the outbox to drain")
            drained_s = time.monotonic() - t0
            code = sync.terminate()
            sync = None
            assert code == 0
        stored = read_stream(server.url, DEVICE)
    finally:
        if sync is not None:
            sync.kill()
        server.stop()
    tools.report("sync_faults", mode, rounds=rounds, faults=applied, records=len(expected),
                 stored=len(stored), duplicates=len(stored) - len({s.edge_seq for s in stored}),
                 drained_in_s=round(drained_s, 1))
    assert_exactly_once_in_order(stored, expected)
