"""edgectl rules ... and edgectl keys ...: offline commands directly, the rest against a live
edged (the `edged` fixture), and `rollback` against a ctl server with a stand-in handler."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from click.testing import CliRunner, Result

from edge.cli import cli
from edge.cli._rules_cmds import diff_rules
from edge.errors import RuleTableError
from edge.rules._signing import load_signing_key, load_trusted_keys
from edge.rules._table_codec import decode_table_with_info
from edge.runtime import Edged
from edge.runtime._ctl import CtlServer, RefusedError
from edge.wire import CtlOp, MessageType, message_type

RULES_A = """\
version: 5
actions: [open_valve]
rules:
  - rule_id: cpu_hot
    rule_name: restart agent on high CPU
    rule_content: cpu_usage > 0.9 for 10s
    action: restart_agent
    priority: 8
    sla_threshold: 10
  - rule_id: press
    rule_content: avg(pressure{line="3"}, 5s) > 7.5 and not absent(valve, 2s)
    action: open_valve
    priority: 200
    sla_threshold: 5
    params: {rate: 2}
    cooldown: 1.5m
    escalate: safe_state
  - rule_id: old
    rule_content: temp > 80
    action: alert
    priority: 1
    sla_threshold: 50
"""

# against RULES_A: `old` removed, `new` added, cpu_hot's priority and press's condition changed
RULES_B = """\
actions: [open_valve]
rules:
  - rule_id: cpu_hot
    rule_name: restart agent on high CPU
    rule_content: cpu_usage > 0.9 for 10s
    action: restart_agent
    priority: 9
    sla_threshold: 10
  - rule_id: press
    rule_content: max(pressure{line="3"}, 5s) >= 8 and not absent(valve, 2s)
    action: open_valve
    priority: 200
    sla_threshold: 5
    params: {rate: 2}
    cooldown: 1.5m
    escalate: safe_state
  - rule_id: new
    rule_content: rate(flow, 10s) < -1
    action: alert
    priority: 2
    sla_threshold: 50
