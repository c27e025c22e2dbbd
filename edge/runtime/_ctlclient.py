"""A ctl.sock client: one request, one reply, a deadline, and a clear word when edged is absent.

Used by edgectl and by edge-sync (which sits below the cli layer), so it lives here.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import zmq

from ..errors import CtlRefused, NotRunningError
from ..transport import CTL_SOCK, endpoint, make_dealer
from ..wire import (
    CtlCode,
    CtlOp,
    CtlRequest,
    MessageType,
    decode_ctl_reply,
    encode_ctl_request,
    verify,
)

_ids = itertools.count(1)


def how_to_start(run_dir: Path) -> str:
    return f"start it with `edged --run-dir {run_dir}` (or `make demo` for a demonstration)"


class CtlClient:
    def __init__(self, run_dir: Path, timeout: float = 5.0):
        self.run_dir = Path(run_dir)
        self.timeout = timeout
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None

    def _socket(self) -> zmq.Socket[bytes]:
        path = self.run_dir / CTL_SOCK
        if not path.exists():
            raise NotRunningError(f"edged is not running: no {path}; {how_to_start(self.run_dir)}")
        if not os.access(path, os.W_OK):
            raise NotRunningError(
                f"no permission to reach {path}: join the runtime's group (run_dir_group) or use sudo"
            )
        if self._sock is None:
            self._ctx = zmq.Context()
            self._sock = make_dealer(
                self._ctx, endpoint(self.run_dir, CTL_SOCK), sndhwm=10, rcvhwm=100
            )
        return self._sock

    def request(
        self, op: CtlOp, args: dict[str, Any] | None = None, blob: bytes = b""
    ) -> dict[str, Any]:
        """Send one request; return the reply body. Raises NotRunningError or CtlRefused."""
        sock = self._socket()
        rid = next(_ids)
        msg = encode_ctl_request(CtlRequest(rid, op, args or {}, blob))
        if not sock.poll(int(self.timeout * 1000), zmq.POLLOUT):
            self.close()
            raise NotRunningError(
                f"edged is not answering on {self.run_dir / CTL_SOCK} (a stale socket from a "
                f"crashed edged?); {how_to_start(self.run_dir)}"
            )
        sock.send(msg, zmq.NOBLOCK)
        deadline_ms = int(self.timeout * 1000)
        while True:
            if not sock.poll(deadline_ms, zmq.POLLIN):
                self.close()
                raise NotRunningError(
                    f"edged did not answer within {self.timeout:g} s on {self.run_dir / CTL_SOCK}; "
                    "it may be stopping or overloaded"
                )
            buf = sock.recv()
            if verify(buf) is not MessageType.CTL_REPLY:
                continue
            reply = decode_ctl_reply(buf)
            if reply.request_id != rid:
                continue  # an answer to an earlier, timed-out request
            if reply.code != CtlCode.OK:
                raise CtlRefused(reply.error or reply.code.name)
            return reply.body

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> CtlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
