"""The agent SDK: connect to edged, declare metrics, report them, execute instructions.

Everything an agent needs is importable from here.
"""

from ..errors import AgentClosedError as AgentClosedError
from ..errors import AgentError as AgentError
from ..errors import ConnectError as ConnectError
from ..errors import InstructionRejected as InstructionRejected
from ..errors import UndeclaredMetricError as UndeclaredMetricError
from ..wire import AckStatus as AckStatus
from ..wire import Action as Action
from ..wire import Instruction as Instruction
from ..wire import Param as Param
from ._agent import DEFERRED as DEFERRED
from ._agent import Agent as Agent
