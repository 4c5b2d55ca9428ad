"""The one ingest path both transports call: authenticate, decode, store, then answer."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_receiver.auth import ProjectResolver
from collector_receiver.batcher import BatchOptions, GroupCommitWriter
from collector_receiver.errors import classify
from collector_receiver.metrics import ReceiverMetrics
from collector_receiver.otlp import DEFAULT_MAX_SPAN_ATTRIBUTES, count_spans, decode_request
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
    """Authenticates a request's key, stores its valid spans, and only then reports success.

    Writes go through a `GroupCommitWriter`, so concurrent exports share bulk writes and the
    spans in flight stay under a bound. Call `close()` on shutdown (after the transports
    stopped taking requests) to finish queued writes.
    """

    def __init__(
        self,
        store: Store,
        *,
        activity_interval: float = 60.0,
        batch_options: BatchOptions | None = None,
        max_span_attributes: int = DEFAULT_MAX_SPAN_ATTRIBUTES,
        metrics: ReceiverMetrics | None = None,
    ):
        self.store = store
        self.resolver = ProjectResolver(store.projects)
        self.metrics = metrics or ReceiverMetrics()
        self.writer = GroupCommitWriter(store, batch_options, self.metrics)
        self.max_span_attributes = max_span_attributes
        self._activity_interval = activity_interval
        self._last_activity: dict[str, float] = {}
        self._lock = threading.Lock()

    def export(
        self, key: str | None, request: ExportTraceServiceRequest, *, transport: str = "grpc"
    ) -> ExportOutcome:
        """Store what is valid in `request`; raise an IngestError or StoreError otherwise.

        Nothing is acknowledged that was not written: this returns only after the store
        acknowledged the group write that carried these spans.
        """
        started = time.perf_counter()
        spans = 0
        try:
            spans = count_spans(request)  # first, so refusals of any kind count their spans
            project = self.resolver.resolve(key)
            with self.writer.admission(spans):
                decoded = decode_request(request, max_attributes=self.max_span_attributes)
                records = 0
                if decoded.batch:
                    result = self.writer.write(project, decoded.batch)
                    records = result.performance_records
        except Exception as exc:
            self.count_refused(exc, transport, spans)
            raise
        if decoded.batch:
            self._touch_activity(project.id)
        if decoded.rejected:
            logger.info(
                "project %s: %d span(s) rejected: %s",
                project.id,
                decoded.rejected,
                decoded.error_message,
                extra={"project_id": project.id, "rejected_spans": decoded.rejected},
            )
        self.metrics.spans_accepted.inc(decoded.accepted, transport=transport)
        if decoded.rejected:
            self.metrics.spans_rejected.inc(decoded.rejected, transport=transport)
        self.metrics.requests.inc(transport=transport, outcome="ok")
        self.metrics.export_latency.observe(time.perf_counter() - started, transport=transport)
        return ExportOutcome(
            accepted=decoded.accepted,
            rejected=decoded.rejected,
            error_message=decoded.error_message,
            performance_records=records,
        )

    def count_refused(self, exc: BaseException, transport: str, spans: int = 0) -> None:
        """Count a request refused as a whole (also for failures a transport finds before
        calling `export`, such as an undecodable body)."""
        code = classify(exc).grpc_code.name
        self.metrics.requests.inc(transport=transport, outcome=code)
        if spans:
            self.metrics.spans_refused.inc(spans, transport=transport, reason=code)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the writers; later exports get UNAVAILABLE."""
        self.writer.close(timeout)

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
