"""The `openai` analyzer with the real `openai` client against an OpenAI-compatible server
started here: a fixed completion, malformed JSON, 429, 500 and a timeout each end in a
stored analysis, completed or failed with the reason."""

from __future__ import annotations

import json
import time

import pytest

from analysis_service import AIServiceConfig, AnalysisSettings, Worker
from tests.analysis.ai_servers import VALID_RESULTS, FakeAIServer, chat_completion
from tests.analysis.records import ingest_request

BEHAVIOURS = ["ok", "fenced", "malformed", "wrong-shape", "ratelimit", "error500", "slow"]


@pytest.fixture
def ai_server():
    holder: dict[str, FakeAIServer] = {}

    def respond(path: str, body: dict) -> tuple[int, object]:
        model = body.get("model")
        if model == "ok":
            return 200, chat_completion(model, json.dumps(VALID_RESULTS))
        if model == "fenced":
            return 200, chat_completion(model, "```json\n" + json.dumps(VALID_RESULTS) + "\n```")
        if model == "malformed":
            return 200, chat_completion(model, '{"performance_score": 50, "bottleneck_analysis": [')
        if model == "wrong-shape":
            return 200, chat_completion(model, json.dumps({"performance_score": 500}))
        if model == "ratelimit":
            return 429, {"error": {"message": "Rate limit reached for requests", "type": "rl"}}
        if model == "error500":
            return 500, {"error": {"message": "upstream exploded"}}
        holder["server"].hang(3.0)  # "slow": longer than the client's timeout
        return 200, chat_completion(model, json.dumps(VALID_RESULTS))

    with FakeAIServer(respond) as server:
        holder["server"] = server
        yield server


def _settings(url: str) -> AnalysisSettings:
    services = {
        name: AIServiceConfig(
            provider="openai",
            endpoint=f"{url}/v1/chat/completions",
            model=name,
            api_key="sk-test-${PYSTRUMENT_TEST_SUFFIX}",
            timeout=0.5,
            max_retries=0,
            input_cost_per_1k_tokens=0.01,
            output_cost_per_1k_tokens=0.03,
        )
        for name in BEHAVIOURS
    }
    return AnalysisSettings(ai_services=services, default_service="ok")


def test_each_provider_outcome_is_a_stored_analysis(store, project, ai_server, monkeypatch):
    monkeypatch.setenv("PYSTRUMENT_TEST_SUFFIX", "abc")
    record_id = ingest_request(store, project.project, duration=1.2)
    jobs = {
        name: store.jobs.enqueue(
            "analyze",
            {"record_id": record_id, "ai_service": name},
            project_id=project.project.id,
            max_attempts=1,
        )
        for name in BEHAVIOURS
    }
    worker = Worker(store, _settings(ai_server.url), schedule=False)
    assert worker.run_until_idle() == len(BEHAVIOURS)

    def outcome(name: str) -> tuple[dict, dict]:
        job = store.jobs.get(jobs[name])
        (analysis,) = store.analyses.for_job(jobs[name])
        return job, analysis

    for name in ("ok", "fenced"):
        job, analysis = outcome(name)
        assert job["state"] == "completed", job
        assert analysis["status"] == "completed"
        assert analysis["analysis_results"]["bottleneck_analysis"][0]["function"] == (
            "crunch_numbers"
        )
        assert analysis["ai_service"]["provider"] == "openai"
        assert analysis["ai_service"]["model"] == name
        meta = analysis["analysis_metadata"]
        assert meta["tokens_used"] == 200
        assert meta["cost"] == pytest.approx((120 * 0.01 + 80 * 0.03) / 1000)

    expectations = {
        "malformed": ("not valid JSON", None),
        "wrong-shape": ("do not match the schema", None),
        "ratelimit": ("HTTP 429", 20005),
        "error500": ("HTTP 500", 20005),
        "slow": ("timed out", 20005),
    }
    for name, (reason, code) in expectations.items():
        job, analysis = outcome(name)
        assert job["state"] == "failed", (name, job)
        assert reason in job["error"], (name, job["error"])
        assert analysis["status"] == "failed"
        assert reason in analysis["error"]["message"]
        assert analysis["error"]["code"] == code, name
        assert analysis["analysis_results"] is None
    assert "Rate limit reached" in outcome("ratelimit")[1]["error"]["message"]

    # The prompt is compact: the summary (slow functions, hot path), not the raw tree.
    sent = ai_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-test-abc"
    user = json.loads(sent["body"]["messages"][1]["content"])
    assert user["slow_functions"][0]["function"] == "crunch_numbers"
    assert "hot_path" in user["context_info"]
    record = store.collection("performance_records").find_one({"_id": record_id})
    assert record["profile"]["tree"] not in json.dumps(sent["body"])
    assert sent["body"]["response_format"] == {"type": "json_object"}


def test_a_retryable_provider_error_retries_before_failing(store, project, ai_server):
    record_id = ingest_request(store, project.project, duration=1.2)
    job_id = store.jobs.enqueue(
        "analyze", {"record_id": record_id, "ai_service": "ratelimit"}, max_attempts=2
    )
    settings = _settings(ai_server.url)
    settings.retry_backoff_seconds = 0.05
    worker = Worker(store, settings, schedule=False)
    assert worker.run_once()
    job = store.jobs.get(job_id)
    assert job["state"] == "pending" and job["attempts"] == 1
    assert store.analyses.for_job(job_id) == []  # nothing stored while a retry is due
    time.sleep(0.1)
    assert worker.run_once()
    job = store.jobs.get(job_id)
    assert job["state"] == "failed" and job["attempts"] == 2
    assert store.analyses.for_job(job_id)[0]["status"] == "failed"


def test_custom_service_gets_headers_and_its_answers_are_validated(store, project, monkeypatch):
    monkeypatch.setenv("CUSTOM_AI_TOKEN", "tok-123")
    answers = iter(
        [
            (200, {"analysis_results": VALID_RESULTS}),
            (200, "<html>not json</html>"),
            (503, {"error": "overloaded"}),
            (400, {"error": "bad input"}),
        ]
    )
    with FakeAIServer(lambda path, body: next(answers)) as server:
        settings = AnalysisSettings(
            ai_services={
                "mine": AIServiceConfig(
                    provider="custom",
                    endpoint=server.url + "/analyze",
                    headers={"Authorization": "Bearer ${CUSTOM_AI_TOKEN}"},
                    model="house-model",
                )
            },
            default_service="mine",
        )
        record_id = ingest_request(store, project.project)
        jobs = [
            store.jobs.enqueue("analyze", {"record_id": record_id}, max_attempts=1)
            for _ in range(4)
        ]
        worker = Worker(store, settings, schedule=False)
        for job_id in jobs:  # in order: the server answers each call with the next reply
            assert worker.run_once()
            assert store.jobs.get(job_id)["state"] in ("completed", "failed")
    analyses = [store.analyses.for_job(j)[0] for j in jobs]
    assert analyses[0]["status"] == "completed"
    assert analyses[0]["ai_service"] == {"name": "mine", "provider": "custom",
                                         "model": "house-model", "version": ""}  # fmt: skip
    assert "not valid JSON" in analyses[1]["error"]["message"]
    assert analyses[2]["error"] == {
        "code": 20005,
        "message": 'AI service error (HTTP 503): {"error": "overloaded"}',
        "retryable": True,
    }
    assert analyses[3]["error"]["code"] is None and "HTTP 400" in analyses[3]["error"]["message"]
    assert server.requests[0]["headers"]["authorization"] == "Bearer tok-123"
    assert server.requests[0]["body"]["analysis_input"]["context_info"]["record_id"] == record_id
