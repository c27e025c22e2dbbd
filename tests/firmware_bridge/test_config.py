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
