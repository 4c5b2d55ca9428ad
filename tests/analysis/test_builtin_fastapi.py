"""The builtin analyzer on async requests made by the real pipeline: the example FastAPI
catalogue on a real uvicorn server, profiled in pyinstrument's async mode by our processor,
exported over OTLP to the real receiver and store. A blocking call inside `async def` must
be reported as blocking the event loop, naming the function; an awaited `asyncio.sleep`
must not, nor a blocking call in a `def` endpoint that FastAPI runs in its thread pool."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
import uvicorn
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from analysis_service import AnalysisSettings
from analysis_service.analysis import analyze_record
from examples.fastapi_app.app import create_app
from otel_pyinstrument_processor import configure
from otel_pyinstrument_processor.threadwork import profile_sync_endpoints


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # not the main thread
        pass


@pytest.fixture
def catalogue_records(store, receiver, project, monkeypatch):
    """One request each to the blocking async route, the awaiting one and the `def` route
    (run in the thread pool); their records by endpoint."""
    # Waits long enough to dominate each request, so the rules see them above any noise.
    monkeypatch.setenv("DEMO_STOCK_DELAY", "0.3")
    monkeypatch.setenv("DEMO_UPSTREAM_DELAY", "0.3")
    provider = configure(
        service_name="catalogue-analysis",
        endpoint=receiver.endpoint,
        project_key=project.key,
        sampling_rate=1.0,
        max_profiles_per_second=0,
        set_global=False,
    )
    app = create_app()
    profile_sync_endpoints(app)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        for path in ("/api/items/4/stock", "/api/items/4", "/api/report"):
            with urllib.request.urlopen(base + path, timeout=30) as resp:
                assert resp.status == 200
        assert provider.force_flush(30_000)
    finally:
        server.should_exit = True
        thread.join(10)
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()
    records = store.collection("performance_records").find({"project_id": project.project.id})
    return {r["endpoint"]: r for r in records}


def test_blocking_call_in_async_route_is_reported_and_an_await_is_not(store, catalogue_records):
    settings = AnalysisSettings()
    stock = analyze_record(
        store, settings, catalogue_records["GET /api/items/{item_id}/stock"]["_id"],
        analysis_id="ana_stock",
    )  # fmt: skip
    assert stock["status"] == "completed"
    found = stock["analysis_results"]["bottleneck_analysis"]
    (blocking,) = [b for b in found if b["function"] == "read_stock_level"]
    assert blocking["type"] == "io"
    assert "blocks the event loop" in blocking["description"]
    assert any(
        "to_thread" in s["code_example"]
        for s in stock["analysis_results"]["optimization_suggestions"]
    )
    # The hot path leads from the route through the blocking helper to the sleep.
    paths = [b["function"] for b in found if b["description"].startswith("hot path:")]
    assert paths == ["get_stock > read_stock_level > sleep"], found

    item = analyze_record(
        store, settings, catalogue_records["GET /api/items/{item_id}"]["_id"],
        analysis_id="ana_item",
    )  # fmt: skip
    assert item["status"] == "completed"
    found = item["analysis_results"]["bottleneck_analysis"]
    assert not [b for b in found if "blocks the event loop" in b["description"]], found
    # The awaited wait is still the request's latency, reported as such.
    (awaited,) = [b for b in found if b["function"] == "fetch_price_from_upstream"]
    assert awaited["type"] == "io" and "awaits" in awaited["description"]
    assert "event loop stays free" in awaited["description"]


def test_blocking_call_in_the_thread_pool_does_not_block_the_event_loop(store, catalogue_records):
    report = analyze_record(
        store, AnalysisSettings(), catalogue_records["GET /api/report"]["_id"],
        analysis_id="ana_report",
    )  # fmt: skip
    assert report["status"] == "completed"
    # The thread's frames are in the tree (profile_sync_endpoints), sleep included ...
    slow = {
        f["function"] for f in store.analyses.get("ana_report")["analysis_input"]["slow_functions"]
    }
    assert "build_sales_report" in slow
    found = report["analysis_results"]["bottleneck_analysis"]
    # ... but they ran in a worker thread: whatever they wait on, the loop stayed free.
    assert not [b for b in found if "blocks the event loop" in b["description"]], found
