"""``edgectl sync status``: edge-sync's link and the outbox, on the board.

Reads ``<run_dir>/sync-status.json`` (written by edge-sync every second) and the outbox counters
straight from LMDB (readonly), so it answers while edge-sync is stopped too. Loaded lazily by
the top-level group (edge.cli._main.LazyGroup).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..config import load_config
from ..errors import EdgeError, NotRunningError
from ..store import Outbox, Store
from ..sync import read_status
from ._main import Ctx, HelpGroup, _emit_json, console, handles_errors, json_option

# status older than this (seconds) with a live pid means edge-sync is stuck
_STALE_S = 10.0


@click.group(cls=HelpGroup)
def sync() -> None:
    """edge-sync on this board: link state, outbox, last publish, last rule table."""


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _outbox_stats(data_dir: Path) -> dict[str, Any] | None:
    state = data_dir / "state"
    if not (state / "data.mdb").exists():
        return None
    with Store.open(state, readonly=True) as store:
        return Outbox(store).stats()


def collect(run_dir: Path, data_dir: Path | None) -> dict[str, Any]:
    """The document `sync status` shows: edge-sync's last status plus the outbox from LMDB.
    Raises NotRunningError when edge-sync never ran here and there is no outbox either."""
    doc = read_status(run_dir)
    now_ms = int(time.time() * 1000)
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    if doc is None:
        out["state"] = "never started"
    else:
        out.update(doc)
        alive = _pid_alive(doc.get("pid"))
        age_s = (now_ms - int(doc.get("written_wall_ms", 0))) / 1000
        out["status_age_s"] = round(age_s, 1)
        if not doc.get("running") or not alive:
            out["state"] = "stopped"
        elif age_s > _STALE_S:
            out["state"] = "not responding"
        else:
            out["state"] = "running"
    if data_dir is None:
        data_dir = Path(doc["data_dir"]) if doc and doc.get("data_dir") else None
    if data_dir is not None:
        try:
            stats = _outbox_stats(data_dir)
        except EdgeError as exc:
            out["outbox_error"] = str(exc)
        else:
            if stats is not None:
                out["outbox"] = stats
    if doc is None and "outbox" not in out:
        raise NotRunningError(
            f"edge-sync has not run with run dir {run_dir} (no sync-status.json) and there is "
            "no outbox to show; start it with `edge-sync --run-dir "
            f"{run_dir}` next to edged"
        )
    return out


def _ago(wall_ms: Any) -> str:
    if not wall_ms:
        return "never"
    s = time.time() - wall_ms / 1000
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_ms / 1000))
    return f"{stamp} ({s:.0f} s ago)"


def _table_line(v: Any) -> str:
    if not v:
        return "none"
    if isinstance(v, dict):
        parts = [f"{k}={v[k]}" for k in ("version", "key", "reason", "wall_ms") if k in v]
        return ", ".join(parts) or str(v)
    return str(v)


@sync.command()
@json_option
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="edged's data directory (default: the one edge-sync reported, else the config's).",
)
@click.pass_obj
@handles_errors
def status(obj: Ctx, as_json: bool, data_dir: Path | None) -> None:
    """Link state, outbox depth / oldest age / drops, last publish, last table."""
    if data_dir is None and read_status(obj.run_dir) is None:
        data_dir = (obj.config or load_config({})).data_dir  # --config, EDGE_*, defaults
    s = collect(obj.run_dir, data_dir)
    if as_json:
        return _emit_json(s)
    t = Table(title=f"edge-sync on {s.get('device_id', '?')}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    colours = {"up": "green", "connecting": "yellow", "down": "red"}
    link = str(s.get("link_state", "unknown"))
    state = s["state"]
    t.add_row("edge-sync", f"{state}" + (f" (pid {s['pid']})" if "pid" in s else ""))
    t.add_row("upstream", str(s.get("upstream_url", "?")))
    colour = colours.get(link) if s["state"] == "running" else None
    line = f"[{colour}]{link}[/]" if colour else link
    if s.get("link_error"):
        line += f"  last error: {s['link_error']}"
    if s.get("link_retry_in_s"):
        line += f"  retry in {s['link_retry_in_s']:.1f} s"
    t.add_row("link", line)
    ob = s.get("outbox")
    if ob is not None:
        age = ob.get("oldest_age_s")
        t.add_row(
            "outbox",
            f"{ob['depth']} records, {ob['bytes']} bytes, oldest "
            f"{'-' if age is None else f'{age:.0f} s'}, seq {ob['first_seq']}..{ob['last_seq']}",
        )
        t.add_row("outbox drops", f"{ob['dropped']} records, {ob['dropped_bytes']} bytes")
    t.add_row(
        "last publish",
        f"{_ago(s.get('last_publish_wall_ms'))}, acked up to seq {s.get('last_acked_seq', 0)}",
    )
    t.add_row(
        "published",
        f"{s.get('published', 0)} ({s.get('duplicates', 0)} duplicates, "
        f"{s.get('resends', 0)} resends)",
    )
    if s.get("publish_error"):
        t.add_row("publish error", str(s["publish_error"]))
    t.add_row("last table received", _table_line(s.get("last_table_received")))
    t.add_row("last table refused", _table_line(s.get("last_table_refused")))
    console.print(t)
