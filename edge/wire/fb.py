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

**numpy.** The flatbuffers runtime and every generated module call
``flatbuffers.compat.import_numpy()`` at import time, which imports numpy whenever it is
installed (~13 MB of RSS and ~45 ms), only for the optional ``*AsNumpy`` /
``CreateNumpyVector`` helpers. edge never uses those, and a board does not have numpy, so this
module imports flatbuffers and the generated classes with numpy hidden from
``importlib.machinery.PathFinder.find_spec`` (the only lookup ``import_numpy`` makes): they see
the numpy-less install they would see on a board. A process that has already imported numpy
is left alone, so code that wants flatbuffers' numpy helpers imports numpy before
``edge.wire``.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def _numpy_hidden() -> Iterator[None]:
    """While active, ``PathFinder.find_spec("numpy")`` answers None (not installed).

    Only the top-level name ``numpy`` is hidden, and only when numpy is not imported yet.
    PathFinder is process-wide: another thread importing numpy in this window would fail, so
    this runs only at import time of this module (under the module's import lock)."""
    if "numpy" in sys.modules:
        yield
        return
    finder = importlib.machinery.PathFinder
    real: Any = finder.__dict__["find_spec"]  # the classmethod object itself

    def find_spec(cls: type, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname == "numpy":
            return None
        return real.__func__(cls, fullname, path, target)

    finder.find_spec = classmethod(find_spec)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        finder.find_spec = real  # type: ignore[method-assign]


with _numpy_hidden():
    import flatbuffers  # noqa: F401  (the runtime first, so it too sees no numpy)

    from ._generated.edgewire.v1 import *  # noqa: F403
    from ._generated.edgewire.v1 import __all__ as __all__
