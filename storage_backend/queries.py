"""Every read the API, the UI and the analysis service make, in one place to look.

All functions take the database (`store.db`) first and return dataclasses from
`storage_backend.query_models` (never pymongo types); `dataclasses.asdict` makes them JSON.
Durations are seconds, times timezone-aware UTC. Storage failures raise
`StoreUnavailableError` / `StoreError`; bad arguments raise `ValueError`.

Requests (`request_queries`):
- `list_requests(db, project_id, RequestFilter(...), sort="-timestamp", page=1, size=20)`
  -> `RequestPage` (filters: endpoint, method, status_class, min/max_duration, version,
  since/until, errors_only; sort: "-timestamp" | "timestamp" | "-duration" | "duration").
- `get_request(db, record_id, project_id=None)` -> `RequestDetail | None`: the record, its
  trace's spans (`SpanView`s in start order), the decoded `CallNode` tree and the brief's
  flat `function_calls` (via `otel_pyinstrument_processor.flatten`).
- `requests_of_trace(db, project_ids, trace_id)` -> `list[RequestSummary]`: a trace's
  requests (the id as pasted, or a `traceparent` value; `normalize_trace_id` checks it).

Dashboards, from rollups (`dashboard_queries`; cost independent of the record count):
- `trends(db, project_id, "1h"|"24h"|"7d"|"30d", endpoint=None)` -> `Trends` (count, error
  rate, p50/p95/p99 per bucket: 1 min / 1 h / 6 h / 1 day).
- `endpoint_trends(db, project_id, "30d", endpoints=None, percentiles=True)`
  -> `dict[str, Trends]`: many endpoints' trends (sparklines) from one rollup read.
- `endpoint_summary(db, project_id, "24h", since=None, until=None, version=None)`
  -> `EndpointSummary` (per endpoint: stats and share of total time).

Versions (`version_queries`):
- `list_versions(db, project_id, "30d")` -> `list[VersionInfo]`.
- `compare_versions(db, project_id, base, target, "7d", endpoint=None)`
  -> `VersionComparison` (per-endpoint latency deltas, functions whose self time changed most).

Call trees (`calltree_merge`):
- `aggregated_call_tree(db, project_id, endpoint, version=None, limit=200)`
  -> `AggregatedCallTree` (recent profiled requests merged, per-node `request_count`).
- `merge_call_trees(trees)` -> `AggregatedCallNode | None` for trees you already decoded.
"""

from storage_backend.calltree_merge import aggregated_call_tree, merge_call_trees
from storage_backend.dashboard_queries import endpoint_summary, endpoint_trends, trends
from storage_backend.query_models import (
    TIME_RANGES,
    AggregatedCallNode,
    AggregatedCallTree,
    CallNode,
    EndpointStats,
    EndpointSummary,
    EndpointVersionDelta,
    FunctionDelta,
    LatencyStats,
    RequestDetail,
    RequestFilter,
    RequestPage,
    RequestSummary,
    SpanView,
    TrendPoint,
    Trends,
    VersionComparison,
    VersionInfo,
    to_dict,
)
from storage_backend.request_queries import (
    get_request,
    list_requests,
    normalize_trace_id,
    requests_of_trace,
)
from storage_backend.version_queries import compare_versions, list_versions

__all__ = [
    "TIME_RANGES",
    "AggregatedCallNode",
    "AggregatedCallTree",
    "CallNode",
    "EndpointStats",
    "EndpointSummary",
    "EndpointVersionDelta",
    "FunctionDelta",
    "LatencyStats",
    "RequestDetail",
    "RequestFilter",
    "RequestPage",
    "RequestSummary",
    "SpanView",
    "TrendPoint",
    "Trends",
    "VersionComparison",
    "VersionInfo",
    "aggregated_call_tree",
    "compare_versions",
    "endpoint_summary",
    "endpoint_trends",
    "get_request",
    "list_requests",
    "list_versions",
    "merge_call_trees",
    "normalize_trace_id",
    "requests_of_trace",
    "to_dict",
    "trends",
]
