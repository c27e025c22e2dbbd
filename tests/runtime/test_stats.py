"""The fast bucket walk must agree with hdrh's own (slow) percentile and mean."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.runtime._stats import (
    _PCTS,
    INTERVAL_WORD,
    STAGES,
    TOTAL_WORD,
    StatsBook,
    StatsView,
    _summary,
    jitter_pct,
)


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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STAGES), st.integers(1, 10_000_000_000)),
                min_size=1, max_size=200))
def test_a_4_byte_interval_merges_into_the_8_byte_total_exactly(
    samples: list[tuple[str, int]],
) -> None:
    small, wide, total = StatsBook(), StatsBook(TOTAL_WORD), StatsBook(TOTAL_WORD)
    assert small.hists["e2e"].word_size == INTERVAL_WORD < TOTAL_WORD
    for stage, ns in samples:
        small._rec(stage, ns)
        wide._rec(stage, ns)
    reference = StatsBook(TOTAL_WORD)
    reference.merge(wide)  # hdrh's own in-place add
    total.merge(small)  # the non-empty buckets, re-recorded
    for stage in STAGES:
        assert _summary(total.hists[stage]) == _summary(reference.hists[stage]), stage


def test_the_view_keeps_its_cumulative_book_in_8_byte_counters() -> None:
    installed: list[StatsBook] = []

    def swap(fresh: StatsBook) -> StatsBook:
        installed.append(fresh)
        return StatsBook()

    view = StatsView(swap)
    view.refresh()
    assert installed[0].hists["e2e"].word_size == INTERVAL_WORD
    assert view._total.hists["e2e"].word_size == TOTAL_WORD
    view.reset()
    assert view._total.hists["e2e"].word_size == TOTAL_WORD


def test_the_window_book_keeps_2_digits_and_agrees_with_the_total_within_1_pct() -> None:
    from edge.runtime._stats import StatsBook, StatsView, _summary

    books: list[StatsBook] = []

    def swap(fresh: StatsBook) -> StatsBook | None:
        return books.pop() if books else None

    view = StatsView(swap, windowed=True)
    interval = StatsBook()
    for v in range(1, 20_000):
        interval.hists["e2e"].record_value(v * 97)
    books.append(interval)
    window = view.take_window()
    w, t = window.hists["e2e"], view._total.hists["e2e"]
    assert w.get_total_count() == t.get_total_count() == 19_999
    assert w.counts_len * 6 < t.counts_len  # a small fraction of the counters
    ws, ts = _summary(w), _summary(t)
    for key in ("p50", "p90", "p99", "p999", "max"):
        assert abs(ws[key] - ts[key]) <= 0.01 * ts[key], key
    assert view.take_window().hists["e2e"].get_total_count() == 0  # a new window


def test_a_dropped_book_is_freed_without_the_cyclic_gc() -> None:
    """hdrh's histogram and its encoder point at each other; a book that needs the cyclic GC
    to be freed piles up in an edged that collects generation 2 once a minute (~800 KB per
    stats refresh). Every refresh and window must leave nothing for the collector."""
    import gc

    books: list[StatsBook] = [StatsBook()]

    def swap(fresh: StatsBook) -> StatsBook:
        old, books[0] = books[0], fresh
        return old

    view = StatsView(swap, windowed=True)
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            books[0].record_ack("r", 0, 10**6, 1, 2, 3, 4, 5, 6, 7, 8, False)
            view.refresh()
            view.snapshot()
        book = view.take_window()
        assert book.hists["e2e"].get_total_count() == 20
        del book
        view.reset()
        assert gc.collect() == 0, "stats books were left for the cyclic GC"
    finally:
        gc.enable()
    assert view.snapshot(refresh=False)["e2e_us"]["count"] == 0  # reset, still working
