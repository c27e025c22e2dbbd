"""Rules: the seed's rule objects -> a checked, normalised RuleSet -> a RuleTable binary ->
a compiled table evaluated per (agent, series) and indexed by metric id.

Issue 2 supports ``metric{labels} OP number [for DURATION]``; the full language plugs in
behind the same Binding / CompiledTable seam.
"""

from ._compiler import compile_condition as compile_condition
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
from ._lexer import ConditionError as ConditionError
from ._lexer import Diagnostic as Diagnostic
from ._model import Rule as Rule
from ._model import RuleSet as RuleSet
from ._replay import TraceError as TraceError
from ._replay import TraceRow as TraceRow
from ._replay import parse_trace as parse_trace
from ._replay import read_trace as read_trace
from ._replay import replay as replay
from ._signing import TrustedKeys as TrustedKeys
from ._signing import key_id as key_id
from ._signing import load_public_key as load_public_key
from ._signing import load_signing_key as load_signing_key
from ._signing import load_trusted_keys as load_trusted_keys
from ._signing import sign_table as sign_table
from ._signing import write_key_pair as write_key_pair
from ._source import Problem as Problem
from ._source import RuleFileError as RuleFileError
from ._source import load_rule_file as load_rule_file
from ._source import parse_condition as parse_condition
from ._source import parse_duration as parse_duration
from ._source import parse_rule_text as parse_rule_text
from ._table_codec import TableInfo as TableInfo
from ._table_codec import decode_rule_table as decode_rule_table
from ._table_codec import decode_table_with_info as decode_table_with_info
from ._table_codec import encode_rule_table as encode_rule_table
from ._table_codec import rule_json as rule_json
