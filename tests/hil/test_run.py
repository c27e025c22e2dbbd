"""edge-hil run end to end: a real edged, SDK agents, the plant in real time. The fast subset
of the library runs here; bad input gives ERROR with its reason and leaves nothing behind (the
autouse leak check fails a test that leaves a process, thread or socket)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hil
from edge.rules import load_rule_file, read_trace, replay
from hil import load_scenario, run_scenario, write_outputs

pytestmark = pytest.mark.integration
LIB = Path(hil.__file__).parent / "scenarios"
FAST = ["motor_overtemp_throttle.yaml", "sensor_offset_early_throttle.yaml"]


@pytest.mark.parametrize("name", FAST)
def test_fast_scenarios_pass_and_write_every_output(tmp_path: Path, name: str) -> None:
    sc = load_scenario(LIB / name)
    res = run_scenario(sc)
    files = write_outputs(res, tmp_path / sc.id)
    assert res.verdict == "PASS", (res.reason, res.assertions)
    doc = json.loads((tmp_path / sc.id / "result.json").read_text())
    assert doc["verdict"] == "PASS" and doc["instructions"] >= 1
    assert doc["rig"]["injection_us"]["count"] > 100
    assert {a["id"] for a in doc["assertions"]} == {a.id for a in sc.assertions}
    for key in ("recording", "events", "junit", "html", "json"):
        assert Path(files[key]).stat().st_size > 0, key
    # the recording replays offline through the same engine and fires what the rig saw
    fired = replay(load_rule_file(sc.rules_file), read_trace(files["recording"]))
    seen = [(i["rule_id"], i["agent_id"]) for i in res.recording.instructions]
    assert [(f["rule_id"], f["agent_id"]) for f in fired] == seen
    assert "<testsuite" in Path(files["junit"]).read_text()
    if name == FAST[0]:
        _diff_against_a_candidate(tmp_path / sc.id)


def _diff_against_a_candidate(run: Path) -> None:
    """edge-hil diff: a lower threshold moves the throttle earlier, a new rule adds firings."""
    cand = run.parent / "cand.yaml"
    cand.write_text(
        "- {rule_id: motor_throttle, rule_name: t, rule_content: 'temperature_c > 80',"
        " action: throttle, priority: 9, sla_threshold: 10}\n"
        "- {rule_id: motor_warm, rule_name: w, rule_content: 'temperature_c > 60',"
        " action: alert, priority: 1, sla_threshold: 10}\n")
    r = subprocess.run([sys.executable, "-m", "hil", "diff", str(run), str(cand), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [f["rule_id"] for f in d["added"]] == ["motor_warm"]
    assert [f["rule_id"] for f in d["moved"]] == ["motor_throttle"] and d["moved"][0]["by_ms"] < 0
    assert d["removed"] == [] and d["same"] == 0


def _scenario(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "s.yaml"
    f.write_text(body.replace("RULES", str(LIB / "rules" / "motor.yaml")))
    return f


BASE = """\
meta: {id: s, duration: 2s}
rig:
  rules: RULES
  tolerance_ms: 1000
  EDGED
  agents: [{id: d1, report: {temperature_c: SIG}}]
plant: PLANT
"""


def test_a_diverging_plant_is_error(tmp_path: Path) -> None:
    body = BASE.replace("EDGED", "").replace("SIG", "x").replace("PLANT", "{model: unstable, limits: {x: [-10, 1000]}}")
    res = run_scenario(load_scenario(_scenario(tmp_path, body)))
    assert res.verdict == "ERROR"
    assert "the plant diverged: x=" in res.reason and "outside its limits [-10, 1000]" in res.reason


def test_a_plant_going_to_infinity_is_error(tmp_path: Path) -> None:
    body = BASE.replace("EDGED", "").replace("SIG", "x").replace("PLANT", "{model: unstable, params: {gain: 1.0e+9}}")
    res = run_scenario(load_scenario(_scenario(tmp_path, body)))
    assert res.verdict == "ERROR" and "plant output x is inf" in res.reason


def test_edged_that_will_not_start_is_error(tmp_path: Path) -> None:
    body = BASE.replace("EDGED", "edged: {log_level: NOPE, start_timeout: 5s}").replace("SIG", "temp_c").replace("PLANT", "{model: motor}")
    res = run_scenario(load_scenario(_scenario(tmp_path, body)))
    assert res.verdict == "ERROR" and "edged would not start" in res.reason, res.reason


def test_a_broken_fmu_is_a_scenario_mistake_and_never_runs(tmp_path: Path) -> None:
    (tmp_path / "broken.fmu").write_bytes(b"PK\x03\x04 not really a zip")
    body = BASE.replace("EDGED", "").replace("SIG", "y").replace("PLANT", "{model: fmu, fmu: broken.fmu}")
    r = subprocess.run([sys.executable, "-m", "hil", "run", str(_scenario(tmp_path, body)), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "ERROR" in r.stdout and "cannot read its model description" in r.stdout, r.stdout


@pytest.mark.hil
@pytest.mark.timeout(900)
def test_the_whole_library(tmp_path: Path) -> None:
    """make hil: every library scenario through the console script, reports written."""
    r = subprocess.run([sys.executable, "-m", "hil", "run", str(LIB), "--out", str(tmp_path),
                        "--junit", str(tmp_path / "junit.xml")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list(tmp_path.glob("*/report.html"))) == len(list(LIB.glob("*.yaml")))


def test_the_fmu_form_passes_the_same_scenario(tmp_path: Path) -> None:
    """motor_overtemp_throttle_fmu.yaml is motor_overtemp_throttle.yaml with the plant built
    from C (hil/fmu/motor.c) and stepped by FMPy's FMU2Slave; the verdicts agree."""
    py = (LIB / "motor_overtemp_throttle.yaml").read_text()
    fmu = (LIB / "motor_overtemp_throttle_fmu.yaml").read_text()
    strip = [ln for ln in py.splitlines() if not ln.startswith("#")]
    assert [ln for ln in fmu.splitlines() if not ln.startswith("#") and "fmu" not in ln and "title:" not in ln] == \
        [ln for ln in strip if "model: motor" not in ln and "id: motor-overtemp" not in ln and "title:" not in ln]
    res = run_scenario(load_scenario(LIB / "motor_overtemp_throttle_fmu.yaml"))
    assert res.verdict == "PASS", (res.reason, res.assertions)
    assert res.scenario.model == "fmu"


