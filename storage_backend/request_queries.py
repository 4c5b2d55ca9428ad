"""The requests list (filtered, sorted, paged) and one request's detail.

Every filter is served by an index that starts with `project_id` (schema.py); pages read
newest or slowest first through widening windows (windowed_scan.py); the total comes from
the rollups when the filter is one they count (request_rollups.py), else it is counted only
up to `TOTAL_CAP` and flagged a lower bound, so a page costs about the same at 10k and 1M.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from otel_pyinstrument_processor import CallTreeNode, ProfileDecodeError, decode_profile, flatten
from storage_backend.errors import translate_errors
from storage_backend.query_models import (
    RequestDetail,
    RequestFilter,
    RequestPage,
    RequestSort,
    RequestSummary,
    SpanView,
)
from storage_backend.records import record_id as make_record_id
from storage_backend.request_rollups import rollup_total, slowest_bound
from storage_backend.rollups import as_utc
from storage_backend.schema import PERFORMANCE_RECORDS
from storage_backend.trace_spans import trace_spans
from storage_backend.windowed_scan import duration_bounds, time_bounds, top_descending

TOTAL_CAP = 1_000
"""Totals are exact up to this; beyond it, and when counted only within the newest (or
slowest) window a page read, `total_is_lower_bound` is True."""
COUNT_SCAN_LIMIT = 20_000
MAX_PAGE_SIZE = 200
_STATUS_CLASSES = {"2xx": 200, "3xx": 300, "4xx": 400, "5xx": 500}
_SORTS: dict[str, tuple[str, int]] = {
    "-timestamp": ("timestamp", DESCENDING),
    "timestamp": ("timestamp", ASCENDING),
    "-duration": ("performance_metrics.total_duration", DESCENDING),
    "duration": ("performance_metrics.total_duration", ASCENDING),
}
# The list never needs the call tree, the largest field by far.
_SUMMARY_FIELDS = {
    "project_id": 1,
    "trace_id": 1,
    "span_id": 1,
    "endpoint": 1,
    "request_info.method": 1,
    "request_info.path": 1,
    "response_info.status_code": 1,
    "is_error": 1,
    "performance_metrics": 1,
    "version_info.app_version": 1,
    "service.name": 1,
    "timestamp": 1,
    "profile.format": 1,
}


def records_query(project_id: str, flt: RequestFilter | None = None) -> dict[str, Any]:
    """The MongoDB filter of a requests-list query (exposed for tests and the benchmark)."""
    flt = flt or RequestFilter()
    query: dict[str, Any] = {"project_id": project_id}
    if flt.endpoint:
        query["endpoint"] = flt.endpoint
    if flt.method:
        query["request_info.method"] = flt.method.upper()
    if flt.status_class:
        low = _STATUS_CLASSES[flt.status_class]
        query["response_info.status_code"] = {"$gte": low, "$lt": low + 100}
    if flt.min_duration is not None or flt.max_duration is not None:
        rng: dict[str, float] = {}
        if flt.min_duration is not None:
            rng["$gte"] = flt.min_duration
        if flt.max_duration is not None:
            rng["$lte"] = flt.max_duration
        query["performance_metrics.total_duration"] = rng
    if flt.version is not None:
        query["version_info.app_version"] = flt.version or None
    if flt.since or flt.until:
        window: dict[str, datetime] = {}
        if flt.since:
            window["$gte"] = flt.since
        if flt.until:
            window["$lt"] = flt.until
        query["timestamp"] = window
    if flt.errors_only:
        query["is_error"] = True
    return query


def summary_of(doc: dict[str, Any]) -> RequestSummary:
    """The list row of a stored performance record."""
    request = doc.get("request_info") or {}
    metrics = doc.get("performance_metrics") or {}
    profile = doc.get("profile")
    return RequestSummary(
        id=str(doc["_id"]),
        project_id=doc["project_id"],
        trace_id=doc.get("trace_id", ""),
        span_id=doc.get("span_id", ""),
        endpoint=doc.get("endpoint", ""),
        method=request.get("method"),
        path=request.get("path"),
        status_code=(doc.get("response_info") or {}).get("status_code"),
        is_error=bool(doc.get("is_error")),
        duration=float(metrics.get("total_duration") or 0.0),
        cpu_time=metrics.get("cpu_time"),
        version=(doc.get("version_info") or {}).get("app_version"),
        service_name=(doc.get("service") or {}).get("name"),
        timestamp=doc["timestamp"],
        has_profile=bool(profile),
    )


def list_requests(
    db: Database,
    project_id: str,
    flt: RequestFilter | None = None,
    *,
    sort: RequestSort = "-timestamp",
    page: int = 1,
    size: int = 20,
) -> RequestPage:
    """One page (1-based) of a project's requests matching `flt`, sorted by `sort`."""
    if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"page must be >= 1 and size in 1..{MAX_PAGE_SIZE}")
    if sort not in _SORTS:
        raise ValueError(f"sort must be one of {sorted(_SORTS)}")
    flt = dataclasses.replace(
        flt or RequestFilter(),
        since=as_utc(flt.since) if flt and flt.since else None,
        until=as_utc(flt.until) if flt and flt.until else None,
    )
    field, direction = _SORTS[sort]
    server, keep = split_query(project_id, flt, field)
    skip = (page - 1) * size
    with translate_errors():
        col = db[PERFORMANCE_RECORDS]
        counted = server
        if direction == DESCENDING:
            bounds = (
                time_bounds(flt.until or datetime.now(timezone.utc), flt.since)
                if field == "timestamp"
                else duration_bounds(
                    flt.min_duration, slowest_bound(db, project_id, flt, skip + size)
                )
            )
            docs, counted = top_descending(
                col,
                server,
                field,
                bounds,
                needed=skip + size,
                projection=_SUMMARY_FIELDS,
                keep=keep,
            )
            docs = docs[skip:]
        else:
            # Oldest/fastest first is rare (no dashboard asks it); it reads every match.
            cursor = col.find(server, _SUMMARY_FIELDS).sort(field, direction)
            docs = [d for d in cursor if keep is None or keep(d)][skip : skip + size]
        exact = rollup_total(db, project_id, flt)
        if exact is not None:
            total, lower_bound = exact, False
        else:
            total, lower_bound = _count(col, counted, keep)
            # Counted within the last window read: a narrower window than the filter's
            # means there are more matches beyond it.
            lower_bound = lower_bound or counted.get(field) != server.get(field)
    return RequestPage(
        items=[summary_of(d) for d in docs],
        page=page,
        size=size,
        total=total,
        total_is_lower_bound=lower_bound,
    )


