"""The walking skeleton end to end: a real Flask request, profiled by our processor, exported
by the real OTLP/gRPC exporter to the real receiver, stored in the real embedded store."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from otel_pyinstrument_processor import CallTreeNode, decode_profile
from storage_backend import trace_spans
from tests.shop_server import running_shop


def _walk(node: CallTreeNode) -> Iterator[CallTreeNode]:
    yield node
    for child in node.children:
        yield from _walk(child)


@pytest.fixture
def shop(receiver, project, monkeypatch):
    """The example shop app on a real WSGI server, instrumented and exporting to `receiver`."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.version=1.2.3")
    with running_shop(receiver.endpoint, project.key, "shop-e2e", sql_spans=False) as running:
        yield running


def test_slow_flask_request_arrives_with_its_call_tree(store, project, shop):
    base, provider = shop
    with urllib.request.urlopen(base + "/api/reports/sales", timeout=30) as resp:
        assert resp.status == 200
    assert provider.force_flush(30_000)

    records = list(store.collection("performance_records").find({"project_id": project.project.id}))
    assert len(records) == 1
    record = records[0]
    assert record["endpoint"] == "GET /api/reports/sales"
    assert record["response_info"]["status_code"] == 200
    assert record["version_info"]["app_version"] == "1.2.3"
    assert record["service"]["name"] == "shop-e2e"
    assert (
        record["environment"]["python_version"] is None or record["environment"]["python_version"]
    )
    duration = record["performance_metrics"]["total_duration"]
    assert duration > 0.1  # the blocking wait alone is 0.12 s
    assert 0 < record["performance_metrics"]["cpu_time"] < duration

    profile = record["profile"]
    assert profile["sample_count"] > 10
    tree = decode_profile(profile["tree"], profile["format"])
    nodes = list(_walk(tree))
    helper = [n for n in nodes if n.function == "compute_sales_statistics"]
    assert helper, sorted({n.function for n in nodes})
    assert helper[0].file.endswith("examples/flask_app/app.py")
    assert helper[0].line > 0
    # The CPU-heavy helper and the blocking wait both take a real share of the request.
    assert helper[0].total_time > 0.05 * tree.total_time
    waits = [n for n in nodes if n.function == "fetch_exchange_rates"]
    assert waits and waits[0].total_time > 0.08
    assert tree.total_time <= duration * 1.05

    # Every span of the trace is stored; the profile is kept once (in the record).
    stored = trace_spans(store.db, record["project_id"], record["trace_id"])
    assert any(s["span_id"] == record["span_id"] for s in stored)
    assert all("pystrument.profile.tree" not in s["attributes"] for s in stored)


def test_fast_requests_on_many_routes_each_make_a_record(store, project, shop):
    base, provider = shop
    paths = ["/api/users", "/api/users/3", "/api/users/9999", "/api/orders"]
    for path in paths:
        try:
            urllib.request.urlopen(base + path, timeout=30).read()
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    assert provider.force_flush(30_000)
    records = {
        r["endpoint"]: r
        for r in store.collection("performance_records").find({"project_id": project.project.id})
    }
    assert set(records) == {"GET /api/users", "GET /api/users/<int:user_id>", "GET /api/orders"}
    assert records["GET /api/orders"]["profile"] is not None
    statuses = sorted(
        r["response_info"]["status_code"]
        for r in store.collection("performance_records").find({"project_id": project.project.id})
    )
    assert statuses == [200, 200, 200, 404]
