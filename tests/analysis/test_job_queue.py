"""The job queue's storage side on the real embedded store: dedupe, priorities, retries
with backoff, reclaiming expired leases, schedule ticks, stats, cleanup."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from analysis_service import AnalysisSettings
from analysis_service.scheduling import enqueue_due_jobs, last_daily_tick
from analysis_service.tasks import TaskContext, run_cleanup
from storage_backend.jobs import Job, JobAlreadyActiveError


def test_dedupe_key_refuses_a_second_active_job_until_the_first_finishes(store):
    first = store.jobs.enqueue("analyze", {"record_id": "r1"}, dedupe_key="analyze:r1")
    with pytest.raises(JobAlreadyActiveError) as info:
        store.jobs.enqueue("analyze", {"record_id": "r1"}, dedupe_key="analyze:r1")
    assert info.value.job_id == first
    job = store.jobs.claim("w1")
    with pytest.raises(JobAlreadyActiveError):  # running still holds the key
        store.jobs.enqueue("analyze", {"record_id": "r1"}, dedupe_key="analyze:r1")
    assert store.jobs.complete(job.id, "w1", {"ok": True})
    again = store.jobs.enqueue("analyze", {"record_id": "r1"}, dedupe_key="analyze:r1")
    assert again != first


def test_claims_by_priority_then_age_and_only_due_jobs(store):
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    store.jobs.enqueue("cleanup", run_after=later)
    low = store.jobs.enqueue("analyze", priority=0)
    high = store.jobs.enqueue("report", priority=10)
    assert store.jobs.claim("w").id == high
    assert store.jobs.claim("w").id == low
    assert store.jobs.claim("w") is None
    assert store.jobs.claim("w", types=("cleanup",)) is None


def test_only_the_claiming_worker_can_finish_a_job(store):
    store.jobs.enqueue("analyze")
    job = store.jobs.claim("w1")
    assert not store.jobs.complete(job.id, "w2", {})
    assert store.jobs.fail(job.id, "w2", "nope") == ""
    assert store.jobs.get(job.id)["state"] == "running"


def test_retryable_failure_backs_off_then_fails_after_max_attempts(store):
    store.jobs.backoff_base_seconds = 0.2
    job_id = store.jobs.enqueue("analyze", max_attempts=2)
    job = store.jobs.claim("w")
    assert store.jobs.fail(job.id, "w", "429 from provider", retryable=True) == "pending"
    doc = store.jobs.get(job_id)
    assert doc["run_after"] > datetime.now(timezone.utc)
    assert store.jobs.claim("w") is None  # not due during the backoff
    time.sleep(0.3)
    job = store.jobs.claim("w")
    assert job.attempts == 2
    assert store.jobs.fail(job.id, "w", "429 again", retryable=True) == "failed"
    doc = store.jobs.get(job_id)
    assert doc["state"] == "failed" and doc["error"] == "429 again"
    assert [e["error"] for e in doc["errors"]] == ["429 from provider", "429 again"]


def test_expired_lease_is_requeued_and_gives_up_after_max_attempts(store):
    store.jobs.backoff_base_seconds = 0.01
    job_id = store.jobs.enqueue("analyze", max_attempts=2, dedupe_key="k")
    store.jobs.claim("dead-1", lease_seconds=0.05)
    time.sleep(0.1)
    store.jobs.requeue_expired()
    assert store.jobs.get(job_id)["state"] == "pending"
    time.sleep(0.05)
    store.jobs.claim("dead-2", lease_seconds=0.05)
    time.sleep(0.1)
    assert store.jobs.requeue_expired() == 1
    doc = store.jobs.get(job_id)
    assert doc["state"] == "failed"
    assert "gave up after 2 attempt(s)" in doc["error"]
    assert "active_key" not in doc  # the dedupe key is free again
    store.jobs.enqueue("analyze", dedupe_key="k")


def test_a_schedule_tick_is_enqueued_once_whoever_checks(store):
    settings = AnalysisSettings(cleanup_hour_utc=2)
    now = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
    assert last_daily_tick(now, 2) == datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
    assert last_daily_tick(now.replace(hour=1), 2).day == 25
    first = enqueue_due_jobs(store, settings, now)
    assert first == ["sched_cleanup_20261126T0200"]
    assert enqueue_due_jobs(store, settings, now + timedelta(hours=3)) == []
    assert enqueue_due_jobs(store, settings, now + timedelta(days=1)) == [
        "sched_cleanup_20261127T0200"
    ]
    assert store.jobs.get(first[0])["payload"]["days"] == 30


def test_stats_count_by_state_and_type_with_oldest_pending_age(store):
    store.jobs.enqueue("analyze")
    store.jobs.enqueue("analyze")
    store.jobs.enqueue("report")
    job = store.jobs.claim("w", types=("report",))
    store.jobs.complete(job.id, "w", None)
    time.sleep(0.05)
    stats = store.jobs.stats()
    assert stats["by_state"] == {"pending": 2, "running": 0, "completed": 1, "failed": 0}
    assert stats["by_type"]["analyze"]["pending"] == 2
    assert stats["by_type"]["report"]["completed"] == 1
    assert stats["oldest_pending_age_seconds"] >= 0.05


def test_cleanup_removes_only_what_is_older_than_the_retention(store):
    now = datetime.now(timezone.utc)
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    store.analyses.save({"_id": "ana_old", "project_id": "p", "created_at": old})
    store.analyses.save({"_id": "ana_recent", "project_id": "p", "created_at": recent})
    for job_id, finished in (("job_old", old), ("job_recent", recent)):
        store.jobs.enqueue("analyze", job_id=job_id)
        store.collection("analysis_jobs").update_one(
            {"_id": job_id}, {"$set": {"state": "completed", "finished_at": finished}}
        )
    store.jobs.enqueue("analyze", job_id="job_pending_old")  # unfinished: never removed
    store.collection("analysis_jobs").update_one(
        {"_id": "job_pending_old"}, {"$set": {"created_at": old}}
    )
    ctx = TaskContext(store, AnalysisSettings(), "w")
    job = Job("job_x", "cleanup", {"days": 30}, None, 1, 1, 60, "w")
    result = run_cleanup(ctx, job)
    assert result == {"days": 30, "analyses_deleted": 1, "jobs_deleted": 1}
    assert store.analyses.get("ana_old") is None
    assert store.analyses.get("ana_recent") is not None
    assert store.jobs.get("job_old") is None
    assert store.jobs.get("job_recent") is not None
    assert store.jobs.get("job_pending_old") is not None


def test_periodic_reports_are_enqueued_once_per_interval_for_active_projects(store):
    active, _ = store.projects.create("active")
    store.projects.create("idle")
    now = datetime(2026, 11, 26, 8, 30, tzinfo=timezone.utc)
    store.projects.touch_activity(active.id, now - timedelta(hours=3))
    settings = AnalysisSettings(report_interval_hours=6)
    created = enqueue_due_jobs(store, settings, now)
    reports = [j for j in created if j.startswith("sched_report_")]
    assert reports == [f"sched_report_{active.id}_20261126T0600"]
    payload = store.jobs.get(reports[0])["payload"]
    assert payload["start"] == "2026-11-26T00:00:00+00:00"
    assert payload["end"] == "2026-11-26T06:00:00+00:00"
    assert enqueue_due_jobs(store, settings, now + timedelta(minutes=20)) == []
