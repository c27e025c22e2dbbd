"""The fixed-layout checks (edge.wire._lean) against verify() and the decoders.

For a buffer in a lean layout they must accept exactly what verify() accepts and return what
the decoder returns; for any other buffer they return None (the full path then decides). The
mutants are those of the chaos campaign's mutator (bit flips, offsets, truncation, splices),
plus targeted edits of the bytes each layout leaves free (strings, counts, enums, padding).
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import WireError
from edge.wire import (
    Ack,
    AckStatus,
    Action,
    Instruction,
    MessageType,
    Param,
    decode_ack,
    decode_instruction,
    encode_ack,
    encode_heartbeat,
    encode_instruction,
    encode_metric_batch,
    lean_ack,
    lean_instruction,
    lean_type,
    verify,
)
from edge.wire import _codec as codec
from edge.wire import _lean as lean_mod
from edge.wire._lean import MAX_LEAN_PARAMS
from tests.chaos.inproc_fuzz import mutate
from tests.wire.wire_strategies import acks, heartbeats, instructions, samples

BIG = 1 << 30


def _verified(buf: bytes) -> MessageType | None:
    try:
        return verify(buf, max_bytes=BIG)
    except WireError:
        return None


def _in_lean_layout(buf: bytes, full: MessageType | None) -> bool:
    """Whether the structural bytes are those of a lean layout (edge.wire._lean's docstring);
    for an Instruction that verify() accepted, its Param tables' too."""
    head = buf[:8]
    if head == struct.pack("<I4s", 24, b"EMBT"):
        return buf[12:32] == lean_mod._MB_STRUCT
    if head == struct.pack("<I4s", 28, b"EACK"):
        return buf[12:32] in lean_mod._ACK_STRUCT
    if head == struct.pack("<I4s", 20, b"EHBT"):
        return buf[10:24] == lean_mod._HB_STRUCT
    if head == lean_mod._INS_HEAD and buf[10:40] in lean_mod._INS_STRUCT:
        if full is not MessageType.INSTRUCTION:
            return True
        tables = codec._tables(buf, 52)
        return len(tables) <= MAX_LEAN_PARAMS and all(
            buf[p - codec._I32(buf, p)[0] :][:12] in lean_mod._PARAM_VT for p in tables
        )
    return False


class Seen:
    lean_taken = 0
    lean_layout_refused = 0


def _check(buf: bytes) -> None:
    """The contract, for one buffer: in a lean layout, lean accepts exactly what verify()
    accepts (and decodes the same); outside it, lean returns None."""
    full = _verified(buf)
    t = lean_type(buf, BIG)
    ins = lean_instruction(buf)
    ack = lean_ack(buf)
    taken = t or (ins is not None and MessageType.INSTRUCTION)
    if _in_lean_layout(buf, full):
        assert taken == full or (full is None and not taken), (buf.hex(), taken, full)
        Seen.lean_taken += bool(taken)
        Seen.lean_layout_refused += full is None
    else:
        assert not taken, buf.hex()
    if ins is not None:  # repr: a NaN value or param compares equal to itself
        assert repr(ins) == repr(decode_instruction(buf))
    if ack is not None:
        assert ack == decode_ack(buf)


# --- valid messages in the lean layout are always taken ------------------------------------------


@given(instructions)
@settings(max_examples=300)
def test_every_lean_instruction_is_taken_and_decodes_the_same(ins: Instruction) -> None:
    buf = encode_instruction(ins)
    got = lean_instruction(buf)
    if len(ins.params) > MAX_LEAN_PARAMS:
        assert got is None
    else:
        assert got == decode_instruction(buf) == _decoded(ins)


def _decoded(ins: Instruction) -> Instruction:
    """What decoding gives for ``ins`` (NUMBER params come back as float)."""
    return decode_instruction(encode_instruction(ins))


@given(acks)
def test_every_lean_ack_is_taken(ack: Ack) -> None:
    buf = encode_ack(ack)
    assert lean_type(buf, BIG) is MessageType.ACK
    assert lean_ack(buf) == ack == decode_ack(buf)


@given(heartbeats)
def test_every_lean_heartbeat_is_taken(hb: object) -> None:
    assert lean_type(encode_heartbeat(hb), BIG) is MessageType.HEARTBEAT  # type: ignore[arg-type]


@given(samples, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_every_lean_batch_is_taken(s: list[tuple[int, float, int]], session: int, seq: int) -> None:
    assert lean_type(encode_metric_batch(session, seq, 5, s), BIG) is MessageType.METRIC_BATCH


def test_over_max_bytes_goes_to_the_full_path_which_refuses_it() -> None:
    buf = encode_metric_batch(1, 1, 1, [(1, 0.5, 2)] * 10)
    assert lean_type(buf, len(buf)) is MessageType.METRIC_BATCH
    assert lean_type(buf, len(buf) - 1) is None


def test_other_layouts_fall_back() -> None:
    """A flatbuffers.Builder layout that is valid but not ours: verify() takes it, lean doesn't."""
    from tests.wire.wire_builders import builder_encode

    rnd = random.Random(1)
    ins = Instruction(7, "r", Action.THROTTLE, params=(Param("rate", 0.5),))
    ack = Ack(1, 2, AckStatus.OK, 3, 4, "")
    fell_back = 0
    for _ in range(50):  # random field orders and omitted defaults
        other = builder_encode(ins, rnd)
        assert _verified(other) is MessageType.INSTRUCTION
        got = lean_instruction(other)
        fell_back += got is None
        assert got is None or got == _decoded(ins)
        assert decode_instruction(other) == _decoded(ins)
        a = builder_encode(ack, rnd)
        assert lean_type(a, BIG) in (None, MessageType.ACK)
        assert decode_ack(a) == ack
    assert fell_back > 0


# --- mutants: never accepted unless verify() accepts, and then decoded the same ------------------


@given(st.one_of(instructions.map(encode_instruction), acks.map(encode_ack),
                 heartbeats.map(encode_heartbeat),
                 samples.map(lambda s: encode_metric_batch(3, 4, 5, s))),
       st.integers(0, 2**32 - 1))  # fmt: skip
@settings(max_examples=500)
def test_mutants_agree_with_verify(buf: bytes, seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(20):
        _check(mutate(buf, rnd))


@pytest.mark.parametrize("seed", range(4))
def test_targeted_edits_of_the_free_bytes(seed: int) -> None:
    """Edits of what the layout leaves free — string lengths and bytes, uoffsets, counts, enum
    values, padding — where a lean check that skipped one of verify()'s checks would show."""
    rnd = random.Random(seed)
    base = [
        encode_instruction(Instruction(9, "rule-é", Action.SET_PARAM, "c", (
            Param("k", "v"), Param("n", 2.5), Param("b", True)), 3, 4, 5, 6.0, 7, "src")),
        encode_ack(Ack(1, 2, AckStatus.FAILED, 3, 4, "détail")),
        encode_metric_batch(1, 2, 3, [(1, 0.5, 2)] * 3),
    ]
    for buf in base:
        n = len(buf)
        for _ in range(3000):
            b = bytearray(buf)
            i = rnd.randrange(8, n)
            what = rnd.randrange(4)
            if what == 0:
                b[i] = rnd.choice((0, 1, 2, 3, 4, 7, 8, 9, 0x80, 0xC3, 0xFF))
            elif what == 1 and i + 4 <= n:
                b[i & ~3 : (i & ~3) + 4] = struct.pack("<I", rnd.choice((0, 1, 4, 8, n, n - 4,
                                                                         0x80000000)))
            elif what == 2:
                b = b[: rnd.randrange(n)]
            else:
                b[i] ^= 1 << rnd.randrange(8)
            _check(bytes(b))
    # the edits reached both sides of the contract: taken mutants and refused ones in layout
    assert Seen.lean_taken > 100 and Seen.lean_layout_refused > 100, vars(Seen)


# --- the memo of Instruction shapes --------------------------------------------------------------


@given(instructions, st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1),
       st.floats(allow_nan=True), st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**32 - 1))
@settings(max_examples=300)
def test_a_remembered_shape_decodes_new_scalars_and_refuses_what_verify_refuses(
    ins: Instruction, iid: int, deadline: int, value: float, t_sample: int, seed: int
) -> None:
    """Once an Instruction's shape is remembered, a buffer that differs only in the four
    scalars decodes as the decoder does, and one that differs anywhere else is checked whole."""
    buf = encode_instruction(ins)
    if lean_instruction(buf) is None:  # more params than the lean path takes
        return
    again = bytearray(buf)
    struct.pack_into("<Qqdq", again, 64, iid, deadline, value, t_sample)
    hit = lean_instruction(bytes(again))
    assert hit is not None and repr(hit) == repr(decode_instruction(bytes(again)))
    rnd = random.Random(seed)
    for _ in range(20):
        _check(mutate(buf, rnd))
        b = bytearray(buf)
        i = rnd.choice([j for j in range(len(b)) if not 64 <= j < 96])
        b[i] ^= 1 << rnd.randrange(8)
        _check(bytes(b))


def test_the_memo_is_bounded() -> None:
    for k in range(lean_mod.INS_MEMO_MAX * 3):
        lean_instruction(encode_instruction(Instruction(k, f"rule-{k}", Action.THROTTLE)))
        assert len(lean_mod._ins_memo) <= lean_mod.INS_MEMO_MAX
