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
builder functions); enums are classes of int constants. Regenerate with ``make regen``. A
module is imported on first use of its name (``fb.RuleTable``, ``from edge.wire.fb import
RuleTable``), so a process loads only the classes it uses.

**numpy.** The flatbuffers runtime and flatc's modules call ``flatbuffers.compat.import_numpy()``
at import time, which imports numpy whenever it is installed (~13 MB of RSS and ~45 ms), only
for the optional ``*AsNumpy`` / ``CreateNumpyVector`` helpers. edge never uses those, and a board
does not have numpy, so:

* this module imports the flatbuffers runtime with numpy hidden from
  ``importlib.machinery.PathFinder.find_spec`` (the only lookup ``import_numpy`` makes): it sees
  the numpy-less install it would see on a board;
* the generated modules call ``edge.wire._generated.import_numpy`` instead (``make regen``
  rewrites flatc's import), which returns numpy only if the process has imported it already.
  They are imported lazily, from any thread, at any time: the process-wide PathFinder is
  patched only here, once, at import time, never on a first use.

A process that has already imported numpy is left alone, so code that wants flatbuffers' numpy
helpers imports numpy before ``edge.wire``.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._generated.edgewire import v1 as _v1
from ._generated.edgewire.v1 import __all__ as __all__

if TYPE_CHECKING:
    from ._generated.edgewire.v1 import *  # noqa: F403


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
    # the runtime modules that call import_numpy() (flatbuffers/__init__ imports them all)
    import flatbuffers  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_v1, name)  # imports the module on its first use
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
