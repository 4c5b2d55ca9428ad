"""Rollups of performance records, maintained on ingest, so dashboards read O(buckets).

One `performance_rollups` document per (project, level, time bucket, endpoint, version):
count, errors, summed and max duration, and a `DurationHistogram` (`hist.<bucket>: count`).
Levels are 1-minute, 1-hour and 1-day buckets; each record also counts towards a
project-wide document (`endpoint: None`) per version, so a project's trend reads one
document per bucket and version, however many endpoints it has.

Writes are `UpdateOne(upsert=True)` with `$inc`/`$max`/`$push` only: commutative, so any
number of receivers update the same documents without coordination. A write's histogram is
one packed binary value pushed onto `hdelta` (one update path: the embedded server checks
every pair of an update's paths and applies each, so `$inc` on one `hist.<bucket>` field per
bucket cost it ~15 ms per upsert at ~150 buckets). Reads, and writes that find many deltas,
fold `hist`, `hpack` and `hdelta` into one `hpack` (see `pack_histograms`) under a guard that
keeps this safe; a document's histogram is the sum of its `hist` fields (the ingest form of
older versions), its `hpack` and its `hdelta` values. `record_rollups` must see each
stored record exactly once; the store calls it with the records its insert actually wrote
(duplicates of a retried export are skipped, so they are not counted twice).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import Binary
from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import PyMongoError

from storage_backend.errors import translate_errors
from storage_backend.histogram import DurationHistogram, bucket_of
from storage_backend.query_models import LatencyStats
from storage_backend.schema import ROLLUPS

logger = logging.getLogger(__name__)

LEVELS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
# Minute buckets serve only short ranges (<= 6 h); keeping them two days bounds their count.
MINUTE_ROLLUP_RETENTION = timedelta(days=2)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def as_utc(when: datetime) -> datetime:
    """Naive datetimes (from a store without tz_aware, or a caller) are UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def bucket_start(when: datetime, width: timedelta) -> datetime:
    """The start of the bucket of `width` containing `when` (aligned to the Unix epoch)."""
    when = as_utc(when)
    step = int(width.total_seconds())
    seconds = int((when - _EPOCH).total_seconds())
    return _EPOCH + timedelta(seconds=seconds - seconds % step)


def level_for(span: timedelta) -> str:
    """The coarsest level that still gives a useful number of buckets over `span`."""
    if span <= timedelta(hours=6):
        return "1m"
    if span <= timedelta(days=10):
        return "1h"
    return "1d"


@dataclass(slots=True)
class _Accumulator:
    count: int = 0
    errors: int = 0
    duration_sum: float = 0.0
    duration_max: float = 0.0
    expire_at: datetime | None = None
    hist: dict[int, int] = field(default_factory=dict)


def _rollup_id(
    project_id: str, level: str, start: datetime, endpoint: str | None, version: str
) -> str:
    raw = "\x1f".join([project_id, level, start.isoformat(), endpoint or "\x00", version])
    return hashlib.sha1(raw.encode()).hexdigest()


