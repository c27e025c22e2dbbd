"""Each built image under qemu-user (``make cross-test``; marker ``cross``, not in make test):
``edged --self-test``, ``edgectl rules check``/``replay`` on the examples, and the pure test
modules (wire, rules, store) on that arch's Python 3.13, from the image's own runtime; plus
what the image must not hold (a compiler) and what the .deb must say (Depends, Architecture).
Figures (self-test stages, idle RSS) are printed for the README's footprint table: they are
EMULATED timings, not a board's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .emu import ARCHES, ROOT, Rootfs
from .test_build import build

pytestmark = [pytest.mark.cross, pytest.mark.allow_leaks, pytest.mark.timeout(3600)]
# allow_leaks: the only children are the chroot's, each waited for by subprocess.run

PURE_TESTS = ("tests/wire", "tests/rules", "tests/store")
TEST_DEPS = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "hypothesis",
             "sortedcontainers", "pytest_timeout.py", "py.py")
PYTHONPATH = "/usr/lib/edge-runtime/python:/root/edge-test-deps"


@pytest.fixture(scope="module", params=ARCHES)
def rootfs(request: pytest.FixtureRequest) -> Iterator[Rootfs]:
    r = Rootfs(request.param)
    try:
        yield r
    finally:
        r.close()


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_python_is_313_and_the_deps_are_debians(rootfs: Rootfs) -> None:
    out = _ok(rootfs.run(
        "python3 -c 'import sys, zmq, lmdb, nacl, yaml, psutil, click, rich; "
        "print(sys.version_info[:2], zmq.zmq_version(), lmdb.__file__, nacl.__file__)'"
    ))
    assert out.startswith("(3, 13) ")
    assert "/usr/lib/python3/dist-packages/lmdb" in out and "/usr/lib/python3/dist-packages/nacl" in out
    out = _ok(rootfs.run(
        "python3 -c 'import sys; sys.path.insert(0, \"/usr/lib/edge-runtime/python\"); "
        "import flatbuffers, hdrh.histogram, pyhdrh, nats, edge; "
        "print(flatbuffers.__version__, pyhdrh.__file__)'"
    ))
    assert out.split()[0] == "25.12.19" and "/usr/lib/edge-runtime/python/pyhdrh" in out


def test_no_compiler_in_the_image(rootfs: Rootfs) -> None:
    out = _ok(rootfs.run("dpkg-query -W -f '${Package}\\n'"))
    assert not [p for p in out.split() if build.COMPILERS.match(p)]
    assert rootfs.run("command -v cc || command -v gcc").returncode != 0


def test_self_test_passes(rootfs: Rootfs) -> None:
    out = _ok(rootfs.run("edged --self-test", timeout=600))
    assert out.splitlines()[-1].startswith("edged self-test passed in ")
    print(f"\n[{rootfs.arch}, EMULATED qemu-user] {out}")


def test_a_short_real_loop_agent_rule_instruction_ack(rootfs: Rootfs) -> None:
    """edged as its own process, an SDK agent reporting over a rule's threshold 20 times:
    each firing's Instruction reaches the agent and edged counts each Ack (loop_probe.py)."""
    shutil.copy(Path(__file__).with_name("loop_probe.py"), rootfs.dir / "root/loop_probe.py")
    proc = rootfs.run("python3 /root/loop_probe.py 20 120", timeout=900)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    assert proc.returncode == 0 and result.get("ok"), f"{proc.stdout}\n{proc.stderr[-3000:]}"
    assert result["acks_ok"] == 20 and result["instructions_sent"] == 20 and result["edged_exit"] == 0
    print(f"\n[{rootfs.arch}, EMULATED qemu-user] loop: {json.dumps(result)}")


def test_rules_check_and_replay_on_the_examples(rootfs: Rootfs) -> None:
    dest = rootfs.dir / "root/examples"
    shutil.copytree(ROOT / "examples", dest)
    out = _ok(rootfs.run("edgectl rules check /root/examples/demo_rules.yaml"))
    assert "4 rules OK" in out
    out = _ok(rootfs.run("edgectl rules replay /root/examples/demo_rules.yaml /root/examples/demo_trace.csv"))
    host = subprocess.run(  # the same replay on this x86_64 host: the arch must not matter
        [str(Path(sys.executable).with_name("edgectl")), "rules", "replay",
         str(ROOT / "examples/demo_rules.yaml"),
         str(ROOT / "examples/demo_trace.csv")], capture_output=True, text=True, check=True)
    fired = [json.loads(line) for line in out.splitlines()]
    assert fired and fired == [json.loads(line) for line in host.stdout.splitlines()]


