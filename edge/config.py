"""Typed configuration, loaded with one precedence: CLI flags > EDGE_* env > TOML file > defaults.

Defaults need no root and no /run or /var: the run directory (sockets, lock) lives under
$XDG_RUNTIME_DIR or /tmp, the data directory (LMDB) under $XDG_STATE_HOME or ~/.local/state.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._rt import parse_rt
from .errors import ConfigError

ENV_PREFIX = "EDGE_"
LOG_LEVELS = ("debug", "info", "warning", "error")
"""log_level's values, in any case (edged and edge-sync show them alike)."""
LOG_LEVEL_HELP = "debug, info, warning or error, in any case (default: info)."


def _default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        return Path(base) / "edge"
    return Path(f"/tmp/edge-{os.getuid()}")


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge"


@dataclasses.dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Everything edged (and edgectl, for finding edged) can be told.

    Durations are in milliseconds, sizes in bytes unless the name says otherwise.
    """

    run_dir: Path = dataclasses.field(default_factory=_default_run_dir)
    """Directory for agents.sock, ctl.sock and the lock. Created 0750."""
    data_dir: Path = dataclasses.field(default_factory=_default_data_dir)
    """Directory for the LMDB environment (``<data_dir>/state``)."""
    device_id: str = dataclasses.field(default_factory=lambda: os.uname().nodename)
    run_dir_group: str | None = None
    """Group that may reach the sockets (run dir chgrp'd to it, mode 0750). None: the user's."""
    rules_file: Path | None = None
    """A rule file (YAML/JSON) to run: at start it becomes a new version when its rules differ
    from the stored table's, unless that table is signed (kept, with a warning)."""
    device_groups: str = ""
    """Comma-separated groups this board belongs to (a rule table's scope may name them)."""
    rules_trusted_keys: str = ""
    """Comma-separated Ed25519 public keys (files written by `edgectl keys gen`, or 64 hex
    digits) whose signed rule tables edged accepts. A signed table by any other key is refused."""
    rules_require_signed: bool = False
    """Refuse unsigned rule tables, including local `edgectl rules push` of a rule file."""
    heartbeat_ms: int = 1000
    """Interval agents are told to beat at."""
    missed_beats: int = 3
    """Beats missed before an agent is declared lost."""
    max_msg_bytes: int = 1 << 20
    """ZeroMQ MAXMSGSIZE on agents.sock: bigger frames are dropped by libzmq unread."""
    max_batch: int = 4096
    """Samples per MetricBatch; a bigger batch is refused and counted."""
    urgent_priority: int = 200
    """Rules with this priority or higher send their instruction as soon as a sample (or a
    deadline) fires them, before the rest of its MetricBatch is evaluated; the others' leave
    after the batch, highest priority first. 256: none is urgent."""
    max_agents: int = 1024
    """Agents that may hold a slot at once: connected, or lost within ``agent_forget_s``."""
    agent_forget_s: float = 600.0
    """A lost agent (missed beats) keeps its slot, series state and rule instances this long
    (seconds) for it to come back; then it is forgotten (the audit log keeps its history)."""
    agent_keep_gone_s: float = 0.0
    """How long an agent that said Bye stays listed (seconds); 0 forgets it at once."""
    rcv_conn_bytes: int = 16 << 20
    """Bytes one agent connection may have waiting in edged's receive queue: libzmq stops
    reading a connection with RCVHWM = rcv_conn_bytes / (max_msg_bytes + 64 KiB) frames
    waiting (at least 4, at most 1000), so what a peer sends is bounded by bytes."""
    mem_trim_margin_bytes: int = 16 << 20
    """When RSS grows this far above its steady state (after a burst of big frames, say), the
    ctl thread returns the allocator's free memory to the kernel (malloc_trim); 0: never."""
    mem_settle_margin_bytes: int = 1 << 20
    """When RSS has stayed this far above its level after the last burst for 5 s without
    growing (a burst smaller than mem_trim_margin_bytes, over), the ctl thread trims once and
    releases the store's pages; 0: never."""
    mem_file_margin_bytes: int = 2 << 20
    """When the file-backed part of RSS (the store's pages LMDB has read) grows this far above
    its steady state, the ctl thread unmaps them (MADV_DONTNEED: they stay in the page cache);
    0: never."""
    max_targets: int = 64
    """Instructions one firing of a rule with ``target`` may send (agents in id order); the
    agents beyond are counted in ``instructions_targets_cut``."""
    max_metrics_per_agent: int = 4096
    fast_lane: bool = True
    """Offer the fast lane: the same protocol over AF_UNIX SOCK_SEQPACKET on
    ``<run_dir>/agents.seq`` beside ZeroMQ, for agents that ask for it (docs/protocol.md)."""
    max_connections: int = 1536
    """Connections to agents.sock at once (ZeroMQ); more are refused in their handshake, before
    any message of theirs is read (``connections_refused``); 0: no cap. Each agent holds one;
    the rest is room for agents reconnecting."""
    fast_lane_max_conns: int = 256
    """Fast-lane connections at once; more are closed as they come (``seq_refused_full``)."""
    fast_lane_hello_ms: int = 5000
    """A fast-lane connection that sends nothing this long is closed (``seq_silent_closed``)."""
    sndhwm: int = 1000
    """Per-agent send queue (messages) before instructions to a non-reading agent are dropped."""
    ack_timeout_ms: int = 5000
    """After this, an unacknowledged instruction is closed as timed out (and an SLA miss)."""
    stall_after_timeouts: int = 8
    """An agent whose instructions time out this many times in a row (no Ack between), or
    whose queue is full, is *stalled*: its instructions are counted
    (``instructions_suppressed_stalled``) instead of sent, for a back-off of 0.1 s doubling
    to 5 s, then one goes out as a probe; its Ack ends the stall. 0: only a full queue."""
    commit_interval_ms: float = 5.0
    """Group-commit period of the store writer."""
    map_size: int = 64 << 20
    max_map_size: int = 1 << 30
    stats_interval_ms: int = 10_000
    """How often a stats snapshot is written to the store."""
    metrics_addr: str = "127.0.0.1:9108"
    """host:port for the Prometheus text endpoint; empty disables it."""
    busy_poll_us: int = 0
    """After handling traffic, keep polling without blocking for this long (µs) before
    sleeping in the kernel: trades CPU for wake-up latency. 0 disables it."""
    cpu_affinity: str = ""
    """CPUs for the control loop's thread, e.g. "1" or "2-3"; empty: any."""
    rt_priority: int = 0
    """SCHED_FIFO priority (1-99) for the loop's thread; 0 leaves the normal scheduler."""
    mlock: bool = False
    """mlockall(MCL_CURRENT | MCL_FUTURE): no page faults to disk on the control path."""
    rt: str = ""
    """The real-time profile in one switch, ``CPU[:PRIO]`` (e.g. "1:80"; PRIO defaults to 50):
    the loop's thread and libzmq's I/O threads pinned to CPU at SCHED_FIFO PRIO, and mlock.
    Sets cpu_affinity, rt_priority and mlock; empty: those three as given."""
    gc_freeze: bool = True
    """Move every object alive after start-up into the GC's permanent generation, so a full
    collection on the loop thread never walks the ~100k objects of the imported libraries."""
    gc_interval_ms: int = 100
    """``edged`` only: automatic garbage collection is off and the ctl thread collects every
    gc_interval_ms instead (generation 1 every 10th time, 2 every 600th), so a collection no
    longer lands in the middle of the loop handling a message; 0 keeps Python's automatic GC."""
    # -- upstream sync (edge-sync; see README "Upstream sync") --------------------------------
    upstream_url: str = ""
    """NATS server(s) edge-sync connects to; comma-separated for a cluster. Empty: no
    upstream is configured, so edged keeps no aggregates (nothing would ever send them) and
    edge-sync refuses to start."""
    upstream_creds: Path | None = None
    """NATS credentials file (JWT + NKey seed), or None."""
    upstream_nkey: Path | None = None
    """File holding an NKey seed (``SU...``) to authenticate with, or None."""
    upstream_tls_ca: Path | None = None
    """CA bundle to verify the server with; setting any upstream_tls_* turns TLS on."""
    upstream_tls_cert: Path | None = None
    """Client certificate for mutual TLS (with upstream_tls_key)."""
    upstream_tls_key: Path | None = None
    upstream_create_streams: bool = True
    """Create the stream EDGE_AGG and the buckets EDGE_RULES / EDGE_DEVICES when absent (demo,
    tests). False when the central team owns them."""
    agg_window_s: float = 10.0
    """Seconds per aggregate window that edged appends to the outbox; 0 turns aggregates off.
    They are off too while no upstream_url is configured."""
    agg_max_samples: int = 50_000
    """Samples per window summarised per series (count/min/max/mean/last/p99) off the loop,
    taken evenly over the window; beyond it samples are still counted, not summarised (bounds
    the work the aggregation costs: it shares the interpreter with the loop)."""
    agg_max_series: int = 1000
    """Series per window in an aggregate; further series are counted as omitted."""
    outbox_max_bytes: int = 64 << 20
    """Cap on the bytes of records waiting in the outbox; beyond it outbox_policy applies."""
    outbox_max_age_s: float = 7 * 24 * 3600.0
    """Records older than this (seconds, wall time of append) are dropped, counted and audited."""
    outbox_policy: str = "drop-oldest"
    """What a full outbox does with a new record: "drop-oldest" (make room) or "drop-newest"
    (refuse the new record). Either way the appender never blocks."""
    sync_status_interval_s: float = 5.0
    """How often edge-sync publishes this device's status document upstream."""
    upstream_ping_interval_s: float = 10.0
    """edge-sync pings the server this often; two unanswered pings close the link (this is how
    a blackholed link is noticed)."""
    upstream_ack_timeout_s: float = 5.0
    """A publish not acknowledged within this (seconds) is sent again from the oldest record."""
    upstream_backoff_max_s: float = 30.0
    """Upper bound of the jittered exponential backoff between reconnects and resends."""
    sched_enabled: bool = True
    """Overload control: when the loop falls behind, run queued MetricBatches in priority order
    and shed low-scored ones (``edge.runtime._overload``). False: strictly arrival order."""
    sched_budget_us: int = 1000
    """A drain that has worked this long (µs) and then receives a batch that waited at least
    this long in the transport switches to the scheduler: Acks, Hellos, Heartbeats and Byes
    are handled at once, batches are queued and run highest-scored first until the backlog is
    gone. 0: as soon as a second frame is waiting."""
    sched_queue: int = 256
    """Batches the scheduler holds (each at most max_msg_bytes); when full, the lowest-scored
    is evicted (or the new one refused), counted and audited."""
    sched_lag_ms: float = 10.0
    """The ``lag`` probe's full scale: the loop counts as fully loaded (1.0) when a batch
    waits this long (ms) from its send to its evaluation, within the last 50 ms or more."""
    sched_shed_threshold: float = 0.8
    """While the load probe reads above this fraction, a batch scoring below
    ``sched_shed_below`` is shed (never evaluated), counted and audited."""
    sched_shed_below: float = 0.5
    """The score (0-1: 0.6 rule priority + 0.3 SLA urgency + 0.1 impact) under which work is
    shed while overloaded."""
    sched_probe: str = "lag"
    """What load means for shedding: ``lag`` (how far the loop runs behind its input, over
    ``sched_lag_ms``) or ``cpu`` (psutil's system-wide CPU use, the seed's choice)."""
    log_level: str = "INFO"
    log_rate_per_s: float = 5.0
    """Per-kind log rate for bad input (the rest is counted and summarised)."""
    wall_clock_file: Path | None = None
    """Test rigs only (edge-hil's clock faults): edged's wall time is the system's moved by the
    ``offset_ms skew_ppm`` this file holds (edge.clock.SteppedWallClock). None: the system's."""

    @property
    def aggregating(self) -> bool:
        """edged keeps aggregates only for an upstream: upstream_url set and agg_window_s > 0."""
        return bool(self.upstream_url.strip()) and self.agg_window_s > 0


def _coerce(name: str, hint: Any, raw: Any) -> Any:
    """``raw`` (TOML value, or text from the environment or a flag) as the field's type
    (Path, bool, int, float, str, or ``X | None``). Raises ValueError with a message for a
    person (never Python's own wording)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
            return None
        hint = args[0]
    if hint is Path:
        if not isinstance(raw, str | Path):
            raise ValueError(f"expected a path, got {raw!r}")
        return Path(os.path.expanduser(str(raw)))
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        digits = raw.strip().replace("_", "") if isinstance(raw, str) else ""
        if digits.lstrip("+-").isdigit():
            return int(digits)
        raise ValueError(f"expected a whole number, got {raw!r}")
    if hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                pass
            else:
                if math.isfinite(value):
                    return value
        raise ValueError(f"expected a number, got {raw!r}")
    if hint is str:
        if isinstance(raw, str):
            return raw
        raise ValueError(f'expected text (in quotes in TOML: "..."), got {raw!r}')
    raise ConfigError(f"{name}: unsupported type {hint!r}")  # pragma: no cover - a coding error


def coerce_setting(name: str, hint: Any, raw: Any, source: str) -> Any:
    """``raw`` (from a file, the environment or a flag) as the type ``hint``; ConfigError
    names ``name`` and ``source``. For a loader that stops at its first mistake; load_config
    and the bridge's collect them all (``apply_env_and_flags``)."""
    try:
        return _coerce(name, hint, raw)
    except ValueError as exc:
        raise ConfigError(f"{name} from {source}: {exc}") from None


def did_you_mean(key: str, names: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the known name closest to a misspelt ``key``, else ``""``."""
    import difflib  # only for a mistake: edged does not load it otherwise

    close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def raise_problems(problems: list[str]) -> None:
    """One ConfigError listing every problem (``N problems:`` first when more than one)."""
    if problems:
        head = f"{len(problems)} problems:\n  " if len(problems) > 1 else ""
        raise ConfigError(head + "\n  ".join(problems))


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    file: Path | None = None,
) -> EdgeConfig:
    """Build the config: flags (None values ignored) > ``EDGE_<NAME>`` env > TOML file > defaults.

    The TOML file is ``file``, else ``$EDGE_CONFIG``, else none. Its keys are the field
    names, at top level or under ``[edge]``. Raises one ConfigError listing every mistake
    (unknown keys with the closest known one, values of the wrong type, values out of range),
    each naming the key and where it came from.
    """
    env = os.environ if env is None else env
    hints = typing.get_type_hints(EdgeConfig)
    names = {f.name for f in dataclasses.fields(EdgeConfig)}
    values: dict[str, Any] = {}
    problems: list[str] = []

    path = file or (Path(env["EDGE_CONFIG"]) if env.get("EDGE_CONFIG") else None)
    if path is not None:
        data = read_toml(path)
        section: dict[str, Any] = data
        if isinstance(data.get("edge"), dict):
            section = dict(data["edge"])
            for key in data.keys() - {"edge"}:  # would be ignored: say so
                problems.append(
                    f"config file {path}: {key!r} is outside [edge]: move it under [edge]"
                    if key in names
                    else f"config file {path}: unknown key {key!r}{did_you_mean(key, names)}"
                )
        put_all(values, section, names, hints, f"config file {path}", problems)
    apply_env_and_flags(values, names, hints, env, flags, problems)
    cfg = EdgeConfig(**values)
    problems += _problems(cfg)
    raise_problems(problems)
    if cfg.rt:
        cpus, prio = parse_rt(cfg.rt)
        cfg = dataclasses.replace(cfg, cpu_affinity=cpus, rt_priority=prio, mlock=True)
    return cfg


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML config file's contents; ConfigError naming the file if it cannot be read or
    parsed. tomllib is imported only here: ~0.5 MB a board configured by flags never pays."""
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None


def put_all(
    values: dict[str, Any],
    section: Mapping[str, Any],
    names: Iterable[str],
    hints: Mapping[str, Any],
    source: str,
    problems: list[str],
    where: str = "",
) -> None:
    """A file section's settings into ``values``; each unknown key (with the closest known
    one) and each value of the wrong type appended to ``problems``. ``where``: `` in [x]``."""
    names = set(names)
    for key, raw in section.items():
        if key not in names:
            problems.append(f"{source}: unknown key {key!r}{where}{did_you_mean(key, names)}")
        else:
            _put(values, hints, key, raw, source, problems)


def apply_env_and_flags(
    values: dict[str, Any],
    names: Iterable[str],
    hints: Mapping[str, Any],
    env: Mapping[str, str],
    flags: Mapping[str, Any] | None,
    problems: list[str],
) -> None:
    """Lay ``EDGE_<NAME>`` variables, then flags (None values ignored), over ``values`` (what
    the file gave): the shared part of every component's precedence. An unknown flag or a bad
    value is appended to ``problems``, naming where it came from."""
    names = set(names)
    for name in sorted(names):
        key = ENV_PREFIX + name.upper()
        if key in env:
            _put(values, hints, name, env[key], f"environment {key}", problems)
    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        if name not in names:
            problems.append(f"unknown setting {name!r}{did_you_mean(name, names)}")
        else:
            _put(values, hints, name, raw, f"--{name.replace('_', '-')}", problems)


def _put(
    values: dict[str, Any],
    hints: Mapping[str, Any],
    name: str,
    raw: Any,
    source: str,
    problems: list[str],
) -> None:
    try:
        values[name] = _coerce(name, hints[name], raw)
    except ValueError as exc:
        problems.append(f"{name} from {source}: {exc}")


def split_host_port(addr: str, setting: str = "metrics_addr") -> tuple[str, int]:
    """``host:port`` (``[::1]:9108`` for IPv6) -> (host, port). Raises ConfigError naming
    ``setting`` when it is not of that form or the port is outside 0..65535."""
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{setting} {addr!r}: expected host:port, e.g. 127.0.0.1:9108")
    return host, int(port)


def _problems(cfg: EdgeConfig) -> list[str]:
    """Every range or consistency check ``cfg`` fails, as messages."""
    problems: list[str] = []
    if cfg.rt:
        try:
            parse_rt(cfg.rt)
        except ValueError as exc:
            problems.append(str(exc))
    if cfg.metrics_addr:
        try:
            split_host_port(cfg.metrics_addr)
        except ConfigError as exc:
            problems.append(str(exc))
    checks = [
        (cfg.heartbeat_ms > 0, "heartbeat_ms must be > 0"),
        (cfg.missed_beats >= 1, "missed_beats must be >= 1"),
        (cfg.agent_forget_s >= 0, "agent_forget_s must be >= 0"),
        (cfg.agent_keep_gone_s >= 0, "agent_keep_gone_s must be >= 0"),
        (cfg.rcv_conn_bytes >= 1 << 20, "rcv_conn_bytes must be >= 1 MiB"),
        (cfg.mem_trim_margin_bytes >= 0, "mem_trim_margin_bytes must be >= 0"),
        (cfg.mem_file_margin_bytes >= 0, "mem_file_margin_bytes must be >= 0"),
        (cfg.mem_settle_margin_bytes >= 0, "mem_settle_margin_bytes must be >= 0"),
        (4096 <= cfg.max_msg_bytes <= 64 << 20, "max_msg_bytes must be within 4 KiB..64 MiB"),
        (1 <= cfg.max_batch <= (cfg.max_msg_bytes - 64) // 24, "max_batch must fit max_msg_bytes"),
        (cfg.ack_timeout_ms > 0, "ack_timeout_ms must be > 0"),
        (cfg.stall_after_timeouts >= 0, "stall_after_timeouts must be >= 0"),
        (0 <= cfg.busy_poll_us <= 1_000_000, "busy_poll_us must be within 0..1000000"),
        (0 <= cfg.gc_interval_ms <= 60_000, "gc_interval_ms must be within 0..60000"),
        (0 <= cfg.rt_priority <= 99, "rt_priority must be within 0..99"),
        (0 <= cfg.urgent_priority <= 256, "urgent_priority must be within 0..256"),
        (1 <= cfg.max_targets <= 65_536, "max_targets must be within 1..65536"),
        (1 <= cfg.fast_lane_max_conns <= 65_536, "fast_lane_max_conns must be within 1..65536"),
        (0 <= cfg.max_connections <= 65_536, "max_connections must be within 0..65536"),
        (cfg.fast_lane_hello_ms > 0, "fast_lane_hello_ms must be > 0"),
        (cfg.map_size <= cfg.max_map_size, "map_size must be <= max_map_size"),
        (0 <= cfg.sched_budget_us <= 1_000_000, "sched_budget_us must be within 0..1000000"),
        (1 <= cfg.sched_queue <= 1_000_000, "sched_queue must be within 1..1000000"),
        (0.0 <= cfg.sched_shed_threshold <= 1.0, "sched_shed_threshold must be within 0..1"),
        (0.0 <= cfg.sched_shed_below <= 1.0, "sched_shed_below must be within 0..1"),
        (cfg.sched_probe in ("lag", "cpu"), "sched_probe must be 'lag' or 'cpu'"),
        (cfg.log_level.lower() in LOG_LEVELS, "log_level must be " + " / ".join(LOG_LEVELS)),
        (0.0 < cfg.sched_lag_ms <= 60_000.0, "sched_lag_ms must be within 0..60000 (exclusive 0)"),
        (len(str(cfg.run_dir / "agents.sock")) < 100, "run_dir is too long for an AF_UNIX path"),
        (cfg.agg_window_s >= 0, "agg_window_s must be >= 0 (0 turns aggregates off)"),
        (
            cfg.agg_max_samples == 0 or cfg.agg_max_samples >= 100,
            "agg_max_samples must be 0 (count only) or >= 100",
        ),
        (cfg.agg_max_series >= 0, "agg_max_series must be >= 0"),
        (cfg.outbox_max_bytes >= 4096, "outbox_max_bytes must be >= 4096"),
        (
            cfg.outbox_max_bytes <= cfg.max_map_size // 2,
            "outbox_max_bytes must be at most half of max_map_size: a fuller map would make "
            "room by pruning the audit log before the outbox's own cap applies",
        ),
        (cfg.outbox_max_age_s > 0, "outbox_max_age_s must be > 0"),
        (
            cfg.outbox_policy in ("drop-oldest", "drop-newest"),
            'outbox_policy must be "drop-oldest" or "drop-newest"',
        ),
        (cfg.sync_status_interval_s > 0, "sync_status_interval_s must be > 0"),
        (cfg.upstream_ping_interval_s > 0, "upstream_ping_interval_s must be > 0"),
        (cfg.upstream_ack_timeout_s > 0, "upstream_ack_timeout_s must be > 0"),
        (cfg.upstream_backoff_max_s >= 0.1, "upstream_backoff_max_s must be >= 0.1"),
    ]
    return problems + [message for ok, message in checks if not ok]
