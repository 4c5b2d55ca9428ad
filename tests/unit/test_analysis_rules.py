"""Analysis pieces without a store: configuration validation, the results schema, statement
normalisation, the builtin rules on hand-built trees, report rendering."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from analysis_service import AIServiceConfig, AnalysisSettings
from analysis_service.analyzers.base import AnalyzerError
from analysis_service.analyzers.builtin import RULES, BuiltinAnalyzer
from analysis_service.analyzers.prompt import parse_answer
from analysis_service.analyzers.tree_rules import hot_path, repeated_work
from analysis_service.inputs import AnalysisInput, DbSpan, normalize_statement
from analysis_service.reports import percentile, render_html, render_markdown
from analysis_service.result_schema import InvalidResultsError, validate_results
from otel_pyinstrument_processor import CallTreeNode

APP = "/srv/app/main.py"


def _record(framework: str | None = None, duration: float = 1.0) -> dict:
    return {
        "_id": "r1",
        "project_id": "p",
        "endpoint": "GET /x",
        "performance_metrics": {"total_duration": duration},
        "environment": {"framework": framework},
    }


def test_config_rejects_bad_values_with_the_key_named():
    with pytest.raises(ValidationError, match="custom AI service needs an endpoint"):
        AIServiceConfig(provider="custom")
    with pytest.raises(ValidationError, match="default_service 'gpt' is not one of"):
        AnalysisSettings(default_service="gpt")
    with pytest.raises(ValidationError, match="provider"):
        AIServiceConfig(provider="claude")
    with pytest.raises(ValidationError, match="temperature"):
        AIServiceConfig(provider="openai", temperature=5)
    with pytest.raises(ValidationError, match="cleanup_hour_utc"):
        AnalysisSettings(cleanup_hour_utc=24)
    with pytest.raises(ValidationError, match="Extra inputs"):
        AnalysisSettings(lease=3)
    assert "builtin" in AnalysisSettings(ai_services={}).ai_services


def test_openai_key_and_headers_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("CUSTOM_AI_TOKEN", "tok")
    assert AIServiceConfig(provider="openai").resolved_api_key() == "sk-env"
    monkeypatch.setenv("PYSTRUMENT_OPENAI_API_KEY", "sk-ours")
    assert AIServiceConfig(provider="openai").resolved_api_key() == "sk-ours"
    cfg = AIServiceConfig(provider="custom", endpoint="http://h/a",
                          headers={"Authorization": "Bearer ${CUSTOM_AI_TOKEN}"})  # fmt: skip
    assert cfg.resolved_headers() == {"Authorization": "Bearer tok"}
    full = AIServiceConfig(provider="openai", endpoint="https://api.openai.com/v1/chat/completions")
    assert full.base_url() == "https://api.openai.com/v1"
    assert "sk-" not in repr(AIServiceConfig(provider="openai", api_key="sk-secret"))


def test_results_schema_refuses_what_does_not_fit():
    with pytest.raises(InvalidResultsError, match="expected a JSON object"):
        validate_results([1, 2])
    with pytest.raises(InvalidResultsError, match="severity"):
        validate_results(
            {
                "performance_score": 50,
                "bottleneck_analysis": [{"type": "io", "severity": "urgent", "function": "f",
                                         "description": "d", "impact": 0.5}],
                "optimization_suggestions": [],
                "risk_assessment": {},
            }
        )  # fmt: skip
    with pytest.raises(AnalyzerError, match="empty answer"):
        parse_answer("  ")


def test_statements_normalise_to_their_shape():
    assert normalize_statement("SELECT * FROM t WHERE id = 42") == "SELECT * FROM t WHERE id = ?"
    assert normalize_statement("select  a from t where n = 'bob''s'") == (
        "select a from t where n = ?"
    )
    assert normalize_statement("SELECT 1 FROM t WHERE id IN (1, 2, 3)") == (
        "SELECT ? FROM t WHERE id IN (?)"
    )


def test_blocking_call_in_async_code_is_flagged_as_blocking_the_event_loop():
    sleep = CallTreeNode("sleep", "<built-in>", 0, 0.6, 0.6, 60)
    handler = CallTreeNode("get_rates", APP, 12, 0.65, 0.05, 65, [sleep])
    root = CallTreeNode("run", "/usr/lib/python3.11/asyncio/events.py", 80, 1.0, 0.35, 100,
                        [handler])  # fmt: skip
    inp = AnalysisInput(_record("opentelemetry.instrumentation.asgi"), root, [], threshold=0.5)
    out = BuiltinAnalyzer().analyze(inp)
    (finding,) = [b for b in out.results["bottleneck_analysis"] if b["function"] == "get_rates"]
    assert finding["type"] == "io"
    assert "blocks the event loop" in finding["description"]
    assert finding["severity"] == "critical"
    assert any("to_thread" in s["code_example"] for s in out.results["optimization_suggestions"])
    assert out.results["performance_score"] < 70  # critical finding and over the threshold


def test_an_awaited_sleep_is_not_blocking_the_event_loop():
    # pyinstrument's async mode: asyncio.sleep (a library `sleep`) above an [await] frame.
    wait = CallTreeNode("[await]", "", 0, 0.6, 0.6, 60)
    asleep = CallTreeNode("sleep", "/usr/lib/python3.11/asyncio/tasks.py", 637, 0.6, 0, 60,
                          [wait])  # fmt: skip
    handler = CallTreeNode("get_price", APP, 12, 0.65, 0.05, 65, [asleep])
    inp = AnalysisInput(_record("opentelemetry.instrumentation.fastapi"), handler, [])
    found = BuiltinAnalyzer().analyze(inp).results["bottleneck_analysis"]
    (awaited,) = [b for b in found if b["function"] == "get_price"]
    assert awaited["type"] == "io" and "awaits 0.650s" in awaited["description"]
    assert not any("blocks the event loop" in b["description"] for b in found)


def _layered_tree() -> CallTreeNode:
    """wsgi (library) > view > service > repo.query > Cursor.fetchall (library, hottest)."""
    fetch = CallTreeNode("Cursor.fetchall", "/venv/site-packages/db/cursor.py", 5, 0.5, 0.5, 50)
    repo = CallTreeNode("repo.query", APP, 30, 0.55, 0.05, 55, [fetch])
    fmt = CallTreeNode("format_rows", APP, 40, 0.2, 0.2, 20)
    service = CallTreeNode("service", APP, 20, 0.8, 0.05, 80, [repo, fmt])
    view = CallTreeNode("view", APP, 10, 0.9, 0.1, 90, [service])
    return CallTreeNode("wsgi_app", "/venv/site-packages/flask/app.py", 1, 1.0, 0.1, 100, [view])


def test_hot_path_runs_from_the_entry_to_the_hottest_leaf_and_costs_no_points():
    inp = AnalysisInput(_record(), _layered_tree(), [])
    (finding,) = hot_path(inp)
    assert finding.bottleneck["function"] == "view > service > repo.query > Cursor.fetchall"
    assert finding.bottleneck["type"] == "database"
    assert finding.bottleneck["severity"] == "critical"  # 50 % of the request in the leaf
    assert finding.bottleneck["description"].startswith("hot path: view > service")
    with_path = BuiltinAnalyzer().analyze(inp).results
    without = BuiltinAnalyzer([r for r in RULES if r is not hot_path]).analyze(inp).results
    assert with_path["performance_score"] == without["performance_score"]
    # Listed after the problems it locates, and the same on every run.
    assert with_path["bottleneck_analysis"][-1]["function"] == finding.bottleneck["function"]
    assert BuiltinAnalyzer().analyze(inp).results == with_path


def test_repeated_work_under_several_callers_is_reported_a_shared_query_helper_is_not():
    def prices() -> CallTreeNode:
        return CallTreeNode("load_price_list", APP, 50, 0.2, 0.2, 20)

    def query() -> CallTreeNode:
        fetch = CallTreeNode("Cursor.execute", "/venv/site-packages/db/cursor.py", 5, 0.3, 0.3, 30)
        return CallTreeNode("query", APP, 60, 0.3, 0.0, 30, [fetch])

    totals = CallTreeNode("order_value", APP, 70, 0.5, 0.0, 50, [prices(), query()])
    top = CallTreeNode("top_skus", APP, 80, 0.5, 0.0, 50, [prices(), query()])
    view = CallTreeNode("report", APP, 10, 1.0, 0.0, 100, [totals, top])
    (finding,) = repeated_work(AnalysisInput(_record(), view, []))
    assert finding.bottleneck["function"] == "load_price_list"
    assert "2 callers (order_value, top_skus)" in finding.bottleneck["description"]
    assert finding.bottleneck["impact"] == 0.4
    assert finding.suggestion and "hoist" in finding.suggestion["description"]
    # Under one caller only (merged loop iterations), the tree cannot tell: no finding.
    single = CallTreeNode("report", APP, 10, 1.0, 0.6, 100, [prices()])
    assert repeated_work(AnalysisInput(_record(), single, [])) == []


def test_no_tree_still_gives_a_valid_low_confidence_analysis_from_spans():
    spans = [DbSpan("postgresql", f"SELECT * FROM users WHERE id = {i}", 0.01) for i in range(9)]
    inp = AnalysisInput(_record(), None, [], db_spans=spans)
    out = BuiltinAnalyzer().analyze(inp)
    assert out.confidence == 0.5
    (db,) = out.results["bottleneck_analysis"]
    assert "N+1" in db["description"] and "9 postgresql queries" in db["description"]
    assert db["function"].startswith("SELECT * FROM users")


def test_percentiles_and_rendering_escape_what_they_show():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert percentile([], 95) == 0.0
    report = {
        "project_id": "prj_1", "start": "s", "end": "e", "request_count": 1, "sampled": False,
        "endpoints": [{"endpoint": "GET /a|<b>", "count": 1, "errors": 0, "mean": 0.1,
                       "p50": 0.1, "p95": 0.1, "p99": 0.1, "max": 0.1}],
        "slowest_requests": [], "top_functions": [],
        "analyses": {"count": 0, "by_status": {}, "mean_score": None, "bottleneck_types": {},
                     "top_bottlenecks": [], "hot_paths": []},
    }  # fmt: skip
    md = render_markdown(report)
    assert "| GET /a\\|<b> | 1 | 0 | 100.0 ms |" in md
    assert "## Slowest requests\n\n_none_" in md
    html = render_html(report)
    assert "GET /a|&lt;b&gt;" in html and "<b>" not in html


def test_a_wait_seen_by_the_sampling_thread_is_io_not_computation():
    # profiler_mode sampler: no C function nodes; time the thread spent off the CPU under
    # a function comes as a [wait] child (stack_sampler.WAIT_FRAME).
    wait = CallTreeNode("[wait]", "<built-in>", 0, 0.6, 0.6, 60)
    fetch = CallTreeNode("fetch_rates", APP, 12, 0.65, 0.05, 65, [wait])
    root = CallTreeNode("handler", APP, 3, 1.0, 0.35, 100, [fetch])
    inp = AnalysisInput(_record("opentelemetry.instrumentation.flask"), root, [], threshold=0.5)
    out = BuiltinAnalyzer().analyze(inp)
    (finding,) = [b for b in out.results["bottleneck_analysis"] if b["function"] == "fetch_rates"]
    assert finding["type"] == "io"
    assert "blocking I/O" in finding["description"]


def test_cpu_the_sampling_thread_did_not_see_is_computation_of_its_caller():
    # profiler_mode sampler: CPU bursts shorter than the GIL switch interval, before a wait,
    # come as a [cpu] child of the deepest frame that persisted (stack_sampler.CPU_FRAME).
    cpu = CallTreeNode("[cpu]", "<built-in>", 0, 0.6, 0.6, 60)
    wait = CallTreeNode("[wait]", "<built-in>", 0, 0.3, 0.3, 30)
    fetch = CallTreeNode("fetch_rates", APP, 20, 0.3, 0.0, 30, [wait])
    render = CallTreeNode("render_report", APP, 12, 0.9, 0.0, 90, [cpu, fetch])
    root = CallTreeNode("handler", APP, 3, 1.0, 0.1, 100, [render])
    inp = AnalysisInput(_record("opentelemetry.instrumentation.flask"), root, [], threshold=0.5)
    found = BuiltinAnalyzer().analyze(inp).results["bottleneck_analysis"]
    (finding,) = [b for b in found if b["function"] == "render_report"]
    assert finding["type"] == "computation"
