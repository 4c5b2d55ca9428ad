"""Documents for `performance_records` (one per entry span) and `spans` (grouped per export
request and resource, the span list compressed into one value).

Both are written with deterministic `_id`s, so an exporter's retry of a request that was
partly written before a failure stores nothing twice: duplicates are recognised and skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs

from otel_pyinstrument_processor import attributes as profile_attrs
from storage_backend.models import ResourceSpans, SpanData
from storage_backend.span_codec import SPANS_FORMAT, encode_spans

# A `spans` document's compressed span list stays under this (MongoDB refuses documents over
# 16 MB); a larger one is split between traces.
MAX_SPANS_BLOB_BYTES = 8 * 1024 * 1024
# The profile lives in the performance record; a span document would only carry it twice.
_PROFILE_ATTRIBUTES = frozenset(
    {
        profile_attrs.PROFILE_TREE,
        profile_attrs.PROFILE_FORMAT,
    }
)


def _first(attrs: dict[str, Any], *names: str) -> Any:
    """The first attribute present among `names`: stable semconv first, then the old names."""
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def record_id(project_id: str, trace_id: str, span_id: str) -> str:
    """The `_id` of an entry span's record: deterministic (a resent span maps to the same
    record) and scoped to the project, so the same span sent to two projects (a collector
    fanning out) is stored in both instead of being skipped as a duplicate in the second."""
    return f"{project_id}.{trace_id}{span_id}"


def is_entry_span(span: SpanData) -> bool:
    """An entry span starts a unit of work in a process: a SERVER or CONSUMER span, or any span
    that carries a call tree (the user asked for it to be profiled)."""
    return span.kind in ("server", "consumer") or profile_attrs.PROFILE_TREE in span.attributes


def _headers(attrs: dict[str, Any]) -> dict[str, Any]:
    prefix = "http.request.header."
    return {k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)}


# performance_metrics sub-document -> {field: span attribute} (the processor's request metrics)
_METRIC_GROUPS = {
    "memory_usage": {
        "peak_memory": profile_attrs.MEMORY_PEAK,
        "memory_delta": profile_attrs.MEMORY_DELTA,
    },
    "database_metrics": {
        "query_count": profile_attrs.DB_QUERY_COUNT,
        "query_time": profile_attrs.DB_QUERY_TIME,
        "slow_queries": profile_attrs.DB_SLOW_QUERIES,
    },
    "cache_metrics": {
        "cache_hits": profile_attrs.CACHE_HITS,
        "cache_misses": profile_attrs.CACHE_MISSES,
        "cache_time": profile_attrs.CACHE_TIME,
    },
}


def _request_metrics(attrs: dict[str, Any]) -> dict[str, Any]:
    """The seed's memory/database/cache groups, for those the span carries."""
    groups: dict[str, Any] = {}
    for group, fields in _METRIC_GROUPS.items():
        values = {field: attrs[name] for field, name in fields.items() if name in attrs}
        if values:
            groups[group] = values
    return groups


def endpoint_of(method: str | None, route: str | None, name: str) -> str:
    """The grouping key of a request: 'GET /users/<id>' (the route template, not the path)."""
    if route:
        return f"{method} {route}" if method else route
    return name


def build_performance_record(
    project_id: str,
    span: SpanData,
    resource: dict[str, Any],
    *,
    retention: timedelta,
    received_at: datetime,
) -> dict[str, Any]:
    """The `performance_records` document of one entry span (the seed's fields that exist)."""
    a = span.attributes
    method = _first(a, "http.request.method", "http.method")
    route = _first(a, "http.route")
    path = _first(a, "url.path", "http.target")
    query = _first(a, "url.query")
    if path and "?" in str(path):
        path, _, query = str(path).partition("?")
    status_code = _as_int(_first(a, "http.response.status_code", "http.status_code"))
    is_error = span.status_code == "error" or (status_code is not None and status_code >= 500)
    started = _ns_to_datetime(span.start_time_ns)

    metrics: dict[str, Any] = {"total_duration": span.duration_s}
    cpu = a.get(profile_attrs.CPU_TIME)
    if cpu is not None:
        metrics["cpu_time"] = float(cpu)
    metrics.update(_request_metrics(a))

    profile = None
    if profile_attrs.PROFILE_TREE in a:
        profile = {
            "tree": a[profile_attrs.PROFILE_TREE],
            "format": a.get(profile_attrs.PROFILE_FORMAT),
            "sample_count": _as_int(a.get(profile_attrs.PROFILE_SAMPLE_COUNT)),
            "interval": a.get(profile_attrs.PROFILE_INTERVAL),
            "duration": a.get(profile_attrs.PROFILE_DURATION),
            "truncated": bool(a.get(profile_attrs.PROFILE_TRUNCATED, False)),
        }

    return {
        "_id": record_id(project_id, span.trace_id, span.span_id),
        "project_id": project_id,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "endpoint": endpoint_of(method, route, span.name),
        "service": {
            "name": resource.get("service.name"),
            "namespace": resource.get("service.namespace"),
            "instance_id": resource.get("service.instance.id"),
        },
        "request_info": {
            "method": method,
            "path": path,
            "route": route,
            "query_params": parse_qs(str(query)) if query else {},
            "headers": _headers(a),
            "user_agent": _first(a, "user_agent.original", "http.user_agent"),
            "remote_ip": _first(a, "client.address", "http.client_ip", "net.peer.ip"),
            "scheme": _first(a, "url.scheme", "http.scheme"),
            "host": _first(a, "server.address", "http.host", "net.host.name"),
        },
        "response_info": {
            "status_code": status_code,
            "response_size": _as_int(
                _first(a, "http.response.body.size", "http.response_content_length")
            ),
            "content_type": _first(a, "http.response.header.content-type"),
        },
        "status": {"code": span.status_code, "message": span.status_message},
        "is_error": is_error,
        "performance_metrics": metrics,
        "profile": profile,
        "version_info": {
            "app_version": resource.get("service.version"),
            "git_commit": _first(resource, "vcs.ref.head.revision", "vcs.repository.ref.revision"),
            "deploy_time": None,
        },
        "environment": {
            "python_version": resource.get("process.runtime.version"),
            "runtime": resource.get("process.runtime.name"),
            "framework": span.scope_name or None,
            "framework_version": span.scope_version or None,
            "server_info": resource.get("host.name"),
            "deployment_environment": _first(
                resource, "deployment.environment.name", "deployment.environment"
            ),
            "telemetry_sdk": resource.get("telemetry.sdk.language"),
        },
        "timestamp": started,
        "end_time": _ns_to_datetime(span.end_time_ns),
        "created_at": received_at,
        "expire_at": received_at + retention,
    }


