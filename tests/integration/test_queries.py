"""The typed queries of `storage_backend.queries` on the real embedded store."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from otel_pyinstrument_processor import CallTreeNode, attributes, encode_profile
from storage_backend import Project, ResourceSpans, SpanData, Store
from storage_backend import queries as q
from storage_backend.embedded import EmbeddedServer
from storage_backend.histogram import exact_quantile
from storage_backend.request_queries import TOTAL_CAP, _get, _matches, records_query
from storage_backend.schema import PERFORMANCE_RECORDS, ROLLUPS
from storage_backend.synthetic import SLOW_ROUTE, insert_synthetic

COUNT = 1500
END = datetime.now(timezone.utc).replace(microsecond=0)
SPAN = timedelta(days=6)


@pytest.fixture(scope="module")
def seeded(embedded_server: EmbeddedServer) -> Iterator[tuple[Store, Project, list[dict]]]:
    """One project with COUNT synthetic records (and rollups) over the last 6 days."""
    db_name = f"test_q_{uuid.uuid4().hex[:10]}"
    store = Store.connect(embedded_server.url, db_name)
    store.ensure_schema()
    project, _key = store.projects.create("seeded")
    insert_synthetic(store, project.id, COUNT, end=END, span=SPAN, profile_share=0.3)
    records = list(store.collection(PERFORMANCE_RECORDS).find({"project_id": project.id}))
    yield store, project, records
    store.client.drop_database(db_name)
    store.client.close()


def _durations(records, **match) -> list[float]:
    out = []
    for r in records:
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r["performance_metrics"]["total_duration"])
    return out


def test_endpoint_percentiles_from_rollups_are_within_2_percent_of_exact(seeded):
    store, project, records = seeded
    summary = q.endpoint_summary(store.db, project.id, None, since=END - SPAN, until=END)
    assert sum(e.stats.count for e in summary.endpoints) == COUNT
    assert sum(e.share_of_total_time for e in summary.endpoints) == pytest.approx(1.0)
    for entry in summary.endpoints:
        values = _durations(records, endpoint=entry.endpoint)
        assert entry.stats.count == len(values)
        for name, quant in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            exact = exact_quantile(values, quant)
            got = getattr(entry.stats, name)
            assert abs(got - exact) / exact <= 0.02, (entry.endpoint, name, got, exact)


def test_trends_cover_the_range_in_buckets_and_count_every_record(seeded):
    store, project, records = seeded
    week = q.trends(store.db, project.id, "7d", until=END)
    assert week.bucket_seconds == 6 * 3600 and len(week.points) == 28
    assert sum(p.stats.count for p in week.points) == COUNT == week.overall.count
    exact = exact_quantile(_durations(records), 0.95)
    assert abs(week.overall.p95 - exact) / exact <= 0.02
    errors = sum(1 for r in records if r["is_error"])
    assert week.overall.errors == errors
    day = q.trends(store.db, project.id, "24h", until=END)
    assert len(day.points) == 24 and day.bucket_seconds == 3600
    in_day = [r for r in records if r["timestamp"] >= day.since]
    assert day.overall.count == len(in_day)
    hour = q.trends(store.db, project.id, "1h", endpoint="GET /users", until=END)
    assert len(hour.points) == 60 and hour.endpoint == "GET /users"
    month = q.trends(store.db, project.id, "30d", until=END)
    assert len(month.points) == 30 and month.overall.count == COUNT
    with pytest.raises(ValueError):
        q.trends(store.db, project.id, "2h")  # type: ignore[arg-type]


def test_endpoint_trends_equal_one_trends_query_per_endpoint(seeded):
    store, project, _records = seeded
    every = q.endpoint_trends(store.db, project.id, "7d", until=END)
    summary = q.endpoint_summary(store.db, project.id, None, since=END - SPAN, until=END)
    assert set(every) == {e.endpoint for e in summary.endpoints}
    for name, got in every.items():
        alone = q.trends(store.db, project.id, "7d", endpoint=name, until=END)
        assert got.endpoint == name and got.overall == alone.overall
        assert [p.bucket_start for p in got.points] == [p.bucket_start for p in alone.points]
        assert [p.stats for p in got.points] == [p.stats for p in alone.points]
    counts = q.endpoint_trends(
        store.db, project.id, "7d", endpoints=["GET /users", "GET /nowhere"],
        percentiles=False, until=END,
    )  # fmt: skip
    assert list(counts) == ["GET /users"]  # an endpoint without requests is left out
    users = counts["GET /users"]
    assert [p.stats.count for p in users.points] == [
        p.stats.count for p in every["GET /users"].points
    ]
    assert users.overall.p95 is None and users.overall.count == every["GET /users"].overall.count


def _total_ok(page: q.RequestPage, exact: int) -> bool:
    """Exact, or a lower bound that says so."""
    return page.total == exact or (page.total_is_lower_bound and 0 < page.total <= exact)


@pytest.mark.parametrize(
    "flt",
    [
        q.RequestFilter(),
        q.RequestFilter(endpoint="GET /search"),
        q.RequestFilter(version="1.1.0"),
        q.RequestFilter(endpoint="GET /users", version="1.2.0", method="GET"),
        q.RequestFilter(status_class="4xx", max_duration=0.5),
        q.RequestFilter(min_duration=0.05, since=END - timedelta(days=2)),
    ],
)
def test_slowest_first_pages_are_exactly_the_slowest_matches(seeded, flt):
    """The first window's bound comes from the rollups' histograms: whatever it is, the
    pages hold exactly the slowest matching records, in order."""
    store, project, records = seeded
    conditions = records_query(project.id, flt)
    exact = sorted(
        (
            r["performance_metrics"]["total_duration"]
            for r in records
            if all(_matches(_get(r, path), cond) for path, cond in conditions.items())
        ),
        reverse=True,
    )
    assert len(exact) > 25
    for number in (1, 3):
        page = q.list_requests(store.db, project.id, flt, sort="-duration", page=number, size=25)
        assert [i.duration for i in page.items] == exact[(number - 1) * 25 : number * 25]


def _hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


@pytest.mark.parametrize(
    ("flt", "exact"),
    [
        (q.RequestFilter(endpoint="GET /search"), True),
        (q.RequestFilter(version="1.0.0", errors_only=True), True),
        (q.RequestFilter(since=_hour(END) - timedelta(days=3), until=_hour(END)), True),
        (q.RequestFilter(since=END.replace(second=0) - timedelta(hours=5)), True),
        (q.RequestFilter(endpoint="GET /users", since=END - timedelta(days=3)), False),
        (q.RequestFilter(method="GET"), False),
        (q.RequestFilter(status_class="5xx"), False),
        (q.RequestFilter(endpoint="GET /users", min_duration=0.1), False),
    ],
)
def test_totals_come_exact_from_the_rollups_when_they_count_the_filter(seeded, flt, exact):
    store, project, records = seeded
    conditions = records_query(project.id, flt)
    expected = sum(
        1
        for r in records
        if all(_matches(_get(r, path), cond) for path, cond in conditions.items())
    )
    page = q.list_requests(store.db, project.id, flt, size=5)
    if exact:
        assert page.total == expected and not page.total_is_lower_bound
    else:
        assert _total_ok(page, expected) and page.total <= TOTAL_CAP


def test_requests_list_filters_sorts_and_pages(seeded):
    store, project, records = seeded
    page = q.list_requests(store.db, project.id, size=50)
    # No filter the rollups cannot count: the total is theirs, exact.
    assert page.total == COUNT and not page.total_is_lower_bound
    assert len(page.items) == 50
    stamps = [i.timestamp for i in page.items]
    assert stamps == sorted(stamps, reverse=True)

    slow = q.list_requests(
        store.db,
        project.id,
        q.RequestFilter(endpoint="GET /search", min_duration=0.3, version="1.2.0"),
        sort="-duration",
        size=200,
    )
    expected = [
        r
        for r in records
        if r["endpoint"] == "GET /search"
        and r["performance_metrics"]["total_duration"] >= 0.3
        and r["version_info"]["app_version"] == "1.2.0"
    ]
    assert expected and _total_ok(slow, len(expected))
    durations = [i.duration for i in slow.items]
    assert durations == sorted(durations, reverse=True)
    assert all(i.endpoint == "GET /search" and i.version == "1.2.0" for i in slow.items)

    errors = q.list_requests(store.db, project.id, q.RequestFilter(status_class="5xx"), size=200)
    assert _total_ok(errors, sum(1 for r in records if r["response_info"]["status_code"] >= 500))
    assert all(i.status_code == 500 and i.is_error for i in errors.items)
    posts = q.list_requests(store.db, project.id, q.RequestFilter(method="post"), page=2, size=10)
    assert posts.page == 2 and all(i.method == "POST" for i in posts.items)
    window = q.list_requests(
        store.db, project.id, q.RequestFilter(since=END - timedelta(days=1), until=END)
    )
    assert _total_ok(window, sum(1 for r in records if r["timestamp"] >= END - timedelta(days=1)))
    assert q.list_requests(store.db, "prj_other").total == 0
    with pytest.raises(ValueError):
        q.list_requests(store.db, project.id, size=0)


def test_versions_are_listed_and_the_slower_route_and_function_stand_out(seeded):
    store, project, _records = seeded
    versions = q.list_versions(store.db, project.id, "30d", until=END)
    assert [v.version for v in versions] == ["1.2.0", "1.1.0", "1.0.0"]
    assert sum(v.count for v in versions) == COUNT

    cmp = q.compare_versions(store.db, project.id, "1.0.0", "1.2.0", "30d", until=END)
    search = next(e for e in cmp.endpoints if e.endpoint == f"GET {SLOW_ROUTE}")
    assert search.p95_delta is not None and search.p95_delta > 0
    assert search.base is not None and search.target is not None
    assert cmp.base_profiles > 0 and cmp.target_profiles > 0
    # The synthetic 1.2.0 spends a larger share of /search in rank_results.
    only_search = q.compare_versions(
        store.db, project.id, "1.0.0", "1.2.0", "30d", until=END, endpoint=f"GET {SLOW_ROUTE}"
    )
    assert [e.endpoint for e in only_search.endpoints] == [f"GET {SLOW_ROUTE}"]
    top = only_search.functions[0]
    assert top.function == "rank_results" and top.delta > 0


def test_version_comparison_counts_every_request_of_both_versions_from_day_tiles(seeded):
    """A 6-day window read as whole days plus edge hours counts what hours alone would,
    and a retired version's trees are found from its last hour."""
    store, project, records = seeded
    cmp = q.compare_versions(
        store.db, project.id, "1.0.0", "1.2.0", None, since=END - SPAN, until=END,
        profile_limit=20,
    )  # fmt: skip
    for entry in cmp.endpoints:
        for version, stats in (("1.0.0", entry.base), ("1.2.0", entry.target)):
            expected = sum(
                1
                for r in records
                if r["endpoint"] == entry.endpoint and r["version_info"]["app_version"] == version
            )
            assert (stats.count if stats else 0) == expected, (entry.endpoint, version)
    profiled = {
        v: sum(1 for r in records if r.get("profile") and r["version_info"]["app_version"] == v)
        for v in ("1.0.0", "1.2.0")
    }
    assert cmp.base_profiles == min(20, profiled["1.0.0"])
    assert cmp.target_profiles == min(20, profiled["1.2.0"])