@pytest.mark.parametrize(("param", "reason"), [("fail_at", "the FMU failed to step at t="),
                                               ("nan_at", "plant output temp_c is nan")])
def test_an_fmu_that_fails_to_step_or_returns_nan_is_error(tmp_path: Path, param: str, reason: str) -> None:
    body = BASE.replace("EDGED", "").replace("SIG", "temp_c").replace(
        "PLANT", "{model: fmu, fmu: 'builtin:motor', params: {PARAM: 0.5}}".replace("PARAM", param))
    res = run_scenario(load_scenario(_scenario(tmp_path, body)))
    assert res.verdict == "ERROR" and reason in res.reason, res.reason


def test_a_run_past_its_deadline_is_timeout_and_torn_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hil._runner

    monkeypatch.setattr(hil._runner, "RUN_SLACK_S", -1.5)  # the 2 s run's deadline at 0.5 s
    body = BASE.replace("EDGED", "").replace("SIG", "temp_c").replace("PLANT", "{model: motor}")
    res = run_scenario(load_scenario(_scenario(tmp_path, body)))
    assert res.verdict == "TIMEOUT" and "did not finish within 0.5 s" in res.reason, res.reason
    assert res.rig["teardown_problems"] == []


def test_skip_starts_nothing(tmp_path: Path) -> None:
    body = BASE.replace("meta: {id: s, duration: 2s}", "meta: {id: s, duration: 2s, skip: needs a CAN FD bus}")
    body = body.replace("EDGED", "").replace("SIG", "temp_c").replace("PLANT", "{model: motor}")
    res = run_scenario(load_scenario(_scenario(tmp_path, body)))
    assert (res.verdict, res.reason, res.wall_s) == ("SKIP", "needs a CAN FD bus", 0.0)


def test_a_wait_holds_the_timeline_until_edged_is_back(tmp_path: Path) -> None:
    """edged SIGKILLed and restarted: the wait: stimulus holds the scenario's timeline until
    edged answers and the agent is welcomed again, so the load step after it lands after the
    loop is back, however long the restart took on this machine."""
    body = BASE.replace("EDGED", "").replace("SIG", "temp_c").replace("PLANT", "{model: motor}")
    body = body.replace("meta: {id: s, duration: 2s}", "meta: {id: s, duration: 1500ms}") + """\
stimulus:
  - {at: 600ms, wait: {recovered: kill}, timeout: 20s}
  - {at: 700ms, set: {load: 0.9}}
faults:
  - {id: kill, kind: sigkill, target: edged, start: 200ms, duration: 300ms}
"""
    res = run_scenario(load_scenario(_scenario(tmp_path, body)))
    assert res.verdict == "PASS", res.reason
    waited = res.rig["waited_ms"]["kill"]
    assert waited > 0, res.rig  # a restart takes some time: the timeline waited for it
    load = res.recording.signals["load"]
    t_set = next(t for t, v in load if v == 0.9)
    killed = next(f for f in res.recording.faults if f["id"] == "kill")
    assert t_set >= killed["end_ms"] + waited  # after the restart, on the run's time
    assert res.recording.series("rig.held_ms")[-1][1] >= waited - 20
    assert res.recording.end_ms >= 1500 + waited - 20  # the run lasted its timeline plus the hold
