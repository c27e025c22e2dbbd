"""edgectl bench scenarios beyond latency: a --quick smoke run of each, through the console
script, checking the JSON keys and that the values are sane. No timing assertions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.cli._bench_scenarios import write_latency_plot

from .test_bench import edgectl

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, scenarios: str, *extra: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "bench.json"
    r = subprocess.run(edgectl("bench", "--quick", "--scenarios", scenarios, "--json", str(out),
                               *extra),
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["scenarios"] == scenarios.split(",")
    assert "machine" in doc and "timestamp" in doc
    return doc, r.stdout


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_ingest(tmp_path: Path) -> None:
    doc, text = _run(tmp_path, "ingest")
    i = doc["ingest"]
    assert i["rules"] == 1000 and i["series"] == 100 and i["batch"] == 500
    assert i["samples"] > 0 and _positive(i["metrics_per_s"])
    assert _positive(i["baseline_router"]["metrics_per_s"])
    assert _positive(i["ratio_to_baseline"])
    assert 0 <= i["edged_cpu_pct"] <= 200
    assert i["bad_counters"] == {}  # every sample was for a known series and session
    c = i["constant_values"]  # the second window on the same edged: every value 0.5
    assert c["samples"] > 0 and _positive(c["metrics_per_s"]) and c["bad_counters"] == {}
    assert _positive(c["ratio_to_baseline"]) and c["values"] == "all 0.5"
    assert isinstance(i["goal_met"], bool) and i["bound_by"]
    assert "e2e_us" not in doc  # latency was not asked for
    assert text.count("ingest:") >= 1


def test_footprint(tmp_path: Path) -> None:
    doc, text = _run(tmp_path, "footprint")
    f = doc["footprint"]
    assert f["agents"] == 100
    assert f["agents_seen"]["active"] == 100
    for part in ("idle", "with_agents"):
        assert _positive(f[part]["rss_bytes"]) and _positive(f[part]["uss_bytes"])
        assert f[part]["uss_bytes"] <= f[part]["rss_bytes"]
    assert _positive(f["first_start"]["rss_bytes"])
    assert f["rules_recovered"] > 0  # the restarted edged runs the stored table
    assert isinstance(f["per_agent_bytes"], int)
    assert 0 < f["baseline_python_rss_bytes"] < f["baseline_import_edged_rss_bytes"]
    bill = f["imports"]
    assert [row["import"] for row in bill][:2] == ["python", "logging"]
    assert bill[-1]["import"] == "edge.rules._source"
    assert all(row["rss_bytes"] > 0 for row in bill)
    assert "footprint:" in text and "RSS by import" in text


def test_coldstart(tmp_path: Path) -> None:
    doc, text = _run(tmp_path, "coldstart")
    c = doc["coldstart"]
    assert c["ready_ms"]["runs"] == 2
    for key in ("ready_ms", "baseline_python_ms", "python_import_edged_ms"):
        s = c[key]
        assert 0 < s["min"] <= s["p50"] <= s["max"]
    assert _positive(c["ratio_p50"])
    assert "cold start:" in text


def test_overload(tmp_path: Path) -> None:
    doc, text = _run(tmp_path, "overload")
    o = doc["overload"]
    assert _positive(o["capacity_per_s"]) and _positive(o["offered_per_s"])
    assert _positive(o["offered_over_capacity"])
    assert o["offered_per_s"] >= o["accepted_by_transport_per_s"] >= 0
    assert _positive(o["evaluated_per_s"])
    assert o["dropped_at_senders"] >= 0
    assert set(o["edged_counted"]) >= {"instructions_dropped_full", "ack_timeouts"}
    assert o["firings"] > 0  # the low-priority rules fired
    # the same run, on edged with the scheduler and on edged without it
    off = o["without_scheduler"]
    assert o["scheduler_enabled"] is True and off["scheduler_enabled"] is False
    shed = o["shed"]
    for key in ("batches_shed", "batches_evicted", "batches_rejected_full", "samples_dropped"):
        assert isinstance(shed[key], int) and shed[key] >= 0
        assert off["shed"][key] == 0  # nothing is shed without the scheduler
    for prio, counts in shed["by_priority"].items():
        assert prio == "1"  # only the load's batches are queued: the probe's are evaluated inline
        assert set(counts) == {"queued", "run", "shed", "evicted", "rejected"}
    assert shed["batches_shed"] == shed["by_priority"].get("1", {}).get("shed", 0)
    h = o["high_priority"]
    assert "priority 200" in h["rule"]
    assert h["unloaded_e2e_us"]["count"] > 0
    assert h["overloaded_answered"] + h["overloaded_lost"] > 0
    assert h["without_scheduler_answered"] + h["without_scheduler_lost"] > 0
    assert "overload:" in text and "without the scheduler" in text


def test_unknown_scenario_is_refused() -> None:
    r = subprocess.run(edgectl("bench", "--quick", "--scenarios", "latency,warp"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "warp" in r.stderr and "coldstart" in r.stderr


_LAT = {"count": 100, "p50": 80.0, "p90": 100.0, "p99": 150.0, "p999": 300.0, "max": 400.0}


def test_latency_plot_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    doc = {"e2e_us": _LAT, "probe_e2e_us": _LAT, "baseline_pingpong_us": _LAT,
           "config": {"loop_rate": 1000.0}, "background_metrics_per_s": 5000.0}
    doc["machine"] = {"commit": "abc1234"}
    doc["timestamp"] = "2026-12-02T20:50:00+00:00"
    png = tmp_path / "sub" / "bench_latency.png"
    res = write_latency_plot(doc, png)
    assert res["written"] is True and res["path"] == str(png)
    # the goal line (the goal table's e2e goals), the commit and the date are on the plot
    assert res["goals_us"] == {"p99": 200.0, "p999": 500.0}
    assert "commit abc1234, 2026-12-02 20:50 UTC" in res["title"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_plot_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    res = write_latency_plot({"e2e_us": _LAT}, tmp_path / "x.png")
    assert res == {"written": False, "reason": res["reason"]} and "matplotlib" in res["reason"]
    assert not (tmp_path / "x.png").exists()


def _overload_doc(**high: float) -> dict[str, Any]:
    """The overload result as `make bench` on a busy machine printed it (issue 15)."""
    h = {"unloaded_p99_us": 12_200.0, "overloaded_p99_us": 126_000.0,
         "without_scheduler_p99_us": 38_800.0, "overloaded_answered": 900,
         "without_scheduler_answered": 800, "p99_ratio": 10.3, "without_scheduler_p99_ratio": 3.2,
         "overloaded_lost": 0, "without_scheduler_lost": 0, **high}
    run = {"offered_per_s": 1.8e6, "cpu_pressure_pct": 20.0}
    return {"capacity_per_s": 0.9e6, "high_priority": h, **run,
            "without_scheduler": dict(run), "shed": {}}


def test_overload_that_contradicts_itself_is_reported_as_not_valid() -> None:
    from edge.cli._bench_scenarios import overload_lines, overload_validity

    doc = _overload_doc()
    why = overload_validity(doc, 1.0)
    assert any("missed its 1 ms SLA" in w for w in why)  # 12.2 ms unloaded: machine too busy
    assert any("not comparable" in w for w in why)  # 126 ms with vs 38.8 ms without
    doc["invalid_because"] = why
    lines = overload_lines(doc)
    assert "measurement not valid" in lines[0] and "shedding" not in " ".join(lines)
    fine = _overload_doc(unloaded_p99_us=600.0, overloaded_p99_us=3_600.0)
    assert overload_validity(fine, 1.0) == []
    starved = _overload_doc(unloaded_p99_us=600.0, overloaded_p99_us=3_600.0)
    starved["without_scheduler"]["offered_per_s"] = 0.9e6
    assert any("only 1.00x capacity" in w for w in overload_validity(starved, 1.0))


def test_bridge(tmp_path: Path) -> None:
    doc, text = _run(tmp_path, "bridge")
    b = doc["bridge"]
    c = b["can_decode"]
    assert _positive(c["frames_per_s"]) and _positive(c["baseline_cantools_full_decode_per_s"])
    assert _positive(c["ratio_to_baseline"]) and c["dbc"].endswith("tesla_powertrain.dbc")
    m = b["modbus_points"]
    assert _positive(m["points_per_s"]) and _positive(m["baseline_pymodbus_client_points_per_s"])
    for kind in ("plain_agent", "modbus", "can"):
        e = b["e2e"][kind]
        assert e["count"] > 0 and _positive(e["p50"]) and e["p50"] <= e["p99"], (kind, e)
    s = b["e2e"]["safe_state"]
    assert s["modbus_edged_lost_ms"] >= s["modbus_grace_ms"]
    assert _positive(s["modbus_shutdown_ms"]) and s["can_alive_last_frame_after_edged_lost_ms"] >= 0
    assert "bridge CAN:" in text and "bridge e2e modbus" in text
