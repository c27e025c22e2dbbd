"""Encode and decode protocol messages: pure functions between bytes and edge.wire dataclasses.

Every message is one ZeroMQ frame holding one whole FlatBuffer, so there is no stream framing and
no "need more bytes" state: a frame is a message or it is refused (see verify()).

Hot path (MetricBatch, Heartbeat, Ack, Instruction): hand-written ``struct`` packing, no
``flatbuffers.Builder``. Each lean encoder emits exactly the bytes ``flatbuffers.Builder`` emits
for one fixed call sequence (tests/wire/wire_builders.py holds those sequences and the tests
assert byte equality), so the output is ordinary FlatBuffers that any flatc-generated reader
accepts. That sequence: strings and vectors are created first, in schema order; every string and
vector is written, even when empty; scalars are written even when they equal their default
(``Builder.ForceDefaults(True)``); table fields are added in flatc's C++ ``CreateX()`` order
(largest first, reverse declaration order within a size), so fields sit in the table by size
with one padding gap at most. A Heartbeat, for example::

    byte  0  root uoffset = 20          4  "EHBT"          8  2 bytes padding
         10  vtable: vtable size 10, table size 28, session@4, t_ns@12, seq@20
         20  table:  soffset to vtable = 10
         24          session  ulong
         32          t_ns     long
         40          seq      ulong          (48 bytes)

and a MetricBatch of n samples (docs/protocol.md has a worked hex dump)::

    byte  0  root uoffset = 24          4  "EMBT"          8  4 bytes padding
         12  vtable: 12, table size 36, session@8, seq@16, t_send_ns@24, samples@4
         24  table:  soffset = 12
         28          samples uoffset = 32 (-> byte 60)
         32          session ulong  |  40 seq ulong  |  48 t_send_ns long  |  56 4 bytes padding
         60  vector: count n (uint)
         64          n x Sample {t_ns long, value double, metric_id uint, flags uint} (24 bytes)

Lean decoders read any valid layout (fields absent, in any order, vtables shared), not only the
lean encoders' own. Absent fields decode to the schema defaults.

Cold path (Hello, Welcome, Bye, Notice, CtlRequest, CtlReply) is encoded with the generated
builders; every decoder is lean.

All decoders expect a buffer that verify() accepted. They raise VerifyError when the identifier
names another message type; on an unverified buffer they raise VerifyError or return garbage.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flatbuffers

from ..errors import VerifyError
from ._generated.edgewire import v1 as fb
from ._messages import (
    SAMPLE_FORMAT,
    SAMPLE_SIZE,
    Ack,
    AckStatus,
    Action,
    Bye,
    CtlCode,
    CtlOp,
    CtlReply,
    CtlRequest,
    Heartbeat,
    Hello,
    Instruction,
    MessageType,
    MetricDecl,
    Notice,
    NoticeCode,
    Param,
    ParamKind,
    Welcome,
)

Buffer = bytes | bytearray | memoryview

_U8 = struct.Struct("<B").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_I64 = struct.Struct("<q").unpack_from
_F64 = struct.Struct("<d").unpack_from
_PACK_U32 = struct.Struct("<I").pack
_MAX_SLOTS = 16
_VTABLE = [struct.Struct(f"<{k}H").unpack_from for k in range(_MAX_SLOTS + 1)]
_NO_SLOTS = [(0,) * k for k in range(_MAX_SLOTS + 1)]
_ZEROS = [bytes(k) for k in range(9)]

# Enum values -> members without EnumType.__call__ (a dict lookup is ~10x faster).
_ACK_STATUS = {m.value: m for m in AckStatus}
_ACTION = {m.value: m for m in Action}
_PARAM_KIND = {m.value: m for m in ParamKind}
_NOTICE_CODE = {m.value: m for m in NoticeCode}
_CTL_OP = {m.value: m for m in CtlOp}
_CTL_CODE = {m.value: m for m in CtlCode}

# What an unverified buffer can make a decoder raise; turned into VerifyError.
_DECODE_ERRORS = (struct.error, IndexError, KeyError, ValueError, OverflowError, TypeError)


# --- reading -----------------------------------------------------------------------------------


def message_type(buf: Buffer) -> MessageType | None:
    """The type named by the file identifier (bytes 4..8), or None. Verifies nothing."""
    return _BY_IDENT.get(bytes(buf[4:8]))


def _root(buf: Buffer, ident: bytes) -> int:
    if buf[4:8] != ident:
        raise VerifyError(
            f"identifier {bytes(buf[4:8])!r} at byte 4, expected {ident!r} "
            f"({_BY_IDENT[ident].name})"
        )
    pos: int = _U32(buf, 0)[0]
    return pos


def _slots(buf: Buffer, pos: int, count: int) -> tuple[int, ...]:
    """The vtable entries of the table at `pos` for field ids 0..count-1: each the field's byte
    offset from `pos`, or 0 when the field is absent (the vtable may be shorter than the schema)."""
    vt = pos - _I32(buf, pos)[0]
    have = (_U16(buf, vt)[0] - 4) >> 1
    if have >= count:
        return _VTABLE[count](buf, vt + 4)  # type: ignore[no-any-return]
    return _VTABLE[have](buf, vt + 4) + _NO_SLOTS[count - have]  # type: ignore[no-any-return]


def _string(buf: Buffer, at: int) -> str:
    """The string whose uoffset is at byte `at`."""
    s = at + _U32(buf, at)[0]
    return str(buf[s + 4 : s + 4 + _U32(buf, s)[0]], "utf-8")


def _vector(buf: Buffer, at: int) -> tuple[int, int]:
    """(first element byte, element count) of the vector whose uoffset is at byte `at`."""
    v = at + _U32(buf, at)[0]
    return v + 4, _U32(buf, v)[0]


def _tables(buf: Buffer, at: int) -> list[int]:
    """Table positions of the vector of tables whose uoffset is at byte `at`."""
    start, count = _vector(buf, at)
    return [p + _U32(buf, p)[0] for p in range(start, start + 4 * count, 4)]


def _json_object(text: str, where: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise VerifyError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise VerifyError(f"{where} is a JSON {type(value).__name__}, not an object")
    return value


def _garbage(name: str, e: Exception) -> VerifyError:
    return VerifyError(f"cannot decode {name} ({type(e).__name__}: {e}); was it verified?")


# --- MetricBatch -------------------------------------------------------------------------------

_MB_IDENT = MessageType.METRIC_BATCH.value
# Bytes 0..32 never change: root uoffset, identifier, padding, vtable, soffset, samples uoffset.
_MB_HEAD = struct.pack("<I4s4x6HiI", 24, _MB_IDENT, 12, 36, 8, 16, 24, 4, 12, 32)
_MB_BODY = struct.Struct("<QQq4xI")  # session, seq, t_send_ns, padding, sample count
_SAMPLE = struct.Struct(SAMPLE_FORMAT)
_SAMPLE_PACK_INTO = _SAMPLE.pack_into
_MB_BODY_PACK_INTO = _MB_BODY.pack_into


class MetricBatchView:
    """A decoded MetricBatch that still points into its buffer: samples are read on iteration,
    straight from the buffer (no copy, no per-sample objects until then)."""

    __slots__ = ("_buf", "_start", "count", "seq", "session", "t_send_ns")

    def __init__(
        self, buf: Buffer, session: int, seq: int, t_send_ns: int, start: int, count: int
    ) -> None:
        self._buf = buf
        self._start = start
        self.session = session
        self.seq = seq
        self.t_send_ns = t_send_ns  # CLOCK_MONOTONIC ns when the batch was handed to ZeroMQ
        self.count = count  # number of samples

    def samples(self) -> Iterator[tuple[int, float, int, int]]:
        """(t_ns, value, metric_id, flags) per sample, in batch order."""
        start = self._start
        return struct.iter_unpack(
            SAMPLE_FORMAT, memoryview(self._buf)[start : start + SAMPLE_SIZE * self.count]
        )

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"MetricBatchView(session={self.session}, seq={self.seq}, "
            f"t_send_ns={self.t_send_ns}, count={self.count})"
        )


def encode_metric_batch(
    session: int, seq: int, t_send_ns: int, samples: Sequence[tuple[int, float, int]]
) -> bytes:
    """A MetricBatch; `samples` holds (metric_id, value, t_ns) triples, t_ns in CLOCK_MONOTONIC
    ns. Raises ValueError when a number does not fit its field."""
    n = len(samples)
    out = bytearray(64 + SAMPLE_SIZE * n)
    out[0:32] = _MB_HEAD
    pack_into = _SAMPLE_PACK_INTO
    try:
        _MB_BODY_PACK_INTO(out, 32, session, seq, t_send_ns, n)
        at = 64
        for metric_id, value, t_ns in samples:
            pack_into(out, at, t_ns, value, metric_id, 0)
            at += SAMPLE_SIZE
    except struct.error as e:
        raise ValueError(f"MetricBatch: {e}") from None
    return bytes(out)


_MB_SLOTS = (8, 16, 24, 4)
_MB_TABLE = struct.Struct("<4xIQQq").unpack_from


def decode_metric_batch(buf: Buffer) -> MetricBatchView:
    pos = _root(buf, _MB_IDENT)
    try:
        slots = _slots(buf, pos, 4)
        if slots == _MB_SLOTS:  # the lean encoder's layout: one unpack
            samples, session, seq, t_send_ns = _MB_TABLE(buf, pos)
            v = pos + 4 + samples
            return MetricBatchView(buf, session, seq, t_send_ns, v + 4, _U32(buf, v)[0])
        f_session, f_seq, f_t_send, f_samples = slots
        if f_samples:
            start, count = _vector(buf, pos + f_samples)
        else:
            start = count = 0
        return MetricBatchView(
            buf,
            _U64(buf, pos + f_session)[0] if f_session else 0,
            _U64(buf, pos + f_seq)[0] if f_seq else 0,
            _I64(buf, pos + f_t_send)[0] if f_t_send else 0,
            start,
            count,
        )
    except _DECODE_ERRORS as e:
        raise _garbage("MetricBatch", e) from None


# --- Heartbeat ---------------------------------------------------------------------------------

_HB_IDENT = MessageType.HEARTBEAT.value
_HB = struct.Struct("<I4s2x5HiQqQ")  # header, vtable, soffset, session, t_ns, seq
_HB_CONST = (20, _HB_IDENT, 10, 28, 4, 12, 20, 10)


def encode_heartbeat(m: Heartbeat) -> bytes:
    try:
        return _HB.pack(*_HB_CONST, m.session, m.t_ns, m.seq)
    except struct.error as e:
        raise ValueError(f"Heartbeat: {e}") from None


_HB_SLOTS = (4, 12, 20)
_HB_TABLE = struct.Struct("<4xQqQ").unpack_from


def decode_heartbeat(buf: Buffer) -> Heartbeat:
    pos = _root(buf, _HB_IDENT)
    try:
        slots = _slots(buf, pos, 3)
        if slots == _HB_SLOTS:  # the lean encoder's layout: one unpack
            return Heartbeat(*_HB_TABLE(buf, pos))
        f_session, f_t_ns, f_seq = slots
        return Heartbeat(
            session=_U64(buf, pos + f_session)[0] if f_session else 0,
            t_ns=_I64(buf, pos + f_t_ns)[0] if f_t_ns else 0,
            seq=_U64(buf, pos + f_seq)[0] if f_seq else 0,
        )
    except _DECODE_ERRORS as e:
        raise _garbage("Heartbeat", e) from None


# --- Ack ---------------------------------------------------------------------------------------
#   0 root uoffset = 28 | 4 "EACK" | 8 padding | 12 vtable (16 bytes) | 28 soffset = 16
#  32 padding (3) | 35 status | 36 detail uoffset | 40 session | 48 instruction_id
#  56 t_delivered_ns | 64 t_done_ns | 72 padding (0 or 4) | detail: length, bytes, NUL, padding
# The padding at 72 belongs to the table (flatbuffers.Builder aligns the first 8-byte field
# against the string written before it), so the table size in the vtable is 44 or 48.

_ACK_IDENT = MessageType.ACK.value
_ACK = (
    struct.Struct("<I4s4x8Hi3xBIQQqqI"),  # no padding before the string
    struct.Struct("<I4s4x8Hi3xBIQQqq4xI"),  # 4 bytes of padding before the string
)


def encode_ack(m: Ack) -> bytes:
    detail = m.detail.encode()
    n = len(detail)
    tail = -(n + 1) & 3  # NUL plus padding after the string bytes
    gap = -(n + 5 + tail) & 7  # padding between the table and the string
    try:
        head = _ACK[gap >> 2].pack(
            28, _ACK_IDENT, 16, 44 + gap, 12, 20, 7, 28, 36, 8, 16,
            m.status, 36 + gap, m.session, m.instruction_id, m.t_delivered_ns, m.t_done_ns, n,
        )  # fmt: skip
    except struct.error as e:
        raise ValueError(f"Ack: {e}") from None
    return head + detail + _ZEROS[tail + 1]


_ACK_SLOTS = (12, 20, 7, 28, 36, 8)
_ACK_TABLE = struct.Struct("<7xBIQQqq").unpack_from


def decode_ack(buf: Buffer) -> Ack:
    pos = _root(buf, _ACK_IDENT)
    try:
        slots = _slots(buf, pos, 6)
        if slots == _ACK_SLOTS:  # the lean encoder's layout: one unpack
            status, _, session, instruction_id, t_delivered, t_done = _ACK_TABLE(buf, pos)
            return Ack(
                session,
                instruction_id,
                _ACK_STATUS[status],
                t_delivered,
                t_done,
                _string(buf, pos + 8),
            )
        f_session, f_id, f_status, f_delivered, f_done, f_detail = slots
        return Ack(
            session=_U64(buf, pos + f_session)[0] if f_session else 0,
            instruction_id=_U64(buf, pos + f_id)[0] if f_id else 0,
            status=_ACK_STATUS[_U8(buf, pos + f_status)[0] if f_status else 0],
            t_delivered_ns=_I64(buf, pos + f_delivered)[0] if f_delivered else 0,
            t_done_ns=_I64(buf, pos + f_done)[0] if f_done else 0,
            detail=_string(buf, pos + f_detail) if f_detail else "",
        )
    except _DECODE_ERRORS as e:
        raise _garbage("Ack", e) from None


# --- Instruction -------------------------------------------------------------------------------
# Built back to front like flatbuffers.Builder: `chunks` collects pieces in reverse order and
# `end` counts the bytes written so far, i.e. the distance of the current start from the end of
# the finished buffer. A uoffset stored `at` bytes from the end pointing at an object `obj` bytes
# from the end holds at - obj.
#
# Instruction table, from its start: soffset | 2 padding | action | priority | rule_id uoffset |
# custom_action uoffset | params uoffset | metric_id | source_agent uoffset | instruction_id |
# deadline_ns | value | t_sample_ns | 0 or 4 padding (60 bytes + padding; its vtable is 26
# bytes, 11 fields).   Param table: soffset | 3 padding | kind | key uoffset | text uoffset |
# number | 0 or 4 padding. Strings and vectors come after the table in schema order: rule_id,
# custom_action, params, source_agent.

_INS_IDENT = MessageType.INSTRUCTION.value
_INS_TABLE = struct.Struct("<i2xBBIIIIIQqdq")
_INS_VTABLE = [
    struct.pack("<13H", 26, 60 + gap, 28, 8, 6, 12, 16, 7, 36, 20, 44, 52, 24) for gap in (0, 4)
]
_PARAM_TABLE = struct.Struct("<i3xBIId")
_PARAM_VTABLE = [struct.pack("<6H", 12, 24 + gap, 8, 7, 16, 12) for gap in (0, 4)]
_HEADER = struct.Struct("<I4s")


def _put_string(chunks: list[bytes], end: int, data: bytes) -> int:
    """Prepend a string; return `end` after it, which is also where the string starts."""
    n = len(data)
    chunks.append(_ZEROS[(-(end + n + 1) & 3) + 1])
    chunks.append(data)
    chunks.append(_PACK_U32(n))
    return end + 4 + n + 1 + (-(end + n + 1) & 3)


def _put_params(chunks: list[bytes], end: int, params: Sequence[Param]) -> int:
    """Prepend the Param tables and the vector of them; return the vector's position."""
    at = []
    vtables: dict[int, int] = {}  # alignment gap -> position of that Param vtable
    for p in params:
        end = key = _put_string(chunks, end, p.key.encode())
        value = p.value
        if isinstance(value, str):
            kind, number, text = ParamKind.TEXT, 0.0, value
        else:
            kind = ParamKind.BOOL if isinstance(value, bool) else ParamKind.NUMBER
            number, text = float(value), ""
        end = txt = _put_string(chunks, end, text.encode())
        gap = -end & 7
        table = end + gap + 24
        vt = vtables.get(gap)
        chunks.append(_ZEROS[gap])
        chunks.append(
            _PARAM_TABLE.pack(
                (vt - table) if vt is not None else 12, kind, table - 8 - key, table - 12 - txt,
                number,
            )
        )
        end = table
        if vt is None:
            chunks.append(_PARAM_VTABLE[gap >> 2])
            end = vtables[gap] = table + 12
        at.append(table)
    n = len(at)
    vector = end + 4 + 4 * n
    chunks.append(
        struct.pack(f"<{n + 1}I", n, *[vector - 4 - 4 * i - t for i, t in enumerate(at)])
    )
    return vector


