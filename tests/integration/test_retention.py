"""Retention: TTL indexes on every expiring collection, expiry per collection and project."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage_backend import ProjectConfig, ResourceSpans, SpanData, Store, StoreSettings
from storage_backend.retention import RetentionPolicy
from storage_backend.schema import (
    AI_ANALYSIS_RESULTS,
    PERFORMANCE_RECORDS,
    ROLLUPS,
    SPANS,
    ensure_indexes,
)


def _batch(trace: str) -> list[ResourceSpans]:
    start = int(datetime.now(timezone.utc).timestamp() * 1e9)
    server = SpanData(
        trace * 32,
        "a" * 16,
        None,
        "GET /x",
        "server",
        start,
        start + 10**8,
        {"http.request.method": "GET", "http.route": "/x"},
    )
    return [ResourceSpans({"service.name": "svc"}, [server])]


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400


@pytest.mark.parametrize("collection", [PERFORMANCE_RECORDS, SPANS, ROLLUPS, AI_ANALYSIS_RESULTS])
def test_ttl_index_expires_at_each_documents_expire_at(store: Store, collection: str):
    ensure_indexes(store.db)
    ttl = store.collection(collection).index_information()["ttl"]
    assert ttl["key"] == [("expire_at", 1)] and ttl["expireAfterSeconds"] == 0


def test_expiry_follows_the_configured_days_per_collection_and_project(embedded_server):
    policy = RetentionPolicy(records_days=10, spans_days=3, analyses_days=90)
    store = Store.connect(embedded_server.url, "test_retention_cfg", retention_policy=policy)
    try:
        store.ensure_schema()
        default, _ = store.projects.create("default-retention")
        short, _ = store.projects.create("short", config=ProjectConfig(retention_days=2))
        store.ingest(default, _batch("1"))
        store.ingest(short, _batch("2"))
        for project, records_days, spans_days in ((default, 10, 3), (short, 2, 2)):
            record = store.collection(PERFORMANCE_RECORDS).find_one({"project_id": project.id})
            span = store.collection(SPANS).find_one({"project_id": project.id})
            assert _days(record["expire_at"] - record["created_at"]) == pytest.approx(records_days)
            assert _days(span["expire_at"] - span["created_at"]) == pytest.approx(spans_days)
            hourly = store.collection(ROLLUPS).find_one({"project_id": project.id, "level": "1h"})
            # Hourly rollups outlive the last record they count by one bucket at most.
            assert hourly["expire_at"] >= record["expire_at"]
        now = datetime.now(timezone.utc)
        assert _days(policy.analysis_expiry(default, now) - now) == pytest.approx(90)
        assert _days(policy.analysis_expiry(short, now) - now) == pytest.approx(2)
    finally:
        store.client.drop_database("test_retention_cfg")
        store.client.close()


def test_the_brief_default_is_30_days_and_env_overrides_per_collection():
    assert StoreSettings().retention_policy() == RetentionPolicy(30, 30, 30)
    env = {"PYSTRUMENT_RETENTION_DAYS": "14", "PYSTRUMENT_SPANS_RETENTION_DAYS": "2"}
    assert StoreSettings.from_env(env).retention_policy() == RetentionPolicy(14, 2, 14)
    with pytest.raises(ValueError, match="ANALYSES"):
        StoreSettings.from_env({"PYSTRUMENT_ANALYSES_RETENTION_DAYS": "x"})
    with pytest.raises(ValueError):
        StoreSettings.from_env({"PYSTRUMENT_RECORDS_RETENTION_DAYS": "0"})
