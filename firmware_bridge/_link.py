"""Links: the template-method base every backend shares, the circuit breaker, and the lazily
imported backend table.

:class:`Link` is python-can's ``BusABC`` shape: the base owns the supervised thread, timeouts,
reopening with bounded jittered backoff (edge.clock.Backoff), per-device circuit breakers and
the counters; a backend implements ``_open()``, ``_close()`` and ``_step(budget_s)`` (one turn
of reading and writing on an open link). An exception out of ``_step`` or ``_open`` never ends
the thread: it is counted, the link is closed and reopened after the backoff.

Backends are ``kind -> (module, class)`` in :data:`BACKENDS`, imported on first use, so a PLC
without python-can still runs its Modbus devices; an unknown kind or a missing optional driver
raises :class:`BackendError` saying which extra to install.
"""

from __future__ import annotations

import enum
import importlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

from edge.clock import SYSTEM_CLOCK, Backoff, Clock

from ._errors import BackendError

log = logging.getLogger("firmware_bridge")

BACKENDS: dict[str, tuple[str, str]] = {
    "modbus_tcp": ("firmware_bridge._modbus", "ModbusTcpLink"),
    "modbus_rtu": ("firmware_bridge._modbus", "ModbusRtuLink"),
    "can": ("firmware_bridge._can", "CanLink"),
    "mcu": ("firmware_bridge._mcu_backend", "McuSerialLink"),
}
"""Link kind -> (module, class); imported lazily by :func:`backend`."""

_EXTRAS = {"modbus_tcp": "modbus", "modbus_rtu": "modbus,serial", "can": "can", "mcu": "serial"}


def backend(kind: str) -> type[Link]:
    """The Link class for ``kind``. Raises BackendError (unknown kind, driver not installed)."""
    try:
        module, cls = BACKENDS[kind]
    except KeyError:
        raise BackendError(
            f"unknown link kind {kind!r}; kinds: {', '.join(sorted(BACKENDS))}"
        ) from None
    try:
        return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise BackendError(
            f"link kind {kind!r} needs {exc.name or 'its driver'}: "
            f"pip install 'edge-runtime[{_EXTRAS.get(kind, kind)}]'"
        ) from None


class BreakerState(enum.Enum):
    CLOSED = "closed"  # requests go out
    OPEN = "open"  # the device failed: nothing goes out until the probe time
    HALF_OPEN = "half_open"  # one probe request is out


class Breaker:
    """A circuit breaker per device: ``threshold`` failures in a row open it; after a jittered
    backoff one probe is let through (half open); a success closes it, a failure opens it
    again with a longer backoff. Times are the clock's monotonic ns."""

    def __init__(
        self,
        threshold: int = 3,
        backoff: Backoff | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.threshold = threshold
        self.backoff = backoff or Backoff(0.2, 5.0)
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened = 0  # times it opened
        self._probe_at = 0

    def allow(self) -> bool:
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self.clock.monotonic_ns() >= self._probe_at:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.state = BreakerState.CLOSED
        self.backoff.reset()

    def failure(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            if self.state is not BreakerState.OPEN:
                self.opened += 1
            self.state = BreakerState.OPEN
            self._probe_at = self.clock.monotonic_ns() + int(self.backoff.next() * 1e9)

    @property
    def online(self) -> bool:
        return self.state is BreakerState.CLOSED


class Link:
    """One bus or connection and the devices on it. Subclasses set ``kind`` and implement
    ``_open``, ``_close`` and ``_step``; the base runs them on its own thread."""

    kind = ""

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        clock: Clock = SYSTEM_CLOCK,
        backoff: Backoff | None = None,
    ):
        self.name = name
        self.options = dict(options)
        self.clock = clock
        self.backoff = backoff or Backoff(0.05, 2.0)
        self.counters: dict[str, int] = {
            "opens": 0,
            "open_errors": 0,
            "step_errors": 0,
            "reopens": 0,
        }
        self.last_error = ""
        self.is_open = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------ backend hooks

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _step(self, budget_s: float) -> None:
        """One turn on the open link, returning within about ``budget_s`` seconds."""
        raise NotImplementedError

    # ------------------------------------------------------------ the template

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def start(self) -> Link:
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name=f"bridge-link-{self.name}")
            self._thread.start()
        return self

    def wake(self) -> None:
        """Hook for backends whose ``_step`` waits: make it return early (new work)."""

    def _supervise(self) -> None:
        while not self._stop.is_set():
            if not self.is_open:
                try:
                    self._open()
                except Exception as exc:
                    self.count("open_errors")
                    self._failed(f"open: {type(exc).__name__}: {exc}")
                    continue
                self.is_open = True
                self.count("opens")
                if self.counters["opens"] > 1:
                    self.count("reopens")
                self.on_open()
            try:
                self._step(0.05)
            except Exception as exc:
                self.count("step_errors")
                self.is_open = False
                self._close_quietly()
                self._failed(f"{type(exc).__name__}: {exc}")
                continue
            self.backoff.reset()
        self._close_quietly()
        self.is_open = False

    def _failed(self, why: str) -> None:
        if why != self.last_error:
            log.warning("link %s (%s): %s; retrying with backoff", self.name, self.kind, why)
        self.last_error = why
        self.on_down()
        self._stop.wait(self.backoff.next())

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception as exc:  # closing a broken driver: nothing else to do
            log.debug("link %s: close failed: %s", self.name, exc)

    def on_open(self) -> None:
        """Called on the link's thread after each successful open."""

    def on_down(self) -> None:
        """Called on the link's thread when the link failed (before the backoff)."""

    def close(self) -> None:
        """Stop the thread and close the link. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(10)
        else:
            self._close_quietly()

    def __enter__(self) -> Link:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
