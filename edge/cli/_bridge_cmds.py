"""``edgectl bridge``: check device profiles (firmware_bridge) before a bridge runs them.

Imported only when one of these commands runs; firmware_bridge is imported lazily (the
bridge sits above the runtime and the SDK, and a board without it still has edgectl)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from ._main import (
    HelpGroup,
    _emit_json,
    _fail,
    console,
    err_console,
    handles_errors,
    problems_text,
)

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(cls=HelpGroup)
def bridge() -> None:
    """The firmware bridge's device profiles."""


@bridge.command("check")
@click.argument("files", type=_existing_file, nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handles_errors
def bridge_check(files: tuple[Path, ...], as_json: bool) -> None:
    """Check device profiles; print every problem as file:line:col (exit 1 if any)."""
    try:
        from firmware_bridge import ProfileError, load_profile
    except ImportError as exc:  # pragma: no cover - edgectl without the bridge installed
        _fail(f"the firmware bridge is not installed: {exc}", 1)
    results, bad = [], 0
    for f in files:
        try:
            p = load_profile(f)
        except ProfileError as exc:
            bad += len(exc.problems)
            if as_json:
                results.append(
                    {
                        "ok": False,
                        "file": str(f),
                        "problems": [dataclasses.asdict(x) for x in exc.problems],
                    }
                )
            else:
                err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)
            continue
        if as_json:
            results.append(
                {
                    "ok": True,
                    "file": str(f),
                    "kind": p.kind,
                    "points": len(p.points),
                    "actions": sorted(p.actions),
                }
            )
        else:
            console.print(
                f"{f}: ok ({p.kind}, {len(p.points)} points, actions: "
                f"{', '.join(sorted(p.actions)) or 'none'})",
                highlight=False,
                soft_wrap=True,
            )
    if as_json:
        _emit_json(results)
        if bad:
            sys.exit(1)
    elif bad:
        _fail(problems_text(bad), 1)
