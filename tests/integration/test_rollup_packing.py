"""Rollup histograms: one packed delta per write, packed into one value by reads and by
writes that find many deltas (`rollups.pack_histograms`, `fold_deltas`), no count lost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storage_backend.histogram import DurationHistogram
from storage_backend.rollups import (
    FOLD_AFTER_DELTAS,
    PACK_MIN_BUCKETS,
    RollupRow,
    histogram_of,
    pack_histograms,
    read_rollups,
    record_rollups,
    rollup_changes,
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


def _project_hour(store, pid):
    return store.collection(ROLLUPS).find_one({"project_id": pid, "level": "1h", "endpoint": None})


def test_a_histogram_of_many_writes_is_packed_on_read_and_reads_the_same(store, project):
    pid = project.project.id
    durations = [0.01 * 1.05**i for i in range(PACK_MIN_BUCKETS * 3)]
    for third in range(3):  # three writes: three packed deltas on the document
        record_rollups(store.db, _records(pid, durations[third::3]))
    assert len(_project_hour(store, pid)["hdelta"]) == 3
    first = stats_of(_hour_rows(store, pid))
    doc = _project_hour(store, pid)
    assert "hdelta" not in doc and "hdelta_n" not in doc and isinstance(doc["hpack"], bytes)
    again = stats_of(_hour_rows(store, pid))
    assert again == first and again.count == len(durations)
    # Later records push a delta beside the packed histogram; reads merge both.
    record_rollups(store.db, _records(pid, [0.5, 0.5]))
    merged = stats_of(_hour_rows(store, pid))
    assert merged.count == len(durations) + 2
    expected = DurationHistogram.of([*durations, 0.5, 0.5])
    assert merged.p50 == expected.quantile(0.5) and merged.p99 == expected.quantile(0.99)


def test_one_write_is_one_update_path_and_stays_as_written(store, project):
    pid = project.project.id
    durations = [0.01 * 1.05**i for i in range(PACK_MIN_BUCKETS * 3)]
    change = rollup_changes(_records(pid, durations))[0][1]
    # However many buckets, the histogram is one value: the embedded server's update cost
    # grows with the square of the number of paths.
    assert list(change["$push"]) == ["hdelta"] and not any("." in k for k in change["$inc"])
    record_rollups(store.db, _records(pid, durations))
    _hour_rows(store, pid)
    doc = _project_hour(store, pid)
    assert "hpack" not in doc and len(doc["hdelta"]) == 1
    assert histogram_of(doc).counts == DurationHistogram.of(durations).counts


def test_histograms_in_the_older_hist_fields_are_still_read_and_packed(store, project):
    pid = project.project.id
    record_rollups(store.db, _records(pid, [0.2]))
    old = [0.01 * 1.05**i for i in range(PACK_MIN_BUCKETS)]
    # A document as earlier versions wrote it: one `hist.<bucket>` field per bucket.
    store.collection(ROLLUPS).update_one(
        {"_id": _project_hour(store, pid)["_id"]},
        {"$inc": {"count": len(old), **{f"hist.{k}": v for k, v in
                  DurationHistogram.of(old).to_document().items()}}},
    )  # fmt: skip
    (row,) = _hour_rows(store, pid)
    assert row.count == len(old) + 1
    assert row.hist.counts == DurationHistogram.of([*old, 0.2]).counts
    doc = _project_hour(store, pid)
    assert "hist" not in doc and "hdelta" not in doc
    assert histogram_of(doc).counts == row.hist.counts


def test_a_document_nobody_reads_is_folded_by_the_writes(store, project):
    pid = project.project.id
    durations = []
    for n in range(FOLD_AFTER_DELTAS + 1):
        batch = [0.01 * (n + 1), 0.5]
        durations += batch
        record_rollups(store.db, _records(pid, batch))
    doc = _project_hour(store, pid)
    # Folded at the FOLD_AFTER_DELTAS-th write; the last write pushed one delta since.
    assert isinstance(doc["hpack"], bytes) and len(doc["hdelta"]) == 1 and doc["hdelta_n"] == 1
    assert doc["count"] == len(durations)
    assert histogram_of(doc).counts == DurationHistogram.of(durations).counts


def test_packing_a_histogram_that_changed_since_it_was_read_is_a_no_op(store, project):
    pid = project.project.id
    durations = [0.01 * 1.05**i for i in range(PACK_MIN_BUCKETS * 2)]
    record_rollups(store.db, _records(pid, durations[::2]))
    record_rollups(store.db, _records(pid, durations[1::2]))
    stale = _project_hour(store, pid)
    # A receiver counts one more record between the read and the rewrite.
    record_rollups(store.db, _records(pid, [7.0]))
    row = RollupRow(
        HOUR, None, "1.0", stale["count"], 0, 0.0, 0.0, histogram_of(stale), timedelta(hours=1)
    )
    pack_histograms(store.db, [stale], [row])
    doc = _project_hour(store, pid)
    assert "hpack" not in doc and len(doc["hdelta"]) == 3
    assert doc["count"] == len(durations) + 1
    assert histogram_of(doc).counts == DurationHistogram.of([*durations, 7.0]).counts
