"""systemd's notify protocol without libsystemd: one datagram per message to $NOTIFY_SOCKET.

::

    NOTIFY_SOCKET=/run/systemd/notify      a path            -> AF_UNIX datagram to that path
    NOTIFY_SOCKET=@/org/freedesktop/...    '@' = abstract     -> the same, with a leading NUL byte
    WATCHDOG_USEC=20000000                 WatchdogSec in µs  -> ``watchdog_ns``, 0 without it
    WATCHDOG_PID=1234                      the watchdog is for that process only

Messages are ``KEY=value`` lines (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``,
``STATUS=one line``). Without $NOTIFY_SOCKET (not started by systemd with ``Type=notify``)
every call does nothing and returns False, so the daemons call it unconditionally.

A send never raises and never blocks (MSG_DONTWAIT): systemd not reading must not stall the
control loop. Failures are counted in ``failed``.

Who sends WATCHDOG matters more than how: edged pings from the control loop's own
housekeeping (``ControlLoop.on_housekeeping``), so a stuck loop stops the pings and systemd
kills and restarts it. A timer thread would keep pinging for a dead loop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """The daemon's side of sd_notify. ``Notifier.from_env()`` reads the environment."""

    def __init__(self, address: str | None, *, watchdog_usec: int = 0):
        """``address`` is $NOTIFY_SOCKET's value (None or "": inert); ``watchdog_usec`` is
        WatchdogSec in microseconds (0: systemd expects no pings)."""
        self.address = address or None
        self.watchdog_ns = max(0, watchdog_usec) * 1000
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._last_watchdog_ns = 0
        self._last_status = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """From $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (``env`` defaults to
        os.environ). A WATCHDOG_PID that is not this process turns the watchdog off (a
        child that inherited the environment must not ping for its parent)."""
        env = os.environ if env is None else env
        usec = _int(env.get("WATCHDOG_USEC"))
        pid = env.get("WATCHDOG_PID")
        if pid and _int(pid) != os.getpid():
            usec = 0
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=usec)

    @property
    def active(self) -> bool:
        """True when started by systemd with a notify socket."""
        return self.address is not None

    # ------------------------------------------------------------ messages

    def ready(self, status: str = "") -> bool:
        """READY=1 (with a STATUS line): call once everything a client needs is up."""
        return self.send({"READY": "1", **({"STATUS": _line(status)} if status else {})})

    def stopping(self, status: str = "stopping") -> bool:
        return self.send({"STOPPING": "1", "STATUS": _line(status)})

    def status(self, text: str) -> bool:
        """STATUS=text, only when it changed since the last one (``systemctl status`` shows it)."""
        line = _line(text)
        if line == self._last_status:
            return False
        self._last_status = line
        return self.send({"STATUS": line})

    def watchdog(self, now_ns: int) -> bool:
        """WATCHDOG=1 when a quarter of WatchdogSec has passed since the last ping (call it
        as often as convenient from the thread whose health it vouches for)."""
        if not self.watchdog_ns or now_ns - self._last_watchdog_ns < self.watchdog_ns // 4:
            return False
        self._last_watchdog_ns = now_ns
        return self.send({"WATCHDOG": "1"})

    def send(self, fields: Mapping[str, str]) -> bool:
        """One datagram of ``KEY=value`` lines; False when inert or when the send failed."""
        if self.address is None:
            return False
        data = "".join(f"{k}={v}\n" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
            self._sock.sendto(data, socket.MSG_DONTWAIT, addr)
        except OSError:
            self.failed += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _line(text: str) -> str:
    """STATUS is one line: newlines would start a new KEY=value field."""
    return " ".join(text.split())[:400]
