"""The flatc-generated classes for schemas/*.fbs (namespace ``edgewire.v1``), one module per type.

For code that builds or reads buffers with ``flatbuffers.Builder`` rather than the lean codec,
for example edge.rules building a RuleTable::

    import flatbuffers
    from edge.wire import fb

    b = flatbuffers.Builder(1024)
    fb.RuleTable.Start(b)
    fb.RuleTable.AddSchemaVersion(b, 1)
    b.Finish(fb.RuleTable.End(b), edge.wire.MessageType.RULE_TABLE.value)
    table = fb.RuleTable.RuleTable.GetRootAs(edge_wire_buffer)   # after edge.wire.verify()

Each module is flatc's Python output (a class of the same name plus ``Start``/``AddX``/``End``
builder functions); enums are classes of int constants. Regenerate with ``make regen``.
"""

from ._generated.edgewire.v1 import *  # noqa: F403
from ._generated.edgewire.v1 import __all__ as __all__
