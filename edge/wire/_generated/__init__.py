# DO NOT EDIT. Generated from schemas/*.fbs by "make regen" (python -m edge.wire._gen) with flatc 25.12.19.
"""flatc output for schemas/*.fbs (see edge.wire.fb)."""

import sys
from types import ModuleType


def import_numpy() -> ModuleType | None:
    """numpy if this process has imported it, else None; never imports it.

    Stands in for flatbuffers.compat.import_numpy in the generated modules: that one imports
    numpy whenever it is installed (~13 MB of RSS), for helpers edge never calls.
    """
    return sys.modules.get("numpy")