def encode_instruction(m: Instruction) -> bytes:
    """Raises ValueError when a number does not fit its field."""
    chunks: list[bytes] = []
    end = rule = _put_string(chunks, 0, m.rule_id.encode())
    end = custom = _put_string(chunks, end, m.custom_action.encode())
    end = params = _put_params(chunks, end, m.params)
    end = source = _put_string(chunks, end, m.source_agent.encode())
    gap = -end & 7
    table = end + gap + 60
    try:
        body = _INS_TABLE.pack(
            26, m.action, m.priority, table - 8 - rule, table - 12 - custom, table - 16 - params,
            m.metric_id, table - 24 - source, m.instruction_id, m.deadline_ns, m.value,
            m.t_sample_ns,
        )  # fmt: skip
    except struct.error as e:
        raise ValueError(f"Instruction: {e}") from None
    chunks.append(_ZEROS[gap])
    chunks.append(body)
    chunks.append(_INS_VTABLE[gap >> 2])
    end = table + 26
    pad = -end & 7
    chunks.append(_ZEROS[pad])
    chunks.append(_HEADER.pack(end + pad + 8 - table, _INS_IDENT))
    chunks.reverse()
    return b"".join(chunks)


def _decode_param(buf: Buffer, pos: int) -> Param:
    f_key, f_kind, f_number, f_text = _slots(buf, pos, 4)
    kind = _PARAM_KIND[_U8(buf, pos + f_kind)[0] if f_kind else 0]
    key = _string(buf, pos + f_key)  # required: verify() refuses a Param without it
    if kind is ParamKind.TEXT:
        return Param(key, _string(buf, pos + f_text) if f_text else "")
    number = _F64(buf, pos + f_number)[0] if f_number else 0.0
    return Param(key, number != 0.0 if kind is ParamKind.BOOL else number)


