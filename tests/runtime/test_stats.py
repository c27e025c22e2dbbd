"""The fast bucket walk must agree with hdrh's own (slow) percentile and mean."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.runtime._stats import _PCTS, _summary, jitter_pct


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 10_000_000_000), min_size=1, max_size=300))
def test_summary_matches_hdrh(values: list[int]) -> None:
    h = HdrHistogram(1, 10_000_000_000, 3)
    for v in values:
        h.record_value(v)
    s = _summary(h)
    assert s["count"] == len(values)
    for name, pct in _PCTS:
        assert s[name] == h.get_value_at_percentile(pct) / 1000.0, name
    assert abs(s["mean"] - h.get_mean_value() / 1000.0) <= 1e-9 * max(1.0, s["mean"])
    assert s["max"] == h.get_max_value() / 1000.0


def test_jitter_is_the_seeds_formula() -> None:
    h = HdrHistogram(1, 10_000_000_000, 3)
    for v in (100, 100, 200, 200):  # mean 150, mean absolute deviation 50
        h.record_value(v)
    assert jitter_pct(h) == 50 / 150 * 100
    one = HdrHistogram(1, 10_000_000_000, 3)
    one.record_value(123_456)
    assert jitter_pct(one) == 0.0
    assert jitter_pct(HdrHistogram(1, 10_000_000_000, 3)) is None


def test_share_at_or_below_counts_the_buckets_at_or_under_the_bound() -> None:
    from hdrh.histogram import HdrHistogram

    from edge.runtime._stats import share_at_or_below

    h = HdrHistogram(1, 10_000_000_000, 3)
    assert share_at_or_below(h, 1_000_000) is None
    for ns in (100_000, 900_000, 1_000_000, 1_200_000):
        h.record_value(ns)
    assert share_at_or_below(h, 1_000_000) == 0.75
    assert share_at_or_below(h, 99_000) == 0.0
