"""Workers sharing one queue: two racing workers run each of 50 jobs exactly once; a worker
process killed with SIGKILL mid-job has its job retried by another once the lease expires;
a job over its time limit is failed; `pystrument analyzer` stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import yaml

from analysis_service import AnalysisSettings, Worker
from storage_backend import Store
from tests.analysis.ai_servers import VALID_RESULTS, FakeAIServer
from tests.analysis.records import ingest_request


def _wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_two_workers_racing_on_50_jobs_run_each_exactly_once(store, embedded_server):
    job_ids = {store.jobs.enqueue("analyze", {"n": i}) for i in range(50)}
    calls = store.collection("test_calls")

    def handler(ctx, job):
        calls.insert_one({"job_id": job.id, "worker": ctx.worker_id})
        return {"n": job.payload["n"]}

    settings = AnalysisSettings(poll_interval_seconds=0.05)
    stores = [Store.connect(embedded_server.url, store.db.name) for _ in range(2)]
    workers = [
        Worker(
            s,
            settings,
            concurrency=2,
            worker_id=f"w{i}",
            handlers={"analyze": handler},
            schedule=False,
        )
        for i, s in enumerate(stores)
    ]
    try:
        for w in workers:
            w.start()
        _wait_for(lambda: store.jobs.stats()["by_state"]["completed"] == 50)
    finally:
        for w in workers:
            w.stop()
        for s in stores:
            s.client.close()
    done = list(calls.find())
    assert len(done) == 50
    assert {d["job_id"] for d in done} == job_ids
    assert {d["worker"] for d in done} == {"w0", "w1"}  # both took part
    for doc in store.collection("analysis_jobs").find():
        assert doc["state"] == "completed" and doc["attempts"] == 1
        assert doc["result"]["n"] == doc["payload"]["n"]


def test_a_job_of_a_killed_worker_process_is_retried_by_another(
    store, project, embedded_server, tmp_path
):
    """A real `pystrument analyzer` process takes an analysis whose AI call hangs, is
    killed with SIGKILL, and an in-process worker finishes the job after the lease expired."""

    def respond(path, body):
        if len(server.requests) == 1:  # the first call hangs: the worker dies inside it
            server.hang(60)
        return 200, {"analysis_results": VALID_RESULTS}

    with FakeAIServer(respond) as server:
        analysis = {
            "ai_services": {"remote": {"provider": "custom", "endpoint": server.url + "/analyze",
                                       "timeout": 60}},
            "default_service": "remote",
            "lease_seconds": 1.0,
            "retry_backoff_seconds": 0.1,
            "poll_interval_seconds": 0.1,
        }  # fmt: skip
        config = tmp_path / "pystrument.yaml"
        config.write_text(yaml.safe_dump({"analysis": analysis}))
        record_id = ingest_request(store, project.project)
        job_id = store.jobs.enqueue("analyze", {"record_id": record_id}, max_attempts=3)
        env = {
            **os.environ,
            "PYSTRUMENT_MONGODB_URL": embedded_server.url,
            "PYSTRUMENT_MONGODB_DATABASE": store.db.name,
            "PYSTRUMENT_DATA_DIR": str(tmp_path / "data"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "pystrument", "analyzer", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert server.first_request.wait(60), "the worker process never called the AI"
            running = store.jobs.get(job_id)
            assert running["state"] == "running" and running["attempts"] == 1
            assert str(proc.pid) in running["worker_id"]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        settings = AnalysisSettings.model_validate(analysis)
        worker = Worker(store, settings, worker_id="rescuer")
        worker.start()
        try:
            _wait_for(lambda: store.jobs.get(job_id)["state"] == "completed", timeout=30)
        finally:
            worker.stop()
    job = store.jobs.get(job_id)
    assert job["attempts"] == 2
    assert job["worker_id"] == "rescuer"
    assert "lease expired" in job["errors"][0]["error"]
    (stored,) = store.analyses.for_job(job_id)
    assert stored["status"] == "completed"
    assert stored["ai_service"]["provider"] == "custom"
    assert stored["analysis_results"]["performance_score"] == 42
    assert len(server.requests) == 2
    assert server.requests[1]["body"]["analysis_input"]["context_info"]["record_id"] == record_id


def test_a_job_over_its_time_limit_is_failed_and_its_late_result_dropped(store):
    job_id = store.jobs.enqueue("analyze", time_limit=0.3)
    release = threading.Event()

    def slow(ctx, job):
        release.wait(5)
        return {"late": True}

    settings = AnalysisSettings(lease_seconds=0.3, poll_interval_seconds=0.05)
    worker = Worker(store, settings, handlers={"analyze": slow}, schedule=False)
    worker.start()
    try:
        _wait_for(lambda: store.jobs.get(job_id)["state"] == "failed", timeout=10)
    finally:
        release.set()
        worker.stop()
    job = store.jobs.get(job_id)
    assert job["state"] == "failed"
    assert "time limit exceeded" in job["error"]
    assert job["result"] is None


def test_analyzer_command_runs_jobs_and_stops_on_sigterm(store, project, embedded_server, tmp_path):
    record_id = ingest_request(store, project.project, db_calls=8)
    job_id = store.jobs.enqueue("analyze", {"record_id": record_id})
    env = {
        **os.environ,
        "PYSTRUMENT_MONGODB_URL": embedded_server.url,
        "PYSTRUMENT_MONGODB_DATABASE": store.db.name,
        "PYSTRUMENT_DATA_DIR": str(tmp_path),
        "PYSTRUMENT_ANALYSIS": json.dumps({"poll_interval_seconds": 0.1}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pystrument", "analyzer", "--concurrency", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: store.jobs.get(job_id)["state"] == "completed", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "running 2 job(s) at a time" in out
    assert "stopped" in out
    (analysis,) = store.analyses.for_job(job_id)
    kinds = {b["type"] for b in analysis["analysis_results"]["bottleneck_analysis"]}
    assert {"computation", "database"} <= kinds
