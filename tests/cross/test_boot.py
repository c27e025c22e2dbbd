"""A full boot of the aarch64 image under qemu-system-aarch64 (-M virt, the image's own kernel
and initrd, serial console): systemd starts edge.target, ``edgectl status`` answers inside
the guest, and an edged stopped with SIGSTOP is killed by the watchdog and restarted within
WatchdogSec + TimeoutAbortSec + RestartSec (measured in the guest, printed). EMULATED (TCG):
times are qemu's, not a board's.

The guest runs a one-shot check unit added to a copy of the rootfs (the shipped image is not
touched); it reports ``EDGE-CHECK`` lines on the console and powers the guest off."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .emu import ARCHES, Rootfs
from .test_build import build

pytestmark = [pytest.mark.cross, pytest.mark.allow_leaks, pytest.mark.timeout(2400)]

WATCHDOG_S, ABORT_S, RESTART_S = 10.0, 2.0, 2.0  # edged.service: WatchdogSec, TimeoutAbortSec, RestartSec

CHECK = r"""#!/bin/sh
# the boot test's probe (tests/cross/test_boot.py): report on the console, then power off
say() { echo "EDGE-CHECK $*" > /dev/ttyAMA0; }
now() { cut -d' ' -f1 /proc/uptime; }
say boot-s $(now)
i=0
until [ "$(systemctl is-active edged.service)" = active ] || [ $i -ge 600 ]; do sleep 1; i=$((i+1)); done
i=0
until [ "$(systemctl is-active edge-bridge.service)" = active ] || [ $i -ge 300 ]; do sleep 1; i=$((i+1)); done
say units edged=$(systemctl is-active edged.service) edge-sync=$(systemctl is-active edge-sync.service)/$(systemctl show -p Result --value edge-sync.service) edge-bridge=$(systemctl is-active edge-bridge.service) target=$(systemctl is-active edge.target)
if edgectl --run-dir /run/edge --timeout 120 status --json > /run/status.json 2>/run/status.err; then
    say status-ok $(python3 -c 'import json; d=json.load(open("/run/status.json")); print("pid", d["pid"], "rules", d["rules"]["version"], "device", d["device_id"])')
else
    say status-failed $(tr '\n' ' ' < /run/status.err)
fi
say rss-kb $(awk '/VmRSS/ {print $2}' /proc/$(systemctl show -p MainPID --value edged.service)/status 2>/dev/null || grep VmRSS /proc/$(systemctl show -p MainPID --value edged.service)/status)
say ready-s $(systemctl show -p ExecMainStartTimestampMonotonic --value edged.service) $(systemctl show -p ActiveEnterTimestampMonotonic --value edged.service)
old=$(systemctl show -p MainPID --value edged.service)
t0=$(now)
kill -STOP "$old"
dead=""; new=""; i=0
while [ $i -lt 3000 ]; do
    if [ -z "$dead" ] && ! [ -d /proc/$old ]; then dead=$(now); fi
    pid=$(systemctl show -p MainPID --value edged.service)
    if [ -z "$new" ] && [ -n "$dead" ] && [ "$pid" != 0 ] && [ "$pid" != "$old" ]; then new=$(now); fi
    if [ -n "$new" ] && [ "$(systemctl is-active edged.service)" = active ]; then break; fi
    sleep 0.1; i=$((i+1))
done
say watchdog stopped=$t0 dead=$dead restarted=$new active=$(now) nrestarts=$(systemctl show -p NRestarts --value edged.service) result=$(journalctl -b -u edged.service -o cat | grep -c -i watchdog)
say done
systemctl poweroff
"""

UNIT = """[Unit]
Description=boot test probe
After=edge.target
[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/usr/local/sbin/edge-boot-check
[Install]
WantedBy=multi-user.target
"""


def test_full_boot_units_status_and_watchdog(tmp_path: Path) -> None:
    if "aarch64" not in ARCHES:
        pytest.skip("aarch64 is not among the arches under test (EDGE_CROSS_ARCHES)")
    qemu = shutil.which("qemu-system-aarch64")
    if qemu is None:
        pytest.skip("qemu-system-aarch64 missing: apt-get install -y qemu-system-arm")
    rootfs = Rootfs("aarch64")
    try:
        probe = rootfs.dir / "usr/local/sbin/edge-boot-check"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(CHECK)
        probe.chmod(0o755)
        (rootfs.dir / "etc/systemd/system/edge-boot-check.service").write_text(UNIT)
        wants = rootfs.dir / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        os.symlink("/etc/systemd/system/edge-boot-check.service", wants / "edge-boot-check.service")
        disk = Path("/dev/shm") / f"edge-boot-{os.getpid()}.img"
        build.make_disk(rootfs.dir, disk)
    finally:
        rootfs.close()
    lines: list[str] = []
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [qemu, "-M", "virt", "-cpu", "cortex-a57", "-smp", "2", "-m", "1024", "-nographic",
             "-no-reboot", "-kernel", str(rootfs.image / "vmlinuz"),
             "-initrd", str(rootfs.image / "initrd.img"),
             "-append", "root=LABEL=edge-root rw console=ttyAMA0 quiet",
             "-drive", f"if=none,id=d0,file={disk},format=raw",
             "-device", "virtio-blk-pci,drive=d0", "-nic", "none"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        buf = b""
        deadline = time.monotonic() + 2000
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                buf += chunk
                *done, buf = buf.split(b"\n")
                lines += [ln.decode(errors="replace").rstrip("\r") for ln in done]
                if any(ln.startswith("EDGE-CHECK done") for ln in lines):
                    break
        proc.wait(timeout=300) if proc.poll() is None else None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        disk.unlink(missing_ok=True)
    wall = time.monotonic() - t0
    report = [ln for ln in lines if ln.startswith("EDGE-CHECK")]
    print("\n[aarch64, EMULATED qemu-system TCG] " + "\n".join(report) + f"\nwall {wall:.0f} s")
    assert report and report[-1] == "EDGE-CHECK done", "\n".join(lines[-60:])
    text = "\n".join(report)
    # edge-sync: skipped by its ExecCondition (the shipped edge.toml names no upstream_url)
    assert "units edged=active edge-sync=inactive/exec-condition edge-bridge=active target=active" in text
    assert "EDGE-CHECK status-ok pid " in text
    m = re.search(r"watchdog stopped=([\d.]+) dead=([\d.]+) restarted=([\d.]+) active=([\d.]+) "
                  r"nrestarts=(\d+) result=(\d+)", text)
    assert m, text
    stopped, dead, restarted, active = (float(m.group(i)) for i in range(1, 5))
    assert int(m.group(5)) >= 1 and int(m.group(6)) >= 1  # restarted, and journal says watchdog
    assert WATCHDOG_S - 0.5 <= dead - stopped <= WATCHDOG_S + ABORT_S + 1.5  # killed by it
    assert restarted - stopped <= WATCHDOG_S + ABORT_S + RESTART_S + 3.0
    print(f"killed {dead - stopped:.1f} s after SIGSTOP, new edged {restarted - stopped:.1f} s, "
          f"ready {active - stopped:.1f} s (WatchdogSec {WATCHDOG_S:.0f} + abort {ABORT_S:.0f} "
          f"+ RestartSec {RESTART_S:.0f})")
