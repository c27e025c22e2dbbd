"""The performance issue's goal table, filled from one ``edgectl bench`` document.

Each row: the figure, what was measured, the goal, whether it is met, and the baseline measured
in the same run (the machine is shared and noisy, so the baseline is what makes a figure mean
something). A scenario that did not run gives a row with ``measured: None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MB = 1_000_000


def _get(doc: dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _row(
    figure: str,
    measured: float | None,
    goal: float,
    unit: str,
    ok: Callable[[float, float], bool],
    baseline: str | None,
    goal_text: str,
) -> dict[str, Any]:
    return {
        "figure": figure,
        "measured": measured,
        "unit": unit,
        "goal": goal,
        "goal_text": goal_text,
        "met": None if measured is None else bool(ok(measured, goal)),
        "baseline": baseline,
    }


def _le(v: float, g: float) -> bool:
    return v <= g


def _ge(v: float, g: float) -> bool:
    return v >= g


def _lt(v: float, g: float) -> bool:
    return v < g


E2E_P99_GOAL_US = 200.0
"""The performance issue's e2e P99 goal: the one e2e goal every bench output judges against."""
E2E_P999_GOAL_US = 500.0


def goal_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the goal table for ``doc`` (the full ``edgectl bench`` JSON document)."""
    base = doc.get("baseline_pingpong_us") or {}
    sla = doc.get("sla_rate")
    bg = doc.get("background_metrics_per_s")
    rss = _get(doc, "footprint", "with_agents", "rss_bytes")
    idle = _get(doc, "footprint", "idle", "rss_bytes")
    py_rss = _get(doc, "footprint", "baseline_python_rss_bytes")

    def pp(key: str, unit: str = "µs") -> str | None:
        v = base.get(key)
        return None if v is None else f"ping-pong {key} {v:,.1f} {unit}"

    ingest_base = _get(doc, "ingest", "baseline_router", "metrics_per_s")
    return [
        _row("e2e P99", _get(doc, "e2e_us", "p99"), E2E_P99_GOAL_US, "µs", _le, pp("p99"),
             f"≤ {E2E_P99_GOAL_US:g} µs"),
        _row("e2e P99.9", _get(doc, "e2e_us", "p999"), E2E_P999_GOAL_US, "µs", _le, pp("p999"),
             f"≤ {E2E_P999_GOAL_US:g} µs"),
        _row("e2e P99 ÷ ping-pong P99", doc.get("ratio_p99"), 1.5, "×", _le, pp("p99"), "≤ 1.5"),
        _row(
            "SLA attainment at 1 ms" + ("" if bg is None else f" ({bg:,.0f} metrics/s background)"),
            None if sla is None else sla * 100,
            99.99,
            "%",
            _ge,
            None
            if base.get("within_sla_pct") is None
            else f"ping-pong alone within 1 ms: {base['within_sla_pct']:.3f} %",
            "≥ 99.99 %",
        ),
        _row(
            "jitter (MAD / mean of e2e)",
            doc.get("jitter_pct"),
            5.0,
            "%",
            _lt,
            None
            if base.get("jitter_pct") is None
            else f"ping-pong jitter {base['jitter_pct']:.1f} %",
            "< 5 %",
        ),
        _row(
            "metrics/s with 1,000 rules, one core",
            _get(doc, "ingest", "metrics_per_s"),
            1_000_000,
            "/s",
            _ge,
            None if ingest_base is None else f"bare ROUTER {ingest_base:,.0f}/s",
            "≥ 1,000,000",
        ),
        _row(
            "memory per loaded rule at 10,000 rules",
            _get(doc, "rules", "memory", "bytes_per_rule"),
            2048,
            "B",
            _le,
            None,
            "≤ 2 KB",
        ),
        _row(
            "loop pause activating 10,000 rules",
            _get(doc, "rules", "activation", "loop_pause_us"),
            1000,
            "µs",
            _le,
            None,
            "≤ 1 ms",
        ),
        *(
            _row(
                figure,
                None if v is None else v / MB,
                30,
                "MB",
                _le,
                None if py_rss is None else f"python -c pass {py_rss / MB:.1f} MB",
                "≤ 30 MB",
            )
            for figure, v in (("edged RSS idle", idle), ("edged RSS, 100 agents connected", rss))
        ),
        _row(
            "cold start to ready (p50)",
            _get(doc, "coldstart", "ready_ms", "p50"),
            300,
            "ms",
            _le,
            None
            if _get(doc, "coldstart", "baseline_python_ms", "p50") is None
            else f"python -c pass {doc['coldstart']['baseline_python_ms']['p50']:g} ms",
            "≤ 300 ms",
        ),
        _row(
            "bridge: CAN frames/s decoded into samples, one core, real DBC",
            _get(doc, "bridge", "can_decode", "frames_per_s"),
            20_000,
            "/s",
            _ge,
            None
            if _get(doc, "bridge", "can_decode", "baseline_cantools_full_decode_per_s") is None
            else f"cantools full decode {doc['bridge']['can_decode']['baseline_cantools_full_decode_per_s']:,}/s",
            "≥ 20,000/s",
        ),
        *lane_rows(doc),
    ]


def _profile(lane: dict[str, Any]) -> str:
    return "real-time profile" if lane.get("rt") else "default profile"


def lane_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The latency issue's rows: per transport, the probe's e2e against that transport's own
    ping-pong, measured in interleaved segments of the same window (``lanes``)."""
    lanes = doc.get("lanes") or {}
    rt_lanes = (doc.get("rt_profile") or {}).get("lanes") or {}
    rows = []
    z = lanes.get("zmq")
    q = rt_lanes.get("seqpacket") or lanes.get("seqpacket")  # its goals are the rt profile's
    zr = rt_lanes.get("zmq")

    def pp(lane: dict[str, Any], key: str, name: str) -> str | None:
        v = (lane.get("baseline_pingpong_us") or {}).get(key)
        return None if v is None else f"{name} ping-pong {key} {v:,.1f} µs"

    if z is not None:
        rows.append(_row(f"ZeroMQ, {_profile(z)}: e2e P99 ÷ ZeroMQ ping-pong P99",
                         z.get("ratio_p99"), 1.3, "×", _le, pp(z, "p99", "ZeroMQ"), "≤ 1.3"))  # fmt: skip
    if zr is not None:
        e2e = zr.get("e2e_us") or {}
        rows.append(_row("ZeroMQ, real-time profile: e2e P99", e2e.get("p99"), 600, "µs", _le,
                         pp(zr, "p99", "ZeroMQ"), "≤ 600 µs"))  # fmt: skip
    if q is not None and q.get("transport") == "seqpacket":
        e2e = q.get("e2e_us") or {}
        prof = _profile(q)
        rows += [
            _row(f"fast lane, {prof}: e2e P99", e2e.get("p99"), 300, "µs", _le,
                 pp(q, "p99", "SEQPACKET"), "≤ 300 µs (real-time profile)"),
            _row(f"fast lane, {prof}: e2e P99.9", e2e.get("p999"), 1000, "µs", _le,
                 pp(q, "p999", "SEQPACKET"), "≤ 1 ms (real-time profile)"),
            _row(f"fast lane, {prof}: SLA attainment at 1 ms", q.get("sla_1ms_pct"), 99.9, "%",
                 _ge, None, "≥ 99.9 % (real-time profile)"),
            _row(f"fast lane, {prof}: e2e P99 ÷ SEQPACKET ping-pong P99", q.get("ratio_p99"),
                 2.5, "×", _le, pp(q, "p99", "SEQPACKET"), "≤ 2.5"),
        ]  # fmt: skip
    execute = _get(doc, "stages_us", "execute", "p50")
    if lanes:
        rows.append(_row("execute stage P50 (SDK: check, decode, handler, Ack)", execute, 10,
                         "µs", _le, None, "≤ 10 µs"))  # fmt: skip
    return rows


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "not run"
    if unit in ("/s", "B"):
        return f"{v:,.0f} {unit}"
    return f"{v:,.2f} {unit}" if v < 10 else f"{v:,.1f} {unit}"


def goal_lines(doc: dict[str, Any]) -> list[str]:
    """One line per goal, for the one-screen summary."""
    out = []
    for r in goal_rows(doc):
        mark = {True: "[green]met[/]", False: "[red]missed[/]", None: "[dim]-[/]"}[r["met"]]
        tail = f"  (same run: {r['baseline']})" if r["baseline"] else ""
        out.append(
            f"{r['figure']}: {_fmt(r['measured'], r['unit'])}, goal {r['goal_text']}: {mark}{tail}"
        )
    return out
