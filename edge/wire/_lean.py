"""Fixed-layout checks for the hot messages: verify() and decode in one pass, for the exact
layouts the lean encoders write; anything else returns None and takes the full path.

``verify()`` walks a buffer generically (a plan per table, a loop per field): ~8-15 µs in
CPython for one MetricBatch, Ack or Instruction. When a buffer has the layout our own encoders
write (edge.wire._codec: the root uoffset, the vtable bytes and the soffset are then fixed),
most of what verify() checks is decided by that layout, and what is left is a handful of
comparisons: field alignment follows from the root position, every field lies inside the table
the vtable sizes, and only the enum values, the strings and the vectors remain to check.

The rule for each function here: **for a buffer in its layout it accepts exactly what verify()
accepts, and returns what the decoder returns; for any other buffer it returns None** (the
caller then runs verify() and the decoder, as before). tests/wire/test_lean.py proves both with
hypothesis over valid messages and mutants of them. What "its layout" means, per message:

* MetricBatch: bytes 0..32 are the lean encoder's (root 24, "EMBT", vtable 12/36/8/16/24/4,
  soffset 12, samples uoffset 32), whatever the padding at 8..12 holds.
* Heartbeat: root 20, "EHBT", vtable 10/28/4/12/20, soffset 10.
* Ack: root 28, "EACK", vtable 16/(44 or 48)/12/20/7/28/36/8, soffset 16.
* Instruction: root 36, "EINS", the 26-byte vtable of the lean encoder (table size 60 or 64),
  soffset 26; at most ``MAX_LEAN_PARAMS`` params, each a Param table whose vtable is the lean
  encoder's 12-byte one (table size 24 or 28).

Padding bytes are not looked at: verify() does not look at them either.
"""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

from ._codec import _ACK_STATUS, _ACTION, _PARAM_KIND
from ._messages import Ack, Instruction, MessageType, Param, ParamKind

MAX_LEAN_PARAMS = 16
"""More params than this: the full path (a bound on the work one buffer can make this do)."""

_U32 = struct.Struct("<I").unpack_from
_HEAD = struct.Struct("<I4s").unpack_from  # root uoffset, identifier

_MB = MessageType.METRIC_BATCH.value
_HB = MessageType.HEARTBEAT.value
_ACK = MessageType.ACK.value
_INS = MessageType.INSTRUCTION.value

# The structural bytes of each layout, from the byte after the identifier's padding to the end
# of the soffset (the padding itself is skipped). MetricBatch: vtable at 12, table at 24.
_MB_STRUCT = struct.pack("<6HiI", 12, 36, 8, 16, 24, 4, 12, 32)  # bytes 12..32, with samples@
_HB_STRUCT = struct.pack("<5Hi", 10, 28, 4, 12, 20, 10)  # bytes 10..24
_ACK_STRUCT = tuple(struct.pack("<8Hi", 16, 44 + gap, 12, 20, 7, 28, 36, 8, 16) for gap in (0, 4))
_INS_STRUCT = tuple(
    struct.pack("<13Hi", 26, 60 + gap, 28, 8, 6, 12, 16, 7, 36, 20, 44, 52, 24, 26)
    for gap in (0, 4)
)  # bytes 10..40
_PARAM_VT = tuple(struct.pack("<6H", 12, 24 + gap, 8, 7, 16, 12) for gap in (0, 4))

_ACK_BODY = struct.Struct("<BIQQqq").unpack_from  # at 35: status, detail, 4 scalars
_INS_BODY = struct.Struct("<BBIIIIIQqdq").unpack_from  # at 42: action .. t_sample_ns
_PARAM_BODY = struct.Struct("<BIId").unpack_from  # at +7: kind, key, text, number
_I32 = struct.Struct("<i").unpack_from


def _target(buf: bytes, at: int) -> int:
    """Where the uoffset at `at` points; -1 when verify() refuses the uoffset (0 or >= 2**31)."""
    o = _U32(buf, at)[0]
    return -1 if o == 0 or o >= 0x80000000 else at + o


def _string(buf: bytes, n: int, at: int) -> str | None:
    """The string whose uoffset is at `at`, checked as verify() checks it; None if it fails."""
    s = _target(buf, at)
    if s < 0 or s & 3 or s + 4 > n:
        return None
    end = s + 4 + _U32(buf, s)[0]
    if end >= n or buf[end] != 0:
        return None
    try:
        return str(buf[s + 4 : end], "utf-8")
    except UnicodeDecodeError:
        return None


def _maker(cls: type) -> Any:
    """A constructor for a frozen, slotted dataclass that skips its generated ``__init__``
    (an ``object.__setattr__`` call per field: ~3 µs for an Instruction). Straight-line code,
    generated once per class as dataclasses generates ``__init__`` (a loop costs ~0.8 µs more)."""
    names = [f.name for f in fields(cls)]
    env = {"new": object.__new__, "cls": cls}
    env.update({f"set_{f}": getattr(cls, f).__set__ for f in names})
    body = "".join(f"    set_{f}(o, {f})\n" for f in names)
    exec(f"def make({', '.join(names)}):\n    o = new(cls)\n{body}    return o\n", env)
    return env["make"]


_new_instruction = _maker(Instruction)
_new_param = _maker(Param)
_new_ack = _maker(Ack)


