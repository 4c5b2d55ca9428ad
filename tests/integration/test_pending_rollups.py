"""Rollup counts that wait for a later group write: never lost, never counted twice."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from storage_backend import ResourceSpans, SpanData, Store
from storage_backend.rollups import read_rollups

_now_ns = time.time_ns()


def _batch(n: int, first: int = 0) -> list[ResourceSpans]:
    spans = [
        SpanData(
            trace_id=f"{first + i + 1:032x}",
            span_id=f"{first + i + 1:016x}",
            parent_span_id=None,
            name="GET /orders",
            kind="server",
            start_time_ns=_now_ns,
            end_time_ns=_now_ns + 20_000_000,
            attributes={"http.request.method": "GET", "http.route": "/orders"},
        )
        for i in range(n)
    ]
    return [ResourceSpans({"service.name": "shop"}, spans)]


def _counted(store: Store, project_id: str) -> int:
    now = datetime.now(timezone.utc)
    rows = read_rollups(
        store.db, project_id, "1m", now - timedelta(hours=1), now + timedelta(minutes=1)
    )
    return sum(row.count for row in rows)


def test_counts_wait_while_more_writes_are_queued_then_are_written_once(store, project):
    store.ingest_many([(project.project, _batch(3))], rollups_can_wait=lambda: True)
    assert len(store.pending_rollups) == 3
    assert _counted(store, project.project.id) == 0  # the records are stored, counts wait
    assert store.collection("performance_records").count_documents({}) == 3

    # A resent batch writes no record, so it adds nothing to count.
    store.ingest_many([(project.project, _batch(3))], rollups_can_wait=lambda: True)
    assert len(store.pending_rollups) == 3

    # The write with nothing queued behind it carries every waiting count.
    store.ingest_many([(project.project, _batch(2, first=10))], rollups_can_wait=lambda: False)
    assert len(store.pending_rollups) == 0
    assert _counted(store, project.project.id) == 5
    store.flush_rollups()  # nothing left: counts nothing twice
    assert _counted(store, project.project.id) == 5


def test_counts_never_wait_longer_than_max_delay(store, project):
    store.pending_rollups.max_delay = 0.0
    store.ingest_many([(project.project, _batch(4))], rollups_can_wait=lambda: True)
    assert _counted(store, project.project.id) == 4


def test_plain_ingest_writes_counts_at_once(store, project):
    store.ingest(project.project, _batch(2))
    assert _counted(store, project.project.id) == 2


def test_a_stopping_receiver_writes_the_waiting_counts(store, project):
    from collector_receiver.batcher import GroupCommitWriter

    writer = GroupCommitWriter(store)
    store.ingest_many([(project.project, _batch(3))], rollups_can_wait=lambda: True)
    assert _counted(store, project.project.id) == 0
    writer.close(5)
    assert _counted(store, project.project.id) == 3
