"""edge-sync's pieces: the backoff, the lock, the status file, the command's exit codes, the
component supervisor, connection options, and NKey authentication against a real server."""

from __future__ import annotations

import asyncio
import os
import random
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nkeys
import pytest
from click.testing import CliRunner

from edge.config import EdgeConfig, load_config
from edge.errors import AlreadyRunningError
from edge.sync import Backoff, Component, LinkOptions, SyncContext, read_status
from edge.sync._link import connect_options
from edge.sync._main import main as edge_sync_main
from edge.sync._service import LOCK_NAME, SyncLock, SyncStatus
from edge.sync._statusfile import StatusFileWriter, write_status

from ..support import wait_for
from .conftest import NatsServer
from .syncsupport import SyncRunner, assert_exactly_once_in_order, read_stream


@pytest.fixture
def cfg_of(tmp_path: Path, run_dir: Path) -> Callable[..., EdgeConfig]:
    def make(**over: Any) -> EdgeConfig:
        flags: dict[str, Any] = {
            "run_dir": run_dir,
            "data_dir": tmp_path / "data",
            "device_id": "b1",
            "metrics_addr": "",
            "upstream_url": "nats://127.0.0.1:1",  # nothing listens on port 1
            "upstream_ping_interval_s": 0.3,
            "upstream_backoff_max_s": 0.5,
        }
        flags.update(over)
        return load_config(flags, env={})

    return make


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_stays_bounded() -> None:
    b = Backoff(0.1, 2.0, rng=random.Random(7))
    delays = [b.next() for _ in range(200)]
    for n, d in enumerate(delays):
        cap = min(2.0, 0.1 * 2**n)
        assert cap / 2 <= d <= cap, (n, d)
    assert max(delays) <= 2.0 and len(set(delays)) > 100, "jittered, never above the bound"
    b.reset()
    assert b.next() <= 0.1


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
    with pytest.raises(ValueError):
        Backoff(0.1, 1, factor=0.5)


# -- lock, status file, command --------------------------------------------------------------


def test_one_edge_sync_per_run_dir(run_dir: Path) -> None:
    first = SyncLock(run_dir / LOCK_NAME).acquire()
    try:
        with pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}"):
            SyncLock(run_dir / LOCK_NAME).acquire()
    finally:
        first.release()
    SyncLock(run_dir / LOCK_NAME).acquire().release()


def test_status_file_is_replaced_atomically_with_mode_0640(run_dir: Path) -> None:
    assert read_status(run_dir) is None
    path = run_dir / "sync-status.json"
    write_status(path, {"a": 1})
    write_status(path, {"a": 2, "link_state": "up"})
    assert read_status(run_dir) == {"a": 2, "link_state": "up"}
    assert stat.S_IMODE(path.stat().st_mode) & 0o777 == 0o640 & ~_umask()
    assert [p.name for p in run_dir.iterdir()] == ["sync-status.json"], "no temporary left"


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_edge_sync_exit_codes(run_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[edge]\noutbox_policy = 'drop-random'\n")
    res = CliRunner().invoke(edge_sync_main, ["--config", str(bad)])
    assert res.exit_code == 2 and "outbox_policy" in res.output
    dirs = ["--run-dir", str(run_dir), "--data-dir", str(tmp_path / "data")]
    res = CliRunner().invoke(edge_sync_main, dirs, env={"EDGE_UPSTREAM_URL": ""})
    assert res.exit_code == 2 and "no upstream configured: set upstream_url" in res.output
    lock = SyncLock(run_dir / LOCK_NAME).acquire()
    try:
        res = CliRunner().invoke(edge_sync_main, [*dirs, "--upstream-url", "nats://127.0.0.1:1"])
    finally:
        lock.release()
    assert res.exit_code == 3 and "already running" in res.output


def test_status_file_follows_the_service_and_says_when_it_stopped(
    cfg_of: Callable[..., EdgeConfig],
) -> None:
    cfg = cfg_of()
    with SyncRunner(cfg, components=[StatusFileWriter(interval_s=0.05)]):

        def retried() -> dict[str, Any]:
            doc = read_status(cfg.run_dir) or {}
            return doc if doc.get("link_max_retry_in_s", 0) > 0 else {}

        doc = wait_for(retried, timeout=10, what="the link's retries in the status file")
        assert doc["running"] is True and doc["device_id"] == "b1"
        assert doc["link_state"] in ("down", "connecting") and doc["link_connects"] == 0
        assert "nats://127.0.0.1:1" in (doc["link_error"] or "")
        assert doc["outbox"]["depth"] == 0
    assert read_status(cfg.run_dir)["running"] is False  # type: ignore[index]


# -- supervisor ------------------------------------------------------------------------------


class _Flaky(Component):
    name = "flaky"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, ctx: SyncContext) -> None:
        self.runs += 1
        if self.runs < 3:
            raise RuntimeError(f"failure {self.runs}")
        await ctx.stopping.wait()