_INS_SLOTS = (28, 8, 6, 12, 16, 7, 36, 20, 44, 52, 24)
_INS_UNPACK = _INS_TABLE.unpack_from


def decode_instruction(buf: Buffer) -> Instruction:
    pos = _root(buf, _INS_IDENT)
    try:
        slots = _slots(buf, pos, 11)
        if slots == _INS_SLOTS:  # the lean encoder's layout: one unpack
            (_, action, priority, rule, custom, params, metric_id, source, instruction_id,
             deadline_ns, value, t_sample_ns) = _INS_UNPACK(buf, pos)  # fmt: skip
            return Instruction(
                instruction_id,
                _string(buf, pos + 8),
                _ACTION[action],
                _string(buf, pos + 12),
                tuple(_decode_param(buf, p) for p in _tables(buf, pos + 16)),
                priority,
                deadline_ns,
                metric_id,
                value,
                t_sample_ns,
                _string(buf, pos + 24),
            )
        (f_id, f_rule, f_action, f_custom, f_params, f_priority, f_deadline, f_metric, f_value,
         f_t_sample, f_source) = slots  # fmt: skip
        return Instruction(
            instruction_id=_U64(buf, pos + f_id)[0] if f_id else 0,
            rule_id=_string(buf, pos + f_rule) if f_rule else "",
            action=_ACTION[_U8(buf, pos + f_action)[0] if f_action else 0],
            custom_action=_string(buf, pos + f_custom) if f_custom else "",
            params=tuple(_decode_param(buf, p) for p in _tables(buf, pos + f_params))
            if f_params
            else (),
            priority=_U8(buf, pos + f_priority)[0] if f_priority else 0,
            deadline_ns=_I64(buf, pos + f_deadline)[0] if f_deadline else 0,
            metric_id=_U32(buf, pos + f_metric)[0] if f_metric else 0,
            value=_F64(buf, pos + f_value)[0] if f_value else 0.0,
            t_sample_ns=_I64(buf, pos + f_t_sample)[0] if f_t_sample else 0,
            source_agent=_string(buf, pos + f_source) if f_source else "",
        )
    except _DECODE_ERRORS as e:
        raise _garbage("Instruction", e) from None


