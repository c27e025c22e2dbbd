"""The load layer: a metric flood from edge.sim's ``load`` agents (the bench's), at a fixed
rate or at a multiple of edged's capacity measured in the same run.

::

    start phase   ratio given: calibrate. The senders offer a rising total rate in steps
                  (x2 until edged sheds or falls behind, then two bisections; a step it
                  did not take is measured once more); per step edged's own counters say
                  what it ingested and what it evaluated in full (samples -
                  sched_samples_dropped). capacity = the highest offered rate it took
                  and evaluated in full, < 1 % of the samples shed.
    fault start   the senders offer ratio x capacity (or ``rate``) split between ``procs``
    fault end     their own count of what they sent: load.offered_per_s; with a ratio, an
                  offered rate short of 90 % of the asked one is the rig's failure (ERROR:
                  the load generator could not offer it), never the system's

Signals: ``load.capacity_per_s``, ``load.offered_per_s``, ``load.ratio`` (offered /
capacity).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from ._errors import HilError

STEP_SETTLE_S = 0.15
STEP_MEASURE_S = 0.35
SHED_SHARE = 0.01
START_RATE = 100_000.0
MAX_RATE = 50_000_000.0
CATCH_UP_MS = 250.0
"""A sender descheduled by the machine sends what it missed, up to this far behind: the rate
is offered on average (a loaded 2-core board takes the senders off the CPU now and then)."""


class Flood:
    """One metric_flood fault's senders: ``spawn()``, maybe ``calibrate()``, then ``start()``
    and ``stop()`` (idempotent)."""

    def __init__(self, rig: Any, fault: Any, timeout: float):
        self.rig = rig
        self.f = fault
        self.timeout = timeout
        p = fault.params
        self.procs = max(1, int(p.get("procs", 1)))
        self.ratio = float(p.get("ratio", 0.0))
        self.rate = float(p.get("rate", 20000.0))
        self.kids: list[Any] = []
        self.capacity = 0.0
        self.steps: list[dict[str, float]] = []
        self.offered = 0.0
        self.late = 0

    def spawn(self) -> None:
        p = self.f.params
        first = (START_RATE if self.ratio else self.rate) / self.procs
        for i in range(self.procs):
            self.kids.append(self.rig.spawn(
                "load", "--run-dir", str(self.rig.run_dir), "--agent-id", f"hil-load-{self.f.id}-{i}",
                "--rate", str(first), "--batch", str(int(p.get("batch", 100))),
                "--series", str(int(p.get("series", 16))), "--catch-up-ms", str(CATCH_UP_MS)))
        for k in self.kids:
            k.expect("ready", timeout=self.timeout)

    def _counters(self) -> tuple[float, float, float, float]:
        from edge.runtime import CtlClient
        from edge.wire import CtlOp

        with CtlClient(self.rig.run_dir, timeout=5.0) as c:
            n = c.request(CtlOp.STATUS)["counters"]
        return float(n["samples"]), float(n["sched_samples_dropped"]), float(n["sched_shed"]), time.monotonic()

    def _pace(self, total: float) -> None:
        for k in self.kids:
            k.send(f"rate {total / self.procs:.1f}")
        for k in self.kids:
            k.expect("rate", timeout=self.timeout)

    def _step(self, total: float) -> dict[str, float]:
        """One calibration step; one that edged did not take is measured once more (a passing
        stall of a loaded machine is not edged's capacity)."""
        s = self._measure(total)
        return s if s["ok"] else self._measure(total)

    def _measure(self, total: float) -> dict[str, float]:
        self._pace(total)
        time.sleep(STEP_SETTLE_S)  # the new pace settling in edged's queues before it is measured
        a = self._counters()
        time.sleep(STEP_MEASURE_S)  # the measuring window
        b = self._counters()
        dt = b[3] - a[3]
        ingested = (b[0] - a[0]) / dt
        step = {"offered_per_s": round(total, 1), "ingested_per_s": round(ingested, 1),
                "evaluated_per_s": round((b[0] - a[0] - (b[1] - a[1])) / dt, 1),
                "shed_batches": b[2] - a[2]}
        shed_share = (b[1] - a[1]) / max(b[0] - a[0], 1.0)
        step["ok"] = float(shed_share < SHED_SHARE and ingested >= 0.9 * total)
        self.steps.append(step)
        return step

    def calibrate(self) -> float:
        """edged's capacity (samples/s it evaluates in full), measured now; HilError when the
        senders cannot find it (edged took everything they could offer)."""
        for k in self.kids:
            k.send("run")
        try:
            time.sleep(STEP_SETTLE_S * 2)  # the senders' first batches: edged binds their series
            best, lo, hi, r = 0.0, 0.0, 0.0, START_RATE
            while r <= MAX_RATE:
                s = self._step(r)
                if not s["ok"]:
                    hi = r
                    break
                best, lo = max(best, min(s["evaluated_per_s"], r)), r
                r *= 2
            if not hi:
                raise HilError(f"the load generator could not find edged's capacity: it took "
                               f"{best:,.0f} samples/s in full from {self.procs} sender(s)")
            for _ in range(2):  # between the last rate it took and the first it did not
                mid = math.sqrt(lo * hi) if lo else hi / 2
                s = self._step(mid)
                if s["ok"]:
                    best, lo = max(best, min(s["evaluated_per_s"], mid)), mid
                else:
                    hi = mid
            if best <= 0:
                raise HilError("the load generator could not measure edged's capacity: it shed "
                               f"even {START_RATE:,.0f} samples/s")
        finally:
            for k in self.kids:
                k.send("pause")
            for k in self.kids:
                with contextlib.suppress(Exception):
                    k.expect("paused", timeout=self.timeout)
        self.capacity = best
        self.rate = self.ratio * best
        return best

    def start(self) -> None:
        self._pace(self.rate)
        for k in self.kids:
            k.send("mark")
        for k in self.kids:
            k.expect("marked", timeout=self.timeout)
        for k in self.kids:
            k.send("run")

    def stop(self) -> None:
        """Read what the senders offered and stop them."""
        kids, self.kids = self.kids, []
        for k in kids:
            k.send("report")
            with contextlib.suppress(Exception):
                rep = k.expect("report", timeout=5.0)
                self.offered += rep.get("offered_per_s", rep["sent_per_s"])
                self.late += int(rep.get("late", 0))
            k.stop()

    def shortfall(self) -> str:
        """Why the rig failed to offer what it was asked ("" when it did)."""
        if not self.ratio or not self.capacity or self.offered >= 0.9 * self.rate:
            return ""
        return (f"the load generator offered only {self.offered:,.0f} samples/s = "
                f"{self.offered / self.capacity:.2f}x edged's capacity {self.capacity:,.0f}/s "
                f"(asked {self.ratio:g}x from {self.procs} sender(s)): the rig is too slow to "
                "judge this, not the system")

    def summary(self) -> dict[str, Any]:
        return {"procs": self.procs, "asked_ratio": self.ratio or None,
                "capacity_per_s": round(self.capacity, 1) or None, "offered_per_s": round(self.offered, 1),
                "ratio": round(self.offered / self.capacity, 3) if self.capacity else None,
                "late_batches": self.late, "calibration": self.steps}
