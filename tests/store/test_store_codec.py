"""Property tests for the store's key and JSON encoding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.store import _codec


def _strict(raw: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(raw, parse_constant=refuse)


_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary(max_size=8)
    | st.builds(object)
    | st.frozensets(st.integers(), max_size=3)
)
_keys = st.text() | st.integers() | st.tuples(st.integers()) | st.none() | st.booleans()
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _values, max_size=6))
def test_dumps_always_gives_strict_json(fields: dict[str, Any]) -> None:
    decoded = _strict(_codec.dumps(fields))
    assert isinstance(decoded, dict)
    assert set(decoded) == set(fields)


@given(st.dictionaries(st.text(), st.integers() | st.text() | st.booleans(), max_size=6))
def test_plain_json_values_round_trip(fields: dict[str, Any]) -> None:
    assert _strict(_codec.dumps(fields)) == fields


@given(st.integers(min_value=1, max_value=_codec.U64_MAX), st.dictionaries(
    st.text(), st.integers(), min_size=1, max_size=4))
def test_with_seq_puts_the_sequence_first(seq: int, fields: dict[str, Any]) -> None:
    fields = {k: v for k, v in fields.items() if k != "seq"} or {"x": 1}
    rec = _strict(_codec.with_seq(seq, _codec.dumps(fields)))
    assert list(rec)[0] == "seq" and rec == {"seq": seq, **fields}


@given(st.integers(min_value=0, max_value=_codec.U64_MAX),
       st.integers(min_value=0, max_value=_codec.U64_MAX))
def test_u64_keys_sort_like_the_numbers(a: int, b: int) -> None:
    assert _codec.from_u64(_codec.u64(a)) == a
    assert (_codec.u64(a) < _codec.u64(b)) == (a < b)


@pytest.mark.parametrize("n", [-1, 1 << 64])
def test_u64_range(n: int) -> None:
    with pytest.raises(ValueError):
        _codec.u64(n)


def test_loads_object_refuses_non_objects() -> None:
    with pytest.raises(ValueError):
        _codec.loads_object(b"[1]")
    with pytest.raises(ValueError):
        _codec.loads_object(b"{not json")