"""

BAD = """\
- {rule_id: a, rule_content: 'cpu >', action: alert, priority: 1, sla_threshold: 5}
- {rule_id: b, rule_content: cpu > 1, action: nope, priority: 1, sla_threshold: 5}
"""


def invoke(*args: str, run_dir: Path | None = None) -> Result:
    pre = ["--run-dir", str(run_dir), "--timeout", "2"] if run_dir else []
    return CliRunner().invoke(cli, [*pre, *args])


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def make(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return make


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    r = invoke("keys", "gen", "--out", str(tmp_path / "fleet"))
    assert r.exit_code == 0, r.output
    return tmp_path / "fleet.key", tmp_path / "fleet.pub"


# --- offline: check, compile, keys gen ---------------------------------------------------------


def test_check(write: Callable[[str, str], Path]) -> None:
    ok = write("a.yaml", RULES_A)
    r = invoke("rules", "check", str(ok))
    assert r.exit_code == 0 and "3 rules OK" in r.output
    doc = json.loads(invoke("rules", "check", "--json", str(ok)).output)
    assert doc["ok"] and doc["rules"] == 3 and doc["version"] == 5 and len(doc["hash"]) == 64


def test_check_reports_every_problem(write: Callable[[str, str], Path]) -> None:
    bad = write("bad.yaml", BAD)
    r = invoke("rules", "check", str(bad))
    assert r.exit_code == 1
    assert f"{bad}:1:" in r.output and f"{bad}:2:" in r.output and "2 problems" in r.output
    r = invoke("rules", "check", "--json", str(bad))
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert not doc["ok"] and [p["line"] for p in doc["problems"]] == [1, 2]
    assert "unknown action 'nope'" in doc["problems"][1]["message"]


def test_compile_unsigned(write: Callable[[str, str], Path], tmp_path: Path) -> None:
    out = tmp_path / "t.bin"
    r = invoke("rules", "compile", str(write("a.yaml", RULES_A)), "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    blob = out.read_bytes()
    assert message_type(blob) is MessageType.RULE_TABLE and summary["bytes"] == len(blob)
    rs, info = decode_table_with_info(blob)
    assert [x.rule_id for x in rs.rules] == ["cpu_hot", "press", "old"]
    assert rs.version == 5 and summary["hash"] == info.content_hash.hex()
    assert summary["key_id"] is None and info.expires_at_unix_ms == 0 and info.scope == ()


def test_compile_signed_with_version_expiry_and_scope(
    write: Callable[[str, str], Path], tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    key, pub = keypair
    out = tmp_path / "t.bin"
    r = invoke(
        "rules",
        "compile",
        str(write("a.yaml", RULES_A)),
        "-o",
        str(out),
        "--sign",
        str(key),
        "--version",
        "42",
        "--expires-in",
        "720h",
        "--scope",
        "dev-1",
        "--scope",
        "line3",
    )
    assert r.exit_code == 0, r.output
    assert "signed by key" in r.output
    blob = out.read_bytes()
    assert message_type(blob) is MessageType.SIGNED_RULE_TABLE
    with pytest.raises(RuleTableError, match="not trusted"):
        decode_table_with_info(blob)
    rs, info = decode_table_with_info(blob, trusted_keys=load_trusted_keys([pub]))
    assert rs.version == 42 and info.scope == ("dev-1", "line3") and info.signed
    assert info.expires_at_unix_ms - info.created_at_unix_ms == 720 * 3600 * 1000


def test_the_docs_example_works_as_written(
    write: Callable[[str, str], Path], tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    """docs/rules.md: --expires-in 30d, and --scope plc-3,line-3 as two scopes."""
    out = tmp_path / "t.bin"
    args = ["-o", str(out), "--version", "12", "--sign", str(keypair[0])]
    r = invoke("rules", "compile", str(write("a.yaml", RULES_A)), *args,
               "--expires-in", "30d", "--scope", "plc-3,line-3")
    assert r.exit_code == 0, r.output
    _, info = decode_table_with_info(out.read_bytes(), trusted_keys=load_trusted_keys([keypair[1]]))
    assert info.scope == ("plc-3", "line-3")
    assert info.expires_at_unix_ms - info.created_at_unix_ms == 30 * 86_400_000
    r = invoke("rules", "compile", str(write("b.yaml", RULES_A)), *args, "--scope", "plc 3")
    assert r.exit_code == 2 and "without spaces" in r.output


def test_compile_refusals_write_nothing(
    write: Callable[[str, str], Path], tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    src, out = write("a.yaml", RULES_A), tmp_path / "t.bin"
    r = invoke("rules", "compile", str(src), "-o", str(out), "--sign", str(keypair[1]))
    assert r.exit_code == 1 and "this is a public key" in r.output
    r = invoke("rules", "compile", str(src), "-o", str(out), "--expires-in", "30")
    assert r.exit_code == 2 and "duration" in r.output
    r = invoke("rules", "compile", str(write("bad.yaml", BAD)), "-o", str(out))
    assert r.exit_code == 1 and "2 problems" in r.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_keys_gen(tmp_path: Path) -> None:
    r = invoke("keys", "gen", "--out", str(tmp_path / "k"), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    key, pub = Path(doc["key"]), Path(doc["pub"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and pub.exists()
    assert list(load_trusted_keys([pub]))[0].hex() == doc["key_id"]
    assert load_signing_key(key).verify_key.encode().hex() in pub.read_text()
    again = invoke("keys", "gen", "--out", str(tmp_path / "k"))
    assert again.exit_code == 1 and "already exist" in again.output


# --- against a live edged ----------------------------------------------------------------------


def test_push_list_show_diff(
    edged: Edged, run_dir: Path, write: Callable[[str, str], Path]
) -> None:
    a, b = write("a.yaml", RULES_A), write("b.yaml", RULES_B)
    r = invoke("rules", "push", str(a), "--json", run_dir=run_dir)
    assert r.exit_code == 0, r.output
    pushed = json.loads(r.output)
    assert pushed["rules"] == 3

    listed = json.loads(invoke("rules", "list", "--json", run_dir=run_dir).output)
    assert listed["active"] == pushed["version"]
    assert [x["rule_id"] for x in listed["rules"]] == ["cpu_hot", "press", "old"]
    r = invoke("rules", "list", run_dir=run_dir)
    assert r.exit_code == 0 and "press" in r.output

    shown = json.loads(invoke("rules", "show", "press", "--json", run_dir=run_dir).output)
    assert shown["condition"] == 'avg(pressure{line="3"}, 5s) > 7.5 and not absent(valve, 2s)'
    assert shown["action"] == "open_valve" and shown["table_version"] == pushed["version"]
    r = invoke("rules", "show", "press", run_dir=run_dir)
    assert r.exit_code == 0 and "condition (canonical)" in r.output and "open_valve" in r.output
    r = invoke("rules", "show", "nope", run_dir=run_dir)
    assert r.exit_code == 1 and "no rule 'nope'" in r.output and "cpu_hot" in r.output

    same = invoke("rules", "diff", str(a), run_dir=run_dir)
    assert same.exit_code == 0 and "no differences" in same.output
    assert json.loads(invoke("rules", "diff", str(a), "--json", run_dir=run_dir).output)["same"]

    differs = invoke("rules", "diff", str(b), "--json", run_dir=run_dir)
    assert differs.exit_code == 1  # like diff(1): 1 when there are differences
    d = json.loads(differs.output)
    assert d["active"] == pushed["version"] and not d["same"]
    assert d["added"] == [{"rule_id": "new", "condition": "rate(flow, 10s) < -1"}]
    assert d["removed"] == [{"rule_id": "old", "condition": "temp > 80"}]
    changed = {c["rule_id"]: c["fields"] for c in d["changed"]}
    assert changed["cpu_hot"] == {"priority": [8, 9]}
    assert changed["press"]["condition"] == [
        'avg(pressure{line="3"}, 5s) > 7.5 and not absent(valve, 2s)',
        'max(pressure{line="3"}, 5s) >= 8 and not absent(valve, 2s)',
    ]
    r = invoke("rules", "diff", str(b), run_dir=run_dir)
    text = r.output
    assert r.exit_code == 1
    assert "+ new: rate(flow, 10s) < -1" in text and "- old: temp > 80" in text
    assert "~ cpu_hot" in text and "priority: 8 -> 9" in text


def test_push_compiled_and_signed_tables(
    edged: Edged,
    run_dir: Path,
    write: Callable[[str, str], Path],
    tmp_path: Path,
    keypair: tuple[Path, Path],
) -> None:
    src = write("a.yaml", RULES_A)
    plain, signed = tmp_path / "t.bin", tmp_path / "s.bin"
    assert invoke("rules", "compile", str(src), "-o", str(plain)).exit_code == 0
    signing = invoke("rules", "compile", str(src), "-o", str(signed), "--sign", str(keypair[0]))
    assert signing.exit_code == 0, signing.output
    before = edged.loop.table.version
    r = invoke("rules", "push", str(plain), "--json", run_dir=run_dir)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["version"] == edged.loop.table.version > before

    # this edged trusts no key: a signed table is refused, and says which key to trust
    active = edged.loop.table.version
    r = invoke("rules", "push", str(signed), run_dir=run_dir)
    assert r.exit_code == 4 and "not trusted" in r.output
    assert edged.loop.table.version == active
    r = invoke("rules", "push", str(src), "--sign", str(keypair[0]), run_dir=run_dir)
    assert r.exit_code == 4 and "not trusted" in r.output
    r = invoke("rules", "push", str(signed), "--sign", str(keypair[0]), run_dir=run_dir)
    assert r.exit_code == 2 and "signed already" in r.output


# --- rollback: the client side, against a stand-in handler -------------------------------------


@pytest.fixture
def ctl_stub(run_dir: Path) -> Iterator[dict[CtlOp, Any]]:
    """A real ctl server on run_dir/ctl.sock whose handlers the test supplies."""
    handlers: dict[CtlOp, Any] = {}
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    server = CtlServer(ctx, run_dir, handlers, tick_ms=20)
    server.start()
    try:
        yield handlers
    finally:
        server.stop()
        ctx.term()


def test_rollback_sends_its_op_and_shows_the_reply(
    ctl_stub: dict[CtlOp, Any], run_dir: Path
) -> None:
    calls: list[tuple[dict[str, Any], bytes]] = []

    def rollback(args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        calls.append((args, blob))
        return {"version": 3, "previous": 5}

    ctl_stub[CtlOp.RULES_ROLLBACK] = rollback
    r = invoke("rules", "rollback", run_dir=run_dir)
    assert r.exit_code == 0, r.output
    assert "rule table version 3 active (previous 5)" in r.output
    assert json.loads(invoke("rules", "rollback", "--json", run_dir=run_dir).output) == {
        "version": 3,
        "previous": 5,
    }
    assert calls == [({}, b""), ({}, b"")]


def test_rollback_refused(ctl_stub: dict[CtlOp, Any], run_dir: Path) -> None:
    def refuse(args: dict[str, Any], blob: bytes) -> dict[str, Any]:
        raise RefusedError("no last-known-good rule table to roll back to")

    ctl_stub[CtlOp.RULES_ROLLBACK] = refuse
    r = invoke("rules", "rollback", run_dir=run_dir)
    assert r.exit_code == 4 and "no last-known-good" in r.output


def test_show_and_list_use_the_condition_edged_reports(
    ctl_stub: dict[CtlOp, Any], run_dir: Path
) -> None:
    rule = {
        "rule_id": "r",
        "rule_name": "",
        "rule_content": "x>1",
        "condition": "x > 1",
        "action": "alert",
        "priority": 1,
        "sla_threshold": 5.0,
        "agents": [],
        "params": {"rate": 0.5},
        "cooldown_ns": 1_500_000_000,
        "escalate": "",
    }
    ctl_stub[CtlOp.RULES_LIST] = lambda args, blob: {
        "active": 7,
        "lkg": 6,
        "hash": "00",
        "rules": [rule],
    }
    r = invoke("rules", "show", "r", run_dir=run_dir)
    assert r.exit_code == 0, r.output
    assert "x > 1" in r.output and "rate=0.5" in r.output and "1500ms" in r.output
    assert "x > 1" in invoke("rules", "list", run_dir=run_dir).output


# --- diff_rules --------------------------------------------------------------------------------


def test_diff_rules_compares_what_both_sides_carry() -> None:
    local = [{"rule_id": "a", "condition": "x > 1", "params": {"k": 1.0}, "priority": 1}]
    assert diff_rules(local, [{**local[0], "params": {"k": 2.0}}])["changed"] == [
        {"rule_id": "a", "condition": "x > 1", "fields": {"params": [{"k": 2.0}, {"k": 1.0}]}}
    ]
    older_edged = [{"rule_id": "a", "rule_content": "x>1", "priority": 1}]  # no params, condition
    assert diff_rules(local, older_edged) == {"added": [], "removed": [], "changed": []}
    assert diff_rules(local, [{**older_edged[0], "rule_content": "x >= 1"}])["changed"] == [
        {"rule_id": "a", "condition": "x > 1", "fields": {"condition": ["x >= 1", "x > 1"]}}
    ]


BOARD_RULES = """\
- rule_id: plc_silent
  board: true
  rule_content: absent(cycle{agent="plc-3"}, 2s)
  target: ["cell-*"]
  action: safe_state
  priority: 250
  sla_threshold: 5