def split_query(
    project_id: str, flt: RequestFilter, sort_field: str
) -> tuple[dict[str, Any], Callable[[dict[str, Any]], bool] | None]:
    """The part of a requests-list filter an index serves (sent to the server) and a check
    for the rest (applied to each fetched row). SecantusDB 0.7 plans a collection scan as
    soon as one predicate is on a field outside its chosen index (measured), so only
    index fields go to the server; the windows bound how many rows the check sees."""
    full = records_query(project_id, flt)
    served = {"project_id", sort_field}
    if flt.endpoint:
        served.add("endpoint")
    elif flt.version is not None and sort_field == "timestamp":
        served.add("version_info.app_version")
    server = {k: v for k, v in full.items() if k in served}
    rest = {k: v for k, v in full.items() if k not in served}
    if not rest:
        return server, None
    return server, lambda doc: all(_matches(_get(doc, k), cond) for k, cond in rest.items())


def _get(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _matches(value: Any, cond: Any) -> bool:
    """MongoDB's meaning of the conditions `records_query` builds (equality, $gte/$lt/$lte)."""
    if not isinstance(cond, dict):
        return value == cond
    if value is None:
        return False
    if isinstance(value, datetime):
        value = as_utc(value)
    checks = {
        "$gte": lambda b: value >= b,
        "$lt": lambda b: value < b,
        "$lte": lambda b: value <= b,
    }
    return all(checks[op](bound) for op, bound in cond.items())


def _count(
    col: Collection, server: dict[str, Any], keep: Callable[[dict[str, Any]], bool] | None
) -> tuple[int, bool]:
    """(total, is a lower bound) of the matches of `server` (a page's last window): exact
    up to TOTAL_CAP; with a residual check, counted over at most COUNT_SCAN_LIMIT rows.
    Counting only inside the window keeps the cost with the page, not the collection
    (SecantusDB 0.7 materialises every match of a find before its limit, measured)."""
    if keep is None:
        total = len(list(col.find(server, {"_id": 1}).limit(TOTAL_CAP + 1)))
        return min(total, TOTAL_CAP), total > TOTAL_CAP
    total = scanned = 0
    for doc in col.find(server, _SUMMARY_FIELDS).limit(COUNT_SCAN_LIMIT):
        scanned += 1
        total += keep(doc)
        if total > TOTAL_CAP:
            return TOTAL_CAP, True
    return total, scanned >= COUNT_SCAN_LIMIT


def decode_record_tree(doc: dict[str, Any]) -> tuple[CallTreeNode | None, str | None]:
    """The record's decoded call tree, or (None, why) when it has none or it is unreadable."""
    profile = doc.get("profile")
    if not profile or not profile.get("tree"):
        return None, None
    try:
        return decode_profile(profile["tree"], profile.get("format")), None
    except ProfileDecodeError as exc:
        return None, str(exc)


def _find_record(db: Database, record_id: str, project_id: str | None) -> dict[str, Any] | None:
    """The performance record `record_id` (only in `project_id`, when given)."""
    query: dict[str, Any] = {"_id": record_id}
    if project_id is not None:
        query["project_id"] = project_id
    with translate_errors():
        return db[PERFORMANCE_RECORDS].find_one(query)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordProfile:
    """A request's call tree with what an export links it to (`profile_exports`)."""

    tree: CallTreeNode
    trace_id: str
    span_id: str
    start_unix_nano: int
    duration_nano: int
    resource: dict[str, str]
    interval: float | None
    endpoint: str


def get_record_profile(
    db: Database, record_id: str, project_id: str | None = None
) -> RecordProfile | None:
    """One request's decoded call tree and its span's identity; None when there is no such
    record (in `project_id`, when given) or it carries no tree. Raises ProfileDecodeError
    for a stored tree that cannot be read."""
    doc = _find_record(db, record_id, project_id)
    profile = (doc or {}).get("profile") or {}
    if doc is None or not profile.get("tree"):
        return None
    tree = decode_profile(profile["tree"], profile.get("format"))
    service = doc.get("service") or {}
    resource = {
        key: str(service[field])
        for key, field in (
            ("service.name", "name"),
            ("service.namespace", "namespace"),
            ("service.instance.id", "instance_id"),
        )
        if service.get(field)
    }
    version = (doc.get("version_info") or {}).get("app_version")
    if version:
        resource["service.version"] = str(version)
    started = as_utc(doc["timestamp"])
    duration = float((doc.get("performance_metrics") or {}).get("total_duration") or 0.0)
    interval = profile.get("interval")
    return RecordProfile(
        tree=tree,
        trace_id=str(doc.get("trace_id") or ""),
        span_id=str(doc.get("span_id") or ""),
        start_unix_nano=int(started.timestamp() * 1e9),
        duration_nano=round(duration * 1e9),
        resource=resource,
        interval=float(interval) if isinstance(interval, (int, float)) else None,
        endpoint=str(doc.get("endpoint") or ""),
    )


def _span_views(spans: list[dict[str, Any]]) -> list[SpanView]:
    views = [
        SpanView(
            span_id=s["span_id"],
            parent_span_id=s.get("parent_span_id"),
            name=s.get("name", ""),
            kind=s.get("kind", ""),
            service_name=s.get("service_name"),
            start_time=datetime.fromtimestamp(s["start_ns"] / 1e9, tz=timezone.utc),
            duration=float(s.get("duration", 0.0)),
            status_code=s.get("status_code", "unset"),
            status_message=s.get("status_message", ""),
            attributes=dict(s.get("attributes") or {}),
            events=list(s.get("events") or []),
        )
        for s in spans
    ]
    views.sort(key=lambda v: v.start_time)
    return views


_HEX = frozenset("0123456789abcdef")


def normalize_trace_id(text: str) -> str:
    """The trace id as stored (32 lowercase hex digits) from what a user pastes: the id in
    any case, or a W3C `traceparent` header value (`00-<trace id>-<span id>-<flags>`).
    ValueError when it is neither, or the all-zero (invalid) id."""
    value = text.strip().lower()
    parts = value.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:  # a traceparent
        value = parts[1]
    if len(value) != 32 or not _HEX.issuperset(value) or value == "0" * 32:
        raise ValueError(
            f"not a trace id: {text.strip()[:80]!r} (expected 32 hex digits, "
            "or a traceparent header value)"
        )
    return value


def requests_of_trace(
    db: Database, project_ids: Sequence[str], trace_id: str
) -> list[RequestSummary]:
    """The requests (performance records) of one trace in `project_ids`, in start order:
    usually one; one per profiled service when the trace crossed several. `trace_id` as
    `normalize_trace_id` accepts it.

    Found through the trace's stored spans (indexed by trace id), whose ids give the
    candidate record ids (`records.record_id`), read by `_id`: records have no trace-id
    index (each index costs every ingested record), and the embedded server answers an
    `_id` prefix range with a collection scan (measured: 1.4 s at 20k records) but an
    `_id` `$in` from the index. So a request whose spans expired before it (`spans_days`
    shorter than `records_days`) is not found by its trace id."""
    wanted = normalize_trace_id(trace_id)
    docs: list[dict[str, Any]] = []
    for project_id in project_ids:
        ids = [
            make_record_id(project_id, wanted, span["span_id"])
            for span in trace_spans(db, project_id, wanted)
            if span.get("span_id")
        ]
        with translate_errors():
            for first in range(0, len(ids), _IDS_PER_READ):
                docs += db[PERFORMANCE_RECORDS].find(
                    {"_id": {"$in": ids[first : first + _IDS_PER_READ]}}, _SUMMARY_FIELDS
                )
    docs.sort(key=lambda d: as_utc(d["timestamp"]))
    return [summary_of(d) for d in docs]


_IDS_PER_READ = 1000


def get_request(
    db: Database, record_id: str, project_id: str | None = None
) -> RequestDetail | None:
    """One request with its trace's spans, decoded call tree and flat `function_calls`;
    None when there is no such record (in `project_id`, when given)."""
    doc = _find_record(db, record_id, project_id)
    if doc is None:
        return None
    spans = trace_spans(db, doc["project_id"], doc.get("trace_id") or "")
    tree, error = decode_record_tree(doc)
    record = {k: v for k, v in doc.items() if k not in ("_id", "profile", "expire_at")}
    record["id"] = str(doc["_id"])
    if doc.get("profile"):
        record["profile"] = {k: v for k, v in doc["profile"].items() if k != "tree"}
    return RequestDetail(
        summary=summary_of(doc),
        record=record,
        spans=_span_views(spans),
        call_tree=tree,
        function_calls=flatten(tree) if tree else list(doc.get("function_calls") or []),
        profile_error=error,
    )
