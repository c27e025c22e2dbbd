"""MCU link frames: COBS framing, CRC-16/CCITT-FALSE, a 4-byte header and the message bodies.

ONE source for both ends of the serial link. It is written in the subset of Python that
MicroPython 1.27 and CPython 3.11 share (``struct`` only, no dataclasses, no typing at run
time), runs on the RP2040 as ``frames.py`` and on the host as ``firmware_bridge._mcu._frames``
(which imports this very file); tests run it on both interpreters.

Wire (every frame starts and ends with the 0x00 delimiter, so that a frame after line noise
or a half-sent frame always decodes)::

    +------+----------------------------------------+------+
    | 0x00 | COBS( frame )    1..255 bytes, no 0x00 | 0x00 |
    +------+----------------------------------------+------+

Frame (before COBS; 6..254 bytes)::

     0        1        2        3        4 ...              n-2      n-1
    +--------+--------+--------+--------+------------------+--------+--------+
    |version | type   | seq (u16, LE)   | body 0..248 bytes| CRC-16 (BE)     |
    +--------+--------+--------+--------+------------------+--------+--------+
    CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, xorout 0; check value of
    b"123456789" is 0x29B1) over bytes 0..n-3 (version, type, seq and body).

``version`` is 1. ``seq`` counts the frames of one sender, +1 per frame, wrapping at 65536. A
receiver acts only on a frame strictly newer than the last it accepted (serial-number
arithmetic, window 32767): a duplicate, replayed or stale frame is counted as ``seq`` and
dropped; a gap (frames lost to corruption) is counted as ``lost`` and the frame is taken. A
HELLO (MCU to host) or SYNC (host to MCU) starts a new session: the receiver takes its seq
as the new reference.

Bodies (strings are ``u8 length + UTF-8``; integers little-endian)::

    HELLO     0x01 MCU->host  the MCU's identity and points, at boot and when asked (SYNC)
      +------+---------+--------------+-------------+-------+---------+--------+-------+----
      |reason| boot_id | fw_hash      | fw_version  | reset | hb_ms   | missed | count | points
      |  u8  |   u32   | 8 bytes      | str         | u8    | u16     | u8     | u8    |
      +------+---------+--------------+-------------+-------+---------+--------+-------+----
      reason 0 boot, 1 asked; point = kind u8 | name str | unit str; kind 0 analog in,
      1 digital in, 2 digital out, 3 PWM out (duty 0..1)

    READINGS  0x02 MCU->host  one sample of every point
      +----------+-------+---------------------------+
      | t_ms u32 | count | (index u8, value f32) ... |
      +----------+-------+---------------------------+
      t_ms is the MCU's time.ticks_ms(); index is the point's place in HELLO; a point whose
      read failed is left out of the frame

    ACK       0x03 MCU->host  the answer to one COMMAND, sent once the outputs are driven
      +-----------+--------+----------+-------------+
      | cmd seq   | status | t_ms u32 | detail str  |
      |   u16     |  u8    |          |             |
      +-----------+--------+----------+-------------+
      status 0 done, 1 rejected (bad params, unknown command or point), 2 refused in safe state

    STATUS    0x04 MCU->host  state and counters, every status period and on each change
      +-------+--------+----------------------------+
      | state | missed | counters: u32 x N_COUNTERS |
      +-------+--------+----------------------------+
      state 0 boot-safe (no heartbeat yet), 1 run, 2 safe (heartbeats missed),
      3 latched safe (safe_state command), 4 fault (the loop is unhealthy)

    SYNC      0x10 host->MCU  empty: start a session; the MCU answers HELLO(reason 1)
    HEARTBEAT 0x11 host->MCU  empty: the control chain is alive
    COMMAND   0x12 host->MCU
      +----------+-------+---------------------------------------------+
      | name str | count | (key str, tag u8, value) ...                |
      +----------+-------+---------------------------------------------+
      tag 0 int (i32), 1 float (f32), 2 str, 3 bool (u8)
"""

