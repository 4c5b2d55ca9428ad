"""The mergeable duration histogram: relative error bound, merging, stored form."""

from __future__ import annotations

import random

import pytest

from storage_backend.histogram import ALPHA, DurationHistogram, exact_quantile


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
