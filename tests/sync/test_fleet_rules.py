"""Rule tables down and device status up, end to end: a real nats-server, a real edged, the
real ``edge-sync`` process, and ``edgectl fleet`` through click's CliRunner."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.config import EdgeConfig
from edge.rules import load_signing_key, write_key_pair
from edge.runtime import Edged

from ..support import wait_for
from .conftest import NatsServer
from .tables import RULE, signed, table, tampered

pytestmark = pytest.mark.integration

DEVICE, GROUPS = "b1", "line-3,plant"


class Fleet:
    """The central side, as a test drives it: the buckets over a short-lived client."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _do(self, fn: Callable[[Any], Any]) -> Any:
        async def main() -> Any:
            nc = await nats.connect(self.url, allow_reconnect=False)
            try:
                return await fn(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(main())

    def put(self, key: str, value: bytes) -> int:
        async def op(js: Any) -> int:
            from edge.sync._link import ensure_streams

            await ensure_streams(js)
            return int(await (await js.key_value("EDGE_RULES")).put(key, value))

        return int(self._do(op))

    def delete(self, key: str) -> None:
        async def op(js: Any) -> None:
            await (await js.key_value("EDGE_RULES")).delete(key)

        self._do(op)

    def device(self, device_id: str = DEVICE) -> dict[str, Any] | None:
        async def op(js: Any) -> dict[str, Any] | None:
            from nats.js.errors import BucketNotFoundError, KeyNotFoundError

            try:
                entry = await (await js.key_value("EDGE_DEVICES")).get(device_id)
            except (BucketNotFoundError, KeyNotFoundError):
                return None
            doc: dict[str, Any] = json.loads(entry.value)
            return doc

        result: dict[str, Any] | None = self._do(op)
        return result


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    ops_key, ops_pub = write_key_pair(tmp_path / "ops")
    bad_key, _ = write_key_pair(tmp_path / "mallory")
    return {
        "ops": load_signing_key(ops_key),
        "ops_key": ops_key,
        "ops_pub": ops_pub,
        "mallory": load_signing_key(bad_key),
        "mallory_key": bad_key,
    }


@pytest.fixture
def board(
    make_cfg: Callable[..., EdgeConfig], nats_server: NatsServer, keys: dict[str, Any]
) -> EdgeConfig:
    return make_cfg(
        device_id=DEVICE,
        device_groups=GROUPS,
        rules_trusted_keys=str(keys["ops_pub"]),
        upstream_url=nats_server.url,
        sync_status_interval_s=0.5,
    )


@pytest.fixture
def edge_sync(board: EdgeConfig, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start the real edge-sync process (same settings as edged, through its TOML file)."""
    conf = tmp_path / "edge.toml"
    settings = {
        "run_dir": str(board.run_dir),
        "data_dir": str(board.data_dir),
        "device_id": board.device_id,
        "device_groups": board.device_groups,
        "rules_trusted_keys": board.rules_trusted_keys,
        "upstream_url": board.upstream_url,
        "sync_status_interval_s": board.sync_status_interval_s,
        "metrics_addr": "",
        "log_level": "DEBUG",
    }
    conf.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"edge-sync{len(procs)}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(
            [sys.executable, "-c", "from edge.sync import main; main()", "--config", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for p in procs:
        assert p.returncode == 0, (tmp_path / "edge-sync0.log").read_text()[-3000:]


def fleet_cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["fleet", "--url", url, *args])


def active(d: Edged) -> tuple[int, list[str]]:
    assert d.loop is not None
    t = d.loop.table
    return t.version, [r.rule_id for r in t.ruleset.rules]


def refused_audits(d: Edged) -> list[dict[str, Any]]:
    assert d.writer is not None and d.store is not None
    d.writer.flush()
    return [a for a in d.store.iter_audit() if a["kind"] == "rules_refused"]


def test_tables_apply_by_precedence_and_bad_ones_are_refused_and_reported(
    board: EdgeConfig,
    edge_sync: Callable[[], Any],
    nats_server: NatsServer,
    keys: dict[str, Any],
    run_dir: Path,
) -> None:
    ops, mallory = keys["ops"], keys["mallory"]
    fleet = Fleet(nats_server.url)
    with Edged(board) as d:
        edge_sync()
        doc = wait_for(fleet.device, timeout=20, what="the first status document")
        assert doc["device_id"] == DEVICE and doc["groups"] == ["line-3", "plant"]
        assert doc["link"]["state"] == "up" and doc["edged"]["running"] is True
        assert doc["edged"]["rules_version"] == 1 and doc["outbox"]["depth"] == 0

        # a group table applies; the device key then overrides it
        fleet.put("group.plant", signed(ops, 100, rule_id="grp", scope=["plant"]))
        wait_for(lambda: active(d) == (100, ["grp"]), timeout=10, what="group table active")
        fleet.put("device.b1", signed(ops, 200, rule_id="dev", scope=[DEVICE]))
        wait_for(lambda: active(d) == (200, ["dev"]), timeout=10, what="device table active")
        listed = CliRunner().invoke(cli, ["--run-dir", str(run_dir), "rules", "list", "--json"])
        assert json.loads(listed.output)["table"]["version"] == 200
        # a newer group table does not override the device key
        fleet.put("group.plant", signed(ops, 250, rule_id="grp", scope=["plant"]))

        bad = {
            "unsigned": (table(300, rule_id="dev"), "unsigned"),
            "unknown key": (signed(mallory, 300), "not trusted here"),
            "tampered": (tampered(signed(ops, 300)), "signature does not verify"),
            "expired": (signed(ops, 300, expires_at_unix_ms=1_000), "expired"),
            "other device": (signed(ops, 300, scope=["b2"]), "not for device 'b1'"),
            "older": (signed(ops, 150, rule_id="dev"), "not newer than the active version 200"),
            "same version": (signed(ops, 200, rule_id="other"), "different content"),
        }
        for what, (value, reason) in bad.items():
            rev = fleet.put("device.b1", value)

            def refused(rev: int = rev) -> dict[str, Any] | None:
                doc = fleet.device()
                r = doc and (doc["rules"] or {}).get("last_refused")
                return r if r and r["revision"] == rev else None

            r = wait_for(refused, timeout=10, what=f"{what}: refusal in EDGE_DEVICES")
            assert reason in r["reason"], (what, r)
            assert r["key"] == "device.b1" and r["by"] == "edge-sync"
            assert active(d) == (200, ["dev"]), what
        audits = wait_for(
            lambda: len(refused_audits(d)) >= len(bad) and refused_audits(d), what="audits"
        )
        assert [a["revision"] for a in audits][-len(bad) :] == sorted(
            a["revision"] for a in audits[-len(bad) :]
        )
        assert all(a["source"] == "edge-sync" and a["key"] == "device.b1" for a in audits)
        for (_, reason), a in zip(bad.values(), audits[-len(bad) :], strict=True):
            assert reason in a["reason"]

        # deleting the device key falls back to the group only with a newer version:
        # group.plant holds 250 > 200, so it applies
        fleet.delete("device.b1")
        wait_for(lambda: active(d) == (250, ["grp"]), timeout=10, what="fallback to group")
        doc = wait_for(
            lambda: (x := fleet.device()) and x["edged"]["rules_version"] == 250 and x,
            timeout=10,
            what="status shows the fallback",
        )
        assert doc["rules"]["last_applied"]["key"] == "group.plant"


def test_deleting_the_device_key_never_rolls_back(
    board: EdgeConfig, edge_sync: Callable[[], Any], nats_server: NatsServer, keys: dict[str, Any]
) -> None:
    ops = keys["ops"]
    fleet = Fleet(nats_server.url)
    fleet.put("group.line-3", signed(ops, 10, rule_id="grp"))
    fleet.put("device.b1", signed(ops, 20, rule_id="dev"))
    with Edged(board) as d:
        edge_sync()
        wait_for(lambda: active(d) == (20, ["dev"]), timeout=20, what="device table active")
        fleet.delete("device.b1")
        r = wait_for(
            lambda: ((fleet.device() or {}).get("rules") or {}).get("last_refused"),
            timeout=10,
            what="the stale group table refused",
        )
        assert r["key"] == "group.line-3" and "not newer than the active version 20" in r["reason"]
        assert active(d) == (20, ["dev"])


def test_a_table_waits_for_edged_and_then_activates(
    board: EdgeConfig, edge_sync: Callable[[], Any], nats_server: NatsServer, keys: dict[str, Any]
) -> None:
    fleet = Fleet(nats_server.url)
    edge_sync()
    fleet.put("device.b1", signed(keys["ops"], 42, rule_id="dev"))
    doc = wait_for(
        lambda: (x := fleet.device()) and (x["rules"] or {}).get("pending") and x,
        timeout=20,
        what="pending while edged is down",
    )
    assert doc["edged"]["running"] is False and doc["rules"]["pending"]["version"] == 42
    with Edged(board) as d:
        wait_for(lambda: active(d) == (42, ["dev"]), timeout=20, what="activated once edged is up")
        wait_for(
            lambda: (x := fleet.device()) and x["rules"]["pending"] is None, timeout=10, what="done"
        )


def test_fleet_push_and_status_through_the_cli(
    board: EdgeConfig,
    edge_sync: Callable[[], Any],
    nats_server: NatsServer,
    keys: dict[str, Any],
    tmp_path: Path,
) -> None:
    url = nats_server.url
    rules = tmp_path / "fleet.yaml"
    rules.write_text(RULE.format(rid="from_cli"))
    with Edged(board) as d:
        edge_sync()
        r = fleet_cli(url, "push", str(rules), "--group", "plant", "--key", str(keys["ops_key"]),
                      "--json")  # fmt: skip
        assert r.exit_code == 0, r.output
        pushed = json.loads(r.output)
        assert pushed["key"] == "group.plant" and pushed["scope"] == ["plant"]
        wait_for(lambda: active(d) == (pushed["version"], ["from_cli"]), timeout=20, what="push")
        # the same push again gets a newer version (time-based, above what the key holds)
        r = fleet_cli(url, "push", str(rules), "--group", "plant", "--key", str(keys["ops_key"]),
                      "--json")  # fmt: skip
        again = json.loads(r.output)
        assert again["version"] > pushed["version"] and again["revision"] > pushed["revision"]
        # an explicit older version is refused at the source
        r = fleet_cli(url, "push", str(rules), "--group", "plant", "--key", str(keys["ops_key"]),
                      "--version", "5")  # fmt: skip
        assert r.exit_code == 1 and "not newer" in r.output
        # a table signed by another key than --key is refused unless --force
        other = tmp_path / "other.bin"
        other.write_bytes(signed(keys["mallory"], 10**15))
        r = fleet_cli(url, "push", str(other), "--device", DEVICE, "--key", str(keys["ops_key"]))
        assert r.exit_code == 1 and "--force" in r.output
        status_doc = wait_for(
            lambda: (
                (x := Fleet(url).device()) and x["edged"]["rules_version"] == again["version"] and x
            ),
            timeout=20,
            what="status caught up",
        )
        assert status_doc["link"]["state"] == "up"
        r = fleet_cli(url, "status", "--json")
        assert r.exit_code == 0, r.output
        (row,) = json.loads(r.output)
        assert row["device_id"] == DEVICE and row["edged"]["rules_version"] == again["version"]
        assert row["lag_s"] is not None and row["outbox"]["depth"] == 0
        r = fleet_cli(url, "status")
        assert r.exit_code == 0 and DEVICE in r.output and str(again["version"]) in r.output


def test_fleet_commands_say_when_the_server_is_not_there(tmp_path: Path) -> None:
    r = fleet_cli("nats://127.0.0.1:1", "status")
    assert r.exit_code == 3 and "upstream not reachable" in r.output
    assert "Traceback" not in r.output


def test_fleet_aggregates_prints_the_stream_in_order(nats_server: NatsServer) -> None:
    from edge.wire import encode_aggregate

    url = nats_server.url
    r = fleet_cli(url, "aggregates")  # no stream yet: nothing to print, not an error
    assert r.exit_code == 0 and r.output == ""

    async def publish(js: Any) -> None:
        from edge.sync._link import ensure_streams

        await ensure_streams(js)
        for device, seq, body in [
            ("b1", 1, encode_aggregate({"device_id": "b1", "samples": 10})),
            ("b2", 1, encode_aggregate({"device_id": "b2", "samples": 20})),
            ("b1", 2, b"not an aggregate"),
        ]:
            await js.publish(
                f"edge.agg.{device}",
                body,
                headers={
                    "Nats-Msg-Id": f"{device}-{seq}",
                    "Edge-Seq": str(seq),
                    "Edge-Device": device,
                },
            )

    Fleet(url)._do(publish)
    r = fleet_cli(url, "aggregates")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert [(x["device"], x["seq"]) for x in lines] == [("b1", 1), ("b2", 1), ("b1", 2)]
    assert lines[0]["aggregate"]["samples"] == 10 and "error" in lines[2]
    r = fleet_cli(url, "aggregates", "--device", "b2")
    assert [json.loads(x)["aggregate"]["samples"] for x in r.output.splitlines()] == [20]
