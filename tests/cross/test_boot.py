"""A full boot of the aarch64 image under qemu-system-aarch64 (-M virt, the image's own kernel
and initrd, serial console; tests/cross/guest.py): systemd starts edge.target, ``edgectl
status`` answers inside the guest, and an edged stopped with SIGSTOP is killed by the watchdog
and restarted, measured from the guest's own clocks: the SIGSTOP (``/proc/uptime``), systemd's
"Watchdog timeout" journal entry, and the restarted edged's ExecMainStart and READY
(ActiveEnter) monotonic timestamps. On any failure the assertion shows the unit states and
``journalctl -b -u edged -u edge-bridge -u edge-sync`` read back from the guest's disk.
EMULATED (TCG): times are qemu's on this host, not a board's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from . import guest
from .emu import ARCHES, Rootfs, require_image

pytestmark = [pytest.mark.cross, pytest.mark.allow_leaks, pytest.mark.timeout(2400)]

WATCHDOG_S, ABORT_S, RESTART_S = 10.0, 2.0, 2.0  # edged.service: WatchdogSec, TimeoutAbortSec, RestartSec

CHECK = r"""
active() { [ "$(systemctl is-active $1)" = active ]; }
# up to 15 min for a slow emulated boot, but not once a unit has failed twice (restarting)
up() { i=0; until active $1 || [ $i -ge $2 ] || [ "$(systemctl show -p NRestarts --value $1)" -ge 2 ] \
       || [ "$(systemctl is-active $1)" = failed ]; do sleep 1; i=$((i+1)); done; }
up edged.service 900
up edge-bridge.service 300
say units edged=$(systemctl is-active edged.service) edge-sync=$(systemctl is-active edge-sync.service)/$(systemctl show -p Result --value edge-sync.service) edge-bridge=$(systemctl is-active edge-bridge.service) target=$(systemctl is-active edge.target)
active edged.service || exit 1
say systemd-analyze $(systemd-analyze time 2>/dev/null | head -1)
if edgectl --run-dir /run/edge --timeout 120 status --json > $R/status.json 2>$R/status.err; then
    say status-ok $(python3 -c 'import json; d=json.load(open("'$R'/status.json")); print("pid", d["pid"], "rules", d["rules"]["version"], "device", d["device_id"])')
else
    say status-failed $(tr '\n' ' ' < $R/status.err)
fi
old=$(systemctl show -p MainPID --value edged.service)
say rss-kb $(awk '/VmRSS/ {print $2}' /proc/$old/status)
say first-start $(systemctl show -p ExecMainStartTimestampMonotonic --value edged.service) ready $(systemctl show -p ActiveEnterTimestampMonotonic --value edged.service)
sleep 3
t0=$(now)
kill -STOP "$old"
i=0
while [ $i -lt 1200 ]; do
    pid=$(systemctl show -p MainPID --value edged.service)
    if [ "$pid" != 0 ] && [ "$pid" != "$old" ] && active edged.service; then break; fi
    sleep 0.1; i=$((i+1))
