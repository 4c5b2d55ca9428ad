"""Collection names and every index the queries need, created idempotently at start-up."""

from __future__ import annotations

import logging

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from storage_backend.errors import translate_errors

logger = logging.getLogger(__name__)

PROJECTS = "projects"
PERFORMANCE_RECORDS = "performance_records"
SPANS = "spans"
ROLLUPS = "performance_rollups"
AI_ANALYSIS_RESULTS = "ai_analysis_results"
ROLLUP_INDEX = "project_level_endpoint_bucket"

INDEXES: dict[str, list[IndexModel]] = {
    PROJECTS: [
        IndexModel([("key_hash", ASCENDING)], unique=True, name="key_hash_unique"),
        IndexModel([("name", ASCENDING)], unique=True, name="name_unique"),
    ],
    PERFORMANCE_RECORDS: [
        IndexModel([("project_id", ASCENDING), ("timestamp", DESCENDING)], name="project_time"),
        IndexModel(
            [("project_id", ASCENDING), ("endpoint", ASCENDING), ("timestamp", DESCENDING)],
            name="project_endpoint_time",
        ),
        IndexModel(
            [
                ("project_id", ASCENDING),
                ("version_info.app_version", ASCENDING),
                ("timestamp", DESCENDING),
            ],
            name="project_version_time",
        ),
        # No (project_id, trace_id) index: nothing filters records by trace id, each index
        # costs the embedded store ~17 µs per span at ingest, and a trace's records are an
        # `_id` range (`<project_id>.<trace_id>` is the prefix of their ids).
        # The requests list sorted by duration ("slowest first").
        IndexModel(
            [("project_id", ASCENDING), ("performance_metrics.total_duration", DESCENDING)],
            name="project_duration",
        ),
        IndexModel(
            [
                ("project_id", ASCENDING),
                ("endpoint", ASCENDING),
                ("performance_metrics.total_duration", DESCENDING),
            ],
            name="project_endpoint_duration",
        ),
        # Per-document expiry: retention can differ per project and per collection.
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="ttl"),
    ],
    SPANS: [
        # A document holds the spans of one export request: a trace is found by any of its
        # `trace_ids` (multikey). `project_trace` serves documents written before that.
        IndexModel([("project_id", ASCENDING), ("trace_ids", ASCENDING)], name="project_trace_ids"),
        IndexModel([("project_id", ASCENDING), ("trace_id", ASCENDING)], name="project_trace"),
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="ttl"),
    ],
    # Trends, endpoint summaries and version comparisons read a bucket range of one level.
    ROLLUPS: [
        IndexModel(
            [
                ("project_id", ASCENDING),
                ("level", ASCENDING),
                ("endpoint", ASCENDING),
                ("bucket", ASCENDING),
            ],
            name=ROLLUP_INDEX,
        ),
        # Every endpoint's rows of a bucket range (endpoint summaries, sparklines): the
        # embedded server does not use the index above for a range on `endpoint`.
        IndexModel(
            [("project_id", ASCENDING), ("level", ASCENDING), ("bucket", ASCENDING)],
            name="project_level_bucket",
        ),
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="ttl"),
    ],
    AI_ANALYSIS_RESULTS: [
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="ttl"),
    ],
}


def ensure_indexes(db: Database) -> None:
    """Create every collection's indexes (a no-op for the ones that exist)."""
    with translate_errors():
        for collection, indexes in INDEXES.items():
            db[collection].create_indexes(indexes)
    logger.debug("indexes ensured on %s", db.name)
