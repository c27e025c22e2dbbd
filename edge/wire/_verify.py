"""The schema-aware FlatBuffers verifier (the Python runtime has none).

verify() walks a buffer the way flatc's C++ ``Verifier`` does, driven by the layout tables that
``python -m edge.wire._gen`` derives from schemas/*.fbs (edge/wire/_generated/layout.py), so it
checks exactly what the schemas declare:

* size: at least the 8-byte header (root uoffset + file identifier), at most ``max_bytes``
  (TooLargeError); a known file identifier
* every table: 4-byte aligned and inside the buffer; its vtable (table position minus the
  soffset) inside the buffer, 2-byte aligned, its size even and >= 4; the table size in the
  vtable >= 4 and inside the buffer
* every field the schema knows (longer vtables, i.e. fields from a newer schema, are ignored):
  when present, inside its table (at or after byte 4, ending within the table size) and aligned
  for its type; required fields present; enum fields hold a declared value
* uoffsets: non-zero, < 2**31, target inside the buffer
* strings: 4-byte aligned length inside the buffer, bytes and NUL terminator inside the buffer,
  the NUL present, valid UTF-8
* vectors: 4-byte aligned length; element data aligned for the element type (8 for Sample);
  length x element size inside the buffer; elements that are strings or tables verified in turn
* nesting at most MAX_DEPTH tables deep and at most MAX_TABLES distinct tables per buffer;
  a table or string referenced more than once is verified once (so a buffer cannot make the
  verifier do more than linear work by sharing objects)

Enums are strict: a value the schema does not declare is refused. The protocol evolves through
``protocol_version`` in Hello/Welcome, and a peer sends only the enum values of the version both
sides agreed on, so an unknown value is a malformed message; refusing it here means decoders
never have to invent a member for it.

Every failure raises VerifyError naming the field path and byte offset, e.g.
``Hello.metrics[2].name at byte 96: string is not valid UTF-8 (invalid start byte)``.
The per-table plans are compiled once, at import.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from ..errors import TooLargeError, VerifyError
from ._codec import Buffer
from ._generated import layout
from ._messages import MessageType

MAX_DEPTH = 64  # tables nested inside one another
MAX_TABLES = 100_000  # distinct tables in one buffer

_U16 = struct.Struct("<H").unpack_from
_HH = struct.Struct("<HH").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_SCALAR_FORMATS = {
    "bool": "B", "byte": "b", "ubyte": "B", "short": "h", "ushort": "H", "int": "i", "uint": "I",
    "long": "q", "ulong": "Q", "float": "f", "double": "d",
}  # fmt: skip

_SCALAR, _STRING, _STRUCT, _TABLE, _VECTOR = range(5)
_KINDS = {"scalar": _SCALAR, "string": _STRING, "struct": _STRUCT, "table": _TABLE,
          "vector": _VECTOR}  # fmt: skip


class _Enum(NamedTuple):
    name: str
    read: Callable[[Buffer, int], tuple[int]]  # unpack_from for the underlying type
    values: frozenset[int]


class _Field(NamedTuple):
    name: str
    dotted: str  # "." + name, for error paths
    slot: int
    kind: int
    size: int
    align_mask: int
    required: bool
    enum: _Enum | None  # scalars and vectors of scalars
    table: _Plan  # the table type, or a vector's element table type (else _NO_PLAN)
    elem_kind: int
    elem_size: int
    elem_align_mask: int


class _Plan:
    """How to verify one table type: its known fields, and how many vtable entries to read."""

    __slots__ = ("fields", "key", "name", "slots")

    def __init__(self, name: str, key: int) -> None:
        self.name = name
        self.key = key
        self.fields: tuple[_Field, ...] = ()
        self.slots = 0


_NO_PLAN = _Plan("", -1)


def _compile() -> dict[bytes, tuple[MessageType, _Plan]]:
    plans = {name: _Plan(name, i) for i, name in enumerate(sorted(layout.TABLES))}
    enums = {
        name: _Enum(
            name,
            struct.Struct("<" + _SCALAR_FORMATS[e.type]).unpack_from,
            frozenset(v for _, v in e.values),
        )
        for name, e in layout.ENUMS.items()
    }
    for name, fields in layout.TABLES.items():
        plan = plans[name]
        plan.fields = tuple(
            _Field(
                name=f.name,
                dotted="." + f.name,
                slot=f.slot,
                kind=_KINDS[f.kind],
                size=f.size,
                align_mask=f.align - 1,
                required=f.required,
                enum=enums[f.enum] if f.enum else None,
                table=plans.get(f.type, _NO_PLAN),
                elem_kind=_KINDS.get(f.elem_kind, -1),
                elem_size=f.elem_size,
                elem_align_mask=max(f.elem_align, 1) - 1,
            )
            for f in fields
        )
        plan.slots = max((f.slot + 1 for f in fields), default=0)
    return {ident: (MessageType(ident), plans[name]) for ident, name in layout.ROOTS.items()}


_ROOTS = _compile()
_VTABLE = [
    struct.Struct(f"<{k}H").unpack_from
    for k in range(2 + max(f.slot for fields in layout.TABLES.values() for f in fields))
]


def _fail(where: str, at: int, what: str) -> VerifyError:
    return VerifyError(f"{where} at byte {at}: {what}")


class _Walk:
    """Per-call state: the remaining table budget and the objects already verified."""

    __slots__ = ("seen", "tables")

    def __init__(self) -> None:
        self.tables = MAX_TABLES
        self.seen: set[int | tuple[int, int]] = set()


def verify(buf: Buffer, *, max_bytes: int | None = None) -> MessageType:
    """Check that `buf` is a well-formed message of a known type, and return that type.

    max_bytes: refuse larger buffers with TooLargeError; None means no limit.
    Raises VerifyError for anything malformed (what, where, and the field path).
    """
    if type(buf) is memoryview and buf.format != "B":
        buf = buf.cast("B")
    n = len(buf)
    if max_bytes is not None and n > max_bytes:
        raise TooLargeError(f"{n}-byte message is over the {max_bytes}-byte limit")
    if n < 8:
        raise VerifyError(f"{n}-byte message is shorter than the 8-byte header")
    ident = bytes(buf[4:8])
    found = _ROOTS.get(ident)
    if found is None:
        raise VerifyError(f"unknown file identifier {ident!r} at byte 4")
    mt, plan = found
    root = _U32(buf, 0)[0]
    if root & 3 or root < 8 or root + 4 > n:
        raise _fail(plan.name, 0, f"root uoffset {root} is not a 4-aligned table position "
                                  f"after the header in a {n}-byte buffer")
    _table(buf, n, root, plan, plan.name, 1, _Walk())
    return mt


def _table(buf: Buffer, n: int, pos: int, plan: _Plan, path: str, depth: int, walk: _Walk) -> None:
    if depth > MAX_DEPTH:
        raise _fail(path, pos, f"tables nested more than {MAX_DEPTH} deep")
    if pos & 3 or pos + 4 > n:
        raise _fail(path, pos, f"table is not 4-aligned inside the {n}-byte buffer")
    vt = pos - _I32(buf, pos)[0]
    if vt < 0 or vt & 1 or vt + 4 > n:
        raise _fail(path, pos, f"vtable at {vt} is outside the {n}-byte buffer or misaligned")
    vsize, tsize = _HH(buf, vt)
    if vsize < 4 or vsize & 1 or vt + vsize > n:
        raise _fail(path, vt, f"vtable size {vsize} is odd, < 4 or runs past the buffer end")
    if tsize < 4 or pos + tsize > n:
        raise _fail(path, pos, f"table size {tsize} is < 4 or runs past the buffer end")
    have = (vsize - 4) >> 1
    if have > plan.slots:
        have = plan.slots
    entries = _VTABLE[have](buf, vt + 4)
    for f in plan.fields:
        vo = entries[f.slot] if f.slot < have else 0
        if not vo:
            if f.required:
                raise _fail(path + f.dotted, pos, "required field is missing")
            continue
        at = pos + vo
        if vo < 4 or vo + f.size > tsize:
            raise _fail(path + f.dotted, at, f"field at table offset {vo} is outside the "
                                                f"{tsize}-byte table")
        if at & f.align_mask:
            raise _fail(path + f.dotted, at, f"field is not {f.align_mask + 1}-aligned")
        kind = f.kind
        if kind == _SCALAR:
            e = f.enum
            if e is not None and e.read(buf, at)[0] not in e.values:
                raise _fail(path + f.dotted, at, f"{e.read(buf, at)[0]} is not a {e.name} value")
            continue
        if kind == _STRUCT:
            continue
        target = at + _offset(buf, at, path, f.dotted)
        if kind == _STRING:
            _string(buf, n, target, path, f.dotted, walk)
        elif kind == _TABLE:
            _table_once(buf, n, target, f.table, path + f.dotted, depth + 1, walk)
        else:
            _vector(buf, n, target, f, path, depth, walk)


def _offset(buf: Buffer, at: int, path: str, suffix: str) -> int:
    o: int = _U32(buf, at)[0]
    if o == 0 or o >= 0x80000000:
        raise _fail(path + suffix, at, f"uoffset {o} is zero or negative")
    return o


def _table_once(
    buf: Buffer, n: int, pos: int, plan: _Plan, path: str, depth: int, walk: _Walk
) -> None:
    key = (pos, plan.key)
    if key in walk.seen:
        return
    walk.seen.add(key)
    walk.tables -= 1
    if walk.tables < 0:
        raise _fail(path, pos, f"more than {MAX_TABLES} tables")
    _table(buf, n, pos, plan, path, depth, walk)


def _string(buf: Buffer, n: int, s: int, path: str, suffix: str, walk: _Walk) -> None:
    if s in walk.seen:
        return
    if s & 3 or s + 4 > n:
        raise _fail(path + suffix, s, f"string is not 4-aligned inside the {n}-byte buffer")
    end = s + 4 + _U32(buf, s)[0]
    if end >= n:
        raise _fail(path + suffix, s, f"string of {end - s - 4} bytes runs past the end of "
                                         f"the {n}-byte buffer")
    if buf[end] != 0:
        raise _fail(path + suffix, end, "string is not NUL-terminated")
    try:
        str(buf[s + 4 : end], "utf-8")
    except UnicodeDecodeError as e:
        raise _fail(path + suffix, s + 4 + e.start,
                    f"string is not valid UTF-8 ({e.reason})") from None
    walk.seen.add(s)


def _vector(buf: Buffer, n: int, v: int, f: _Field, path: str, depth: int, walk: _Walk) -> None:
    where = path + f.dotted
    if v & 3 or v + 4 > n:
        raise _fail(where, v, f"vector is not 4-aligned inside the {n}-byte buffer")
    count = _U32(buf, v)[0]
    data = v + 4
    if data & f.elem_align_mask:
        raise _fail(where, data, f"vector elements are not {f.elem_align_mask + 1}-aligned")
    if data + count * f.elem_size > n:
        raise _fail(where, v, f"vector of {count} x {f.elem_size} bytes runs past the end of "
                              f"the {n}-byte buffer")
    kind = f.elem_kind
    if kind == _SCALAR:
        e = f.enum
        if e is not None:
            for i in range(count):
                at = data + i * f.elem_size
                if e.read(buf, at)[0] not in e.values:
                    raise _fail(f"{where}[{i}]", at, f"not a {e.name} value")
    elif kind == _STRING:
        for i in range(count):
            at = data + 4 * i
            _string(buf, n, at + _offset(buf, at, where, f"[{i}]"), where, f"[{i}]", walk)
    elif kind == _TABLE:
        for i in range(count):
            at = data + 4 * i
            o = _offset(buf, at, where, f"[{i}]")
            _table_once(buf, n, at + o, f.table, f"{where}[{i}]", depth + 1, walk)
