"""The frame codec (firmware_bridge/mcu/frames.py, one source for the MCU and the host):
properties on CPython, and the same cases on real MicroPython compared byte for byte."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge._mcu import _frames as fr
from firmware_bridge._mcu._sim import FIRMWARE_DIR, run_micropython

bodies = st.binary(max_size=fr.MAX_BODY)
types = st.sampled_from(fr.TYPES)
seqs = st.integers(0, 0xFFFF)
frame_specs = st.tuples(types, seqs, bodies)


def wire_of(specs: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(fr.encode(t, s, b) for t, s, b in specs)


def triples(frames: list[fr.Frame]) -> list[tuple[int, int, bytes]]:
    return [(f.ftype, f.seq, bytes(f.body)) for f in frames]


def test_crc_is_ccitt_false() -> None:
    assert fr.crc16(b"123456789") == 0x29B1
    assert fr.crc16(b"") == 0xFFFF


@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data: bytes) -> None:
    enc = fr.cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + 1 + len(data) // 254
    assert fr.cobs_decode(enc) == data


@given(st.lists(frame_specs, max_size=8))
def test_round_trip(specs: list[tuple[int, int, bytes]]) -> None:
    d = fr.Deframer()
    assert triples(d.feed(wire_of(specs))) == specs
    assert d.noise_bytes == 0 and not any(d.counts.values()) and not d.buf


@given(st.lists(frame_specs, min_size=1, max_size=3), st.data())
def test_streaming_split_at_every_byte_boundary(specs, data) -> None:
    wire = wire_of(specs)
    for k in range(len(wire) + 1):
        d = fr.Deframer()
        assert triples(d.feed(wire[:k]) + d.feed(wire[k:])) == specs
    d = fr.Deframer()
    got: list[fr.Frame] = []
    for i in range(len(wire)):
        got += d.feed(wire[i:i + 1])
    assert triples(got) == specs


@given(frame_specs, st.integers(0, 10_000), st.integers(1, 0xFFFF))
def test_a_burst_error_of_up_to_16_bits_is_always_refused(spec, where, pattern) -> None:
    """CRC-16 detects every burst of <= 16 bits; the frame is counted, never delivered."""
    t, s, b = spec
    raw = bytearray(fr.cobs_decode(fr.encode(t, s, b)[1:-1]))
    i = where % (len(raw) - 1)
    raw[i] ^= pattern >> 8
    raw[i + 1] ^= pattern & 0xFF
    d = fr.Deframer()
    assert d.feed(b"\x00" + fr.cobs_encode(bytes(raw)) + b"\x00") == []
    assert d.counts["crc_errors"] + d.counts["version_errors"] == 1


@given(frame_specs, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                             min_size=1, max_size=4), frame_specs)
def test_any_wire_corruption_is_counted_and_the_next_frame_decodes(spec, hits, after) -> None:
    wire = bytearray(fr.encode(*spec))
    for where, value in hits:
        wire[where % len(wire)] = value
    d = fr.Deframer()
    got = d.feed(bytes(wire)) + d.feed(fr.encode(*after))
    assert triples(got)[-1] == after  # resynchronised on the next delimiter
    damaged = bytes(wire) != fr.encode(*spec)
    if damaged and triples(got[:-1]) != [spec]:
        # the damaged frame was refused, counted, its bytes in noise_bytes (a CRC collision,
        # 1 in 65536, would deliver it: the property allows that and nothing else)
        assert sum(d.counts.values()) >= 1 and d.noise_bytes > 0


@given(st.binary(max_size=700), st.lists(frame_specs, min_size=1, max_size=3))
def test_line_noise_then_frames_resyncs(noise: bytes, specs) -> None:
    d = fr.Deframer()
    got = d.feed(noise) + d.feed(wire_of(specs))
    assert triples(got)[-len(specs):] == specs
    assert len(d.buf) <= fr.MAX_ENCODED


@given(st.integers(fr.MAX_ENCODED + 1, 2000), frame_specs)
def test_an_oversized_block_is_counted_once_and_dropped(size: int, spec) -> None:
    d = fr.Deframer()
    junk = bytes((i % 255) + 1 for i in range(size))  # no 0x00 anywhere
    got = d.feed(b"\x00" + junk[: size // 2]) + d.feed(junk[size // 2:] + fr.encode(*spec))
    assert triples(got) == [spec]
    assert d.counts["oversize"] == 1 and d.noise_bytes == size
    assert len(d.buf) == 0


def test_truncated_short_and_wrong_version_frames_are_counted() -> None:
    good = fr.encode(fr.T_HEARTBEAT, 1)
    d = fr.Deframer()
    other_version = b"\x00" + fr.cobs_encode(
        bytes([2, fr.T_HEARTBEAT, 1, 0]) + fr.crc16(bytes([2, fr.T_HEARTBEAT, 1, 0])).to_bytes(2, "big")
    ) + b"\x00"
    assert d.feed(good[:-3] + b"\x00" + b"\x00\x02\x01\x00" + other_version + good) != []
    assert d.counts["crc_errors"] + d.counts["cobs_errors"] >= 1
    assert d.counts["short_frames"] == 1 and d.counts["version_errors"] == 1


def test_decode_is_pure_and_says_need_more_with_zero() -> None:
    wire = fr.encode(fr.T_SYNC, 3)
    assert fr.decode(wire[:1]) == (1, None)  # the leading delimiter
    assert fr.decode(wire[1:-1]) == (0, None)  # no closing delimiter yet: need more
    used, item = fr.decode(wire[1:])
    assert used == len(wire) - 1 and isinstance(item, fr.Frame) and item.seq == 3


@given(st.integers(0, 0xFFFF), st.integers(1, 0x7FFF))
def test_seq_newer_within_half_the_space(last: int, ahead: int) -> None:
    assert fr.seq_newer((last + ahead) & 0xFFFF, last) == ahead
    assert fr.seq_newer(last, last) == 0
    assert fr.seq_newer((last - ahead) & 0xFFFF, last) == 0


names = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 60)
values = st.one_of(st.booleans(), st.integers(-2**31, 2**31 - 1), st.text(max_size=10),
                   st.floats(width=32, allow_nan=False))


@given(names, st.lists(st.tuples(names, values), max_size=6))
def test_command_body_round_trip(name: str, params) -> None:
    try:
        body = fr.command_body(name, params)
    except ValueError as e:  # too long for one frame: refused with its size (found by hypothesis)
        size = int(str(e).split(" bytes")[0].rsplit(" ", 1)[1])
        assert size > fr.MAX_BODY and str(e).endswith(f"over {fr.MAX_BODY}")
        return
    assert len(body) <= fr.MAX_BODY
    got_name, got = fr.read_command(body)
    assert got_name == name and got == params


@given(st.lists(st.tuples(names, names, st.integers(0, 3)), max_size=8), st.integers(0, 2**32 - 1))
def test_hello_body_round_trip(points, boot_id: int) -> None:
    body = fr.hello_body(1, boot_id, b"\x01" * 8, "1.0.0", 2, 100, 3, points)
    assert fr.read_hello(body) == (1, boot_id, b"\x01" * 8, "1.0.0", 2, 100, 3, points)


@given(st.binary(max_size=60))
def test_a_garbled_body_raises_body_error_only(body: bytes) -> None:
    for read in (fr.read_hello, fr.read_readings, fr.read_ack, fr.read_command, fr.read_status):
        try:
            read(body)
        except fr.BodyError:
            pass


# -- the same source on MicroPython ---------------------------------------------------------

MPY_SCRIPT = """
import json, binascii, frames
job = json.loads(open('job.json').read())
out = []
for case in job:
    wire = binascii.unhexlify(case['wire'])
    d = frames.Deframer()
    got = []
    step = case['step']
    for i in range(0, len(wire), step):
        for f in d.feed(wire[i:i + step]):
            got.append([f.ftype, f.seq, binascii.hexlify(f.body).decode()])
    enc = [binascii.hexlify(frames.encode(t, s, binascii.unhexlify(b))).decode()
           for t, s, b in case['frames']]
    out.append({'got': got, 'counts': d.counts, 'noise': d.noise_bytes, 'enc': enc})
