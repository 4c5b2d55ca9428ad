"""Top-N reads ("newest first", "slowest first") whose cost follows N, not the collection.

A server that sorts in memory after an index scan (SecantusDB does, even when the index is
in sort order) pays for every document the scan matches. So these reads ask for a narrow
range of the sort key first (the last minute; durations over 10 s) and widen it
geometrically until the page is full or the whole range was read: the cost is that of the
documents in the final window, about the page size times the widening factor at a steady
rate. On MongoDB, which walks the index in order, the same queries are as cheap or cheaper.
No `hint`: the range on the sort key leads both planners to the right index, and on
SecantusDB 0.7 a hinted find walked the whole index (~1 s at 3k records, measured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection

_FIRST_TIME_WINDOW = timedelta(minutes=1)
_TIME_GROWTH = 4
_MAX_TIME_WINDOWS = 12  # 1 min * 4**11 is ~8 years; after that, everything
_DURATION_BOUNDS = (10.0, 2.5, 0.6, 0.15, 0.04, 0.01, 0.0025)


def time_bounds(until: datetime, since: datetime | None) -> Iterator[datetime | None]:
    """Lower bounds of widening windows ending at `until`; `since` (or None: no bound) last."""
    window = _FIRST_TIME_WINDOW
    for _ in range(_MAX_TIME_WINDOWS):
        bound = until - window
        if since is not None and bound <= since:
            break
        yield bound
        window *= _TIME_GROWTH
    yield since


def duration_bounds(minimum: float | None, first: float | None = None) -> Iterator[float | None]:
    """Lower duration bounds, slowest first: `first` (a bound the caller expects to hold
    enough rows, e.g. from the rollups' histograms), the fixed steps below it, and
    `minimum` (or None: no bound) last."""
    if first is not None and minimum is not None and first <= minimum:
        first = None  # the filter's own minimum is narrower
    if first is not None:
        yield first
    for bound in _DURATION_BOUNDS:
        if first is not None and bound >= first:
            continue
        if minimum is not None and bound <= minimum:
            break
        yield bound
    yield minimum


def top_descending(
    col: Collection,
    query: dict[str, Any],
    field: str,
    bounds: Iterator[Any],
    *,
    needed: int,
    projection: dict[str, Any] | None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The first `needed` documents matching `query` (and `keep`, a filter applied here) by
    `field` descending, reading the widening ranges `field >= bound` until enough are found
    (a None bound reads all). Also returns the query of the last window read."""
    docs: list[dict[str, Any]] = []
    windowed = dict(query)
    user_range = query.get(field) if isinstance(query.get(field), dict) else {}
    for bound in bounds:
        windowed = dict(query)
        if bound is not None:
            low = user_range.get("$gte")
            windowed[field] = {**user_range, "$gte": bound if low is None else max(bound, low)}
        cursor = col.find(windowed, projection).sort(field, DESCENDING)
        if keep is None:
            docs = list(cursor.limit(needed))
        else:
            docs = [d for d in cursor if keep(d)][:needed]
        if len(docs) >= needed:
            break
    return docs, windowed
