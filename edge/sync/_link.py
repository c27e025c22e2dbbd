"""The NATS link: one connection at a time, its state, and reconnection with bounded backoff.

::

            +--------- connect failed: wait backoff.next() (bounded, jittered) ----------+
            v                                                                            |
    DOWN --> CONNECTING --connected (+ streams/buckets ensured)--> UP --closed/stale--> DOWN

nats-py's own reconnection waits a fixed time between attempts and hides the state from us,
so the link connects with ``allow_reconnect=False`` and reconnects itself: each connection is
a :class:`Session` that components take with :meth:`Link.session` and drop when its ``closed``
event fires. A blackholed link is found by nats-py's pings (``ping_interval_s`` x
``max_outstanding_pings``), which close the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from ..clock import Backoff as Backoff
from ..config import EdgeConfig
from ..errors import ConfigError

log = logging.getLogger("edge.sync")

AGG_STREAM = "EDGE_AGG"
"""Stream of aggregates; subjects :data:`AGG_SUBJECTS`."""
AGG_SUBJECTS = "edge.agg.>"
AGG_SUBJECT_PREFIX = "edge.agg."
"""A device publishes to ``edge.agg.<device_id>``."""
RULES_BUCKET = "EDGE_RULES"
"""KV bucket of signed rule tables: keys ``device.<device_id>`` and ``group.<group>``."""
DEVICES_BUCKET = "EDGE_DEVICES"
"""KV bucket of device status documents: key ``<device_id>``."""
DUPLICATE_WINDOW_S = 600.0
"""The de-duplication window of EDGE_AGG when edge-sync creates it (seconds)."""


class LinkState(enum.Enum):
    DOWN = "down"
    CONNECTING = "connecting"
    UP = "up"


@dataclass
class Session:
    """One live connection. ``closed`` is set once it is gone (for good: the next connection is
    a new Session)."""

    nc: NatsClient
    js: JetStreamContext
    epoch: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class LinkOptions:
    """Connection tuning (seconds). The defaults suit a board on a cellular link."""

    connect_timeout_s: float = 5.0
    ping_interval_s: float = 10.0
    max_outstanding_pings: int = 2
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: EdgeConfig) -> LinkOptions:
        """``upstream_ping_interval_s`` and ``upstream_backoff_max_s`` from the config."""
        return cls(
            ping_interval_s=cfg.upstream_ping_interval_s,
            backoff_initial_s=min(0.2, cfg.upstream_backoff_max_s),
            backoff_max_s=cfg.upstream_backoff_max_s,
        )


def tls_context(cfg: EdgeConfig) -> ssl.SSLContext | None:
    """The client TLS context from ``upstream_tls_*``; None when none of them is set (a
    ``tls://`` URL then uses the system's CAs)."""
    if not (cfg.upstream_tls_ca or cfg.upstream_tls_cert or cfg.upstream_tls_key):
        return None
    ctx = ssl.create_default_context(
        cafile=str(cfg.upstream_tls_ca) if cfg.upstream_tls_ca else None
    )
    if cfg.upstream_tls_cert:
        ctx.load_cert_chain(
            str(cfg.upstream_tls_cert),
            str(cfg.upstream_tls_key) if cfg.upstream_tls_key else None,
        )
    return ctx


_SCHEMES = ("nats", "tls", "ws", "wss")


def check_upstream_config(cfg: EdgeConfig) -> None:
    """What edge-sync can tell is wrong before its first connect: every URL of
    ``upstream_url`` (scheme, port) and every credential or TLS file (readable, loadable).
    An unreachable or unresolvable server is not checked: a board starts offline. Raises
    ConfigError naming the setting and what to do."""
    from urllib.parse import urlsplit

    for url in (u.strip() for u in cfg.upstream_url.split(",")):
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ConfigError(f"upstream_url {url!r}: the port is not a number") from None
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(
                f"upstream_url {url!r}: expected {'|'.join(_SCHEMES)}://host[:port], "
                "comma-separated for a cluster"
            )
    for name in ("upstream_creds", "upstream_nkey", "upstream_tls_ca", "upstream_tls_cert",
                 "upstream_tls_key"):
        path = getattr(cfg, name)
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"{name} {path}: {exc.strerror}; provide the file or unset {name}"
            ) from None
    try:
        tls_context(cfg)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upstream_tls_*: cannot load: {exc}") from None


