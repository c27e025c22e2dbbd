#!/usr/bin/env python3
"""Cross-built board images: a Debian trixie rootfs, a disk image and a .deb per architecture.

    python cross/build.py image ARCH        # aarch64 | armv7 | riscv64
    python cross/build.py tools ARCH        # only check qemu-user, binfmt, mmdebstrap
    python cross/build.py wheels ARCH       # only fetch/build the wheels (into the cache)

Where everything comes from (the manifest records each file's origin and sha256)::

    Debian trixie (deb.debian.org)   python3 3.13 and the compiled deps: python3-zmq, -lmdb,
                                     -nacl, -yaml, -psutil, -click, -rich; systemd, the kernel
    PyPI, pure wheels                flatbuffers (pinned to edge/wire/_generated), nats-py
    PyPI sdist, built on the host    nkeys (pure Python, no wheel on PyPI)
    PyPI sdist, built per arch       hdrhistogram's C codec, compiled once in a throw-away
                                     builder rootfs under qemu-user; the wheel is cached
    this repository                  edge-runtime's own wheel

    cross/pypi.lock.json   -> cache/pypi/<file>          (sha256 checked on every use)
                           -> cache/built/<arch>/<whl>   (+ .sha256 written when built)
    the wheels -> edge-runtime_<v>_<debarch>.deb (/usr/lib/edge-runtime/python, Depends: the
                  Debian packages) -> mmdebstrap --include=<that .deb> -> rootfs.tar, disk.img

Outputs go to ``cross/out/<arch>/`` only once complete: everything is written into
``cross/out/.tmp-<arch>-*`` (and the rootfs into a tmpfs work dir) and renamed at the end; a
failed or interrupted build leaves no file a later build would take for good.

Exit codes: 0 built; 1 a build step failed (the message says which, and what to run);
2 a bad argument (unknown ARCH); 3 missing tools (qemu-user-static, binfmt, mmdebstrap, root);
4 a registry (Debian's archive, PyPI) unreachable: the machine's network, not the build
(CI skips its emulated check on 3 and 4, cross/ci-check).
Standard library only, plus pip (for PyPI) in the interpreter that runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUITE = "trixie"


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str  # ours: aarch64, armv7, riscv64
    deb: str  # Debian's: arm64, armhf, riscv64
    qemu: str  # qemu-<qemu>-static, binfmt entry qemu-<qemu>
    kernel: str  # Debian's kernel metapackage for qemu -M virt (and generic boards)
    python_tag: str  # the native wheel's platform tag
    tmpfs: bool  # must run on tmpfs (32-bit userland under qemu-user: readdir EOVERFLOW)
    triplet: str  # Debian's multiarch triplet: the cross compiler's prefix, EXT_SUFFIX's tail
    qemu_cpu: str = ""  # QEMU_CPU for qemu-user ("" = qemu's default)

    @property
    def cross_gcc(self) -> str:
        """The host's cross compiler (Debian package gcc-<triplet>, with libc6-dev-*-cross)."""
        return f"{self.triplet}-gcc"

    @property
    def qemu_env(self) -> dict[str, str]:
        """The environment every emulated process needs: qemu-aarch64's default CPU ("max")
        emulates pointer authentication, which Debian's arm64 binaries use on every call,
        and runs Python ~15x slower than a cortex-a72 (ARMv8.0, Debian's baseline)."""
        return {"QEMU_CPU": self.qemu_cpu} if self.qemu_cpu else {}


ARCHES = {
    a.name: a
    for a in (
        Arch("aarch64", "arm64", "aarch64", "linux-image-arm64", "linux_aarch64", False,
             "aarch64-linux-gnu", "cortex-a72"),
        Arch("armv7", "armhf", "arm", "linux-image-armmp-lpae", "linux_armv7l", True,
             "arm-linux-gnueabihf"),
        Arch("riscv64", "riscv64", "riscv64", "linux-image-riscv64", "linux_riscv64", False,
             "riscv64-linux-gnu"),
    )
}

# pyproject's runtime dependencies -> where they come from on the board. A dependency missing
# here fails the build (test_cross_build checks the table against pyproject.toml).
DEBIAN_DEPENDS = {
    "pyzmq": "python3-zmq (>= 26)",
    "lmdb": "python3-lmdb (>= 1.4)",
    "psutil": "python3-psutil (>= 5.9)",
    "click": "python3-click (>= 8.1)",
    "rich": "python3-rich (>= 13)",
    "PyYAML": "python3-yaml (>= 6)",
    "PyNaCl": "python3-nacl (>= 1.5)",
}
DEBIAN_DEPENDS["pyserial"] = "python3-serial (>= 3.5)"
VENDORED = {"flatbuffers", "nats-py", "hdrhistogram", "nkeys",
            "python-can", "cantools", "textparser", "pymodbus"}
