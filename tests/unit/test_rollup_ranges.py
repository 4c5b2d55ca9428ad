"""Which rollup buckets a window is read from (`rollups.covering_ranges`)."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone

import pytest

from storage_backend.rollups import LEVELS, bucket_start, covering_ranges

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


def _buckets(ranges: list[tuple[str, datetime, datetime]]) -> int:
    return sum((end - start) // LEVELS[level] for level, start, end in ranges)


def _assert_tiles(since: datetime, until: datetime, ranges) -> None:
    """The ranges are aligned to their level, do not overlap, and cover [since, until)."""
    spans = sorted((start, end) for _level, start, end in ranges)
    assert spans[0][0] == since and spans[-1][1] == until
    for (_a, end), (start, _b) in itertools.pairwise(spans):
        assert end == start
    for level, start, end in ranges:
        width = LEVELS[level]
        assert start < end
        assert bucket_start(start, width) == start and bucket_start(end, width) == end


def test_a_week_of_hours_reads_whole_days_and_the_edge_hours():
    since, until = T0 - timedelta(days=7), T0
    ranges = covering_ranges(since, until, "1h")
    _assert_tiles(since, until, ranges)
    assert ("1d", datetime(2026, 11, 20, tzinfo=timezone.utc), T0.replace(hour=0)) in ranges
    # 6 days + 15 hours before the first midnight + 9 after the last one, not 168 hours.
    assert _buckets(ranges) == 6 + 15 + 9


def test_a_window_shorter_than_a_day_stays_in_hours_and_minutes():
    since = T0.replace(hour=7, minute=13)
    until = T0.replace(hour=10, minute=3)
    ranges = covering_ranges(since, until, "1m")
    _assert_tiles(since, until, ranges)
    assert {level for level, _s, _e in ranges} == {"1h", "1m"}
    assert _buckets(ranges) == 2 + 47 + 3


def test_a_range_inside_one_coarser_bucket_uses_the_finest_level_only():
    since, until = T0, T0 + timedelta(hours=5)
    assert covering_ranges(since, until, "1h") == [("1h", since, until)]


@pytest.mark.parametrize("seed", range(20))
def test_random_aligned_windows_are_tiled_exactly(seed: int):
    rng = random.Random(seed)
    finest = rng.choice(list(LEVELS))
    width = LEVELS[finest]
    since = bucket_start(T0 - timedelta(minutes=rng.randrange(0, 60 * 24 * 40)), width)
    until = since + width * rng.randrange(1, 24 * 60 * 3 if finest == "1m" else 24 * 40)
    _assert_tiles(since, until, covering_ranges(since, until, finest))