def connect_options(cfg: EdgeConfig, opts: LinkOptions) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` from the config (URL, creds file, NKey seed,
    TLS). Reconnection is ours, so nats-py's is off."""
    kw: dict[str, Any] = {
        "servers": [u.strip() for u in cfg.upstream_url.split(",") if u.strip()],
        "name": f"edge-sync {cfg.device_id}",
        "allow_reconnect": False,
        # nats-py tries each server at least twice per connect() even so, waiting
        # reconnect_time_wait between: keep that short, our backoff paces the attempts
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.05,
        "connect_timeout": opts.connect_timeout_s,
        "ping_interval": opts.ping_interval_s,
        "max_outstanding_pings": opts.max_outstanding_pings,
    }
    if cfg.upstream_creds:
        kw["user_credentials"] = str(cfg.upstream_creds)
    if cfg.upstream_nkey:
        kw["nkeys_seed"] = str(cfg.upstream_nkey)
    tls = tls_context(cfg)
    if tls is not None:
        kw["tls"] = tls
    return kw


class Link:
    """Keeps one NATS connection up while :meth:`run` runs.

    ``state`` (a :class:`LinkState`), ``last_error`` (text or None), ``connects`` and
    ``disconnects`` (counts), ``retry_in_s`` (the backoff now being waited, 0 when none) are
    for status reports; ``on_change`` is called (no arguments) after each change.
    """

    def __init__(
        self,
        cfg: EdgeConfig,
        opts: LinkOptions | None = None,
        *,
        on_change: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.opts = opts or LinkOptions.from_config(cfg)
        self.backoff = Backoff(self.opts.backoff_initial_s, self.opts.backoff_max_s, rng=rng)
        self.state = LinkState.DOWN
        self.last_error: str | None = None
        self.connects = 0
        self.disconnects = 0
        self.retry_in_s = 0.0
        self.max_retry_in_s = 0.0
        self._on_change = on_change
        self._session: Session | None = None
        self._up = asyncio.Event()
        self._epoch = 0

    @property
    def current(self) -> Session | None:
        """The live session, or None while the link is not up."""
        return self._session if self.state is LinkState.UP else None

    async def session(self) -> Session:
        """Wait until the link is up; return its session."""
        while True:
            s = self.current
            if s is not None and not s.closed.is_set():
                return s
            self._up.clear()
            await self._up.wait()

    async def run(self, stopping: asyncio.Event) -> None:
        """Connect, hold, reconnect after a loss, until ``stopping`` is set."""
        try:
            while not stopping.is_set():
                self._set(LinkState.CONNECTING)
                session = await self._connect()
                if session is None:
                    self._set(LinkState.DOWN)
                    await self._wait(stopping, self.backoff.next())
                    continue
                self.backoff.reset()
                self._session = session
                self._set(LinkState.UP)
                self._up.set()
                stop = asyncio.ensure_future(stopping.wait())
                lost = asyncio.ensure_future(session.closed.wait())
                try:
                    await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    lost.cancel()
                self._session = None
                await self._close(session)
                if not stopping.is_set():
                    self.disconnects += 1
                    self._set(LinkState.DOWN)
                    log.warning("upstream link lost: %s", self.last_error or "closed")
                    await self._wait(stopping, self.backoff.next())
        finally:
            s, self._session = self._session, None
            if s is not None:
                await self._close(s)
            self._set(LinkState.DOWN)

    async def _connect(self) -> Session | None:
        self._epoch += 1
        epoch = self._epoch
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async def on_disconnected() -> None:
            closed.set()

        async def on_error(exc: Exception) -> None:
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.debug("nats error: %s", self.last_error)

        kw = connect_options(self.cfg, self.opts)
        nc = NatsClient()
        try:
            await nc.connect(
                **kw, closed_cb=on_closed, disconnected_cb=on_disconnected, error_cb=on_error
            )
        except Exception as exc:  # noqa: BLE001 - any failure to connect is a retry
            self.last_error = f"connect {self.cfg.upstream_url}: {_describe(exc)}"
            log.info("upstream not reachable: %s", self.last_error)
            # a refused handshake (authorization) leaves nats-py's transport open
            with contextlib.suppress(Exception):
                await nc.close()
            return None
        js = nc.jetstream(timeout=self.opts.connect_timeout_s)
        session = Session(nc, js, epoch, closed)
        if self.cfg.upstream_create_streams:
            try:
                await ensure_streams(js)
            except Exception as exc:  # noqa: BLE001 - a half-up link is a retry, not a crash
                self.last_error = f"creating streams: {_describe(exc)}"
                log.warning("upstream: %s", self.last_error)
                await self._close(session)
                return None
        self.connects += 1
        self.last_error = None
        log.info("upstream link up: %s", nc.connected_url.netloc if nc.connected_url else "?")
        return session

    async def _close(self, session: Session) -> None:
        session.closed.set()
        with contextlib.suppress(Exception):
            await session.nc.close()

    async def _wait(self, stopping: asyncio.Event, delay_s: float) -> None:
        self.retry_in_s = delay_s
        self.max_retry_in_s = max(self.max_retry_in_s, delay_s)
        self._notify()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay_s)
        self.retry_in_s = 0.0

    def _set(self, state: LinkState) -> None:
        if state is not self.state:
            self.state = state
            self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()


async def ensure_streams(js: JetStreamContext) -> None:
    """Create the stream EDGE_AGG and the buckets EDGE_RULES and EDGE_DEVICES when absent.
    Existing ones are left as their owner configured them."""
    from nats.js.api import StreamConfig

    try:
        await js.stream_info(AGG_STREAM)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=AGG_STREAM,
                subjects=[AGG_SUBJECTS],
                duplicate_window=DUPLICATE_WINDOW_S,
            )
        )
    for bucket, history in ((RULES_BUCKET, 5), (DEVICES_BUCKET, 1)):
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            await js.create_key_value(bucket=bucket, history=history)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