BRIDGE_EXTRAS = ("can", "modbus", "serial")
"""pyproject extras the image installs: edge-bridge's backends (CAN, Modbus, serial)."""
BASE_DEPENDS = ["python3 (>= 3.13~)", "python3 (<< 3.14)", "systemd", "init-system-helpers"]
VENDORED_NEEDS = [
    "python3-bitstruct (>= 8.16)", "python3-crccheck", "python3-argparse-addons",  # cantools
    "python3-wrapt", "python3-packaging", "python3-typing-extensions",  # python-can 4.6
]
"""What the vendored wheels import that Debian ships (their own Requires-Dist)."""
IMAGE_PACKAGES = ["systemd-sysv", "udev", "kmod", "iproute2", "procps", "ca-certificates"]
BUILDER_PACKAGES = [
    "python3-dev", "gcc", "libc6-dev", "python3-pip", "python3-setuptools", "python3-wheel",
    "python3-pbr",
]
COMPILERS = re.compile(
    r"^((gcc|g\+\+|cpp|clang)(-\d+)?|binutils(-.*)?|build-essential|python3(\.\d+)?-dev)$"
)
"""Compiler packages; not gcc-14-base (libgcc-s1 depends on it: in every Debian system)."""
PRIVATE_PY = "usr/lib/edge-runtime/python"
CONFFILES = ("edge.toml", "bridge.toml")
"""/etc/edge: the runtime's settings, and edge-bridge's own file (links and devices)."""


class BuildError(Exception):
    """A build step failed; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(msg: str) -> None:
    print(f"cross: {msg}", flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def arch_of(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise BuildError(
            f"unknown ARCH {name!r}: use one of {', '.join(ARCHES)} (make image ARCH=aarch64)", 2
        ) from None


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_CROSS_CACHE", "/var/cache/edge-cross"))


def out_dir() -> Path:
    return Path(os.environ.get("EDGE_CROSS_OUT", HERE / "out"))


def mirror() -> str:
    return os.environ.get("EDGE_CROSS_MIRROR", "http://deb.debian.org/debian")


def apt_cache_hooks(arch: Arch) -> list[str]:
    """mmdebstrap options that keep the downloaded .debs in ``cache/apt/<debarch>`` between
    builds (synced in before apt runs, out before mmdebstrap empties the archive dir; the
    image itself keeps none). A second build downloads only what changed in Debian."""
    cache = cache_dir() / "apt" / arch.deb
    cache.mkdir(parents=True, exist_ok=True)
    return [
        "--skip=essential/unlink",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {cache}",
    ]


UNREACHABLE = 4
"""The exit status when a registry cannot be reached (not a failure of the build itself)."""


def check_mirror() -> None:
    """Debian's archive answers (its Release file), before a long mmdebstrap run needs it."""
    import urllib.request

    url = f"{mirror()}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            resp.read(64)
    except OSError as exc:
        raise BuildError(f"Debian's archive is unreachable: {url}: {exc} (set EDGE_CROSS_MIRROR "
                         "to a reachable mirror)", UNREACHABLE) from None


