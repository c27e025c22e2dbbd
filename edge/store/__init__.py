"""The LMDB state of edged: rule tables, the agents registry, the audit log, stats snapshots.

Layering: this package sits above ``edge.rules`` and below ``edge.runtime`` (transport -> wire ->
rules -> store -> runtime -> sync -> cli) and imports only ``edge.errors`` and ``edge.clock``
from the project.

* :class:`Store` opens the one LMDB environment (shared with edge-sync and edgectl, each in its
  own process), checks its schema, reads everything, and writes rule tables synchronously
  (cold path, synced).
* :class:`Outbox` holds the records waiting to go upstream (edged appends inside its group
  commits; edge-sync deletes them once acknowledged), bounded by bytes and age.
* :class:`StoreWriter` takes the control loop's writes (audit records, agent records, stats)
  through a queue to a background thread that commits them in synced groups, so the loop never
  waits for an fsync.

Durability: every commit is synced (fsync) before it counts; an audit record is durable once
``StoreWriter.flush()`` returns True for it, a rule table once ``put_rule_table()`` returns.
"""

from ._outbox import Outbox as Outbox
from ._outbox import OutboxPolicy as OutboxPolicy
from ._store import SCHEMA_VERSION as SCHEMA_VERSION
from ._store import Store as Store
from ._writer import StoreWriter as StoreWriter

__all__ = ["SCHEMA_VERSION", "Outbox", "OutboxPolicy", "Store", "StoreWriter"]
