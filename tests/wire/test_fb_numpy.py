"""edge.wire.fb imports flatbuffers and the generated classes without numpy (a board has none),
unless the process imported numpy first."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def _probe(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON document."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return dict(json.loads(out))


_REPORT = """
import importlib.machinery, json, sys
import flatbuffers.builder, flatbuffers.encode, flatbuffers.number_types
from edge.wire._generated.edgewire.v1 import Ack
print(json.dumps({
    "numpy_imported": "numpy" in sys.modules,
    "np": [m.np is not None for m in
           (flatbuffers.builder, flatbuffers.encode, flatbuffers.number_types, Ack)],
    "findable_after": importlib.machinery.PathFinder.find_spec("numpy") is not None,
}))
"""


def test_edge_wire_does_not_import_numpy() -> None:
    got = _probe("import edge.wire\n" + _REPORT)
    assert got["numpy_imported"] is False
    assert got["np"] == [False, False, False, False]
    # the hiding ends with the import: numpy stays importable for everyone else
    installed = importlib.util.find_spec("numpy") is not None
    assert got["findable_after"] is installed


def test_the_generated_code_works_without_numpy() -> None:
    got = _probe(
        "import json, sys\n"
        "from edge.wire import fb, verify\n"
        "import flatbuffers\n"
        "b = flatbuffers.Builder(64)\n"
        "fb.Heartbeat.Start(b)\n"
        "fb.Heartbeat.AddSession(b, 7)\n"
        "b.Finish(fb.Heartbeat.End(b), b'EHBT')\n"
        "buf = bytes(b.Output())\n"
        "verify(buf)\n"
        "hb = fb.Heartbeat.Heartbeat.GetRootAs(buf)\n"
        "print(json.dumps({'session': hb.Session(), 'numpy': 'numpy' in sys.modules}))\n"
    )
    assert got == {"session": 7, "numpy": False}


def test_a_process_that_imported_numpy_keeps_flatbuffers_numpy_helpers() -> None:
    if importlib.util.find_spec("numpy") is None:
        pytest.skip("numpy is not installed here")
    got = _probe("import numpy\nimport edge.wire\n" + _REPORT)
    assert got["numpy_imported"] is True
    assert got["np"] == [True, True, True, True]