def _span_doc(span: SpanData) -> dict[str, Any]:
    attrs = span.attributes
    if _PROFILE_ATTRIBUTES.intersection(attrs):
        attrs = {k: v for k, v in attrs.items() if k not in _PROFILE_ATTRIBUTES}
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "start_ns": span.start_time_ns,
        "end_ns": span.end_time_ns,
        "duration": span.duration_s,
        "status_code": span.status_code,
        "status_message": span.status_message,
        "attributes": attrs,
        "events": span.events,
        "links": span.links,
        "scope": {"name": span.scope_name, "version": span.scope_version},
    }


def build_span_documents(
    project_id: str,
    batch: Iterable[ResourceSpans],
    *,
    retention: timedelta,
    received_at: datetime,
) -> list[dict[str, Any]]:
    """One `spans` document per resource in the batch (an export request carries one or a
    few): one write carries many spans, and the store's cost per document is paid once per
    request rather than once per trace. A list that would compress to more than
    `MAX_SPANS_BLOB_BYTES` is split between traces into several documents.

    The span list is one compressed value (`spans_blob`, see span_codec; read a trace back
    with `trace_spans`); what queries filter on stays in plain fields, the document's traces in
    `trace_ids` (indexed). The `_id` hashes the project and every trace and span id, so
    resending the same request maps to the same documents.
    """
    docs: list[dict[str, Any]] = []
    for group in batch:
        if group.spans:
            docs += _span_documents(project_id, group.resource, group.spans, retention, received_at)
    return docs


def _span_documents(
    project_id: str,
    resource: dict[str, Any],
    spans: list[SpanData],
    retention: timedelta,
    received_at: datetime,
) -> list[dict[str, Any]]:
    trace_ids = list(dict.fromkeys(span.trace_id for span in spans))  # first-seen order
    blob = encode_spans([_span_doc(span) for span in spans])
    if len(blob) > MAX_SPANS_BLOB_BYTES and len(trace_ids) > 1:
        # Far past what real telemetry compresses to (~150 B a span): keep each trace whole
        # and halve the rest, so the same request always splits the same way.
        first = set(trace_ids[: len(trace_ids) // 2])
        halves = (
            [s for s in spans if s.trace_id in first],
            [s for s in spans if s.trace_id not in first],
        )
        return [
            doc
            for half in halves
            for doc in _span_documents(project_id, resource, half, retention, received_at)
        ]
    digest = hashlib.sha256(project_id.encode())
    for span in spans:
        digest.update(span.trace_id.encode() + span.span_id.encode())
    return [
        {
            "_id": digest.hexdigest()[:32],
            "project_id": project_id,
            "trace_ids": trace_ids,
            "service_name": resource.get("service.name"),
            "resource": resource,
            "start_time": _ns_to_datetime(min(s.start_time_ns for s in spans)),
            "end_time": _ns_to_datetime(max(s.end_time_ns for s in spans)),
            "span_count": len(spans),
            "spans_format": SPANS_FORMAT,
            "spans_blob": blob,
            "created_at": received_at,
            "expire_at": received_at + retention,
        }
    ]


def build_performance_records(
    project_id: str,
    batch: Iterable[ResourceSpans],
    *,
    retention: timedelta,
    received_at: datetime,
) -> list[dict[str, Any]]:
    """One `performance_records` document per entry span in the batch."""
    return [
        build_performance_record(
            project_id, span, group.resource, retention=retention, received_at=received_at
        )
        for group in batch
        for span in group.spans
        if is_entry_span(span)
    ]
