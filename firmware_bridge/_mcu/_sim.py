"""The MCU firmware on real MicroPython (the WebAssembly port under Node.js), as a board.

``SimulatedMcu`` starts ``node runner.mjs`` with the master side of a fresh pty as the board's
UART; ``port`` is the slave's path, which the host opens with pyserial (McuLink) exactly as
it opens /dev/ttyACM0 on a real board. The firmware files are the ones in
firmware_bridge/mcu/, unchanged; only ``machine`` is the stand-in in wasm/machine.py.

The test (or the demo) drives the stand-ins: ``set_adc``, ``set_input``, ``fail_adc``,
``reset_on_write``; and watches ``events`` (boot, pin, pwm, wdt_start, wdt_fired, reset, crash),
each stamped with CLOCK_MONOTONIC ns (``t_ns``), the clock of edge.clock.SYSTEM_CLOCK.

The npm package is found at $EDGE_MICROPYTHON_MJS, else under <venv>/node/ where `make
mcu-wasm` (a dependency of `make test`) installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "mcu"
WASM_DIR = Path(__file__).resolve().parent / "wasm"
NPM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
NPM_VERSION = "1.27.0"

Event = dict[str, Any]


class SimulatorError(EdgeError):
    """The simulated MCU cannot run (Node.js or the MicroPython package missing) or stopped."""


def micropython_mjs() -> Path:
    """Where micropython.mjs is; raises SimulatorError saying how to install it."""
    env = os.environ.get("EDGE_MICROPYTHON_MJS")
    candidates = [Path(env)] if env else []
    rel = Path("node") / "node_modules" / NPM_PACKAGE / "micropython.mjs"
    candidates += [Path(sys.prefix) / rel, FIRMWARE_DIR.parent.parent / ".venv" / rel]
    for c in candidates:
        if c.is_file():
            return c
    raise SimulatorError(
        f"MicroPython WebAssembly ({NPM_PACKAGE}@{NPM_VERSION}) is not installed: run "
        f"`make mcu-wasm` (needs npm), or set EDGE_MICROPYTHON_MJS to its micropython.mjs"
    )


class SimulatedMcu:
    """One simulated board; a context manager, ``close()`` idempotent."""

    def __init__(self, firmware_dir: Path = FIRMWARE_DIR, *, node: str | None = None,
                 log: Callable[[str], None] | None = None):
        self._firmware_dir = Path(firmware_dir)
        found = node or shutil.which("node")
        if not found:
            raise SimulatorError("Node.js is not installed (apt-get install nodejs npm)")
        self._node: str = found
        self._mjs = micropython_mjs()
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._master = -1
        self._slave = -1
        self._ctl_w = -1
        self._reader: threading.Thread | None = None
        self._stderr_reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._stderr: list[str] = []
        self._query_id = 0
        self.port = ""

    def start(self) -> SimulatedMcu:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a UART carries bytes
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        ctl_r, ctl_w = os.pipe()
        os.set_blocking(ctl_r, False)
        self._ctl_w = ctl_w
        args = [self._node, str(WASM_DIR / "runner.mjs"), "--mjs", str(self._mjs),
                "--fw", str(self._firmware_dir), "--shim", str(WASM_DIR / "machine.py"),
                "--uart-fd", str(master)]
        try:
            self._proc = subprocess.Popen(args, stdin=ctl_r, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, pass_fds=(master,))
        finally:
            os.close(ctl_r)
        self._reader = threading.Thread(target=self._read_events, name="mcu-sim-events",
                                        daemon=True)
        self._stderr_reader = threading.Thread(target=self._read_stderr, name="mcu-sim-log",
                                               daemon=True)
        self._reader.start()
        self._stderr_reader.start()
        return self

    def __enter__(self) -> SimulatedMcu:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stand-ins ---------------------------------------------------------------------------

    def set_adc(self, channel: int, raw_u16: int) -> None:
        self._send({"op": "adc", "ch": channel, "value": raw_u16})

    def fail_adc(self, channel: int, mode: str | None, ms: int = 0) -> None:
        """mode: "oserror" (OSError per read), "raise" (RuntimeError per read), "stall" (the
        next read blocks ``ms`` ms, a hung peripheral), None (healthy again)."""
        self._send({"op": "adc_fail", "ch": channel, "mode": mode, "ms": ms})

    def set_input(self, pin: int, level: int) -> None:
        self._send({"op": "pin_in", "pin": pin, "value": level})

    def reset_on_write(self, pin: int, level: int) -> None:
        """Reset the board (as a brown-out) when the firmware next drives ``pin`` to ``level``."""
        self._send({"op": "reset_on_write", "pin": pin, "value": level})

    def query(self, timeout_s: float = 5.0) -> Event:
        """The runner's view now: pins, pwm, watchdog feeds and ms since the last feed, boots."""
        self._query_id += 1
        qid = self._query_id
        self._send({"op": "query", "id": qid})
        return self.wait_for(lambda e: e["ev"] == "state" and e.get("id") == qid, timeout_s)

    # -- events ------------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        with self._cond:
            return list(self._events)

    def wait_for(self, pred: Callable[[Event], bool], timeout_s: float, after: int = 0) -> Event:
        """The first event from index ``after`` on that matches; raises SimulatorError on
        timeout (with the firmware's log) or if the runner exited."""
        import time

        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for e in self._events[after:]:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or (self._proc is not None and self._proc.poll() is not None
                                 and not self._reader_alive()):
                    raise SimulatorError(
                        f"no matching event within {timeout_s} s; last events "
                        f"{self._events[-5:]}; log {self._stderr[-10:]}")
                self._cond.wait(min(left, 0.05))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def _read_events(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["t_ns"] = int(ev.get("t_ns", 0))
            with self._cond:
                self._events.append(ev)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._stderr.append(line)
                del self._stderr[:-200]
            if self._log:
                self._log(line)

    @property
    def log(self) -> list[str]:
        with self._cond:
            return list(self._stderr)

    def _send(self, msg: dict[str, Any]) -> None:
        if self._ctl_w < 0:
            raise SimulatorError("the simulated MCU is closed")
        os.write(self._ctl_w, (json.dumps(msg) + "\n").encode())

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                self._send({"op": "stop"})
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._ctl_w >= 0:
            os.close(self._ctl_w)
            self._ctl_w = -1
        for t in (self._reader, self._stderr_reader):
            if t is not None:
                t.join(timeout=5)
        if proc is not None:
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1


def run_micropython(code: str, files: dict[str, str] | None = None, *,
                    timeout_s: float = 60.0) -> str:
    """Run ``code`` once on MicroPython (wasm) with ``files`` in its root; returns what it
    printed. Raises SimulatorError with MicroPython's traceback if it raised."""
    import tempfile

    node = shutil.which("node")
    if not node:
        raise SimulatorError("Node.js is not installed (apt-get install nodejs npm)")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as job:
        json.dump({"files": files or {}, "code": code}, job)
        job.flush()
        proc = subprocess.run([node, str(WASM_DIR / "run.mjs"), "--mjs", str(micropython_mjs()),
                               "--job", job.name], capture_output=True, text=True,
                              timeout=timeout_s)
    if proc.returncode != 0:
        raise SimulatorError(f"MicroPython raised:\n{proc.stderr}")
    return proc.stdout