def test_idle_rss_of_edged(rootfs: Rootfs) -> None:
    """edged started on a temp dir, idle: its RSS once ready. EMULATED: under qemu-user the
    process is qemu itself, so this RSS includes qemu's translator and code cache; a board's
    edged is smaller (the native figure is in the README)."""
    script = (
        "d=$(mktemp -d); EDGE_LOG_LEVEL=WARNING edged --run-dir $d/run --data-dir $d/data "
        "--metrics-addr '' & pid=$!; "
        "i=0; while [ ! -S $d/run/ctl.sock ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; "
        "edgectl --run-dir $d/run --timeout 120 status --json >/dev/null && sleep 2 && "
        "grep VmRSS /proc/$pid/status; kill -TERM $pid; wait $pid"
    )
    out = _ok(rootfs.run(script, timeout=600))
    rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", out).group(1))  # type: ignore[union-attr]
    print(f"\n[{rootfs.arch}, EMULATED qemu-user] edged idle RSS {rss_kb / 1024:.1f} MiB")
    assert rss_kb > 0


def test_pure_test_modules_pass_on_the_arch(rootfs: Rootfs) -> None:
    dest = rootfs.dir / "root/edge-tests"
    dest.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest)
    shutil.copytree(ROOT / "schemas", dest / "schemas")
    (dest / "tests").mkdir()
    for f in ("__init__.py", "conftest.py", "support.py"):
        shutil.copy(ROOT / "tests" / f, dest / "tests" / f)
    for d in PURE_TESTS:
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    deps = rootfs.dir / "root/edge-test-deps"
    deps.mkdir()
    for name in TEST_DEPS:  # pure Python: the host venv's copies run on any arch
        src = site / name
        if src.is_dir():
            shutil.copytree(src, deps / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, deps / name)
        for info in site.glob(f"{name.removesuffix('.py')}-*.dist-info"):
            shutil.copytree(info, deps / info.name)  # entry points: pytest's plugins
    proc = rootfs.run(
        "cd /root/edge-tests && python3 -m pytest -q -p no:cacheprovider -x " + " ".join(PURE_TESTS),
        env={"PYTHONPATH": PYTHONPATH},
        timeout=3000,
    )
    out = _ok(proc)
    summary = out.strip().splitlines()[-1]
    print(f"\n[{rootfs.arch}, EMULATED qemu-user] {summary}")
    assert re.search(r"\d+ passed", summary) and "failed" not in summary


def test_the_deb_declares_its_arch_and_depends(rootfs: Rootfs) -> None:
    deb = next(rootfs.image.glob("edge-runtime_*.deb"))
    info = _ok(subprocess.run(["dpkg-deb", "-f", str(deb), "Architecture", "Depends"],
                              capture_output=True, text=True))
    deb_arch = {"aarch64": "arm64", "armv7": "armhf", "riscv64": "riscv64"}[rootfs.arch]
    assert f"Architecture: {deb_arch}" in info
    for dep in ("python3 (>= 3.13~)", "python3-zmq (>= 26)", "python3-lmdb", "python3-nacl",
                "python3-yaml", "python3-psutil", "python3-click", "python3-rich",
                "python3-serial (>= 3.5)", "python3-bitstruct (>= 8.16)"):
        assert dep in info
    manifest = json.loads((rootfs.image / "manifest.json").read_text())
    wheels = {p["package"]: p for p in manifest["packages"] if p["kind"] == "wheel"}
    assert set(wheels) == build.VENDORED | {"edge-runtime"}
    assert all(len(p["sha256"]) == 64 for p in manifest["packages"] if p["kind"] == "wheel")
    debs = [p for p in manifest["packages"] if p["kind"] == "deb"]
    assert all(p["sha256"] for p in debs if p["package"] != "edge-runtime")
