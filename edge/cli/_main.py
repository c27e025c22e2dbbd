"""edgectl: the operator's tool. Every read command takes --json."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..config import EdgeConfig, load_config
from ..errors import ConfigError, CtlRefused, EdgeError, NotRunningError
from ..rules import RuleFileError
from ..wire import CtlOp
from ._client import CtlClient

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]edgectl:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table (errors too)."
)
"""The ``--json`` flag of every read command."""


def _fail_json(kind: str, message: str, code: int) -> None:
    """With --json an error is a JSON object on stdout too, so a script parses every outcome;
    the exit code is the one the text form has."""
    _emit_json({"ok": False, "error": kind, "message": message, "exit_code": code})
    sys.exit(code)


def handles_errors(fn: F) -> F:
    """Turn our errors into one clear line and an exit code; never a traceback. With
    ``--json`` the line is a JSON object (``ok``, ``error``, ``message``, ``exit_code``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except NotRunningError as exc:
            if as_json:
                _fail_json("not_running", str(exc), 3)
            _fail(str(exc), 3)
        except CtlRefused as exc:
            if as_json:
                _fail_json("refused", f"edged refused: {exc}", 4)
            _fail(f"edged refused: {exc}", 4)
        except RuleFileError as exc:
            # soft_wrap: a caret must stay under its column however narrow the terminal
            err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
            outcome = "; nothing was pushed" if fn.__name__ == "rules_push" else ""
            _fail(problems_text(len(exc.problems)) + outcome, 1)
        except (ConfigError, EdgeError) as exc:
            if as_json:
                _fail_json(type(exc).__name__, str(exc), 1)
            _fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


class Ctx:
    def __init__(self, run_dir: Path, timeout: float, config: EdgeConfig | None = None):
        self.run_dir = run_dir
        self.timeout = timeout
        self.config = config
        """The loaded configuration (--config, EDGE_*, defaults), for commands that need more
        than the run directory."""

    def request(
        self, op: CtlOp, args: dict[str, Any] | None = None, blob: bytes = b""
    ) -> dict[str, Any]:
        with CtlClient(self.run_dir, self.timeout) as client:
            return client.request(op, args, blob)


def problems_text(n: int) -> str:
    """``1 problem`` / ``N problems``."""
    return f"{n} problem{'' if n == 1 else 's'}"


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class HelpGroup(click.Group):
    """A group whose command list shows each command's whole first sentence, wrapped to the
    terminal, instead of cutting it with "..."."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class LazyGroup(HelpGroup):
    """Subcommands that pull in heavy modules (bench, demo; rules and keys: the compiler and
    PyNaCl) are imported when used."""

    lazy = {
        "bench": "edge.cli._bench:bench",
        "demo": "edge.cli._demo:demo",
        "rules": "edge.cli._rules_cmds:rules",
        "keys": "edge.cli._rules_cmds:keys",
        "sync": "edge.cli._sync_cmds:sync",
        "fleet": "edge.cli._fleet:fleet",
        "bridge": "edge.cli._bridge_cmds:bridge",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name].split(":")
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            return cmd
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--run-dir", type=click.Path(file_okay=False, path_type=Path), help="edged's run directory."
)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config."
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for edged.")
@click.version_option(__version__, prog_name="edgectl")
@click.pass_context
@handles_errors
def cli(ctx: click.Context, run_dir: Path | None, config_file: Path | None, timeout: float) -> None:
    """Operate an edge runtime: status, agents, rules, stats, live instructions, benchmarks."""
    cfg = load_config({"run_dir": run_dir}, file=config_file)
    ctx.obj = Ctx(cfg.run_dir, timeout, cfg)


def _overload_row(sched: dict[str, Any], c: dict[str, int]) -> str:
    if not sched.get("enabled"):
        return "scheduler off"
    dropped = (
        f"{c.get('sched_shed', 0)} shed, {c.get('sched_evicted', 0)} evicted, "
        f"{c.get('sched_rejected', 0)} refused batches ({c.get('sched_samples_dropped', 0)} samples)"
    )
    mode = "now scheduling" if sched.get("active") else "not now"
    return f"{mode}; entered {c.get('sched_overloads', 0)}x; {dropped}; queue {sched['queued']}"


def _memory_row(m: dict[str, Any]) -> str:
    if not m:
        return "unknown"
    mb = 1 << 20
    return (
        f"RSS {m['rss_bytes'] / mb:.1f} MiB (peak {m['rss_hwm_bytes'] / mb:.1f}, "
        f"steady {m['steady_bytes'] / mb:.1f}); {m['trims']} trims gave back "
        f"{m['trimmed_bytes'] / mb:.1f} MiB ({m.get('settles', 0)} after a burst settled)"
    )


def _connections_row(c: dict[str, Any] | None) -> str:
    if not c:
        return "no cap (max_connections 0)"
    return f"{c['live']} open of max {c['max']}; {c['refused']} refused"


@cli.command()
@json_option
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=0.0, metavar="SECONDS",
              help="Wait up to SECONDS for edged to answer (it is starting); then as without.")
@click.pass_obj
@handles_errors
def status(obj: Ctx, as_json: bool, wait_s: float) -> None:
    """Is edged up; what it runs; headline counters."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            s = obj.request(CtlOp.STATUS)
            break
        except NotRunningError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)  # polling for another process to come up
    if as_json:
        return _emit_json(s)
    t = Table(title=f"edged on {s['device_id']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    c = s["counters"]
    a = s["agents"]
    rows = [
        ("version / pid", f"{s['version']} / {s['pid']}"),
        ("uptime", f"{s['uptime_s']:.1f} s"),
        ("run dir", s["run_dir"]),
        ("data dir", s["data_dir"]),
        (
            "agents",
            f"{a['active']} active, {a['lost']} lost, {a['gone']} gone, {a['known_offline']} known offline",
        ),
        (
            "rule table",
            f"version {s['rules']['version']}, {s['rules']['rules']} rules, {s['rules']['hash'][:12]}",
        ),
        ("samples / batches", f"{c['samples']} / {c['batches']}"),
        (
            "instructions / acks",
            f"{c['instructions_sent']} / {c['acks']} ({s['inflight']} in flight)",
        ),
        (
            "refused input",
            str(sum(v for k, v in c.items() if k.startswith("bad_") or k == "duplicate_agent")),
        ),
        ("overload", _overload_row(s.get("scheduler") or {}, c)),
        ("memory", _memory_row(s.get("memory") or {})),
        ("connections", _connections_row(s.get("connections"))),
        (
            "hostile input",
            f"{c.get('acks_foreign', 0)} foreign acks, "
            f"{c.get('bad_foreign_session', 0)} foreign sessions, "
            f"{c.get('agents_forgotten', 0)} agents forgotten",
        ),
        (
            "store",
            f"{s['store'].get('commits', 0)} commits, {s['store'].get('dropped_store_full', 0)} dropped (full)",
        ),
        ("metrics", s["metrics_url"] or "disabled"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def human_duration(ms: float) -> str:
    """``274407`` -> ``4m34s``: short enough for an 80-column table."""
    if ms < 1000:
        return f"{ms:.0f}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def human_count(n: Any) -> str:
    """``1234567`` -> ``1.2M``; small numbers as they are."""
    if not isinstance(n, int):
        return "" if n is None else str(n)
    for above, scale, unit in ((10**9, 10**9, "G"), (10**6, 10**6, "M"), (10**4, 10**3, "k")):
        if abs(n) >= above:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def compact_table(title: str) -> Table:
    """A table for serial consoles: no vertical rules, one space between columns."""
    from rich import box

    return Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True
    )


@cli.command()
@json_option
@click.pass_obj
@handles_errors
def agents(obj: Ctx, as_json: bool) -> None:
    """Connected and known agents."""
    data = obj.request(CtlOp.AGENTS)["agents"]
    if as_json:
        return _emit_json(data)
    t = compact_table("agents")
    # agent ids stay whole (they are copied into other commands); the other columns are short
    t.add_column("agent", no_wrap=True, min_width=max((len(a["agent_id"]) for a in data), default=5))
    t.add_column("state", no_wrap=True)
    kinds = any(a.get("kind") for a in data)
    if kinds:
        t.add_column("kind", overflow="ellipsis", max_width=12, no_wrap=True)
    for col in ("pid", "series", "seen", "samples", "ins/ack", "rules"):
        t.add_column(col, justify="right", no_wrap=True)
    healths = any(a.get("health") for a in data)  # bridged devices report health_* series
    if healths:
        t.add_column("health", overflow="fold")
    colours = {"active": "green", "lost": "yellow", "gone": "dim", "known": "dim"}
    for a in data:
        seen = a.get("last_seen_ms_ago")
        row = [a["agent_id"], f"[{colours.get(a['state'], '')}]{a['state']}[/]"]
        if kinds:
            row.append(a.get("kind", ""))
        instr = a.get("instructions")
        row += [
            str(a.get("pid", "")),
            str(a.get("series", "")),
            "" if seen is None else f"{human_duration(seen)} ago",
            human_count(a.get("samples")),
            "" if instr is None else f"{human_count(instr)}/{human_count(a.get('acks'))}",
            str(a.get("rules_bound", "")),
        ]
        if healths:
            row.append(_health(a.get("health") or {}))
        t.add_row(*row)
    console.print(t)


def _health(h: dict[str, float]) -> str:
    """An agent's health_* series: offline in red, any non-zero counter named."""
    if not h:
        return ""
    parts = [] if h.get("online", 1.0) else ["[red]offline[/]"]
    parts += [f"{k} {v:g}" for k, v in sorted(h.items()) if k != "online" and v]
    return ", ".join(parts) or "[green]ok[/]"


def _fmt_us(v: Any) -> str:
    return "" if v is None else (f"{v:.1f}" if v < 1000 else f"{v:,.0f}")


# a percentile from fewer samples than this says nothing: left blank
_MIN_N = {"p90": 10, "p99": 100, "p999": 1000}
STAGE_LEGEND = (
    "collect: sample taken -> batch sent (agent); trans1: -> edged received; compute: verify, "
    "decode, lookup; rule: evaluate, decide; trans2: -> agent received the instruction; "
    "execute: the agent's handler; e2e: sample -> handler done (the SLA is judged on it); "
    "ack: handler done -> edged received the Ack (not part of e2e). A percentile is blank "
    "below n = 10 (p90), 100 (p99), 1000 (p99.9)."
)


def stage_table(stats: dict[str, Any], title: str = "latency (µs)") -> Table:
    t = compact_table(title)
    for col in ("stage", "n", "p50", "p90", "p99", "p99.9", "max"):
        t.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for stage, s in stats["stages_us"].items():
        n = s.get("count", 0) or 0
        pct = [
            _fmt_us(s.get(k)) if n >= _MIN_N.get(k, 1) else "" for k in ("p50", "p90", "p99", "p999")
        ]
        t.add_row(stage, human_count(n), *pct, _fmt_us(s.get("max")))
    return t


def rules_sla_table(stats: dict[str, Any], rule_ids: Sequence[str] = ()) -> Table:
    """Outcomes per rule; ``rule_ids``: rules of the table that fired nothing, shown too."""
    t = compact_table("rules")
    for col in ("rule", "ok", "failed", "rejected", "timeout", "undeliv.", "SLA met"):
        t.add_column(col, justify="left" if col == "rule" else "right", no_wrap=col != "rule")
    for rid in rule_ids:
        if rid not in stats["rules"]:
            t.add_row(rid, "0", "0", "0", "0", "0", "did not fire", style="dim")
    for rid, r in stats["rules"].items():
        rate = r["sla_rate"]
        t.add_row(
            rid,
            str(r["ok"]),
            str(r["failed"]),
            str(r["rejected"]),
            str(r["timeout"]),
            str(r["undeliverable"]),
            "" if rate is None else f"{rate * 100:.3f} %",
        )
    return t


@cli.command()
@json_option
@click.option("--reset", is_flag=True,
              help="After reading, count stats and status from zero again (this view only: "
              "Prometheus and the upstream aggregates keep counting).")
@click.pass_obj
@handles_errors
def stats(obj: Ctx, as_json: bool, reset: bool) -> None:
    """Per-stage latency percentiles, SLA attainment per rule, jitter, counters."""
    s = obj.request(CtlOp.STATS)
    if reset:
        obj.request(CtlOp.STATS_RESET)
    if as_json:
        return _emit_json(s)
    console.print(stage_table(s))
    console.print(STAGE_LEGEND, style="dim", highlight=False)
    table_rules = [r["rule_id"] for r in obj.request(CtlOp.RULES_LIST)["rules"]]
    console.print(rules_sla_table(s, table_rules))
    jitter = s["jitter_pct"]
    sla = s["sla_rate"]
    console.print(
        f"jitter (MAD/mean): {'n/a' if jitter is None else f'{jitter:.2f} %'}   "
        f"SLA attainment: {'n/a' if sla is None else f'{sla * 100:.3f} %'} "
        f"({s['sla_met']}/{s['sla_judged']})"
    )
    nz = {k: v for k, v in s["counters"].items() if v}
    console.print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(nz.items())))