# --- cold path: generated builders -------------------------------------------------------------


def _finish(b: flatbuffers.Builder, root: int, t: MessageType) -> bytes:
    b.Finish(root, t.value)
    return bytes(b.Output())


def encode_hello(m: Hello) -> bytes:
    b = flatbuffers.Builder(256)
    decls = []
    for decl in m.metrics:
        name = b.CreateString(decl.name)
        labels = []
        for key, value in decl.labels:
            k, v = b.CreateString(key), b.CreateString(value)
            fb.Label.Start(b)
            fb.Label.AddKey(b, k)
            fb.Label.AddValue(b, v)
            labels.append(fb.Label.End(b))
        fb.MetricDecl.StartLabelsVector(b, len(labels))
        for off in reversed(labels):
            b.PrependUOffsetTRelative(off)
        label_vec = b.EndVector()
        fb.MetricDecl.Start(b)
        fb.MetricDecl.AddName(b, name)
        fb.MetricDecl.AddLabels(b, label_vec)
        decls.append(fb.MetricDecl.End(b))
    fb.Hello.StartMetricsVector(b, len(decls))
    for off in reversed(decls):
        b.PrependUOffsetTRelative(off)
    metrics = b.EndVector()
    agent_id = b.CreateString(m.agent_id)
    agent_kind = b.CreateString(m.agent_kind) if m.agent_kind else 0
    fb.Hello.Start(b)
    fb.Hello.AddProtocolVersion(b, m.protocol_version)
    fb.Hello.AddAgentId(b, agent_id)
    if agent_kind:
        fb.Hello.AddAgentKind(b, agent_kind)
    fb.Hello.AddPid(b, m.pid)
    fb.Hello.AddHeartbeatMs(b, m.heartbeat_ms)
    fb.Hello.AddMetrics(b, metrics)
    return _finish(b, fb.Hello.End(b), MessageType.HELLO)