def test_aggregated_call_tree_merges_requests_with_counts(seeded):
    store, project, records = seeded
    endpoint = f"GET {SLOW_ROUTE}"
    profiled = [r for r in records if r["endpoint"] == endpoint and r.get("profile")]
    agg = q.aggregated_call_tree(store.db, project.id, endpoint, limit=1000)
    assert agg.profiles == len(profiled) > 0 and agg.skipped == 0
    root = agg.root
    assert root is not None and root.function == "wsgi_app"
    assert root.request_count == len(profiled)
    handler = root.children[0]
    assert handler.function == "handle" and handler.request_count == len(profiled)
    assert {c.function for c in handler.children} == {"execute", "rank_results"}
    assert sum(c.total_time for c in handler.children) <= handler.total_time + 1e-6
    one_version = q.aggregated_call_tree(store.db, project.id, endpoint, version="1.0.0")
    assert 0 < one_version.profiles < agg.profiles
    empty = q.aggregated_call_tree(store.db, project.id, "GET /nothing")
    assert empty.root is None and empty.profiles == 0


def _batch(trace: int, *, tree: CallTreeNode | None, start_ns: int) -> list[ResourceSpans]:
    trace_id = f"{trace:032x}"
    attrs = {
        "http.request.method": "GET",
        "http.route": "/items/{id}",
        "url.path": "/items/1",
        "http.response.status_code": 200,
    }
    if tree is not None:
        enc = encode_profile(tree)
        attrs[attributes.PROFILE_TREE] = enc.tree
        attrs[attributes.PROFILE_FORMAT] = enc.format
    server = SpanData(
        trace_id,
        "00000000000000a1",
        None,
        "GET /items/{id}",
        "server",
        start_ns,
        start_ns + 300_000_000,
        attrs,
    )
    client = SpanData(
        trace_id,
        "00000000000000a2",
        "00000000000000a1",
        "SELECT",
        "client",
        start_ns + 10_000_000,
        start_ns + 200_000_000,
        {"db.system": "sqlite"},
    )
    return [ResourceSpans({"service.name": "svc", "service.version": "3.0"}, [server, client])]


