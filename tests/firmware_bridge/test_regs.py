"""Register packing: pure functions, inverses of each other for every order (hypothesis)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import _regs
from firmware_bridge._modbus import plan_blocks
from firmware_bridge._profile import Point

INT_TYPES = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[str, str, float | int]:
    dtype = draw(st.sampled_from(sorted(_regs.DTYPES)))
    order = draw(st.sampled_from(_regs.ORDERS[_regs.DTYPES[dtype][1]]))
    if dtype in INT_TYPES:
        bits = INT_TYPES[dtype]
        lo, hi = (
            (0, (1 << bits) - 1)
            if dtype.startswith("u")
            else (-(1 << bits - 1), (1 << bits - 1) - 1)
        )
        return dtype, order, draw(st.integers(lo, hi))
    width = 32 if dtype == "float32" else 64
    return dtype, order, draw(st.floats(allow_nan=False, width=width))


@given(typed_values())
def test_decode_inverts_encode(case: tuple[str, str, float | int]) -> None:
    dtype, order, value = case
    data = _regs.encode(dtype, order, value)
    assert len(data) == 2 * _regs.registers_of(dtype)
    assert _regs.decode(dtype, order, data) == value


@given(
    st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=20),
    st.sampled_from(["AB", "BA"]),
)
def test_strings_round_trip(text: str, order: str) -> None:
    assert _regs.decode("string", order, _regs.encode("string", order, text, 10)) == text


def test_the_orders_on_known_bytes() -> None:
    # 0x11223344 as ABCD, CDAB, BADC, DCBA
    v = 0x11223344
    assert _regs.encode("uint32", "ABCD", v) == bytes.fromhex("11223344")
    assert _regs.encode("uint32", "CDAB", v) == bytes.fromhex("33441122")
    assert _regs.encode("uint32", "BADC", v) == bytes.fromhex("22114433")
    assert _regs.encode("uint32", "DCBA", v) == bytes.fromhex("44332211")
    w = 0x1122334455667788
    assert _regs.encode("uint64", "GHEFCDAB", w) == bytes.fromhex("7788556633441122")
    assert _regs.encode("uint64", "BADCFEHG", w) == bytes.fromhex("2211443366558877")
    f = _regs.encode("float32", "CDAB", 12.5)
    assert struct.unpack(">f", f[2:] + f[:2])[0] == 12.5


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range for int16"):
        _regs.encode("int16", "AB", 40000)
    with pytest.raises(ValueError, match="not a uint32"):
        _regs.encode("uint32", "ABCD", math.nan)
    with pytest.raises(ValueError, match="do not fit 1 registers"):
        _regs.encode("string", "AB", "abc", 1)


def test_contiguous_points_merge_within_the_limits() -> None:
    def hr(name: str, addr: int, dtype: str = "uint16", poll: str = "f") -> Point:
        return Point(
            name,
            area="holding_register",
            address=addr,
            dtype=dtype,
            order="ABCD" if dtype == "float32" else "AB",
            poll=poll,
        )

    pts = [hr("a", 0), hr("b", 1, "float32"), hr("c", 3), hr("gap", 10), hr("slow", 4, poll="s")]
    blocks = plan_blocks(pts, {"f": 1, "s": 2})
    spans = sorted((b.start, b.count, tuple(p.name for p in b.points)) for b in blocks)
    assert spans == [(0, 4, ("a", "b", "c")), (4, 1, ("slow",)), (10, 1, ("gap",))]
    many = [hr(f"r{i}", i) for i in range(300)]
    assert [b.count for b in plan_blocks(many, {"f": 1})] == [125, 125, 50]
    coils = [Point(f"c{i}", area="coil", address=i, dtype="bool", poll="f") for i in range(2500)]
    assert [b.count for b in plan_blocks(coils, {"f": 1})] == [2000, 500]