def decode_hello(buf: Buffer) -> Hello:
    pos = _root(buf, MessageType.HELLO.value)
    try:
        f_version, f_id, f_kind, f_pid, f_beat, f_metrics = _slots(buf, pos, 6)
        metrics = []
        for d in _tables(buf, pos + f_metrics) if f_metrics else ():
            f_name, f_labels = _slots(buf, d, 2)
            labels = []
            for lab in _tables(buf, d + f_labels) if f_labels else ():
                f_key, f_value = _slots(buf, lab, 2)
                labels.append((_string(buf, lab + f_key), _string(buf, lab + f_value)))
            metrics.append(MetricDecl(_string(buf, d + f_name), tuple(labels)))
        return Hello(
            agent_id=_string(buf, pos + f_id),
            metrics=tuple(metrics),
            agent_kind=_string(buf, pos + f_kind) if f_kind else "",
            pid=_U32(buf, pos + f_pid)[0] if f_pid else 0,
            heartbeat_ms=_U32(buf, pos + f_beat)[0] if f_beat else 0,
            protocol_version=_U16(buf, pos + f_version)[0] if f_version else 0,
        )
    except _DECODE_ERRORS as e:
        raise _garbage("Hello", e) from None


def encode_welcome(m: Welcome) -> bytes:
    b = flatbuffers.Builder(64 + 4 * len(m.metric_ids))
    fb.Welcome.StartMetricIdsVector(b, len(m.metric_ids))
    for metric_id in reversed(m.metric_ids):
        b.PrependUint32(metric_id)
    ids = b.EndVector()
    fb.Welcome.Start(b)
    fb.Welcome.AddProtocolVersion(b, m.protocol_version)
    fb.Welcome.AddSession(b, m.session)
    fb.Welcome.AddMetricIds(b, ids)
    fb.Welcome.AddHeartbeatMs(b, m.heartbeat_ms)
    fb.Welcome.AddMissedBeats(b, m.missed_beats)
    fb.Welcome.AddMaxBatch(b, m.max_batch)
    fb.Welcome.AddMaxMsgBytes(b, m.max_msg_bytes)
    return _finish(b, fb.Welcome.End(b), MessageType.WELCOME)


