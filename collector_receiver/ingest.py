"""The one ingest path both transports call: authenticate, decode, store, then answer."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_receiver.auth import ProjectResolver
from collector_receiver.otlp import decode_request
from storage_backend import Store, StoreError

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ExportOutcome:
    """A stored request: how many spans were accepted, rejected, and why."""

    accepted: int
    rejected: int
    error_message: str
    performance_records: int


class TraceIngestor:
    """Authenticates a request's key, stores its valid spans, and only then reports success."""

    def __init__(self, store: Store, *, activity_interval: float = 60.0):
        self.store = store
        self.resolver = ProjectResolver(store.projects)
        self._activity_interval = activity_interval
        self._last_activity: dict[str, float] = {}
        self._lock = threading.Lock()

    def export(self, key: str | None, request: ExportTraceServiceRequest) -> ExportOutcome:
        """Store what is valid in `request`; raise an IngestError or StoreError otherwise.

        Nothing is acknowledged that was not written: the store's `ingest` returns only
        after MongoDB acknowledged both writes.
        """
        project = self.resolver.resolve(key)
        decoded = decode_request(request)
        records = 0
        if decoded.batch:
            result = self.store.ingest(project, decoded.batch)
            records = result.performance_records
            self._touch_activity(project.id)
        if decoded.rejected:
            logger.info(
                "project %s: %d span(s) rejected: %s",
                project.id,
                decoded.rejected,
                decoded.error_message,
            )
        return ExportOutcome(
            accepted=decoded.accepted,
            rejected=decoded.rejected,
            error_message=decoded.error_message,
            performance_records=records,
        )

    def _touch_activity(self, project_id: str) -> None:
        # One write per project per interval, not one per export: last_activity is for people.
        now = time.monotonic()
        with self._lock:
            if now - self._last_activity.get(project_id, -1e9) < self._activity_interval:
                return
            self._last_activity[project_id] = now
        try:
            self.store.projects.touch_activity(project_id, datetime.now(timezone.utc))
        except StoreError:
            logger.warning("could not record last activity of project %s", project_id)
