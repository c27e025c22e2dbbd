"""Booting a built image under qemu-system (``-M virt``, TCG): the image's own kernel and initrd,
a serial console, the rootfs as a virtio disk. Used where qemu-user is not enough: the full boot
(systemd, the units, the watchdog; test_boot.py) and riscv64's runtime checks (qemu-user has no
``set_robust_list``, so LMDB's robust mutexes fail there; test_emulated.py).

A guest run is one boot of a *copy* of the rootfs (the shipped image is not touched) with a
one-shot unit, ``edge-guest-check.service``, that runs a shell script after multi-user.target
and powers the guest off. The script writes its results under ``/var/lib/edge-check`` in the
guest; whatever happens (the script fails, a unit fails, the guest hangs until the host's
deadline), the host reads that directory back from the ext4 file with ``debugfs`` (no mount),
together with the unit states and ``journalctl -b`` of the edge units, which the script's EXIT
trap writes there and also prints on the console between ``EDGE-DIAG`` markers. The console
log is kept as well. EMULATED: timings are qemu TCG's on this host, not a board's."""

from __future__ import annotations

import dataclasses
import os
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .test_build import build

RESULTS = "/var/lib/edge-check"


@dataclasses.dataclass(frozen=True)
class Machine:
    qemu: str  # qemu-system-<qemu>
    package: str  # Debian's package with it
    args: tuple[str, ...]  # machine, CPU, firmware
    console: str  # the guest's serial console device

    def missing(self) -> str | None:
        """Why this machine cannot run here (and what to install), or None."""
        if shutil.which(self.qemu) is None:
            return f"{self.qemu} missing: apt-get install -y {self.package}"
        for arg in self.args:
            if arg.startswith("/") and not Path(arg).exists():
                return f"{arg} missing: apt-get install -y opensbi"
        return None


OPENSBI = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"
MACHINES = {
    # cortex-a57: ARMv8.0, no pointer authentication to emulate (qemu's "max" is ~15x slower)
    "aarch64": Machine("qemu-system-aarch64", "qemu-system-arm",
                       ("-M", "virt", "-cpu", "cortex-a57"), "ttyAMA0"),
    # Debian's OpenSBI (package opensbi) as the M-mode firmware, the image's kernel in S-mode
    "riscv64": Machine("qemu-system-riscv64", "qemu-system-misc opensbi",
                       ("-M", "virt", "-bios", OPENSBI), "ttyS0"),
}

PROBE_HEAD = r"""#!/bin/sh
# tests/cross/guest.py's probe: the test's script, then the diagnostics, then power off
R={results}
mkdir -p $R
say() {{ echo "EDGE-CHECK $*" > /dev/console; echo "$*" >> $R/report.txt; }}
now() {{ cut -d' ' -f1 /proc/uptime; }}
diag() {{
    {{
        echo "== systemctl --failed"; systemctl --failed --no-pager
        echo "== systemctl status"; systemctl status --no-pager -l edge.target edged.service edge-sync.service edge-bridge.service
        echo "== journalctl -b -u edged -u edge-bridge -u edge-sync"
        journalctl -b --no-pager -o short-monotonic -u edged.service -u edge-bridge.service -u edge-sync.service
    }} > $R/diag.txt 2>&1
    journalctl -b --no-pager -o short-monotonic > $R/journal.txt 2>&1
    journalctl -b --no-pager -o json -u edged.service > $R/edged-journal.json 2>&1
    echo "EDGE-DIAG begin" > /dev/console
    cat $R/diag.txt > /dev/console
    echo "EDGE-DIAG end" > /dev/console
}}
finish() {{ rc=$?; echo $rc > $R/rc; diag; say done rc=$rc; sync; systemctl --no-block poweroff; }}
trap finish EXIT
say boot-s $(now)
"""

UNIT = """[Unit]
Description=edge image check (tests/cross/guest.py)
After=multi-user.target
[Service]
Type=oneshot
TimeoutStartSec=infinity
StandardOutput=journal+console
ExecStart=/usr/local/sbin/edge-guest-check
[Install]
WantedBy=multi-user.target
"""


