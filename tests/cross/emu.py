"""Running a built image's rootfs under qemu-user: unpack ``cross/out/<arch>/rootfs.tar`` on
tmpfs (32-bit armhf under qemu-user fails readdir with EOVERFLOW on a 64-bit host fs's large
inode numbers), then each command in its own mount namespace (``unshare -m``) with /proc,
/dev and /sys mounted, so nothing stays mounted when the command ends or the test dies."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .test_build import build

ROOT = Path(__file__).resolve().parents[2]
ALL_ARCHES = ("aarch64", "armv7", "riscv64")
ARCHES = tuple(a for a in os.environ.get("EDGE_CROSS_ARCHES", ",".join(ALL_ARCHES)).split(",") if a)
"""The images to test: all three, or those in $EDGE_CROSS_ARCHES (make cross-test ARCH=...)."""
if set(ARCHES) - set(ALL_ARCHES):
    raise SystemExit(f"EDGE_CROSS_ARCHES={','.join(ARCHES)}: use {', '.join(ALL_ARCHES)}")


def out_dir(arch: str) -> Path:
    return Path(os.environ.get("EDGE_CROSS_OUT", ROOT / "cross/out")) / arch


def require_image(arch: str) -> Path:
    d = out_dir(arch)
    if not (d / "rootfs.tar").exists():
        pytest.skip(f"no {arch} image: build it with `make image ARCH={arch}` (as root)")
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    return d


class Rootfs:
    def __init__(self, arch: str):
        self.arch = arch
        self.image = require_image(arch)
        self.dir = Path(tempfile.mkdtemp(prefix=f"edge-emu-{arch}-", dir="/dev/shm"))
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(self.dir), "-xf",
             str(self.image / "rootfs.tar")],
            check=True,
        )

    def summary(self) -> dict[str, Any]:
        return dict(json.loads((self.image / "summary.json").read_text()))

    def run(
        self, command: str, *, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``command`` (a shell line) inside the rootfs, as root, under qemu-user."""
        r = shlex.quote(str(self.dir))
        env = {**build.ARCHES[self.arch].qemu_env, **(env or {})}  # inside env -i as well
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        script = (
            f"mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && "
            f"mount -t sysfs sys {r}/sys && mount -t tmpfs tmp {r}/tmp && "
            f"exec chroot {r} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "
            f"LANG=C.UTF-8 {exports} /bin/sh -c {shlex.quote(command)}"
        )
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout,
        )

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
