"""Build the motor plant as an FMI 2.0 co-simulation FMU from source (hil/fmu/motor.c) with the
system C compiler against FMPy's copy of the FMI 2.0 headers: ``python -m hil._fmu OUT.fmu``.

An FMU is a zip: ``modelDescription.xml`` plus ``binaries/linux64/<modelIdentifier>.so``."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ._errors import PlantError

_SRC = Path(__file__).parent / "fmu" / "motor.c"
_VARS = [  # name, causality, variability, start (None: computed)
    ("load", "input", "continuous", 0.0), ("throttle", "input", "continuous", 1.0),
    ("enable", "input", "continuous", 1.0), ("temp_c", "output", "continuous", None),
    ("speed_rpm", "output", "continuous", None), ("current_a", "output", "continuous", None),
    ("heat", "parameter", "fixed", 60.0), ("cool", "parameter", "fixed", 0.5),
    ("ambient", "parameter", "fixed", 25.0), ("rated_rpm", "parameter", "fixed", 3000.0),
    ("rated_a", "parameter", "fixed", 40.0), ("fail_at", "parameter", "fixed", 0.0),
    ("nan_at", "parameter", "fixed", 0.0),
]


def _model_description() -> str:
    rows = []
    outs = []
    for vr, (name, causality, variability, start) in enumerate(_VARS):
        attrs = f'name="{name}" valueReference="{vr}" causality="{causality}" variability="{variability}"'
        if causality == "parameter":
            attrs += ' initial="exact"'
        real = f'<Real start="{start}"/>' if start is not None else "<Real/>"
        rows.append(f"    <ScalarVariable {attrs}>{real}</ScalarVariable>")
        if causality == "output":
            outs.append(f'      <Unknown index="{vr + 1}"/>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<fmiModelDescription fmiVersion="2.0" modelName="hil_motor" guid="{hil-motor-1}" '
        'numberOfEventIndicators="0">\n'
        '  <CoSimulation modelIdentifier="hil_motor" canHandleVariableCommunicationStepSize="true"/>\n'
        "  <ModelVariables>\n" + "\n".join(rows) + "\n  </ModelVariables>\n"
        "  <ModelStructure>\n    <Outputs>\n" + "\n".join(outs) + "\n    </Outputs>\n  </ModelStructure>\n"
        "</fmiModelDescription>\n"
    )


def build_motor_fmu(out: Path) -> Path:
    """Compile and zip the motor FMU to ``out``; PlantError if there is no compiler or FMPy."""
    try:
        import fmpy
    except ImportError as exc:
        raise PlantError("building the FMU needs FMPy's FMI headers: pip install 'edge-runtime[hil]'") from exc
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise PlantError("building the FMU needs a C compiler (apt-get install gcc)")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        raise PlantError(f"the FMU builder knows linux64/aarch64 only, not {platform.machine()}")
    plat = "linux64" if platform.machine() == "x86_64" else "aarch64-linux"
    headers = Path(fmpy.__file__).parent / "c-code"
    with tempfile.TemporaryDirectory(prefix="hil-fmu-") as tmp:
        so = Path(tmp) / "hil_motor.so"
        r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{headers}",
                            str(_SRC), "-o", str(so), "-lm"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise PlantError(f"compiling {_SRC} failed:\n{r.stderr}")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("modelDescription.xml", _model_description())
            z.write(so, f"binaries/{plat}/hil_motor.so")
            z.write(_SRC, "sources/motor.c")
    return out


def builtin_fmu(name: str) -> Path:
    """``builtin:motor`` in a scenario: the motor FMU built from source once per source version,
    cached in $XDG_CACHE_HOME/edge-hil (default ~/.cache/edge-hil)."""
    import hashlib
    import os

    if name != "motor":
        raise PlantError(f"no built-in FMU {name!r} (there is: motor)")
    digest = hashlib.sha256(_SRC.read_bytes() + _model_description().encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-hil"
    out = cache / f"motor-{digest}.fmu"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        build_motor_fmu(tmp)
        tmp.replace(out)  # atomic: a parallel run sees the whole file or none
    return out


if __name__ == "__main__":
    print(build_motor_fmu(Path(sys.argv[1] if len(sys.argv) > 1 else "build/hil/motor.fmu")))
