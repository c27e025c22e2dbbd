"""edgectl: the operator's tool. Every read command takes --json."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
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


def handles_errors(fn: F) -> F:
    """Turn our errors into one clear line and an exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotRunningError as exc:
            _fail(str(exc), 3)
        except RuleFileError as exc:
            # soft_wrap: a caret must stay under its column however narrow the terminal
            err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
            outcome = "; nothing was pushed" if fn.__name__ == "rules_push" else ""
            _fail(f"{len(exc.problems)} problem(s){outcome}", 1)
        except CtlRefused as exc:
            _fail(f"edged refused: {exc}", 4)
        except (ConfigError, EdgeError) as exc:
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


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class LazyGroup(click.Group):
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
        f"{m['trimmed_bytes'] / mb:.1f} MiB"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handles_errors
def status(obj: Ctx, as_json: bool) -> None:
    """Is edged up; what it runs; headline counters."""
    s = obj.request(CtlOp.STATUS)
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


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handles_errors
def agents(obj: Ctx, as_json: bool) -> None:
    """Connected and known agents."""
    data = obj.request(CtlOp.AGENTS)["agents"]
    if as_json:
        return _emit_json(data)
    t = Table(title="agents")
    for col in (
        "agent",
        "state",
        "kind",
        "pid",
        "series",
        "last seen",
        "samples",
        "instr",
        "acks",
        "rules",
        "health",
    ):
        # agent ids stay whole (they are copied into other commands); the rest may fold
        t.add_column(
            col,
            justify="right" if col not in ("agent", "state", "kind") else "left",
            no_wrap=col == "agent",
            overflow="fold",
        )
    colours = {"active": "green", "lost": "yellow", "gone": "dim", "known": "dim"}
    for a in data:
        seen = a.get("last_seen_ms_ago")
        t.add_row(
            a["agent_id"],
            f"[{colours.get(a['state'], '')}]{a['state']}[/]",
            a.get("kind", ""),
            str(a.get("pid", "")),
            str(a.get("series", "")),
            "" if seen is None else f"{seen:.0f} ms ago",
            str(a.get("samples", "")),
            str(a.get("instructions", "")),
            str(a.get("acks", "")),
            str(a.get("rules_bound", "")),
            _health(a.get("health") or {}),
        )
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


def stage_table(stats: dict[str, Any], title: str = "latency (µs)") -> Table:
    t = Table(title=title)
    for col in ("stage", "count", "p50", "p90", "p99", "p99.9", "max"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for stage, s in stats["stages_us"].items():
        t.add_row(
            stage,
            str(s.get("count", 0)),
            _fmt_us(s.get("p50")),
            _fmt_us(s.get("p90")),
            _fmt_us(s.get("p99")),
            _fmt_us(s.get("p999")),
            _fmt_us(s.get("max")),
        )
    return t


def rules_sla_table(stats: dict[str, Any]) -> Table:
    t = Table(title="rules")
    for col in ("rule", "ok", "failed", "rejected", "timeout", "undeliv.", "SLA met"):
        t.add_column(col, justify="left" if col == "rule" else "right")
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
@click.option("--json", "as_json", is_flag=True)
@click.option("--reset", is_flag=True, help="Zero histograms and counters after reading.")
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
    console.print(rules_sla_table(s))
    jitter = s["jitter_pct"]
    sla = s["sla_rate"]
    console.print(
        f"jitter (MAD/mean): {'n/a' if jitter is None else f'{jitter:.2f} %'}   "
        f"SLA attainment: {'n/a' if sla is None else f'{sla * 100:.3f} %'} "
        f"({s['sla_met']}/{s['sla_judged']})"
    )
    nz = {k: v for k, v in s["counters"].items() if v}
    console.print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(nz.items())))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--follow/--no-follow", default=True, show_default=True)
@click.option("--interval", default=0.2, show_default=True, help="Seconds between polls.")
@click.option(
    "--history/--no-history", default=False, help="Start with the retained recent events."
)
@click.pass_obj
@handles_errors
def tail(obj: Ctx, as_json: bool, follow: bool, interval: float, history: bool) -> None:
    """Instructions, acks and agent events as they happen (Ctrl-C to stop)."""
    with CtlClient(obj.run_dir, obj.timeout) as client:
        cursor = (
            0 if history else client.request(CtlOp.TAIL, {"after": 0, "from_end": True})["last"]
        )
        try:
            while True:
                r = client.request(CtlOp.TAIL, {"after": cursor})
                for e in r["events"]:
                    if as_json:
                        click.echo(json.dumps(e, sort_keys=True))
                    else:
                        ts = time.strftime("%H:%M:%S", time.localtime(e["wall_ms"] / 1000))
                        console.print(
                            f"{ts}.{e['wall_ms'] % 1000:03d} [bold]{e['kind']:<16}[/] "
                            f"{e['agent_id']:<20} {e['rule_id']:<16} "
                            f"{e['instruction_id'] or '':>8} {e['detail']}",
                            highlight=False,
                        )
                cursor = r["last"]
                if not follow:
                    return
                time.sleep(interval)  # polling cadence of a live view, not a wait-for-it
        except KeyboardInterrupt:
            return


def main() -> None:
    cli()
