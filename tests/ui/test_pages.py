"""Every page of the UI driven by Streamlit's AppTest against a store the real pipeline
filled (tests/ui/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from storage_backend import queries as q


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _open(at: AppTest, page: str) -> AppTest:
    """Run the app once (st.navigation registers its pages), then open `page`."""
    at.run()
    return at.switch_page(page).run()


def _charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def _dataframes(at: AppTest) -> list:
    return list(at.dataframe)


def test_overview_shows_totals_charts_and_slowest(app, shop_data) -> None:
    at = app.run()
    _ok(at)
    assert at.title[0].value == "shop · overview"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests"] == "18"  # 9 requests in each of two versions
    assert metrics["Error rate"] == f"{2 / 18:.1%}"  # the two /api/fail (404s are not errors)
    assert metrics["p95"] != "—"
    assert len(_charts(at)) == 1
    slowest = _dataframes(at)[0].value
    assert slowest["endpoint"].iloc[0] == "GET /api/reports/sales"


def test_an_empty_project_tells_the_newcomer_what_to_do(app, shop_data) -> None:
    app.query_params["project"] = shop_data.empty_project.id  # a deep link to the project
    at = app.run()
    _ok(at)
    assert at.sidebar.selectbox(key="project_pick").value == shop_data.empty_project.id
    assert any("No requests for **brand-new**" in i.value for i in at.info)
    snippet = "\n".join(c.value for c in at.code)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=" in snippet and "configure(" in snippet


def test_time_range_changes_the_buckets(app) -> None:
    at = app.run()
    assert "Requests per hour" in _charts(at)[0].proto.spec  # 24 h by default
    # Sidebar widgets of an st.navigation app are not reachable from AppTest after the first
    # run (Streamlit keeps them out of the page's delta), so drive the range by its deep link.
    app2 = AppTest.from_file(at._script_path, default_timeout=60)
    app2.query_params["range"] = "1h"
    at = app2.run()
    _ok(at)
    assert "Requests per minute" in _charts(at)[0].proto.spec
    assert {m.label: m.value for m in at.metric}["Requests"] == "18"  # all sent just now


def test_endpoints_table_and_merged_flame_graph(app) -> None:
    at = _open(app, "views/endpoints.py")
    _ok(at)
    table = _dataframes(at)[0].value
    assert set(table["endpoint"]) >= {"GET /api/reports/sales", "GET /api/orders", "GET /api/fail"}
    assert abs(table["share of time"].sum() - 1.0) < 1e-6
    assert all(sum(spark) > 0 for spark in table["traffic"])  # every row has its sparkline
    assert not _charts(at) and not at.header  # nothing opened (merged) until one is picked
    at.selectbox(key="endpoint_pick").select("GET /api/reports/sales").run()
    _ok(at)
    assert at.header[0].value == "GET /api/reports/sales"
    charts = _charts(at)
    assert len(charts) == 2  # the endpoint's trend and its merged call tree
    assert "compute_sales_statistics" in charts[1].proto.spec
    at.text_input(key="endpoint_filter").input("orders").run()
    assert list(_dataframes(at)[0].value["endpoint"]) == ["GET /api/orders"]


def test_requests_filters_change_the_list(app, shop_data) -> None:
    at = _open(app, "views/requests.py")
    _ok(at)
    assert len(_dataframes(at)[0].value) == 18
    at.selectbox(key="req_status").select("5xx").run()
    rows = _dataframes(at)[0].value
    assert set(rows["endpoint"]) == {"GET /api/fail"} and len(rows) == 2
    at.selectbox(key="req_status").select("any").run()
    at.selectbox(key="req_endpoint").select("GET /api/orders").run()
    at.selectbox(key="req_version").select("1.1.0").run()
    rows = _dataframes(at)[0].value
    assert list(rows["endpoint"]) == ["GET /api/orders"] * 2
    assert set(rows["version"]) == {"1.1.0"}
    at.selectbox(key="req_endpoint").select("any").run()
    at.selectbox(key="req_version").select("any").run()
    # The floor: just under the fastest sales report, whatever this machine's load.
    everything = q.list_requests(shop_data.store.db, shop_data.project.id, size=50).items
    floor_ms = min(r.duration for r in everything if r.endpoint.endswith("sales")) * 1000 - 1
    at.number_input(key="req_min").set_value(floor_ms).run()
    rows = _dataframes(at)[0].value
    expected = {r.id for r in everything if r.duration * 1000 >= floor_ms}
    assert len(rows) == len(expected) >= 4  # the four sales reports, and anything as slow
    assert (rows["duration (ms)"] >= floor_ms - 0.1).all()


def _slowest_record(shop_data) -> q.RequestSummary:
    page = q.list_requests(
        shop_data.store.db,
        shop_data.project.id,
        q.RequestFilter(endpoint="GET /api/reports/sales"),
        sort="-duration",
        size=1,
    )
    return page.items[0]


def test_request_page_shows_flame_graph_text_tree_waterfall_and_downloads(app, shop_data) -> None:
    record = _slowest_record(shop_data)
    app.query_params["record"] = record.id
    at = _open(app, "views/request.py")
    _ok(at)
    assert at.title[0].value == "GET /api/reports/sales"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Duration"].endswith(("ms", " s")) and metrics["CPU"] != "—"
    assert metrics["Database"].endswith("ms")  # the SQLite client spans of the trace
    assert metrics["HTTP calls"] == "—"
    specs = [c.proto.spec for c in _charts(at)]
    assert any('"icicle"' in s and "compute_sales_statistics" in s for s in specs), [
        s[:500] for s in specs
    ]
    waterfall = next(json.loads(s) for s in specs if '"bar"' in s)
    assert waterfall["layout"]["yaxis"]["ticktext"][0] == "GET /api/reports/sales"
    assert any(t.strip() == "SELECT" for t in waterfall["layout"]["yaxis"]["ticktext"][1:])
    tree_html = "".join(h.proto.body for h in at.get("html"))
    assert "<details" in tree_html and "fetch_exchange_rates" in tree_html
    assert len(at.get("download_button")) == 2


def test_a_trace_id_link_opens_its_request_and_the_requests_page_finds_it(app, shop_data) -> None:
    record = _slowest_record(shop_data)
    # A trace viewer's link: `/request?trace=<id>` (here in upper case, as some show it).
    app.query_params["trace"] = record.trace_id.upper()
    at = _open(app, "views/request.py")
    _ok(at)
    assert at.title[0].value == "GET /api/reports/sales"
    assert record.trace_id in at.caption[0].value

    fresh = AppTest.from_file(app._script_path, default_timeout=60)
    fresh.session_state["project_id"] = shop_data.project.id
    at = _open(fresh, "views/requests.py")
    at.text_input(key="req_trace").input(f"00-{record.trace_id}-{'1' * 16}-01").run()
    _ok(at)
    rows = _dataframes(at)[0].value
    assert list(rows["endpoint"]) == ["GET /api/reports/sales"]
    at.text_input(key="req_trace").input("f" * 32).run()
    assert "No profiled request of this trace" in at.info[0].value
    at.text_input(key="req_trace").input("not-a-trace").run()
    assert "not a trace id" in at.error[0].value


def test_an_unknown_trace_id_link_says_why_it_may_be_missing(app) -> None:
    app.query_params["trace"] = "e" * 32
    at = _open(app, "views/request.py")
    assert not at.exception
    assert "No profiled request of trace" in at.warning[0].value


def test_request_page_explains_a_bad_link(app) -> None:
    app.query_params["record"] = "no-such-record"
    at = _open(app, "views/request.py")
    assert not at.exception
    assert "No request 'no-such-record'" in at.error[0].value


def test_versions_page_compares_two_versions(app) -> None:
    at = _open(app, "views/versions.py")
    _ok(at)
    assert at.selectbox(key="ver_base").value == "1.0.0"
    assert at.selectbox(key="ver_target").value == "1.1.0"
    endpoints = _dataframes(at)[0].value
    assert "GET /api/reports/sales" in set(endpoints["endpoint"])
    assert {m.label for m in at.metric} >= {"Endpoints compared", "Slower by ≥10 %"}
    specs = [c.proto.spec for c in _charts(at)]
    assert any('"icicle"' in s for s in specs)  # the differential flame graph


def test_projects_page_creates_a_project_and_shows_its_key_once(app, shop_data) -> None:
    at = _open(app, "views/projects.py")
    _ok(at)
    at.text_input[0].input("checkout")
    at.button[0].click()  # the create form's submit
    at.run()
    _ok(at)
    created = shop_data.store.projects.find_by_name("checkout")
    assert created is not None
    key = next(c.value for c in at.code if c.value.startswith("psk_"))
    assert shop_data.store.projects.find_by_key(key).id == created.id
    assert created.key_prefix == key[: len(created.key_prefix)]


def test_admin_token_gate_off_loopback(app, monkeypatch) -> None:
    monkeypatch.setenv("PYSTRUMENT_UI_ADDRESS", "0.0.0.0")
    monkeypatch.setenv("PYSTRUMENT_ADMIN_TOKEN", "s3cret-token")
    at = app.run()
    assert not at.exception
    assert not at.metric  # nothing shown before signing in
    at.text_input[0].input("wrong")
    at.button[0].click()
    at.run()
    assert "not right" in at.error[0].value
    at.text_input[0].input("s3cret-token")
    at.button[0].click()
    at.run()
    _ok(at)
    assert {m.label for m in at.metric} >= {"Requests", "p95"}


def test_without_a_token_off_loopback_the_ui_refuses(app, monkeypatch) -> None:
    monkeypatch.setenv("PYSTRUMENT_UI_ADDRESS", "0.0.0.0")
    at = app.run()
    assert "PYSTRUMENT_ADMIN_TOKEN" in at.error[0].value
    assert not at.metric


def test_analyze_button_enqueues_a_job_and_shows_its_result(app, shop_data) -> None:
    from analysis_service import Worker

    record = _slowest_record(shop_data)
    app.query_params["record"] = record.id
    at = _open(app, "views/request.py")
    at.button(key="analyze_one").click().run()
    _ok(at)
    job_id = at.session_state["pystrument_jobs"][record.id]
    job = shop_data.store.jobs.get(job_id)
    assert job["type"] == "analyze" and job["payload"]["record_id"] == record.id
    assert job["state"] == "pending"
    assert any("waiting for a worker" in m.value for m in at.markdown)

    # A real worker (builtin analyzer) runs it; the page shows the result for people.
    assert Worker(shop_data.store, schedule=False).run_until_idle() >= 1
    st.cache_data.clear()
    at.run()
    _ok(at)
    assert any("done" in m.value for m in at.markdown)
    labels = {m.label: m.value for m in at.metric}
    assert labels["Performance score"].endswith("/100")
    # Pressing again while nothing runs makes a new job; the finished one stays readable.
    assert shop_data.store.analyses.for_job(job_id)


def test_analyses_page_batches_the_slowest_requests(app, shop_data) -> None:
    at = _open(app, "views/analyses.py")
    _ok(at)
    before = shop_data.store.jobs.stats()["by_type"].get("batch_analyze", {}).get("pending", 0)
    at.selectbox(key="batch_endpoint").select("GET /api/orders")
    at.number_input(key="batch_count").set_value(3)
    at.button(key="batch_go").click().run()
    _ok(at)
    job_id = at.session_state["pystrument_batch_jobs"][0]
    job = shop_data.store.jobs.get(job_id)
    assert job["type"] == "batch_analyze"
    ids = job["payload"]["record_ids"]
    assert len(ids) == 3
    stored = {r.id: r for r in q.list_requests(shop_data.store.db, shop_data.project.id,
              q.RequestFilter(endpoint="GET /api/orders"), size=50).items}  # fmt: skip
    assert set(ids) <= set(stored)
    # the three slowest of the four /api/orders requests
    slowest = sorted(stored.values(), key=lambda r: r.duration, reverse=True)[:3]
    assert set(ids) == {r.id for r in slowest}
    after = shop_data.store.jobs.stats()["by_type"]["batch_analyze"]["pending"]
    assert after == before + 1
    assert {m.label for m in at.metric} >= {"Waiting", "Running", "Done", "Failed"}


def test_projects_page_saves_settings_and_rotates_the_key(app, shop_data) -> None:
    project = shop_data.empty_project
    app.query_params["project"] = project.id
    at = _open(app, "views/projects.py")
    _ok(at)
    assert at.subheader[0].value == "Settings of brand-new"
    at.slider[0].set_value(0.25)
    next(n for n in at.number_input if n.label.startswith("Slow request")).set_value(0.5)
    next(t for t in at.toggle if t.label.startswith("Analyse slow")).set_value(True)
    next(b for b in at.button if b.label == "Save settings").click()
    at.run()
    _ok(at)
    saved = shop_data.store.projects.get(project.id).config
    assert saved.sampling_rate == 0.25
    assert saved.alert_threshold.response_time == 0.5
    assert saved.auto_analysis is True

    before = {c.value for c in at.code}
    assert at.button(key=f"rotate_{project.id}").disabled  # not before the confirmation
    at.checkbox(key=f"rotate_ok_{project.id}").check().run()
    at.button(key=f"rotate_{project.id}").click()
    at.run()
    _ok(at)
    new_key = next(c.value for c in at.code if c.value.startswith("psk_") and c.value not in before)
    assert shop_data.store.projects.find_by_key(new_key).id == project.id
    # The snippet on the page now carries the new key for copy-paste.
    assert any(f"PYSTRUMENT_PROJECT_KEY={new_key}" in c.value for c in at.code)


def test_an_unreachable_store_is_a_message(monkeypatch) -> None:
    from storage_backend.embedded import free_port

    monkeypatch.setenv("PYSTRUMENT_MONGODB_URL", f"mongodb://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PYSTRUMENT_MONGODB_DATABASE", "nowhere")
    monkeypatch.setenv("PYSTRUMENT_UI_ADDRESS", "127.0.0.1")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "ui" / "app.py"),
                           default_timeout=60).run()  # fmt: skip
    assert not at.exception
    assert "Cannot reach the store" in at.error[0].value