def test_ingest_counts_into_rollups_once_and_detail_has_spans_tree_and_calls(store, project):
    tree = CallTreeNode(
        "view", "app.py", 3, 0.3, 0.1, 30, [CallTreeNode("query", "db.py", 9, 0.2, 0.2, 20)]
    )
    now_ns = int(datetime.now(timezone.utc).timestamp() * 1e9)
    batch = _batch(1, tree=tree, start_ns=now_ns)
    store.ingest(project.project, batch)
    store.ingest(project.project, batch)  # an exporter's retry: stored and counted once
    assert store.collection(PERFORMANCE_RECORDS).count_documents({}) == 1
    hour = q.trends(store.db, project.project.id, "1h")
    assert hour.overall.count == 1
    assert hour.overall.p50 == pytest.approx(0.3, rel=0.01)
    assert store.collection(ROLLUPS).count_documents({"level": "1m"}) == 2  # endpoint + project

    page = q.list_requests(store.db, project.project.id)
    detail = q.get_request(store.db, page.items[0].id, project.project.id)
    assert detail is not None
    assert [s.name for s in detail.spans] == ["GET /items/{id}", "SELECT"]
    assert detail.call_tree is not None and detail.call_tree.children[0].function == "query"
    assert [c["function_name"] for c in detail.function_calls] == ["view", "query"]
    assert detail.function_calls[1]["parent_call_id"] == "0"
    assert "tree" not in (detail.record.get("profile") or {})
    assert detail.record["endpoint"] == "GET /items/{id}"
    assert q.get_request(store.db, page.items[0].id, "prj_someone_else") is None
    assert q.get_request(store.db, "nope") is None


