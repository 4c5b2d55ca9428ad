"""The analysis REST API on the real app and store, with a real worker doing the jobs; and
automatic analysis of slow records on ingest."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from analysis_service import AnalysisSettings, Worker
from collector_receiver.http_app import create_app
from storage_backend import AlertThreshold, ProjectConfig
from tests.analysis.records import ingest_request

ADMIN = "admin-token-for-tests"


@pytest.fixture
def api(store):
    return TestClient(create_app(store, admin_token=ADMIN))


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_analyze_then_result_status_history(api, store, project):
    record_id = ingest_request(store, project.project, duration=1.5, db_calls=12)
    headers = _auth(project.key)

    resp = api.post(f"/api/v1/analysis/analyze/{record_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    task_id = resp.json()["data"]["task_id"]

    again = api.post(f"/api/v1/analysis/analyze/{record_id}", headers=headers)
    assert again.status_code == 409
    assert again.json()["code"] == 20006
    assert again.json()["data"]["task_id"] == task_id

    status = api.get(f"/api/v1/analysis/task-status/{task_id}", headers=headers).json()["data"]
    assert status["state"] == "pending"

    Worker(store, AnalysisSettings(), schedule=False).run_until_idle()

    status = api.get(f"/api/v1/analysis/task-status/{task_id}", headers=headers).json()["data"]
    assert status["state"] == "completed" and status["attempts"] == 1
    analysis_id = status["analyses"][0]["id"]
    result = api.get(f"/api/v1/analysis/result/{analysis_id}", headers=headers).json()
    assert result["code"] == 0
    data = result["data"]
    assert data["status"] == "completed"
    assert data["record_id"] == record_id and data["analysis_type"] == "manual"
    assert data["ai_service"]["provider"] == "builtin"
    assert data["expire_at"] > data["created_at"]  # the retention policy's TTL applies
    functions = [b["function"] for b in data["analysis_results"]["bottleneck_analysis"]]
    assert "crunch_numbers" in functions
    assert any("N+1" in b["description"] for b in data["analysis_results"]["bottleneck_analysis"])

    history = api.get(f"/api/v1/analysis/history/{project.project.id}", headers=headers).json()
    assert history["data"]["total"] == 1
    assert history["data"]["items"][0]["id"] == analysis_id
    # Out-of-range paging is a parameter error, not a database overflow (found by fuzzing).
    huge = api.get(f"/api/v1/analysis/history/{project.project.id}?skip={10**20}", headers=headers)
    assert huge.status_code == 400 and huge.json()["code"] == 10001
    as_admin = api.get(f"/api/v1/analysis/history/{project.project.id}", headers=_auth(ADMIN))
    assert as_admin.json()["data"]["items"][0]["id"] == analysis_id

    # Once finished, the record may be analysed again.
    assert api.post(f"/api/v1/analysis/analyze/{record_id}", headers=headers).status_code == 200


def test_access_is_limited_to_the_key_s_project(api, store, project):
    record_id = ingest_request(store, project.project)
    assert api.post(f"/api/v1/analysis/analyze/{record_id}").json()["code"] == 10002
    bad = api.post(f"/api/v1/analysis/analyze/{record_id}", headers=_auth("psk_wrong"))
    assert bad.status_code == 401 and bad.json()["code"] == 20003
    _other, other_key = store.projects.create("someone-else")
    foreign = api.post(f"/api/v1/analysis/analyze/{record_id}", headers=_auth(other_key))
    assert foreign.json()["code"] == 10001
    assert "no performance record" in foreign.json()["msg"]
    history = api.get(f"/api/v1/analysis/history/{project.project.id}", headers=_auth(other_key))
    assert history.json()["code"] == 10003
    task_id = api.post(f"/api/v1/analysis/analyze/{record_id}", headers=_auth(project.key)).json()[
        "data"
    ]["task_id"]
    peek = api.get(f"/api/v1/analysis/task-status/{task_id}", headers=_auth(other_key))
    assert peek.json()["code"] == 10001
    # The admin token reads any project's tasks; a key's queue stats count its own jobs.
    admin = api.get(f"/api/v1/analysis/task-status/{task_id}", headers=_auth(ADMIN))
    assert admin.json()["data"]["state"] == "pending"
    theirs = api.get("/api/v1/analysis/queue/stats", headers=_auth(other_key)).json()["data"]
    assert theirs["total"] == 0
    everyone = api.get("/api/v1/analysis/queue/stats", headers=_auth(ADMIN)).json()["data"]
    assert everyone["total"] == 1


def test_batch_analyze_report_download_and_queue_stats(api, store, project):
    headers = _auth(project.key)
    ids = [ingest_request(store, project.project, endpoint=f"/api/e{i}", duration=0.2 * (i + 1))
           for i in range(3)]  # fmt: skip
    missing = api.post("/api/v1/analysis/batch-analyze", json={"record_ids": ["nope"]},
                       headers=headers)  # fmt: skip
    assert missing.json()["code"] == 10001
    batch = api.post("/api/v1/analysis/batch-analyze", json={"record_ids": ids}, headers=headers)
    batch_id = batch.json()["data"]["task_id"]
    mixed = {"start": "2026-01-02T00:00:00", "end": "2026-01-01T00:00:00+00:00"}
    backwards = api.post("/api/v1/analysis/report", json=mixed, headers=headers)
    assert backwards.json()["code"] == 10001  # naive taken as UTC, then compared
    report = api.post("/api/v1/analysis/report", json={}, headers=headers)
    report_id = report.json()["data"]["task_id"]

    stats = api.get("/api/v1/analysis/queue/stats", headers=headers).json()["data"]
    assert stats["by_state"]["pending"] == 2
    assert stats["by_type"]["batch_analyze"]["pending"] == 1
    assert stats["oldest_pending_age_seconds"] >= 0

    early = api.get(f"/api/v1/analysis/report/{report_id}", headers=headers)
    assert early.json()["code"] == 20006  # not generated yet

    worker = Worker(store, AnalysisSettings(), schedule=False)
    worker.run_until_idle()
    status = api.get(f"/api/v1/analysis/task-status/{batch_id}", headers=headers).json()["data"]
    assert status["state"] == "completed"
    assert [a["status"] for a in status["analyses"]] == ["completed"] * 3

    # The batch's analyses went in before the report ran, so the report counts them.
    md = api.get(f"/api/v1/analysis/report/{report_id}?format=markdown", headers=headers)
    assert md.status_code == 200
    assert md.headers["content-type"].startswith("text/markdown")
    assert "attachment" in md.headers["content-disposition"]
    text = md.text
    assert "| GET /api/e2 | 1 | 0 |" in text
    assert "crunch_numbers" in text  # top functions by self time
    # Each analysis found the same hot path: the report counts it once per analysis.
    assert "| handler > crunch_numbers | 3 |" in text
    assert "## Slowest requests" in text and ids[2] in text
    html = api.get(f"/api/v1/analysis/report/{report_id}?format=html", headers=headers)
    assert html.headers["content-type"].startswith("text/html")
    assert "<h2>Endpoints</h2>" in html.text and "<td>GET /api/e0</td>" in html.text
    assert "<td>handler &gt; crunch_numbers</td>" in html.text
    stats = api.get("/api/v1/analysis/queue/stats", headers=headers).json()["data"]
    assert stats["by_state"]["completed"] == 2 and stats["oldest_pending_age_seconds"] is None


def test_slow_records_enqueue_automatic_analysis_rate_limited_per_route(store):
    config = ProjectConfig(auto_analysis=True, alert_threshold=AlertThreshold(response_time=0.5))
    project, _key = store.projects.create("auto", config=config)
    quiet, _ = store.projects.create(
        "quiet", config=dataclasses.replace(config, auto_analysis=False)
    )
    ingest_request(store, project, endpoint="/fast", duration=0.1)
    slow = ingest_request(store, project, endpoint="/slow", duration=0.9)
    ingest_request(store, project, endpoint="/slow", duration=1.2)  # same route, same window
    other = ingest_request(store, project, endpoint="/other", duration=2.0)
    ingest_request(store, quiet, endpoint="/slow", duration=5.0)
    jobs = list(store.collection("analysis_jobs").find())
    assert sorted(j["payload"]["record_id"] for j in jobs) == sorted([slow, other])
    assert all(j["payload"]["analysis_type"] == "auto" for j in jobs)
    assert all(j["project_id"] == project.id for j in jobs)

    # Another receiver process (a fresh trigger) in the same window enqueues nothing more.
    from storage_backend.auto_analysis import AutoAnalysisTrigger

    store.auto_analysis = AutoAnalysisTrigger(store.jobs)
    ingest_request(store, project, endpoint="/slow", duration=3.0)
    assert store.collection("analysis_jobs").count_documents({}) == 2

    Worker(store, AnalysisSettings(), schedule=False).run_until_idle()
    analyses = store.analyses.history(project.id)
    assert {a["analysis_type"] for a in analyses} == {"auto"}
    assert {a["status"] for a in analyses} == {"completed"}