def decode_welcome(buf: Buffer) -> Welcome:
    pos = _root(buf, MessageType.WELCOME.value)
    try:
        f_version, f_session, f_ids, f_beat, f_missed, f_batch, f_bytes = _slots(buf, pos, 7)
        if f_ids:
            start, count = _vector(buf, pos + f_ids)
            ids = struct.unpack_from(f"<{count}I", buf, start)
        else:
            ids = ()
        return Welcome(
            session=_U64(buf, pos + f_session)[0] if f_session else 0,
            metric_ids=ids,
            heartbeat_ms=_U32(buf, pos + f_beat)[0] if f_beat else 0,
            missed_beats=_U32(buf, pos + f_missed)[0] if f_missed else 0,
            max_batch=_U32(buf, pos + f_batch)[0] if f_batch else 0,
            max_msg_bytes=_U32(buf, pos + f_bytes)[0] if f_bytes else 0,
            protocol_version=_U16(buf, pos + f_version)[0] if f_version else 0,
        )
    except _DECODE_ERRORS as e:
        raise _garbage("Welcome", e) from None


def encode_bye(m: Bye) -> bytes:
    b = flatbuffers.Builder(64)
    reason = b.CreateString(m.reason) if m.reason else 0
    fb.Bye.Start(b)
    fb.Bye.AddSession(b, m.session)
    if reason:
        fb.Bye.AddReason(b, reason)
    return _finish(b, fb.Bye.End(b), MessageType.BYE)


