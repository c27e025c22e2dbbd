"""The data dir's disk-full fault: edged's data directory on a small tmpfs of the rig's own.

::

    rig.data_dir  <- mount -t tmpfs -o size=SIZE_MB   (before edged starts; root only)
    fault start   a filler file written until ENOSPC, then ``leave_kb`` given back
    fault end     the filler removed: the space is free again
    teardown      umount (lazy when busy), always, whatever happened before

Mounting needs root (CAP_SYS_ADMIN): where the rig may not mount, the scenario's verdict is
SKIP with the reason (:class:`RigSkipError`), and ``edge-hil check`` says so beforehand.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from pathlib import Path

from ._errors import RigSkipError

_CHUNK = b"\xff" * (64 << 10)


def fill_until_full(path: Path, leave_bytes: int = 0) -> int:
    """Append to ``path`` until its filesystem is full (ENOSPC), then give ``leave_bytes``
    back; returns the bytes the file holds."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, _CHUNK)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        kept = max(0, os.fstat(fd).st_size - leave_bytes)
        os.ftruncate(fd, kept)
    finally:
        os.close(fd)
    return kept


def _mount(path: Path, size_mb: float) -> str:
    """Mount a tmpfs of ``size_mb`` MiB on ``path``; "" or what went wrong."""
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={max(1, round(size_mb))}m",
                            "tmpfs", str(path)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mount: {exc}"
    return "" if r.returncode == 0 else (r.stderr.strip() or f"mount exited with code {r.returncode}")


def _umount(path: Path) -> str:
    """Unmount ``path`` (lazily if it is still busy); "" or what went wrong."""
    try:
        r = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            r = subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"umount {path}: {exc}"
    return "" if r.returncode == 0 else f"umount {path}: {r.stderr.strip()}"


def mount_problem() -> str:
    """Why the rig cannot mount a tmpfs here ("" when it can): not root, or mount refused
    (a container without CAP_SYS_ADMIN). Tries it once on a scratch directory."""
    if os.geteuid() != 0:
        return "it mounts a tmpfs (mount -t tmpfs), which needs root; the rig runs as uid " \
               f"{os.geteuid()}"
    with tempfile.TemporaryDirectory(prefix="edge-hil-mnt-") as d:
        why = _mount(Path(d), 1)
        if why:
            return f"mount -t tmpfs was refused: {why}"
        return _umount(Path(d))


class DataDisk:
    """edged's data dir on a tmpfs of ``size_mb`` MiB; ``fill()``/``free()`` during the fault,
    ``close()`` (idempotent, never raises) unmounts."""

    def __init__(self, path: Path, size_mb: float):
        self.path = path
        self.size_mb = size_mb
        self.mounted = False
        self.filler = path / ".hil-filler"
        self.filled = 0

    def mount(self) -> None:
        """Raises RigSkipError (the run is SKIP) when the tmpfs cannot be mounted."""
        self.path.mkdir(parents=True, exist_ok=True)
        why = "it mounts a tmpfs (mount -t tmpfs), which needs root" if os.geteuid() != 0 \
            else _mount(self.path, self.size_mb)
        if why:
            raise RigSkipError(f"the disk-full fault cannot run here: {why}")
        self.mounted = True

    def fill(self, leave_bytes: int = 0) -> int:
        """Write the filler until the filesystem is full, then give ``leave_bytes`` back;
        returns the bytes it holds."""
        self.filled = fill_until_full(self.filler, leave_bytes)
        return self.filled

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def close(self) -> str:
        """Unmount (the filler goes with the tmpfs); "" or the problem."""
        if not self.mounted:
            return ""
        self.mounted = False
        return _umount(self.path)
