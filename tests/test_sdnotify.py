"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET:
the message format, abstract addresses, inertness, and edged's READY / WATCHDOG / STATUS /
STOPPING, including that the WATCHDOG pings stop while the control loop thread is stuck."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge._sdnotify import Notifier
from edge.config import EdgeConfig
from edge.runtime import Edged

from .support import FakeSystemd


@pytest.fixture
def systemd(run_dir: Path) -> Iterator[FakeSystemd]:
    s = FakeSystemd(str(run_dir / "notify"))
    yield s
    s.close()


def test_messages_are_key_value_lines_in_one_datagram(systemd: FakeSystemd) -> None:
    with Notifier(systemd.address) as n:
        assert n.ready("agents 0 active\nsecond line")
        assert systemd.recv(1) == {"READY": "1", "STATUS": "agents 0 active second line"}
        assert n.status("ok") and not n.status("ok")  # unchanged: not sent again
        assert systemd.recv(1) == {"STATUS": "ok"}
        assert n.stopping()
        assert systemd.recv(1) == {"STOPPING": "1", "STATUS": "stopping"}
        assert n.sent == 3 and n.failed == 0


def test_abstract_namespace_address() -> None:
    name = f"@edge-test-notify-{os.getpid()}-{threading.get_ident()}"
    s = FakeSystemd(name)
    try:
        with Notifier.from_env({"NOTIFY_SOCKET": name}) as n:
            assert n.ready()
        assert s.recv(1) == {"READY": "1"}
    finally:
        s.close()


def test_inert_without_notify_socket() -> None:
    with Notifier.from_env({}) as n:
        assert not n.active
        assert not n.ready() and not n.watchdog(10**12) and not n.stopping()
        assert n.sent == 0 and n.failed == 0


def test_watchdog_is_rate_limited_and_belongs_to_watchdog_pid(systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}
    with Notifier.from_env(env) as other:  # pid 1 is not this process: no watchdog
        assert other.watchdog_ns == 0 and not other.watchdog(10**12)
    env["WATCHDOG_PID"] = str(os.getpid())
    with Notifier.from_env(env) as n:
        assert n.watchdog_ns == 400_000_000
        assert n.watchdog(10**12)
        assert not n.watchdog(10**12 + 99_000_000)  # within a quarter of WatchdogSec
        assert n.watchdog(10**12 + 100_000_000)
    assert systemd.count("WATCHDOG", 0.2) == 2


def test_a_gone_systemd_is_counted_not_raised(tmp_path: Path) -> None:
    with Notifier(str(tmp_path / "nobody-listens")) as n:
        assert not n.ready()
        assert n.failed == 1


@pytest.fixture
def notified_edged(
    make_cfg: Callable[..., EdgeConfig], systemd: FakeSystemd
) -> Iterator[Edged]:
    notifier = Notifier(systemd.address, watchdog_usec=200_000)  # ping every 50 ms
    d = Edged(make_cfg(), notifier=notifier)
    try:
        yield d
    finally:
        d.close()


def test_edged_ready_after_open_then_watchdog_from_the_loop(
    notified_edged: Edged, systemd: FakeSystemd
) -> None:
    notified_edged.open()
    assert systemd.recv(0.3) is None  # bound and open, but the loop is not turning yet
    notified_edged.start()
    ready = systemd.wait_for("READY")
    assert ready["STATUS"].startswith("agents 0 active 0 lost, rules v1 (")
    systemd.wait_for("WATCHDOG")
    assert systemd.count("WATCHDOG", 0.5) >= 3


def test_watchdog_stops_while_the_loop_thread_is_stuck(
    notified_edged: Edged, systemd: FakeSystemd
) -> None:
    loop = notified_edged.start().loop
    assert loop is not None
    systemd.wait_for("WATCHDOG")
    release = threading.Event()
    stuck = threading.Thread(target=lambda: loop.call(lambda: release.wait(10), timeout=15))
    stuck.start()  # the loop thread now runs release.wait(): its housekeeping cannot
    try:
        systemd.count("WATCHDOG", 0.1)  # a ping already in flight when it got stuck
        assert systemd.count("WATCHDOG", 0.6) == 0  # three whole ping intervals and more
    finally:
        release.set()
        stuck.join()
    systemd.wait_for("WATCHDOG")  # the loop turns again: so do the pings


def test_edged_says_stopping_on_close(notified_edged: Edged, systemd: FakeSystemd) -> None:
    notified_edged.start()
    systemd.wait_for("READY")
    notified_edged.close()
    assert systemd.wait_for("STOPPING")["STOPPING"] == "1"
