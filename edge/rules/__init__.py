"""Rules: the seed's rule objects -> a checked, normalised RuleSet -> a RuleTable binary ->
a compiled table evaluated per (agent, series) and indexed by metric id.

Issue 2 supports ``metric{labels} OP number [for DURATION]``; the full language plugs in
behind the same Binding / CompiledTable seam.
"""

from ._engine import AgentEval as AgentEval
from ._engine import CompiledRule as CompiledRule
from ._engine import CompiledTable as CompiledTable
from ._engine import Firing as Firing
from ._engine import Instance as Instance
from ._engine import SeriesState as SeriesState
from ._engine import Timers as Timers
from ._ir import Condition as Condition
from ._ir import Node as Node
from ._ir import NodeOp as NodeOp
from ._ir import Selector as Selector
from ._model import Rule as Rule
from ._model import RuleSet as RuleSet
from ._replay import TraceError as TraceError
from ._replay import TraceRow as TraceRow
from ._replay import parse_trace as parse_trace
from ._replay import read_trace as read_trace
from ._replay import replay as replay
from ._source import Problem as Problem
from ._source import RuleFileError as RuleFileError
from ._source import load_rule_file as load_rule_file
from ._source import parse_condition as parse_condition
from ._source import parse_duration as parse_duration
from ._source import parse_rule_text as parse_rule_text
from ._table_codec import decode_rule_table as decode_rule_table
from ._table_codec import encode_rule_table as encode_rule_table
