"""Simulators: the throw-away rig of child processes (edged plus simulated agents), the demo's
agent fleet and the bench's load generators. Used by ``edgectl bench``/``demo`` and by the
hardware-in-the-loop rig (``hil``); sits above ``sdk`` and below ``cli``.

The agent roles run as child processes: ``python -m edge.sim._sim ROLE`` (probe, load, pong,
fleet) and ``python -m edge.sim._bench_sims ROLE`` (blast, sink, swarm). ``FaultProxy`` is a
TCP proxy whose wire a test or the rig breaks on purpose (delay, blackhole, reset).
"""

from ._faultproxy import FaultProxy as FaultProxy
from ._sim import HIST_MAX_NS as HIST_MAX_NS
from ._sim import WITH_UPSTREAM as WITH_UPSTREAM
from ._sim import Child as Child
from ._sim import Rig as Rig
from ._sim import child_env as child_env
from ._sim import edged_command as edged_command
from ._sim import new_hist as new_hist
from ._sim import psi_cpu_some_us as psi_cpu_some_us
from ._sim import record_ns as record_ns
from ._sim import sigterm_as_interrupt as sigterm_as_interrupt
from ._sim import summary_us as summary_us
