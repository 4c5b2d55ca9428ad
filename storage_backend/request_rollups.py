"""What the rollups tell the requests list: exact totals, and where "slowest first" starts.

Both read a handful of rollup documents (O(days)), so a requests page at 1M records costs
what it costs at 10k: the records themselves are read only for the page.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pymongo.database import Database

from storage_backend.histogram import DurationHistogram
from storage_backend.query_models import RequestFilter
from storage_backend.rollups import (
    LEVELS,
    MINUTE_ROLLUP_RETENTION,
    as_utc,
    bucket_start,
    covering_ranges,
    read_rollups,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Minute rollups older than their retention are gone (or were never written); an hour's
# margin keeps a window's oldest minutes clear of the expiry sweep.
_MINUTE_MARGIN = timedelta(hours=1)


def _edge_level(when: datetime) -> str | None:
    """The coarsest rollup level a window bound falls on the buckets of."""
    return next(
        (lvl for lvl in ("1d", "1h", "1m") if bucket_start(when, LEVELS[lvl]) == when), None
    )


def _finest_aligned(since: datetime, until: datetime, now: datetime) -> str | None:
    """The finest level `covering_ranges` needs for `[since, until)`, or None when a bound
    is not on a bucket, or needs minute rollups older than they are kept."""
    levels = []
    for edge in (since, until):
        level = _edge_level(edge)
        if level is None:
            return None
        if level == "1m" and edge < now - MINUTE_ROLLUP_RETENTION + _MINUTE_MARGIN:
            return None
        levels.append(level)
    return min(levels, key=lambda lvl: LEVELS[lvl])


def rollup_total(
    db: Database, project_id: str, flt: RequestFilter, *, now: datetime | None = None
) -> int | None:
    """The exact number of requests matching `flt`, from the rollups, when they count what
    it asks: endpoint, version, errors only, and a time range on rollup buckets (an open
    end, or bounds on whole days, hours, or minutes of the last two days). None otherwise
    (method, status class, duration bounds, unaligned times): the caller counts records."""
    if flt.method or flt.status_class or flt.min_duration is not None:
        return None
    if flt.max_duration is not None:
        return None
    now = now or datetime.now(timezone.utc)
    minute = LEVELS["1m"]
    since = as_utc(flt.since) if flt.since else _EPOCH
    until = as_utc(flt.until) if flt.until else bucket_start(now, minute) + minute
    if since >= until:
        return 0
    finest = _finest_aligned(since, until, now)
    if finest is None:
        return None
    total = 0
    for level, start, end in covering_ranges(since, until, finest):
        for row in read_rollups(
            db,
            project_id,
            level,
            start,
            end,
            endpoint=flt.endpoint,
            versions=None if flt.version is None else [flt.version],
            with_histogram=False,
        ):
            total += row.errors if flt.errors_only else row.count
    return total


def slowest_bound(db: Database, project_id: str, flt: RequestFilter, needed: int) -> float | None:
    """A duration above which about `needed` of the requests of the filter's endpoint and
    version (in its time range, rounded out to days) lie, from the daily rollups' duration
    histograms: a slowest-first page then reads about `needed` records whatever the
    traffic, where fixed steps (10 s, 2.5 s, ...) read thousands at a million records.
    None when the rollups know fewer than `needed` (read everything)."""
    day = LEVELS["1d"]
    since = as_utc(flt.since) if flt.since else _EPOCH
    until = as_utc(flt.until) if flt.until else datetime.now(timezone.utc)
    rows = read_rollups(
        db,
        project_id,
        "1d",
        bucket_start(since, day),
        bucket_start(until, day) + day,
        endpoint=flt.endpoint,
        versions=None if flt.version is None else [flt.version],
    )
    hist = DurationHistogram()
    for row in rows:
        hist.merge(row.hist)
    return hist.top_bound(needed)
