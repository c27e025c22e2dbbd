"""Socket factories with the options the control loop depends on, and the run directory.

Security by default: sockets live in a run directory only the owner and the runtime's group
can enter (0750), so file permissions are the authentication for local IPC.
"""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Callable
from pathlib import Path

import zmq

from ..errors import RuntimeStateError

AGENTS_SOCK = "agents.sock"
CTL_SOCK = "ctl.sock"
AGENTS_SEQ = "agents.seq"
"""The fast lane's socket: AF_UNIX SOCK_SEQPACKET, beside agents.sock (edge.runtime._seqlane)."""


def endpoint(run_dir: Path, name: str) -> str:
    return f"ipc://{Path(run_dir) / name}"


def prepare_run_dir(run_dir: Path, group: str | None = None) -> Path:
    """Create ``run_dir`` 0750 (owner rwx, group r-x), optionally chgrp'd to ``group`` (no
    chown call when it has that group already).

    Raises RuntimeStateError if it exists with looser permissions that we cannot tighten or
    belongs to someone else.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    st = run_dir.stat()
    if st.st_uid != os.getuid():
        raise RuntimeStateError(
            f"run dir {run_dir} belongs to uid {st.st_uid}, not us: choose another --run-dir"
        )
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise RuntimeStateError(f"run_dir_group {group!r}: no such group") from None
        if st.st_gid != gid:  # only when needed: edged.service's system-call filter refuses
            os.chown(run_dir, -1, gid)  # chown (@privileged), and systemd made it edge:edge
    if stat.S_IMODE(st.st_mode) != 0o750:
        os.chmod(run_dir, 0o750)
    return run_dir


def make_router(
    ctx: zmq.Context[zmq.Socket[bytes]],
    ep: str,
    *,
    max_msg_bytes: int,
    sndhwm: int = 1000,
    rcvhwm: int = 10000,
    before_bind: Callable[[zmq.Socket[bytes]], None] | None = None,
) -> zmq.Socket[bytes]:
    """A bound ROUTER that never blocks the loop on a peer and refuses oversized frames.

    ROUTER_MANDATORY makes a send to a gone or full peer raise (EHOSTUNREACH / EAGAIN) so it
    can be counted, instead of being dropped silently. ``before_bind`` sets up what must be
    in place before the first connection (the connection cap's ZAP domain and monitor).
    """
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg_bytes)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.SNDTIMEO, 0)
    if ep.startswith("ipc://"):
        path = Path(ep[len("ipc://") :])
        if path.exists() and not path.is_socket():
            sock.close()
            raise RuntimeStateError(f"{path} exists and is not a socket")
        path.unlink(missing_ok=True)  # a stale socket from a crashed edged (we hold the lock)
    if before_bind is not None:
        before_bind(sock)
    sock.bind(ep)
    return sock


def make_dealer(
    ctx: zmq.Context[zmq.Socket[bytes]],
    ep: str,
    *,
    identity: bytes | None = None,
    sndhwm: int = 10000,
    rcvhwm: int = 1000,
    reconnect_ivl_ms: int = 50,
    reconnect_ivl_max_ms: int = 1000,
) -> zmq.Socket[bytes]:
    """A connected DEALER with linger 0 (the seed's advice) and fast reconnects."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_ivl_max_ms)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.connect(ep)
    return sock
