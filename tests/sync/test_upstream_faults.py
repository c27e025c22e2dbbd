"""Aggregates up under faults, each against a real nats-server: the server down at boot and
back, a blackholed link, a flapping link reset mid-publish, edge-sync killed with SIGKILL
mid-publish, and the outbox at its cap. What the stream holds is read back with a JetStream
consumer: every record within the caps exactly once, in order, and nothing deleted before its
ack."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig, load_config
from edge.store import Outbox, Store
from edge.sync import Component, SyncContext

from ..support import wait_for
from .conftest import NatsServer
from .faultproxy import FaultProxy
from .syncsupport import (
    SyncProcess,
    SyncRunner,
    assert_exactly_once_in_order,
    read_stream,
    write_config,
)

pytestmark = pytest.mark.integration

DEVICE = "board-7"
BACKOFF_MAX_S = 1.0


def body(i: int, size: int = 64) -> bytes:
    head = f"agg-{i:06d}|".encode()
    return head + b"." * max(size - len(head), 0)


@pytest.fixture
def sync_cfg(tmp_path: Path, run_dir: Path) -> Callable[..., EdgeConfig]:
    def make(**over: Any) -> EdgeConfig:
        flags: dict[str, Any] = {
            "run_dir": run_dir,
            "data_dir": tmp_path / "data",
            "device_id": DEVICE,
            "metrics_addr": "",
            "upstream_ping_interval_s": 0.3,
            "upstream_ack_timeout_s": 1.0,
            "upstream_backoff_max_s": BACKOFF_MAX_S,
        }
        flags.update(over)
        return load_config(flags, env={})

    return make


def append_many(outbox: Outbox, first: int, n: int, size: int = 64) -> dict[int, bytes]:
    out = {}
    for i in range(first, first + n):
        b = body(i, size)
        seq = outbox.append(b, time.time_ns())
        assert seq > 0
        out[seq] = b
    return out


def test_server_down_at_boot_then_back(
    nats_server_factory: Callable[[], NatsServer], sync_cfg: Callable[..., EdgeConfig]
) -> None:
    server = nats_server_factory()  # port known, server not running
    with SyncRunner(sync_cfg(upstream_url=server.url)) as sync:
        expected = append_many(sync.outbox, 0, 40)
        wait_for(
            lambda: sync.status()["link_max_retry_in_s"] > 0.3,
            timeout=20,
            what="edge-sync retrying with a growing backoff while the server is down",
        )
        expected |= append_many(sync.outbox, 40, 40)  # appended while down
        st = sync.status()
        assert st["link_state"] in ("down", "connecting") and st["link_connects"] == 0
        assert sync.outbox.stats()["depth"] == 80, "nothing leaves the outbox without an ack"
        server.start()
        wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=30, what="the backlog")
        st = sync.status()
        assert st["link_state"] == "up" and st["published"] == 80
        assert st["link_max_retry_in_s"] <= BACKOFF_MAX_S, "backoff bounded"
    assert_exactly_once_in_order(read_stream(server.url, DEVICE), expected)


def test_blackholed_link_deletes_nothing_unacked_and_recovers(
    nats_server: NatsServer, sync_cfg: Callable[..., EdgeConfig]
) -> None:
    with FaultProxy(nats_server.port) as proxy:
        with SyncRunner(sync_cfg(upstream_url=proxy.url)) as sync:
            expected = append_many(sync.outbox, 0, 20)
            wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=20, what="first records")
            proxy.blackhole()
            expected |= append_many(sync.outbox, 20, 30)
            wait_for(
                lambda: sync.status()["link_disconnects"] >= 1,
                timeout=20,
                what="the pings finding the blackhole",
            )
            # nothing was acknowledged through the blackhole, so nothing was deleted
            st = sync.outbox.stats()
            assert (st["depth"], st["first_seq"], st["last_seq"]) == (30, 21, 50)
            assert sync.status()["last_acked_seq"] == 20
            proxy.heal()
            wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=30, what="the backlog")
            st = sync.status()
            assert st["link_max_retry_in_s"] <= BACKOFF_MAX_S
            assert st.get("publish_max_retry_in_s", 0) <= BACKOFF_MAX_S
    assert_exactly_once_in_order(read_stream(nats_server.url, DEVICE), expected)


class _Watch(Component):
    """Samples the publisher's in-flight count on edge-sync's loop (a bound on memory)."""

    name = "watch"

    def __init__(self) -> None:
        self.max_inflight = 0

    async def run(self, ctx: SyncContext) -> None:
        while not await ctx.sleep(0.005):
            self.max_inflight = max(self.max_inflight, ctx.status.get("inflight", 0) or 0)


def test_flapping_link_reset_mid_publish_no_loss_no_duplicates(
    nats_server: NatsServer, sync_cfg: Callable[..., EdgeConfig]
) -> None:
    from edge.sync._publisher import Publisher
    from edge.sync._statusfile import StatusFileWriter

    watch = _Watch()
    publisher = Publisher(max_inflight=16)
    n = 1200
    with FaultProxy(nats_server.port) as proxy:
        proxy.delay(0.02)  # a round trip long enough for resets to land mid-window
        proxy.drop_new()  # the whole backlog first
        cfg = sync_cfg(upstream_url=proxy.url)
        with SyncRunner(cfg, components=[publisher, StatusFileWriter(), watch]) as sync:
            expected = append_many(sync.outbox, 0, n, size=200)
            proxy.drop_new(False)
            for threshold in (150, 450, 750):
                wait_for(
                    lambda t=threshold: sync.status().get("last_acked_seq", 0) >= t,  # type: ignore[misc]
                    timeout=30,
                    what=f"publishing past seq {threshold}",
                )
                proxy.reset_all()  # mid-publish: records in flight, acks on the way
            # flapping: new connections refused for a while, then back
            try:
                wait_for(
                    lambda: (lambda st: st["link_connects"] >= 4 and st["link_state"] == "up")(
                        sync.status()
                    ),
                    timeout=20,
                    what="the third reconnect",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {sync.status()} resets={proxy.resets}") from None
            proxy.drop_new()
            proxy.reset_all()
            wait_for(lambda: sync.status()["link_state"] != "up", timeout=10, what="link down")
            wait_for(lambda: proxy.dropped >= 2, timeout=20, what="reconnects being refused")
            proxy.heal()
            wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=60, what="the backlog")
            st = sync.status()
    assert proxy.resets >= 4
    assert st["link_disconnects"] >= 4
    assert st["resends"] > 0, "the resets cut records in flight (their acks never came)"
    assert st["link_max_retry_in_s"] <= BACKOFF_MAX_S
    assert st.get("publish_max_retry_in_s", 0) <= BACKOFF_MAX_S
    assert 1 < watch.max_inflight <= 16, "the in-flight window is used, and bounded"
    assert_exactly_once_in_order(read_stream(nats_server.url, DEVICE), expected)


def _status_file(run_dir: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((run_dir / "sync-status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return doc


def test_sigkill_mid_publish_then_restart_nothing_lost_nothing_duplicated(
    nats_server: NatsServer, sync_cfg: Callable[..., EdgeConfig], tmp_path: Path
) -> None:
    n = 1500
    with FaultProxy(nats_server.port) as proxy:
        proxy.delay(0.05)  # ~640 records/s: the kill lands with most of the backlog left
        cfg = sync_cfg(upstream_url=proxy.url)
        conf = write_config(
            tmp_path / "edge.toml",
            run_dir=cfg.run_dir,
            data_dir=cfg.data_dir,
            device_id=DEVICE,
            upstream_url=proxy.url,
            upstream_ping_interval_s=0.3,
            upstream_ack_timeout_s=1.0,
            upstream_backoff_max_s=BACKOFF_MAX_S,
        )
        with Store.open(cfg.data_dir / "state") as store:
            outbox = Outbox(store)
            expected = append_many(outbox, 0, n, size=200)
            first = SyncProcess(conf, tmp_path / "sync1.log")
            try:
                wait_for(
                    lambda: _status_file(cfg.run_dir).get("last_acked_seq", 0) >= 300,
                    timeout=30,
                    what="edge-sync publishing",
                )
            finally:
                first.kill()
            left = outbox.stats()["depth"]
            assert 0 < left < n, "killed mid-publish"
            second = SyncProcess(conf, tmp_path / "sync2.log")
            try:
                wait_for(lambda: outbox.stats()["depth"] == 0, timeout=60, what="the rest")
            finally:
                code = second.terminate()
            assert code == 0, second.output()
            assert _status_file(cfg.run_dir)["running"] is False
    assert_exactly_once_in_order(read_stream(nats_server.url, DEVICE), expected)


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_outbox_at_its_cap_applies_the_policy_counts_and_audits(
    nats_server_factory: Callable[[], NatsServer],
    sync_cfg: Callable[..., EdgeConfig],
    policy: str,
) -> None:
    server = nats_server_factory()
    cfg = sync_cfg(upstream_url=server.url, outbox_max_bytes=4096, outbox_policy=policy)
    with SyncRunner(cfg) as sync:
        kept: dict[int, bytes] = {}
        seqs = []
        for i in range(100):  # 100 x 100 bytes against a 4096-byte cap, server down
            b = body(i, 100)
            seq = sync.outbox.append(b, time.time_ns())  # returns at once, whatever the cap
            seqs.append(seq)
            if seq:
                kept[seq] = b
        st = sync.outbox.stats()
        assert st["dropped"] == 60 and st["dropped_bytes"] == 6000 and st["depth"] == 40
        store = sync.service._store
        assert store is not None
        audited = list(store.iter_audit(kind="outbox_drop"))
        assert sum(a["records"] for a in audited) == 60
        assert all(a["policy"] == policy and a["reason"] == "max_bytes" for a in audited)
        if policy == "drop-oldest":
            assert seqs == list(range(1, 101))
            survivors = {s: kept[s] for s in range(61, 101)}
            assert (audited[0]["first_seq"], audited[-1]["last_seq"]) == (1, 60)
        else:
            assert seqs == list(range(1, 41)) + [0] * 60
            survivors = {s: kept[s] for s in range(1, 41)}
            assert (audited[0]["first_seq"], audited[-1]["last_seq"]) == (41, 100)
        server.start()
        wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=30, what="the survivors")
        wait_for(
            lambda: (sync.status().get("outbox") or {}).get("dropped") == 60,
            timeout=10,
            what="the drops in edge-sync's status",
        )
    assert_exactly_once_in_order(read_stream(server.url, DEVICE), survivors)


def test_appending_never_waits_for_a_busy_deleter(
    nats_server_factory: Callable[[], NatsServer], sync_cfg: Callable[..., EdgeConfig]
) -> None:
    """An appender thread keeps going, never failing, while edge-sync reconnects against a
    server that is down: the outbox is the only thing between them."""
    server = nats_server_factory()
    cfg = sync_cfg(upstream_url=server.url, outbox_max_bytes=8192)
    with SyncRunner(cfg) as sync:
        done = threading.Event()
        results: list[int] = []

        def appender() -> None:
            for i in range(300):
                results.append(sync.outbox.append(body(i, 100), time.time_ns()))
            done.set()

        t = threading.Thread(target=appender)
        t.start()
        t.join(60)
        assert done.is_set() and all(results), "every append returned a sequence"
        assert sync.outbox.stats()["dropped"] == 300 - 81


def test_a_wiped_board_does_not_trust_a_stream_that_is_ahead_of_its_outbox(
    nats_server: NatsServer, sync_cfg: Callable[..., EdgeConfig]
) -> None:
    """The stream holds Edge-Seq 500 of this device from before the board's store was wiped:
    the restarted sequence must still be published, not deleted as 'already stored'."""
    import asyncio

    import nats

    from edge.sync import AGG_STREAM, AGG_SUBJECT_PREFIX, AGG_SUBJECTS

    async def old_life() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name=AGG_STREAM, subjects=[AGG_SUBJECTS])
            h = {"Nats-Msg-Id": f"{DEVICE}-500", "Edge-Seq": "500", "Edge-Device": DEVICE}
            await js.publish(AGG_SUBJECT_PREFIX + DEVICE, b"old life", headers=h)
        finally:
            await nc.close()

    asyncio.run(old_life())
    cfg = sync_cfg(upstream_url=nats_server.url)
    with Store.open(cfg.data_dir / "state") as store:  # waiting before edge-sync starts
        expected = append_many(Outbox(store), 0, 3)
    with SyncRunner(cfg) as sync:
        wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=20, what="the new records")
        assert sync.status()["stream_ahead"] is True
    stored = read_stream(nats_server.url, DEVICE)
    assert [s.edge_seq for s in stored] == [500, 1, 2, 3]
    assert_exactly_once_in_order(stored[1:], expected)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_server_down_for_minutes_with_a_flapping_link_then_back(
    nats_server_factory: Callable[[], NatsServer], sync_cfg: Callable[..., EdgeConfig]
) -> None:
    """make slow: the server away for two and a half minutes while records keep coming, then a
    link that flaps for a minute; every record exactly once, in order, backoff bounded."""
    server = nats_server_factory()
    expected: dict[int, bytes] = {}
    with FaultProxy(server.port) as proxy:
        with SyncRunner(sync_cfg(upstream_url=proxy.url)) as sync:
            i = 0
            end = time.monotonic() + 150
            while time.monotonic() < end:  # the pace of a producer, not a wait for a result
                expected |= append_many(sync.outbox, i, 5)
                i += 5
                time.sleep(0.25)
            assert sync.outbox.stats()["depth"] == len(expected)
            server.start()
            end = time.monotonic() + 60
            while time.monotonic() < end:
                expected |= append_many(sync.outbox, i, 5)
                i += 5
                if i % 100 == 0:
                    proxy.reset_all()
                time.sleep(0.1)
            wait_for(lambda: sync.outbox.stats()["depth"] == 0, timeout=60, what="the backlog")
            st = sync.status()
            assert st["link_max_retry_in_s"] <= BACKOFF_MAX_S
            assert st.get("publish_max_retry_in_s", 0) <= BACKOFF_MAX_S
    assert_exactly_once_in_order(read_stream(server.url, DEVICE), expected)