def run(cmd: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise BuildError naming the step and the last output."""
    proc = subprocess.run(cmd, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{tail}")
    return proc  # type: ignore[no-any-return]


# ---------------------------------------------------------------- tools


def binfmt_dir() -> Path:
    return Path(os.environ.get("EDGE_CROSS_BINFMT_DIR", "/proc/sys/fs/binfmt_misc"))


def check_tools(arch: Arch, *, need_root: bool = True) -> None:
    """qemu-user-static, a registered and enabled binfmt handler, mmdebstrap, root."""
    problems, fixes = [], []
    for tool, pkg in (
        ("mmdebstrap", "mmdebstrap"),
        (f"qemu-{arch.qemu}-static", "qemu-user-static"),
        ("update-binfmts", "binfmt-support"),
        ("dpkg-deb", "dpkg"),
        ("mkfs.ext4", "e2fsprogs"),
        ("sfdisk", "fdisk"),
    ):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing")
            fixes.append(f"apt-get install -y {pkg}")
    entry = binfmt_dir() / f"qemu-{arch.qemu}"
    if not (binfmt_dir() / "status").exists():
        problems.append(f"binfmt_misc is not mounted at {binfmt_dir()}")
        fixes.append("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc")
        fixes.append("update-binfmts --enable")
    elif not entry.exists() or "enabled" not in entry.read_text(errors="replace"):
        problems.append(f"no enabled binfmt handler {entry} for {arch.name} binaries")
        fixes.append(f"update-binfmts --enable qemu-{arch.qemu}")
    if need_root and os.geteuid() != 0:
        problems.append("building a rootfs needs root (mmdebstrap root mode, chroot, mkfs)")
        fixes.append("sudo make image ARCH=" + arch.name)
    if problems:
        raise BuildError(
            "; ".join(problems)
            + ". Run (as root): "
            + " && ".join(dict.fromkeys(fixes))
            + " (or `make -C cross tools`, which does this when it can)",
            3,
        )


# ---------------------------------------------------------------- wheels


@dataclasses.dataclass
class Wheel:
    name: str
    version: str
    path: Path
    origin: str
    sha256: str

    def manifest(self) -> dict[str, object]:
        return {
            "package": self.name,
            "version": self.version,
            "origin": self.origin,
            "size": self.path.stat().st_size,
            "sha256": self.sha256,
            "file": self.path.name,
        }


def lock(section: str = "packages") -> list[dict[str, Any]]:
    """pypi.lock.json's entries: the image's ``packages``, or the emulated tests' ``test_packages``."""
    data = json.loads((HERE / "pypi.lock.json").read_text(encoding="utf-8"))
    return list(data[section])


def verified(path: Path, want: str, what: str) -> Path:
    """``path`` if its sha256 is ``want``; else BuildError (the file is never used)."""
    got = sha256_of(path)
    if got != want:
        raise BuildError(
            f"{what}: {path} has sha256 {got}, expected {want}: the cached file is corrupt or "
            f"not the locked one. Delete it (rm {path}) and build again; if PyPI serves this "
            "sha256, update cross/pypi.lock.json deliberately."
        )
    return path


def fetch(entry: dict[str, str]) -> Path:
    """The locked file from the cache, else from PyPI (via pip), checked by sha256."""
    dest = cache_dir() / "pypi" / entry["file"]
    if dest.exists():
        return verified(dest, entry["sha256"], f"cached {entry['name']}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=dest.parent) as tmp:
        binary = ["--only-binary=:all:"] if entry["kind"] == "wheel" else ["--no-binary=:all:"]
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *binary,
            "--disable-pip-version-check", "--timeout", "15", "--retries", "1", "-d", tmp,
            f"{entry['name']}=={entry['version']}",
        ]
        proc = subprocess.run(cmd, text=True, capture_output=True)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BuildError(
                f"cannot fetch {entry['name']}=={entry['version']} from PyPI (is the registry "
                f"reachable? PIP_INDEX_URL={os.environ.get('PIP_INDEX_URL', 'default')}): "
                f"pip said: {last[0]}",
                UNREACHABLE,
            )
        got = Path(tmp) / entry["file"]
        if not got.exists():
            raise BuildError(f"PyPI gave {os.listdir(tmp)} for {entry['name']}, not {entry['file']}")
        verified(got, entry["sha256"], f"downloaded {entry['name']}")
        os.replace(got, dest)
    return dest


def cached_build(arch_name: str, entry: dict[str, str]) -> Path | None:
    """A wheel built earlier from this exact sdist (its sha256 is in the directory name),
    checked against the sha256 recorded when it was built."""
    d = cache_dir() / "built" / arch_name / entry["sha256"][:16]
    wheels = sorted(d.glob("*.whl")) if d.is_dir() else []
    if not wheels:
        return None
    whl = wheels[0]
    record = whl.with_name(whl.name + ".sha256")
    if not record.exists():
        raise BuildError(f"cached wheel {whl} has no {record.name}: delete {d} and build again")
    return verified(whl, record.read_text().split()[0], f"cached build of {entry['name']}")


def built_origin(wheel: Path, default: str) -> str:
    """How a cached wheel was built (``<wheel>.origin``, written beside it), else ``default``."""
    rec = wheel.with_name(wheel.name + ".origin")
    return rec.read_text().strip() if rec.exists() else default


def store_build(arch_name: str, entry: dict[str, str], wheel: Path, origin: str = "") -> Path:
    d = cache_dir() / "built" / arch_name / entry["sha256"][:16]
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{wheel.name}.tmp"
    if origin:
        (d / f"{wheel.name}.origin").write_text(origin + "\n")
    shutil.copyfile(wheel, tmp)
    Path(str(tmp) + ".sha256").write_text(f"{sha256_of(tmp)}  {wheel.name}\n")
    os.replace(str(tmp) + ".sha256", d / f"{wheel.name}.sha256")
    os.replace(tmp, d / wheel.name)
    return d / wheel.name


def build_pure(entry: dict[str, str], sdist: Path) -> Path:
    cached = cached_build("any", entry)
    if cached is not None:
        return cached
    say(f"building {entry['name']} {entry['version']} (pure Python) from its sdist")
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp, str(sdist)],
            f"building the {entry['name']} wheel")
        (whl,) = Path(tmp).glob("*.whl")
        if not whl.name.endswith("-none-any.whl"):
            raise BuildError(f"{whl.name} is not a pure wheel")
        return store_build("any", entry, whl)


BUILDER_ORIGIN = "built in a {deb} builder rootfs under qemu-user"
CROSS_ORIGIN = "cross-compiled on the host ({gcc}, trixie's {deb} Python 3.13 headers)"


def build_native(arch: Arch, entry: dict[str, Any], sdist: Path, work: Path) -> tuple[Path, str]:
    """The sdist's wheel for ``arch``, built once and cached: cross-compiled on the host when
    the lock entry says how (``cross``: its packages, extension and C sources) and the host
    has ``<triplet>-gcc``, in seconds; else compiled in a builder rootfs under qemu-user (a
    compiler lives only there), minutes. Returns (wheel, how it was built)."""
    cached = cached_build(arch.name, entry)
    if cached is not None:
        return cached, built_origin(cached, BUILDER_ORIGIN.format(deb=arch.deb))
    if entry.get("cross") and shutil.which(arch.cross_gcc):
        origin = CROSS_ORIGIN.format(gcc=arch.cross_gcc, deb=arch.deb)
        return store_build(arch.name, entry, cross_wheel(arch, entry, sdist, work), origin), origin
    if entry.get("cross"):
        say(f"{arch.cross_gcc} missing (apt-get install -y gcc-{arch.triplet}): building "
            f"{entry['name']} under emulation instead")
    origin = BUILDER_ORIGIN.format(deb=arch.deb)
    return store_build(arch.name, entry, builder_wheel(arch, entry, sdist, work), origin), origin


