"""The bridge's config: flags > EDGE_* env > file > defaults; mistakes name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ConfigError
from firmware_bridge import BackendError, backend, load_bridge_config

TOML = """
[bridge]
bridge_safe_after_ms = 500
bridge_tick_ms = 30

[[link]]
name = "n"
kind = "modbus_tcp"
port = 1502

[[device]]
name = "d"
link = "n"
profile = "p.yaml"
unit = 7
labels = {line = "3"}
"""


def test_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text(TOML)
    cfg = load_bridge_config(
        {"bridge_tick_ms": 5}, env={"EDGE_BRIDGE_SAFE_AFTER_MS": "700"}, file=f
    )
    assert cfg.bridge_tick_ms == 5  # flag over file
    assert cfg.bridge_safe_after_ms == 700  # env over file
    assert cfg.bridge_health_ms == 1000  # default
    assert cfg.links[0].kind == "modbus_tcp" and dict(cfg.links[0].options)["port"] == 1502
    d = cfg.devices[0]
    assert d.unit == 7 and d.profile == tmp_path / "p.yaml" and d.labels == (("line", "3"),)
    env_file = load_bridge_config(env={"EDGE_BRIDGE_CONFIG": str(f)})
    assert env_file.bridge_safe_after_ms == 500


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[bridge]\nbogus = 1\n", "unknown key 'bogus' in \\[bridge\\]"),
        ('[[link]]\nname = "n"\nkind = "profibus"\n', "kind 'profibus' is not one of"),
        ('[[device]]\nname = "d"\nlink = "x"\nprofile = "p.yaml"\n', "link 'x' is not a"),
        ('[bridge]\nbridge_tick_ms = "fast"\n', "bridge_tick_ms from config file"),
        ('[[link]]\nname = "a b"\nkind = "can"\n', "must be 1-128 letters"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "b.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_bridge_config(env={}, file=f)


def test_an_unknown_backend_is_one_clear_error() -> None:
    with pytest.raises(BackendError, match="unknown link kind 'profibus'; kinds: can, mcu"):
        backend("profibus")
    assert backend("can").__name__ == "CanLink"


def test_every_settings_mistake_at_once_with_did_you_mean(tmp_path: Path) -> None:
    """The bridge's settings get edged's checks: all mistakes in one error, in words, with
    the closest key or table for a misspelling."""
    f = tmp_path / "b.toml"
    f.write_text(
        '[bridge]\nbridge_tick_msec = 5\nbridge_health_ms = 2.5\n[brigde]\n'
        '[[device]]\nname = "d"\nlink = "n"\nprofil = "p.yaml"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_bridge_config({"log_level": "loud"}, env={"EDGE_BRIDGE_SAFE_AFTER_MS": "soon"}, file=f)
    text = str(info.value)
    assert text.startswith("6 problems:"), text
    assert "unknown key 'bridge_tick_msec' in [bridge] (did you mean bridge_tick_ms?)" in text
    assert "bridge_health_ms from config file" in text and "expected a whole number, got 2.5" in text
    assert "unknown table 'brigde' (did you mean bridge?)" in text
    assert "device d: unknown keys ['profil'] (did you mean profile?)" in text
    assert "bridge_safe_after_ms from environment EDGE_BRIDGE_SAFE_AFTER_MS" in text
    assert "log_level must be debug / info / warning / error" in text
    assert "invalid literal" not in text
