"""``edge-hil``: check scenarios, run them, diff a recording against a candidate rule table.

Exit codes: 0 every run PASS (or SKIP), 1 a FAIL, 2 an ERROR or TIMEOUT or a scenario with
mistakes (check: 2 when any file has one)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ._errors import ScenarioError


@click.group()
def cli() -> None:
    """Hardware-in-the-loop rigs: real edged, agents and devices against plant models."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(files: tuple[Path, ...]) -> None:
    """Check scenario FILES; print every mistake as file:line:col."""
    from ._scenario import load_scenario

    bad = 0
    mount_why: str | None = None  # asked once, only when a scenario needs it
    for f in files:
        try:
            sc = load_scenario(f)
        except ScenarioError as exc:
            bad += 1
            click.echo(str(exc), err=True)
            continue
        click.echo(f"{f}: ok ({sc.id}: {len(sc.agents)} agents, {len(sc.devices)} devices, "
                   f"{'an uplink, ' if sc.uplink else ''}{len(sc.faults)} faults, "
                   f"{len(sc.assertions)} assertions, {sc.duration_ns / 1e9:g} s)")
        disk = [x.id for x in sc.faults if x.kind == "disk_full"]
        if disk:
            if mount_why is None:
                from ._disk import mount_problem

                mount_why = mount_problem()
            if mount_why:
                click.echo(f"{f}: note: fault {disk[0]} (disk_full) needs root: {mount_why}; "
                           "here the run's verdict will be SKIP", err=True)
    sys.exit(2 if bad else 0)


@cli.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("hil-out"),
              show_default=True, help="one folder per scenario below this")
@click.option("--junit", type=click.Path(path_type=Path), help="also one JUnit file for all runs")
def run(scenarios: tuple[Path, ...], out_dir: Path, junit: Path | None) -> None:
    """Run SCENARIOS (files or folders of *.yaml) and write their reports."""
    from ._report import write_junit, write_outputs
    from ._runner import RunResult, run_scenario
    from ._scenario import load_scenario

    files = [p for s in scenarios for p in (sorted(s.glob("*.yaml")) if s.is_dir() else [s])]
    results: list[RunResult] = []
    worst = 0
    for f in files:
        try:
            sc = load_scenario(f)
        except ScenarioError as exc:
            click.echo(f"ERROR  {f}: the scenario has mistakes:\n{exc}")
            worst = 2
            continue
        res = run_scenario(sc)
        write_outputs(res, out_dir / sc.id)
        results.append(res)
        flag = " MARGINAL" if res.marginal else ""
        click.echo(f"{res.verdict:<7}{sc.id}{flag} ({res.wall_s:.1f} s)"
                   f"{': ' + res.reason if res.reason else ''}  -> {out_dir / sc.id}/report.html")
        for k, fl in res.rig.get("load", {}).items():  # the figure an overload run is judged by
            if fl["capacity_per_s"]:
                click.echo(f"       load {k}: edged's capacity {fl['capacity_per_s']:,.0f} samples/s (this run), "
                           f"offered {fl['offered_per_s']:,.0f}/s = {fl['ratio']:.2f}x by {fl['procs']} senders")
        worst = max(worst, {"PASS": 0, "SKIP": 0, "FAIL": 1}.get(res.verdict, 2))
    if junit is not None:
        write_junit(results, junit)
    sys.exit(worst)


@cli.command("diff")
@click.argument("recording", type=click.Path(exists=True, path_type=Path))
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tol-ms", default=1.0, show_default=True, help="a firing that moved less is the same")
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of lines")
def diff_cmd(recording: Path, candidate: Path, tol_ms: float, as_json: bool) -> None:
    """What CANDIDATE (a rule file) would fire differently on RECORDING (a run's folder or its
    recording.csv, with events.csv beside it)."""
    from edge.errors import EdgeError

    from ._diff import diff

    try:
        d = diff(recording, candidate, tol_ms=tol_ms)
    except (EdgeError, OSError, KeyError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(d, indent=2, sort_keys=True))
        return
    for f in d["added"]:
        click.echo(f"+ {f['t_ms']:>10.3f} ms  {f['rule_id']}  {f['agent_id']}  {f['action']}")
    for f in d["removed"]:
        click.echo(f"- {f['t_ms']:>10.3f} ms  {f['rule_id']}  {f['agent_id']}  {f['action']}")
    for f in d["moved"]:
        click.echo(f"~ {f['rig_t_ms']:>10.3f} -> {f['t_ms']:.3f} ms ({f['by_ms']:+.3f})  "
                   f"{f['rule_id']}  {f['agent_id']}  {f['action']}")
    click.echo(f"{len(d['added'])} added, {len(d['removed'])} removed, {len(d['moved'])} moved, "
               f"{d['same']} the same")


def main(argv: list[str] | None = None) -> None:
    cli(args=argv, prog_name="edge-hil")
