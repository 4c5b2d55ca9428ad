"""Transport-neutral shapes that flow into and out of the store.

The receiver turns OTLP (gRPC or HTTP, protobuf or JSON) into these; nothing here knows
about protobuf. Documents in MongoDB are built from them in `records.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")


@dataclass(slots=True)
class SpanData:
    """One span as received: ids are lowercase hex, times are Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_time_ns: int
    end_time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: str = "unset"
    status_message: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    scope_name: str = ""
    scope_version: str = ""

    @property
    def duration_s(self) -> float:
        return max(0, self.end_time_ns - self.start_time_ns) / 1e9


@dataclass(slots=True)
class ResourceSpans:
    """Spans that share one resource (one process of one service)."""

    resource: dict[str, Any]
    spans: list[SpanData]


@dataclass(slots=True)
class AlertThreshold:
    response_time: float = 1.0  # seconds
    error_rate: float = 0.05
    memory_usage: int = 512  # MB


@dataclass(slots=True)
class ProjectConfig:
    sampling_rate: float = 1.0
    enabled: bool = True
    auto_analysis: bool = False
    alert_threshold: AlertThreshold = field(default_factory=AlertThreshold)
    retention_days: int | None = None  # None: the server's default
    ai_service: str | None = None  # analyzer service name; None: the server's default


@dataclass(slots=True)
class Project:
    """A project as stored: never carries its key, only the key's display prefix."""

    id: str
    name: str
    description: str
    framework: str
    status: str
    config: ProjectConfig
    key_prefix: str
    created_at: datetime
    updated_at: datetime
    last_activity: datetime | None = None
    base_url: str = ""


@dataclass(slots=True)
class IngestResult:
    """What one ingest call wrote."""

    spans: int
    span_documents: int
    performance_records: int
