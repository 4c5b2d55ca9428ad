"""The builtin analyzer on records made by the real pipeline: the example Flask shop, with
OpenTelemetry's Flask and sqlite3 instrumentation and our processor, exporting over OTLP to
the real receiver and store. It must name the deliberately slow function of
/api/reports/sales (and the hot path to it), the N+1 pattern of /api/orders and the
repeated work of /api/reports/inventory."""

from __future__ import annotations

import urllib.request

import pytest

from analysis_service import AnalysisSettings
from analysis_service.analysis import analyze_record
from otel_pyinstrument_processor import CallTreeNode
from storage_backend import queries as q
from tests.shop_server import running_shop


@pytest.fixture
def shop_records(store, receiver, project, monkeypatch):
    """Send one request to each deliberately slow route; return their records."""
    # The upstream wait clearly longer than the O(n^2) loop (~0.1 s), so the hottest leaf
    # is the same on a fast machine and a loaded one.
    monkeypatch.setenv("DEMO_UPSTREAM_DELAY", "0.3")
    with running_shop(receiver.endpoint, project.key, "shop-analysis") as (base, provider):
        for path in ("/api/reports/sales", "/api/orders", "/api/reports/inventory"):
            with urllib.request.urlopen(base + path, timeout=30) as resp:
                assert resp.status == 200
        assert provider.force_flush(30_000)
    records = store.collection("performance_records").find({"project_id": project.project.id})
    return {r["endpoint"]: r for r in records}


def test_builtin_names_the_slow_function_and_the_n_plus_one(store, shop_records):
    assert set(shop_records) >= {"GET /api/reports/sales", "GET /api/orders"}
    settings = AnalysisSettings()

    sales = analyze_record(
        store, settings, shop_records["GET /api/reports/sales"]["_id"], analysis_id="ana_sales"
    )
    assert sales["status"] == "completed"
    results = sales["analysis_results"]
    by_function = {b["function"]: b for b in results["bottleneck_analysis"]}
    assert "compute_sales_statistics" in by_function, results["bottleneck_analysis"]
    assert by_function["compute_sales_statistics"]["type"] == "computation"
    assert "fetch_exchange_rates" in by_function
    assert by_function["fetch_exchange_rates"]["type"] == "io"
    assert 0 <= results["performance_score"] < 100
    assert any(s["code_example"] for s in results["optimization_suggestions"])
    stored = store.analyses.get("ana_sales")
    assert stored["analysis_input"]["slow_functions"][0]["function"] in by_function

    orders = analyze_record(
        store, settings, shop_records["GET /api/orders"]["_id"], analysis_id="ana_orders"
    )
    db = [b for b in orders["analysis_results"]["bottleneck_analysis"] if b["type"] == "database"]
    assert db, orders["analysis_results"]
    assert "N+1" in db[0]["description"]
    assert "SELECT sku, qty FROM items WHERE order_id = ?" in db[0]["description"]
    assert "40 sqlite queries" in db[0]["description"]
    # The app path to the repeated query names the per-order helper and its caller.
    assert "list_orders > load_items" in db[0]["function"]
    # DB time is not mistaken for computation in the helper that runs the queries.
    # (Under load other frames may cross the 10 % line: only the DB helpers are checked.)
    computation = [
        b["function"]
        for b in orders["analysis_results"]["bottleneck_analysis"]
        if b["type"] == "computation"
    ]
    assert not {"query", "load_items"} & set(computation), orders["analysis_results"]
    assert any(
        s["category"] == "database" and "IN (" in s["code_example"]
        for s in orders["analysis_results"]["optimization_suggestions"]
    )


def test_builtin_reports_the_hot_path_and_repeated_work(store, shop_records):
    settings = AnalysisSettings()
    sales = analyze_record(
        store, settings, shop_records["GET /api/reports/sales"]["_id"], analysis_id="ana_hot"
    )
    found = sales["analysis_results"]["bottleneck_analysis"]
    (path,) = [b for b in found if b["description"].startswith("hot path:")]
    # From the view down to the leaf with the most self time. That is the 0.3 s upstream wait
    # on an idle machine, but the O(n^2) loop stretches under CPU load (seen: 0.47 s at load
    # 7), so the expected leaf is read from the stored tree, not assumed.
    detail = q.get_request(store.db, shop_records["GET /api/reports/sales"]["_id"])
    assert detail is not None and detail.call_tree is not None
    wait = find_node(detail.call_tree, "sleep")
    loop = find_node(detail.call_tree, "compute_sales_statistics")
    if wait.self_time > loop.self_time:
        assert path["function"] == "sales_report > fetch_exchange_rates > sleep", found
        assert path["type"] == "io"
    else:
        assert path["function"] == "sales_report > compute_sales_statistics", found
        assert path["type"] == "computation"

    inventory = analyze_record(
        store, settings, shop_records["GET /api/reports/inventory"]["_id"], analysis_id="ana_inv"
    )
    assert inventory["status"] == "completed"
    results = inventory["analysis_results"]
    repeated = [
        b for b in results["bottleneck_analysis"] if b["description"].startswith("repeated work")
    ]
    assert [b["function"] for b in repeated] == ["load_price_list"], results["bottleneck_analysis"]
    assert "most_valuable_skus" in repeated[0]["description"]
    assert "order_value" in repeated[0]["description"]
    (suggestion,) = [
        s
        for s in results["optimization_suggestions"]
        if s["title"] == "Compute load_price_list once per request"
    ]
    assert "hoist" in suggestion["description"] and "lru_cache" in suggestion["code_example"]


def find_node(tree: CallTreeNode, function: str) -> CallTreeNode:
    """The node of `function` with the most self time."""
    stack, best = [tree], None
    while stack:
        node = stack.pop()
        if node.function.rsplit(".", 1)[-1] == function and (
            best is None or node.self_time > best.self_time
        ):
            best = node
        stack.extend(node.children)
    assert best is not None, function
    return best
