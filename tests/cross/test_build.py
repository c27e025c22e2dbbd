"""cross/build.py's refusals, each before anything is published: an unknown ARCH, missing
qemu/binfmt, an unreachable registry, a corrupt cached file (sha256 mismatch); and the .deb's
Depends covering every runtime dependency in pyproject.toml. No emulation: fast, by default."""

from __future__ import annotations

import hashlib
import importlib.util
import json
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
    assert proc.returncode == 4  # build.UNREACHABLE: the network, not the build
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


def test_a_corrupt_cached_base_rootfs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_CROSS_CACHE", str(tmp_path / "cache"))
    arch = build.arch_of("riscv64")
    d = tmp_path / "cache/base/riscv64" / build.base_key(arch)
    d.mkdir(parents=True)
    (d / "rootfs.tar").write_bytes(b"a base rootfs")
    (d / "packages.json").write_text("[]")
    (d / "rootfs.tar.sha256").write_text(hashlib.sha256(b"a base rootfs").hexdigest() + "  rootfs.tar\n")
    assert build.base_rootfs(arch, tmp_path)[:2] == (d / "rootfs.tar", d / "packages.json")
    (d / "rootfs.tar").write_bytes(b"a base rootfs, cut short")
    with pytest.raises(build.BuildError, match=r"cached riscv64 base rootfs: .* has sha256"):
        build.base_rootfs(arch, tmp_path)


def test_the_base_key_follows_the_package_set(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = build.arch_of("aarch64")
    key = build.base_key(arch)
    monkeypatch.setattr(build, "IMAGE_PACKAGES", [*build.IMAGE_PACKAGES, "less"])
    assert build.base_key(arch) != key


def _fake_root(tmp_path: Path, *pkgs: tuple[str, str]) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("".join(
        f"Package: {p}\nStatus: install ok installed\nVersion: {v}\nArchitecture: arm64\n"
        f"Installed-Size: 4\nMaintainer: x\nDescription: x\n\n" for p, v in pkgs))
    return root


def test_the_manifest_names_every_package_and_refuses_a_compiler(tmp_path: Path) -> None:
    base = tmp_path / "packages.json"
    row = {"package": "libc6", "version": "2.41-12", "origin": "debian trixie (deb.debian.org/debian)",
           "size": 4096, "sha256": "ab" * 32, "kind": "deb"}
    base.write_text(json.dumps([row]))
    deb = tmp_path / "edge-runtime_0.1.0-1_arm64.deb"
    deb.write_bytes(b"the runtime")
    out = tmp_path / "manifest.json"
    root = _fake_root(tmp_path, ("libc6", "2.41-12"), ("edge-runtime", "0.1.0-1"))
    build.write_manifest(root, base, deb, [], out)
    rows = {r["package"]: r for r in json.loads(out.read_text())["packages"]}
    assert rows["libc6"] == row
    assert rows["edge-runtime"]["sha256"] == hashlib.sha256(b"the runtime").hexdigest()
    out.unlink()
    root = _fake_root(tmp_path / "2", ("libc6", "2.41-12"), ("gcc-14", "14.2.0-19"))
    with pytest.raises(build.BuildError, match=r"not in the base's package list"):
        build.write_manifest(root, base, deb, [], out)
    base.write_text(json.dumps([row, {**row, "package": "gcc-14", "version": "14.2.0-19"}]))
    with pytest.raises(build.BuildError, match=r"the final image holds a compiler: \['gcc-14'\]"):
        build.write_manifest(root, base, deb, [], out)
    assert not out.exists()