def rollup_changes(
    records: Iterable[dict[str, Any]], *, now: datetime | None = None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The upserts that count `records` (performance_records documents) into the rollups,
    as (filter, update document) pairs: `{"_id": ...}` and its `$setOnInsert`/`$inc`/
    `$max`/`$push`, combined per target document so a batch costs one write per document it
    touches. Records older than the minute rollups' retention skip that level (it would
    expire)."""
    minute_horizon = (now or datetime.now(timezone.utc)) - MINUTE_ROLLUP_RETENTION
    groups: dict[tuple[str, str, datetime, str | None, str], _Accumulator] = {}
    for record in records:
        duration = float((record.get("performance_metrics") or {}).get("total_duration") or 0.0)
        version = (record.get("version_info") or {}).get("app_version") or ""
        hist_key = bucket_of(duration)
        expire_at = record.get("expire_at")
        for level, width in LEVELS.items():
            if level == "1m" and as_utc(record["timestamp"]) < minute_horizon:
                continue
            start = bucket_start(record["timestamp"], width)
            level_expiry = (
                start + width + MINUTE_ROLLUP_RETENTION
                if level == "1m"
                else (expire_at + width if expire_at else None)
            )
            for endpoint in (record["endpoint"], None):
                key = (record["project_id"], level, start, endpoint, version)
                acc = groups.get(key)
                if acc is None:
                    acc = groups[key] = _Accumulator()
                acc.count += 1
                acc.errors += 1 if record.get("is_error") else 0
                acc.duration_sum += duration
                acc.duration_max = max(acc.duration_max, duration)
                acc.hist[hist_key] = acc.hist.get(hist_key, 0) + 1
                if level_expiry and (acc.expire_at is None or level_expiry > acc.expire_at):
                    acc.expire_at = level_expiry
    updates: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for (project_id, level, start, endpoint, version), acc in groups.items():
        inc: dict[str, Any] = {
            "count": acc.count,
            "errors": acc.errors,
            "duration_sum": acc.duration_sum,
            "hdelta_n": 1,
        }
        maxima: dict[str, Any] = {"duration_max": acc.duration_max}
        if acc.expire_at is not None:
            maxima["expire_at"] = acc.expire_at
        updates.append(
            (
                {"_id": _rollup_id(project_id, level, start, endpoint, version)},
                {
                    "$setOnInsert": {
                        "project_id": project_id,
                        "level": level,
                        "bucket": start,
                        "endpoint": endpoint,
                        "version": version,
                    },
                    "$inc": inc,
                    "$max": maxima,
                    "$push": {"hdelta": Binary(DurationHistogram(acc.hist).to_packed())},
                },
            )
        )
    return updates


def record_rollups(db: Database, records: Sequence[dict[str, Any]]) -> None:
    """Count newly stored performance records into the rollups (one unordered bulk write),
    then fold the histograms of the documents that have gathered many deltas."""
    changes = rollup_changes(records)
    if changes:
        with translate_errors():
            db[ROLLUPS].bulk_write(
                [UpdateOne(key, change, upsert=True) for key, change in changes], ordered=False
            )
        fold_deltas(db, [key["_id"] for key, _ in changes])


FOLD_AFTER_DELTAS = 16
"""A document written this many times since its histogram was last packed gets packed by
the next write that touches it, so a document nobody reads stays small (one ~1 KB delta
per write otherwise: a day bucket of a busy receiver would gather tens of thousands)."""


def fold_deltas(db: Database, ids: Sequence[str]) -> None:
    """Pack the histograms of those of `ids` holding `FOLD_AFTER_DELTAS` deltas or more
    (best effort and guarded, as `pack_histograms`). Costs one `_id` read of a small field;
    the few documents due are read whole."""
    if not ids:
        return
    try:
        counted = db[ROLLUPS].find({"_id": {"$in": list(ids)}}, {"hdelta_n": 1})
        due = [d["_id"] for d in counted if d.get("hdelta_n", 0) >= FOLD_AFTER_DELTAS]
        if not due:
            return
        docs = list(db[ROLLUPS].find({"_id": {"$in": due}}, _HISTOGRAM_FIELDS))
    except PyMongoError as exc:
        logger.info("reading %d rollups to fold their histograms failed: %s", len(ids), exc)
        return
    _write_packed(db, [(doc, histogram_of(doc)) for doc in docs])


@dataclass(slots=True)
class RollupRow:
    """One rollup document as read back."""

    bucket: datetime
    endpoint: str | None
    version: str
    count: int
    errors: int
    duration_sum: float
    duration_max: float
    hist: DurationHistogram
    width: timedelta
    """The width of the row's bucket (its level)."""


