"""ctl.sock: the operator's channel. Runs on its own thread so that nothing edgectl asks
for (JSON, percentile walks, rule compilation, synced LMDB writes) runs on the control loop.
Only the final table swap is handed to the loop, via ``ControlLoop.call``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ..errors import EdgeError, WireError
from ..transport import CTL_SOCK, endpoint, make_router
from ..wire import (
    CtlCode,
    CtlOp,
    CtlReply,
    MessageType,
    decode_ctl_request,
    encode_ctl_reply,
    verify,
)

log = logging.getLogger("edge.ctl")

MAX_CTL_BYTES = 64 << 20
Handler = Callable[[dict[str, Any], bytes], dict[str, Any]]


class BadRequestError(EdgeError):
    """A ctl request edged cannot act on (answered with CtlCode.BAD_REQUEST)."""


class RefusedError(EdgeError):
    """A ctl request edged will not act on (answered with CtlCode.REFUSED)."""


class CtlServer:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        run_dir: Any,
        handlers: dict[CtlOp, Handler],
        *,
        tick: Callable[[], None] | None = None,
        tick_ms: int = 200,
    ):
        self.endpoint = endpoint(run_dir, CTL_SOCK)
        self.sock = make_router(ctx, self.endpoint, max_msg_bytes=MAX_CTL_BYTES, sndhwm=100)
        self._handlers = handlers
        self._tick = tick
        self._tick_ms = tick_ms
        self._stop = False
        self.requests = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="edge-ctl")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close ctl.sock; idempotent, and fine before :meth:`start` (a
        start-up that failed after binding)."""
        self._stop = True
        if self._thread.ident is not None:
            self._thread.join(10)
        elif not self.sock.closed:
            self._release()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self._stop:
                if poller.poll(self._tick_ms):
                    self._serve_one()
                if self._tick is not None:
                    try:
                        self._tick()
                    except Exception:
                        log.exception("periodic ctl task failed")
        finally:
            self._release()

    def _release(self) -> None:
        self.sock.close(linger=0)
        try:
            os.unlink(self.endpoint[len("ipc://") :])
        except FileNotFoundError:
            pass

    def _serve_one(self) -> None:
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        self.requests += 1
        rid, buf = frames[0], frames[-1]
        request_id = 0
        try:
            if len(frames) != 2:
                raise BadRequestError("send one CtlRequest per frame")
            if verify(buf, max_bytes=MAX_CTL_BYTES) is not MessageType.CTL_REQUEST:
                raise BadRequestError("expected a CtlRequest on ctl.sock")
            req = decode_ctl_request(buf)
            request_id = req.request_id
            handler = self._handlers.get(req.op)
            if handler is None:
                raise BadRequestError(f"unknown op {int(req.op)}")
            reply = CtlReply(request_id, CtlCode.OK, handler(req.args or {}, req.blob))
        except (BadRequestError, WireError) as exc:
            self.errors += 1
            reply = CtlReply(request_id, CtlCode.BAD_REQUEST, {}, str(exc))
        except (RefusedError, EdgeError) as exc:
            self.errors += 1
            reply = CtlReply(request_id, CtlCode.REFUSED, {}, str(exc))
        except Exception as exc:
            self.errors += 1
            log.exception("ctl request failed")
            reply = CtlReply(request_id, CtlCode.ERROR, {}, f"internal error: {exc!r}")
        try:
            out = encode_ctl_reply(reply)
        except (TypeError, ValueError) as exc:  # a body JSON cannot hold: a bug, not a crash
            self.errors += 1
            log.exception("ctl reply could not be encoded")
            out = encode_ctl_reply(
                CtlReply(request_id, CtlCode.ERROR, {}, f"internal error: {exc}")
            )
        try:
            self.sock.send_multipart((rid, out), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # edgectl went away; nothing to answer
