"""Each built image under emulation (``make cross-test``; marker ``cross``, not in make test):
``edged --self-test``, a short real loop, edged's idle RSS, ``edgectl rules check``/``replay`` on
the examples, and the pure test modules (wire, rules, store) on that arch's Python 3.13, from
the image's own runtime; plus what the image must not hold (a compiler) and what the .deb must
say (Depends, Architecture).

Where each check runs is in its output and in the report (cross/out/cross-test.json): in a
chroot under qemu-user, except edged's runtime checks on riscv64, which run in one boot of the
image under qemu-system-riscv64 (tests/cross/guest.py): qemu-user does not implement
``set_robust_list``, which glibc needs for the robust process-shared mutexes LMDB initialises,
so edged cannot open its store there. Figures (self-test stages, idle RSS) are printed for the
README's footprint table: they are EMULATED timings, not a board's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import guest
from .emu import ARCHES, ROOT, Rootfs
from .test_build import build

pytestmark = [pytest.mark.cross, pytest.mark.allow_leaks, pytest.mark.timeout(5400)]
# allow_leaks: the only children are the chroot's (or qemu-system's), each waited for

PURE_TESTS = ("tests/wire", "tests/rules", "tests/store")
TEST_DEPS = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "hypothesis",
             "_hypothesis_pytestplugin.py", "_hypothesis_globals.py", "_hypothesis_ftz_detector.py",
             "sortedcontainers", "pytest_timeout.py", "py.py")
"""hypothesis's pytest plugin is a top-level module of its own (its entry point names it)."""
PYTHONPATH = "/usr/lib/edge-runtime/python:/root/edge-test-deps"

IDLE_RSS = (
    "d=$(mktemp -d); EDGE_LOG_LEVEL=WARNING edged --run-dir $d/run --data-dir $d/data "
    "--metrics-addr '' & pid=$!; "
    "i=0; while [ ! -S $d/run/ctl.sock ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; "
    "edgectl --run-dir $d/run --timeout 120 status --json >/dev/null && sleep 2 && "
    "grep VmRSS /proc/$pid/status; kill -TERM $pid; wait $pid"
)
RUNTIME = {  # check -> (shell command, timeout s, environment); the test that reads it
    "self_test": ("edged --self-test", 600, {}),
    "loop": ("python3 /root/loop_probe.py 20 120", 900, {}),
    "idle_rss": (IDLE_RSS, 600, {}),
    "pure": ("cd /root/edge-tests && python3 -m pytest -q -p no:cacheprovider -x "
             + " ".join(PURE_TESTS), 4200, {"PYTHONPATH": PYTHONPATH}),
}
TEST_OF = {"self_test": "test_self_test_passes",
           "loop": "test_a_short_real_loop_agent_rule_instruction_ack",
           "idle_rss": "test_idle_rss_of_edged", "pure": "test_pure_test_modules_pass_on_the_arch"}
SYSTEM_ONLY = {"riscv64"}
"""Arches whose edged cannot run under qemu-user (no set_robust_list: LMDB's robust mutexes)."""
QEMU_USER = "qemu-user chroot"


class Runtime:
    """edged's runtime checks for one image: each in the chroot under qemu-user, or (arches in
    SYSTEM_ONLY) all the selected ones in one qemu-system boot, run at the first ask."""

    def __init__(self, rootfs: Rootfs, selected: set[str]):
        self.rootfs, self.selected = rootfs, selected
        self.results: dict[str, subprocess.CompletedProcess[str]] | None = None
        self.boot: guest.GuestRun | None = None
        if rootfs.arch in SYSTEM_ONLY:
            self.where = (f"qemu-system-{rootfs.arch} -M virt (TCG), the image's kernel and initrd"
                          + (", Debian's OpenSBI" if rootfs.arch == "riscv64" else ""))
        else:
            cpu = build.ARCHES[rootfs.arch].qemu_cpu
            self.where = QEMU_USER + (f" (QEMU_CPU={cpu})" if cpu else "")

    def run(self, check: str) -> subprocess.CompletedProcess[str]:
        command, timeout, env = RUNTIME[check]
        if self.rootfs.arch not in SYSTEM_ONLY:
            return self.rootfs.run(command, timeout=timeout, env=env)
        if self.results is None:
            self.results = self._boot()
        return self.results[check]

    def _boot(self) -> dict[str, subprocess.CompletedProcess[str]]:
        arch = self.rootfs.arch
        why = guest.unavailable(arch)
        if why:
            pytest.skip(f"{arch}: edged's runtime checks need qemu-system here ({why})")
        checks = [c for c in RUNTIME if c in self.selected]
        script = ["cd /root; export HOME=/root LANG=C.UTF-8"]
        for c in checks:
            command, timeout, env = RUNTIME[c]
            exports = " ".join(f"{k}={v}" for k, v in env.items())
            script.append(f"say start {c} $(now)")
            script.append(f"env {exports} timeout {int(timeout)} sh -c {_sh_quote(command)} "
                          f"> $R/{c}.out 2> $R/{c}.err; echo $? > $R/{c}.rc")
            script.append(f"say end {c} $(now) rc=$(cat $R/{c}.rc)")
        total = sum(RUNTIME[c][1] for c in checks) + 1200  # + the boot and the diagnostics
        self.boot = guest.boot(self.rootfs.dir, self.rootfs.image, arch, "\n".join(script),
                               timeout=total, log=guest.log_path(arch, "runtime-checks"),
                               enable_units=False)
        print(f"\n[{arch}, EMULATED {self.where}] " + " | ".join(self.boot.report)
              + f" | wall {self.boot.wall_s:.0f} s")
        out = {}
        for c in RUNTIME:
            rc = self.boot.files.get(f"{c}.rc", "").strip()
            out[c] = subprocess.CompletedProcess(
                [c], int(rc) if rc.lstrip("-").isdigit() else -1,
                self.boot.files.get(f"{c}.out", ""),
                self.boot.files.get(f"{c}.err", "") + ("" if rc else "\n" + self.boot.failure()))
        return out


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _prepare(r: Rootfs) -> None:
    """What the runtime checks need in the rootfs: the loop probe and the pure test modules
    with pytest and its pure-Python dependencies (the host venv's copies run on any arch)."""
    shutil.copy(Path(__file__).with_name("loop_probe.py"), r.dir / "root/loop_probe.py")
    dest = r.dir / "root/edge-tests"
    dest.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest)
    shutil.copytree(ROOT / "schemas", dest / "schemas")
    (dest / "tests").mkdir()
    for f in ("__init__.py", "conftest.py", "support.py"):
        shutil.copy(ROOT / "tests" / f, dest / "tests" / f)
    for d in PURE_TESTS:
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "tests/chaos").mkdir()
    for f in ("__init__.py", "inproc_fuzz.py"):  # the mutator tests/wire/test_lean.py uses
        shutil.copy(ROOT / "tests/chaos" / f, dest / "tests/chaos" / f)
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    deps = r.dir / "root/edge-test-deps"
    deps.mkdir()
    for name in TEST_DEPS:
        src = site / name
        if name == "hypothesis" and any(src.glob("_native*.so")):
            _pure_hypothesis(deps)  # the host's is compiled for the host
            continue
        if name.startswith("_hypothesis") and (deps / name).exists():
            continue  # the pure wheel's own
        if src.is_dir():
            shutil.copytree(src, deps / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, deps / name)
        for info in site.glob(f"{name.removesuffix('.py')}-*.dist-info"):
            shutil.copytree(info, deps / info.name)  # entry points: pytest's plugins


