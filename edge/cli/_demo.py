"""``edgectl demo``: edged and five simulated agents, watched live for a fixed duration.

edged runs as a child process with ``examples/demo_rules.yaml``; the agents run in a second
child process (``python -m edge.cli._sim fleet``): perception-1, planner-1, can-gateway,
plc-line-3 (a drive that overheats until throttled) and llm-assistant-2, whose CPU runs away
until a held-for rule restarts it, and which runs away again some seconds later.

The view reads edged over ctl.sock only (AGENTS, TAIL, STATS), four times a second, plus the
fleet's own status lines (the simulated CPU and temperature, restarts). On a terminal it is a
rich Live view; otherwise (CI, ``| cat``) plain lines: each firing and Ack as it happens and a
progress line every two seconds.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..errors import EdgeError, RuntimeStateError
from ._demo_upstream import AGG_WINDOW_S as DEMO_AGG_WINDOW_S
from ._demo_upstream import DEVICE_ID as DEMO_DEVICE
from ._demo_upstream import DemoUpstream
from ._main import STAGE_LEGEND, problems_text, rules_sla_table, stage_table

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "examples" / "demo_rules.yaml"
DEVICE_EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bridge"
_SHOWN = {"instruction", "ack", "undeliverable", "ack_timeout", "agent_registered", "agent_gone",
          "agent_lost", "agent_recovered", "bad_input", "rules_activated"}
_REFRESH_S = 0.25
_PLAIN_EVERY_S = 2.0


class DemoView:
    """What the demo knows at any moment, and how to draw it."""

    def __init__(self, duration: float, start_wall_ms: int):
        self.duration = duration
        self.t0 = time.monotonic()
        self.start_wall_ms = start_wall_ms
        self.cursor = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=10)
        self.agents: list[dict[str, Any]] = []
        self.sim: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, Any] | None = None
        self.seen_aggs: set[Any] = set()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def update(self, ctl: Any, fleet: Any) -> list[dict[str, Any]]:
        """One refresh; returns the new events worth showing."""
        from ..wire import CtlOp

        for msg in fleet.events():
            if msg.get("event") == "status":
                self.sim = {a["agent_id"]: a for a in msg["agents"]}
            elif msg.get("event") == "error":
                raise RuntimeStateError(f"the simulated agents failed: {msg.get('message')}")
        self.agents = ctl.request(CtlOp.AGENTS)["agents"]
        tail = ctl.request(CtlOp.TAIL, {"after": self.cursor})
        self.cursor = tail["last"]
        fresh = [e for e in tail["events"] if e["kind"] in _SHOWN]
        self.recent.extend(fresh)
        self.stats = ctl.request(CtlOp.STATS)
        return fresh

    def event_line(self, e: dict[str, Any]) -> str:
        t = (e["wall_ms"] - self.start_wall_ms) / 1000.0
        kind = e["kind"]
        if kind == "instruction":
            what = (f"instruction #{e['instruction_id']} {e['detail']} -> {e['agent_id']} "
                    f"({e['rule_id']})")
        elif kind == "ack":
            what = f"ack #{e['instruction_id']} from {e['agent_id']}: {e['detail']}"
        elif kind == "aggregate":
            what = f"upstream: {e['detail']}"
        else:
            who = " ".join(x for x in (e["agent_id"], e["rule_id"]) if x)
            what = f"{kind.replace('_', ' ')} {who} {e['detail']}".rstrip()
        return f"[{t:5.1f}s] {what}"

    def aggregates_arrived(self, up: DemoUpstream) -> list[dict[str, Any]]:
        """Aggregates that reached EDGE_AGG since the last call, as events of their own."""
        fresh = []
        for a in up.aggregates():
            seq = a.get("seq")
            if seq is None or seq in self.seen_aggs:
                continue
            self.seen_aggs.add(seq)
            agg = a.get("aggregate") or {}
            fired = sum(r.get("instructions", 0) for r in agg.get("rules", []))
            fresh.append({
                "wall_ms": int(time.time() * 1000), "kind": "aggregate", "agent_id": "",
                "rule_id": "", "instruction_id": 0,
                "detail": f"aggregate Edge-Seq {seq} arrived in EDGE_AGG: "
                          f"{agg.get('samples', 0):,} samples, {fired} instructions, "
                          f"{len(agg.get('series', []))} series",
            })
        self.recent.extend(fresh)
        return fresh

    def counters(self) -> dict[str, int]:
        return dict((self.stats or {}).get("counters", {}))

    def progress_line(self) -> str:
        c = self.counters()
        active = sum(1 for a in self.agents if a.get("state") == "active")
        e2e = (self.stats or {}).get("e2e_us", {})
        p99 = f"{e2e['p99']:,.0f} µs" if e2e.get("p99") is not None else "n/a"
        return (f"[{self.elapsed:5.1f}s] agents {active} active | "
                f"samples {c.get('samples', 0):,} | instructions {c.get('instructions_sent', 0)} | "
                f"acks {c.get('acks', 0)} | e2e p99 {p99}")

    def _agents_table(self) -> Table:
        t = Table(title="agents", title_justify="left", expand=False)
        for col in ("agent", "kind", "edged", "simulated", "reading"):
            t.add_column(col)
        for col in ("samples", "instr", "acks", "restarts"):
            t.add_column(col, justify="right")
        by_id = {a["agent_id"]: a for a in self.agents}
        colours = {"active": "green", "lost": "yellow", "gone": "dim"}
        for agent_id in sorted(set(by_id) | set(self.sim)):
            a, s = by_id.get(agent_id, {}), self.sim.get(agent_id, {})
            state = a.get("state", "-")
            v = s.get("values", {})
            if "temperature_c" in v:
                reading = f"{v['temperature_c']:.1f} °C"
            elif "cpu_usage" in v:
                reading = f"cpu {v['cpu_usage']:.2f}"
            else:
                reading = ""
            sim_state = s.get("state", "")
            style = "bold red" if sim_state in ("running away", "restarting") else (
                "yellow" if sim_state.startswith(("throttled", "climbing")) else "")
            t.add_row(agent_id, a.get("kind") or s.get("kind", ""),
                      Text(state, style=colours.get(state, "")), Text(sim_state, style=style),
                      reading, f"{a.get('samples', 0):,}", str(a.get("instructions", 0)),
                      str(a.get("acks", 0)), str(s.get("restarts", 0)))
        return t

    def _events_table(self) -> Table:
        t = Table(title="recent instructions and agent events (TAIL)", title_justify="left",
                  show_header=False, expand=False)
        t.add_column("event")
        for e in self.recent:
            style = {"instruction": "bold", "ack": "green", "undeliverable": "red",
                     "ack_timeout": "red", "bad_input": "red",
                     "aggregate": "cyan"}.get(e["kind"], "dim")
            t.add_row(Text(self.event_line(e), style=style))
        if not self.recent:
            t.add_row(Text("(nothing yet)", style="dim"))
        return t

    def render(self) -> Group:
        left = max(0.0, self.duration - self.elapsed)
        head = Text.assemble(("edge runtime demo", "bold"),
                             f"  {self.elapsed:4.1f} s elapsed, {left:4.1f} s left   ",
                             (self.progress_line().split("] ", 1)[1], "dim"))
        parts: list[Any] = [head, self._agents_table(), self._events_table()]
        if self.stats is not None:
            parts.append(stage_table(self.stats, title="latency per stage (µs, since start)"))
        return Group(*parts)


def _settle(ctl: Any, fleet: Any, timeout: float = 2.0) -> None:
    """Stop the agents reporting, then wait (bounded) for in-flight instructions to be acked,
    so the summary counts every instruction's outcome."""
    from ..wire import CtlOp

    fleet.send("hold")
    fleet.expect("held", timeout=5.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ctl.request(CtlOp.STATUS).get("inflight", 0):
        time.sleep(0.05)  # waiting for Acks already on their way


def _push_through_fleet(console: Console, up: DemoUpstream, ctl: Any, rules_file: Path) -> None:
    """Push the demo's rules as a signed table through EDGE_RULES and wait for the board."""
    from ..wire import CtlOp

    pushed = up.push(rules_file)
    version = int(pushed["version"])
    console.print(f"[dim]demo: edgectl fleet push {rules_file.name} --device {DEMO_DEVICE} "
                  f"--key {up.secret.name}: table version {version} signed and put in "
                  f"EDGE_RULES as {pushed.get('key', 'device.' + DEMO_DEVICE)}[/]")
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if ctl.request(CtlOp.RULES_LIST).get("active") == version:
            console.print(f"[green]demo: the board verified (Ed25519, scope, expiry, newer) "
                          f"and activated rule table version {version} from upstream[/]")
            return
        time.sleep(0.1)  # waiting for edge-sync's watch and edged's activation
    raise RuntimeStateError(f"the pushed table {version} was not activated within 20 s; "
                            f"edge-sync status: {up.sync_status()}")


def _upstream_summary(console: Console, up: DemoUpstream) -> None:
    """Aggregates in EDGE_AGG and the board's EDGE_DEVICES document, read like an operator."""
    deadline = time.monotonic() + 10.0
    aggs = up.aggregates()
    while not aggs and time.monotonic() < deadline:
        time.sleep(0.5)  # the first window may still be on its way
        aggs = up.aggregates()
    console.rule("upstream (NATS JetStream)")
    seqs = [int(a["seq"]) for a in aggs if a.get("seq") is not None]
    in_order = len(seqs) == len(aggs) and seqs == sorted(set(seqs))
    console.print(f"{len(aggs)} aggregates of {DEMO_DEVICE} in stream EDGE_AGG "
                  f"(Edge-Seq {min(seqs, default=0)}..{max(seqs, default=0)}, "
                  f"{'in order, no duplicates' if in_order else 'OUT OF ORDER'})")
    if aggs:
        last = aggs[-1].get("aggregate") or {}
        e2e = next((x for x in last.get("latency", []) if x["stage"] == "e2e"), None)
        p99 = "-" if e2e is None else f"{e2e['p99_us']:,.0f} µs"
        fired = sum(r["instructions"] for r in last.get("rules", []))
        console.print(f"last window: {last.get('samples', 0):,} samples, {fired} instructions, "
                      f"{len(last.get('series', []))} series, e2e p99 {p99}, "
                      f"rule table v{last.get('rules_version')}")
    for d in up.fleet_status():
        edged = d.get("edged") or {}
        outbox = d.get("outbox") or {}
        published = (d.get("last_publish") or {}).get("published", 0)
        console.print(f"EDGE_DEVICES/{d.get('device_id')}: link {d.get('link', {}).get('state')}, "
                      f"rule table v{edged.get('rules_version', '?')}, "
                      f"{published} published, outbox depth {outbox.get('depth', '?')}, "
                      f"dropped {outbox.get('dropped', 0)}")


def _with_device_rules(rules_file: Path, root: Path) -> Path:
    """The demo's rules plus examples/bridge/rules.yaml, as one file in the rig."""
    import yaml

    base = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
    rules = base["rules"] if isinstance(base, dict) else base
    extra = yaml.safe_load((DEVICE_EXAMPLES / "rules.yaml").read_text(encoding="utf-8"))
    merged = root / "demo-rules-with-devices.yaml"
    merged.write_text(yaml.safe_dump({"actions": ["set_speed"], "rules": [*rules, *extra]},
                                     sort_keys=False), encoding="utf-8")
    return merged


def _start_devices(rig: Any) -> Any:
    """The bridge and its simulated devices: ``python -m firmware_bridge.demo``."""
    import sys as _sys

    from ._sim import Child

    child = Child("devices", [_sys.executable, "-m", "firmware_bridge.demo", "--run-dir",
                              str(rig.run_dir), "--root", str(rig.root)],
                  rig.root / "devices.log", cwd=rig.root)
    rig._sims.append(child)  # stopped with the agents, before edged
    return child


def _devices_summary(console: Console, child: Any) -> None:
    last = None
    for msg in child.events():
        if msg.get("event") == "status":
            last = msg
    if last is None:
        return
    console.rule("bridged devices")
    for d in last["devices"]:
        c, h = d["counters"], d["health"]
        console.print(f"{d['name']}: {c['readings']:,} readings, {c['instructions']} "
                      f"instructions, {c['confirmed']} confirmed by the device, {c['failed']} "
                      f"failed, {c['rejected']} rejected; online {h['health_online']:g}, "
                      f"timeouts {h['health_timeouts']:g}")
    console.print(f"plant: {last['plant']}", style="dim")


def _summary(console: Console, view: DemoView, duration: float, edged_exit: int | None,
             rule_ids: Sequence[str] = ()) -> None:
    stats = view.stats or {}
    c = view.counters()
    console.rule("demo summary")
    console.print(f"ran {duration:g} s with {len(view.sim) or len(view.agents)} simulated agents; "
                  f"{c.get('samples', 0):,} samples in {c.get('batches', 0):,} batches")
    console.print(f"instructions issued: {c.get('instructions_sent', 0)}   "
                  f"acknowledged: {c.get('acks', 0)} (ok {c.get('acks_ok', 0)}, failed "
                  f"{c.get('acks_failed', 0)}, rejected {c.get('acks_rejected', 0)}, "
                  f"timed out {c.get('ack_timeouts', 0)})")
    fired = {rid: r.get("ok", 0) + r.get("failed", 0) + r.get("rejected", 0) + r.get("timeout", 0)
             + r.get("undeliverable", 0) for rid, r in stats.get("rules", {}).items()}
    quiet = [rid for rid in rule_ids if not fired.get(rid)]
    if fired or quiet:
        console.print("by rule: " + ", ".join(
            [f"{rid} {n}" for rid, n in sorted(fired.items())]
            + [f"{rid} 0 (did not fire in {duration:g} s)" for rid in quiet]))
    handled = [f"{aid}: " + ", ".join(f"{act} x{n}" for act, n in sorted(s["handled"].items()))
               for aid, s in sorted(view.sim.items()) if s.get("handled")]
    if handled:
        console.print("executed by agents: " + "; ".join(handled))
    restarts = {aid: s["restarts"] for aid, s in view.sim.items() if s.get("restarts")}
    if restarts:
        console.print("restarts: " + ", ".join(f"{a} x{n}" for a, n in sorted(restarts.items())))
    if stats:
        console.print(stage_table(stats, title="latency per stage (µs)"))
        console.print(STAGE_LEGEND, style="dim", highlight=False)
        if stats.get("rules"):
            console.print(rules_sla_table(stats, rule_ids))
        sla, jitter = stats.get("sla_rate"), stats.get("jitter_pct")
        console.print(f"SLA attainment: {'n/a' if sla is None else f'{sla * 100:.3f} %'} "
                      f"({stats.get('sla_met', 0)}/{stats.get('sla_judged', 0)})   "
                      f"jitter (MAD/mean of e2e): {'n/a' if jitter is None else f'{jitter:.1f} %'}")
    console.print("held-for rules fire from edged's timer: their e2e starts at the hold deadline; "
                  "they have no collect/trans1 stage, and compute is how late the timer ran.",
                  style="dim")
    if edged_exit == 0:
        console.print("edged stopped cleanly.", style="dim")
    else:
        console.print(f"[red]edged exited with code {edged_exit}[/]")


@click.command()
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds to run.")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Rule file for edged. [default: {DEFAULT_RULES.name} in the repo's examples/]")
@click.option("--live/--plain", default=None,
              help="Live view or plain lines. [default: live on a terminal, plain otherwise]")
