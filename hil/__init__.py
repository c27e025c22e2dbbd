"""hil: hardware-in-the-loop rigs. Sits above edge.sdk/edge.sim (and firmware_bridge); nothing
in edge imports it.

    _errors      HilError, ScenarioError, PlantError, RigTimeoutError, RigSkipError
    _plants      plant models (motor, tank, vehicle; an FMI 2.0 FMU through FMPy)
    _faults      the fault vocabulary (signal, process, bus, serial, modbus, network, clock,
                 load, rules) and the signal faults
    _devices     simulated devices on real links behind an edge-bridge child; the link faults
    _uplink      nats-server, the fault proxy and edge-sync; the network faults
    _disk        edged's data dir on a tmpfs of its own; the disk-full fault
    _load        metric floods at a rate or at a multiple of edged's capacity measured in the run
    _scenario    the scenario format, checked like rule files (file:line:col, all at once)
    _runner      one run: edged, agents, devices, the uplink, the plant in real time, faults,
                 teardown
    _verdict     assertions and validators -> PASS / FAIL (+ MARGINAL)
    _report      result.json, junit.xml, report.html + PNGs, recording.csv, MDF4
    _diff        a recording against a candidate rule table
    _main        the edge-hil command
"""

from ._diff import diff as diff
from ._errors import HilError as HilError
from ._errors import PlantError as PlantError
from ._errors import RigTimeoutError as RigTimeoutError
from ._errors import ScenarioError as ScenarioError
from ._main import main as main
from ._plants import MODELS as MODELS
from ._report import write_junit as write_junit
from ._report import write_outputs as write_outputs
from ._runner import RunResult as RunResult
from ._runner import run_scenario as run_scenario
from ._scenario import Scenario as Scenario
from ._scenario import load_scenario as load_scenario
