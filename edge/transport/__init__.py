"""ZeroMQ sockets and the run directory they live in."""

from ._zmq import AGENTS_SEQ as AGENTS_SEQ
from ._zmq import AGENTS_SOCK as AGENTS_SOCK
from ._zmq import CTL_SOCK as CTL_SOCK
from ._zmq import endpoint as endpoint
from ._zmq import make_dealer as make_dealer
from ._zmq import make_router as make_router
from ._zmq import prepare_run_dir as prepare_run_dir