def test_a_failing_component_is_restarted_with_backoff(
    cfg_of: Callable[..., EdgeConfig],
) -> None:
    flaky = _Flaky()
    with SyncRunner(cfg_of(), components=[flaky], restart_backoff=Backoff(0.01, 0.05)) as sync:
        wait_for(lambda: flaky.runs >= 3, timeout=10, what="two restarts")
        assert sync.status()["flaky_restarts"] == 2


def test_sync_status_counts_changes_only() -> None:
    async def go() -> None:
        s = SyncStatus(a=1)
        s.update(a=1)
        assert s.version == 0 and not s.changed.is_set()
        s.update(a=2, b=None)
        assert s.version == 1 and s.changed.is_set()
        assert s.snapshot() == {"a": 2, "b": None}

    asyncio.run(go())


# -- connection options and authentication --------------------------------------------------


def test_connect_options_carry_servers_creds_and_nkey(cfg_of: Callable[..., EdgeConfig]) -> None:
    cfg = cfg_of(
        upstream_url="nats://a:4222, nats://b:4222",
        upstream_creds="/etc/edge/board.creds",
        upstream_nkey="/etc/edge/board.nk",
    )
    kw = connect_options(cfg, LinkOptions())
    assert kw["servers"] == ["nats://a:4222", "nats://b:4222"]
    assert kw["user_credentials"] == "/etc/edge/board.creds"
    assert kw["nkeys_seed"] == "/etc/edge/board.nk"
    assert kw["allow_reconnect"] is False and "tls" not in kw


@pytest.mark.integration
def test_nkey_authentication_against_a_real_server(
    nats_server_factory: Callable[..., NatsServer],
    cfg_of: Callable[..., EdgeConfig],
    tmp_path: Path,
) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "board.nk"
    seed_file.write_bytes(seed)
    seed_file.chmod(0o600)
    server = nats_server_factory(config=f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    server.start()
    from edge.sync._publisher import Publisher

    # without the seed: refused, retried, nothing leaves the outbox
    cfg = cfg_of(upstream_url=server.url)
    with SyncRunner(cfg, components=[Publisher()]) as sync:
        sync.outbox.append(b"one", time.time_ns())
        wait_for(
            lambda: "uthorization" in (sync.status().get("link_error") or ""),
            timeout=10,
            what="an authorization error",
        )
        assert sync.outbox.stats()["depth"] == 1
    # with it: through
    with SyncRunner(cfg_of(upstream_url=server.url, upstream_nkey=seed_file)) as sync:
        sync.outbox.append(b"two", time.time_ns())
        wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=10, what="the records")
    stored = read_stream(server.url, "b1", nkeys_seed=str(seed_file))
    assert_exactly_once_in_order(stored, {1: b"one", 2: b"two"})


def test_sync_status_reads_the_outbox_of_the_configs_data_dir(
    run_dir: Path, tmp_path: Path
) -> None:
    """Before edge-sync ever ran (no status file) `edgectl --config C sync status` still shows
    the outbox of C's data_dir."""
    import json

    from click.testing import CliRunner

    from edge.cli._main import cli
    from edge.store import Outbox, Store

    data = tmp_path / "board-data"
    data.mkdir()
    with Store.open(data / "state") as store:
        Outbox(store).append(b"x" * 10, 1)
        Outbox(store).append(b"y" * 10, 2)
    conf = tmp_path / "edge.toml"
    conf.write_text(f'data_dir = "{data}"\n')
    r = CliRunner().invoke(
        cli, ["--run-dir", str(run_dir), "--config", str(conf), "sync", "status", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["state"] == "never started"
    assert doc["outbox"]["depth"] == 2 and doc["outbox"]["bytes"] == 20
