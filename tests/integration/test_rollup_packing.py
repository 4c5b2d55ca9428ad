"""Reads pack dense rollup histograms (`rollups.pack_histograms`) without losing a count."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storage_backend.histogram import DurationHistogram, bucket_of
from storage_backend.rollups import (
    PACK_MIN_BUCKETS,
    RollupRow,
    histogram_of,
    pack_histograms,
    read_rollups,
    record_rollups,
    stats_of,
)
from storage_backend.schema import ROLLUPS

HOUR = datetime(2026, 11, 26, 8, tzinfo=timezone.utc)


def _records(project_id: str, durations: list[float]) -> list[dict]:
    return [
        {
            "project_id": project_id,
            "endpoint": "GET /x",
            "timestamp": HOUR + timedelta(seconds=i),
            "performance_metrics": {"total_duration": d},
            "version_info": {"app_version": "1.0"},
            "is_error": False,
            "expire_at": HOUR + timedelta(days=30),
        }
        for i, d in enumerate(durations)
    ]


def _hour_rows(store, project_id):
    return read_rollups(store.db, project_id, "1h", HOUR, HOUR + timedelta(hours=1))


def test_a_dense_histogram_is_packed_on_read_and_reads_the_same(store, project):
    pid = project.project.id
    durations = [0.01 * 1.05**i for i in range(PACK_MIN_BUCKETS * 3)]
    record_rollups(store.db, _records(pid, durations))
    first = stats_of(_hour_rows(store, pid))
    doc = store.collection(ROLLUPS).find_one({"project_id": pid, "level": "1h", "endpoint": None})
    assert "hist" not in doc and isinstance(doc["hpack"], bytes)
    again = stats_of(_hour_rows(store, pid))
    assert again == first and again.count == len(durations)
    # Later records add `hist` fields beside the packed ones; reads merge both.
    record_rollups(store.db, _records(pid, [0.5, 0.5]))
    merged = stats_of(_hour_rows(store, pid))
    assert merged.count == len(durations) + 2
    expected = DurationHistogram.of([*durations, 0.5, 0.5])
    assert merged.p50 == expected.quantile(0.5) and merged.p99 == expected.quantile(0.99)


def test_a_sparse_histogram_stays_in_its_ingest_form(store, project):
    pid = project.project.id
    record_rollups(store.db, _records(pid, [0.1, 0.2]))
    _hour_rows(store, pid)
    doc = store.collection(ROLLUPS).find_one({"project_id": pid, "level": "1h", "endpoint": None})
    assert "hpack" not in doc and len(doc["hist"]) == 2


def test_packing_a_histogram_that_changed_since_it_was_read_is_a_no_op(store, project):
    pid = project.project.id
    durations = [0.01 * 1.05**i for i in range(PACK_MIN_BUCKETS * 2)]
    record_rollups(store.db, _records(pid, durations))
    col = store.collection(ROLLUPS)
    query = {"project_id": pid, "level": "1h", "endpoint": None}
    stale = col.find_one(query)
    # A receiver counts one more record between the read and the rewrite.
    record_rollups(store.db, _records(pid, [7.0]))
    row = RollupRow(
        HOUR, None, "1.0", stale["count"], 0, 0.0, 0.0, histogram_of(stale), timedelta(hours=1)
    )
    pack_histograms(store.db, [stale], [row])
    doc = col.find_one(query)
    assert "hpack" not in doc
    assert doc["count"] == len(durations) + 1
    assert doc["hist"][str(bucket_of(7.0))] == 1
