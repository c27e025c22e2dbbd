# DO NOT EDIT. Generated from schemas/*.fbs by "make regen" (python -m edge.wire._gen) with flatc 25.12.19.
"""Namespace edgewire.v1, one module per schema type (alias: edge.wire.fb).

Each module is imported on first use of its name (PEP 562), so a process pays only
for the classes it uses.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Ack as Ack
    from . import AckStatus as AckStatus
    from . import Action as Action
    from . import Aggregate as Aggregate
    from . import Bye as Bye
    from . import Condition as Condition
    from . import CounterAgg as CounterAgg
    from . import CtlCode as CtlCode
    from . import CtlOp as CtlOp
    from . import CtlReply as CtlReply
    from . import CtlRequest as CtlRequest
    from . import Health as Health
    from . import Heartbeat as Heartbeat
    from . import Hello as Hello
    from . import Instruction as Instruction
    from . import Label as Label
    from . import LatencyAgg as LatencyAgg
    from . import MetricBatch as MetricBatch
    from . import MetricDecl as MetricDecl
    from . import Node as Node
    from . import NodeOp as NodeOp
    from . import Notice as Notice
    from . import NoticeCode as NoticeCode
    from . import Param as Param
    from . import ParamKind as ParamKind
    from . import Rule as Rule
    from . import RuleAgg as RuleAgg
    from . import RuleTable as RuleTable
    from . import Sample as Sample
    from . import Selector as Selector
    from . import SeriesAgg as SeriesAgg
    from . import SignedRuleTable as SignedRuleTable
    from . import Welcome as Welcome

__all__ = [
    'Ack',
    'AckStatus',
    'Action',
    'Aggregate',
    'Bye',
    'Condition',
    'CounterAgg',
    'CtlCode',
    'CtlOp',
    'CtlReply',
    'CtlRequest',
    'Health',
    'Heartbeat',
    'Hello',
    'Instruction',
    'Label',
    'LatencyAgg',
    'MetricBatch',
    'MetricDecl',
    'Node',
    'NodeOp',
    'Notice',
    'NoticeCode',
    'Param',
    'ParamKind',
    'Rule',
    'RuleAgg',
    'RuleTable',
    'Sample',
    'Selector',
    'SeriesAgg',
    'SignedRuleTable',
    'Welcome',
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # importing a submodule binds it on this package: the next lookup does not come here
    return importlib.import_module(f"{__name__}.{name}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
