"""A start that fails fails whole: the real ``edged`` process, for each kind of failure before
ready, exits non-zero at once with one line on stderr saying what and what to do, and leaves
nothing behind (its locks are free: another edged starts on the same directories)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.config import EdgeConfig
from edge.errors import EdgeError
from edge.runtime import Edged, InstanceLock

from ..support import one_line, read_only_dir, run_to_exit

pytestmark = pytest.mark.integration


def run_edged(*argv: str) -> tuple[int, str, float]:
    return run_to_exit("from edge.runtime import main; main()", *argv)


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    """A run and a data dir under a short /tmp dir that any user may traverse."""
    top = Path(tempfile.mkdtemp(prefix="edge-sf-", dir="/tmp"))
    top.chmod(0o755)
    yield top / "run", top / "data"
    shutil.rmtree(top, ignore_errors=True)


def args(run: Path, data: Path, *more: str) -> list[str]:
    return ["--run-dir", str(run), "--data-dir", str(data), "--metrics-addr", "", *more]


def starts_afterwards(cfg: EdgeConfig) -> None:
    """The failed edged released its locks: both are free and an edged starts there."""
    for lock in (cfg.run_dir / "edged.lock", cfg.data_dir / "edged.lock"):
        if lock.exists():
            InstanceLock(lock).acquire().release()
    with Edged(cfg):
        pass


@pytest.fixture
def cfg_for(rules_file: Path) -> Callable[..., EdgeConfig]:
    from edge.config import load_config

    def make(run: Path, data: Path, **over: object) -> EdgeConfig:
        flags = {"run_dir": run, "data_dir": data, "metrics_addr": "",
                 "rules_file": rules_file, **over}
        return load_config(flags, env={})

    return make


def test_metrics_port_taken_by_another_edged(
    dirs: tuple[Path, Path], make_cfg: Callable[..., EdgeConfig], cfg_for: Callable[..., EdgeConfig]
) -> None:
    run, data = dirs
    with Edged(make_cfg(metrics_addr="127.0.0.1:0")) as other:  # another run dir
        assert other.metrics is not None
        addr = f"127.0.0.1:{other.metrics.port}"
        code, err, _ = run_edged(*args(run, data, "--metrics-addr", addr))
        assert code == 1
        line = one_line(err)
        assert line.startswith(f"edged: cannot start: metrics_addr {addr}: Address already in use")
        assert "--metrics-addr" in line and "'' to turn /metrics off" in line
        assert not (run / "agents.sock").exists() and not (run / "ctl.sock").exists()
    starts_afterwards(cfg_for(run, data, metrics_addr=addr))


def test_metrics_addr_nonsense_in_the_config_file(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = dirs
    conf = tmp_path / "edge.toml"
    conf.write_text('metrics_addr = "nonsense"\n')
    code, err, _ = run_edged("--config", str(conf), "--run-dir", str(run), "--data-dir", str(data))
    assert code == 2
    assert one_line(err) == (
        "edged: configuration error: metrics_addr 'nonsense': expected host:port, "
        "e.g. 127.0.0.1:9108"
    )
    assert not run.exists()  # refused before anything was opened


def test_metrics_addr_not_on_this_host(
    dirs: tuple[Path, Path], cfg_for: Callable[..., EdgeConfig]
) -> None:
    run, data = dirs
    code, err, _ = run_edged(*args(run, data, "--metrics-addr", "192.0.2.1:9108"))
    assert code == 1
    assert "metrics_addr 192.0.2.1:9108: Cannot assign requested address" in one_line(err)
    starts_afterwards(cfg_for(run, data))


@pytest.mark.parametrize("which", ["run", "data"])
def test_an_unwritable_directory(
    which: str, dirs: tuple[Path, Path], cfg_for: Callable[..., EdgeConfig]
) -> None:
    run, data = dirs
    locked = run.parent / "read-only"
    with read_only_dir(locked) as reason:
        if which == "run":
            run = locked / "run"
        else:
            data = locked / "data"
        target = run if which == "run" else data
        code, err, _ = run_edged(*args(run, data))
        assert code == 1
        line = one_line(err)
        assert line.startswith(f"edged: cannot start: {which} dir {target}: {reason}")
        assert f"make it writable or choose another --{which}-dir" in line
    starts_afterwards(cfg_for(run, data))


def test_a_corrupt_store(dirs: tuple[Path, Path], cfg_for: Callable[..., EdgeConfig]) -> None:
    run, data = dirs
    (data / "state").mkdir(parents=True)
    (data / "state" / "data.mdb").write_bytes(os.urandom(64 << 10))
    code, err, _ = run_edged(*args(run, data))
    assert code == 1
    line = one_line(err)
    assert "cannot open the store" in line and "MDB_INVALID" in line
    assert f"move {data / 'state'} aside" in line
    shutil.rmtree(data / "state")  # what the line says to do
    starts_afterwards(cfg_for(run, data))


def test_a_bad_rules_file_lists_every_problem_on_one_line(
    dirs: tuple[Path, Path], tmp_path: Path, cfg_for: Callable[..., EdgeConfig]
) -> None:
    run, data = dirs
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- rule_id: a\n  rule_content: cpu >> 3\n  action: alert\n  priority: 1\n"
        "  sla_threshold: 5\n- rule_id: b\n  rule_content: x > 1\n  action: explode\n"
        "  priority: 1\n  sla_threshold: 5\n"
    )
    code, err, _ = run_edged(*args(run, data, "--rules", str(bad)))
    assert code == 1
    line = one_line(err)
    assert f"{bad}:2:" in line and f"{bad}:8:" in line and "unknown action 'explode'" in line
    assert f"edgectl rules check {bad}" in line
    starts_afterwards(cfg_for(run, data))


def test_the_lock_held(
    make_cfg: Callable[..., EdgeConfig], cfg_for: Callable[..., EdgeConfig], tmp_path: Path
) -> None:
    cfg = make_cfg()
    with Edged(cfg) as holder:
        pid = os.getpid()
        code, err, _ = run_edged(*args(cfg.run_dir, tmp_path / "other-data"))
        assert code == 3
        line = one_line(err)
        assert f"edged is already running (pid {pid})" in line and "stop it first" in line
        assert holder.loop is not None and not holder.loop.stopped.is_set()
    starts_afterwards(cfg_for(cfg.run_dir, tmp_path / "other-data"))


def test_a_failed_open_leaves_nothing_running(
    make_cfg: Callable[..., EdgeConfig], tmp_path: Path
) -> None:
    """In-process, with the leak check watching: threads, sockets, LMDB, locks all undone
    when the last step before ready (the metrics bind) fails, and open() can be retried."""
    with Edged(make_cfg(metrics_addr="127.0.0.1:0")) as other:
        assert other.metrics is not None
        cfg = make_cfg(metrics_addr=f"127.0.0.1:{other.metrics.port}",
                       run_dir=Path(tempfile.mkdtemp(prefix="edge-", dir="/tmp")),
                       data_dir=tmp_path / "data2")
        try:
            with pytest.raises(EdgeError, match="Address already in use"):
                Edged(cfg).open()
            InstanceLock(cfg.run_dir / "edged.lock").acquire().release()
            InstanceLock(cfg.data_dir / "edged.lock").acquire().release()
        finally:
            shutil.rmtree(cfg.run_dir, ignore_errors=True)


def test_a_file_descriptor_limit_below_the_connection_caps(
    dirs: tuple[Path, Path], cfg_for: Callable[..., EdgeConfig]
) -> None:
    """libzmq aborts edged when accept() meets EMFILE (measured here: a ROUTER limited to 64
    fds aborted under 200 connections): a hard limit below what the caps need is refused at
    start, not found by a flood. A soft limit under the hard one is raised (systemd's 1,024 is below the default)."""
    run, data = dirs
    code, err, _ = run_to_exit(
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)); "
        "from edge.runtime import main; main()", *args(run, data)
    )
    assert code == 1
    line = one_line(err)
    assert line.startswith("edged: cannot start: file descriptors: the hard limit of open files "
                           "is 300, and max_connections 1536")
    assert "raise LimitNOFILE" in line
    assert not (run / "agents.sock").exists()
    starts_afterwards(cfg_for(run, data))


def test_a_low_soft_file_descriptor_limit_is_raised(make_cfg: Callable[..., EdgeConfig]) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1536 + 256 + 256:
        pytest.skip(f"the hard limit here ({hard}) is below the default caps")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        with Edged(make_cfg()) as d:
            got = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            assert got >= 1536 + 256 + 256 and d.fd_limit["soft"] == got
            assert d.fd_limit["needed"] == 1536 + 256 + 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
