"""The sync tests' fault proxy lives in edge.sim (the HIL rig's network faults use it too)."""

from edge.sim import FaultProxy as FaultProxy