def cross_wheel(arch: Arch, entry: dict[str, Any], sdist: Path, work: Path) -> Path:
    """Cross-compile the sdist's one C extension with the host's ``<triplet>-gcc`` against
    trixie's Python 3.13 headers for ``arch`` (libpython3.13-dev, unpacked by mmdebstrap's
    extract variant: no emulation at all), and pack the wheel: the sdist's Python packages,
    the extension, and a dist-info from its PKG-INFO and egg-info."""
    check_mirror()
    t0 = time.monotonic()
    spec = entry["cross"]
    say(f"cross-compiling {entry['name']} for {arch.name} with {arch.cross_gcc}")
    sysroot = work / f"headers-{arch.deb}"
    run(["mmdebstrap", "--mode=root", f"--arch={arch.deb}", "--variant=extract", "--quiet",
         "--include=libpython3.13-dev", *apt_cache_hooks(arch), SUITE, str(sysroot), mirror()],
        f"unpacking trixie's {arch.deb} Python headers (from {mirror()})",
        env={**os.environ, "TMPDIR": str(work)})
    src = work / "sdist"
    src.mkdir()
    run(["tar", "-C", str(src), "-xzf", str(sdist)], f"unpacking {sdist.name}")
    (top,) = src.iterdir()
    ext = f"{spec['ext']}.cpython-313-{arch.triplet}.so"
    inc = sysroot / "usr/include"
    run([arch.cross_gcc, "-shared", "-fPIC", "-O2", "-g0", "-fwrapv", "-fno-strict-overflow",
         "-DNDEBUG", f"-I{inc / 'python3.13'}", f"-I{inc / arch.triplet / 'python3.13'}",
         f"-idirafter{inc}", *(str(top / c) for c in spec["sources"]), "-o", str(work / ext)],
        f"{arch.cross_gcc} ({entry['name']}'s C extension)")
    tag = f"cp313-cp313-{arch.python_tag}"
    name = f"{entry['name']}-{entry['version']}"
    whl = work / f"{name}-{tag}.whl"
    files: dict[str, bytes] = {ext: (work / ext).read_bytes()}
    for pkg in spec["packages"]:
        for f in sorted((top / pkg).rglob("*.py")):
            files[f.relative_to(top).as_posix()] = f.read_bytes()
    info = f"{name}.dist-info"
    files[f"{info}/METADATA"] = (top / "PKG-INFO").read_bytes()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: edge-cross (cross/build.py)\n"
                              f"Root-Is-Purelib: false\nTag: {tag}\n").encode()
    for extra in ("entry_points.txt", "top_level.txt"):
        found = list(top.glob(f"*.egg-info/{extra}"))
        if found:
            files[f"{info}/{extra}"] = found[0].read_bytes()
    record = "".join(f"{n},sha256={_b64sha(b)},{len(b)}\n" for n, b in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in files.items():
            zi = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible
            zi.external_attr = (0o755 if n.endswith(".so") else 0o644) << 16
            z.writestr(zi, b, zipfile.ZIP_DEFLATED)
    say(f"  {whl.name} in {time.monotonic() - t0:.0f} s")
    return whl


def _b64sha(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def builder_wheel(arch: Arch, entry: dict[str, Any], sdist: Path, work: Path) -> Path:
    """Compile the sdist in a throw-away builder rootfs under qemu-user."""
    check_mirror()
    say(f"building {entry['name']} for {arch.name} in a builder rootfs (qemu-user; minutes)")
    t0 = time.monotonic()
    wheels = work / "builder-wheels"
    wheels.mkdir()
    cmd = [
        "mmdebstrap", "--mode=root", f"--arch={arch.deb}", "--variant=apt", "--quiet",
        "--include=" + ",".join(BUILDER_PACKAGES), *apt_cache_hooks(arch),
        f"--customize-hook=copy-in {sdist} /tmp",
        "--customize-hook=chroot \"$1\" env PIP_NO_INDEX=1 python3 -m pip wheel --no-deps "
        f"--no-build-isolation -w /tmp/wheels /tmp/{sdist.name}",
        f"--customize-hook=sync-out /tmp/wheels {wheels}",
        SUITE, "/dev/null", mirror(),
    ]
    # the throw-away rootfs goes to $TMPDIR: the work dir (tmpfs for armhf: readdir EOVERFLOW)
    run(cmd, f"building {entry['name']} in the {arch.name} builder rootfs (from {mirror()})",
        cwd=work, env={**os.environ, "TMPDIR": str(work)})
    found = sorted(wheels.glob("*.whl"))
    if len(found) != 1 or arch.python_tag not in found[0].name:
        raise BuildError(f"the builder made {[w.name for w in found]}, not one {arch.python_tag} wheel")
    say(f"  {found[0].name} in {time.monotonic() - t0:.0f} s")
    return found[0]


def project_wheel(work: Path) -> Wheel:
    dest = work / "project"
    dest.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dest), str(ROOT)],
        "building edge-runtime's wheel")
    (whl,) = dest.glob("edge_runtime-*.whl")
    version = whl.name.split("-")[1]
    return Wheel("edge-runtime", version, whl, "this repository (pip wheel .)", sha256_of(whl))


