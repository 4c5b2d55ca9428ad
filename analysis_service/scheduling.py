"""Periodic jobs driven from the store: each schedule tick becomes a job whose `_id` names
the tick (e.g. `sched_cleanup_20261126T0200`), so however many workers check the schedule,
MongoDB accepts the tick's job once and refuses the rest.

The daily cleanup runs at `cleanup_hour_utc` (the brief's 02:00, keeping 30 days); optional
reports run every `report_interval_hours` for each project active in the interval.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from analysis_service.config import AnalysisSettings
from storage_backend import Store, StoreError
from storage_backend.jobs import JobAlreadyActiveError

logger = logging.getLogger(__name__)

MAINTENANCE_PRIORITY = -10  # behind analyses someone may be waiting for


def last_daily_tick(now: datetime, hour: int) -> datetime:
    """The latest `hour`:00 UTC at or before `now`."""
    tick = now.astimezone(timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    return tick if tick <= now else tick - timedelta(days=1)


def last_interval_tick(now: datetime, hours: int) -> datetime:
    """The latest multiple of `hours` since the Unix epoch at or before `now`."""
    step = hours * 3600
    return datetime.fromtimestamp(int(now.timestamp()) // step * step, tz=timezone.utc)


def enqueue_due_jobs(
    store: Store, settings: AnalysisSettings, now: datetime | None = None
) -> list[str]:
    """Enqueue the jobs of the current schedule ticks that nobody enqueued yet; return
    their ids. Safe to call often and from every worker."""
    now = now or datetime.now(timezone.utc)
    created = []
    tick = last_daily_tick(now, settings.cleanup_hour_utc)
    job = _enqueue_tick(
        store,
        f"sched_cleanup_{tick:%Y%m%dT%H%M}",
        "cleanup",
        {"days": settings.cleanup_retention_days, "tick": tick.isoformat()},
        project_id=None,
    )
    if job:
        created.append(job)
    if settings.report_interval_hours:
        hours = settings.report_interval_hours
        end = last_interval_tick(now, hours)
        start = end - timedelta(hours=hours)
        for project in store.projects.list(limit=1000):
            if project.last_activity is None or project.last_activity < start:
                continue
            job = _enqueue_tick(
                store,
                f"sched_report_{project.id}_{end:%Y%m%dT%H%M}",
                "report",
                {
                    "project_id": project.id,
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                    "report_type": "scheduled",
                },
                project_id=project.id,
            )
            if job:
                created.append(job)
    return created


def _enqueue_tick(store: Store, job_id: str, job_type: str, payload: dict, *,
                  project_id: str | None) -> str | None:  # fmt: skip
    try:
        return store.jobs.enqueue(job_type, payload, project_id=project_id, job_id=job_id,
                                  priority=MAINTENANCE_PRIORITY)  # fmt: skip
    except JobAlreadyActiveError:
        return None
    except StoreError as exc:
        logger.warning("schedule tick %s not enqueued: %s", job_id, exc)
        return None
