"""``edge-hil diff RECORDING CANDIDATE_RULES``: what a candidate rule table would have done
differently on a recorded run.

The recording's samples (recording.csv, the replay format) are replayed offline through the
compiled engine (edge.rules.replay) with the candidate; its firings are matched against the
instructions the rig saw (events.csv beside it: the triggering sample's time, rule, agent).
Firings pair up per (rule_id, agent_id) in time order when they are within ``window_ms``;
a pair more than ``tol_ms`` apart is *moved*, an unpaired candidate firing is *added*, an
unpaired rig firing is *removed*.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from edge.rules import load_rule_file, read_trace, replay


def rig_firings(events: Path) -> list[dict[str, Any]]:
    with open(events, newline="", encoding="utf-8") as fh:
        return [{"t_ms": float(r["t_sample_ms"]), "rule_id": r["rule_id"], "agent_id": r["agent_id"],
                 "action": r["action"]} for r in csv.DictReader(fh) if r["kind"] == "instruction" and r["t_sample_ms"]]


def diff(recording: Path, candidate: Path, *, tol_ms: float = 1.0,
         window_ms: float = 1000.0) -> dict[str, list[dict[str, Any]]]:
    """{"added": [...], "removed": [...], "moved": [...], "same": n} (lists of firings)."""
    recording = recording / "recording.csv" if recording.is_dir() else recording
    events = recording.with_name("events.csv")
    cand = replay(load_rule_file(candidate), read_trace(recording))
    rig = rig_firings(events)
    out: dict[str, Any] = {"added": [], "removed": [], "moved": [], "same": 0}
    keys = {(f["rule_id"], f["agent_id"]) for f in cand} | {(f["rule_id"], f["agent_id"]) for f in rig}
    for key in sorted(keys):
        c = sorted((f for f in cand if (f["rule_id"], f["agent_id"]) == key), key=lambda f: f["t_ms"])
        r = sorted((f for f in rig if (f["rule_id"], f["agent_id"]) == key), key=lambda f: f["t_ms"])
        used: set[int] = set()
        for f in c:
            best = min((j for j in range(len(r)) if j not in used), default=None,
                       key=lambda j: abs(r[j]["t_ms"] - f["t_ms"]))
            if best is None or abs(r[best]["t_ms"] - f["t_ms"]) > window_ms:
                out["added"].append(f)
                continue
            used.add(best)
            dt = f["t_ms"] - r[best]["t_ms"]
            if abs(dt) > tol_ms:
                out["moved"].append({**f, "rig_t_ms": r[best]["t_ms"], "by_ms": round(dt, 3)})
            else:
                out["same"] += 1
        out["removed"].extend(r[j] for j in range(len(r)) if j not in used)
    return out
