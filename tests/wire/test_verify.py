"""verify(): accepts everything either encoder writes, refuses malformed buffers with VerifyError
(never another exception), and after it accepts a buffer, decoding cannot fail another way."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import flatbuffers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import TooLargeError, VerifyError
from edge.wire import (
    Ack,
    AckStatus,
    Action,
    CtlOp,
    CtlRequest,
    Heartbeat,
    Hello,
    Instruction,
    MessageType,
    MetricDecl,
    Param,
    _verify,
    decode,
    decode_hello,
    encode_ack,
    encode_ctl_request,
    encode_heartbeat,
    encode_hello,
    encode_instruction,
    encode_metric_batch,
    fb,
    verify,
)

from . import wire_strategies as ws
from .test_codec import encode
from .wire_builders import (
    build_rule_table,
    build_signed_rule_table,
    builder_encode,
    builder_metric_batch,
)

quick = settings(max_examples=100, deadline=None)

rules = st.lists(
    st.fixed_dictionaries({
        "rule_id": ws.short_text,
        "action": st.sampled_from(Action),
        "metric": ws.short_text,
        "labels": st.lists(st.tuples(ws.short_text, ws.short_text), max_size=2),
        "agents": st.lists(ws.short_text, max_size=2),
        "params": st.lists(ws.params, max_size=2),
    }),
    max_size=3,
)  # fmt: skip


def sample_buffers() -> dict[str, bytes]:
    """One buffer of each shape, nested ones included."""
    rnd = random.Random(7)
    hello = Hello("agent-1", (MetricDecl("cpu", (("host", "a"), ("core", "0"))),
                              MetricDecl("temp")), "plc", 42, 100)  # fmt: skip
    params = (Param("rate", 0.5), Param("mode", "eco"), Param("on", True))
    instruction = Instruction(5, "cpu-hot", Action.SET_PARAM, "", params, 9, 10, 3, 1.5, 7)
    return {
        "heartbeat": encode_heartbeat(Heartbeat(1, 2, 3)),
        "ack": encode_ack(Ack(1, 2, AckStatus.FAILED, 3, 4, "disk full")),
        "instruction": encode_instruction(instruction),
        "batch": encode_metric_batch(1, 2, 3, [(1, 2.0, 3), (4, 5.0, 6)]),
        "hello": encode_hello(hello),
        "hello_builder": builder_encode(hello, rnd),
        "instruction_builder": builder_encode(instruction, rnd),
        "ctl_request": encode_ctl_request(CtlRequest(1, CtlOp.RULES_PUSH, {"a": 1}, b"\x01\x02")),
        "rule_table": build_rule_table([{
            "rule_id": "r1", "action": Action.ALERT, "metric": "cpu", "labels": [("host", "a")],
            "agents": ["agent-*"], "params": [Param("level", "warn")],
        }], rnd),
        "signed_rule_table": build_signed_rule_table(
            build_rule_table([], rnd), bytes(8), bytes(range(64)), rnd
        ),
    }  # fmt: skip


SAMPLES = sample_buffers()
RULE_TABLES = (MessageType.RULE_TABLE, MessageType.SIGNED_RULE_TABLE)  # edge.rules decodes these


def refused(buf: bytes | bytearray, match: str | None = None) -> str:
    with pytest.raises(VerifyError, match=match) as info:
        verify(buf)
    return str(info.value)


def decode_after_verify(buf: bytes | bytearray) -> None:
    """verify() either refuses `buf` with VerifyError, or decode() gives a value or VerifyError."""
    try:
        t = verify(buf)
    except VerifyError:
        return
    if t in RULE_TABLES:
        return
    try:
        got = decode(buf)
    except VerifyError:
        return
    if t is MessageType.METRIC_BATCH:
        list(got.samples())  # type: ignore[attr-defined]


# --- accepts -----------------------------------------------------------------------------------


@quick
@given(ws.messages, st.randoms(use_true_random=False))
def test_accepts_both_encoders(m: object, rnd: random.Random) -> None:
    for buf in (encode(m), builder_encode(m, rnd)):
        assert verify(buf) is MessageType(buf[4:8])
        assert verify(memoryview(buf)) is MessageType(buf[4:8])
        assert verify(buf, max_bytes=len(buf)) is MessageType(buf[4:8])


@quick
@given(ws.u64, ws.u64, ws.i64, ws.samples, st.randoms(use_true_random=False))
def test_accepts_metric_batches(
    session: int, seq: int, t_send: int, samples: list[tuple[int, float, int]], rnd: random.Random
) -> None:
    assert verify(encode_metric_batch(session, seq, t_send, samples)) is MessageType.METRIC_BATCH
    buf = builder_metric_batch(session, seq, t_send, samples, rnd)
    assert verify(buf) is MessageType.METRIC_BATCH


@quick
@given(rules, st.randoms(use_true_random=False))
def test_accepts_rule_tables_built_with_the_generated_builders(
    table: list[dict[str, object]], rnd: random.Random
) -> None:
    assert verify(build_rule_table(table, rnd)) is MessageType.RULE_TABLE


def test_accepts_fields_from_a_newer_schema() -> None:
    """A longer vtable (a field this version does not know) is ignored, not refused."""
    b = flatbuffers.Builder(0)
    b.StartObject(5)
    fb.Heartbeat.AddSession(b, 11)
    fb.Heartbeat.AddSeq(b, 12)
    b.PrependUint32Slot(4, 99, 0)
    b.Finish(b.EndObject(), MessageType.HEARTBEAT.value)
    buf = bytes(b.Output())
    assert verify(buf) is MessageType.HEARTBEAT
    assert decode(buf) == Heartbeat(11, 0, 12)


def test_shared_objects_are_verified_once() -> None:
    """50 000 references to one MetricDecl: linear work, and the decode sees them all."""
    b = flatbuffers.Builder(0)
    name = b.CreateString("cpu")
    fb.MetricDecl.Start(b)
    fb.MetricDecl.AddName(b, name)
    decl = fb.MetricDecl.End(b)
    n = 50_000
    b.StartVector(4, n, 4)
    for _ in range(n):
        b.PrependUOffsetTRelative(decl)
    metrics = b.EndVector()
    agent = b.CreateString("a")
    fb.Hello.Start(b)
    fb.Hello.AddAgentId(b, agent)
    fb.Hello.AddMetrics(b, metrics)
    b.Finish(fb.Hello.End(b), MessageType.HELLO.value)
    buf = bytes(b.Output())
    assert verify(buf) is MessageType.HELLO
    assert decode_hello(buf).metrics == (MetricDecl("cpu"),) * n


# --- refuses: properties -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_truncation_at_every_length_is_refused(name: str) -> None:
    """Each prefix is refused, unless all that was cut is trailing padding (zeros that no
    field covers): then the message must decode exactly as before."""
    full = SAMPLES[name]
    for k in range(len(full)):
        cut = full[:k]
        try:
            verify(cut)
        except VerifyError:
            continue
        assert full[k:] == bytes(len(full) - k), f"{name}: prefix {k} accepted"
        if message_type_of(full) not in RULE_TABLES:
            assert repr(decode(cut)) == repr(decode(full))


def message_type_of(buf: bytes) -> MessageType:
    return MessageType(buf[4:8])


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.lists(st.tuples(st.integers(0), ws.u8), min_size=1,
                                                  max_size=4))  # fmt: skip
def test_random_byte_changes_never_raise_anything_but_verify_error(
    name: str, changes: list[tuple[int, int]]
) -> None:
    buf = bytearray(SAMPLES[name])
    for at, value in changes:
        buf[at % len(buf)] = value
    decode_after_verify(buf)


@quick
@given(ws.messages, st.lists(st.tuples(st.integers(0), ws.u8), min_size=1, max_size=3))
def test_random_byte_changes_of_random_messages(m: object, changes: list[tuple[int, int]]) -> None:
    buf = bytearray(encode(m))
    for at, value in changes:
        buf[at % len(buf)] = value
    decode_after_verify(buf)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MessageType), st.binary(min_size=0, max_size=200))
def test_random_bytes_with_a_valid_identifier(t: MessageType, body: bytes) -> None:
    buf = body[:4].ljust(4, b"\x00") + t.value + body[4:]
    decode_after_verify(buf)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=64).map(lambda b: b + bytes(64)))
def test_random_bytes_with_a_plausible_root(body: bytes) -> None:
    """A root offset that lands inside the buffer, so the walk goes deeper than the header."""
    for t in MessageType:
        buf = struct.pack("<I", 8 + 4 * (body[0] % 12)) + t.value + body
        decode_after_verify(buf)


# --- refuses: each check -----------------------------------------------------------------------


def patched(buf: bytes, at: int, fmt: str, *values: object) -> bytearray:
    out = bytearray(buf)
    struct.pack_into(fmt, out, at, *values)
    return out


HB = encode_heartbeat(Heartbeat(1, 2, 3))  # root 20, vtable 10, session @24 (see _codec)
BATCH = encode_metric_batch(1, 2, 3, [(1, 2.0, 3), (4, 5.0, 6)])
ACK = encode_ack(Ack(1, 2, AckStatus.OK, 3, 4, "abc"))  # detail length at 72, bytes at 76


def test_too_short() -> None:
    for n in range(8):
        refused(HB[:n], "shorter than the 8-byte header")


def test_unknown_identifier() -> None:
    refused(HB[:4] + b"EZZZ" + HB[8:], "unknown file identifier b'EZZZ' at byte 4")


def test_oversized() -> None:
    with pytest.raises(TooLargeError, match=f"{len(HB)}-byte message is over the 47-byte limit"):
        verify(HB, max_bytes=len(HB) - 1)
    assert verify(HB, max_bytes=len(HB)) is MessageType.HEARTBEAT


def test_misaligned_or_out_of_bounds_root() -> None:
    for root in (22, 4, 0, len(HB), 2**32 - 4):
        refused(patched(HB, 0, "<I", root), "Heartbeat at byte 0: root uoffset")


def test_vtable_out_of_bounds() -> None:
    msg = refused(patched(HB, 20, "<i", -1000), "vtable at 1020 is outside the 48-byte buffer")
    assert msg.startswith("Heartbeat at byte 20")
    refused(patched(HB, 20, "<i", 100), "vtable at -80")
    refused(patched(HB, 20, "<i", 9), "misaligned")


def test_bad_vtable_and_table_sizes() -> None:
    refused(patched(HB, 10, "<H", 11), "vtable size 11 is odd")
    refused(patched(HB, 10, "<H", 2), "vtable size 2")
    refused(patched(HB, 10, "<H", 40), "runs past the buffer end")
    refused(patched(HB, 12, "<H", 29), "table size 29")
    refused(patched(HB, 12, "<H", 2), "table size 2")


def test_field_outside_its_table_or_misaligned() -> None:
    refused(patched(HB, 14, "<H", 24), "Heartbeat.session at byte 44: field at table offset 24 "
                                       "is outside the 28-byte table")  # fmt: skip
    refused(patched(HB, 14, "<H", 2), "outside")
    refused(patched(HB, 14, "<H", 6), "Heartbeat.session at byte 26: field is not 8-aligned")


def test_vector_length_overflow_and_alignment() -> None:
    refused(patched(BATCH, 60, "<I", 3), "MetricBatch.samples at byte 60: vector of 3 x 24 bytes "
                                         "runs past the end")  # fmt: skip
    refused(patched(BATCH, 60, "<I", 0xFFFFFFFF), "runs past the end")
    refused(patched(BATCH, 28, "<I", 36), "vector elements are not 8-aligned")
    refused(patched(BATCH, 28, "<I", 34), "vector is not 4-aligned")
    refused(patched(BATCH, 28, "<I", 0), "MetricBatch.samples at byte 28: uoffset 0 is zero")
    refused(patched(BATCH, 28, "<I", 2**31), "uoffset 2147483648 is zero or negative")


def test_bad_strings() -> None:
    refused(patched(ACK, 76, "<B", 0xFF), "Ack.detail at byte 76: string is not valid UTF-8")
    refused(patched(ACK, 77, "<2B", 0xED, 0xA0), "UTF-8")  # a surrogate is not UTF-8
    refused(patched(ACK, 79, "<B", 0x41), "Ack.detail at byte 79: string is not NUL-terminated")
    refused(patched(ACK, 72, "<I", 100), "string of 100 bytes runs past the end")
    refused(patched(ACK, 36, "<I", 38), "string is not 4-aligned")


def test_unknown_enum_value() -> None:
    refused(patched(ACK, 35, "<B", 3), "Ack.status at byte 35: 3 is not a AckStatus value")


def test_nested_errors_name_the_field_path() -> None:
    hello = Hello("a", (MetricDecl("m0"), MetricDecl("m1", (("k", "v"), ("key", "zzzz")))))
    buf = encode_hello(hello)
    at = buf.index(b"zzzz")
    msg = refused(patched(buf, at, "<B", 0xC0))
    assert msg.startswith(f"Hello.metrics[1].labels[1].value at byte {at}: string is not valid")


def test_missing_required_fields() -> None:
    b = flatbuffers.Builder(0)
    fb.Hello.Start(b)
    fb.Hello.AddPid(b, 5)
    b.Finish(fb.Hello.End(b), MessageType.HELLO.value)
    refused(bytes(b.Output()), "Hello.agent_id at byte .*: required field is missing")

    b = flatbuffers.Builder(0)
    key = b.CreateString("k")
    fb.Label.Start(b)
    fb.Label.AddKey(b, key)
    label = fb.Label.End(b)
    fb.MetricDecl.StartLabelsVector(b, 1)
    b.PrependUOffsetTRelative(label)
    labels = b.EndVector()
    name, agent = b.CreateString("m"), b.CreateString("a")
    fb.MetricDecl.Start(b)
    fb.MetricDecl.AddName(b, name)
    fb.MetricDecl.AddLabels(b, labels)
    decl = fb.MetricDecl.End(b)
    fb.Hello.StartMetricsVector(b, 1)
    b.PrependUOffsetTRelative(decl)
    metrics = b.EndVector()
    fb.Hello.Start(b)
    fb.Hello.AddAgentId(b, agent)
    fb.Hello.AddMetrics(b, metrics)
    b.Finish(fb.Hello.End(b), MessageType.HELLO.value)
    refused(bytes(b.Output()), r"Hello\.metrics\[0\]\.labels\[0\]\.value .*required")


def test_depth_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    table = SAMPLES["rule_table"]  # RuleTable > Rule > Condition > Selector > Label: 5 deep
    monkeypatch.setattr(_verify, "MAX_DEPTH", 5)
    assert verify(table) is MessageType.RULE_TABLE
    monkeypatch.setattr(_verify, "MAX_DEPTH", 4)
    refused(table, r"RuleTable\.rules\[0\]\.condition\.selectors\[0\]\.labels\[0\] at byte \d+: "
                   "tables nested more than 4 deep")  # fmt: skip


def test_table_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = encode_hello(Hello("a", tuple(MetricDecl(f"m{i}") for i in range(6))))
    monkeypatch.setattr(_verify, "MAX_TABLES", 6)
    assert verify(buf) is MessageType.HELLO
    monkeypatch.setattr(_verify, "MAX_TABLES", 5)
    refused(buf, r"Hello\.metrics\[5\] at byte \d+: more than 5 tables")


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview,
                                  lambda b: memoryview(b).cast("I")])  # fmt: skip
def test_buffer_types(make: Callable[[bytes], object]) -> None:
    assert verify(make(BATCH)) is MessageType.METRIC_BATCH  # type: ignore[arg-type]
