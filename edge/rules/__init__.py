"""Rules: the seed's rule objects -> a checked, normalised RuleSet -> a RuleTable binary ->
a compiled table evaluated per (agent, series) and indexed by metric id.

Two halves with different costs. What edged needs to run a table is imported with the
package: the model and IR (``Rule``, ``RuleSet``, ``Condition``, ...), the engine
(``CompiledTable``) and the table codec (``decode_rule_table``, ``encode_rule_table``, the
trusted-key helpers; PyNaCl itself loads only when a key is used). The rule-text compiler
(lexer, parser, YAML source, ``compile_condition``) and trace replay are loaded on first use
of one of their names (PEP 562 ``__getattr__``): they bring PyYAML, difflib, fractions/decimal
and csv, ~4 MB that a board running a compiled table never needs. Every name below stays
importable from ``edge.rules`` either way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# edge.wire first: it imports flatbuffers (used by the table codec) with numpy hidden.
from .. import wire as _wire  # noqa: F401
from ._board import BOARD_AGENT as BOARD_AGENT
from ._board import BoardEval as BoardEval
from ._board import bind_board as bind_board
from ._engine import AgentEval as AgentEval
from ._engine import CompiledRule as CompiledRule
from ._engine import CompiledTable as CompiledTable
from ._engine import Firing as Firing
from ._engine import Instance as Instance
from ._engine import SeriesState as SeriesState
from ._engine import Timers as Timers
from ._ir import AGENT_LABEL as AGENT_LABEL
from ._ir import Condition as Condition
from ._ir import Node as Node
from ._ir import NodeOp as NodeOp
from ._ir import Selector as Selector
from ._model import Rule as Rule
from ._model import RuleSet as RuleSet
from ._signing import TrustedKeys as TrustedKeys
from ._signing import key_id as key_id
from ._signing import load_public_key as load_public_key
from ._signing import load_signing_key as load_signing_key
from ._signing import load_trusted_keys as load_trusted_keys
from ._signing import sign_table as sign_table
from ._signing import write_key_pair as write_key_pair
from ._table_codec import TableInfo as TableInfo
from ._table_codec import decode_rule_table as decode_rule_table
from ._table_codec import decode_table_with_info as decode_table_with_info
from ._table_codec import encode_rule_table as encode_rule_table
from ._table_codec import rule_json as rule_json
from ._targets import MAX_TARGETS as MAX_TARGETS
from ._targets import resolve_targets as resolve_targets

if TYPE_CHECKING:
    from ._compiler import compile_condition as compile_condition
    from ._lexer import ConditionError as ConditionError
    from ._lexer import Diagnostic as Diagnostic
    from ._replay import TraceError as TraceError
    from ._replay import TraceRow as TraceRow
    from ._replay import parse_trace as parse_trace
    from ._replay import read_trace as read_trace
    from ._replay import replay as replay
    from ._replay import unmatched_series as unmatched_series
    from ._source import Problem as Problem
    from ._source import RuleFileError as RuleFileError
    from ._source import compose_source as compose_source
    from ._source import load_rule_file as load_rule_file
    from ._source import parse_condition as parse_condition
    from ._source import parse_duration as parse_duration
    from ._source import parse_rule_text as parse_rule_text
    from ._source import problem_at as problem_at
    from ._source import read_source as read_source

_LAZY = {
    "compile_condition": "_compiler",
    "ConditionError": "_lexer",
    "Diagnostic": "_lexer",
    "TraceError": "_replay",
    "TraceRow": "_replay",
    "parse_trace": "_replay",
    "read_trace": "_replay",
    "replay": "_replay",
    "unmatched_series": "_replay",
    "Problem": "_source",
    "RuleFileError": "_source",
    "load_rule_file": "_source",
    "parse_condition": "_source",
    "parse_duration": "_source",
    "parse_rule_text": "_source",
    "compose_source": "_source",
    "problem_at": "_source",
    "read_source": "_source",
}
"""Public name -> the private module that defines it, imported on first access."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