def wheels(arch: Arch, work: Path) -> list[Wheel]:
    out = []
    for entry in lock():
        src = fetch(entry)
        if entry["kind"] == "wheel":
            path, origin = src, "pypi wheel"
        elif entry["kind"] == "sdist-pure":
            path, origin = build_pure(entry, src), f"pypi sdist {entry['sha256'][:12]}, built on the host"
        else:
            path, how = build_native(arch, entry, src, work)
            origin = f"pypi sdist {entry['sha256'][:12]}, {how}"
        out.append(Wheel(entry["name"], entry["version"], path, origin, sha256_of(path)))
    return out


# ---------------------------------------------------------------- the .deb


def _pyproject_deps() -> list[str]:
    import tomllib

    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = list(doc["project"]["dependencies"])
    for extra in BRIDGE_EXTRAS:
        reqs += doc["project"]["optional-dependencies"][extra]
    return [re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0] for d in reqs]


def depends() -> list[str]:
    deps = list(BASE_DEPENDS)
    for name in _pyproject_deps():
        if name in DEBIAN_DEPENDS:
            deps.append(DEBIAN_DEPENDS[name])
        elif name not in VENDORED:
            raise BuildError(
                f"pyproject dependency {name!r} has no Debian package or vendored wheel in "
                "cross/build.py (DEBIAN_DEPENDS / VENDORED): add it there"
            )
    return [*deps, *VENDORED_NEEDS]


def _unpack_wheel(whl: Path, dest: Path) -> dict[str, str]:
    """Unpack a wheel into ``dest`` (purelib/platlib only); returns its console scripts."""
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            parts = Path(info.filename).parts
            if parts[0].endswith(".data"):
                if parts[1] not in ("purelib", "platlib"):
                    raise BuildError(f"{whl.name}: {info.filename}: only purelib/platlib data is supported")
                target = dest.joinpath(*parts[2:])
            else:
                target = dest.joinpath(*parts)
            if info.is_dir():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
        scripts: dict[str, str] = {}
        eps = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        section = ""
        for line in (z.read(eps[0]).decode().splitlines() if eps else []):
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[console_scripts]" and "=" in line:
                name, entry = (s.strip() for s in line.split("=", 1))
                scripts[name] = entry
    return scripts


SCRIPT = """#!/usr/bin/python3
# {name}: edge-runtime's console script (generated by cross/build.py). The runtime and its
# vendored wheels live in /{private}, ahead of Debian's dist-packages, so the pinned
# flatbuffers wins over a python3-flatbuffers that may be installed too.
import sys
sys.path.insert(0, "/{private}")
from {module} import {func}
sys.exit({func}())
"""


def build_deb(arch: Arch, project: Wheel, vendored: list[Wheel], work: Path) -> Path:
    stage = work / "deb"
    private = stage / PRIVATE_PY
    private.mkdir(parents=True)
    scripts = _unpack_wheel(project.path, private)
    for w in vendored:
        _unpack_wheel(w.path, private)
    for cache in private.rglob("__pycache__"):
        shutil.rmtree(cache)
    bindir = stage / "usr/bin"
    bindir.mkdir(parents=True)
    for name, target in scripts.items():
        module, func = target.split(":")
        (bindir / name).write_text(SCRIPT.format(name=name, private=PRIVATE_PY, module=module, func=func))
        (bindir / name).chmod(0o755)
    units = stage / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for unit in sorted((HERE / "systemd").iterdir()):
        if unit.stem == "edge-bridge" and "edge-bridge" not in scripts:
            continue  # the bridge joins once the wheel has its console script
        shutil.copyfile(unit, units / unit.name)
    (stage / "usr/lib/sysusers.d").mkdir(parents=True)
    shutil.copyfile(HERE / "debian/sysusers.conf", stage / "usr/lib/sysusers.d/edge-runtime.conf")
    (stage / "etc/edge").mkdir(parents=True)
    for conf in CONFFILES:
        shutil.copyfile(HERE / "debian" / conf, stage / "etc/edge" / conf)
    doc = stage / "usr/share/doc/edge-runtime"
    doc.mkdir(parents=True)
    shutil.copyfile(ROOT / "README.md", doc / "README.md")
    ctl = stage / "DEBIAN"
    ctl.mkdir()
    size_kib = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file()) // 1024 + 1
    version = project.version + "-1"
    vend = ", ".join(f"{w.name} {w.version}" for w in vendored)
    (ctl / "control").write_text(
        f"Package: edge-runtime\nVersion: {version}\nArchitecture: {arch.deb}\n"
        "Maintainer: Edge runtime team <edge@localhost>\nSection: misc\nPriority: optional\n"
        f"Installed-Size: {size_kib}\nDepends: {', '.join(depends())}\n"
        "Description: edge runtime: sub-millisecond local control of agents and firmware\n"
        " edged (control loop), edge-sync (NATS JetStream upstream) and edgectl, with systemd\n"
        " units under edge.target. Debian 13 (trixie) / Python 3.13 boards.\n"
        f" Vendored in /{PRIVATE_PY}: {vend}.\n"
    )
    (ctl / "conffiles").write_text("".join(f"/etc/edge/{c}\n" for c in CONFFILES))
    for name in ("postinst", "prerm", "postrm"):
        shutil.copyfile(HERE / "debian" / name, ctl / name)
        (ctl / name).chmod(0o755)
    deb = work / f"edge-runtime_{version}_{arch.deb}.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(deb)], "dpkg-deb --build")
    return deb