def read_rollups(
    db: Database,
    project_id: str,
    level: str,
    since: datetime,
    until: datetime,
    *,
    endpoint: str | None = None,
    per_endpoint: bool = False,
    versions: Sequence[str] | None = None,
    with_histogram: bool = True,
) -> list[RollupRow]:
    """Rollup rows of a project at `level` with `since <= bucket < until`: the project-wide
    rows (default), one endpoint's rows (`endpoint`), or every endpoint's (`per_endpoint`).
    `with_histogram=False` leaves the histograms on the server (rows get an empty one):
    they are most of a document's size and decoding. Histograms read in their ingest form
    are packed on the way (`pack_histograms`), so the next read of them is cheaper."""
    # Only index fields go to the server: the embedded server scans the whole collection
    # for a range on `endpoint` or a predicate on `version` (measured with explain(); see
    # docs/performance.md), so every endpoint's rows come from the (project, level, bucket)
    # index, and the project-wide rows and other versions are dropped here.
    query: dict[str, Any] = {
        "project_id": project_id,
        "level": level,
        "bucket": {"$gte": since, "$lt": until},
    }
    if endpoint is not None:
        query["endpoint"] = endpoint
    elif not per_endpoint:
        query["endpoint"] = None
    with translate_errors():
        docs = list(db[ROLLUPS].find(query, _projection(with_histogram)))
    if per_endpoint and endpoint is None:
        docs = [d for d in docs if d.get("endpoint") is not None]
    if versions is not None:
        wanted = set(versions)
        docs = [d for d in docs if d.get("version", "") in wanted]
    rows = [
        RollupRow(
            bucket=d["bucket"],
            endpoint=d.get("endpoint"),
            version=d.get("version", ""),
            count=int(d.get("count", 0)),
            errors=int(d.get("errors", 0)),
            duration_sum=float(d.get("duration_sum", 0.0)),
            duration_max=float(d.get("duration_max", 0.0)),
            hist=histogram_of(d),
            width=LEVELS[level],
        )
        for d in docs
    ]
    if with_histogram:
        pack_histograms(db, docs, rows)
    return rows


_FIELDS = ("bucket", "endpoint", "version", "count", "errors", "duration_sum", "duration_max")


_HISTOGRAM_FIELDS = {"count": 1, "hist": 1, "hpack": 1, "hdelta": 1}


def _projection(with_histogram: bool) -> dict[str, int]:
    """Only the fields a `RollupRow` holds (an inclusion projection; `_id` for packing)."""
    fields = {name: 1 for name in _FIELDS}
    if with_histogram:
        fields.update(_HISTOGRAM_FIELDS)
    return fields


PACK_MIN_BUCKETS = 24
"""A histogram read with at least this many buckets in the `hist` form gets packed."""
PACK_MIN_DELTAS = 2
"""A histogram read with at least this many `hdelta` values gets packed."""


def histogram_of(doc: dict[str, Any]) -> DurationHistogram:
    """A rollup document's histogram: its `hist` fields plus its `hpack` and `hdelta`s."""
    hist = DurationHistogram.from_document(doc.get("hist"))
    for packed in [doc.get("hpack"), *(doc.get("hdelta") or ())]:
        if packed:
            try:
                hist.merge_packed(packed)
            except ValueError:
                logger.warning("rollup %s: unreadable packed histogram ignored", doc.get("_id"))
    return hist


def _packing_due(doc: dict[str, Any]) -> bool:
    return (
        len(doc.get("hist") or ()) >= PACK_MIN_BUCKETS
        or len(doc.get("hdelta") or ()) >= PACK_MIN_DELTAS
    )


def pack_histograms(
    db: Database, docs: Sequence[dict[str, Any]], rows: Sequence[RollupRow]
) -> None:
    """Rewrite the histograms of `docs` (just read, as `rows`) that are spread over many
    fields or values (`hist.<bucket>` fields of older versions, `hdelta` values) as one
    packed binary field (`hpack`).

    Why: a server and a driver pay per field and per value, and a dense rollup's histogram
    has hundreds of buckets (measured on the embedded server: 300 documents of 400 fields
    read ~5x slower than the same documents packed), so without this a dashboard's cost
    grows with the traffic per bucket instead of staying O(buckets). Ingest keeps writing
    commutative updates (a later write pushes an `hdelta` beside `hpack`; reads merge
    them). Each rewrite applies only if the document's `count` is still the one read: an
    ingest `$inc` in between makes it a no-op, so nothing counted is ever lost. Best effort:
    a failure (a read-only user, a store going away) is logged and the histograms stay as
    they were."""
    _write_packed(
        db, [(doc, row.hist) for doc, row in zip(docs, rows, strict=True) if _packing_due(doc)]
    )


