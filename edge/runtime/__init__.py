"""edged, the runtime daemon: control loop, registry, stats, ctl server, metrics endpoint."""

from ._daemon import Edged as Edged
from ._daemon import main as main
from ._lifecycle import AgentState as AgentState
from ._loop import COUNTERS as COUNTERS
from ._loop import ControlLoop as ControlLoop
from ._scheduler import DropReason as DropReason
from ._scheduler import PriorityScheduler as PriorityScheduler
from ._stats import STAGES as STAGES
