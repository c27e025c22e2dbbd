"""The layout-driven document codec: round trips, agreement with the lean codec, bad documents."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import VerifyError
from edge.wire import (
    Action,
    DocError,
    Heartbeat,
    Instruction,
    MessageType,
    Param,
    decode_aggregate,
    decode_doc,
    encode_aggregate,
    encode_doc,
    encode_heartbeat,
    encode_instruction,
    encode_metric_batch,
    verify,
)

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_u64 = st.integers(0, 2**64 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_f64 = st.floats(allow_nan=False)
_f32 = st.floats(width=32, allow_nan=False)

_series = st.fixed_dictionaries(
    {
        "agent_id": _text,
        "metric": _text,
        "labels": st.lists(st.fixed_dictionaries({"key": _text, "value": _text}), max_size=3),
        "count": _u64,
        "min": _f64,
        "max": _f64,
        "mean": _f64,
        "last": _f64,
        "p99": _f64,
    }
)
_rule = st.fixed_dictionaries(
    {
        "rule_id": _text,
        "instructions": _u64,
        "acks_ok": _u64,
        "acks_failed": _u64,
        "acks_rejected": _u64,
        "unacked": _u64,
        "sla_judged": _u64,
        "sla_misses": _u64,
    }
)
_latency = st.fixed_dictionaries(
    {
        "stage": _text,
        "count": _u64,
        "p50_us": _f64,
        "p90_us": _f64,
        "p99_us": _f64,
        "p999_us": _f64,
        "max_us": _f64,
    }
)
_health = st.fixed_dictionaries(
    {
        "cpu_pct": _f32,
        "mem_used_pct": _f32,
        "load1": _f32,
        "disk_free_bytes": _u64,
        "temp_c": _f32,
        "edged_rss_bytes": _u64,
        "edged_cpu_pct": _f32,
    }
)
aggregates = st.fixed_dictionaries(
    {
        "device_id": _text,
        "window_start_unix_ns": _i64,
        "window_end_unix_ns": _i64,
        "rules_version": _u64,
        "rules_hash": _text,
        "agents_active": st.integers(0, 2**32 - 1),
        "samples": _u64,
        "samples_summarised": _u64,
        "series": st.lists(_series, max_size=4),
        "series_omitted": st.integers(0, 2**32 - 1),
        "rules": st.lists(_rule, max_size=4),
        "latency": st.lists(_latency, max_size=3),
        "counters": st.lists(st.fixed_dictionaries({"name": _text, "delta": _u64}), max_size=3),
        "health": _health,
        "jitter_pct": _f64,
    }
)


@given(aggregates)
def test_aggregate_round_trips_through_a_verified_buffer(doc: dict[str, Any]) -> None:
    buf = encode_aggregate(doc)
    assert verify(buf) is MessageType.AGGREGATE
    assert decode_aggregate(buf) == doc


def test_missing_fields_take_schema_defaults_and_nan_survives() -> None:
    doc = decode_aggregate(encode_aggregate({"device_id": "b1", "health": {"temp_c": math.nan}}))
    assert doc["samples"] == 0 and doc["series"] == [] and doc["rules_hash"] is None
    assert math.isnan(doc["health"]["temp_c"]) and doc["health"]["cpu_pct"] == 0.0


def test_documents_agree_with_the_lean_hot_path_codec() -> None:
    samples = [(0, 0.5, 10), (3, -1.25, 11), (7, 1e300, -5)]
    mt, doc = decode_doc(encode_metric_batch(9, 4, 123, samples))
    assert mt is MessageType.METRIC_BATCH
    assert (doc["session"], doc["seq"], doc["t_send_ns"]) == (9, 4, 123)
    assert [(s["metric_id"], s["value"], s["t_ns"]) for s in doc["samples"]] == samples
    # and the other way: a struct vector written from a document reads back the same
    assert decode_doc(encode_doc("MetricBatch", doc))[1] == doc

    ins = Instruction(5, "r1", Action.THROTTLE, params=(Param("rate", 0.5),), priority=9)
    _, idoc = decode_doc(encode_instruction(ins))
    assert (idoc["instruction_id"], idoc["rule_id"], idoc["priority"]) == (5, "r1", 9)
    assert idoc["params"][0]["key"] == "rate" and idoc["params"][0]["number"] == 0.5
    assert decode_doc(encode_heartbeat(Heartbeat(1, 2, 3)))[1] == {
        "session": 1,
        "t_ns": 2,
        "seq": 3,
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"device_id": "b", "sampels": 1}, "no field(s) sampels in table Aggregate"),
        ({}, "Aggregate.device_id is required"),
        ({"device_id": 5}, "Aggregate.device_id: expected a string"),
        ({"device_id": "b", "samples": "many"}, "Aggregate.samples: 'many' is not a ulong"),
        ({"device_id": "b", "series": {}}, "Aggregate.series: expected a list"),
        (
            {"device_id": "b", "series": [{"agent_id": "a"}]},
            "Aggregate.series[0].metric is required",
        ),
        ({"device_id": "b", "health": []}, "Aggregate.health: expected an object"),
    ],
)
def test_a_document_that_does_not_fit_the_schema_says_where(
    doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(DocError, match=re.escape(message)):
        encode_aggregate(doc)


def test_decoding_refuses_malformed_and_other_buffers() -> None:
    buf = bytearray(
        encode_aggregate({"device_id": "b1", "series": [{"agent_id": "a", "metric": "m"}]})
    )
    with pytest.raises(VerifyError):
        decode_aggregate(bytes(buf[:-9]))
    with pytest.raises(VerifyError, match="expected an Aggregate, got HEARTBEAT"):
        decode_aggregate(encode_heartbeat(Heartbeat(1, 2, 3)))
    with pytest.raises(DocError, match="not a root type"):
        encode_doc("SeriesAgg", {})