def decode_bye(buf: Buffer) -> Bye:
    pos = _root(buf, MessageType.BYE.value)
    try:
        f_session, f_reason = _slots(buf, pos, 2)
        return Bye(
            session=_U64(buf, pos + f_session)[0] if f_session else 0,
            reason=_string(buf, pos + f_reason) if f_reason else "",
        )
    except _DECODE_ERRORS as e:
        raise _garbage("Bye", e) from None


def encode_notice(m: Notice) -> bytes:
    b = flatbuffers.Builder(64)
    detail = b.CreateString(m.detail) if m.detail else 0
    fb.Notice.Start(b)
    fb.Notice.AddCode(b, m.code)
    if detail:
        fb.Notice.AddDetail(b, detail)
    return _finish(b, fb.Notice.End(b), MessageType.NOTICE)


def decode_notice(buf: Buffer) -> Notice:
    pos = _root(buf, MessageType.NOTICE.value)
    try:
        f_code, f_detail = _slots(buf, pos, 2)
        return Notice(
            code=_NOTICE_CODE[_U16(buf, pos + f_code)[0] if f_code else 0],
            detail=_string(buf, pos + f_detail) if f_detail else "",
        )
    except _DECODE_ERRORS as e:
        raise _garbage("Notice", e) from None


def _json_text(value: dict[str, Any], where: str) -> str:
    """Compact JSON text. JSON has no NaN or infinity: those travel as null (a stats document
    may hold them). Raises TypeError for values JSON cannot hold."""
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def encode_ctl_request(m: CtlRequest) -> bytes:
    args = _json_text(m.args, "CtlRequest.args")
    b = flatbuffers.Builder(128 + len(m.blob) + len(args))
    blob = b.CreateByteVector(bytes(m.blob)) if m.blob else 0
    args_off = b.CreateString(args) if m.args else 0
    fb.CtlRequest.Start(b)
    fb.CtlRequest.AddRequestId(b, m.request_id)
    fb.CtlRequest.AddOp(b, m.op)
    if args_off:
        fb.CtlRequest.AddArgsJson(b, args_off)
    if blob:
        fb.CtlRequest.AddBlob(b, blob)
    return _finish(b, fb.CtlRequest.End(b), MessageType.CTL_REQUEST)


