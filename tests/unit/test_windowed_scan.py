"""The widening bounds of top-N reads (`storage_backend.windowed_scan`)."""

from __future__ import annotations

from storage_backend.windowed_scan import duration_bounds


def test_duration_bounds_start_at_the_given_first_bound_and_end_at_the_minimum():
    assert list(duration_bounds(None)) == [10.0, 2.5, 0.6, 0.15, 0.04, 0.01, 0.0025, None]
    assert list(duration_bounds(None, first=1.7)) == [1.7, 0.6, 0.15, 0.04, 0.01, 0.0025, None]
    assert list(duration_bounds(0.1, first=1.7)) == [1.7, 0.6, 0.15, 0.1]
    # A first bound under the filter's minimum adds nothing.
    assert list(duration_bounds(0.5, first=0.2)) == [10.0, 2.5, 0.6, 0.5]