import struct

VERSION = 1

T_HELLO = 0x01
T_READINGS = 0x02
T_ACK = 0x03
T_STATUS = 0x04
T_SYNC = 0x10
T_HEARTBEAT = 0x11
T_COMMAND = 0x12
TYPES = (T_HELLO, T_READINGS, T_ACK, T_STATUS, T_SYNC, T_HEARTBEAT, T_COMMAND)

HEADER = 4
CRC_LEN = 2
MAX_BODY = 248
MAX_FRAME = HEADER + MAX_BODY + CRC_LEN  # 254: COBS adds exactly one byte
MAX_ENCODED = MAX_FRAME + 1  # 255 bytes between two delimiters, at most

# why a frame was refused (Bad.kind), one counter each on both ends
BAD_COBS = "cobs_errors"
BAD_CRC = "crc_errors"
BAD_SHORT = "short_frames"
BAD_VERSION = "version_errors"
BAD_OVERSIZE = "oversize"

HELLO_BOOT = 0
HELLO_ASKED = 1

KIND_ANALOG_IN = 0
KIND_DIGITAL_IN = 1
KIND_DIGITAL_OUT = 2
KIND_PWM_OUT = 3
KIND_NAMES = ("analog_in", "digital_in", "digital_out", "pwm_out")

ACK_DONE = 0
ACK_REJECTED = 1
ACK_SAFE = 2

STATE_BOOT_SAFE = 0
STATE_RUN = 1
STATE_SAFE = 2
STATE_LATCHED = 3
STATE_FAULT = 4
STATE_NAMES = ("boot_safe", "run", "safe", "latched_safe", "fault")

# the MCU's counters, in the order STATUS carries them
COUNTERS = (
    "frames_ok",
    "cobs_errors",
    "crc_errors",
    "short_frames",
    "version_errors",
    "oversize",
    "seq_errors",
    "seq_lost",
    "bad_bodies",
    "unknown_types",
    "commands_done",
    "commands_rejected",
    "heartbeats",
    "safe_entries",
    "stage_errors",
    "loop_overruns",
    "read_errors",
)

TAG_INT = 0
TAG_FLOAT = 1
TAG_STR = 2
TAG_BOOL = 3