# ---------------------------------------------------------------- rootfs, disk, manifest


BASE_FORMAT = 1
"""Bumped when what goes into a base rootfs changes in a way its key does not show."""


def base_key(arch: Arch, kernel: bool = True) -> str:
    """The base rootfs's cache key: everything that decides its contents."""
    doc = json.dumps([BASE_FORMAT, SUITE, arch.deb, mirror(), IMAGE_PACKAGES,
                      arch.kernel if kernel else None, depends()], sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _base_dir(arch: Arch, kernel: bool) -> Path:
    return cache_dir() / "base" / arch.name / base_key(arch, kernel)


def base_cached(arch: Arch, kernel: bool = True) -> bool:
    d = _base_dir(arch, kernel)
    return all((d / n).exists() for n in ("rootfs.tar", "packages.json", "rootfs.tar.sha256"))


def base_rootfs(arch: Arch, work: Path, kernel: bool = True) -> tuple[Path, Path, float | None]:
    """(rootfs.tar, packages.json) of the base image: Debian trixie with the kernel, systemd
    and every package the .deb depends on, but not the runtime itself. Built once per key
    under emulation (dpkg and the initramfs are the slow part) and cached, checked by
    sha256 on use; a later image only adds the .deb to it. ``kernel=False``: without the
    kernel and its initramfs (not bootable; for the qemu-user checks, ``--checks-only``)."""
    d = _base_dir(arch, kernel)
    tar, pkgs, record = d / "rootfs.tar", d / "packages.json", d / "rootfs.tar.sha256"
    if base_cached(arch, kernel):
        verified(tar, record.read_text().split()[0], f"cached {arch.name} base rootfs")
        say(f"base rootfs {d} (cached)")
        return tar, pkgs, None
    check_mirror()
    say(f"base rootfs: mmdebstrap {SUITE} {arch.deb} (once per package set; many minutes "
        "under emulation)")
    t0 = time.monotonic()
    names = list(dict.fromkeys(dep.split()[0] for dep in depends()))
    d.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=d))
    try:
        hook = f'{sys.executable} {HERE / "build.py"} _packages "$1" {tmp / "packages.json"}'
        cmd = [
            "mmdebstrap", "--mode=root", f"--arch={arch.deb}", "--variant=apt", "--quiet",
            "--include=" + ",".join([*IMAGE_PACKAGES, *([arch.kernel] if kernel else []), *names]),
            *apt_cache_hooks(arch),
            "--essential-hook=echo 'LABEL=edge-root / ext4 defaults,noatime 0 1' > \"$1/etc/fstab\"",
            f"--customize-hook=echo edge-{arch.name} > \"$1/etc/hostname\"",
            f"--customize-hook={hook}",
            SUITE, str(tmp / "rootfs.tar"), mirror(),
        ]
        run(cmd, f"mmdebstrap {SUITE} {arch.deb} (from {mirror()})",
            env={**os.environ, "TMPDIR": str(work)})
        (tmp / "rootfs.tar.sha256").write_text(f"{sha256_of(tmp / 'rootfs.tar')}  rootfs.tar\n")
        for name in ("rootfs.tar", "packages.json", "rootfs.tar.sha256"):  # the record last
            os.replace(tmp / name, d / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    built_s = time.monotonic() - t0
    say(f"  base rootfs in {built_s:.0f} s")
    return tar, pkgs, round(built_s, 1)


def in_root(rootdir: Path, command: str, what: str, env: dict[str, str]) -> None:
    """``command`` in the rootfs (chroot, qemu-user via binfmt), in its own mount namespace
    with /proc, /dev and /sys mounted, so nothing stays mounted afterwards."""
    r = shlex.quote(str(rootdir))
    script = (
        f"mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && "
        f"mount -t sysfs sys {r}/sys && exec chroot {r} /usr/bin/env -i "
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "
        + "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
        + f"/bin/sh -ec {shlex.quote(command)}"
    )
    run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script], what)


def build_rootfs(arch: Arch, deb: Path, rootdir: Path, work: Path,
                 kernel: bool = True) -> tuple[Path, float | None]:
    """The base rootfs unpacked into ``rootdir`` with the .deb installed and edge.target
    enabled; returns the base's packages.json and the seconds building the base took
    (None: it was cached)."""
    tar, pkgs, built_s = base_rootfs(arch, work, kernel)
    rootdir.mkdir()
    run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootdir), "-xf", str(tar)], "tar -x base")
    shutil.copyfile(deb, rootdir / "tmp" / deb.name)
    in_root(rootdir, f"dpkg -i /tmp/{deb.name}; rm /tmp/{deb.name}; systemctl enable edge.target",
            f"installing {deb.name} into the base rootfs", arch.qemu_env)
    return pkgs, built_s


