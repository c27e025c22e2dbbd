"""The operator's command line, detail by detail: JSON errors, help for every option, whole
help lines at 80 columns, edged's help, tail across a restart, instruction ids."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.runtime import Edged

from ..support import wait_for


def _commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        yield f"{ctx.command_path} {name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, click.Context(cmd, info_name=name, parent=ctx))


def test_every_option_of_every_command_has_help() -> None:
    ctx = click.Context(cli, info_name="edgectl")
    missing = [
        f"{path} {opt.opts[0]}"
        for path, cmd in _commands(cli, ctx)
        for opt in cmd.params
        if isinstance(opt, click.Option) and not opt.help and opt.opts[0] != "--follow"
    ]
    assert missing == []


@pytest.mark.parametrize("group", [[], ["rules"], ["fleet"], ["sync"], ["keys"], ["bridge"]])
def test_group_help_never_cuts_a_sentence(group: list[str]) -> None:
    r = CliRunner().invoke(cli, [*group, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert r.exit_code == 0
    commands = r.output.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands
    assert max(len(line) for line in r.output.splitlines()) <= 80


def test_json_commands_print_a_json_error_when_edged_is_down(run_dir: Path) -> None:
    for cmd in (["status"], ["agents"], ["stats"], ["rules", "list"]):
        r = CliRunner().invoke(cli, ["--run-dir", str(run_dir), *cmd, "--json"])
        assert r.exit_code == 3, cmd
        doc = json.loads(r.stdout)
        assert doc["ok"] is False and doc["error"] == "not_running" and doc["exit_code"] == 3
        assert "edged is not running" in doc["message"]


def _help(*argv: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", argv[0], "--help"], capture_output=True, text=True, check=True
    ).stdout


def test_edged_help_lists_exit_codes_and_log_levels_match_edge_sync() -> None:
    edged = _help("from edge.runtime import main; main()")
    sync = _help("from edge.sync._main import main; main()")
    bridge = _help("from firmware_bridge import main; main()")
    assert "exit codes: 0 stopped cleanly" in edged and "3 another edged" in edged.replace("\n", " ")
    for text in (edged, sync, bridge):
        assert "--log-level LEVEL" in text and "debug, info, warning or error" in text


def test_instruction_ids_are_unique_across_restarts(
    make_cfg: Callable[..., Any], agent_factory: Callable[..., Any]
) -> None:
    cfg = make_cfg()
    ids = []
    for _ in range(2):
        with Edged(cfg):
            got: list[Any] = []
            with agent_factory("ids-1", ["cpu_usage"], handler=got.append) as agent:
                agent.report("cpu_usage", 0.99)
                wait_for(lambda got=got: got, what="an instruction")
            ids.append(got[0].instruction_id)
    assert ids[0] < ids[1] and ids[1] // 10**12 == ids[0] // 10**12 + 1


class _Lines:
    """A child's stdout and stderr, line by line, read with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc = proc
        self.sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        for name, f in (("out", proc.stdout), ("err", proc.stderr)):
            os.set_blocking(f.fileno(), False)
            self.sel.register(f, selectors.EVENT_READ, name)
        self.buf = {"out": b"", "err": b""}

    def until(self, stream: str, words: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while words not in self.buf[stream].decode():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {words!r} in {self.buf}")
            for key, _ in self.sel.select(left):
                self.buf[key.data] += key.fileobj.read() or b""  # type: ignore[union-attr]
        return self.buf[stream].decode()

    def close(self) -> None:
        self.sel.close()


def test_tail_follows_edged_across_a_restart_and_shows_trigger_and_latency(
    make_cfg: Callable[..., Any], agent_factory: Callable[..., Any]
) -> None:
    cfg = make_cfg()
    d = Edged(cfg).start()
    tail = subprocess.Popen(
        [sys.executable, "-c", "from edge.cli import main; main()", "--run-dir", str(cfg.run_dir),
         "tail", "--json", "--history", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = _Lines(tail)
    try:
        got: list[Any] = []
        with agent_factory("tail-1", ["cpu_usage"], handler=got.append) as agent:
            agent.report("cpu_usage", 0.99)
            out = lines.until("out", '"kind": "ack"')
        events = [json.loads(x) for x in out.splitlines()]
        ins = next(e for e in events if e["kind"] == "instruction")
        ack = next(e for e in events if e["kind"] == "ack")
        assert "cpu_usage = 0.99" in ins["detail"] and "e2e" in ack["detail"]
        d.close()
        lines.until("err", "waiting for it to come back")
        d = Edged(cfg).start()
        lines.until("err", "edged is back")
        assert tail.poll() is None
        with agent_factory("tail-1", ["cpu_usage"], handler=got.append) as agent:
            agent.report("cpu_usage", 0.99)
            out = lines.until("out", str(2 * 10**12 + 1))
    finally:
        tail.terminate()
        tail.wait(10)
        lines.close()
        tail.stdout.close()  # type: ignore[union-attr]
        tail.stderr.close()  # type: ignore[union-attr]
        d.close()



@pytest.mark.parametrize(
    ("ms", "text"),
    [(412, "412ms"), (1500, "1.5s"), (42_000, "42s"), (274_407, "4m34s"), (7_380_000, "2h03m"),
     (90_000_000, "1d01h")],
)
def test_durations_read_like_a_person_writes_them(ms: float, text: str) -> None:
    from edge.cli._main import human_duration

    assert human_duration(ms) == text


def test_agents_and_stats_fit_a_serial_console(
    edged: Edged, agent_factory: Callable[..., Any]
) -> None:
    got: list[Any] = []
    with agent_factory("perception-long-name-1", ["cpu_usage"], handler=got.append) as agent:
        agent.report("cpu_usage", 0.99)
        wait_for(lambda: got, what="an instruction")
        for cmd in (["agents"], ["stats"]):
            r = CliRunner().invoke(
                cli, ["--run-dir", str(edged.cfg.run_dir), *cmd], terminal_width=80,
                env={"COLUMNS": "80"},
            )
            assert r.exit_code == 0, r.output
            lines = r.output.splitlines()
            assert max(len(x) for x in lines) <= 80
            if cmd == ["agents"]:
                rows = [x for x in lines if "perception-long-name-1" in x]
                assert len(rows) == 1, r.output  # one line, the id whole
                row = rows[0]
                assert re.search(r"\d+(ms|\.\ds|s) ago", row) and "1/1" in row


def test_status_wait_waits_for_a_starting_edged(make_cfg: Callable[..., Any]) -> None:
    import threading

    cfg = make_cfg()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(CliRunner().invoke(
        cli, ["--run-dir", str(cfg.run_dir), "status", "--wait", "20", "--json"])))
    t.start()
    d = Edged(cfg).start()
    try:
        t.join(30)
    finally:
        d.close()
    assert result and result[0].exit_code == 0, result
    assert json.loads(result[0].stdout)["pid"] == os.getpid()
    r = CliRunner().invoke(cli, ["--run-dir", str(cfg.run_dir), "status", "--wait", "0.2"])
    assert r.exit_code == 3  # and gives up after the wait
