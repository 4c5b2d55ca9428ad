"""Stored analyses in `ai_analysis_results` (the brief's section 3.2 schema).

One document per analysis of one performance record, written when the analysis finished
(with `expire_at` from the retention policy: the TTL index in schema.py expires it):
`status` is "completed" with `analysis_results`, or "failed" with `error` (the reason), so a
provider outage is visible in the history rather than lost in a log.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from storage_backend.errors import translate_errors
from storage_backend.schema import AI_ANALYSIS_RESULTS

ANALYSIS_INDEXES = [
    IndexModel([("project_id", ASCENDING), ("created_at", DESCENDING)], name="project_time"),
    IndexModel([("record_id", ASCENDING), ("created_at", DESCENDING)], name="record_time"),
    IndexModel([("job_id", ASCENDING)], name="job"),
    IndexModel([("created_at", ASCENDING)], name="created"),
]


def new_analysis_id() -> str:
    return "ana_" + secrets.token_hex(8)


class AnalysisRepository:
    """Write and read analyses; delete the old ones."""

    def __init__(self, db: Database):
        self._col = db[AI_ANALYSIS_RESULTS]

    def ensure_indexes(self) -> None:
        with translate_errors():
            self._col.create_indexes(ANALYSIS_INDEXES)

    def save(self, doc: dict[str, Any]) -> str:
        """Store one analysis document (an `_id` is assigned if missing); return its id.
        Saving the same `_id` again replaces it, so a retried job does not store twice."""
        doc = dict(doc)
        doc.setdefault("_id", new_analysis_id())
        doc.setdefault("created_at", datetime.now(timezone.utc))
        with translate_errors():
            self._col.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        return doc["_id"]

    def get(self, analysis_id: str) -> dict[str, Any] | None:
        with translate_errors():
            return self._col.find_one({"_id": analysis_id})

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        """The analyses a job produced (one for `analyze`, several for `batch_analyze`)."""
        with translate_errors():
            return list(self._col.find({"job_id": job_id}).sort("created_at", ASCENDING))

    def history(
        self,
        project_id: str,
        *,
        skip: int = 0,
        limit: int = 50,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """A project's analyses, newest first."""
        query: dict[str, Any] = {"project_id": project_id}
        if since or until:
            query["created_at"] = {
                **({"$gte": since} if since else {}),
                **({"$lt": until} if until else {}),
            }
        with translate_errors():
            cursor = self._col.find(query).sort("created_at", DESCENDING).skip(skip).limit(limit)
            return list(cursor)

    def count(self, project_id: str) -> int:
        with translate_errors():
            return self._col.count_documents({"project_id": project_id})

    def delete_created_before(self, cutoff: datetime) -> int:
        """Remove analyses created before `cutoff`; return how many."""
        with translate_errors():
            return self._col.delete_many({"created_at": {"$lt": cutoff}}).deleted_count