def _lists_sha256(rootdir: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(package, version) -> (sha256, origin) from the rootfs's apt lists."""
    sums: dict[tuple[str, str], tuple[str, str]] = {}
    for plist in (rootdir / "var/lib/apt/lists").glob("*_Packages"):
        origin = plist.name.split("_dists_")[0].replace("_", "/")
        for stanza in plist.read_text(errors="replace").split("\n\n"):
            f = dict(
                (k, v.strip()) for k, _, v in (ln.partition(":") for ln in stanza.splitlines() if ln[:1] != " ")
            )
            if "Package" in f:
                sums[(f["Package"], f.get("Version", ""))] = (f.get("SHA256", ""), origin)
    return sums


def installed(rootdir: Path) -> list[tuple[str, str, int]]:
    """(package, version, installed bytes) for every package dpkg has in ``rootdir``."""
    q = run(
        ["dpkg-query", f"--admindir={rootdir}/var/lib/dpkg", "-W",
         "-f=${Package}\t${Version}\t${Installed-Size}\n"],
        "dpkg-query",
    )
    rows = []
    for line in q.stdout.splitlines():
        pkg, ver, size = line.split("\t")
        rows.append((pkg, ver, int(size or 0) * 1024))
    return rows


def write_packages(rootdir: Path, out: Path) -> None:
    """The base's Debian packages: version, origin, installed size, sha256 (apt's lists;
    mmdebstrap's customize hook, while the lists are still there)."""
    sums = _lists_sha256(rootdir)
    rows = []
    for pkg, ver, size in installed(rootdir):
        sha, origin = sums.get((pkg, ver), ("", ""))
        rows.append({"package": pkg, "version": ver, "origin": f"debian {SUITE} ({origin})",
                     "size": size, "sha256": sha, "kind": "deb"})
    out.write_text(json.dumps(rows, indent=1) + "\n")


def kernel_of(rootdir: Path) -> Path:
    """The rootfs's kernel: /boot/vmlinuz-* (arm64, armhf) or /boot/vmlinux-* (riscv64)."""
    kernels = sorted((rootdir / "boot").glob("vmlinu[zx]-*"))
    if not kernels:
        raise BuildError("the rootfs has no /boot/vmlinuz-* or vmlinux-*: the kernel package "
                         "did not install")
    return kernels[-1]


def extlinux(rootdir: Path) -> None:
    """/boot/extlinux/extlinux.conf: what U-Boot's distro boot reads on most boards."""
    kernel = kernel_of(rootdir)
    ver = kernel.name.split("-", 1)[1]
    conf = rootdir / "boot/extlinux/extlinux.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "default edge\ntimeout 1\nlabel edge\n"
        f"  kernel /boot/{kernel.name}\n  initrd /boot/initrd.img-{ver}\n"
        "  append root=LABEL=edge-root rw console=ttyAMA0 console=ttyS0\n"
    )


def make_disk(rootdir: Path, disk: Path) -> None:
    """An MBR disk with one ext4 partition (label edge-root) at 1 MiB holding the rootfs."""
    used = sum(p.lstat().st_size for p in rootdir.rglob("*"))
    part_mib = int(used / (1 << 20) * 1.3) + 256
    part = disk.with_suffix(".part")
    run(["mkfs.ext4", "-q", "-L", "edge-root", "-d", str(rootdir), str(part), f"{part_mib}M"], "mkfs.ext4")
    with disk.open("wb") as f:
        f.truncate((part_mib + 2) << 20)
    run(["sfdisk", "--quiet", str(disk)], "sfdisk", input="label: dos\nstart=2048, type=83, bootable\n")
    run(["dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"], "dd")
    part.unlink()


def write_manifest(rootdir: Path, base_pkgs: Path, deb: Path, wheels: list[Wheel], out: Path) -> None:
    """Every Debian package of the final rootfs (from the base's list; the runtime's own
    .deb with its sha256) and every wheel; refuses a rootfs with a compiler in it."""
    base = {(r["package"], r["version"]): r for r in json.loads(base_pkgs.read_text())}
    rows: list[dict[str, object]] = []
    compilers = []
    for pkg, ver, size in installed(rootdir):
        if COMPILERS.match(pkg):
            compilers.append(pkg)
        if (pkg, ver) in base:
            rows.append(base[(pkg, ver)])
        elif pkg == "edge-runtime":
            rows.append({"package": pkg, "version": ver, "origin": f"this build ({deb.name})",
                         "size": size, "sha256": sha256_of(deb), "kind": "deb"})
        else:
            raise BuildError(f"{pkg} {ver} is in the rootfs but not in the base's package list")
    if compilers or (rootdir / "usr/bin/cc").exists():
        raise BuildError(f"the final image holds a compiler: {compilers or ['/usr/bin/cc']}")
    rows += [{**w.manifest(), "kind": "wheel"} for w in wheels]
    out.write_text(json.dumps({"suite": SUITE, "packages": rows}, indent=1) + "\n")


# ---------------------------------------------------------------- the image


