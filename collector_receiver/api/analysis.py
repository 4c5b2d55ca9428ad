"""REST: `/api/v1/analysis/...`, the brief's section 6.3 plus batch analysis, reports and
queue stats. Thin: enqueue through `storage_backend`'s job queue, read analyses and jobs;
the analysis service's workers do the work.

Access (access.py): the admin token sees every project; a project key (`authorization:
Bearer <key>` or `x-pystrument-project-key`) only its own project's records, analyses and
tasks, and queue stats of its own jobs. Projects are named by id in paths, never by key.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from collector_receiver.api.access import Caller, CallerDep
from collector_receiver.api.envelope import ApiError, ErrorCode, success
from storage_backend import Store
from storage_backend.jobs import JobAlreadyActiveError

router = APIRouter(prefix="/api/v1/analysis", tags=["analysis"])

ON_DEMAND_PRIORITY = 10  # someone is waiting: ahead of automatic and scheduled jobs
MAX_BATCH = 100


def _store(request: Request) -> Store:
    return request.app.state.store


StoreDep = Annotated[Store, Depends(_store)]


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in ("_id", "active_key")}
    return {"id": doc["_id"], **out}


def _owned(doc: dict[str, Any] | None, caller: Caller, what: str, ident: str) -> dict:
    # Another project's object is reported exactly like a missing one: ids are not probes.
    if doc is None or not (
        caller.is_admin or (caller.project and doc.get("project_id") == caller.project.id)
    ):
        raise ApiError(ErrorCode.PARAMETER_ERROR, f"no {what} {ident!r}")
    return doc


def _enqueue(store: Store, job_type: str, payload: dict, project_id: str, dedupe: str | None):
    try:
        return store.jobs.enqueue(
            job_type, payload, project_id=project_id, priority=ON_DEMAND_PRIORITY,
            dedupe_key=dedupe,
        )  # fmt: skip
    except JobAlreadyActiveError as exc:
        raise ApiError(ErrorCode.ANALYSIS_IN_PROGRESS, str(exc), {"task_id": exc.job_id}) from None


@router.post("/analyze/{record_id}", summary="Analyse one performance record")
def analyze(
    record_id: str,
    store: StoreDep,
    caller: CallerDep,
    ai_service: Annotated[str | None, Query(description="configured service name")] = None,
) -> dict[str, Any]:
    """Enqueue an analysis; returns its `task_id` (poll `task-status`). 20006 when the
    record is already being analysed."""
    records = store.collection("performance_records")
    record = _owned(
        records.find_one({"_id": record_id}, {"project_id": 1}),
        caller,
        "performance record",
        record_id,
    )
    payload = {"record_id": record_id, "analysis_type": "manual", "ai_service": ai_service}
    task_id = _enqueue(store, "analyze", payload, record["project_id"], f"analyze:{record_id}")
    return success({"task_id": task_id, "status": "pending"})


class BatchRequest(BaseModel):
    record_ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    ai_service: str | None = None
    project_id: str | None = Field(None, description="with the admin token: the records' project")


@router.post("/batch-analyze", summary="Analyse several performance records of one project")
def batch_analyze(body: BatchRequest, store: StoreDep, caller: CallerDep) -> dict[str, Any]:
    """One job analysing every listed record (all of one project)."""
    project_id = caller.default_project_id(body.project_id)
    ids = list(dict.fromkeys(body.record_ids))
    found = {
        d["_id"]
        for d in store.collection("performance_records").find(
            {"_id": {"$in": ids}, "project_id": project_id}, {"_id": 1}
        )
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise ApiError(ErrorCode.PARAMETER_ERROR, f"no performance records {missing[:5]}")
    payload = {"record_ids": ids, "analysis_type": "manual", "ai_service": body.ai_service}
    task_id = _enqueue(store, "batch_analyze", payload, project_id, None)
    return success({"task_id": task_id, "status": "pending", "records": len(ids)})


@router.get("/result/{analysis_id}", summary="One analysis")
def result(analysis_id: str, store: StoreDep, caller: CallerDep) -> dict[str, Any]:
    doc = _owned(store.analyses.get(analysis_id), caller, "analysis", analysis_id)
    return success(_public(doc))


@router.get("/task-status/{task_id}", summary="State of an analysis, report or batch job")
def task_status(task_id: str, store: StoreDep, caller: CallerDep) -> dict[str, Any]:
    """pending | running | completed | failed, attempts, the error, and the analyses made."""
    job = _owned(store.jobs.get(task_id), caller, "task", task_id)
    analyses = [
        {"id": a["_id"], "record_id": a.get("record_id"), "status": a.get("status")}
        for a in store.analyses.for_job(task_id)
    ]
    result = job.get("result")
    if job["type"] == "report" and result:
        result = {"report": result.get("report")}  # the documents: /report/{task_id}
    return success(
        {
            "task_id": job["_id"],
            "type": job["type"],
            "state": job["state"],
            "attempts": job.get("attempts", 0),
            "max_attempts": job.get("max_attempts"),
            "error": job.get("error"),
            "created_at": job.get("created_at"),
            "started_at": job.get("started_at"),
            "finished_at": job.get("finished_at"),
            "result": result,
            "analyses": analyses,
        }
    )


@router.get("/history/{project_id}", summary="A project's analyses, newest first")
def history(
    project_id: str,
    store: StoreDep,
    caller: CallerDep,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The brief's `history/{project_key}`, by project id: keys stay out of URLs."""
    caller.require_project(project_id)
    store.projects.get(project_id)  # 20001 for an unknown project
    items = [_public(d) for d in store.analyses.history(project_id, skip=skip, limit=limit)]
    return success({"total": store.analyses.count(project_id), "items": items})


