"""edge.wire.fb imports flatbuffers and the generated classes without numpy (a board has none),
unless the process imported numpy first; the generated classes load on first use, and a first
use never imports numpy either (including the imports flatc puts inside accessors)."""

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


_GENERATED = "edge.wire._generated.edgewire.v1."

_FIRST_USE = """
import json, sys
from edge.wire import encode_metric_batch
loaded = lambda: sorted(m for m in sys.modules if m.startswith("edge.wire._generated.edgewire.v1."))
before = loaded()
from edge.wire import fb
batch = fb.MetricBatch.MetricBatch.GetRootAs(encode_metric_batch(1, 2, 3, [(7, 1.5, 9)]))
sample = batch.Samples(0)  # flatc imports the Sample module inside this accessor
print(json.dumps({
    "before": before,
    "after": loaded(),
    "sample": [sample.MetricId(), sample.Value()],
    "np": {m: getattr(sys.modules[m], "np", None) is not None for m in loaded()},
    "numpy_imported": "numpy" in sys.modules,
}))
"""


def test_generated_classes_load_on_first_use_without_numpy() -> None:
    got = _probe(_FIRST_USE)
    assert got["before"] == []  # importing edge.wire loads none of them
    assert got["after"] == [_GENERATED + "MetricBatch", _GENERATED + "Sample"]
    assert got["sample"] == [7, 1.5]
    assert got["np"] == {_GENERATED + "MetricBatch": False, _GENERATED + "Sample": False}
    assert got["numpy_imported"] is False


def test_a_first_use_after_numpy_was_imported_gets_the_helpers() -> None:
    if importlib.util.find_spec("numpy") is None:
        pytest.skip("numpy is not installed here")
    got = _probe("import edge.wire\nimport numpy\n" + _FIRST_USE)
    assert got["np"] == {_GENERATED + "MetricBatch": True, _GENERATED + "Sample": True}


def test_every_name_is_its_generated_module() -> None:
    from edge.wire import fb

    for name in fb.__all__:
        module = getattr(fb, name)
        assert module.__name__ == _GENERATED + name
        assert callable(getattr(module, name))  # flatc's class of the same name
    assert set(fb.__all__) <= set(dir(fb))


def test_an_unknown_name_is_an_attribute_error() -> None:
    from edge.wire import fb
    from edge.wire._generated.edgewire import v1

    with pytest.raises(AttributeError, match="no attribute 'RuleTabel'"):
        fb.RuleTabel  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'RuleTabel'"):
        v1.RuleTabel  # noqa: B018
