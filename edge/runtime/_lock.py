"""Single-instance lock: an flock'd file holding the owner's pid, released by the kernel
if the process dies (no stale-lock cleanup needed)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from ..errors import AlreadyRunningError


def _stop_hint(pid: str) -> str:
    return f"`kill -TERM {pid}`" if pid.isdigit() else "`kill -TERM` its pid"


class InstanceLock:
    """``path`` flock'd for ``owner`` (the program named in the error); ``hint`` says how to
    run a second one beside it."""

    def __init__(
        self,
        path: Path,
        *,
        owner: str = "edged",
        hint: str = "use another --run-dir/--data-dir",
    ):
        self.path = Path(path)
        self.owner = owner
        self.hint = hint
        self._fd: int | None = None

    def acquire(self) -> Self:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode().strip() or "?"
            finally:
                os.close(fd)
            raise AlreadyRunningError(
                f"{self.owner} is already running (pid {pid}) with lock {self.path}; "
                f"stop it first ({_stop_hint(pid)}) or {self.hint}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing drops the flock
