"""Keys and values of the store, as pure functions on bytes.

Keys, per named database::

    meta         ASCII name: b"schema_version", b"rules.active", b"rules.lkg",
                 b"audit.last_seq"
    rule_tables  +-------------------------------+
    audit        | u64, big-endian, 8 bytes      |   version / sequence (dense, from 1) /
    stats        +-------------------------------+   wall-clock ms
    agents       agent id, UTF-8, 1..511 bytes (LMDB's key limit)

Big-endian keys make LMDB's byte order the numeric order, so "oldest" is the first key and
"latest" the last one.

Values: ``meta`` holds u64 big-endian integers, ``rule_tables`` the blob exactly as given,
everything else a UTF-8 JSON object. An audit value starts with its own sequence::

    {"seq":17,"wall_ms":1700000000000,"mono_ns":123456789,"kind":"instruction",...fields}

The sequence is only known inside the write transaction, so the rest of the object is encoded
beforehand (off the transaction) and the sequence is spliced in front with :func:`with_seq`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

U64_MAX = (1 << 64) - 1

_U64 = struct.Struct(">Q")

# JSON nesting deeper than this is flattened to text: it bounds the fallback encoder's
# recursion (and a self-referencing container would otherwise never end).
_MAX_DEPTH = 32


def u64(n: int) -> bytes:
    """``n`` as an 8-byte big-endian key. Raises ValueError outside 0..2**64-1."""
    if not 0 <= n <= U64_MAX:
        raise ValueError(f"{n} is not an unsigned 64-bit integer (0..{U64_MAX})")
    return _U64.pack(n)


def from_u64(b: bytes | memoryview) -> int:
    """Inverse of :func:`u64`. Raises ValueError unless ``b`` is exactly 8 bytes."""
    if len(b) != 8:
        raise ValueError(f"expected an 8-byte key, got {len(b)} bytes")
    return int(_U64.unpack(b)[0])


def dumps(obj: object) -> bytes:
    """Compact JSON for ``obj``; never raises.

    Values JSON cannot carry become text (``default=str``). What even that cannot encode
    (non-finite floats, tuple keys, self-references, a ``__str__`` that raises, nesting past
    32 levels) goes through a sanitising copy instead, so the result is always strict JSON
    (no ``NaN``) that any parser upstream accepts.
    """
    try:
        return json.dumps(obj, default=str, allow_nan=False, separators=(",", ":")).encode()
    except Exception:  # noqa: BLE001 - bad input must never take the writer down
        return json.dumps(_sanitise(obj, 0), allow_nan=False, separators=(",", ":")).encode()


def loads_object(b: bytes | memoryview) -> dict[str, Any]:
    """Decode a JSON object. Raises ValueError when ``b`` is not one."""
    obj = json.loads(bytes(b))
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def with_seq(seq: int, body: bytes) -> bytes:
    """Put ``"seq":N`` first into ``body``, an encoded JSON object with at least one member."""
    return b'{"seq":%d,%s' % (seq, body[1:])


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:  # noqa: BLE001
        try:
            return repr(obj)
        except Exception:  # noqa: BLE001
            return f"<unprintable {type(obj).__name__}>"


def _sanitise(obj: object, depth: int) -> object:
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _safe_str(obj)
    if depth >= _MAX_DEPTH:
        return _safe_str(obj)
    if isinstance(obj, Mapping):
        out: dict[str, object] = {}
        try:
            items = list(obj.items())
        except Exception:  # noqa: BLE001 - e.g. mutated by another thread while we look
            return _safe_str(obj)
        for k, v in items:
            key = k if isinstance(k, str) else _safe_str(k)
            out[key] = _sanitise(v, depth + 1)
        return out
    if isinstance(obj, list | tuple):
        return [_sanitise(v, depth + 1) for v in list(obj)]
    return _safe_str(obj)
