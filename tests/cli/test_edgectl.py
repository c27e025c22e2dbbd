"""edgectl against a live edged, a dead one and an absent one."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.runtime import Edged

from ..support import SEED_RULE, wait_for

pytestmark = pytest.mark.integration


def run(run_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--run-dir", str(run_dir), "--timeout", "2", *args])


@pytest.mark.parametrize(
    "cmd", [["status"], ["agents"], ["stats"], ["rules", "list"], ["tail", "--no-follow"]]
)
def test_absent_edged_says_so_and_how_to_start(run_dir: Path, cmd: list[str]) -> None:
    r = run(run_dir, *cmd)
    assert r.exit_code == 3
    assert "edged is not running" in r.output and "edged --run-dir" in r.output
    assert "Traceback" not in r.output


def test_dead_edged_with_a_stale_socket(run_dir: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(run_dir / "ctl.sock"))  # bound, never listening: what a crashed edged leaves
    s.close()
    r = run(run_dir, "status")
    assert r.exit_code == 3
    assert "not answering" in r.output or "did not answer" in r.output
    assert "Traceback" not in r.output


def test_read_commands_against_a_live_edged(
    edged: Edged, agent_factory: Any, run_dir: Path
) -> None:
    got: list[Any] = []
    with agent_factory("perception-1", ["cpu_usage"], handler=got.append) as agent:
        agent.report("cpu_usage", 0.99)
        wait_for(lambda: edged.loop.counters["acks"] == 1)
        status = json.loads(run(run_dir, "status", "--json").output)
        assert status["agents"]["active"] == 1 and status["rules"]["rules"] == 4
        agents = json.loads(run(run_dir, "agents", "--json").output)
        assert [a["agent_id"] for a in agents] == ["perception-1"]
        assert agents[0]["instructions"] == 1 and agents[0]["acks"] == 1
        stats = json.loads(run(run_dir, "stats", "--json").output)
        assert stats["stages_us"]["e2e"]["count"] == 1 and stats["sla_rate"] in (0.0, 1.0)
        tail = [
            json.loads(line)
            for line in run(
                run_dir, "tail", "--json", "--no-follow", "--history"
            ).output.splitlines()
        ]
        assert {"instruction", "ack"} <= {e["kind"] for e in tail}
        for cmd in (["status"], ["agents"], ["stats"], ["rules", "list"]):
            r = run(run_dir, *cmd)
            assert r.exit_code == 0, r.output
        assert "perception-1" in run(run_dir, "agents").output
        shown = run(run_dir, "status").output
        assert "RSS" in shown and "peak" in shown and "foreign acks" in shown
        assert "e2e" in run(run_dir, "stats").output


def test_rules_push_activates_and_list_shows_it(
    edged: Edged, run_dir: Path, tmp_path: Path, agent_factory: Any
) -> None:
    f = tmp_path / "new.yaml"
    f.write_text(
        "- {rule_id: mem_hi, rule_content: mem > 0.5, action: alert, priority: 9, sla_threshold: 5}\n"
    )
    before = edged.loop.table.version
    r = run(run_dir, "rules", "push", str(f), "--json")
    assert r.exit_code == 0, r.output
    pushed = json.loads(r.output)
    assert pushed["version"] == before + 1 and pushed["rules"] == 1
    listed = json.loads(run(run_dir, "rules", "list", "--json").output)
    assert [x["rule_id"] for x in listed["rules"]] == ["mem_hi"]
    assert listed["lkg"] == before
    got: list[Any] = []
    with agent_factory("m1", ["mem"], handler=got.append) as agent:
        agent.report("mem", 0.9)
        wait_for(lambda: got)
    assert got[0].rule_id == "mem_hi"


def test_rules_push_of_a_bad_file_shows_every_error_and_changes_nothing(
    edged: Edged, run_dir: Path, tmp_path: Path
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "- {rule_id: a, rule_content: 'cpu >', action: alert, priority: 1, sla_threshold: 5}\n"
        "- {rule_id: b, rule_content: cpu > 1, action: nope, priority: 1, sla_threshold: 5}\n"
    )
    before = edged.loop.table.version
    r = run(run_dir, "rules", "push", str(f))
    assert r.exit_code == 1
    assert f"{f}:1:" in r.output and f"{f}:2:" in r.output and "nothing was pushed" in r.output
    assert edged.loop.table.version == before


def test_tampered_rule_table_is_refused(edged: Edged, run_dir: Path, tmp_path: Path) -> None:
    from edge.rules import encode_rule_table, parse_rule_text

    blob = bytearray(
        encode_rule_table(
            parse_rule_text(
                "- {rule_id: x, rule_content: cpu > 1, action: alert, priority: 1, sla_threshold: 5}\n"
            )
        )
    )
    i = blob.index(b"cpu")
    blob[i] = ord("g")  # same length, different rule: the content hash no longer matches
    f = tmp_path / "t.bin"
    f.write_bytes(bytes(blob))
    before = edged.loop.table.version
    r = run(run_dir, "rules", "push", str(f))
    assert r.exit_code == 4 and "content hash" in r.output
    assert edged.loop.table.version == before
    edged.writer.flush()
    assert list(edged.store.iter_audit(kind="rules_refused"))


def test_rules_check(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text(
        "- {rule_id: a, rule_content: cpu_usage > 0.9 for 10s, action: restart_agent, priority: 8, sla_threshold: 10}\n"
    )
    r = CliRunner().invoke(cli, ["rules", "check", str(f)])
    assert r.exit_code == 0 and "1 rules OK" in r.output


SEED_VERBATIM = SEED_RULE


def test_seed_rule_verbatim_compiles_pushes_and_fires(
    edged: Edged, run_dir: Path, tmp_path: Path, agent_factory: Any
) -> None:
    """The issue's done-when: the seed's rule object, pasted verbatim, on a live board."""
    import time

    f = tmp_path / "seed.yaml"
    f.write_text(SEED_VERBATIM)
    r = run(run_dir, "rules", "push", str(f), "--json")
    assert r.exit_code == 0, r.output
    got: list[Any] = []
    with agent_factory("perception-1", ["cpu_usage"], handler=got.append) as agent:
        t0 = time.monotonic_ns()
        agent.report("cpu_usage", 0.95)
        ins = wait_for(lambda: got, timeout=20, what="the held-for instruction after 10 s")[0]
    assert (ins.rule_id, ins.action_name) == ("rule_001", "restart_agent")
    assert ins.t_sample_ns >= t0 + 10_000_000_000  # fired by the timer at the hold deadline


def test_signed_tables_and_rollback(make_cfg: Any, run_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "ops"
    assert CliRunner().invoke(cli, ["keys", "gen", "--out", str(keys)]).exit_code == 0
    other = tmp_path / "mallory"
    assert CliRunner().invoke(cli, ["keys", "gen", "--out", str(other)]).exit_code == 0
    src = tmp_path / "r.yaml"
    src.write_text(
        "- {rule_id: a, rule_content: x > 1, action: alert, priority: 1, sla_threshold: 5}\n"
    )

    def compiled(name: str, key: Path, version: int) -> Path:
        out = tmp_path / f"{name}.bin"
        r = CliRunner().invoke(
            cli,
            [
                "rules",
                "compile",
                str(src),
                "-o",
                str(out),
                "--sign",
                f"{key}.key",
                "--version",
                str(version),
            ],
        )
        assert r.exit_code == 0, r.output
        return out

    good, newer = compiled("good", keys, 5), compiled("newer", keys, 7)
    forged, old = compiled("forged", other, 8), compiled("old", keys, 2)
    cfg = make_cfg(rules_file=None, rules_trusted_keys=f"{keys}.pub", rules_require_signed=True)
    with Edged(cfg) as d:
        assert run(run_dir, "rules", "push", str(good)).exit_code == 0
        assert run(run_dir, "rules", "push", str(newer)).exit_code == 0
        assert d.loop.table.version == 7
        r = run(run_dir, "rules", "push", str(forged))
        assert r.exit_code == 4 and "key" in r.output
        r = run(run_dir, "rules", "push", str(old))
        assert r.exit_code == 4 and "not newer" in r.output
        r = run(run_dir, "rules", "push", str(src))  # unsigned, and signatures are required
        assert r.exit_code == 4 and "unsigned" in r.output.lower()
        assert d.loop.table.version == 7
        listed = json.loads(run(run_dir, "rules", "list", "--json").output)
        assert listed["table"]["key_id"] and listed["rules"][0]["condition"] == "x > 1"
        r = run(run_dir, "rules", "rollback", "--json")
        assert r.exit_code == 0, r.output
        assert d.loop.table.version == 5 and json.loads(r.output)["version"] == 5
        d.writer.flush()
        kinds = [a["kind"] for a in d.store.iter_audit()]
        assert kinds.count("rules_refused") == 3 and "rules_rolled_back" in kinds


def test_rules_replay_cli(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(SEED_VERBATIM)
    trace = tmp_path / "t.csv"
    trace.write_text("t_ms,agent_id,metric,value\n0,p1,cpu_usage,0.95\n3000,p1,cpu_usage,0.97\n")
    r = CliRunner().invoke(cli, ["rules", "replay", str(rules), str(trace), "--end-ms", "12000"])
    assert r.exit_code == 0, r.output
    assert [json.loads(x) for x in r.output.splitlines()] == [
        {
            "action": "restart_agent",
            "agent_id": "p1",
            "target": "p1",
            "params": {},
            "rule_id": "rule_001",
            "t_ms": 10000,
        }
    ]
    assert r.stderr == ""
    quiet = tmp_path / "quiet.csv"
    quiet.write_text("t_ms,agent_id,metric,value\n0,p1,cpu_usgae,0.95\n")
    r = CliRunner().invoke(cli, ["rules", "replay", str(rules), str(quiet)])
    assert r.exit_code == 0 and r.stdout == ""
    assert "series cpu_usgae is matched by no rule's selector" in r.stderr
    assert "no rule fired over 1 row of" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("t_ms,agent_id,metric,value\nsoon,p1,cpu,1\n")
    r = CliRunner().invoke(cli, ["rules", "replay", str(rules), str(bad)])
    assert r.exit_code == 1 and "bad.csv:2" in r.output


@pytest.mark.parametrize("kind", ["truncated", "newer_schema", "not_a_table", "empty"])
def test_bad_tables_are_refused_and_the_active_one_keeps_running(
    edged: Edged,
    run_dir: Path,
    tmp_path: Path,
    agent_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    from edge.rules import _table_codec, encode_rule_table, parse_rule_text

    rs = parse_rule_text(
        "- {rule_id: x, rule_content: mem > 1, action: alert, priority: 1, sla_threshold: 5}\n"
    )
    if kind == "newer_schema":
        monkeypatch.setattr(_table_codec, "SCHEMA_VERSION", _table_codec.SCHEMA_VERSION + 1)
    blob = encode_rule_table(rs)
    monkeypatch.undo()
    blob = {
        "truncated": blob[: len(blob) // 2],
        "newer_schema": blob,
        "not_a_table": b"\x0c\x00\x00\x00EHLO" + b"\x00" * 8,
        "empty": b"",
    }[kind]
    f = tmp_path / "t.bin"
    f.write_bytes(blob)
    before = edged.loop.table.version
    r = run(run_dir, "rules", "push", str(f))
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert edged.loop.table.version == before
    got: list[Any] = []
    with agent_factory("still-1", ["cpu_usage"], handler=got.append) as agent:
        agent.report("cpu_usage", 0.99)  # the active table's cpu_hot still fires
        wait_for(lambda: got)
    assert got[0].rule_id == "cpu_hot"
