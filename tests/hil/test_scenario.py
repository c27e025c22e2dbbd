"""The scenario format: every library scenario checks; a scenario with mistakes gives every
one at once, placed at file:line:col, through edge-hil check's exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hil
from hil import ScenarioError, load_scenario

LIB = Path(hil.__file__).parent / "scenarios"

BAD = """\
meta:
  id: bad one
  seed: x
  duration: 5
rig:
  rules: {rules}
  agents:
    - id: a1
      report: {{temp: no_such_signal}}
      actions: {{throttle: {{set: {{nozzle: 1}}}}}}
plant:
  model: motor
  params: {{heat: 1, wattage: 3}}
stimulus:
  - {{at: 1s, ramp: {{load: 1}}}}
  - {{at: 1s, set: {{load: 1}}, ramp: {{load: 2}}}}
faults:
  - {{kind: offset, target: a9.temp, start: 1s, duration: 1s}}
  - {{kind: can_bus_off, target: can0, start: 1s, duration: 1s}}
  - {{kind: sigkill, target: bridge, start: 1s}}
assertions:
  - {{id: x, within: 10ms, after: "temp_c >> 3", expect: {{instruction: throttle}}}}
  - {{id: y, always: "nope < 3"}}
  - {{id: z, count: {{instruction: throttle}}}}
  - {{id: w, final: temp_c, in_range: [5, 1]}}
"""


def test_every_library_scenario_checks() -> None:
    files = sorted(LIB.glob("*.yaml"))
    assert len(files) >= 9
    for f in files:
        sc = load_scenario(f)
        assert sc.assertions, f


def test_every_mistake_at_once_with_its_place(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD.format(rules=LIB / "rules" / "motor.yaml"))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    text = str(ei.value)
    want = [
        (2, "meta id 'bad one'"), (3, "seed must be a number"), (4, "has no unit"),
        (9, "'no_such_signal' is not a signal of the plant"), (10, "'nozzle' is not an input"),
        (13, "no parameter 'wattage'"), (15, "a ramp needs over:"), (16, "exactly one of"),
        (18, "no reported signal 'a9.temp'"), (19, "the rig has no can device 'can0'"),
        (20, "the rig has no bridge"), (22, "is not SIGNAL OP NUMBER"), (23, "unknown signal 'nope'"),
        (24, "count: needs a validator"), (25, "in_range: [low, high]"),
    ]
    for line, msg in want:
        assert any(p.line == line and msg in p.message for p in ei.value.problems), (line, msg, text)
    assert all(p.file == str(f) and p.col >= 1 for p in ei.value.problems)


BAD_DEVICES = """\
meta: {{id: bad-devices, duration: 5s}}
rig:
  rules: {rules}
  devices:
    - {{id: plc, kind: modbus, profile: {lib}/devices/tank_plc.yaml, sense: {{level: "xx:1"}},
       drive: {{overflow: "co:0"}}}}
    - {{id: ecu, kind: can, profile: {lib}/devices/tank_plc.yaml}}
    - {{id: mcu, kind: mcu, profile: {lib}/devices/drive_mcu.yaml, drive: {{pump: "adc:4"}},
       echo: {{A.b: C.d}}}}
    - {{id: thing, kind: zigbee, profile: x.yaml}}
plant: {{model: tank}}
faults:
  - {{kind: line_break, target: plc, start: 1s, duration: 1s}}
  - {{kind: modbus_timeout, target: plc, start: 1s}}
  - {{kind: device_offline, target: nowhere, start: 1s, duration: 1s}}
  - {{kind: uplink_reset, target: uplink, start: 1s}}
  - {{kind: clock_step, target: bridge, start: 1s, params: {{ms: 10}}}}
  - {{kind: rules_swap, target: no-such-rules.yaml, start: 1s}}
assertions:
  - {{id: a, max: plc.health_nope, in_range: [0, 1]}}
"""


def test_device_mistakes_at_once(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD_DEVICES.format(rules=LIB / "rules" / "tank_plc.yaml", lib=LIB))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    text = str(ei.value)
    want = [
        (5, "'xx:1' is not a place on a modbus device"), (6, "'overflow' is not an input"),
        (7, "the profile is for kind 'modbus', the device is 'can'"),
        (8, "sense sets adc:N, drive reads pin:N or pwm:N"), (9, "echo: is for kind: can"),
        (10, "unknown device kind 'zigbee'"), (13, "the rig has no mcu device 'plc'"),
        (14, "a modbus_timeout fault needs duration:"), (15, "no simulated device 'nowhere'"),
        (16, "the rig has no 'uplink' to aim uplink_reset at"),
        (17, "clock_step is for edged's wall clock"), (18, "rules_swap: no such rule file"),
        (20, "unknown signal 'plc.health_nope'"),
    ]
    for line, msg in want:
        assert any(p.line == line and msg in p.message for p in ei.value.problems), (line, msg, text)


def test_check_command_lists_problems_and_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("meta: {id: a}\nrig: {rules: missing.yaml}\nplant: {model: warp_drive}\n")
    r = subprocess.run([sys.executable, "-m", "hil", "check", str(f), str(LIB / "tank_overflow_plc.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{f}:2:" in r.stderr and "no such file" in r.stderr
    assert f"{f}:3:" in r.stderr and "unknown plant model 'warp_drive'" in r.stderr
    assert "tank_overflow_plc.yaml: ok" in r.stdout


def test_not_yaml_is_placed(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("meta: [1, 2\n")
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    assert "not valid YAML" in str(ei.value)


def test_a_wait_names_a_fault_of_the_scenario(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text((LIB / "edged_killed_restart.yaml").read_text()
                 .replace("rules: rules/", f"rules: {LIB}/rules/")
                 .replace("wait: {recovered: kill-edged}", "wait: {recovered: nope}")
                 .replace("{at: 3500ms, ramp", "{at: 3500ms, timeout: 1s, ramp"))
    with pytest.raises(ScenarioError) as e:
        load_scenario(f)
    text = str(e.value)
    assert "wait: no fault with id 'nope'" in text and "ids: kill-edged" in text
    assert "timeout: is for wait:" in text
