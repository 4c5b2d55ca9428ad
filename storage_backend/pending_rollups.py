"""Rollup counts of stored records that may wait for a later write (group commit for rollups).

Why: counting records into the rollups is a handful of upserts per write whatever the number
of records (one per level, bucket, endpoint and version; rollups.py combines them), each
upsert costs the embedded store 1-2 ms, and each pushes one histogram delta
that reads must merge. Under load the receiver's group writes follow
each other closely, so their counts are combined here and written once, by the write that
finds nothing queued behind it, or after at most `max_delay` seconds, or at shutdown. The
records themselves are never delayed: only this derived count is. A lone write (an idle
receiver, a test, the CLI) flushes at once, exactly as without this buffer.

Counted once: a record enters here only after its insert wrote it (duplicates are skipped),
and a flush takes everything it writes out of the buffer first, so a retry cannot count it
twice. As before, a failure between the record insert and the rollup write leaves those
records out of the rollups (not out of the requests list).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from pymongo.database import Database

from storage_backend.rollups import record_rollups

logger = logging.getLogger(__name__)

DEFAULT_MAX_DELAY = 1.0
DEFAULT_MAX_RECORDS = 20_000


def _rollup_fields(record: dict[str, Any]) -> dict[str, Any]:
    """What `rollup_changes` reads of a record: a small copy, so the buffer does not keep
    call trees and request details alive."""
    metrics = record.get("performance_metrics") or {}
    version = record.get("version_info") or {}
    return {
        "project_id": record["project_id"],
        "endpoint": record["endpoint"],
        "timestamp": record["timestamp"],
        "expire_at": record.get("expire_at"),
        "is_error": record.get("is_error"),
        "performance_metrics": {"total_duration": metrics.get("total_duration")},
        "version_info": {"app_version": version.get("app_version")},
    }


class PendingRollups:
    """Records stored but not yet counted into the rollups (thread-safe)."""

    def __init__(
        self, *, max_delay: float = DEFAULT_MAX_DELAY, max_records: int = DEFAULT_MAX_RECORDS
    ):
        self.max_delay = max_delay
        self.max_records = max_records
        self._records: list[dict[str, Any]] = []
        self._oldest = 0.0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        """Remember newly stored records until the next flush."""
        if not records:
            return
        fields = [_rollup_fields(r) for r in records]
        with self._lock:
            if not self._records:
                self._oldest = time.monotonic()
            self._records += fields

    def due(self) -> bool:
        """True when the buffer must be written now: too old or too large to wait longer."""
        with self._lock:
            return bool(self._records) and (
                len(self._records) >= self.max_records
                or time.monotonic() - self._oldest >= self.max_delay
            )

    def flush(self, db: Database) -> int:
        """Write every buffered count (one bulk of upserts); return how many records were
        counted. Raises StoreError if the write fails (those counts are then lost, as a
        failed rollup write always lost them)."""
        with self._lock:
            records, self._records = self._records, []
        if records:
            record_rollups(db, records)
        return len(records)
