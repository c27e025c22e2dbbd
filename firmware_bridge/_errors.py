"""The bridge's exceptions, under the runtime's one root (edge.errors.EdgeError)::

EdgeError
 +-- BridgeError               raised by firmware_bridge
      +-- ProfileError         every mistake of a device profile / bridge config, file:line:col
      +-- BackendError         an unknown link kind, or its optional driver is not installed
      +-- LinkError            a link could not open, read or write (counted; the link retries)
      |    +-- LinkTimeout     no answer within the request's timeout
      |    +-- DeviceException the device answered with an exception (Modbus exception code)
      |    +-- CircuitOpen     the device's breaker is open: not even tried
      +-- ActionError          an instruction that cannot become device writes (Ack: rejected)
"""

from __future__ import annotations

from typing import Any

from edge.errors import EdgeError


class BridgeError(EdgeError):
    pass


class ProfileError(BridgeError):
    """All the problems of one file; ``problems`` are edge.rules.Problem (file:line:col)."""

    def __init__(self, problems: list[Any]):
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class BackendError(BridgeError):
    pass


class LinkError(BridgeError):
    pass


class LinkTimeout(LinkError):  # noqa: N818 - reads as what happened
    pass


class DeviceException(LinkError):  # noqa: N818 - the device's own answer
    def __init__(self, message: str, code: int = 0):
        self.code = code
        super().__init__(message)


class CircuitOpen(LinkError):  # noqa: N818
    pass


class ActionError(BridgeError):
    pass
