"""What each job type does. A handler is a plain function `handler(ctx, job) -> result`
(a JSON-able dict stored on the job); raising `JobFailure` fails the attempt with a reason,
retried by the queue when `retryable` and attempts remain."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from analysis_service.analysis import analyze_record
from analysis_service.analyzers import AnalyzerError
from analysis_service.config import AnalysisSettings
from analysis_service.inputs import RecordNotFoundError
from analysis_service.reports import build_report, render_html, render_markdown
from storage_backend import Store
from storage_backend.jobs import Job

logger = logging.getLogger(__name__)


class JobFailure(Exception):
    """The job's attempt failed for `reason`; `retryable` lets the queue try again."""

    def __init__(self, reason: str, *, retryable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(slots=True)
class TaskContext:
    store: Store
    settings: AnalysisSettings
    worker_id: str


Handler = Callable[[TaskContext, Job], dict[str, Any] | None]


def analysis_id_for(job_id: str, index: int = 0) -> str:
    """Deterministic per job (and record): a retried job replaces its analysis."""
    return f"ana_{job_id.removeprefix('job_')}" + (f"_{index}" if index else "")


def _analyze(ctx: TaskContext, job: Job, record_id: str, analysis_id: str, *,
             final_attempt: bool) -> None:  # fmt: skip
    analyze_record(
        ctx.store,
        ctx.settings,
        record_id,
        analysis_id=analysis_id,
        job_id=job.id,
        analysis_type=job.payload.get("analysis_type", "manual"),
        service=job.payload.get("ai_service"),
        final_attempt=final_attempt,
    )


def run_analyze(ctx: TaskContext, job: Job) -> dict[str, Any]:
    """Analyse `payload.record_id` with `payload.ai_service` (or the project's/default)."""
    record_id = job.payload.get("record_id")
    if not record_id:
        raise JobFailure("analyze job without record_id")
    analysis_id = analysis_id_for(job.id)
    try:
        _analyze(ctx, job, record_id, analysis_id, final_attempt=job.attempts >= job.max_attempts)
    except RecordNotFoundError as exc:
        raise JobFailure(str(exc)) from None
    except KeyError as exc:  # an unknown AI service name
        raise JobFailure(str(exc.args[0])) from None
    except AnalyzerError as exc:
        raise JobFailure(exc.reason, retryable=exc.retryable) from None
    return {"analysis_id": analysis_id, "record_id": record_id}


def run_batch_analyze(ctx: TaskContext, job: Job) -> dict[str, Any]:
    """Analyse each of `payload.record_ids`; one failure does not stop the others. The job
    completes with the per-record outcome (it fails only if every record failed)."""
    record_ids = list(job.payload.get("record_ids") or [])
    if not record_ids:
        raise JobFailure("batch_analyze job without record_ids")
    outcomes = []
    for index, record_id in enumerate(record_ids, start=1):
        analysis_id = analysis_id_for(job.id, index)
        try:
            # Each record gets one attempt: the batch itself is not retried per record.
            _analyze(ctx, job, record_id, analysis_id, final_attempt=True)
            outcomes.append({"record_id": record_id, "analysis_id": analysis_id,
                             "status": "completed"})  # fmt: skip
        except (AnalyzerError, RecordNotFoundError, KeyError) as exc:
            outcomes.append({"record_id": record_id, "analysis_id": analysis_id,
                             "status": "failed", "error": str(exc)})  # fmt: skip
    if all(o["status"] == "failed" for o in outcomes):
        raise JobFailure(f"all {len(outcomes)} analyses failed: {outcomes[0]['error']}")
    return {"analyses": outcomes}


def _parse_time(value: Any, default: datetime) -> datetime:
    if not value:
        return default
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def run_report(ctx: TaskContext, job: Job) -> dict[str, Any]:
    """Build the performance report of `payload.project_id` over [start, end) (default: the
    last 24 hours); the job's result holds the data and its Markdown and HTML renderings
    (the REST API serves them without depending on this package)."""
    project_id = job.payload.get("project_id") or job.project_id
    if not project_id:
        raise JobFailure("report job without project_id")
    now = datetime.now(timezone.utc)
    try:
        end = _parse_time(job.payload.get("end"), now)
        start = _parse_time(job.payload.get("start"), end - timedelta(days=1))
    except ValueError as exc:
        raise JobFailure(f"bad report period: {exc}") from None
    report = build_report(ctx.store, project_id, start, end)
    return {"report": report, "markdown": render_markdown(report), "html": render_html(report)}


def run_cleanup(ctx: TaskContext, job: Job) -> dict[str, Any]:
    """Delete analyses and finished jobs older than `payload.days` (default: the configured
    retention, the brief's 30 days)."""
    days = int(job.payload.get("days") or ctx.settings.cleanup_retention_days)
    if days < 1:
        raise JobFailure(f"cleanup days must be >= 1, got {days}")
    cutoff = datetime.now(timezone.utc) - timedelta(days=days)
    analyses = ctx.store.analyses.delete_created_before(cutoff)
    jobs = ctx.store.jobs.delete_finished_before(cutoff)
    logger.info("cleanup: %d analyses and %d jobs older than %d days removed",
                analyses, jobs, days)  # fmt: skip
    return {"days": days, "analyses_deleted": analyses, "jobs_deleted": jobs}


HANDLERS: dict[str, Handler] = {
    "analyze": run_analyze,
    "batch_analyze": run_batch_analyze,
    "report": run_report,
    "cleanup": run_cleanup,
}