def decode_ctl_request(buf: Buffer) -> CtlRequest:
    pos = _root(buf, MessageType.CTL_REQUEST.value)
    try:
        f_id, f_op, f_args, f_blob = _slots(buf, pos, 4)
        if f_blob:
            start, count = _vector(buf, pos + f_blob)
            blob = bytes(buf[start : start + count])
        else:
            blob = b""
        return CtlRequest(
            request_id=_U64(buf, pos + f_id)[0] if f_id else 0,
            op=_CTL_OP[_U8(buf, pos + f_op)[0] if f_op else 0],
            args=_json_object(_string(buf, pos + f_args) if f_args else "", "CtlRequest.args_json"),
            blob=blob,
        )
    except _DECODE_ERRORS as e:
        raise _garbage("CtlRequest", e) from None


def encode_ctl_reply(m: CtlReply) -> bytes:
    body = _json_text(m.body, "CtlReply.body")
    b = flatbuffers.Builder(128 + len(body) + len(m.error))
    body_off = b.CreateString(body) if m.body else 0
    error = b.CreateString(m.error) if m.error else 0
    fb.CtlReply.Start(b)
    fb.CtlReply.AddRequestId(b, m.request_id)
    fb.CtlReply.AddCode(b, m.code)
    if error:
        fb.CtlReply.AddError(b, error)
    if body_off:
        fb.CtlReply.AddBodyJson(b, body_off)
    return _finish(b, fb.CtlReply.End(b), MessageType.CTL_REPLY)


def decode_ctl_reply(buf: Buffer) -> CtlReply:
    pos = _root(buf, MessageType.CTL_REPLY.value)
    try:
        f_id, f_code, f_error, f_body = _slots(buf, pos, 4)
        return CtlReply(
            request_id=_U64(buf, pos + f_id)[0] if f_id else 0,
            code=_CTL_CODE[_U8(buf, pos + f_code)[0] if f_code else 0],
            body=_json_object(_string(buf, pos + f_body) if f_body else "", "CtlReply.body_json"),
            error=_string(buf, pos + f_error) if f_error else "",
        )
    except _DECODE_ERRORS as e:
        raise _garbage("CtlReply", e) from None


# --- any message -------------------------------------------------------------------------------

_BY_IDENT = {t.value: t for t in MessageType}

_DECODERS: dict[MessageType, Callable[[Buffer], object]] = {
    MessageType.HELLO: decode_hello,
    MessageType.WELCOME: decode_welcome,
    MessageType.METRIC_BATCH: decode_metric_batch,
    MessageType.HEARTBEAT: decode_heartbeat,
    MessageType.INSTRUCTION: decode_instruction,
    MessageType.ACK: decode_ack,
    MessageType.BYE: decode_bye,
    MessageType.NOTICE: decode_notice,
    MessageType.CTL_REQUEST: decode_ctl_request,
    MessageType.CTL_REPLY: decode_ctl_reply,
}


def decode(buf: Buffer) -> object:
    """Decode a verified buffer of any type but RuleTable (edge.rules decodes those): a
    MetricBatchView for a MetricBatch, else the message's dataclass. Raises VerifyError for an
    unknown identifier or a RuleTable."""
    t = message_type(buf)
    decoder = _DECODERS.get(t) if t is not None else None
    if decoder is None:
        raise VerifyError(
            f"identifier {bytes(buf[4:8])!r} at byte 4: "
            + ("RuleTable buffers are decoded by edge.rules" if t else "not a message type")
        )
    return decoder(buf)
