"""Documents <-> FlatBuffers, driven by the schema layout (``_generated/layout.py``).

For messages off the control path that carry many fields and nested vectors (the upstream
Aggregate), a per-field hand-written codec would be long and drift from the schema; these two
functions read the same layout the verifier uses, so a field added to the schema is encoded and
decoded without code changes.

A document is a dict keyed by the schema's field names: scalars as int/float/bool, strings as
str, sub-tables as dicts, vectors as lists (structs as dicts of their fields). Missing keys take
the schema default; unknown keys raise, so a typo is not silently dropped.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
from flatbuffers import number_types as nt
from flatbuffers.table import Table

from ..errors import EdgeError, VerifyError
from ._codec import Buffer
from ._generated.layout import ROOTS, STRUCTS, TABLES, FieldLayout
from ._messages import MessageType
from ._verify import verify

_FLAGS: dict[str, Any] = {
    "bool": nt.BoolFlags,
    "byte": nt.Int8Flags,
    "ubyte": nt.Uint8Flags,
    "short": nt.Int16Flags,
    "ushort": nt.Uint16Flags,
    "int": nt.Int32Flags,
    "uint": nt.Uint32Flags,
    "long": nt.Int64Flags,
    "ulong": nt.Uint64Flags,
    "float": nt.Float32Flags,
    "double": nt.Float64Flags,
}
_ROOT_OF = {name: ident for ident, name in ROOTS.items()}


class DocError(EdgeError):
    """A document does not fit the schema (unknown field, wrong type, missing required)."""


def encode_doc(root: str, doc: dict[str, Any]) -> bytes:
    """Encode ``doc`` as a finished buffer of root table ``root`` with its file identifier.
    Raises DocError when ``doc`` does not fit the schema."""
    ident = _ROOT_OF.get(root)
    if ident is None:
        raise DocError(f"{root} is not a root type of schemas/*.fbs")
    b = flatbuffers.Builder(1024)
    b.Finish(_table(b, root, doc, root), ident)
    return bytes(b.Output())


def _table(b: flatbuffers.Builder, name: str, doc: dict[str, Any], path: str) -> int:
    fields = TABLES[name]
    unknown = set(doc) - {f.name for f in fields}
    if unknown:
        raise DocError(f"{path}: no field(s) {', '.join(sorted(unknown))} in table {name}")
    # offsets (strings, vectors, tables) must be built before the table is started
    offsets: dict[str, int] = {}
    for f in fields:
        v = doc.get(f.name)
        if v is None:
            if f.required:
                raise DocError(f"{path}.{f.name} is required")
            continue
        where = f"{path}.{f.name}"
        if f.kind == "string":
            offsets[f.name] = b.CreateString(_str(v, where))
        elif f.kind == "table":
            offsets[f.name] = _table(b, f.type, _dict(v, where), where)
        elif f.kind == "vector":
            offsets[f.name] = _vector(b, f, v, where)
    b.StartObject(len(fields))
    for f in fields:
        v = doc.get(f.name)
        if v is None:
            continue
        if f.kind == "scalar":
            flags = _FLAGS[f.type]
            try:
                b.PrependSlot(flags, f.slot, flags.py_type(v), 0)
            except (TypeError, ValueError) as exc:
                raise DocError(f"{path}.{f.name}: {v!r} is not a {f.type}") from exc
        elif f.kind == "struct":
            raise DocError(f"{path}.{f.name}: inline struct fields are not supported")
        else:
            b.PrependUOffsetTRelativeSlot(f.slot, offsets[f.name], 0)
    return int(b.EndObject())


def _vector(b: flatbuffers.Builder, f: FieldLayout, items: Any, where: str) -> int:
    if not isinstance(items, (list, tuple)):
        raise DocError(f"{where}: expected a list, got {type(items).__name__}")
    n = len(items)
    if f.elem_kind in ("table", "string"):
        offs = [
            _table(b, f.type, _dict(x, f"{where}[{i}]"), f"{where}[{i}]")
            if f.elem_kind == "table"
            else b.CreateString(_str(x, f"{where}[{i}]"))
            for i, x in enumerate(items)
        ]
        b.StartVector(4, n, 4)
        for off in reversed(offs):
            b.PrependUOffsetTRelative(off)
        return int(b.EndVector())
    if f.elem_kind == "scalar":
        flags = _FLAGS[f.type]
        b.StartVector(f.elem_size, n, f.elem_align)
        for x in reversed(items):
            b.Prepend(flags, flags.py_type(x))
        return int(b.EndVector())
    st = STRUCTS[f.type]
    b.StartVector(st.size, n, st.align)
    for i, x in enumerate(reversed(items)):
        d = _dict(x, f"{where}[{n - 1 - i}]")
        b.Prep(st.align, st.size)
        # a struct is written back to front: pad, then fields from the highest offset down
        end = st.size
        for fname, off, ftype in sorted(st.fields, key=lambda t: -t[1]):
            flags = _FLAGS[ftype]
            b.Pad(end - off - flags.bytewidth)
            b.Prepend(flags, flags.py_type(d.get(fname, 0)))
            end = off
        b.Pad(end)
    return int(b.EndVector())


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise DocError(f"{where}: expected a string, got {type(v).__name__}")
    return v


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise DocError(f"{where}: expected an object, got {type(v).__name__}")
    return v


def decode_doc(buf: Buffer, *, max_bytes: int | None = None) -> tuple[MessageType, dict[str, Any]]:
    """Verify ``buf`` and return its type and its document (every field, defaults included).
    Raises VerifyError / TooLargeError for a malformed or oversized buffer."""
    mt = verify(buf, max_bytes=max_bytes)
    data = bytes(buf)
    pos = int.from_bytes(data[:4], "little")
    return mt, _read(Table(data, pos), ROOTS[mt.value])


def _read(tab: Table, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in TABLES[name]:
        o = tab.Offset(4 + 2 * f.slot)
        if f.kind == "scalar":
            flags = _FLAGS[f.type]
            out[f.name] = tab.Get(flags, tab.Pos + o) if o else flags.py_type(0)
        elif not o:
            out[f.name] = [] if f.kind == "vector" else None
        elif f.kind == "string":
            out[f.name] = tab.String(tab.Pos + o).decode("utf-8")
        elif f.kind == "table":
            out[f.name] = _read(Table(tab.Bytes, tab.Indirect(tab.Pos + o)), f.type)
        else:
            out[f.name] = _read_vector(tab, o, f)
    return out


def _read_vector(tab: Table, o: int, f: FieldLayout) -> list[Any]:
    start, n = tab.Vector(o), tab.VectorLen(o)
    if f.elem_kind == "table":
        return [_read(Table(tab.Bytes, tab.Indirect(start + 4 * i)), f.type) for i in range(n)]
    if f.elem_kind == "string":
        return [tab.String(start + 4 * i).decode("utf-8") for i in range(n)]
    if f.elem_kind == "scalar":
        flags = _FLAGS[f.type]
        return [tab.Get(flags, start + f.elem_size * i) for i in range(n)]
    st = STRUCTS[f.type]
    return [
        {
            fname: tab.Get(_FLAGS[ftype], start + st.size * i + off)
            for fname, off, ftype in st.fields
        }
        for i in range(n)
    ]


def encode_aggregate(doc: dict[str, Any]) -> bytes:
    """An upstream Aggregate (schemas/aggregate.fbs) from its document."""
    return encode_doc("Aggregate", doc)


def decode_aggregate(buf: Buffer) -> dict[str, Any]:
    """The document of a verified Aggregate buffer; raises VerifyError for anything else."""
    mt, doc = decode_doc(buf)
    if mt is not MessageType.AGGREGATE:
        raise VerifyError(f"expected an Aggregate, got {mt.name}")
    return doc