def _write_packed(db: Database, packed: Sequence[tuple[dict[str, Any], DurationHistogram]]) -> None:
    """`$set` each document's whole histogram as `hpack`, guarded by its `count` as read."""
    updates = [
        UpdateOne(
            {"_id": doc["_id"], "count": doc.get("count", 0)},
            {
                "$set": {"hpack": Binary(hist.to_packed())},
                "$unset": {"hist": "", "hdelta": "", "hdelta_n": ""},
            },
        )
        for doc, hist in packed
    ]
    if not updates:
        return
    try:
        db[ROLLUPS].bulk_write(updates, ordered=False)
    except PyMongoError as exc:
        logger.info("packing %d rollup histograms failed: %s", len(updates), exc)


def covering_ranges(
    since: datetime, until: datetime, finest: str
) -> list[tuple[str, datetime, datetime]]:
    """(level, start, end) ranges that cover `[since, until)` (aligned to the `finest`
    level's buckets) with the fewest rollup buckets: whole days from the daily level, the
    hours left at either edge from the hourly one, and so on down to `finest`. The counts
    are those of reading `finest` alone; a week of hourly buckets per endpoint becomes ~6
    daily ones plus the edge hours."""
    names = list(LEVELS)  # finest first
    coarse_to_fine = names[names.index(finest) :][::-1]
    ranges: list[tuple[str, datetime, datetime]] = []
    pending = [(since, until)]
    for position, level in enumerate(coarse_to_fine):
        width = LEVELS[level]
        last = position == len(coarse_to_fine) - 1
        remaining = []
        for low, high in pending:
            inner_low = low if last else bucket_start(low - _TICK, width) + width
            inner_high = high if last else bucket_start(high, width)
            if inner_low >= inner_high:
                remaining.append((low, high))
                continue
            ranges.append((level, inner_low, inner_high))
            remaining += [(a, b) for a, b in ((low, inner_low), (inner_high, high)) if a < b]
        pending = remaining
    return ranges


_TICK = timedelta(microseconds=1)


def read_window(
    db: Database,
    project_id: str,
    since: datetime,
    until: datetime,
    *,
    endpoint: str | None = None,
    per_endpoint: bool = False,
    versions: Sequence[str] | None = None,
) -> tuple[list[RollupRow], timedelta]:
    """The rollup rows over `[since, until)`, the bounds rounded out to the buckets of the
    level `level_for` picks (whose width is also returned), read from the fewest buckets
    (`covering_ranges`): the cost follows the number of days and edge hours, not hours."""
    width = LEVELS[level_for(until - since)]
    finest = next(name for name, w in LEVELS.items() if w == width)
    rows: list[RollupRow] = []
    for level, start, end in covering_ranges(
        bucket_start(since, width), bucket_start(until - _TICK, width) + width, finest
    ):
        rows += read_rollups(
            db,
            project_id,
            level,
            start,
            end,
            endpoint=endpoint,
            per_endpoint=per_endpoint,
            versions=versions,
        )
    return rows, width


def merged_histogram(rows: Iterable[RollupRow]) -> DurationHistogram:
    """The sum of the rows' histograms."""
    hist = DurationHistogram()
    for row in rows:
        hist.merge(row.hist)
    return hist


def stats_of(rows: Iterable[RollupRow], merged: DurationHistogram | None = None) -> LatencyStats:
    """Merge rollup rows into one set of statistics (percentiles from the merged histogram;
    `merged`, when the caller already has it, saves merging the rows' again)."""
    rows = list(rows)
    hist = merged if merged is not None else merged_histogram(rows)
    count = errors = 0
    total = 0.0
    maximum: float | None = None
    for row in rows:
        count += row.count
        errors += row.errors
        total += row.duration_sum
        maximum = row.duration_max if maximum is None else max(maximum, row.duration_max)
    p50, p95, p99 = hist.quantiles((0.50, 0.95, 0.99))
    return LatencyStats(
        count=count,
        errors=errors,
        error_rate=errors / count if count else 0.0,
        p50=p50,
        p95=p95,
        p99=p99,
        mean=total / count if count else None,
        max=maximum if count else None,
        total_time=total,
    )