- rule_id: hot
  rule_content: temp > 90
  rearm: temp < 80 for 30s
  action: alert
  priority: 5
  sla_threshold: 5
"""


def test_check_show_diff_of_targets_board_rules_and_rearm(
    edged: Edged, run_dir: Path, write: Callable[[str, str], Path]
) -> None:
    a = write("board.yaml", BOARD_RULES)
    r = invoke("rules", "check", str(a))
    assert r.exit_code == 0 and "rules OK" in r.output
    bad = write("bad.yaml", BOARD_RULES.replace('  target: ["cell-*"]\n', ""))
    r = invoke("rules", "check", str(bad))
    assert (
        r.exit_code == 1
        and "bad.yaml:2:10" in r.output
        and "needs a target" in " ".join(r.output.split())
    )
    assert invoke("rules", "push", str(a), run_dir=run_dir).exit_code == 0
    shown = json.loads(invoke("rules", "show", "plc_silent", "--json", run_dir=run_dir).output)
    assert (shown["board"], shown["target"], shown["rearm"]) == (True, ["cell-*"], "")
    shown = json.loads(invoke("rules", "show", "hot", "--json", run_dir=run_dir).output)
    assert shown["rearm"] == "temp < 80 for 30s" and shown["target"] == []
    r = invoke("rules", "show", "hot", run_dir=run_dir)
    assert "the agent that fired" in r.output and "temp < 80 for 30s" in r.output
    b = write("b.yaml", BOARD_RULES.replace('["cell-*"]', "[vcu]").replace("80 for", "75 for"))
    d = json.loads(invoke("rules", "diff", str(b), "--json", run_dir=run_dir).output)
    changed = {c["rule_id"]: c["fields"] for c in d["changed"]}
    assert changed == {
        "plc_silent": {"target": [["cell-*"], ["vcu"]]},
        "hot": {"rearm": ["temp < 80 for 30s", "temp < 75 for 30s"]},
    }
