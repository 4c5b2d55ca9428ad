"""Analysing one record end to end: load it, run the chosen analyzer, store the outcome in
`ai_analysis_results` (the brief's section 3.2 document), completed or failed with its
reason."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from analysis_service.analyzers import AnalyzerError, build_analyzer
from analysis_service.config import AnalysisSettings
from analysis_service.inputs import AnalysisInput, RecordNotFoundError, load_input
from storage_backend import Project, ProjectNotFoundError, Store

logger = logging.getLogger(__name__)

AI_SERVICE_UNAVAILABLE = 20005  # the REST API's error code, kept with the failure


def _project(store: Store, project_id: str) -> Project | None:
    try:
        return store.projects.get(project_id)
    except ProjectNotFoundError:  # deleted since: the analysis still stands on its own
        return None


def analyze_record(
    store: Store,
    settings: AnalysisSettings,
    record_id: str,
    *,
    analysis_id: str,
    job_id: str | None = None,
    analysis_type: str = "manual",
    service: str | None = None,
    final_attempt: bool = True,
) -> dict[str, Any]:
    """Analyse `record_id` and store the analysis under `analysis_id`; return the document.

    Raises AnalyzerError (after storing a failed analysis when `final_attempt`, or without
    storing when a retry follows) and RecordNotFoundError.
    """
    started = time.monotonic()
    inp: AnalysisInput = load_input(store, record_id)
    project = _project(store, inp.record["project_id"])
    # The job's choice, else the project's `ai_service`, else the server default.
    name, config = settings.service(service or (project.config.ai_service if project else None))
    now = datetime.now(timezone.utc)
    doc: dict[str, Any] = {
        "_id": analysis_id,
        "job_id": job_id,
        "project_id": inp.record["project_id"],
        "record_id": record_id,
        "trace_id": inp.record.get("trace_id"),
        "endpoint": inp.record.get("endpoint"),
        "analysis_type": analysis_type,
        "ai_service": {
            "name": name,
            "provider": config.provider,
            "model": config.model,
            "version": config.version,
        },
        "analysis_input": inp.summary(),
        "created_at": now,
    }
    if project is not None:
        doc["expire_at"] = store.retention_policy.analysis_expiry(project, now)
    try:
        output = build_analyzer(name, config, settings.analysis_templates).analyze(inp)
    except AnalyzerError as exc:
        if exc.retryable and not final_attempt:
            raise
        doc.update(
            status="failed",
            error={
                "code": AI_SERVICE_UNAVAILABLE if exc.unavailable else None,
                "message": exc.reason,
                "retryable": exc.retryable,
            },
            analysis_results=None,
            analysis_metadata={"duration": round(time.monotonic() - started, 4)},
            completed_at=datetime.now(timezone.utc),
        )
        store.analyses.save(doc)
        raise
    doc["ai_service"].update(provider=output.provider, model=output.model,
                             version=output.version)  # fmt: skip
    doc.update(
        status="completed",
        analysis_results=output.results,
        analysis_metadata={
            "duration": round(time.monotonic() - started, 4),
            "confidence_score": output.confidence,
            "tokens_used": output.tokens_used,
            "cost": output.cost,
        },
        completed_at=datetime.now(timezone.utc),
    )
    store.analyses.save(doc)
    return doc


__all__ = ["AnalyzerError", "RecordNotFoundError", "analyze_record"]