def _crc_table() -> list:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/CCITT-FALSE of ``data``."""
    crc = 0xFFFF
    t = _TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ t[((crc >> 8) ^ b) & 0xFF]
    return crc


def cobs_encode(data: bytes | bytearray) -> bytes:
    """COBS-encode ``data`` (any bytes): the result holds no 0x00 and is len(data)+1+len//254 long."""
    out = bytearray(b"\x00")
    code_at = 0
    code = 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = len(out)
                out.append(0)
                code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes | bytearray) -> bytes:
    """Undo cobs_encode; raises ValueError on a 0x00 inside or a code that runs past the end."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("0x00 inside a COBS block")
        end = i + code
        if end > n:
            raise ValueError("COBS code runs past the end")
        for j in range(i + 1, end):
            if data[j] == 0:
                raise ValueError("0x00 inside a COBS block")
        out.extend(data[i + 1 : end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


class Frame:
    """A frame that passed COBS, length, version and CRC checks."""

    def __init__(self, ftype: int, seq: int, body: bytes):
        self.ftype = ftype
        self.seq = seq
        self.body = body

    def __repr__(self) -> str:
        return f"Frame(type=0x{self.ftype:02x}, seq={self.seq}, body={len(self.body)} bytes)"


class Bad:
    """A refused frame: ``kind`` is one of the BAD_* counter names, ``size`` its bytes."""

    def __init__(self, kind: str, size: int):
        self.kind = kind
        self.size = size

    def __repr__(self) -> str:
        return f"Bad({self.kind}, {self.size} bytes)"


def encode(ftype: int, seq: int, body: bytes = b"") -> bytes:
    """The wire bytes of one frame, delimiters included; raises ValueError if body > MAX_BODY."""
    if len(body) > MAX_BODY:
        raise ValueError(f"frame body of {len(body)} bytes is over {MAX_BODY}")
    raw = bytearray(struct.pack("<BBH", VERSION, ftype, seq & 0xFFFF))
    raw.extend(body)
    raw.extend(struct.pack(">H", crc16(raw)))
    return b"\x00" + cobs_encode(raw) + b"\x00"


def parse(block: bytes | bytearray):  # -> Frame | Bad
    """Check one block (the bytes between two delimiters) and return a Frame or a Bad."""
    n = len(block)
    if n > MAX_ENCODED:
        return Bad(BAD_OVERSIZE, n)
    try:
        raw = cobs_decode(block)
    except ValueError:
        return Bad(BAD_COBS, n)
    if len(raw) < HEADER + CRC_LEN:
        return Bad(BAD_SHORT, n)
    if crc16(raw[:-2]) != (raw[-2] << 8 | raw[-1]):
        return Bad(BAD_CRC, n)
    if raw[0] != VERSION:
        return Bad(BAD_VERSION, n)
    return Frame(raw[1], raw[2] | raw[3] << 8, raw[HEADER:-2])


def decode(buf: bytes | bytearray, start: int = 0) -> tuple:
    """Take the next item from ``buf[start:]``: returns (consumed, item).

    (0, None)        need more bytes (no delimiter yet, and not over the size limit)
    (n, None)        n idle delimiters skipped
    (n, Frame)       a good frame; n counts its bytes and its closing delimiter
    (n, Bad)         a refused frame, n bytes dropped; ``Bad(oversize)`` when more than
                     MAX_ENCODED bytes came without a delimiter: n is MAX_ENCODED+1 and the
                     caller drops the rest up to the next delimiter (see Deframer)
    """
    n = len(buf)
    i = start
    while i < n and buf[i] == 0:
        i += 1
    if i > start:
        return i - start, None
    limit = min(n, start + MAX_ENCODED + 1)
    for j in range(start, limit):
        if buf[j] == 0:
            return j + 1 - start, parse(bytes(buf[start:j]))
    if n - start > MAX_ENCODED:
        return MAX_ENCODED + 1, Bad(BAD_OVERSIZE, MAX_ENCODED + 1)
    return 0, None


class Deframer:
    """Stream state around decode(): feed() bytes as they come, take frames and counts out.

    Keeps at most MAX_ENCODED bytes between calls; after an oversize block it drops everything
    up to the next delimiter (counted once in ``oversize``, its bytes in ``noise_bytes``).
    """

    def __init__(self):
        self.buf = bytearray()
        self.skipping = False
        self.counts = {BAD_COBS: 0, BAD_CRC: 0, BAD_SHORT: 0, BAD_VERSION: 0, BAD_OVERSIZE: 0}
        self.noise_bytes = 0

    def feed(self, data: bytes | bytearray) -> list:
        """Append ``data``; return the good Frames it completed, in order (bad ones counted)."""
        out = []
        buf = self.buf
        buf.extend(data)
        pos = 0
        n = len(buf)
        while pos < n:
            if self.skipping:
                k = _find_zero(buf, pos)
                if k < 0:
                    self.noise_bytes += n - pos
                    pos = n
                    break
                self.noise_bytes += k - pos
                pos = k
                self.skipping = False
            used, item = decode(buf, pos)
            if used == 0:
                break
            pos += used
            if item is None:
                continue
            if isinstance(item, Frame):
                out.append(item)
            else:
                self.counts[item.kind] += 1
                self.noise_bytes += item.size
                if item.kind == BAD_OVERSIZE:
                    self.skipping = True
        if pos:
            self.buf = buf[pos:]
        return out


def _find_zero(data: bytes | bytearray, start: int) -> int:
    for i in range(start, len(data)):
        if data[i] == 0:
            return i
    return -1


def seq_newer(seq: int, last: int) -> int:
    """How far ``seq`` is ahead of ``last`` (1..32767), or 0 if it is not newer."""
    d = (seq - last) & 0xFFFF
    return d if 0 < d < 0x8000 else 0


class Receiver:
    """The receiving end's sequence rule: act only on a frame strictly newer than the last one
    taken. ``last`` is -1 until a session starts (HELLO or SYNC: restart())."""

    def __init__(self):
        self.last = -1

    def restart(self, seq: int) -> None:
        self.last = seq

    def take(self, seq: int, counters: dict) -> bool:
        """Count the frame in ``counters`` (frames_ok, or seq_errors / seq_lost) and say
        whether to act on it."""
        ahead = seq_newer(seq, self.last) if self.last >= 0 else 0
        if not ahead:
            counters["seq_errors"] += 1
            return False
        counters["seq_lost"] += ahead - 1
        counters["frames_ok"] += 1
        self.last = seq
        return True


# -- bodies ----------------------------------------------------------------------------------


class BodyError(ValueError):
    """A frame whose body does not match its type (counted as bad_bodies)."""


def _put_str(out: bytearray, s: str) -> None:
    b = s.encode("utf-8")
    if len(b) > 255:
        raise ValueError(f"string of {len(b)} bytes is over 255")
    out.append(len(b))
    out.extend(b)


def _get_str(body: bytes, i: int) -> tuple:
    if i >= len(body):
        raise BodyError("string past the end")
    n = body[i]
    if i + 1 + n > len(body):
        raise BodyError("string past the end")
    try:
        s = bytes(body[i + 1 : i + 1 + n]).decode("utf-8")
    except UnicodeError:
        raise BodyError("string is not UTF-8") from None
    return s, i + 1 + n


def _need(body: bytes, i: int, n: int) -> None:
    if i + n > len(body):
        raise BodyError("body too short")


def hello_body(reason: int, boot_id: int, fw_hash: bytes, fw_version: str, reset_cause: int,
               heartbeat_ms: int, missed_max: int, points: list) -> bytes:
    """points: [(name, unit, kind), ...]"""
    if len(fw_hash) != 8:
        raise ValueError("fw_hash must be 8 bytes")
    out = bytearray(struct.pack("<BI", reason, boot_id & 0xFFFFFFFF))
    out.extend(fw_hash)
    _put_str(out, fw_version)
    out.extend(struct.pack("<BHBB", reset_cause, heartbeat_ms, missed_max, len(points)))
    for name, unit, kind in points:
        out.append(kind)
        _put_str(out, name)
        _put_str(out, unit)
    return bytes(out)


def read_hello(body: bytes) -> tuple:
    """(reason, boot_id, fw_hash, fw_version, reset_cause, heartbeat_ms, missed_max, points)"""
    _need(body, 0, 13)
    reason, boot_id = struct.unpack_from("<BI", body, 0)
    fw_hash = bytes(body[5:13])
    fw_version, i = _get_str(body, 13)
    _need(body, i, 5)
    reset_cause, hb_ms, missed_max, count = struct.unpack_from("<BHBB", body, i)
    i += 5
    points = []
    for _ in range(count):
        _need(body, i, 1)
        kind = body[i]
        if kind >= len(KIND_NAMES):
            raise BodyError(f"unknown point kind {kind}")
        name, i = _get_str(body, i + 1)
        unit, i = _get_str(body, i)
        points.append((name, unit, kind))
    if i != len(body):
        raise BodyError("trailing bytes")
    return reason, boot_id, fw_hash, fw_version, reset_cause, hb_ms, missed_max, points


def readings_body(t_ms: int, values: list) -> bytes:
    """values: [(index, value), ...]"""
    out = bytearray(struct.pack("<IB", t_ms & 0xFFFFFFFF, len(values)))
    for index, value in values:
        out.extend(struct.pack("<Bf", index, value))
    return bytes(out)


def read_readings(body: bytes) -> tuple:
    """(t_ms, [(index, value), ...])"""
    _need(body, 0, 5)
    t_ms, count = struct.unpack_from("<IB", body, 0)
    if len(body) != 5 + 5 * count:
        raise BodyError("readings length does not match its count")
    values = []
    for k in range(count):
        values.append(struct.unpack_from("<Bf", body, 5 + 5 * k))
    return t_ms, values


def ack_body(cmd_seq: int, status: int, t_ms: int, detail: str) -> bytes:
    out = bytearray(struct.pack("<HBI", cmd_seq & 0xFFFF, status, t_ms & 0xFFFFFFFF))
    _put_str(out, detail[:200])
    return bytes(out)


def read_ack(body: bytes) -> tuple:
    """(cmd_seq, status, t_ms, detail)"""
    _need(body, 0, 7)
    cmd_seq, status, t_ms = struct.unpack_from("<HBI", body, 0)
    detail, i = _get_str(body, 7)
    if i != len(body):
        raise BodyError("trailing bytes")
    return cmd_seq, status, t_ms, detail


def status_body(state: int, missed: int, counters: list) -> bytes:
    out = bytearray(struct.pack("<BB", state, min(missed, 255)))
    for c in counters:
        out.extend(struct.pack("<I", c & 0xFFFFFFFF))
    return bytes(out)


def read_status(body: bytes) -> tuple:
    """(state, missed, {counter name: value}); counters this side does not know are ignored."""
    _need(body, 0, 2)
    if (len(body) - 2) % 4:
        raise BodyError("status counters are not u32s")
    state, missed = body[0], body[1]
    counters = {}
    for k in range((len(body) - 2) // 4):
        if k < len(COUNTERS):
            counters[COUNTERS[k]] = struct.unpack_from("<I", body, 2 + 4 * k)[0]
    return state, missed, counters


def command_body(name: str, params: list) -> bytes:
    """params: [(key, value), ...] with int, float, str or bool values."""
    out = bytearray()
    _put_str(out, name)
    out.append(len(params))
    for key, value in params:
        _put_str(out, key)
        if isinstance(value, bool):
            out.append(TAG_BOOL)
            out.append(1 if value else 0)
        elif isinstance(value, int):
            if not -0x80000000 <= value <= 0x7FFFFFFF:
                raise ValueError(f"param {key}={value} does not fit int32")
            out.append(TAG_INT)
            out.extend(struct.pack("<i", value))
        elif isinstance(value, float):
            out.append(TAG_FLOAT)
            out.extend(struct.pack("<f", value))
        elif isinstance(value, str):
            out.append(TAG_STR)
            _put_str(out, value)
        else:
            raise ValueError(f"param {key} has a type a command cannot carry")
    if len(out) > MAX_BODY:
        raise ValueError(f"command body of {len(out)} bytes is over {MAX_BODY}")
    return bytes(out)


def read_command(body: bytes) -> tuple:
    """(name, [(key, value), ...])"""
    name, i = _get_str(body, 0)
    _need(body, i, 1)
    count = body[i]
    i += 1
    params = []
    for _ in range(count):
        key, i = _get_str(body, i)
        _need(body, i, 1)
        tag = body[i]
        i += 1
        if tag == TAG_INT:
            _need(body, i, 4)
            value = struct.unpack_from("<i", body, i)[0]
            i += 4
        elif tag == TAG_FLOAT:
            _need(body, i, 4)
            value = struct.unpack_from("<f", body, i)[0]
            i += 4
        elif tag == TAG_STR:
            value, i = _get_str(body, i)
        elif tag == TAG_BOOL:
            _need(body, i, 1)
            value = body[i] != 0
            i += 1
        else:
            raise BodyError(f"unknown param tag {tag}")
        params.append((key, value))
    if i != len(body):
        raise BodyError("trailing bytes")
    return name, params
