"""The typed shapes the query functions take and return (see `storage_backend.queries`).

Plain dataclasses of str/int/float/datetime/list/dict: callers (the REST API, the UI, the
analysis service) never see pymongo types, and `dataclasses.asdict` gives JSON-ready dicts.
Durations are seconds; times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from otel_pyinstrument_processor import CallTreeNode

TimeRange = Literal["1h", "24h", "7d", "30d"]
TIME_RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
StatusClass = Literal["2xx", "3xx", "4xx", "5xx"]
RequestSort = Literal["-timestamp", "timestamp", "-duration", "duration"]


@dataclass(slots=True)
class RequestFilter:
    """Filters of the requests list; None means "any"."""

    endpoint: str | None = None  # "GET /users/<id>", as stored
    method: str | None = None
    status_class: StatusClass | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    version: str | None = None  # service.version
    since: datetime | None = None
    until: datetime | None = None
    errors_only: bool = False


@dataclass(slots=True)
class RequestSummary:
    """One row of the requests list."""

    id: str
    project_id: str
    trace_id: str
    span_id: str
    endpoint: str
    method: str | None
    path: str | None
    status_code: int | None
    is_error: bool
    duration: float
    cpu_time: float | None
    version: str | None
    service_name: str | None
    timestamp: datetime
    has_profile: bool


@dataclass(slots=True)
class RequestPage:
    """A page of the requests list. `total` is exact up to `total_cap`; beyond that
    `total_is_lower_bound` is True (counting a million matches costs a full index scan)."""

    items: list[RequestSummary]
    page: int
    size: int
    total: int
    total_is_lower_bound: bool


@dataclass(slots=True)
class SpanView:
    """One span of a trace, for the waterfall."""

    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service_name: str | None
    start_time: datetime
    duration: float
    status_code: str
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


# A request's call tree is the decoder's own `CallTreeNode` (function, file, line, total and
# self time, sample count, children): the query layer passes it through rather than copy it.
CallNode = CallTreeNode


@dataclass(slots=True)
class RequestDetail:
    """Everything about one request: the stored record (as the brief's fields), its trace's
    spans in start order, the decoded call tree and the brief's flat `function_calls`."""

    summary: RequestSummary
    record: dict[str, Any]
    spans: list[SpanView]
    call_tree: CallTreeNode | None
    function_calls: list[dict[str, Any]]
    profile_error: str | None = None  # why the stored tree could not be decoded


@dataclass(slots=True)
class LatencyStats:
    """Count, errors and latency percentiles of a set of requests (from rollups)."""

    count: int
    errors: int
    error_rate: float
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None
    total_time: float


@dataclass(slots=True)
class TrendPoint:
    bucket_start: datetime
    stats: LatencyStats


@dataclass(slots=True)
class Trends:
    """A time series over `time_range` in buckets of `bucket_seconds` (empty buckets included)."""

    project_id: str
    time_range: str
    bucket_seconds: int
    since: datetime
    until: datetime
    endpoint: str | None
    points: list[TrendPoint]
    overall: LatencyStats


@dataclass(slots=True)
class EndpointStats:
    endpoint: str
    stats: LatencyStats
    share_of_total_time: float  # this endpoint's summed duration / all endpoints' (0..1)


@dataclass(slots=True)
class EndpointSummary:
    project_id: str
    since: datetime
    until: datetime
    endpoints: list[EndpointStats]  # by total time, largest first


@dataclass(slots=True)
class VersionInfo:
    version: str  # "" for records without service.version
    count: int
    first_seen: datetime
    last_seen: datetime


@dataclass(slots=True)
class EndpointVersionDelta:
    """One endpoint under the base and the target version; deltas are target - base."""

    endpoint: str
    base: LatencyStats | None
    target: LatencyStats | None
    p50_delta: float | None
    p95_delta: float | None
    p95_change: float | None  # relative: (target - base) / base


@dataclass(slots=True)
class FunctionDelta:
    """Mean self time per profiled request of one function, under both versions."""

    function: str
    file: str
    line: int
    base_self_time: float
    target_self_time: float
    delta: float


@dataclass(slots=True)
class VersionComparison:
    project_id: str
    base_version: str
    target_version: str
    since: datetime
    until: datetime
    endpoints: list[EndpointVersionDelta]  # largest |p95 delta| first
    functions: list[FunctionDelta]  # largest |delta| first
    base_profiles: int  # how many call trees the function deltas rest on
    target_profiles: int


@dataclass(slots=True)
class AggregatedCallNode:
    """A node of many requests' call trees merged by call path. Times are sums over the
    requests; `request_count` is how many of them passed through this node."""

    function: str
    file: str
    line: int
    total_time: float
    self_time: float
    sample_count: int
    request_count: int
    children: list[AggregatedCallNode] = field(default_factory=list)


@dataclass(slots=True)
class AggregatedCallTree:
    project_id: str
    endpoint: str
    version: str | None
    profiles: int  # requests merged
    skipped: int  # stored trees that could not be decoded
    root: AggregatedCallNode | None


def to_dict(value: Any) -> Any:
    """A query result as plain dicts/lists (for JSON); leaves datetimes as they are."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
