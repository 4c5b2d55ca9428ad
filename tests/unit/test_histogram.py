"""The mergeable duration histogram: relative error bound, merging, stored form."""

from __future__ import annotations

import random

import pytest

from storage_backend.histogram import ALPHA, DurationHistogram, bucket_value, exact_quantile


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_percentiles_are_within_alpha_of_exact(sigma: float):
    rng = random.Random(7)
    values = [0.05 * rng.lognormvariate(0, sigma) for _ in range(20_000)]
    hist = DurationHistogram.of(values)
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        exact = exact_quantile(values, q)
        assert exact is not None
        assert abs(hist.quantile(q) - exact) / exact <= ALPHA + 1e-9, q


def test_merged_histograms_equal_one_histogram_of_all_values():
    rng = random.Random(3)
    parts = [[rng.uniform(0.001, 5) for _ in range(1000)] for _ in range(10)]
    merged = DurationHistogram()
    for part in parts:
        merged.merge(DurationHistogram.from_document(DurationHistogram.of(part).to_document()))
    whole = DurationHistogram.of(v for part in parts for v in part)
    assert merged.counts == whole.counts
    assert merged.total == 10_000


def test_empty_histogram_has_no_percentiles_and_zero_durations_are_counted():
    assert DurationHistogram().quantile(0.5) is None
    hist = DurationHistogram.of([0.0, 0.0, 1.0])
    assert hist.total == 3
    assert hist.quantile(0.5) == pytest.approx(1e-6, rel=ALPHA)


@pytest.mark.parametrize("counts", [{}, {-300: 1}, {5: 3, 9: 1, -2: 7}, {0: 2**33, 4: 1}])
def test_packed_form_round_trips_and_merges(counts: dict[int, int]):
    packed = DurationHistogram(counts).to_packed()
    back = DurationHistogram({1: 1})
    back.merge_packed(packed)
    expected = dict(counts)
    expected[1] = expected.get(1, 0) + 1
    assert back.counts == expected
    assert back.total == sum(expected.values())


def test_a_value_that_is_not_a_packed_histogram_is_refused():
    for bad in (b"", b"\x07\x00\x00\x00\x00", b"\x01\x00\x00\x00\x00\x01\x02"):
        with pytest.raises(ValueError):
            DurationHistogram().merge_packed(bad)


def test_top_bound_keeps_at_least_the_n_largest_values_and_little_else():
    rng = random.Random(5)
    values = [0.2 * rng.lognormvariate(0, 0.8) for _ in range(50_000)]
    hist = DurationHistogram.of(values)
    for n in (1, 20, 200, 5000):
        bound = hist.top_bound(n)
        above = sum(1 for v in values if v >= bound)
        assert n <= above <= n * 1.1 + 5, (n, above)
    assert hist.top_bound(len(values) + 1) is None
    assert DurationHistogram().top_bound(1) is None


def test_quantiles_in_one_pass_are_the_nearest_rank_buckets():
    rng = random.Random(11)
    hist = DurationHistogram.of(0.1 * rng.lognormvariate(0, 1.0) for _ in range(5000))
    expanded = [index for index in sorted(hist.counts) for _ in range(hist.counts[index])]
    qs = (0.99, 0.5, 0.0, 1.0, 0.95)
    expected = [bucket_value(exact_quantile(expanded, q)) for q in qs]
    assert hist.quantiles(qs) == expected
    assert [hist.quantile(q) for q in qs] == expected
    assert DurationHistogram().quantiles((0.5, 0.9)) == [None, None]
