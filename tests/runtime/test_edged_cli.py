"""edged's command line (argparse): options, version, and the exits that happen before the
daemon opens anything. The running daemon's exits (3, SIGTERM) are in test_daemon.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge import __version__
from edge.config import EdgeConfig, load_config
from edge.runtime import main
from edge.runtime._daemon import _parser


def _exit_code(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"edged, version {__version__}"


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["-h"]) == 0
    out = capsys.readouterr().out
    for option in ("--config", "--run-dir", "--data-dir", "--device-id", "--rules",
                   "--metrics-addr", "--heartbeat-ms", "--run-dir-group", "--log-level",
                   "--version"):
        assert option in out
    assert "the edge runtime daemon" in out


def test_every_flag_is_a_config_setting() -> None:
    # load_config refuses a name it does not know: each option must land on a field
    fields = {f.name for f in dataclasses.fields(EdgeConfig)}
    dests = set(vars(_parser().parse_args([]))) - {"config_file", "self_test"}
    assert dests and dests <= fields


def test_flags_parse_to_config_values(tmp_path: Path) -> None:
    ns = _parser().parse_args([
        "--run-dir", str(tmp_path / "run"), "--rules", str(tmp_path / "r.yaml"),
        "--heartbeat-ms", "250", "--log-level", "debug", "--metrics-addr", "",
    ])
    assert ns.run_dir == tmp_path / "run" and ns.rules_file == tmp_path / "r.yaml"
    assert ns.heartbeat_ms == "250" and ns.log_level == "DEBUG" and ns.metrics_addr == ""
    flags = {k: v for k, v in vars(ns).items() if k != "config_file"}
    assert load_config(flags, env={}).heartbeat_ms == 250  # checked and converted there
    assert ns.device_id is None and ns.config_file is None  # unset: load_config ignores None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--log-level", "loud"], "invalid choice"),
        # in words, with the config file's and environment's mistakes (load_config)
        (["--heartbeat-ms", "x"], "heartbeat_ms from --heartbeat-ms: expected a whole number"),
        (["--rule", "r.yaml"], "unrecognized arguments"),  # no abbreviations
        (["extra"], "unrecognized arguments"),
    ],
)
def test_a_bad_command_line_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == 2
    assert message in capsys.readouterr().err


def test_a_path_of_the_wrong_kind_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert _exit_code(["--config", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert _exit_code(["--run-dir", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_bad_setting_exits_2_before_opening_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    assert _exit_code(["--heartbeat-ms", "0", "--run-dir", str(tmp_path / "run")]) == 2
    assert "edged: configuration error: heartbeat_ms must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
