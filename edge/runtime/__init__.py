"""edged, the runtime daemon: control loop, registry, stats, ctl server, metrics endpoint.

Only the ctl.sock client is imported eagerly: edgectl and edge-sync use it on every call, and
neither needs the daemon's modules (LMDB writer, loop, statistics) loaded for that; the rest is
imported on first use of its name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._ctlclient import CtlClient as CtlClient

if TYPE_CHECKING:
    from ._daemon import Edged as Edged
    from ._daemon import main as main
    from ._lifecycle import AgentState as AgentState
    from ._lock import InstanceLock as InstanceLock
    from ._loop import COUNTERS as COUNTERS
    from ._loop import ControlLoop as ControlLoop
    from ._scheduler import DropReason as DropReason
    from ._scheduler import PriorityScheduler as PriorityScheduler
    from ._stats import STAGES as STAGES

_LAZY = {
    "Edged": "._daemon",
    "main": "._daemon",
    "AgentState": "._lifecycle",
    "InstanceLock": "._lock",
    "COUNTERS": "._loop",
    "ControlLoop": "._loop",
    "DropReason": "._scheduler",
    "PriorityScheduler": "._scheduler",
    "STAGES": "._stats",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
