"""The rig's errors, under edge.errors.EdgeError::

    EdgeError
     +-- HilError                 the rig itself broke (a verdict of ERROR, never FAIL)
          +-- ScenarioError       a scenario file with mistakes (every one, file:line:col)
          +-- PlantError          a plant model failed to load or step, returned NaN, diverged
          +-- RigTimeoutError     a phase or the teardown ran past its timeout (verdict TIMEOUT)
          +-- RigSkipError        the rig cannot run the scenario here (a fault needs what it
                                  lacks: root to mount a tmpfs): verdict SKIP, with the reason
"""

from __future__ import annotations

from edge.errors import EdgeError
from edge.rules import Problem


class HilError(EdgeError):
    """The rig broke: the run's verdict is ERROR, whatever the system under test did."""


class ScenarioError(HilError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class PlantError(HilError):
    """A plant model that would not load or step, gave a non-finite output or left its limits."""


class RigTimeoutError(HilError):
    """A phase of the run (start, run, teardown) did not finish within its timeout."""


class RigSkipError(HilError):
    """The rig lacks what a fault needs (the disk-full fault's tmpfs mount): the run is SKIP,
    with this reason, never ERROR or FAIL."""