def _tail_line(e: dict[str, Any]) -> str:
    ts = time.strftime("%H:%M:%S", time.localtime(e["wall_ms"] / 1000))
    iid = f"#{e['instruction_id']}" if e.get("instruction_id") else ""
    who = " ".join(x for x in (e["agent_id"], e["rule_id"], iid) if x)
    return f"{ts}.{e['wall_ms'] % 1000:03d} {e['kind']:<12} {who} {e['detail']}".rstrip()


def _wait_for_edged(client: CtlClient, interval: float) -> int:
    """Poll until an edged answers at the run dir again; its pid."""
    while True:
        try:
            return int(client.request(CtlOp.STATUS)["pid"])
        except NotRunningError:
            client.close()
            time.sleep(interval)  # polling for another process to come up


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (notes on stderr).")
@click.option("--follow/--no-follow", default=True, show_default=True)
@click.option("--interval", default=0.2, show_default=True, help="Seconds between polls.")
@click.option(
    "--history/--no-history", default=False, help="Start with the retained recent events."
)
@click.pass_obj
@handles_errors
def tail(obj: Ctx, as_json: bool, follow: bool, interval: float, history: bool) -> None:
    """Instructions (with the sample that fired them), acks (with their e2e latency) and agent
    events as they happen (Ctrl-C to stop). Follows edged across restarts."""

    def note(text: str) -> None:
        if as_json:  # stdout stays one event per line
            err_console.print(f"edgectl tail: {text}", highlight=False, markup=False,
                              soft_wrap=True)
        else:
            console.print(f"-- {text}", highlight=False, markup=False, style="dim",
                          soft_wrap=True)

    with CtlClient(obj.run_dir, obj.timeout) as client:
        cursor = (
            0 if history else client.request(CtlOp.TAIL, {"after": 0, "from_end": True})["last"]
        )
        try:
            while True:
                try:
                    r = client.request(CtlOp.TAIL, {"after": cursor})
                except NotRunningError as exc:
                    if not follow:
                        raise
                    client.close()
                    note(f"lost edged ({exc}); waiting for it to come back")
                    pid = _wait_for_edged(client, interval)
                    note(f"edged is back (pid {pid}): following its events from its start")
                    cursor = 0
                    continue
                if r.get("newest", cursor) < cursor:  # a new edged numbers events from 1 again
                    note("edged restarted: following its events from its start")
                    cursor = 0
                    continue
                for e in r["events"]:
                    if as_json:
                        click.echo(json.dumps(e, sort_keys=True))
                    else:
                        console.print(_tail_line(e), highlight=False, markup=False)
                cursor = r["last"]
                if not follow:
                    return
                time.sleep(interval)  # polling cadence of a live view, not a wait-for-it
        except KeyboardInterrupt:
            return


def main() -> None:
    cli()
