"""The package reads bottom-up (edge/__init__.py): no module may import a higher layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edge

LAYERS = [
    "errors clock config _log _digest _rt _sdnotify",
    "transport",
    "wire",
    "rules",
    "store",
    "runtime",
    "sync",
    "sdk",
    "sim",
    "cli",
    "_edged",
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names.split()}
ROOT = Path(edge.__file__).parent


def _layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    pkg = module.split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
    return out


def test_no_module_imports_a_higher_layer() -> None:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        own = _layer_of(module)
        if own not in RANK:
            continue
        for target, line in _imports(path, module):
            if not target.startswith("edge."):
                continue
            dep = _layer_of(target)
            if dep in RANK and RANK[dep] > RANK[own]:
                problems.append(
                    f"{path.relative_to(ROOT.parent)}:{line}: {own} imports {target} ({dep})"
                )
    assert not problems, "\n".join(problems)


def test_every_package_module_belongs_to_a_layer() -> None:
    tops = {
        p.stem if p.is_file() else p.name for p in ROOT.iterdir() if not p.name.startswith("__")
    }
    tops.discard("py")
    unknown = {t for t in tops if t not in RANK and t != "py.typed" and not t.endswith(".typed")}
    assert not unknown, f"add these to the layer list in edge/__init__.py and here: {unknown}"


def test_importing_edge_does_not_import_backends() -> None:
    import subprocess
    import sys

    code = "import edge, sys; print(','.join(m for m in sys.modules if m.startswith(('zmq', 'lmdb', 'hdrh'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_nothing_below_the_rig_imports_it() -> None:
    """hil sits above edge and firmware_bridge: neither imports it."""
    import firmware_bridge

    problems = []
    for root in (ROOT, Path(firmware_bridge.__file__).parent):
        for path in sorted(root.rglob("*.py")):
            for target, line in _imports(path, "x.y"):
                if target == "hil" or target.startswith("hil."):
                    problems.append(f"{path}:{line}: imports {target}")
    assert not problems, "\n".join(problems)


def test_the_runtime_and_the_sdk_never_import_the_bridge() -> None:
    """firmware_bridge sits above edge.sdk and edge.runtime (design: the board-facing half)."""
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        if _layer_of(module) == "cli":
            continue  # edgectl's demo, bench and `bridge check` run it (imported lazily)
        for target, line in _imports(path, module):
            if target.split(".")[0] in ("firmware_bridge", "hil"):
                problems.append(f"{path.relative_to(ROOT.parent)}:{line}: imports {target}")
    assert not problems, "\n".join(problems)


def test_importing_the_bridge_does_not_import_its_drivers() -> None:
    """A PLC without python-can still runs its Modbus devices: backends load on first use."""
    import subprocess
    import sys

    code = ("import firmware_bridge, sys; print(','.join(sorted({m.split('.')[0] for m in "
            "sys.modules if m.split('.')[0] in ('can', 'cantools', 'pymodbus', 'serial')})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_edged_console_script_imports_no_command_line_toolkit() -> None:
    """``edged`` (edge._edged) starts edge.runtime only: click, rich, edgectl's package and the
    SDK (which the self-test uses) cost ~10 MB and ~300 ms and are imported for --self-test."""
    code = (
        "import sys\n"
        "sys.argv = ['edged', '--help']\n"
        "from edge._edged import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('click', 'rich', 'edge.cli', 'edge.sdk')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy[:2] or m.startswith(heavy[2:])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