done
say watchdog stopped=$t0 old=$old new=$(systemctl show -p MainPID --value edged.service) new-start-us=$(systemctl show -p ExecMainStartTimestampMonotonic --value edged.service) ready-us=$(systemctl show -p ActiveEnterTimestampMonotonic --value edged.service) nrestarts=$(systemctl show -p NRestarts --value edged.service) state=$(systemctl is-active edged.service)
"""


def _journal_s(run: guest.GuestRun, pattern: str, after_s: float) -> float | None:
    """The monotonic time (s) of edged's first journal entry after ``after_s`` whose message
    matches ``pattern`` (systemd's own lines about the unit are in it too)."""
    for line in run.files.get("edged-journal.json", "").splitlines():
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        t = int(entry.get("__MONOTONIC_TIMESTAMP", 0)) / 1e6
        msg = entry.get("MESSAGE")
        if t >= after_s and isinstance(msg, str) and re.search(pattern, msg):
            return t
    return None


def test_full_boot_units_status_and_watchdog(tmp_path: Path, report: dict[str, Any]) -> None:
    if "aarch64" not in ARCHES:
        pytest.skip("aarch64 is not among the arches under test (EDGE_CROSS_ARCHES)")
    why = guest.unavailable("aarch64")
    if why:
        pytest.skip(why)
    if not (require_image("aarch64") / "vmlinuz").exists():
        pytest.skip("the aarch64 image has no kernel (built --checks-only): make image ARCH=aarch64")
    rootfs = Rootfs("aarch64")
    log = guest.log_path("aarch64", "boot")
    try:
        run = guest.boot(rootfs.dir, rootfs.image, "aarch64", CHECK, timeout=2000, log=log)
    finally:
        rootfs.close()
    where = "qemu-system-aarch64 -M virt -cpu cortex-a57 (TCG), the image's kernel and initrd"
    report.update(arch="aarch64", where=where, wall_s=round(run.wall_s, 1), console_log=str(log))
    print(f"\n[aarch64, EMULATED {where}]\n" + "\n".join(run.report) + f"\nwall {run.wall_s:.0f} s")
    text = "\n".join(run.report)
    assert run.report and run.report[-1] == "done rc=0", run.failure()
    boot = re.search(r"^systemd-analyze Startup finished in (.*)$", text, re.M)
    report["systemd_analyze"] = boot.group(1) if boot else None
    # edge-sync: skipped by its ExecCondition (the shipped edge.toml names no upstream_url)
    assert "units edged=active edge-sync=inactive/exec-condition edge-bridge=active target=active" in text, run.failure()
    assert "status-ok pid " in text, run.failure()
    first = re.search(r"^first-start (\d+) ready (\d+)$", text, re.M)
    assert first, run.failure()
    report["edged_cold_start_s"] = round((int(first.group(2)) - int(first.group(1))) / 1e6, 2)
    rss = re.search(r"^rss-kb (\d+)$", text, re.M)
    report["edged_idle_rss_mib"] = round(int(rss.group(1)) / 1024, 1) if rss else None
    m = re.search(r"watchdog stopped=([\d.]+) old=(\d+) new=(\d+) new-start-us=(\d+) ready-us=(\d+) "
                  r"nrestarts=(\d+) state=(\w+)", text)
    assert m, run.failure()
    stopped, old, new = float(m.group(1)), int(m.group(2)), int(m.group(3))
    new_start, ready = int(m.group(4)) / 1e6, int(m.group(5)) / 1e6
    assert new != old and m.group(7) == "active" and int(m.group(6)) >= 1, run.failure()
    fired = _journal_s(run, r"[Ww]atchdog timeout", stopped)
    killed = _journal_s(run, r"Main process exited|Killing process .* SIGKILL", stopped)
    assert fired is not None, run.failure()
    figures = {
        "watchdog_fired_s": round(fired - stopped, 2),  # SIGSTOP -> systemd's "Watchdog timeout"
        "killed_s": round(killed - stopped, 2) if killed else None,
        "new_edged_started_s": round(new_start - stopped, 2),
        "new_edged_ready_s": round(ready - stopped, 2),  # SIGSTOP -> the new edged's READY=1
        "restarted_edged_cold_start_s": round(ready - new_start, 2),
        "bound_s": {"WatchdogSec": WATCHDOG_S, "TimeoutAbortSec": ABORT_S, "RestartSec": RESTART_S},
    }
    report["watchdog"] = figures
    print(f"watchdog: {json.dumps(figures)}")
    # killed by the watchdog, not before (an armed timer of WatchdogSec, ~0.1 s poll slack)
    assert WATCHDOG_S - 0.5 <= fired - stopped <= WATCHDOG_S + 2.0, run.failure()
    # a new edged is started RestartSec after the SIGKILL that follows TimeoutAbortSec
    assert new_start - stopped <= WATCHDOG_S + ABORT_S + RESTART_S + 3.0, run.failure()
    assert ready > new_start
