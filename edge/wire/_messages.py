"""Protocol constants, enums and the message dataclasses (the decoded form of each message).

The enums mirror the schema enums value for value (tests/wire checks them against the generated
code); their member names are the schema names in UPPER_SNAKE case.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
SAMPLE_SIZE = 24  # bytes of one Sample struct
SAMPLE_FORMAT = "<qdII"  # t_ns, value, metric_id, flags
TIMER_METRIC_ID = 0xFFFFFFFF  # Instruction.metric_id of an instruction a timer produced


class MessageType(enum.Enum):
    """The file identifier (bytes 4..8 of every buffer) of each root type."""

    HELLO = b"EHLO"
    WELCOME = b"EWLC"
    METRIC_BATCH = b"EMBT"
    HEARTBEAT = b"EHBT"
    INSTRUCTION = b"EINS"
    ACK = b"EACK"
    BYE = b"EBYE"
    NOTICE = b"ENTC"
    CTL_REQUEST = b"ECRQ"
    CTL_REPLY = b"ECRP"
    RULE_TABLE = b"ERTB"
    SIGNED_RULE_TABLE = b"ESRT"
    AGGREGATE = b"EAGG"


class AckStatus(enum.IntEnum):
    OK = 0
    FAILED = 1
    REJECTED = 2


class Action(enum.IntEnum):
    UNSPECIFIED = 0
    RESTART_AGENT = 1
    STOP_AGENT = 2
    PAUSE_AGENT = 3
    RESUME_AGENT = 4
    THROTTLE = 5
    SET_PARAM = 6
    ALERT = 7
    SAFE_STATE = 8
    CUSTOM = 255


class ParamKind(enum.IntEnum):
    NUMBER = 0
    BOOL = 1
    TEXT = 2


class NoticeCode(enum.IntEnum):
    UNSPECIFIED = 0
    HELLO_REQUIRED = 1
    DUPLICATE_AGENT = 2
    BAD_HELLO = 3
    UNKNOWN_METRIC = 4
    MALFORMED = 5
    TOO_LARGE = 6
    PROTOCOL_VERSION = 7
    SHUTTING_DOWN = 8
    FOREIGN_ACK = 9


class CtlOp(enum.IntEnum):
    UNSPECIFIED = 0
    STATUS = 1
    AGENTS = 2
    STATS = 3
    RULES_PUSH = 4
    RULES_LIST = 5
    TAIL = 6
    STATS_RESET = 7
    RULES_ROLLBACK = 8


class CtlCode(enum.IntEnum):
    OK = 0
    BAD_REQUEST = 1
    REFUSED = 2
    ERROR = 3


_BUILTIN_ACTIONS = {
    a.name.lower(): a for a in Action if a not in (Action.UNSPECIFIED, Action.CUSTOM)
}


def action_name(action: Action, custom: str = "") -> str:
    """The rule-file name of an action: "restart_agent", ...; `custom` for Action.CUSTOM."""
    if action is Action.CUSTOM:
        return custom or "custom"
    return Action(action).name.lower()


def action_from_name(name: str) -> Action:
    """The built-in Action named `name` ("restart_agent", ...).

    Raises ValueError for any other name, including "custom" and "unspecified": a name that is
    not built in is a custom action, which the caller resolves (Action.CUSTOM + the name).
    """
    try:
        return _BUILTIN_ACTIONS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a built-in action") from None


@dataclass(frozen=True, slots=True)
class Param:
    """An instruction parameter. The wire kind follows the value's type: bool -> BOOL (number 0
    or 1), int or float -> NUMBER (a double), str -> TEXT. Decoding gives float for NUMBER."""

    key: str
    value: float | bool | str

    @property
    def kind(self) -> ParamKind:
        if isinstance(self.value, bool):
            return ParamKind.BOOL
        if isinstance(self.value, str):
            return ParamKind.TEXT
        return ParamKind.NUMBER


@dataclass(frozen=True, slots=True)
class MetricDecl:
    """A metric an agent reports: name plus a fixed label set; (name, labels) is one series."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Hello:
    agent_id: str
    metrics: tuple[MetricDecl, ...] = ()
    agent_kind: str = ""
    pid: int = 0
    heartbeat_ms: int = 0  # the interval the agent will beat at; 0 = edged's default
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    session: int
    metric_ids: tuple[int, ...]  # one per Hello.metrics entry, same order
    heartbeat_ms: int
    missed_beats: int
    max_batch: int  # samples per MetricBatch
    max_msg_bytes: int
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Heartbeat:
    session: int
    t_ns: int  # CLOCK_MONOTONIC ns
    seq: int


@dataclass(frozen=True, slots=True)
class Instruction:
    instruction_id: int
    rule_id: str
    action: Action
    custom_action: str = ""  # the action's name when action is CUSTOM
    params: tuple[Param, ...] = ()
    priority: int = 0  # 0-255, higher is more important
    deadline_ns: int = 0  # CLOCK_MONOTONIC ns: trigger sample time + the rule's SLA
    metric_id: int = TIMER_METRIC_ID  # the triggering sample's series
    value: float = 0.0  # the triggering sample's value
    t_sample_ns: int = 0  # the triggering sample's t_ns
    source_agent: str = ""
    """The agent whose rule instance fired (``@board``: a board rule); empty: the receiving
    agent itself (a rule without ``target``)."""

    @property
    def action_name(self) -> str:
        return action_name(self.action, self.custom_action)


@dataclass(frozen=True, slots=True)
class Ack:
    session: int
    instruction_id: int
    status: AckStatus
    t_delivered_ns: int  # CLOCK_MONOTONIC ns when the agent received the instruction
    t_done_ns: int  # CLOCK_MONOTONIC ns when it finished executing it
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Bye:
    session: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    code: NoticeCode
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CtlRequest:
    request_id: int
    op: CtlOp
    args: dict[str, Any] = field(default_factory=dict)  # travels as args_json
    blob: bytes = b""  # RULES_PUSH: a RuleTable or SignedRuleTable buffer


@dataclass(frozen=True, slots=True)
class CtlReply:
    request_id: int
    code: CtlCode
    body: dict[str, Any] = field(default_factory=dict)  # travels as body_json
    error: str = ""  # what went wrong and what to do, when code is not OK
