"""`/api/v1/performance/...`: push records (legacy path), requests list and detail, trends,
endpoint summary, versions and their comparison, and an endpoint's merged call tree.

Thin: authorise, call `storage_backend.queries`, wrap in the envelope. Projects are named by
id (`prj_...`) in paths and queries; the caller's header says who may see what (access.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request

from collector_receiver.api.access import Caller, CallerDep
from collector_receiver.api.collect_schema import CollectedRecordIn
from collector_receiver.api.envelope import BODY_ERROR_CODES, ApiError, ErrorCode, success
from storage_backend import Store
from storage_backend import queries as q
from storage_backend.collected import store_collected_records

router = APIRouter(prefix="/api/v1/performance", tags=["performance"])
BODY_ERROR_CODES["/api/v1/performance/collect"] = ErrorCode.PERFORMANCE_DATA_INVALID

TimeRangeParam = Literal["1h", "24h", "7d", "30d"]
MAX_COLLECT_BATCH = 1000


def _store(request: Request) -> Store:
    return request.app.state.store


def _readable_project(request: Request, caller: Caller, project_id: str) -> str:
    """Authorise, then make sure the project exists (20001 otherwise)."""
    caller.require_project(project_id)
    _store(request).projects.get(project_id)
    return project_id


def _bad_argument(exc: ValueError) -> ApiError:
    return ApiError(ErrorCode.PARAMETER_ERROR, str(exc))


@router.post(
    "/collect",
    summary="Push performance records in the brief's JSON shape (legacy; OTLP is preferred)",
)
def collect(
    request: Request,
    caller: CallerDep,
    body: Annotated[CollectedRecordIn | list[CollectedRecordIn], Body()],
    project_id: str | None = Query(None, description="with the admin token: target project"),
):
    records = body if isinstance(body, list) else [body]
    if not 1 <= len(records) <= MAX_COLLECT_BATCH:
        raise ApiError(
            ErrorCode.PERFORMANCE_DATA_INVALID,
            f"send between 1 and {MAX_COLLECT_BATCH} records per request",
        )
    target = caller.default_project_id(project_id)
    project = _store(request).projects.get(target)
    stored = store_collected_records(
        _store(request), project, [r.model_dump(exclude_none=True) for r in records]
    )
    return success({"received": len(records), "stored": stored})


@router.get("/records", summary="List requests with filters, sort and paging")
def list_records(
    request: Request,
    caller: CallerDep,
    project_id: str | None = Query(None, description="default: the project key's project"),
    page: int = Query(1, ge=1, le=100_000),
    size: int = Query(20, ge=1, le=200),
    endpoint: str | None = Query(None, max_length=4096, description="e.g. 'GET /users/<id>'"),
    method: str | None = Query(None, max_length=16),
    status_class: Literal["2xx", "3xx", "4xx", "5xx"] | None = None,
    min_duration: float | None = Query(None, ge=0, description="seconds"),
    max_duration: float | None = Query(None, ge=0, description="seconds"),
    version: str | None = Query(None, max_length=128, description="service.version"),
    since: datetime | None = None,
    until: datetime | None = None,
    errors_only: bool = False,
    sort: Literal["-timestamp", "timestamp", "-duration", "duration"] = "-timestamp",
):
    target = caller.default_project_id(project_id)
    flt = q.RequestFilter(
        endpoint=endpoint,
        method=method,
        status_class=status_class,
        min_duration=min_duration,
        max_duration=max_duration,
        version=version,
        since=since,
        until=until,
        errors_only=errors_only,
    )
    try:
        result = q.list_requests(_store(request).db, target, flt, sort=sort, page=page, size=size)
    except ValueError as exc:
        raise _bad_argument(exc) from exc
    return success(q.to_dict(result))


@router.get("/records/{record_id}", summary="One request: record, spans, call tree, calls")
def get_record(record_id: str, request: Request, caller: CallerDep):
    scope = None if caller.is_admin else caller.project.id if caller.project else None
    detail = q.get_request(_store(request).db, record_id, scope)
    if detail is None:
        raise ApiError(ErrorCode.PARAMETER_ERROR, f"no performance record {record_id!r}")
    return success(q.to_dict(detail))


@router.get("/traces/{trace_id}", summary="The requests of one trace (find a request by trace id)")
def trace_records(
    trace_id: str,
    request: Request,
    caller: CallerDep,
    project_id: str | None = Query(None, description="default: the project key's project"),
):
    """`trace_id`: 32 hex digits (any case) or a `traceparent` header value. Usually one
    request; one per profiled service when the trace crossed several; none when the trace
    is unknown here (not profiled, or expired)."""
    target = caller.default_project_id(project_id)
    try:
        found = q.requests_of_trace(_store(request).db, [target], trace_id)
    except ValueError as exc:
        raise _bad_argument(exc) from exc
    return success(
        {"trace_id": q.normalize_trace_id(trace_id), "items": [q.to_dict(r) for r in found]}
    )


@router.get("/trends/{project_id}", summary="Count, error rate, p50/p95/p99 over time")
def trends(
    project_id: str,
    request: Request,
    caller: CallerDep,
    time_range: TimeRangeParam = "24h",
    endpoint: str | None = Query(None, max_length=4096),
):
    _readable_project(request, caller, project_id)
    result = q.trends(_store(request).db, project_id, time_range, endpoint=endpoint)
    return success(q.to_dict(result))


@router.get("/endpoints/{project_id}", summary="Per-endpoint summary over a time range")
def endpoints(
    project_id: str,
    request: Request,
    caller: CallerDep,
    time_range: TimeRangeParam = "24h",
    version: str | None = Query(None, max_length=128),
):
    _readable_project(request, caller, project_id)
    result = q.endpoint_summary(_store(request).db, project_id, time_range, version=version)
    return success(q.to_dict(result))


@router.get("/versions/{project_id}", summary="service.versions seen, most recent first")
def versions(
    project_id: str,
    request: Request,
    caller: CallerDep,
    time_range: TimeRangeParam = "30d",
):
    _readable_project(request, caller, project_id)
    found = q.list_versions(_store(request).db, project_id, time_range)
    return success([q.to_dict(v) for v in found])


@router.get("/versions/{project_id}/compare", summary="Two versions side by side")
def compare(
    project_id: str,
    request: Request,
    caller: CallerDep,
    base: str = Query(max_length=128, description="baseline service.version"),
    target: str = Query(max_length=128, description="service.version to compare with it"),
    time_range: TimeRangeParam = "7d",
    endpoint: str | None = Query(None, max_length=4096),
):
    _readable_project(request, caller, project_id)
    result = q.compare_versions(
        _store(request).db, project_id, base, target, time_range, endpoint=endpoint
    )
    return success(q.to_dict(result))


@router.get("/calltree/{project_id}", summary="An endpoint's requests' call trees merged")
def calltree(
    project_id: str,
    request: Request,
    caller: CallerDep,
    endpoint: str = Query(min_length=1, max_length=4096),
    version: str | None = Query(None, max_length=128),
    limit: int = Query(200, ge=1, le=2000, description="most recent profiled requests"),
):
    _readable_project(request, caller, project_id)
    result = q.aggregated_call_tree(
        _store(request).db, project_id, endpoint, version=version, limit=limit
    )
    return success(q.to_dict(result))