def test_a_trace_id_finds_its_requests_in_the_given_projects_only(store, project):
    now_ns = int(datetime.now(timezone.utc).timestamp() * 1e9)
    other, _ = store.projects.create(f"other-{uuid.uuid4().hex[:6]}")
    store.ingest(project.project, _batch(0xABC, tree=None, start_ns=now_ns))
    store.ingest(project.project, _batch(0xABD, tree=None, start_ns=now_ns))  # id + 1
    # The same trace also entered a second profiled service of another project, later.
    second = _batch(0xABC, tree=None, start_ns=now_ns + 10**8)
    second[0].spans[0].span_id = "00000000000000b1"
    store.ingest(other, second)
    trace = f"{0xABC:032x}"
    mine = q.requests_of_trace(store.db, [project.project.id], trace)
    assert [(r.trace_id, r.span_id) for r in mine] == [(trace, "00000000000000a1")]
    both = q.requests_of_trace(store.db, [other.id, project.project.id], trace.upper())
    assert [r.span_id for r in both] == ["00000000000000a1", "00000000000000b1"]  # start order
    # What a user pastes from a traceparent header works too; an unknown trace is empty.
    assert q.requests_of_trace(store.db, [project.project.id], f"00-{trace}-{'1' * 16}-01")
    assert q.requests_of_trace(store.db, [project.project.id], "f" * 32) == []
    for bad in ("", "xyz", "0" * 32, trace[:-1], trace + "0", f"{trace}'; drop"):
        with pytest.raises(ValueError, match="trace id"):
            q.requests_of_trace(store.db, [project.project.id], bad)


def test_undecodable_tree_is_reported_not_raised(store, project):
    now_ns = int(datetime.now(timezone.utc).timestamp() * 1e9)
    batch = _batch(2, tree=None, start_ns=now_ns)
    batch[0].spans[0].attributes[attributes.PROFILE_TREE] = "not-a-tree"
    batch[0].spans[0].attributes[attributes.PROFILE_FORMAT] = "calltree/1;json+zlib+base64"
    store.ingest(project.project, batch)
    record_id = q.list_requests(store.db, project.project.id).items[0].id
    detail = q.get_request(store.db, record_id)
    assert detail is not None and detail.call_tree is None and detail.profile_error
    agg = q.aggregated_call_tree(store.db, project.project.id, "GET /items/{id}")
    assert agg.skipped == 1 and agg.root is None


def test_query_results_are_plain_data(seeded):
    store, project, _records = seeded
    result = q.to_dict(q.endpoint_summary(store.db, project.id, "7d", until=END))
    seen_types: set[type] = set()

    def walk(value):
        seen_types.add(type(value))
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(result)
    assert seen_types <= {dict, list, str, int, float, bool, type(None), datetime}
    assert defaultdict not in seen_types


@pytest.mark.parametrize("sort", ["-timestamp", "-duration", "timestamp"])
def test_windowed_pages_equal_a_full_sort(seeded, sort):
    store, project, records = seeded
    key = "timestamp" if sort.endswith("timestamp") else "duration"
    expected = sorted(
        records,
        key=lambda r: (
            r["timestamp"] if key == "timestamp" else r["performance_metrics"]["total_duration"]
        ),
        reverse=sort.startswith("-"),
    )
    got = []
    for page in range(1, COUNT // 200 + 2):
        got += [
            i.id
            for i in q.list_requests(store.db, project.id, sort=sort, page=page, size=200).items
        ]
    assert got == [r["_id"] for r in expected]
    flt = q.RequestFilter(endpoint="GET /users", min_duration=0.05)
    page = q.list_requests(store.db, project.id, flt, sort=sort, size=200).items
    match = [
        r["_id"]
        for r in expected
        if r["endpoint"] == "GET /users" and r["performance_metrics"]["total_duration"] >= 0.05
    ]
    assert [i.id for i in page] == match[:200]
