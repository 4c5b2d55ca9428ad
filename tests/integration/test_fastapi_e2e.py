"""FastAPI on a real uvicorn server: async endpoints profiled per request (20 concurrent
requests on one event loop each get only their own frames), a `def` endpoint profiled in the
thread pool, sent by the real OTLP exporter to the real receiver and store."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import uvicorn
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from examples.fastapi_app.app import create_app
from otel_pyinstrument_processor import CallTreeNode, configure, decode_profile
from otel_pyinstrument_processor.threadwork import profile_sync_endpoints


def _walk(node: CallTreeNode) -> Iterator[CallTreeNode]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.children)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # not the main thread
        pass


@pytest.fixture
def catalogue(receiver, project):
    provider = configure(
        service_name="catalogue-e2e",
        endpoint=receiver.endpoint,
        project_key=project.key,
        sampling_rate=1.0,
        max_profiles_per_second=0,
        excluded_paths=["/health"],
        set_global=False,
    )
    app = create_app()
    assert profile_sync_endpoints(app) == 1
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", provider
    server.should_exit = True
    thread.join(10)
    FastAPIInstrumentor.uninstrument_app(app)
    provider.shutdown()


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as resp:
        resp.read()
        return resp.status


def _records(store, project) -> list[dict]:
    return list(store.collection("performance_records").find({"project_id": project.project.id}))


def test_twenty_concurrent_async_requests_each_get_only_their_own_frames(store, project, catalogue):
    base, provider = catalogue
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(_get, [f"{base}/api/items/{i}" for i in range(20)]))
    assert statuses == [200] * 20
    assert _get(base + "/health") == 200
    assert provider.force_flush(30_000)

    records = [r for r in _records(store, project) if r["profile"] is not None]
    assert len(records) == 20, [r["endpoint"] for r in _records(store, project)]
    for record in records:
        item = int(record["request_info"]["path"].rsplit("/", 1)[1])
        mine, theirs = (
            ("crunch_even", "crunch_odd") if item % 2 == 0 else ("crunch_odd", "crunch_even")
        )
        tree = decode_profile(record["profile"]["tree"], record["profile"]["format"])
        functions = {node.function for node in _walk(tree)}
        assert mine in functions, sorted(functions)
        assert theirs not in functions, (item, sorted(functions))
        # The awaited upstream call is this request's time, under the function that awaited.
        upstream = [n for n in _walk(tree) if n.function == "fetch_price_from_upstream"]
        assert upstream and upstream[0].total_time > 0.03
        assert tree.total_time <= record["performance_metrics"]["total_duration"] * 1.05
    assert all(
        r["request_info"]["path"] != "/health" or r["profile"] is None
        for r in _records(store, project)
    )


def test_sync_endpoint_in_the_threadpool_is_profiled(store, project, catalogue):
    base, provider = catalogue
    assert _get(base + "/api/report") == 200
    assert provider.force_flush(30_000)
    [record] = [r for r in _records(store, project) if r["endpoint"] == "GET /api/report"]
    tree = decode_profile(record["profile"]["tree"], record["profile"]["format"])
    functions = {node.function: node for node in _walk(tree)}
    assert "build_sales_report" in functions, sorted(functions)
    assert "crunch_even" in functions
    assert functions["build_sales_report"].total_time > 0.03


def test_excluded_path_is_not_profiled(store, project, catalogue):
    base, provider = catalogue
    assert _get(base + "/health") == 200
    assert provider.force_flush(30_000)
    [record] = _records(store, project)
    assert record["profile"] is None
    assert "cpu_time" not in record["performance_metrics"]
