"""Trends and endpoint summaries, read from the rollups: cost O(buckets), not O(records)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta, timezone

from pymongo.database import Database

from storage_backend.histogram import DurationHistogram
from storage_backend.query_models import (
    TIME_RANGES,
    EndpointStats,
    EndpointSummary,
    TimeRange,
    TrendPoint,
    Trends,
)
from storage_backend.rollups import (
    LEVELS,
    RollupRow,
    as_utc,
    bucket_start,
    merged_histogram,
    read_rollups,
    read_window,
    stats_of,
)

# time_range -> (rollup level read, width of a point on the chart)
TREND_BUCKETS: dict[str, tuple[str, timedelta]] = {
    "1h": ("1m", timedelta(minutes=1)),
    "24h": ("1h", timedelta(hours=1)),
    "7d": ("1h", timedelta(hours=6)),
    "30d": ("1d", timedelta(days=1)),
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def resolve_window(
    time_range: TimeRange | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    default: TimeRange = "24h",
) -> tuple[datetime, datetime]:
    """`[since, until)` from explicit bounds or a named range ending now (naive = UTC)."""
    until = as_utc(until) if until else _now()
    since = as_utc(since) if since else until - TIME_RANGES[time_range or default]
    if since >= until:
        raise ValueError("since must be before until")
    return since, until


def _trend_window(
    time_range: TimeRange, until: datetime | None
) -> tuple[str, timedelta, datetime, datetime]:
    """(rollup level, point width, start, end) of a trend chart over `time_range`."""
    if time_range not in TREND_BUCKETS:
        raise ValueError(f"time_range must be one of {sorted(TREND_BUCKETS)}")
    level, step = TREND_BUCKETS[time_range]
    until = as_utc(until) if until else _now()
    # The last point is the bucket now falls in, so the chart ends with the live bucket.
    end = bucket_start(until, step) + step
    return level, step, end - TIME_RANGES[time_range], end


def _trend_of(
    project_id: str,
    time_range: TimeRange,
    step: timedelta,
    start: datetime,
    end: datetime,
    endpoint: str | None,
    rows: list[RollupRow],
) -> Trends:
    by_point: dict[datetime, list[RollupRow]] = defaultdict(list)
    for row in rows:
        by_point[bucket_start(row.bucket, step)].append(row)
    points = []
    # The overall histogram is the sum of the points': merging ~30 point histograms instead
    # of every row again halves the work on dense data.
    overall_hist = DurationHistogram()
    at = start
    while at < end:
        point_rows = by_point.get(at, [])
        point_hist = merged_histogram(point_rows)
        overall_hist.merge(point_hist)
        points.append(TrendPoint(bucket_start=at, stats=stats_of(point_rows, point_hist)))
        at += step
    return Trends(
        project_id=project_id,
        time_range=time_range,
        bucket_seconds=int(step.total_seconds()),
        since=start,
        until=end,
        endpoint=endpoint,
        points=points,
        overall=stats_of(
            [r for at in by_point for r in by_point[at] if start <= at < end], overall_hist
        ),
    )


def trends(
    db: Database,
    project_id: str,
    time_range: TimeRange = "24h",
    *,
    endpoint: str | None = None,
    until: datetime | None = None,
) -> Trends:
    """Count, error rate and p50/p95/p99 per bucket over the last `time_range` (1h: 1-minute
    points, 24h: hourly, 7d: 6-hourly, 30d: daily), for the project or one endpoint.
    Every bucket of the range is present, empty ones with count 0."""
    level, step, start, end = _trend_window(time_range, until)
    rows = read_rollups(
        db, project_id, level, bucket_start(start, LEVELS[level]), end, endpoint=endpoint
    )
    return _trend_of(project_id, time_range, step, start, end, endpoint, rows)


def endpoint_trends(
    db: Database,
    project_id: str,
    time_range: TimeRange = "24h",
    *,
    endpoints: Collection[str] | None = None,
    percentiles: bool = True,
    until: datetime | None = None,
) -> dict[str, Trends]:
    """`trends` of many endpoints (every endpoint with requests in the range, or those of
    `endpoints` that have some) from ONE read of the rollups, grouped here by endpoint and
    bucket: the cost of one query however many sparklines a page draws. With
    `percentiles=False` the histograms are not read (cheaper; p50/p95/p99 are None), which
    is enough for counts and error rates."""
    level, step, start, end = _trend_window(time_range, until)
    rows = read_rollups(
        db,
        project_id,
        level,
        bucket_start(start, LEVELS[level]),
        end,
        per_endpoint=True,
        with_histogram=percentiles,
    )
    wanted = None if endpoints is None else set(endpoints)
    by_endpoint: dict[str, list[RollupRow]] = defaultdict(list)
    for row in rows:
        name = row.endpoint or ""
        if wanted is None or name in wanted:
            by_endpoint[name].append(row)
    return {
        name: _trend_of(project_id, time_range, step, start, end, name, group)
        for name, group in by_endpoint.items()
    }


def endpoint_summary(
    db: Database,
    project_id: str,
    time_range: TimeRange | None = "24h",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | None = None,
) -> EndpointSummary:
    """Per endpoint over the window: count, error rate, p50/p95/p99 and its share of the
    project's total request time; largest total time first. Bounds are rounded out to the
    rollup level's buckets (minutes up to 6 h, hours up to 10 days, days beyond)."""
    since, until = resolve_window(time_range, since, until)
    rows, _width = read_window(
        db,
        project_id,
        since,
        until,
        per_endpoint=True,
        versions=None if version is None else [version],
    )
    by_endpoint: dict[str, list[RollupRow]] = defaultdict(list)
    for row in rows:
        by_endpoint[row.endpoint or ""].append(row)
    stats = {name: stats_of(group) for name, group in by_endpoint.items()}
    grand_total = sum(s.total_time for s in stats.values())
    endpoints = [
        EndpointStats(
            endpoint=name,
            stats=s,
            share_of_total_time=s.total_time / grand_total if grand_total else 0.0,
        )
        for name, s in stats.items()
    ]
    endpoints.sort(key=lambda e: e.stats.total_time, reverse=True)
    return EndpointSummary(project_id=project_id, since=since, until=until, endpoints=endpoints)
