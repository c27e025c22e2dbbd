"""Device profiles: every mistake at once with file:line:col; params range-checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import cli as edgectl
from firmware_bridge import ActionError, ProfileError, load_profile, parse_profile
from firmware_bridge._profile import substitute

from .conftest import PLC_PROFILE
from .test_can_e2e import ECU_PROFILE

BAD = """\
kind: modbus
poll_groups: {fast: 100}
points:
  - {name: a, area: holding_register, address: 70000, type: int16, poll: fast}
  - {name: b, area: coils, address: 1, poll: fast}
  - {name: c, area: holding_register, address: 2, type: float32, order: ABDC, poll: slow}
  - {name: a, area: input_register, address: 3, poll: fast}
  - {name: d, area: input_register, address: 4, type: int16, scale: 0, poll: fast}
actions:
  set_param:
    params: {value: {min: 10, max: 0}}
    writes: [{point: d, value: "{value}"}, {point: nope, value: 1}]
  throttle:
    writes: [{point: a, value: "{rate}"}]
bogus: 1
"""


def test_every_mistake_at_once_with_line_and_column() -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile(BAD, "plc.yaml")
    text = str(err.value)
    want = [
        ("plc.yaml:2:21", "poll group 'fast': 100 has no unit"),
        ("plc.yaml:4:48", "address 70000 is outside 0-65535"),
        ("plc.yaml:5:21", "unknown area 'coils'"),
        ("plc.yaml:6:73", "order 'ABDC' does not fit float32"),
        ("plc.yaml:6:85", "unknown poll group 'slow'"),
        ("plc.yaml:8:69", "scale must not be 0"),
        ("plc.yaml:11:21", "min is above max"),
        ("plc.yaml:12:22", "unknown point 'd'"),
        ("plc.yaml:12:52", "unknown point 'nope'"),
        ("plc.yaml:14:22", "input_register: only coils and holding registers"),
        ("plc.yaml:15:1", "unknown key 'bogus'"),
    ]
    for where, message in want:
        assert any(line.startswith(where) and message in line for line in text.splitlines()), (
            where,
            message,
            text,
        )
    assert len(err.value.problems) == len(want), text


def test_good_profiles_load(tmp_path: Path) -> None:
    p = parse_profile(PLC_PROFILE)
    assert p.kind == "modbus" and p.point("flow").order == "CDAB" and p.point("flow").registers == 2
    assert p.heartbeat is not None and p.heartbeat.period_ns == 50_000_000
    (tmp_path / "ecu.yaml").write_text(ECU_PROFILE)
    ecu = load_profile(tmp_path / "ecu.yaml")
    assert ecu.db.get_message_by_name("DI_torque1").frame_id == 0x106
    assert ecu.point("pedal").min_interval_ns == 50_000_000


def test_can_names_are_checked_against_the_dbc_and_a_broken_dbc_is_reported(tmp_path: Path) -> None:
    text = ECU_PROFILE.replace("DI_motorRPM", "DI_motorRPMX").replace(
        "DI_state, signal: DI_cruiseSet}", "DI_stat, signal: DI_cruiseSet}"
    )
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "ecu.yaml", base=tmp_path)
    msg = str(err.value)
    assert (
        "no signal 'DI_motorRPMX' in message DI_torque1" in msg
        and "did you mean DI_motorRPM" in msg
    )
    assert "no message 'DI_stat' in the DBC" in msg
    (tmp_path / "broken.dbc").write_text('VERSION ""\nBO_ 12 X: 8 Y\n SG_ b : oops\n')
    broken = "kind: can\ndbc: broken.dbc\npoints: []\n"
    with pytest.raises(
        ProfileError, match=r"ecu.yaml:2:6: dbc: .*broken.dbc does not parse.*line 3"
    ):
        parse_profile(broken, "ecu.yaml", base=tmp_path)


def test_params_missing_or_out_of_range_write_nothing() -> None:
    p = parse_profile(PLC_PROFILE)
    a = p.actions["set_param"]
    assert substitute(a, {"value": 42.0}, p.point)[0].value == 42.0
    with pytest.raises(ActionError, match="needs param 'value'"):
        substitute(a, {}, p.point)
    with pytest.raises(ActionError, match="value=101 is outside 0..100"):
        substitute(a, {"value": 101.0}, p.point)
    with pytest.raises(ActionError, match="must be a number"):
        substitute(a, {"value": "high"}, p.point)


def test_edgectl_bridge_check(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(PLC_PROFILE)
    bad.write_text(BAD)
    r = CliRunner().invoke(edgectl, ["bridge", "check", str(good)])
    assert r.exit_code == 0 and "ok (modbus, 5 points" in r.output
    r = CliRunner().invoke(edgectl, ["bridge", "check", str(good), str(bad)])
    assert r.exit_code == 1
    assert f"{bad}:4:48" in r.output and "11 problems" in r.output