def lean_type(buf: bytes, max_bytes: int) -> MessageType | None:
    """The type of a MetricBatch, Heartbeat or Ack in the lean layout that verify() would
    accept (and not over ``max_bytes``); None for anything else: then verify() decides."""
    n = len(buf)
    if n > max_bytes or n < 48 or type(buf) is not bytes:
        return None
    root, ident = _HEAD(buf, 0)
    if ident == _MB:
        # the table (24..60) and the vector's count (60..64) inside the buffer, then the
        # samples; positions 24 (table), 32 (8-byte fields) and 64 (samples) are aligned
        if root != 24 or n < 64 or buf[12:32] != _MB_STRUCT:
            return None
        if 64 + 24 * _U32(buf, 60)[0] > n:
            return None
        return MessageType.METRIC_BATCH
    if ident == _ACK:
        # the table at 28 (8-byte fields at 40..72), 44 or 48 bytes long
        if root != 28 or n < 72 or buf[12:32] not in _ACK_STRUCT or n < 28 + buf[14]:
            return None
        if buf[35] not in _ACK_STATUS or _string(buf, n, 36) is None:
            return None
        return MessageType.ACK
    if ident == _HB:
        if root != 20 or buf[10:24] != _HB_STRUCT:
            return None
        return MessageType.HEARTBEAT  # the table (20..48) is inside: n >= 48
    return None


def lean_ack(buf: bytes) -> Ack | None:
    """decode_ack() for a buffer lean_type() accepted as an Ack (None otherwise)."""
    if lean_type(buf, len(buf)) is not MessageType.ACK:
        return None
    status, _, session, iid, t_delivered, t_done = _ACK_BODY(buf, 35)
    return _new_ack(session, iid, _ACK_STATUS[status], t_delivered, t_done,
                    _string(buf, len(buf), 36))  # fmt: skip


INS_MEMO_MAX = 256
"""Instruction shapes remembered by ``lean_instruction`` (then forgotten all at once)."""

_ins_memo: dict[bytes, Instruction] = {}
_INS_VAR = struct.Struct("<Qqdq").unpack_from  # at 64: iid, deadline, value, t_sample
_INS_VAR_AT, _INS_VAR_END = 64, 96


def lean_instruction(buf: bytes) -> Instruction | None:
    """verify() + decode_instruction() in one pass for the lean encoder's layout: the
    Instruction, or None when the buffer is not in that layout or verify() would refuse it.

    A rule sends the same shape again and again: the same rule id, action, params and series,
    with only the instruction id, deadline, value and sample time new (bytes 64..96, four
    scalars verify() takes whatever they hold). So an Instruction accepted here is remembered
    under every other byte of its buffer; a buffer that matches one of those byte for byte is
    the same verdict and the same decode but for the four scalars, read with one unpack. Any
    other byte different (a mutant, a new rule) is a miss and takes the whole check."""
    n = len(buf)
    if n < 96 or type(buf) is not bytes:
        return None
    key = buf[:_INS_VAR_AT] + buf[_INS_VAR_END:]
    seen = _ins_memo.get(key)
    if seen is not None:
        iid, deadline_ns, value, t_sample_ns = _INS_VAR(buf, _INS_VAR_AT)
        return _new_instruction(iid, seen.rule_id, seen.action, seen.custom_action, seen.params,
                                seen.priority, deadline_ns, seen.metric_id, value, t_sample_ns,
                                seen.source_agent)  # fmt: skip
    ins = _lean_instruction(buf, n)
    if ins is not None:
        if len(_ins_memo) >= INS_MEMO_MAX:
            _ins_memo.clear()  # bounded whatever edged sends; the working set comes back at once
        _ins_memo[key] = ins
    return ins


def _lean_instruction(buf: bytes, n: int) -> Instruction | None:
    # header 8, padding 2, vtable 26 (10..36), table 36..96 or 100; the strings come after
    if buf[0:8] != _INS_HEAD or buf[10:40] not in _INS_STRUCT:
        return None
    if n < 36 + buf[12]:  # the table size the vtable gives (60 or 64)
        return None
    (action, priority, _rule, _custom, _params, metric_id, _source, iid, deadline_ns,
     value, t_sample_ns) = _INS_BODY(buf, 42)  # fmt: skip
    act = _ACTION.get(action)
    if act is None:
        return None
    rule_id = _string(buf, n, 44)
    custom = _string(buf, n, 48)
    source = _string(buf, n, 60)
    if rule_id is None or custom is None or source is None:
        return None
    # params: a vector of 4-byte uoffsets, each to a Param table
    v = _target(buf, 52)  # params_at, as a position
    if v < 0 or v & 3 or v + 4 > n:
        return None
    count = _U32(buf, v)[0]
    if count > MAX_LEAN_PARAMS or v + 4 + 4 * count > n:
        return None
    params = []
    for at in range(v + 4, v + 4 + 4 * count, 4):
        p = _target(buf, at)
        # the table 8-aligned (so `number` at +16 is), its vtable the lean one
        if p < 0 or p & 7 or p + 4 > n:
            return None
        vt = p - _I32(buf, p)[0]
        if vt < 0 or vt & 1 or vt + 12 > n or buf[vt : vt + 12] not in _PARAM_VT:
            return None
        if p + buf[vt + 2] > n:  # the table size the vtable gives (24 or 28)
            return None
        kind, _, _, number = _PARAM_BODY(buf, p + 7)
        pk = _PARAM_KIND.get(kind)
        key = _string(buf, n, p + 8)
        text = _string(buf, n, p + 12)
        if pk is None or key is None or text is None:
            return None
        if pk is ParamKind.TEXT:
            params.append(_new_param(key, text))
        elif pk is ParamKind.BOOL:
            params.append(_new_param(key, number != 0.0))
        else:
            params.append(_new_param(key, number))
    return _new_instruction(iid, rule_id, act, custom, tuple(params), priority, deadline_ns,
                            metric_id, value, t_sample_ns, source)  # fmt: skip


_INS_HEAD = struct.pack("<I4s", 36, _INS)