@click.option("--devices/--no-devices", default=None,
              help="Also run the firmware bridge with a simulated Modbus PLC and CAN ECU "
                   "(real opendbc DBC) as agents, and rules on their points. "
                   "[default: $DEMO_DEVICES]")
@click.option("--upstream/--no-upstream", default=None,
              help="Also run a local nats-server and edge-sync: push the rule table through "
                   "the fleet path and show aggregates arriving. [default: $DEMO_UPSTREAM]")
def demo(duration: float, rules_file: Path | None, live: bool | None, devices: bool | None,
         upstream: bool | None) -> None:
    """Run edged with simulated agents and show the loop live: firings, Acks, latency, SLA."""
    from ..rules import RuleFileError, load_rule_file
    from ..wire import CtlOp
    from ._client import CtlClient
    from ._sim import Rig, sigterm_as_interrupt

    console = Console(highlight=False)
    if duration <= 0:
        raise click.BadParameter("must be > 0", param_hint="--duration")
    rules_file = rules_file or DEFAULT_RULES
    if not rules_file.exists():
        console.print(f"[bold red]demo:[/] rule file {rules_file} not found; pass --rules FILE "
                      "(the repository's examples/demo_rules.yaml is the default)")
        sys.exit(2)
    try:
        rule_ids = [r.rule_id for r in load_rule_file(rules_file).rules]
        n_rules = len(rule_ids)
    except RuleFileError as exc:
        console.print(str(exc), markup=False)
        console.print(f"[bold red]demo:[/] {rules_file} has {problems_text(len(exc.problems))}")
        sys.exit(1)
    use_live = console.is_terminal if live is None else live
    if devices is None:
        devices = os.environ.get("DEMO_DEVICES", "") not in ("", "0")
    if upstream is None:
        upstream = os.environ.get("DEMO_UPSTREAM", "") not in ("", "0")
    edged_exit: int | None = None
    up: DemoUpstream | None = None
    try:
        with sigterm_as_interrupt(), Rig() as rig:
            console.print(f"[dim]demo: starting edged ({rules_file.name}, {n_rules} rules) "
                          f"in {rig.root}[/]")
            try:
                if upstream:
                    up = DemoUpstream(rig)
                    console.print(f"[dim]demo: nats-server (JetStream) at {up.url}; the board "
                                  f"is {DEMO_DEVICE!r}, trusting {up.public.name}[/]")
                if devices:
                    rules_file = _with_device_rules(rules_file, rig.root)
                    rule_ids = [r.rule_id for r in load_rule_file(rules_file).rules]
                edged = rig.start_edged(rules_file, log_level="WARNING",
                                        config_file=up.config if up else None)
                if up is not None:
                    up.start_sync()
                    console.print("[dim]demo: edge-sync is up: aggregates every "
                                  f"{DEMO_AGG_WINDOW_S:g} s go to stream EDGE_AGG[/]")
            except RuntimeStateError as exc:
                console.print(f"[bold red]demo: edged failed to start:[/] {exc}")
                sys.exit(1)
            fleet = rig.spawn("fleet", "--run-dir", str(rig.run_dir))
            ready = fleet.expect("ready", timeout=30.0)
            console.print(f"[dim]demo: agents connected: {', '.join(ready['agents'])}; "
                          f"running {duration:g} s[/]")
            bridge = None
            if devices:
                bridge = _start_devices(rig)
                ready = bridge.expect("ready", timeout=30.0)
                console.print(f"[dim]demo: edge-bridge devices connected: "
                              f"{', '.join(ready['agents'])} (PLC on Modbus TCP, ECU on CAN with "
                              f"opendbc's tesla_powertrain.dbc)[/]")
            view = DemoView(duration, int(time.time() * 1000))
            with CtlClient(rig.run_dir, timeout=5.0) as ctl:
                if up is not None:
                    _push_through_fleet(console, up, ctl, rules_file)

                next_agg = [time.monotonic() + DEMO_AGG_WINDOW_S]

                def tick() -> list[dict[str, Any]]:
                    if not edged.alive():
                        raise RuntimeStateError(
                            f"edged exited during the demo (code {edged.proc.returncode}); "
                            f"{edged.log_tail()}")
                    fresh = view.update(ctl, fleet)
                    if up is not None and time.monotonic() >= next_agg[0]:
                        # one `edgectl fleet aggregates` a window: each arrival as it lands
                        next_agg[0] = time.monotonic() + DEMO_AGG_WINDOW_S
                        fresh += view.aggregates_arrived(up)
                    return fresh

                end = view.t0 + duration
                if use_live:
                    from rich.live import Live

                    with Live(view.render(), console=console, refresh_per_second=4,
                              transient=False) as lv:
                        while time.monotonic() < end:
                            tick()
                            lv.update(view.render())
                            time.sleep(max(0.0, min(_REFRESH_S, end - time.monotonic())))
                else:
                    next_line = view.t0 + _PLAIN_EVERY_S
                    while time.monotonic() < end:
                        for e in tick():
                            console.print(view.event_line(e), soft_wrap=True)
                        if time.monotonic() >= next_line:
                            console.print(view.progress_line(), soft_wrap=True)
                            next_line += _PLAIN_EVERY_S
                        time.sleep(max(0.0, min(_REFRESH_S, end - time.monotonic())))
                _settle(ctl, fleet)
                fresh = view.update(ctl, fleet)
                if not use_live:
                    for e in fresh:
                        console.print(view.event_line(e), soft_wrap=True)
                view.stats = ctl.request(CtlOp.STATS)
            if up is not None:
                _upstream_summary(console, up)
            if bridge is not None:
                _devices_summary(console, bridge)
            rig.stop_sims()
            edged_exit = rig.stop_edged()
    except KeyboardInterrupt:
        console.print("[yellow]demo interrupted; edged and the agents are stopped[/]")
        sys.exit(130)
    except EdgeError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        sys.exit(1)
    finally:
        if up is not None:
            up.close()  # after edge-sync and edged: the server goes last
    _summary(console, view, duration, edged_exit, rule_ids)
    if edged_exit != 0:
        sys.exit(1)
