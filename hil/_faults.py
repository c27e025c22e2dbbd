"""The fault vocabulary: every fault has a kind, a target, a start, a duration and parameters.

Signal faults change what an agent reports (the plant's truth is recorded unchanged):

    stuck      the value at the fault's start, held              (no parameters)
    offset     value + ``value``
    drift      value + ``rate`` per second since the start
    noise      value + Gaussian noise of ``sigma`` (seeded: the same seed, the same noise)
    spike      value + ``amplitude`` for the first sample only
    dropout    nothing reported
    quantise   rounded to a multiple of ``step``
    delay      the value of ``ms`` milliseconds ago

Process faults act on the rig's processes (``edged``; ``bridge``, the edge-bridge child;
``sync``, the edge-sync child):

    sigstop    SIGSTOP the process for the duration, then SIGCONT
    sigkill    SIGKILL the process; restarted after the duration (no duration: stays dead)
    agent_kill an agent's connection is dropped (close, no Bye wait); reconnects after the duration
    cpu_hog    ``procs`` busy-looping processes (default 1) for the duration
    disk_full  edged's data dir is a tmpfs of ``size_mb`` MiB (default 16; mounted before edged
               starts, root only, else the run is SKIP); at the start a filler file takes all
               of it but ``leave_kb`` (default 0), at the end it is removed (hil/_disk.py)

Link faults act between a simulated device and edge-bridge (hil/_devices.py has the details):
bus (CAN), serial (the MCU's UART), modbus, and device_offline for any device.

Network faults act on the uplink (target ``uplink``: edge-sync -> fault proxy -> nats-server,
hil/_uplink.py): uplink_blackhole (connections stay up, nothing crosses, both ways),
uplink_refuse (every connection reset, new ones refused), uplink_reset (every connection reset
once).

A metric_flood (target ``edged``) runs ``procs`` load agents (edge.sim's ``load`` role, the
bench's) for the duration, each sending ``rate`` samples/s in batches of ``batch`` over
``series`` series (``load_value{ch=N}``); the offered rate is ``load.offered_per_s``. With
``ratio`` instead of ``rate`` the rig first measures edged's capacity (hil/_load.py) and offers
``ratio`` times it: ``load.capacity_per_s``, ``load.ratio``.

A rules_swap (target: a rule file, relative to the scenario) compiles it and pushes it to the
running edged over ctl.sock at its start: a hot swap of the table under test.

Clock faults act on edged's wall clock (target ``edged``; edge.clock.SteppedWallClock through
its ``wall_clock_file``): clock_step moves it by ``ms`` (undone at the end when it has a
duration), clock_skew runs it ``ppm`` fast (or slow, negative) for the duration. Its monotonic
clock, which every timing decision uses, is CLOCK_MONOTONIC shared by the board: not faulted.
"""

from __future__ import annotations

import collections
import math
import random
from typing import Any

# kind -> (layer, needs a duration, parameter names)
FAULTS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "stuck": ("signal", True, ()),
    "offset": ("signal", True, ("value",)),
    "drift": ("signal", True, ("rate",)),
    "noise": ("signal", True, ("sigma",)),
    "spike": ("signal", False, ("amplitude",)),
    "dropout": ("signal", True, ()),
    "quantise": ("signal", True, ("step",)),
    "delay": ("signal", True, ("ms",)),
    "sigstop": ("process", True, ()),
    "sigkill": ("process", False, ()),
    "agent_kill": ("process", True, ()),
    "cpu_hog": ("process", True, ("procs",)),
    "disk_full": ("process", True, ("size_mb", "leave_kb")),
    "can_drop": ("bus", True, ("rate",)),
    "can_delay": ("bus", True, ("ms",)),
    "can_corrupt": ("bus", True, ("rate",)),
    "can_error_frames": ("bus", True, ("rate",)),
    "can_bus_off": ("bus", True, ()),
    "can_flood": ("bus", True, ("rate",)),
    "serial_drop": ("serial", True, ("rate",)),
    "serial_flip": ("serial", True, ("rate",)),
    "serial_garbage": ("serial", False, ("bytes",)),
    "line_break": ("serial", True, ()),
    "mcu_reset": ("serial", False, ()),
    "modbus_timeout": ("modbus", True, ("rate",)),
    "modbus_exception": ("modbus", True, ("rate",)),
    "modbus_slow": ("modbus", True, ("ms",)),
    "device_offline": ("device", True, ()),
    "uplink_blackhole": ("network", True, ()),
    "uplink_refuse": ("network", True, ()),
    "uplink_reset": ("network", False, ()),
    "rules_swap": ("rules", False, ()),
    "metric_flood": ("load", True, ("rate", "ratio", "batch", "series", "procs")),
    "clock_step": ("clock", False, ("ms",)),
    "clock_skew": ("clock", True, ("ppm",)),
}
PROCESS_TARGETS = ("edged", "bridge", "sync", "rig")
LINK_LAYERS = {"bus": "can", "serial": "mcu", "modbus": "modbus", "device": ""}
"""A link fault's layer -> the device kind it needs ("" any)."""


class SignalFaults:
    """The signal faults on one reported series, applied in scenario order."""

    def __init__(self, faults: list[Any], seed: int):
        self.faults = faults
        self.rng = random.Random(seed)
        self.hist: collections.deque[tuple[int, float]] = collections.deque()
        self.held: dict[str, float] = {}
        self.spiked: set[str] = set()
        self.max_delay_ns = max((int(f.params.get("ms", 0) * 1e6) for f in faults if f.kind == "delay"), default=0)

    def apply(self, t_ns: int, value: float) -> float | None:
        """The value to report at ``t_ns`` (ns since the start), or None for no sample."""
        if self.max_delay_ns:
            self.hist.append((t_ns, value))
            while len(self.hist) > 1 and self.hist[1][0] <= t_ns - self.max_delay_ns:
                self.hist.popleft()
        out: float | None = value
        for f in self.faults:
            if f.kind == "spike":  # one sample, whatever the duration says
                active = f.start_ns <= t_ns and f.id not in self.spiked
            else:
                active = f.start_ns <= t_ns < f.start_ns + f.duration_ns
            if not active or out is None:
                continue
            k, p = f.kind, f.params
            if k == "stuck":
                out = self.held.setdefault(f.id, out)
            elif k == "offset":
                out += p.get("value", 0.0)
            elif k == "drift":
                out += p.get("rate", 0.0) * (t_ns - f.start_ns) / 1e9
            elif k == "noise":
                out += self.rng.gauss(0.0, p.get("sigma", 1.0))
            elif k == "spike":
                self.spiked.add(f.id)
                out += p.get("amplitude", 100.0)
            elif k == "dropout":
                out = None
            elif k == "quantise":
                step = p.get("step", 1.0)
                out = math.floor(out / step + 0.5) * step if step > 0 else out
            elif k == "delay":
                want = t_ns - int(p.get("ms", 0) * 1e6)
                past = [v for t, v in self.hist if t <= want]
                out = past[-1] if past else self.hist[0][1]
        return out
