"""The analysis job queue in `analysis_jobs`: durable, shared by any number of workers.

A job moves pending -> running -> completed | failed. Workers claim with one atomic
find-and-modify that sets a lease; a live worker renews it, and a job whose lease expired
(its worker died) is put back to pending with a backoff, up to `max_attempts` attempts.
Every state change after the claim is conditioned on the claiming worker still holding the
job, so a worker that lost its lease cannot overwrite the job's outcome.

Idempotent enqueue: a job may carry a `dedupe_key` (e.g. "analyze:<record id>"); while a job
with that key is pending or running, enqueueing it again raises `JobAlreadyActiveError`. The
key lives in `active_key` under a unique sparse index and is removed when the job finishes.
Jobs may also have a caller-chosen `_id` (schedule ticks, rate-limit windows): inserting the
same id twice is refused by MongoDB itself, so two processes never enqueue it twice.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from storage_backend.errors import StoreError, translate_errors

logger = logging.getLogger(__name__)

ANALYSIS_JOBS = "analysis_jobs"

JOB_TYPES = ("analyze", "batch_analyze", "report", "cleanup")
PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
JOB_STATES = (PENDING, RUNNING, COMPLETED, FAILED)

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIME_LIMIT_SECONDS = 300.0  # the brief's Celery task_time_limit
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 600.0

JOB_INDEXES = [
    # The claim query: pending jobs due now, highest priority first, oldest first.
    IndexModel(
        [("state", ASCENDING), ("priority", DESCENDING), ("run_after", ASCENDING)], name="claim"
    ),
    IndexModel([("state", ASCENDING), ("lease_expires_at", ASCENDING)], name="lease"),
    IndexModel([("active_key", ASCENDING)], unique=True, sparse=True, name="active_key_unique"),
    IndexModel([("project_id", ASCENDING), ("created_at", DESCENDING)], name="project_time"),
    IndexModel([("finished_at", ASCENDING)], name="finished"),
]


class JobAlreadyActiveError(StoreError):
    """A job with the same dedupe key is pending or running (the brief's 20006)."""

    def __init__(self, message: str, job_id: str | None):
        super().__init__(message)
        self.job_id = job_id


def _now() -> datetime:
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    return "job_" + secrets.token_hex(8)


def backoff_seconds(attempts: int, base: float = BACKOFF_BASE_SECONDS) -> float:
    """Delay before retry number `attempts` (1, 2, ...): exponential from `base`, capped."""
    return min(BACKOFF_MAX_SECONDS, base * 2 ** max(0, attempts - 1))


@dataclass(slots=True)
class Job:
    """A claimed job as a worker sees it."""

    id: str
    type: str
    payload: dict[str, Any]
    project_id: str | None
    attempts: int
    max_attempts: int
    time_limit: float
    worker_id: str | None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Job:
        return cls(
            id=doc["_id"],
            type=doc["type"],
            payload=doc.get("payload") or {},
            project_id=doc.get("project_id"),
            attempts=doc.get("attempts", 0),
            max_attempts=doc.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
            time_limit=doc.get("time_limit", DEFAULT_TIME_LIMIT_SECONDS),
            worker_id=doc.get("worker_id"),
        )


class JobQueue:
    """Enqueue, claim, renew, finish and count jobs. Thread-safe (pymongo clients are)."""

    def __init__(self, db: Database, *, backoff_base_seconds: float = BACKOFF_BASE_SECONDS):
        self._col = db[ANALYSIS_JOBS]
        self.backoff_base_seconds = backoff_base_seconds

    def ensure_indexes(self) -> None:
        with translate_errors():
            self._col.create_indexes(JOB_INDEXES)

    def enqueue(
        self,
        job_type: str,
        payload: dict[str, Any] | None = None,
        *,
        project_id: str | None = None,
        priority: int = 0,
        dedupe_key: str | None = None,
        job_id: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        time_limit: float = DEFAULT_TIME_LIMIT_SECONDS,
        run_after: datetime | None = None,
    ) -> str:
        """Add a pending job and return its id.

        Raises `JobAlreadyActiveError` when `dedupe_key` is held by a pending or running job,
        or when `job_id` is already taken (then `.job_id` is that id).
        """
        if job_type not in JOB_TYPES:
            raise ValueError(f"unknown job type {job_type!r}; one of {JOB_TYPES}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        now = _now()
        doc: dict[str, Any] = {
            "_id": job_id or new_job_id(),
            "type": job_type,
            "state": PENDING,
            "payload": payload or {},
            "project_id": project_id,
            "priority": priority,
            "attempts": 0,
            "max_attempts": max_attempts,
            "time_limit": time_limit,
            "run_after": run_after or now,
            "created_at": now,
            "updated_at": now,
            "worker_id": None,
            "lease_expires_at": None,
            "result": None,
            "error": None,
            "errors": [],
        }
        if dedupe_key:
            doc["active_key"] = dedupe_key
            doc["dedupe_key"] = dedupe_key
        with translate_errors():
            try:
                self._col.insert_one(doc)
            except DuplicateKeyError as exc:
                holder = None
                if dedupe_key:
                    found = self._col.find_one({"active_key": dedupe_key}, {"_id": 1})
                    holder = found["_id"] if found else None
                raise JobAlreadyActiveError(
                    f"a job for {dedupe_key or job_id!r} is already pending or running",
                    holder or job_id,
                ) from exc
        return doc["_id"]

    def claim(
        self,
        worker_id: str,
        *,
        types: tuple[str, ...] | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> Job | None:
        """Atomically take the most urgent due pending job, or return None.

        The job becomes `running`, owned by `worker_id`, leased for `lease_seconds`; its
        attempt count goes up by one.
        """
        now = _now()
        query: dict[str, Any] = {"state": PENDING, "run_after": {"$lte": now}}
        if types:
            query["type"] = {"$in": list(types)}
        with translate_errors():
            doc = self._col.find_one_and_update(
                query,
                {
                    "$set": {
                        "state": RUNNING,
                        "worker_id": worker_id,
                        "started_at": now,
                        "updated_at": now,
                        "lease_expires_at": now + timedelta(seconds=lease_seconds),
                    },
                    "$inc": {"attempts": 1},
                },
                sort=[("priority", DESCENDING), ("run_after", ASCENDING)],
                return_document=ReturnDocument.AFTER,
            )
        return Job.from_doc(doc) if doc else None

    def renew(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False if this worker no longer holds the job."""
        now = _now()
        with translate_errors():
            res = self._col.update_one(
                {"_id": job_id, "state": RUNNING, "worker_id": worker_id},
                {
                    "$set": {
                        "lease_expires_at": now + timedelta(seconds=lease_seconds),
                        "updated_at": now,
                    }
                },
            )
        return res.modified_count == 1

    def complete(self, job_id: str, worker_id: str, result: dict[str, Any] | None) -> bool:
        """Mark the job completed with `result`; False if the worker no longer held it."""
        return self._finish(job_id, worker_id, {"state": COMPLETED, "result": result})

    def fail(self, job_id: str, worker_id: str, error: str, *, retryable: bool = False) -> str:
        """Record a failed attempt. A retryable failure with attempts left goes back to
        pending after a backoff; otherwise the job is failed. Returns the new state
        ("" if the worker no longer held the job)."""
        with translate_errors():
            doc = self._col.find_one({"_id": job_id, "state": RUNNING, "worker_id": worker_id})
        if doc is None:
            return ""
        attempts = doc.get("attempts", 1)
        if retryable and attempts < doc.get("max_attempts", DEFAULT_MAX_ATTEMPTS):
            when = _now() + timedelta(seconds=backoff_seconds(attempts, self.backoff_base_seconds))
            ok = self._update_owned(
                job_id,
                worker_id,
                {
                    "$set": {
                        "state": PENDING,
                        "run_after": when,
                        "worker_id": None,
                        "lease_expires_at": None,
                        "error": error,
                        "updated_at": _now(),
                    },
                    "$push": {"errors": {"attempt": attempts, "error": error, "at": _now()}},
                },
            )
            return PENDING if ok else ""
        ok = self._finish(job_id, worker_id, {"state": FAILED, "error": error}, push_error=True)
        return FAILED if ok else ""

    def requeue_expired(self, *, limit: int = 100) -> int:
        """Put back jobs whose lease expired (their worker died or hung): pending with a
        backoff if attempts remain, failed otherwise. Returns how many were handled. Safe to
        run from every worker at once: each job is taken by one atomic update."""
        handled = 0
        for _ in range(limit):
            now = _now()
            with translate_errors():
                doc = self._col.find_one(
                    {"state": RUNNING, "lease_expires_at": {"$lt": now}},
                    {"attempts": 1, "max_attempts": 1, "worker_id": 1, "lease_expires_at": 1},
                )
                if doc is None:
                    break
                attempts = doc.get("attempts", 1)
                reason = f"lease expired (worker {doc.get('worker_id')} stopped renewing)"
                owned = {
                    "_id": doc["_id"],
                    "state": RUNNING,
                    "lease_expires_at": doc["lease_expires_at"],
                }
                entry = {"attempt": attempts, "error": reason, "at": now}
                if attempts < doc.get("max_attempts", DEFAULT_MAX_ATTEMPTS):
                    update: dict[str, Any] = {
                        "$set": {
                            "state": PENDING,
                            "run_after": now
                            + timedelta(
                                seconds=backoff_seconds(attempts, self.backoff_base_seconds)
                            ),
                            "worker_id": None,
                            "lease_expires_at": None,
                            "error": reason,
                            "updated_at": now,
                        },
                        "$push": {"errors": entry},
                    }
                else:
                    update = {
                        "$set": {
                            "state": FAILED,
                            "error": f"{reason}; gave up after {attempts} attempt(s)",
                            "finished_at": now,
                            "updated_at": now,
                            "lease_expires_at": None,
                        },
                        "$unset": {"active_key": ""},
                        "$push": {"errors": entry},
                    }
                if self._col.update_one(owned, update).modified_count:
                    handled += 1
                    logger.warning("job %s: %s", doc["_id"], reason)
        return handled

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job document, or None."""
        with translate_errors():
            return self._col.find_one({"_id": job_id})

    def stats(self, *, project_id: str | None = None) -> dict[str, Any]:
        """Counts by state and by type (and both), and the oldest pending job's age in
        seconds (None when nothing waits): the brief's Flower view. With `project_id`,
        only that project's jobs."""
        scope = {"project_id": project_id} if project_id else {}
        with translate_errors():
            groups = list(
                self._col.aggregate(
                    [
                        {"$match": scope},
                        {"$group": {"_id": {"state": "$state", "type": "$type"},
                                    "n": {"$sum": 1}}},
                    ]
                )
            )  # fmt: skip
            oldest = self._col.find_one(
                {**scope, "state": PENDING}, {"created_at": 1}, sort=[("created_at", ASCENDING)]
            )
        by_state = dict.fromkeys(JOB_STATES, 0)
        by_type: dict[str, dict[str, int]] = {}
        for g in groups:
            state, job_type, n = g["_id"]["state"], g["_id"]["type"], g["n"]
            by_state[state] = by_state.get(state, 0) + n
            by_type.setdefault(job_type, dict.fromkeys(JOB_STATES, 0))[state] = n
        age = (_now() - oldest["created_at"]).total_seconds() if oldest else None
        return {
            "by_state": by_state,
            "by_type": by_type,
            "total": sum(by_state.values()),
            "oldest_pending_age_seconds": age,
        }

    def delete_finished_before(self, cutoff: datetime) -> int:
        """Remove completed and failed jobs that finished before `cutoff`."""
        with translate_errors():
            res = self._col.delete_many(
                {"state": {"$in": [COMPLETED, FAILED]}, "finished_at": {"$lt": cutoff}}
            )
        return res.deleted_count

    def _update_owned(self, job_id: str, worker_id: str, update: dict[str, Any]) -> bool:
        with translate_errors():
            res = self._col.update_one(
                {"_id": job_id, "state": RUNNING, "worker_id": worker_id}, update
            )
        return res.modified_count == 1

    def _finish(
        self, job_id: str, worker_id: str, fields: dict[str, Any], *, push_error: bool = False
    ) -> bool:
        now = _now()
        update: dict[str, Any] = {
            "$set": {**fields, "finished_at": now, "updated_at": now, "lease_expires_at": None},
            "$unset": {"active_key": ""},
        }
        if push_error:
            update["$push"] = {"errors": {"error": fields.get("error"), "at": now}}
        return self._update_owned(job_id, worker_id, update)