@contextlib.contextmanager
def workspace(arch: Arch) -> Iterator[tuple[Path, Path]]:
    """(a work dir, on tmpfs where the arch needs it; the output's temp dir). Both are
    removed on the way out; the caller renames the temp dir into place on success."""
    base = Path("/dev/shm") if arch.tmpfs or os.environ.get("EDGE_CROSS_TMPFS") == "1" else None
    work = Path(tempfile.mkdtemp(prefix=f"edge-cross-{arch.name}-", dir=base))
    out = out_dir()
    out.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(tempfile.mkdtemp(prefix=f".tmp-{arch.name}-", dir=out))
    try:
        yield work, tmp_out
    finally:
        _remove_unless_mounted(work)
        shutil.rmtree(tmp_out, ignore_errors=True)


def _remove_unless_mounted(path: Path) -> None:
    """rmtree, unless something is still mounted below ``path`` (an mmdebstrap killed before
    its cleanup leaves /dev bind-mounted in its chroot: removing through it would empty the
    host's /dev). Then the path is named instead, to remove after ``umount -R``."""
    mounts = [ln.split()[1] for ln in Path("/proc/self/mounts").read_text().splitlines()]
    below = [m for m in mounts if m.startswith(f"{path}/")]
    if below:
        print(f"cross: {path} not removed: {len(below)} mounts below it (umount -R {below[0]})",
              file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def publish(tmp_out: Path, final: Path) -> None:
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp_out, final)
    shutil.rmtree(old, ignore_errors=True)


def image(arch: Arch, checks_only: bool = False) -> Path:
    """Build ``cross/out/<arch>``. ``checks_only`` (CI): on the full base if it is cached,
    else on a base without the kernel (no initramfs under emulation, minutes fewer): the
    rootfs, .deb and manifest for the qemu-user checks, but no disk.img or kernel."""
    check_tools(arch)
    t0 = time.monotonic()
    kernel = not checks_only or base_cached(arch)
    with workspace(arch) as (work, tmp_out):
        vendored = wheels(arch, work)
        project = project_wheel(work)
        deb = build_deb(arch, project, vendored, work)
        say(f"{deb.name}: {deb.stat().st_size / 1e6:.1f} MB")
        rootdir = work / "root"
        base_pkgs, base_s = build_rootfs(arch, deb, rootdir, work, kernel)
        write_manifest(rootdir, base_pkgs, deb, [project, *vendored], tmp_out / "manifest.json")
        if kernel:
            extlinux(rootdir)
            kernel_path = kernel_of(rootdir)
            shutil.copyfile(kernel_path, tmp_out / "vmlinuz")
            shutil.copyfile(rootdir / "boot" / f"initrd.img-{kernel_path.name.split('-', 1)[1]}",
                            tmp_out / "initrd.img")
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootdir), "-cf",
             str(tmp_out / "rootfs.tar"), "."], "tar")
        if kernel:
            make_disk(rootdir, tmp_out / "disk.img")
        shutil.copyfile(deb, tmp_out / deb.name)
        installed_bytes = sum(p.lstat().st_size for p in rootdir.rglob("*") if not p.is_dir())
        summary = {
            "arch": arch.name, "debian_arch": arch.deb, "suite": SUITE, "bootable": kernel,
            "rootfs_installed_bytes": installed_bytes,
            "rootfs_tar_bytes": (tmp_out / "rootfs.tar").stat().st_size,
            "disk_img_bytes": (tmp_out / "disk.img").stat().st_size if kernel else None,
            "deb_bytes": deb.stat().st_size, "deb": deb.name,
            "build_s": round(time.monotonic() - t0, 1),
            "base_key": base_key(arch, kernel), "base_built_s": base_s,  # None: the cached base
            "wheels": {w.name: w.origin for w in vendored},
        }
        (tmp_out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        final = out_dir() / arch.name
        publish(tmp_out, final)
    say(f"{arch.name}: {final} ({summary['build_s']:.0f} s; rootfs {installed_bytes / 1e6:.0f} MB installed"
        + ("" if kernel else "; --checks-only: no kernel, not bootable") + ")")
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cross/build.py", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["image", "tools", "wheels", "_packages", "depends"])
    p.add_argument("args", nargs="*")
    p.add_argument("--checks-only", action="store_true",
                   help="image: for the qemu-user checks only (CI): the full base if cached, "
                        "else one without the kernel; no disk.img")
    ns = p.parse_args(argv)
    # a CI timeout's SIGTERM unwinds like ^C: the temp dirs go, nothing half-built is published
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if ns.command == "_packages":  # mmdebstrap's customize hook: ROOT OUT
            write_packages(Path(ns.args[0]), Path(ns.args[1]))
            return 0
        if ns.command == "depends":
            print(", ".join(depends()))
            return 0
        if len(ns.args) != 1:
            raise BuildError(f"{ns.command} takes one ARCH ({', '.join(ARCHES)})", 2)
        arch = arch_of(ns.args[0])
        os.environ.update(arch.qemu_env)  # mmdebstrap's and the builder's chroots inherit it
        if ns.command == "tools":
            check_tools(arch, need_root=False)
            say(f"{arch.name}: qemu-{arch.qemu}-static, binfmt and mmdebstrap are ready")
        elif ns.command == "wheels":
            with workspace(arch) as (work, _):
                for w in wheels(arch, work):
                    say(f"{w.path.name}  {w.sha256}  ({w.origin})")
        else:
            image(arch, checks_only=ns.checks_only)
    except BuildError as exc:
        print(f"cross: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("cross: interrupted; nothing was published", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
