"""The codec against flatc's generated code, in both directions, and byte for byte."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import VerifyError
from edge.wire import (
    SAMPLE_FORMAT,
    SAMPLE_SIZE,
    TIMER_METRIC_ID,
    Ack,
    AckStatus,
    Action,
    CtlCode,
    CtlOp,
    CtlReply,
    CtlRequest,
    Heartbeat,
    Instruction,
    MessageType,
    MetricBatchView,
    Param,
    action_from_name,
    action_name,
    decode,
    decode_ack,
    decode_ctl_reply,
    decode_ctl_request,
    decode_heartbeat,
    decode_instruction,
    decode_metric_batch,
    encode_ack,
    encode_bye,
    encode_ctl_reply,
    encode_ctl_request,
    encode_heartbeat,
    encode_hello,
    encode_instruction,
    encode_metric_batch,
    encode_notice,
    encode_welcome,
    message_type,
    verify,
)

from . import wire_strategies as ws
from .wire_builders import (
    builder_encode,
    builder_metric_batch,
    generated_decode,
    lean_reference_ack,
    lean_reference_heartbeat,
    lean_reference_instruction,
    lean_reference_metric_batch,
)

quick = settings(max_examples=100, deadline=None)

ENCODERS = {
    "Heartbeat": encode_heartbeat,
    "Ack": encode_ack,
    "Instruction": encode_instruction,
    "Hello": encode_hello,
    "Welcome": encode_welcome,
    "Bye": encode_bye,
    "Notice": encode_notice,
    "CtlRequest": encode_ctl_request,
    "CtlReply": encode_ctl_reply,
}
LEAN_REFERENCE = {
    "Heartbeat": lean_reference_heartbeat,
    "Ack": lean_reference_ack,
    "Instruction": lean_reference_instruction,
}


def encode(m: object) -> bytes:
    return ENCODERS[type(m).__name__](m)  # type: ignore[operator]


def bits(samples: Sequence[tuple[int, float, int, int]]) -> list[bytes]:
    """Samples as packed bytes: compares NaN payloads and -0.0 exactly."""
    return [struct.pack(SAMPLE_FORMAT, *s) for s in samples]


def as_struct_order(samples: Sequence[tuple[int, float, int]]) -> list[tuple[int, float, int, int]]:
    return [(t_ns, value, metric_id, 0) for metric_id, value, t_ns in samples]


# --- byte identity with flatbuffers.Builder ----------------------------------------------------


@quick
@given(ws.hot_messages)
def test_lean_encoders_are_byte_identical_to_the_builder(m: object) -> None:
    assert encode(m) == LEAN_REFERENCE[type(m).__name__](m)  # type: ignore[operator]


@quick
@given(ws.u64, ws.u64, ws.i64, ws.samples)
def test_lean_metric_batch_is_byte_identical_to_the_builder(
    session: int, seq: int, t_send: int, samples: list[tuple[int, float, int]]
) -> None:
    lean = encode_metric_batch(session, seq, t_send, samples)
    assert lean == lean_reference_metric_batch(session, seq, t_send, samples)
    assert len(lean) == 64 + SAMPLE_SIZE * len(samples)


# --- lean encode -> generated decode -----------------------------------------------------------


@quick
@given(ws.messages)
def test_generated_code_reads_what_we_encode(m: object) -> None:
    buf = encode(m)
    assert verify(buf) is MessageType(buf[4:8])
    assert generated_decode(buf) == m


@quick
@given(ws.u64, ws.u64, ws.i64, ws.samples)
def test_generated_code_reads_our_metric_batches(
    session: int, seq: int, t_send: int, samples: list[tuple[int, float, int]]
) -> None:
    buf = encode_metric_batch(session, seq, t_send, samples)
    decoded: Any = generated_decode(buf)
    got_session, got_seq, got_t_send, got = decoded
    assert (got_session, got_seq, got_t_send) == (session, seq, t_send)
    assert bits(got) == bits(as_struct_order(samples))


# --- generated encode -> lean decode -----------------------------------------------------------


@quick
@given(ws.messages, st.randoms(use_true_random=False))
def test_we_read_what_the_builder_writes(m: object, rnd: random.Random) -> None:
    """Defaults and empty strings omitted, fields in random order, vtables shared."""
    buf = builder_encode(m, rnd)
    assert verify(buf) is MessageType(buf[4:8])
    assert decode(buf) == m


@quick
@given(ws.small, ws.small, ws.i64, ws.samples, st.randoms(use_true_random=False))
def test_we_read_metric_batches_the_builder_writes(
    session: int, seq: int, t_send: int, samples: list[tuple[int, float, int]], rnd: random.Random
) -> None:
    buf = builder_metric_batch(session, seq, t_send, samples, rnd)
    verify(buf)
    view = decode_metric_batch(buf)
    assert (view.session, view.seq, view.t_send_ns, view.count) == (
        session, seq, t_send, len(samples)
    )  # fmt: skip
    assert bits(list(view.samples())) == bits(as_struct_order(samples))


@quick
@given(ws.messages)
def test_round_trip(m: object) -> None:
    assert decode(encode(m)) == m


# --- MetricBatchView ---------------------------------------------------------------------------


def test_metric_batch_view_reads_in_place() -> None:
    nan = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
    samples = [(1, 2.5, 100), (TIMER_METRIC_ID - 1, -0.0, -5), (7, nan, 2**62)]
    buf = bytearray(encode_metric_batch(9, 10, 11, samples))
    view = decode_metric_batch(memoryview(buf))
    assert isinstance(view, MetricBatchView)
    assert (view.session, view.seq, view.t_send_ns, len(view)) == (9, 10, 11, 3)
    got = list(view.samples())
    assert bits(got) == bits(as_struct_order(samples))
    assert math.isnan(got[2][1])
    # no copy: a change to the buffer shows through the view
    struct.pack_into("<d", buf, 64 + 8, 42.0)
    assert next(iter(view.samples()))[1] == 42.0
    assert "count=3" in repr(view)


def test_empty_metric_batch() -> None:
    view = decode_metric_batch(encode_metric_batch(1, 2, 3, []))
    assert view.count == 0
    assert list(view.samples()) == []


# --- API details -------------------------------------------------------------------------------


def test_absent_fields_decode_to_schema_defaults() -> None:
    """An Instruction with no fields at all: every default, including metric_id 0 (the schema
    default), not the dataclass default TIMER_METRIC_ID."""
    import flatbuffers

    from edge.wire import fb

    b = flatbuffers.Builder(0)
    fb.Instruction.Start(b)
    b.Finish(fb.Instruction.End(b), MessageType.INSTRUCTION.value)
    buf = bytes(b.Output())
    verify(buf)
    assert decode_instruction(buf) == Instruction(0, "", Action.UNSPECIFIED, metric_id=0)


def test_decoders_refuse_another_message_type() -> None:
    hb = encode_heartbeat(Heartbeat(1, 2, 3))
    for decoder in (decode_ack, decode_instruction, decode_metric_batch, decode_ctl_request,
                    decode_ctl_reply):  # fmt: skip
        with pytest.raises(VerifyError, match="EHBT"):
            decoder(hb)
    with pytest.raises(VerifyError):
        decode_heartbeat(b"")


def test_decode_refuses_rule_tables_and_unknown_identifiers() -> None:
    from .wire_builders import build_rule_table

    table = build_rule_table([], random.Random(0))
    assert verify(table) is MessageType.RULE_TABLE
    with pytest.raises(VerifyError, match="edge.rules"):
        decode(table)
    with pytest.raises(VerifyError, match="not a message type"):
        decode(b"\x00" * 4 + b"XXXX" + b"\x00" * 8)


def test_message_type_reads_only_the_identifier() -> None:
    assert message_type(encode_ack(Ack(1, 2, AckStatus.OK, 3, 4))) is MessageType.ACK
    assert message_type(b"\x00\x00\x00\x00EMBT") is MessageType.METRIC_BATCH
    assert message_type(b"\x00\x00\x00\x00ZZZZ") is None
    assert message_type(b"EMB") is None


@pytest.mark.parametrize(
    "encode_bad",
    [
        lambda: encode_heartbeat(Heartbeat(-1, 0, 0)),
        lambda: encode_ack(Ack(0, 2**64, AckStatus.OK, 0, 0)),
        lambda: encode_instruction(Instruction(0, "r", Action.ALERT, priority=256)),
        lambda: encode_metric_batch(0, 0, 0, [(2**32, 1.0, 0)]),
    ],
)
def test_out_of_range_numbers_raise_value_error(encode_bad: object) -> None:
    with pytest.raises(ValueError):
        encode_bad()  # type: ignore[operator]


def test_ctl_json_must_be_an_object_of_json_values() -> None:
    body = {"jitter": math.nan, "p99": [1.0, math.inf], "n": {"x": -math.inf}, "ok": 2.5}
    got = decode_ctl_reply(encode_ctl_reply(CtlReply(1, CtlCode.OK, body)))
    assert got.body == {"jitter": None, "p99": [1.0, None], "n": {"x": None}, "ok": 2.5}
    with pytest.raises(TypeError):
        encode_ctl_request(CtlRequest(1, CtlOp.STATUS, {"x": object()}))


@pytest.mark.parametrize("args_json", ["[1, 2]", "nope", "[" * 100_000, '"text"'])
def test_ctl_request_with_bad_json_is_a_verify_error(args_json: str) -> None:
    import flatbuffers

    from edge.wire import fb

    b = flatbuffers.Builder(0)
    args = b.CreateString(args_json)
    fb.CtlRequest.Start(b)
    fb.CtlRequest.AddOp(b, CtlOp.TAIL)
    fb.CtlRequest.AddArgsJson(b, args)
    b.Finish(fb.CtlRequest.End(b), MessageType.CTL_REQUEST.value)
    buf = bytes(b.Output())
    verify(buf)
    with pytest.raises(VerifyError, match="args_json"):
        decode_ctl_request(buf)


def test_params_keep_their_kind() -> None:
    m = Instruction(1, "r", Action.SET_PARAM, params=(
        Param("on", True), Param("off", False), Param("rate", 3), Param("mode", "eco"),
    ))  # fmt: skip
    got = decode_instruction(encode_instruction(m))
    assert [type(p.value) for p in got.params] == [bool, bool, float, str]
    assert got.params == m.params


def test_action_names() -> None:
    assert action_name(Action.RESTART_AGENT) == "restart_agent"
    assert action_name(Action.CUSTOM, "flush_cache") == "flush_cache"
    assert Instruction(1, "r", Action.CUSTOM, "flush_cache").action_name == "flush_cache"
    for a in Action:
        if a not in (Action.UNSPECIFIED, Action.CUSTOM):
            assert action_from_name(action_name(a)) is a
    for name in ("custom", "unspecified", "flush_cache", "RESTART_AGENT"):
        with pytest.raises(ValueError):
            action_from_name(name)
