"""edge-sync: the board's upstream link (NATS JetStream), a process of its own beside edged.

Layering: above ``edge.runtime`` and below ``edge.sdk``/``edge.cli`` (transport -> wire -> rules
-> store -> runtime -> sync -> sdk -> cli). nats-py is imported only inside this package, and
importing ``edge`` or ``edge.runtime`` never imports it.

* :class:`SyncService` runs a :class:`Link` (one NATS connection, reconnected with bounded,
  jittered backoff) and a list of :class:`Component` tasks sharing a :class:`SyncContext`.
* The publisher sends the LMDB outbox to stream ``EDGE_AGG`` (subject ``edge.agg.<device_id>``,
  header ``Nats-Msg-Id: <device_id>-<seq>``) in order and deletes a record only after its ack.
* ``<run_dir>/sync-status.json`` carries the live state for ``edgectl sync status``.

The upstream contract (stream, subjects, headers, buckets) is in README "Upstream sync".
"""

from ._link import AGG_STREAM as AGG_STREAM
from ._link import AGG_SUBJECT_PREFIX as AGG_SUBJECT_PREFIX
from ._link import AGG_SUBJECTS as AGG_SUBJECTS
from ._link import DEVICES_BUCKET as DEVICES_BUCKET
from ._link import RULES_BUCKET as RULES_BUCKET
from ._link import Backoff as Backoff
from ._link import Link as Link
from ._link import LinkOptions as LinkOptions
from ._link import LinkState as LinkState
from ._link import Session as Session
from ._link import connect_options as connect_options
from ._link import ensure_streams as ensure_streams
from ._localserver import LocalNatsServer as LocalNatsServer
from ._localserver import NatsServerError as NatsServerError
from ._main import main as main
from ._service import STATUS_FILE as STATUS_FILE
from ._service import Component as Component
from ._service import SyncContext as SyncContext
from ._service import SyncService as SyncService
from ._service import SyncStatus as SyncStatus
from ._statusfile import read_status as read_status

__all__ = [
    "AGG_STREAM",
    "AGG_SUBJECTS",
    "AGG_SUBJECT_PREFIX",
    "DEVICES_BUCKET",
    "RULES_BUCKET",
    "STATUS_FILE",
    "Backoff",
    "Component",
    "Link",
    "LinkOptions",
    "LinkState",
    "LocalNatsServer",
    "NatsServerError",
    "Session",
    "SyncContext",
    "SyncService",
    "SyncStatus",
    "connect_options",
    "ensure_streams",
    "main",
    "read_status",
]
