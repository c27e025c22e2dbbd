"""Helpers shared by the integration tests: polling with a deadline, a raw protocol peer."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

from edge.transport import AGENTS_SOCK, endpoint
from edge.wire import (
    Hello,
    MessageType,
    MetricDecl,
    decode_notice,
    decode_welcome,
    encode_hello,
    verify,
)

T = TypeVar("T")

SEED_RULE = """\
- rule_id: rule_001
  rule_name: restart agent on high CPU
  rule_content: cpu_usage > 0.9 for 10s
  action: restart_agent
  priority: 8
  sla_threshold: 10
"""
"""The seed's rule object, verbatim (its REST payload as YAML)."""

RULES = """\
- rule_id: cpu_hot
  rule_name: restart agent on high CPU
  rule_content: cpu_usage > 0.9
  action: restart_agent
  priority: 8
  sla_threshold: 50
- rule_id: temp_hot
  rule_content: temp > 80
  action: throttle
  priority: 3
  sla_threshold: 50
  params: {rate: 0.5}
- rule_id: temp_critical
  rule_content: temp > 80
  action: safe_state
  priority: 200
  sla_threshold: 50
- rule_id: held
  rule_content: load > 1 for 200ms
  action: alert
  priority: 1
  sla_threshold: 1000
"""


def wait_for(pred: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll ``pred`` until truthy (returns its value) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class RawPeer:
    """A hand-driven DEALER, to send what the SDK never would."""

    def __init__(self, run_dir: Path, identity: bytes, rcvhwm: int = 1000):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.connect(endpoint(run_dir, AGENTS_SOCK))

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout_ms: int = 3000) -> bytes:
        assert self.sock.poll(timeout_ms), "no reply from edged"
        return self.sock.recv()

    def hello(
        self, agent_id: str, metrics: tuple[str, ...] = ("cpu_usage",), heartbeat_ms: int = 0
    ) -> Any:
        self.send(
            encode_hello(
                Hello(agent_id, tuple(MetricDecl(m) for m in metrics), heartbeat_ms=heartbeat_ms)
            )
        )
        buf = self.recv()
        assert verify(buf) is MessageType.WELCOME, decode_notice(buf)
        return decode_welcome(buf)

    def notice(self) -> Any:
        buf = self.recv()
        assert verify(buf) is MessageType.NOTICE
        return decode_notice(buf)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: collects ``KEY=value`` datagrams."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[dict[str, str]] = []

    def recv(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append(msg)
        return msg

    def wait_for(self, key: str, timeout: float = 5.0) -> dict[str, str]:
        """The next message carrying ``key`` (others are kept in ``messages``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None and key in msg:
                return msg
        raise AssertionError(f"no {key} from the daemon within {timeout} s: {self.messages}")

    def count(self, key: str, window_s: float) -> int:
        """How many messages with ``key`` arrive during ``window_s`` seconds."""
        n = 0
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            n += msg is not None and key in msg
        return n

    def close(self) -> None:
        self.sock.close()


EXIT_DEADLINE_S = 5.0
"""How long a process that failed to start may take to exit before a test calls it hung. Not
the one-second goal itself: the machine is shared, and Python's start-up alone takes a few
hundred ms under load (the chaos campaign reports the measured time, README "Reliability")."""


def run_to_exit(code: str, *argv: str) -> tuple[int, str, float]:
    """Run ``python -c code argv`` (a command's main) until it exits, at most
    EXIT_DEADLINE_S: (exit code, stderr, seconds it ran). EDGE_CONFIG is cleared."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "EDGE_CONFIG": ""},
    )
    try:
        _, err = proc.communicate(timeout=EXIT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running {EXIT_DEADLINE_S} s after a failed start: {err}")
    return proc.returncode, err, time.monotonic() - t0


def one_line(err: str) -> str:
    """The only line of ``err`` (fails when there are more, or none)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    return lines[0]


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[str]:
    """``path`` created unwritable for this user; yields the error a process meets there. Root
    writes through any mode bits, so as root it is a read-only tmpfs mounted there (skipped
    when mounting is not permitted)."""
    path.mkdir(mode=0o555)
    if os.geteuid() != 0:
        try:
            yield "Permission denied"
        finally:
            path.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"as root, an unwritable dir needs a read-only mount: {r.stderr.strip()}")
    try:
        yield "Read-only file system"
    finally:
        subprocess.run(["umount", str(path)], check=True)
        path.chmod(0o755)