@dataclasses.dataclass
class GuestRun:
    """One boot's outcome: the console, the files the probe left in /var/lib/edge-check."""

    arch: str
    console: list[str]
    files: dict[str, str]
    wall_s: float
    timed_out: bool

    @property
    def report(self) -> list[str]:
        return self.files.get("report.txt", "").splitlines()

    def failure(self) -> str:
        """What to show when an assertion fails: the diagnostics, else the console's tail."""
        diag = self.files.get("diag.txt")
        head = f"[{self.arch} guest: wall {self.wall_s:.0f} s, timed out: {self.timed_out}]\n"
        if diag:
            return head + "\n".join(self.report) + "\n" + diag[-12000:]
        return head + "(no diagnostics read back)\n" + "\n".join(self.console[-120:])


def unavailable(arch: str) -> str | None:
    machine = MACHINES.get(arch)
    if machine is None:
        return f"no qemu-system machine for {arch} here"
    return machine.missing()


def boot(rootdir: Path, image: Path, arch: str, script: str, *, timeout: float, log: Path,
         enable_units: bool = True) -> GuestRun:
    """Boot a copy of the unpacked ``rootdir`` (changed in place: pass a throw-away copy)
    with ``script`` as the probe; wait up to ``timeout`` s for it to power the guest off."""
    machine = MACHINES[arch]
    probe = rootdir / "usr/local/sbin/edge-guest-check"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(PROBE_HEAD.format(results=RESULTS) + script + "\n")
    probe.chmod(0o755)
    (rootdir / "etc/systemd/system/edge-guest-check.service").write_text(UNIT)
    wants = rootdir / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("/etc/systemd/system/edge-guest-check.service", wants / "edge-guest-check.service")
    if not enable_units:  # a check that needs a quiet guest, not the runtime's services
        (wants / "edge.target").unlink(missing_ok=True)
    (rootdir / "etc/systemd/system/serial-getty@.service").symlink_to("/dev/null")  # no login
    part = Path(tempfile.mkstemp(prefix=f"edge-guest-{arch}-", suffix=".ext4", dir="/dev/shm")[1])
    try:
        used = sum(p.lstat().st_size for p in rootdir.rglob("*"))
        size_mib = int(used / (1 << 20) * 1.3) + 512
        build.run(["mkfs.ext4", "-q", "-F", "-L", "edge-root", "-d", str(rootdir), str(part),
                   f"{size_mib}M"], "mkfs.ext4 (guest disk)")
        cmd = [
            machine.qemu, *machine.args, "-smp", "2", "-m", "1536", "-nographic", "-no-reboot",
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
            "-append", f"root=LABEL=edge-root rw console={machine.console} quiet",
            "-drive", f"if=none,id=d0,file={part},format=raw",
            "-device", "virtio-blk-pci,drive=d0", "-nic", "none",
        ]
        console, wall, timed_out = _run_qemu(cmd, timeout, log)
        files = _read_back(part)
    finally:
        part.unlink(missing_ok=True)
    return GuestRun(arch, console, files, wall, timed_out)


def _run_qemu(cmd: list[str], timeout: float, log: Path) -> tuple[list[str], float, bool]:
    """Run qemu until it exits (the guest powered off) or ``timeout``; the console goes to
    ``log`` as it comes. qemu is always gone when this returns."""
    t0 = time.monotonic()
    timed_out = False
    with log.open("wb") as sink:
        sink.write(("$ " + shlex.join(cmd) + "\n").encode())
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        buf = b""
        try:
            while proc.poll() is None:
                left = t0 + timeout - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 5))
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    sink.write(chunk)
                    sink.flush()
                    buf += chunk
            buf += proc.stdout.read() if not timed_out else b""
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
    lines = [ln.decode(errors="replace").rstrip("\r") for ln in buf.split(b"\n")]
    return lines, time.monotonic() - t0, timed_out


def _read_back(part: Path) -> dict[str, str]:
    """The probe's result files, read from the (unmounted) ext4 file with debugfs."""
    with tempfile.TemporaryDirectory(prefix="edge-guest-out-") as tmp:
        subprocess.run(["debugfs", "-R", f"rdump {RESULTS} {tmp}", str(part)],
                       capture_output=True, text=True, timeout=300)
        d = Path(tmp) / Path(RESULTS).name
        if not d.is_dir():
            return {}
        return {p.name: p.read_text(errors="replace") for p in d.iterdir() if p.is_file()}


def log_path(arch: str, what: str) -> Path:
    """Where a boot's console log is kept (beside the report, for a post-mortem)."""
    from .conftest import report_path

    d = report_path().parent / "guest-logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{arch}-{what}.log"
