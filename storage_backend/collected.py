"""Performance records pushed in the brief's JSON shape (`POST /api/v1/performance/collect`).

A legacy path beside OTLP for SDKs that speak the original brief's format: the record is
stored as a `performance_records` document like those built from spans, so every query,
rollup and analysis treats both alike. Such records have no spans (no trace view) and their
call structure, when sent, is the flat `function_calls` list rather than an encoded tree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from storage_backend.models import Project
from storage_backend.records import endpoint_of
from storage_backend.rollups import record_rollups
from storage_backend.schema import PERFORMANCE_RECORDS
from storage_backend.store import Store


def storable(value: Any) -> Any:
    """User-sent JSON made storable anywhere in BSON: keys without NUL, `.` or a leading `$`;
    lone surrogates (valid JSON, invalid UTF-8) kept as visible escapes; integers beyond
    BSON's 64 bits kept as their decimal text."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {
            storable(str(k)).replace("\x00", "").replace(".", "_").lstrip("$") or "_": storable(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _record_id(project_id: str, payload: dict[str, Any]) -> str:
    """Deterministic, so a client's retry of the same record stores it once."""
    raw = json.dumps(payload, sort_keys=True, default=str).encode()
    return "col_" + hashlib.sha256(project_id.encode() + raw).hexdigest()[:40]


def build_collected_record(
    project: Project, payload: dict[str, Any], *, store: Store, received_at: datetime
) -> dict[str, Any]:
    """The stored document of one validated brief-shaped record (see module docstring)."""
    payload = storable(payload)
    request = dict(payload.get("request_info") or {})
    response = dict(payload.get("response_info") or {})
    metrics = dict(payload.get("performance_metrics") or {})
    method = (request.get("method") or "").upper() or None
    request["method"] = method
    route = request.get("route")
    status_code = response.get("status_code")
    timestamp = payload.get("timestamp") or received_at
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=timezone.utc)
    trace_id = payload.get("trace_id") or ""
    keep = store.retention_policy.for_project(project)
    return {
        "_id": _record_id(project.id, payload),
        "project_id": project.id,
        "trace_id": trace_id,
        "span_id": "",
        "parent_span_id": None,
        "name": endpoint_of(method, route or request.get("path"), "unknown"),
        "kind": "server",
        "endpoint": endpoint_of(method, route or request.get("path"), "unknown"),
        "service": {"name": payload.get("service_name"), "namespace": None, "instance_id": None},
        "request_info": request,
        "response_info": response,
        "status": {"code": "unset", "message": ""},
        "is_error": bool(payload.get("is_error"))
        or (status_code is not None and status_code >= 500),
        "performance_metrics": metrics,
        "function_calls": list(payload.get("function_calls") or []),
        "profile": None,
        "version_info": dict(payload.get("version_info") or {}),
        "environment": dict(payload.get("environment") or {}),
        "source": "collect",
        "timestamp": timestamp,
        "created_at": received_at,
        "expire_at": received_at + keep.records,
    }


def store_collected_records(
    store: Store, project: Project, payloads: Sequence[dict[str, Any]]
) -> int:
    """Store validated brief-shaped records (and count them into the rollups); returns how
    many were new (a resent record is recognised and skipped)."""
    now = datetime.now(timezone.utc)
    docs = [build_collected_record(project, p, store=store, received_at=now) for p in payloads]
    written = store.insert_new(PERFORMANCE_RECORDS, docs)
    record_rollups(store.db, written)
    if written:
        store.projects.touch_activity(project.id, now)
    return len(written)
