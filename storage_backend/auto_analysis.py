"""Automatic analysis: enqueue an `analyze` job for stored records slower than the project's
`alert_threshold.response_time`, when the project has `auto_analysis` on.

Rate-limited per project and route: at most one automatic job per (project, endpoint) per
window. The limit holds across receiver processes because the job's `_id` is derived from
(project, endpoint, window start) and MongoDB refuses a second insert of that id; an
in-process memo spares the database the refused inserts.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from storage_backend.errors import StoreError
from storage_backend.jobs import JobAlreadyActiveError, JobQueue
from storage_backend.models import Project

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 300.0
AUTO_PRIORITY = 0  # on-demand analyses (someone is waiting) use a higher priority


class AutoAnalysisTrigger:
    """Called once per ingest with the stored records; enqueues what is slow enough."""

    def __init__(self, queue: JobQueue, *, window_seconds: float = DEFAULT_WINDOW_SECONDS):
        self.queue = queue
        self.window_seconds = window_seconds
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def on_records_stored(
        self, projects: Iterable[Project], records: Sequence[dict[str, Any]]
    ) -> list[str]:
        """Enqueue analysis of the slowest over-threshold record per project and endpoint
        (`records` may mix the given projects); return the new job ids. Never raises: the
        records are stored whatever happens here."""
        watching = {p.id: p for p in projects if p.config.auto_analysis}
        if not watching or not records:
            return []
        slowest: dict[tuple[str, str], dict[str, Any]] = {}
        for record in records:
            project = watching.get(record["project_id"])
            if project is None:
                continue
            duration = (record.get("performance_metrics") or {}).get("total_duration") or 0.0
            if duration <= project.config.alert_threshold.response_time:
                continue
            key = (project.id, record["endpoint"])
            best = slowest.get(key)
            if best is None or duration > best["performance_metrics"]["total_duration"]:
                slowest[key] = record
        enqueued = []
        for (project_id, endpoint), record in slowest.items():
            job_id = self._enqueue_once(watching[project_id], endpoint, record)
            if job_id:
                enqueued.append(job_id)
        return enqueued

    def _enqueue_once(self, project: Project, endpoint: str, record: dict[str, Any]) -> str | None:
        window = int(time.time() // self.window_seconds)
        memo_key = (project.id, endpoint)
        with self._lock:
            if self._seen.get(memo_key) == window:
                return None
            self._seen[memo_key] = window
        digest = hashlib.sha256(f"{project.id}\0{endpoint}\0{window}".encode()).hexdigest()[:24]
        try:
            return self.queue.enqueue(
                "analyze",
                {"record_id": record["_id"], "analysis_type": "auto"},
                project_id=project.id,
                priority=AUTO_PRIORITY,
                job_id="auto_" + digest,
                dedupe_key=f"analyze:{record['_id']}",
            )
        except JobAlreadyActiveError:
            return None  # another receiver took this window, or the record is being analysed
        except StoreError as exc:
            logger.warning("auto analysis of %s not enqueued: %s", endpoint, exc)
            return None
