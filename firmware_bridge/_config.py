"""The bridge's one config: a TOML file with ``[bridge]`` settings, ``[[link]]`` and
``[[device]]`` tables. The settings take the runtime's precedence, CLI flags > ``EDGE_*``
environment > file > defaults; links and devices come from the file only.

::

    [bridge]
    run_dir = "/run/edge"            # edged's (EDGE_RUN_DIR, as for every component)
    bridge_safe_after_ms = 1000      # edged gone this long -> Modbus safe values written

    [[link]]
    name = "plc-net"
    kind = "modbus_tcp"              # modbus_tcp | modbus_rtu | can | mcu
    host = "127.0.0.1"
    port = 502
    timeout = "250ms"

    [[device]]
    name = "plc-1"                   # the agent id in edged
    link = "plc-net"
    profile = "plc.yaml"             # relative to this file
    unit = 1                         # Modbus unit id
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.config import (
    LOG_LEVELS,
    EdgeConfig,
    apply_env_and_flags,
    did_you_mean,
    put_all,
    raise_problems,
    read_toml,
)
from edge.errors import ConfigError

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


@dataclasses.dataclass(frozen=True, slots=True)
class LinkSpec:
    name: str
    kind: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    link: str
    profile: Path
    unit: int = 1
    labels: tuple[tuple[str, str], ...] = ()


def _run_dir() -> Path:
    return EdgeConfig().run_dir


@dataclasses.dataclass(frozen=True, slots=True)
class BridgeConfig:
    """edge-bridge's settings. Durations in milliseconds."""

    run_dir: Path = dataclasses.field(default_factory=_run_dir)
    """edged's run directory (agents.sock); the bridge's lock is ``bridge.lock`` in it."""
    log_level: str = "INFO"
    bridge_tick_ms: int = 20
    """The supervisor's period: heartbeat registers, alive frames, health, edged loss."""
    bridge_safe_after_ms: int = 1000
    """A device whose agent has lost edged this long gets its Modbus safe values written."""
    bridge_health_ms: int = 1000
    """How often each device reports its health metrics (health_online, ...) to edged."""
    bridge_health_file: Path | None = None
    """Touched on every healthy tick (for a service manager that watches a file); systemd's
    watchdog is fed through $NOTIFY_SOCKET when it is set."""
    bridge_trace_file: Path | None = None
    """A setting for test rigs: every reading reported to edged is appended here as CSV
    (``t_ns,device,metric,value,labels``; firmware_bridge._trace)."""
    links: tuple[LinkSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()
    source: str = ""
    """The config file read (for messages)."""


_TABLES = ("bridge", "link", "device")
_SCALARS = (
    "run_dir",
    "log_level",
    "bridge_tick_ms",
    "bridge_safe_after_ms",
    "bridge_health_ms",
    "bridge_health_file",
    "bridge_trace_file",
)


def load_bridge_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    file: Path | None = None,
) -> BridgeConfig:
    """flags (None ignored) > EDGE_<NAME> env > the TOML file (``file`` or
    $EDGE_BRIDGE_CONFIG) > defaults. Raises one ConfigError listing every mistake in the
    settings (unknown keys with the closest known one, bad values, out of range) and the
    first in the links and devices, each naming the key and its source."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(BridgeConfig)
    values: dict[str, Any] = {}
    problems: list[str] = []
    path = file or (Path(env["EDGE_BRIDGE_CONFIG"]) if env.get("EDGE_BRIDGE_CONFIG") else None)
    if path is not None:
        data = read_toml(path)
        src = f"config file {path}"
        for key in data:
            if key not in _TABLES:
                problems.append(
                    f"{src}: unknown table {key!r}{did_you_mean(key, _TABLES)}"
                    f" (tables: {', '.join(_TABLES)})"
                )
        bridge = data.get("bridge", {})
        if isinstance(bridge, dict):
            put_all(values, bridge, _SCALARS, hints, src, problems, " in [bridge]")
        else:
            problems.append(f"{src}: bridge must be a table: [bridge]")
        # links and devices: their first mistake stops the reading (a device's link is
        # looked up among the links), after the settings' mistakes are listed with it
        try:
            values["links"] = _links(data.get("link", []), src)
            values["devices"] = _devices(data.get("device", []), src, path.parent, values["links"])
        except ConfigError as exc:
            problems.append(str(exc))
            values.pop("links", None)
        values["source"] = str(path)
    apply_env_and_flags(values, _SCALARS, hints, env, flags, problems)
    cfg = BridgeConfig(**values)
    problems += [
        message
        for ok, message in (
            (cfg.bridge_tick_ms > 0, "bridge_tick_ms must be > 0"),
            (cfg.bridge_safe_after_ms > 0, "bridge_safe_after_ms must be > 0"),
            (cfg.bridge_health_ms > 0, "bridge_health_ms must be > 0"),
            (cfg.log_level.lower() in LOG_LEVELS, "log_level must be " + " / ".join(LOG_LEVELS)),
        )
        if not ok
    ]
    raise_problems(problems)
    return cfg


def _name(raw: Any, what: str, src: str) -> str:
    if not isinstance(raw, str) or not raw or not set(raw) <= _NAME_OK or len(raw) > 128:
        raise ConfigError(f"{src}: {what} name {raw!r} must be 1-128 letters, digits, _ . : -")
    return raw


def _links(raw: Any, src: str) -> tuple[LinkSpec, ...]:
    from ._link import BACKENDS

    out, seen = [], set()
    for i, t in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(t, dict):
            raise ConfigError(f"{src}: [[link]] #{i} must be a table")
        name = _name(t.get("name"), f"[[link]] #{i}", src)
        kind = t.get("kind")
        if kind not in BACKENDS:
            raise ConfigError(
                f"{src}: link {name}: kind {kind!r} is not one of {', '.join(sorted(BACKENDS))}"
            )
        if name in seen:
            raise ConfigError(f"{src}: duplicate link {name!r}")
        seen.add(name)
        opts = tuple(sorted((k, v) for k, v in t.items() if k not in ("name", "kind")))
        out.append(LinkSpec(name, kind, opts))
    return tuple(out)


def _devices(raw: Any, src: str, base: Path, links: tuple[LinkSpec, ...]) -> tuple[DeviceSpec, ...]:
    names = {lk.name for lk in links}
    out, seen = [], set()
    for i, t in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(t, dict):
            raise ConfigError(f"{src}: [[device]] #{i} must be a table")
        name = _name(t.get("name"), f"[[device]] #{i}", src)
        known = ("name", "link", "profile", "unit", "labels")
        unknown = sorted(set(t) - set(known))
        if unknown:
            raise ConfigError(
                f"{src}: device {name}: unknown keys {unknown}{did_you_mean(unknown[0], known)}"
            )
        if t.get("link") not in names:
            raise ConfigError(f"{src}: device {name}: link {t.get('link')!r} is not a [[link]]")
        if not isinstance(t.get("profile"), str):
            raise ConfigError(f'{src}: device {name}: profile = "FILE.yaml" is missing')
        unit = t.get("unit", 1)
        if not isinstance(unit, int) or isinstance(unit, bool) or not 0 <= unit <= 255:
            raise ConfigError(f"{src}: device {name}: unit must be 0-255")
        if name in seen:
            raise ConfigError(f"{src}: duplicate device {name!r}")
        seen.add(name)
        prof = Path(t["profile"]).expanduser()
        labels = tuple(sorted((str(k), str(v)) for k, v in (t.get("labels") or {}).items()))
        out.append(
            DeviceSpec(name, t["link"], prof if prof.is_absolute() else base / prof, unit, labels)
        )
    return tuple(out)
