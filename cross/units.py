#!/usr/bin/env python3
"""Check systemd units the way the board's systemd will read them, without a running systemd.

    python3 cross/units.py [--max-exposure 2.0] UNIT...

For every unit: ``systemd-analyze verify`` in a throw-away root (the host's own unit tree
copied in, so ``sysinit.target`` and friends resolve, and an executable stub at every
ExecStart path), where any diagnostic at all fails the check: systemd only warns about an
unknown key ("ProtectSystm"), and a typo in a hardening line silently drops that hardening.
For every service: ``systemd-analyze security --offline=true`` (the unit file alone, no
running manager), which must score at most ``--max-exposure`` (systemd calls <= 2.0 "OK").

Prints one line per unit; exits 1 with every problem listed, 2 when systemd-analyze is missing.
Uses only the standard library (it also runs from the image build, outside the venv).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HOST_UNITS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
_EXPOSURE = re.compile(r"Overall exposure level for (\S+): ([0-9.]+) (\S+)")
_EXEC = re.compile(r"^Exec(?:Start|StartPre|StartPost|Condition|Reload|Stop|StopPost)=[-@:+!]*(/\S+)", re.M)

INSTALL_HINT = (
    "systemd-analyze is missing: run `apt-get install -y systemd` (as root), "
    "or `make -C cross tools`"
)


class UnitError(Exception):
    """A unit fails its check."""


def verify(units: list[Path]) -> list[str]:
    """``systemd-analyze verify`` each unit in a temporary root; returns problems."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edge-units-") as tmp:
        root = Path(tmp)
        dest = root / "etc/systemd/system"
        dest.mkdir(parents=True)
        host = next((d for d in HOST_UNITS if d.is_dir()), None)
        if host is not None:
            shutil.copytree(host, root / "usr/lib/systemd/system", symlinks=True)
        for unit in units:
            text = unit.read_text(encoding="utf-8")
            for exe in _EXEC.findall(text):
                stub = root / exe.lstrip("/")
                stub.parent.mkdir(parents=True, exist_ok=True)
                stub.write_text("#!/bin/sh\n")
                stub.chmod(0o755)
            shutil.copyfile(unit, dest / unit.name)
        for unit in units:
            proc = subprocess.run(
                ["systemd-analyze", "verify", "--man=no", f"--root={root}", str(dest / unit.name)],
                capture_output=True,
                text=True,
            )
            said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            said = [ln.replace(str(dest) + "/", "") for ln in said]
            if proc.returncode or said:
                problems.append(
                    f"{unit}: systemd-analyze verify: " + ("; ".join(said) or f"exit {proc.returncode}")
                )
    return problems


def security(unit: Path, max_exposure: float) -> tuple[float, str]:
    """The offline exposure score of one service; raises UnitError above ``max_exposure``."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    m = _EXPOSURE.search(proc.stdout)
    if m is None:
        raise UnitError(
            f"{unit}: systemd-analyze security gave no score: {(proc.stderr or proc.stdout).strip()}"
        )
    score, verdict = float(m.group(2)), m.group(3)
    if score > max_exposure:
        worst = [
            " ".join(ln.split())
            for ln in proc.stdout.splitlines()
            if ln.lstrip().startswith("✗") and not ln.rstrip().endswith(" 0.0")
        ]
        raise UnitError(
            f"{unit}: exposure {score} {verdict} > {max_exposure}; "
            f"worst settings: {' | '.join(worst[:5])}"
        )
    return score, verdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="units.py", description=__doc__.split("\n\n")[0])
    p.add_argument("units", nargs="+", type=Path)
    p.add_argument("--max-exposure", type=float, default=2.0)
    args = p.parse_args(argv)
    if shutil.which("systemd-analyze") is None:
        print(f"units.py: {INSTALL_HINT}", file=sys.stderr)
        return 2
    missing = [u for u in args.units if not u.is_file()]
    if missing:
        print(f"units.py: no such unit file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    problems = verify(args.units)
    for unit in args.units:
        if unit.suffix != ".service":
            print(f"{unit.name}: verify ok")
            continue
        try:
            score, verdict = security(unit, args.max_exposure)
        except UnitError as exc:
            problems.append(str(exc))
            continue
        print(f"{unit.name}: verify ok, exposure {score} {verdict}")
    for problem in problems:
        print(f"units.py: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
