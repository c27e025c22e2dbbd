"""The exception tree. Every error this package raises on purpose derives from EdgeError.

::

    EdgeError
     +-- ConfigError               a setting is invalid (names the setting and its source)
     +-- WireError                 a buffer is not a valid protocol message
     |    +-- VerifyError          failed verification (bounds, offsets, identifier, UTF-8, ...)
     |    +-- TooLargeError        over the configured size limit
     +-- RuleError                 a rule file or rule table is invalid
     |    +-- RuleFileError        every problem of a rule file, file:line:col (edge.rules)
     |    +-- ConditionError       a rule_content that does not compile (edge.rules)
     |    +-- TraceError           a replay trace with mistakes (edge.rules)
     |    +-- RuleTableError       a compiled RuleTable buffer is refused
     +-- StoreError                the LMDB state store failed
     |    +-- StoreFullError       map full or disk full (counted, audited, never fatal)
     +-- RuntimeStateError         edged cannot start (lock held, run dir unusable, ...)
     |    +-- AlreadyRunningError  another edged holds the single-instance lock
     +-- AgentError                raised by the agent SDK
     |    +-- AgentClosedError     the agent was closed
     |    +-- UndeclaredMetricError  report() of a metric not declared at connect
     |    +-- ConnectError         no Welcome from edged (not running, refused, duplicate id)
     |    +-- InstructionRejected  raised by a handler to answer Rejected
     +-- CtlError                  edgectl could not get an answer
          +-- NotRunningError      no edged at the run dir (the message says how to start it)
          +-- CtlRefused           edged answered with an error
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every deliberate error in the edge runtime."""


class ConfigError(EdgeError):
    pass


class WireError(EdgeError):
    pass


class VerifyError(WireError):
    pass


class TooLargeError(WireError):
    pass


class RuleError(EdgeError):
    pass


class RuleTableError(RuleError):
    pass


class StoreError(EdgeError):
    pass


class StoreFullError(StoreError):
    pass


class RuntimeStateError(EdgeError):
    pass


class AlreadyRunningError(RuntimeStateError):
    pass


class AgentError(EdgeError):
    pass


class AgentClosedError(AgentError):
    pass


class UndeclaredMetricError(AgentError):
    pass


class ConnectError(AgentError):
    pass


class InstructionRejected(AgentError):  # noqa: N818 - it is an answer, not a fault
    """Raise from an instruction handler to answer the instruction with status Rejected."""


class CtlError(EdgeError):
    pass


class NotRunningError(CtlError):
    pass


class CtlRefused(CtlError):  # noqa: N818
    pass