def _pure_hypothesis(deps: Path) -> None:
    """Unpack the locked pure hypothesis wheel (cross/pypi.lock.json ``test_packages``, fetched
    and sha256-checked as the image's wheels are) into ``deps``."""
    import zipfile

    entry = next(e for e in build.lock("test_packages") if e["name"] == "hypothesis")
    with zipfile.ZipFile(build.fetch(entry)) as whl:
        whl.extractall(deps)


@pytest.fixture(scope="module", params=ARCHES)
def rootfs(request: pytest.FixtureRequest) -> Iterator[Rootfs]:
    r = Rootfs(request.param)
    try:
        _prepare(r)
        names = {item.name.split("[")[0] for item in request.session.items
                 if f"[{request.param}]" in item.name}
        r.runtime = Runtime(r, {c for c, t in TEST_OF.items() if t in names})  # type: ignore[attr-defined]
        yield r
    finally:
        r.close()


def _runtime(rootfs: Rootfs, check: str, report: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    rt: Runtime = rootfs.runtime  # type: ignore[attr-defined]
    report.update(arch=rootfs.arch, where=rt.where)
    return rt.run(check)


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


def test_self_test_passes(rootfs: Rootfs, report: dict[str, Any]) -> None:
    out = _ok(_runtime(rootfs, "self_test", report))
    assert out.splitlines()[-1].startswith("edged self-test passed in ")
    report["self_test"] = out.strip().splitlines()
    print(f"\n[{rootfs.arch}, EMULATED {report['where']}] {out}")


def test_a_short_real_loop_agent_rule_instruction_ack(rootfs: Rootfs, report: dict[str, Any]) -> None:
    """edged as its own process, an SDK agent reporting over a rule's threshold 20 times:
    each firing's Instruction reaches the agent and edged counts each Ack (loop_probe.py)."""
    proc = _runtime(rootfs, "loop", report)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    assert proc.returncode == 0 and result.get("ok"), f"{proc.stdout}\n{proc.stderr[-3000:]}"
    assert result["acks_ok"] == 20 and result["instructions_sent"] == 20 and result["edged_exit"] == 0
    report["loop"] = result
    print(f"\n[{rootfs.arch}, EMULATED {report['where']}] loop: {json.dumps(result)}")


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


def test_idle_rss_of_edged(rootfs: Rootfs, report: dict[str, Any]) -> None:
    """edged started on a temp dir, idle: its RSS once ready. EMULATED: under qemu-user the
    process is qemu itself, so this RSS includes qemu's translator and code cache; a board's
    edged is smaller (the native figure is in the README). Under qemu-system it is the
    guest kernel's own figure for edged."""
    out = _ok(_runtime(rootfs, "idle_rss", report))
    rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", out).group(1))  # type: ignore[union-attr]
    report["edged_idle_rss_mib"] = round(rss_kb / 1024, 1)
    print(f"\n[{rootfs.arch}, EMULATED {report['where']}] edged idle RSS {rss_kb / 1024:.1f} MiB")
    assert rss_kb > 0


def test_pure_test_modules_pass_on_the_arch(rootfs: Rootfs, report: dict[str, Any]) -> None:
    out = _ok(_runtime(rootfs, "pure", report))
    summary = out.strip().splitlines()[-1]
    report["pure_tests"] = summary
    print(f"\n[{rootfs.arch}, EMULATED {report['where']}] {summary}")
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
