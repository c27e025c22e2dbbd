"""Register packing: pure functions between engineering-free raw values and Modbus register
bytes, with the byte/word order spelled out.

A register is two bytes, high byte first on the wire. A value wider than one register is the
big-endian bytes ``A B C D ...`` of its C type (A most significant) laid on the wire in the
order the profile names::

    int32/uint32/float32  ABCD  big-endian (Modbus's own order)     wire: A B | C D
                          CDAB  word swap ("little-endian words")   wire: C D | A B
                          BADC  byte swap inside each word          wire: B A | D C
                          DCBA  little-endian                       wire: D C | B A
    64-bit                ABCDEFGH, GHEFCDAB (word swap), BADCFEHG (byte swap), HGFEDCBA
    16-bit                AB, BA
    string                AB (first character in the high byte) or BA; NULs pad the end

``decode(dtype, order, data)`` and ``encode(dtype, order, value, registers)`` are inverses
for every value the type holds (property-tested).
"""

from __future__ import annotations

import math
import struct

# data type -> (struct code, registers); bool is a coil/discrete bit, string has its own length
DTYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float64": ("d", 4),
}
ORDERS: dict[int, tuple[str, ...]] = {
    1: ("AB", "BA"),
    2: ("ABCD", "CDAB", "BADC", "DCBA"),
    4: ("ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"),
}
DEFAULT_ORDER = {1: "AB", 2: "ABCD", 4: "ABCDEFGH"}
_STRUCTS = {code: struct.Struct(">" + code) for code, _ in DTYPES.values()}
_LIMITS = {
    "h": (-(1 << 15), (1 << 15) - 1),
    "H": (0, (1 << 16) - 1),
    "i": (-(1 << 31), (1 << 31) - 1),
    "I": (0, (1 << 32) - 1),
    "q": (-(1 << 63), (1 << 63) - 1),
    "Q": (0, (1 << 64) - 1),
}


def registers_of(dtype: str, length: int = 0) -> int:
    """Registers a value of ``dtype`` takes (``length`` registers for a string)."""
    if dtype == "string":
        return length
    if dtype == "bool":
        return 1
    return DTYPES[dtype][1]


def raw_range(dtype: str) -> tuple[float, float]:
    """The smallest and largest raw value ``dtype`` holds (floats: +-max finite)."""
    if dtype == "bool":
        return 0.0, 1.0
    code = DTYPES[dtype][0]
    if code == "f":
        return -3.4028234663852886e38, 3.4028234663852886e38
    if code == "d":
        return -1.7976931348623157e308, 1.7976931348623157e308
    lo, hi = _LIMITS[code]
    return float(lo), float(hi)


def _permute(data: bytes, order: str) -> bytes:
    return bytes(data[ord(c) - 65] for c in order)


def _unpermute(data: bytes, order: str) -> bytes:
    out = bytearray(len(data))
    for i, c in enumerate(order):
        out[ord(c) - 65] = data[i]
    return bytes(out)


def decode(dtype: str, order: str, data: bytes) -> float | int | str:
    """Register bytes as read from the wire -> the raw value (int, float or str).

    Raises ValueError when ``data`` is not the type's size."""
    if dtype == "string":
        if len(data) % 2:
            raise ValueError("a string is a whole number of registers")
        if order == "BA":
            data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
        return data.rstrip(b"\x00").decode("latin-1")
    code, regs = DTYPES[dtype]
    if len(data) != 2 * regs:
        raise ValueError(f"{dtype} takes {2 * regs} bytes, got {len(data)}")
    if order != DEFAULT_ORDER[regs]:  # big-endian needs no reordering
        data = _unpermute(data, order)
    value: float | int = _STRUCTS[code].unpack(data)[0]
    return value


def encode(dtype: str, order: str, value: float | int | str, registers: int = 0) -> bytes:
    """The raw value -> register bytes for the wire. An integer type takes a value rounded to
    the nearest integer. Raises ValueError for a value the type cannot hold (out of range,
    NaN for an integer, a string longer than ``registers``)."""
    if dtype == "string":
        raw = str(value).encode("latin-1")
        if len(raw) > 2 * registers:
            raise ValueError(f"{len(raw)} characters do not fit {registers} registers")
        raw = raw.ljust(2 * registers, b"\x00")
        if order == "BA":
            raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
        return raw
    code, _ = DTYPES[dtype]
    if code in "fd":
        packed = struct.pack(">" + code, float(value))
    else:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} is not a {dtype}")
        n = value if isinstance(value, int) else round(float(value))
        lo, hi = _LIMITS[code]
        if not lo <= n <= hi:
            raise ValueError(f"{n} is out of range for {dtype} ({lo}..{hi})")
        packed = struct.pack(">" + code, n)
    return _permute(packed, order)


def registers_to_bytes(registers: list[int]) -> bytes:
    return struct.pack(f">{len(registers)}H", *registers)


def bytes_to_registers(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))
