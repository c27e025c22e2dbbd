"""Repeated SIGKILL of edged under load. Each round: start edged on the same directories, run
a load agent whose samples fire a rule (instructions, acks, audit records) with aggregates
every 0.25 s (outbox records), read what the store has committed (a reader sees only committed
transactions, i.e. what edged was told is durable), SIGKILL edged mid-load, read again.
Goals (issue 9): >= 200 kills survived, 0 committed audit or outbox records lost, no sequence
reused (every record seen keeps its content forever after), recovery p99 <= 1 s."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from edge.store import Outbox, Store

from . import tools

pytestmark = pytest.mark.integration

Records = dict[str, dict[int, bytes]]


def committed(data_dir: Path) -> Records:
    """Every audit and outbox record the store holds: kind -> seq -> its bytes."""
    with Store.open(data_dir / "state", readonly=True) as store:
        audit = {r["seq"]: repr(sorted(r.items())).encode() for r in store.iter_audit()}
        outbox = dict(Outbox(store).peek(0, 1 << 30))
    return {"audit": audit, "outbox": outbox}


def lost_or_changed(before: Records, after: Records) -> dict[str, int]:
    return {
        kind: sum(1 for seq, body in recs.items() if after[kind].get(seq) != body)
        for kind, recs in before.items()
    }


def test_sigkill_under_load(
    mode: str, dirs: tuple[Path, Path], chaos_rules: Path, tmp_path: Path
) -> None:
    kills = tools.scaled(3, 200, mode)
    run, data = dirs
    # an upstream configured (none listening): edged keeps aggregates only for one
    edged = tools.EdgedProcess(run, data, chaos_rules, tmp_path / "edged.log",
                               agg_window_s=0.25, commit_interval_ms=5,
                               upstream_url="nats://127.0.0.1:4222")
    rnd = random.Random(3)
    seen: Records = {"audit": {}, "outbox": {}}
    recovery: list[float] = []
    lost = {"audit": 0, "outbox": 0}
    survived = 0
    t_kill = 0.0
    # recovery is kill -> answering `edgectl status`, restarted at once as a service manager
    # does; the store is read after (a reader sees only committed transactions, so what was
    # committed before the kill is checked against what the store holds after it, whatever
    # the new edged has added since). Checking it between the kill and the restart made the
    # campaign's own reading of ~50,000 audit records part of every recovery it measured.
    before_kill: Records | None = None
    try:
        edged.start()
        for _ in range(kills):
            with tools.Load(run):
                time.sleep(rnd.uniform(0.2, 0.6))  # the load runs: this is its duration
                mark = committed(data)
                for kind, n in lost_or_changed(seen, mark).items():
                    lost[kind] += n
                before_kill = mark
                t_kill = time.monotonic()
                edged.kill9()
                edged.start()
                recovery.append(time.monotonic() - t_kill)
            after = committed(data)
            for kind, n in lost_or_changed(before_kill, after).items():
                lost[kind] += n
            seen = after
            survived += 1
        final = committed(data)
        for kind, n in lost_or_changed(seen, final).items():
            lost[kind] += n
        edged.stop()
    finally:
        if edged.alive():
            edged.kill9()
    p99 = tools.pctl(recovery, 0.99)
    # edged's own part of a recovery: open() (lock, store, rules, sockets), from its log line
    opens = [float(m) for m in re.findall(r"ready in (\d+) ms", edged.tail(1 << 30))]
    tools.report(
        "sigkill", mode,
        kills_survived=survived, audit_records=len(final["audit"]),
        outbox_records=len(final["outbox"]), records_lost=lost,
        recovery_p50_s=round(tools.pctl(recovery, 0.5) or 0, 3),
        recovery_p99_s=round(p99 or 0, 3), recovery_max_s=round(max(recovery), 3),
        edged_open_p50_ms=tools.pctl(opens, 0.5), edged_open_p99_ms=tools.pctl(opens, 0.99),
    )
    assert survived == kills
    assert lost == {"audit": 0, "outbox": 0}
    assert final["outbox"], "the load made aggregates"
    if mode == "campaign":
        assert p99 is not None and p99 <= 1.0, f"recovery p99 {p99:.3f} s"
