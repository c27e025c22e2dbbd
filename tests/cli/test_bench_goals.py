"""The goal table is filled from the bench document, with same-run baselines beside each row."""

from __future__ import annotations

from typing import Any

from edge.cli._bench_goals import goal_lines, goal_rows


def _doc() -> dict[str, Any]:
    return {
        "e2e_us": {"p99": 180.0, "p999": 900.0},
        "ratio_p99": 1.2,
        "sla_rate": 0.9995,
        "jitter_pct": 4.0,
        "background_metrics_per_s": 50_000.0,
        "baseline_pingpong_us": {"p99": 150.0, "p999": 400.0, "within_sla_pct": 99.9,
                                 "jitter_pct": 20.0},
        "ingest": {"metrics_per_s": 1_200_000.0, "baseline_router": {"metrics_per_s": 8e6}},
        "rules": {"memory": {"bytes_per_rule": 2100}, "activation": {"loop_pause_us": 20.0}},
        "footprint": {"idle": {"rss_bytes": 29_000_000}, "with_agents": {"rss_bytes": 31_000_000},
                      "baseline_python_rss_bytes": 11_000_000},
        "coldstart": {"ready_ms": {"p50": 150.0}, "baseline_python_ms": {"p50": 17.0}},
        "bridge": {"can_decode": {"frames_per_s": 25_000,
                                  "baseline_cantools_full_decode_per_s": 20_000}},
    }


def test_each_goal_is_judged_against_its_own_bound() -> None:
    met = {r["figure"].split(" (")[0]: r["met"] for r in goal_rows(_doc())}
    assert met == {
        "e2e P99": True,
        "e2e P99.9": False,
        "e2e P99 ÷ ping-pong P99": True,
        "SLA attainment at 1 ms": False,
        "jitter": True,
        "metrics/s with 1,000 rules, one core": True,
        "memory per loaded rule at 10,000 rules": False,
        "loop pause activating 10,000 rules": True,
        "edged RSS idle": True,
        "edged RSS, 100 agents connected": False,
        "cold start to ready": True,
        "bridge: CAN frames/s decoded into samples, one core, real DBC": True,
    }


def test_rows_carry_the_same_run_baseline_and_missing_scenarios_say_so() -> None:
    rows = {r["figure"].split(" (")[0]: r for r in goal_rows(_doc())}
    assert rows["SLA attainment at 1 ms"]["baseline"] == "ping-pong alone within 1 ms: 99.900 %"
    assert "50,000 metrics/s" in next(r["figure"] for r in goal_rows(_doc()) if "SLA" in r["figure"])
    partial = goal_rows({"e2e_us": {"p99": 100.0}})
    assert [r["met"] for r in partial if r["measured"] is None] and all(
        r["met"] is None for r in partial if r["measured"] is None
    )
    assert any("not run" in line for line in goal_lines({}))