print(json.dumps(out))
"""


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.lists(frame_specs, max_size=3), st.binary(max_size=300),
                          st.integers(1, 40)), min_size=20, max_size=30))
def test_micropython_decodes_and_encodes_exactly_as_the_host(cases) -> None:
    """Host-encoded streams (frames with noise before them) decoded by the firmware's frames.py
    on MicroPython in chunks, and MicroPython's encoding compared with the host's."""
    job = []
    for specs, noise, step in cases:
        job.append({"wire": (noise + wire_of(specs)).hex(), "step": step,
                    "frames": [[t, s, b.hex()] for t, s, b in specs]})
    files = {"frames.py": (FIRMWARE_DIR / "frames.py").read_text(), "job.json": json.dumps(job)}
    results = json.loads(run_micropython(MPY_SCRIPT, files))
    for (specs, _noise, step), case, res in zip(cases, job, results, strict=True):
        d = fr.Deframer()
        wire = bytes.fromhex(case["wire"])
        host = []
        for i in range(0, len(wire), step):
            host += [[f.ftype, f.seq, bytes(f.body).hex()] for f in d.feed(wire[i:i + step])]
        assert res["got"] == host
        assert res["counts"] == d.counts and res["noise"] == d.noise_bytes
        assert res["enc"] == [fr.encode(t, s, b).hex() for t, s, b in specs]
