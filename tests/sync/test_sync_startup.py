"""edge-sync fails whole at start-up too: the real process, for each failure it can tell
before its first connect, exits non-zero at once with one line saying what and what to do, and
its lock is free afterwards. (An unreachable server is not a start failure: a board starts
offline; test_service.py covers that.)"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.runtime import InstanceLock
from edge.sync._service import LOCK_NAME, SyncLock

from ..support import one_line, read_only_dir, run_to_exit

pytestmark = pytest.mark.integration


def run_sync(run: Path, data: Path, *more: str) -> tuple[int, str]:
    code, err, _ = run_to_exit(
        "from edge.sync import main; main()", "--run-dir", str(run), "--data-dir", str(data),
        "--upstream-url", "nats://127.0.0.1:1", *more,
    )
    return code, err


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    top = Path(tempfile.mkdtemp(prefix="edge-ss-", dir="/tmp"))
    yield top / "run", top / "data"
    shutil.rmtree(top, ignore_errors=True)


def lock_is_free(run: Path) -> None:
    if (run / LOCK_NAME).exists():
        InstanceLock(run / LOCK_NAME).acquire().release()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--upstream-creds", "/nonexistent.creds"],
         "upstream_creds /nonexistent.creds: No such file or directory; provide the file or "
         "unset upstream_creds"),
        (["--upstream-url", "http://example.invalid:80"],
         "upstream_url 'http://example.invalid:80': expected nats|tls|ws|wss://host[:port]"),
        (["--upstream-url", "nats://127.0.0.1:abc"],
         "upstream_url 'nats://127.0.0.1:abc': the port is not a number"),
    ],
)
def test_bad_upstream_settings_exit_2(
    flags: list[str], message: str, dirs: tuple[Path, Path]
) -> None:
    run, data = dirs
    code, err = run_sync(run, data, *flags)
    assert code == 2
    assert one_line(err).startswith(f"edge-sync: configuration error: {message}")
    assert not run.exists()  # refused before anything was opened


def test_a_corrupt_store(dirs: tuple[Path, Path]) -> None:
    run, data = dirs
    (data / "state").mkdir(parents=True)
    (data / "state" / "data.mdb").write_bytes(os.urandom(64 << 10))
    code, err = run_sync(run, data)
    assert code == 1
    line = one_line(err)
    assert line.startswith("edge-sync: cannot start: cannot open the store") and "MDB_INVALID" in line
    lock_is_free(run)


@pytest.mark.parametrize("which", ["run", "data"])
def test_an_unwritable_directory(which: str, dirs: tuple[Path, Path]) -> None:
    run, data = dirs
    locked = run.parent / "read-only"
    run.parent.mkdir(exist_ok=True)
    with read_only_dir(locked) as reason:
        if which == "run":
            run = locked / "run"
        else:
            data = locked / "data"
        code, err = run_sync(run, data)
        assert code == 1
        target = run if which == "run" else data
        assert one_line(err).startswith(f"edge-sync: cannot start: {which} dir {target}: {reason}")
    lock_is_free(run)


def test_the_lock_held(dirs: tuple[Path, Path]) -> None:
    run, data = dirs
    run.mkdir(parents=True)
    lock = SyncLock(run / LOCK_NAME).acquire()
    try:
        code, err = run_sync(run, data)
    finally:
        lock.release()
    assert code == 3
    assert f"edge-sync is already running (pid {os.getpid()})" in one_line(err)
