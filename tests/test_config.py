from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import EdgeConfig, load_config
from edge.errors import ConfigError


def test_defaults_need_no_root(tmp_path: Path) -> None:
    cfg = load_config(env={})
    assert isinstance(cfg, EdgeConfig)
    assert not str(cfg.run_dir).startswith(("/run/", "/var/"))
    assert not str(cfg.data_dir).startswith(("/run/", "/var/"))


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    f = tmp_path / "edge.toml"
    f.write_text('heartbeat_ms = 300\nmissed_beats = 5\nmetrics_addr = "127.0.0.1:1"\n')
    env = {"EDGE_CONFIG": str(f), "EDGE_MISSED_BEATS": "7", "EDGE_METRICS_ADDR": ""}
    cfg = load_config({"missed_beats": 9, "log_level": None}, env=env)
    assert cfg.heartbeat_ms == 300  # file
    assert cfg.missed_beats == 9  # flag beats env beats file
    assert cfg.metrics_addr == ""  # env beats file
    assert cfg.log_level == "INFO"  # default (a None flag is "not given")


def test_edge_section_in_file(tmp_path: Path) -> None:
    f = tmp_path / "edge.toml"
    f.write_text("[edge]\nmax_batch = 100\n")
    assert load_config(env={}, file=f).max_batch == 100


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ('heartbeat_ms = "soon"\n', "heartbeat_ms from config file"),
        ("heartbeat_ms = 0\n", "heartbeat_ms must be > 0"),
        ("heartbeat_ms = \n", "config file"),
    ],
)
def test_bad_file_names_the_problem(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "edge.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_config(env={}, file=f)


def test_bad_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="EDGE_MAX_BATCH"):
        load_config(env={"EDGE_MAX_BATCH": "many"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no.toml"):
        load_config(env={}, file=tmp_path / "no.toml")


def test_run_dir_too_long_for_af_unix() -> None:
    with pytest.raises(ConfigError, match="AF_UNIX"):
        load_config({"run_dir": "/tmp/" + "x" * 120}, env={})


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"outbox_max_bytes": 600 << 20, "max_map_size": 1 << 30}, "half of max_map_size"),
        ({"agg_max_samples": 5}, "agg_max_samples must be 0"),
    ],
)
def test_upstream_settings_that_would_defeat_their_purpose_are_refused(
    flags: dict[str, int], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(flags, env={})


def test_every_mistake_at_once_in_words_not_python(tmp_path: Path) -> None:
    f = tmp_path / "edge.toml"
    f.write_text('[edge]\nheartbeat_msec = 250\nheartbeat_ms = 2.5\nmissed_beats = "fast"\n')
    with pytest.raises(ConfigError) as info:
        load_config({"max_batch": "many"}, env={"EDGE_SCHED_LAG_MS": "soon"}, file=f)
    text = str(info.value)
    assert text.startswith("5 problems:")
    assert "unknown key 'heartbeat_msec' (did you mean heartbeat_ms?)" in text
    assert "heartbeat_ms from config file" in text and "expected a whole number, got 2.5" in text
    assert "missed_beats from config file" in text and "got 'fast'" in text
    assert "max_batch from --max-batch: expected a whole number, got 'many'" in text
    assert "sched_lag_ms from environment EDGE_SCHED_LAG_MS: expected a number" in text
    assert "invalid literal" not in text and "base 10" not in text


@pytest.mark.parametrize("raw", ["2.5", "1e3", "", "0x10", True])
def test_integer_settings_refuse_what_is_not_a_whole_number(raw: object) -> None:
    with pytest.raises(ConfigError, match="heartbeat_ms .*expected a whole number"):
        load_config({"heartbeat_ms": raw}, env={})


def test_integer_settings_take_whole_numbers_from_text() -> None:
    assert load_config(env={"EDGE_HEARTBEAT_MS": " 1_000 "}).heartbeat_ms == 1000


def test_a_key_outside_the_edge_table_is_not_silently_ignored(tmp_path: Path) -> None:
    f = tmp_path / "edge.toml"
    f.write_text("heartbeat_ms = 250\n[edge]\nmissed_beats = 5\n")
    with pytest.raises(ConfigError, match="'heartbeat_ms' is outside \\[edge\\]"):
        load_config(env={}, file=f)


def test_missing_file_says_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no.toml: cannot read: No such file"):
        load_config(env={}, file=tmp_path / "no.toml")


def test_settings_added_since_get_the_same_checks(tmp_path: Path) -> None:
    """max_targets (rule targets) and metrics_addr's host:port check join the one list of
    problems, with did-you-mean for a misspelling, like every older key."""
    f = tmp_path / "edge.toml"
    f.write_text('[edge]\nmax_target = 8\nmax_targets = "lots"\nmetrics_addr = "9108"\n')
    with pytest.raises(ConfigError) as info:
        load_config({"max_targetz": 3}, env={}, file=f)
    text = str(info.value)
    assert text.startswith("4 problems:"), text
    assert "unknown key 'max_target' (did you mean max_targets?)" in text
    assert "max_targets from config file" in text and "expected a whole number, got 'lots'" in text
    assert "metrics_addr '9108': expected host:port" in text
    assert "unknown setting 'max_targetz' (did you mean max_targets?)" in text
    with pytest.raises(ConfigError, match="max_targets must be within 1..65536"):
        load_config({"max_targets": 0}, env={})