def _utc(when: datetime | None) -> datetime | None:
    """A naive time is taken as UTC (so naive and aware bounds compare)."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=timezone.utc)


class ReportRequest(BaseModel):
    start: datetime | None = Field(None, description="default: end minus 24 hours")
    end: datetime | None = Field(None, description="default: now")
    project_id: str | None = Field(None, description="default: the project key's project")


@router.post("/report", summary="Generate a performance report")
def request_report(body: ReportRequest, store: StoreDep, caller: CallerDep) -> dict[str, Any]:
    """Enqueue a report of a project; download it from `/report/{task_id}` when done."""
    project_id = caller.default_project_id(body.project_id)
    store.projects.get(project_id)
    start, end = _utc(body.start), _utc(body.end)
    if start and end and start >= end:
        raise ApiError(ErrorCode.PARAMETER_ERROR, "start must be before end")
    payload = {
        "project_id": project_id,
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "report_type": "summary",
    }
    task_id = _enqueue(store, "report", payload, project_id, None)
    return success({"task_id": task_id, "status": "pending"})


@router.get("/report/{task_id}", summary="Download a report (Markdown or HTML)")
def download_report(
    task_id: str,
    store: StoreDep,
    caller: CallerDep,
    format: Literal["markdown", "html"] = "markdown",
) -> Response:
    """The report as rendered by the worker that generated it (an attachment)."""
    job = _owned(store.jobs.get(task_id), caller, "task", task_id)
    if job["type"] != "report":
        raise ApiError(ErrorCode.PARAMETER_ERROR, f"task {task_id!r} is not a report")
    if job["state"] != "completed":
        raise ApiError(
            ErrorCode.ANALYSIS_IN_PROGRESS if job["state"] in ("pending", "running")
            else ErrorCode.SYSTEM_ERROR,
            f"report task is {job['state']}",
            {"state": job["state"], "error": job.get("error")},
        )  # fmt: skip
    rendered = job["result"]
    body, media, ext = (
        (rendered["html"], "text/html; charset=utf-8", "html")
        if format == "html"
        else (rendered["markdown"], "text/markdown; charset=utf-8", "md")
    )
    return Response(
        body,
        media_type=media,
        headers={"content-disposition": f'attachment; filename="report-{task_id}.{ext}"'},
    )


@router.get("/queue/stats", summary="Job queue: counts by state and type, oldest pending age")
def queue_stats(store: StoreDep, caller: CallerDep) -> dict[str, Any]:
    """The admin sees the whole queue (scheduled cleanups included); a project key sees its
    project's jobs."""
    return success(store.jobs.stats(project_id=None if caller.is_admin else caller.project.id))
