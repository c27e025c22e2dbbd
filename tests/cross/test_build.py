"""cross/build.py's refusals, each before anything is published: an unknown ARCH, missing
qemu/binfmt, an unreachable registry, a corrupt cached file (sha256 mismatch); and the .deb's
Depends covering every runtime dependency in pyproject.toml. No emulation: fast, by default."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "cross/build.py"


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cross_build", BUILD)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cross_build"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


build = _build_module()


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "EDGE_CROSS_CACHE": str(tmp_path / "cache"),
        "EDGE_CROSS_OUT": str(tmp_path / "out"),
        **env,
    }
    return subprocess.run(
        [sys.executable, str(BUILD), *args], capture_output=True, text=True, env=full, timeout=120
    )


def _leftovers(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_unknown_arch_is_refused_with_the_choices(tmp_path: Path) -> None:
    proc = _run(tmp_path, "image", "x86_64")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "cross: error: unknown ARCH 'x86_64': use one of aarch64, armv7, riscv64 "
        "(make image ARCH=aarch64)"
    )
    assert _leftovers(tmp_path) == []


def test_missing_binfmt_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "binfmt").mkdir()  # not mounted: no status file
    proc = _run(tmp_path, "image", "riscv64", EDGE_CROSS_BINFMT_DIR=str(tmp_path / "binfmt"))
    assert proc.returncode == 3
    assert "binfmt_misc is not mounted" in proc.stderr
    assert "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable" in proc.stderr
    assert _leftovers(tmp_path) == []


def test_missing_qemu_says_what_to_install(tmp_path: Path) -> None:
    binfmt = tmp_path / "binfmt"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")  # mounted, but no qemu-riscv64 handler
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _run(tmp_path, "tools", "riscv64", EDGE_CROSS_BINFMT_DIR=str(binfmt), PATH=str(empty))
    assert proc.returncode == 3
    assert "qemu-riscv64-static is missing" in proc.stderr
    assert "apt-get install -y mmdebstrap && apt-get install -y qemu-user-static" in proc.stderr
    assert f"no enabled binfmt handler {binfmt}/qemu-riscv64" in proc.stderr
    assert "update-binfmts --enable qemu-riscv64" in proc.stderr


def test_unreachable_registry_fails_clearly_and_caches_nothing(tmp_path: Path) -> None:
    proc = _run(
        tmp_path, "wheels", "riscv64",
        PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_EXTRA_INDEX_URL="", PIP_FIND_LINKS="",
        PIP_CONFIG_FILE=os.devnull,
    )
    assert proc.returncode == 1
    assert "cannot fetch flatbuffers==25.12.19 from PyPI (is the registry reachable? " in proc.stderr
    assert "PIP_INDEX_URL=http://127.0.0.1:9/simple" in proc.stderr
    pypi = tmp_path / "cache/pypi"
    assert not pypi.exists() or list(pypi.iterdir()) == []  # no partial download left
    assert _leftovers(tmp_path) == []


def test_a_corrupt_cached_download_is_refused(tmp_path: Path) -> None:
    entry = build.lock()[0]
    cached = tmp_path / "cache/pypi" / entry["file"]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the wheel")
    proc = _run(tmp_path, "wheels", "aarch64")
    assert proc.returncode == 1
    bad = hashlib.sha256(b"not the wheel").hexdigest()
    assert f"{cached} has sha256 {bad}, expected {entry['sha256']}" in proc.stderr
    assert f"Delete it (rm {cached}) and build again" in proc.stderr
    assert _leftovers(tmp_path) == []


def test_a_corrupt_cached_build_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_CROSS_CACHE", str(tmp_path / "cache"))
    entry: dict[str, Any] = next(e for e in build.lock() if e["kind"] == "sdist-native")
    good = tmp_path / "hdrhistogram-0.10.8-cp313-cp313-linux_aarch64.whl"
    good.write_bytes(b"a wheel")
    stored = build.store_build("aarch64", entry, good)
    assert build.cached_build("aarch64", entry) == stored
    stored.write_bytes(b"a wheel, truncated on a full disk")
    with pytest.raises(build.BuildError, match=r"has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}"):
        build.cached_build("aarch64", entry)
    assert [p.name for p in stored.parent.iterdir() if p.name.startswith(".")] == []


def test_depends_cover_every_runtime_dependency() -> None:
    for dep in build._pyproject_deps():
        assert dep in build.DEBIAN_DEPENDS or dep in build.VENDORED, dep
    deps = build.depends()
    assert "python3 (>= 3.13~)" in deps and "python3-zmq (>= 26)" in deps
    assert {e["name"] for e in build.lock()} == build.VENDORED


def test_flatbuffers_is_locked_to_the_generated_code_version() -> None:
    import flatbuffers

    entry = next(e for e in build.lock() if e["name"] == "flatbuffers")
    assert entry["version"] == flatbuffers.__version__
    assert f'"flatbuffers=={entry["version"]}"' in (ROOT / "pyproject.toml").read_text()


def test_compiler_check_flags_compilers_not_their_runtime_libraries() -> None:
    flagged = {"gcc", "gcc-14", "g++-14", "cpp", "cpp-14", "binutils", "binutils-aarch64-linux-gnu",
               "build-essential", "python3-dev", "python3.13-dev", "clang-19"}
    kept = {"gcc-14-base", "libgcc-s1", "libstdc++6", "python3", "libpython3.13", "cpio"}
    assert {p for p in flagged | kept if build.COMPILERS.match(p)} == flagged
