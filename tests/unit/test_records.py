"""Building `performance_records` and `spans` documents from spans (no database needed)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from storage_backend.models import ResourceSpans, SpanData
from storage_backend.records import (
    build_performance_records,
    build_span_documents,
    is_entry_span,
)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
KW = {"retention": timedelta(days=30), "received_at": NOW}


def _span(kind="server", span_id="00000000000000aa", **attrs):
    return SpanData(
        trace_id="0" * 31 + "1",
        span_id=span_id,
        parent_span_id=None,
        name="GET /x",
        kind=kind,
        start_time_ns=1_700_000_000_000_000_000,
        end_time_ns=1_700_000_000_250_000_000,
        attributes=attrs,
        scope_name="opentelemetry.instrumentation.flask",
        scope_version="0.66b1",
    )


def test_old_http_semconv_names_are_read_too():
    span = _span(
        **{
            "http.method": "POST",
            "http.route": "/orders",
            "http.target": "/orders?page=2&x=1",
            "http.status_code": 503,
            "http.user_agent": "curl/8",
            "net.peer.ip": "10.0.0.1",
        }
    )
    [record] = build_performance_records("p1", [ResourceSpans({}, [span])], **KW)
    assert record["endpoint"] == "POST /orders"
    assert record["request_info"]["path"] == "/orders"
    assert record["request_info"]["query_params"] == {"page": ["2"], "x": ["1"]}
    assert record["request_info"]["user_agent"] == "curl/8"
    assert record["response_info"]["status_code"] == 503
    assert record["is_error"] is True
    assert record["performance_metrics"]["total_duration"] == 0.25
    assert record["expire_at"] == NOW + timedelta(days=30)
    assert record["environment"]["framework"] == "opentelemetry.instrumentation.flask"


def test_only_entry_spans_make_records():
    assert is_entry_span(_span("server"))
    assert is_entry_span(_span("consumer"))
    assert not is_entry_span(_span("client"))
    assert is_entry_span(_span("internal", **{"pystrument.profile.tree": "x"}))
    batch = [ResourceSpans({}, [_span("server"), _span("client", span_id="00000000000000bb")])]
    assert len(build_performance_records("p", batch, **KW)) == 1


def test_span_documents_group_per_resource_with_stable_ids():
    spans = [_span("server"), _span("client", span_id="00000000000000bb")]
    other = _span("server", span_id="00000000000000cc")
    other.trace_id = "f" * 32
    batch = [
        ResourceSpans({"service.name": "a"}, [*spans, other]),
        ResourceSpans({"service.name": "b"}, [_span("server", span_id="00000000000000dd")]),
    ]
    docs = build_span_documents("p", batch, **KW)
    assert [d["span_count"] for d in docs] == [3, 1]
    assert docs[0]["trace_ids"] == ["0" * 31 + "1", "f" * 32]
    assert [d["service_name"] for d in docs] == ["a", "b"]
    again = build_span_documents("p", batch, **KW)
    assert [d["_id"] for d in docs] == [d["_id"] for d in again]
    # Other spans (or the same spans in another project) make another document.
    assert build_span_documents("q", batch, **KW)[0]["_id"] != docs[0]["_id"]
    assert build_span_documents("p", batch[:1], **KW)[0]["_id"] == docs[0]["_id"]
    assert build_span_documents("p", [ResourceSpans({}, spans)], **KW)[0]["_id"] != docs[0]["_id"]


def test_request_metrics_map_into_performance_metrics():
    span = _span(
        **{
            "pystrument.cpu_time": 0.1,
            "pystrument.memory.peak": 50_000_000,
            "pystrument.memory.delta": -4096,
            "pystrument.db.query_count": 41,
            "pystrument.db.query_time": 0.02,
            "pystrument.db.slow_queries": 0,
            "pystrument.cache.hits": 2,
            "pystrument.cache.misses": 1,
            "pystrument.cache.time": 0.001,
        }
    )
    [record] = build_performance_records("p1", [ResourceSpans({}, [span])], **KW)
    metrics = record["performance_metrics"]
    assert metrics["memory_usage"] == {"peak_memory": 50_000_000, "memory_delta": -4096}
    assert metrics["database_metrics"] == {"query_count": 41, "query_time": 0.02, "slow_queries": 0}
    assert metrics["cache_metrics"] == {"cache_hits": 2, "cache_misses": 1, "cache_time": 0.001}
    bare = build_performance_records("p1", [ResourceSpans({}, [_span()])], **KW)[0]
    assert set(bare["performance_metrics"]) == {"total_duration"}


def test_the_same_span_sent_to_two_projects_makes_two_records():
    batch = [ResourceSpans({}, [_span("server")])]
    [a] = build_performance_records("prj_a", batch, **KW)
    [b] = build_performance_records("prj_b", batch, **KW)
    assert a["_id"] != b["_id"]
    assert build_performance_records("prj_a", batch, **KW)[0]["_id"] == a["_id"]


def test_a_span_list_too_large_for_one_document_splits_between_traces(monkeypatch):
    from storage_backend import records

    def trace(t: int) -> list[SpanData]:
        spans = [_span("server", span_id=f"{t:08x}{i:08x}") for i in range(3)]
        for span in spans:
            span.trace_id = f"{t + 1:032x}"
            span.attributes = {"payload": os.urandom(300).hex()}  # does not compress
        return spans

    batch = [ResourceSpans({}, [s for t in range(8) for s in trace(t)])]
    assert len(build_span_documents("p", batch, **KW)) == 1
    monkeypatch.setattr(records, "MAX_SPANS_BLOB_BYTES", 3_000)  # traces of ~1 KB: 2 fit, not 4
    docs = build_span_documents("p", batch, **KW)
    assert len(docs) == 4
    assert all(len(d["spans_blob"]) <= 3_000 for d in docs)
    # Every trace whole in exactly one document; all 24 spans kept; stable ids on a resend.
    assert sorted(t for d in docs for t in d["trace_ids"]) == [f"{t + 1:032x}" for t in range(8)]
    assert sum(d["span_count"] for d in docs) == 24
    assert [d["_id"] for d in build_span_documents("p", batch, **KW)] == [d["_id"] for d in docs]
    assert len({d["_id"] for d in docs}) == 4
