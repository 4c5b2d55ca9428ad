"""OTLP/HTTP `/v1/traces` with the real Python HTTP exporter, OTLP/JSON, and `/metrics`."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from storage_backend import Store
from storage_backend.span_codec import document_spans
from tests.otlp_helpers import export_request, make_spans


def span_counts(store: Store) -> tuple[int, int]:
    """(spans stored, performance records stored)."""
    spans = sum(d["span_count"] for d in store.collection("spans").find({}, {"span_count": 1}))
    return spans, store.collection("performance_records").count_documents({})


def stored_spans(store: Store) -> dict[str, dict]:
    """Every stored span by name-and-id, with its attributes."""
    docs = store.collection("spans").find({})
    return {s["span_id"]: s for doc in docs for s in document_spans(doc)}


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_python_http_exporter_spans_and_attributes_are_stored(
    store, http_receiver, project, compression
):
    spans = make_spans(n_traces=3, children=2)
    exp = OTLPSpanExporter(
        endpoint=http_receiver.traces_url,
        headers={"authorization": f"Bearer {project.key}"},
        compression=compression,
    )
    assert exp.export(spans) is SpanExportResult.SUCCESS
    assert span_counts(store) == (9, 3)
    stored = stored_spans(store)
    for span in spans:
        doc = stored[format(span.context.span_id, "016x")]
        assert doc["name"] == span.name
        assert doc["attributes"] == dict(span.attributes)
    record = store.collection("performance_records").find_one({})
    assert record["endpoint"] == "GET /items/{id}"
    assert record["service"]["name"] == "svc"


def _otlp_json(trace_id: str, span_id: str, *, name: str = "GET /json", kind: int = 2) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual", "futureField": 1},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": name,
                                "kind": kind,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": 1700000000250000000,
                                "attributes": [
                                    {"key": "http.request.method", "value": {"stringValue": "GET"}},
                                    {"key": "http.route", "value": {"stringValue": "/json"}},
                                    {"key": "retries", "value": {"intValue": "3"}},
                                ],
                                "status": {"code": 2, "message": "boom"},
                                "unknownField": {"x": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_otlp_json_with_hex_ids_int_enums_and_string_int64(store, http_receiver, project):
    trace_id, span_id = "5B8EFFF798038103D269B633813FC60C", "EEE19B7EC3C1B174"
    response = httpx.post(
        http_receiver.traces_url,
        json=_otlp_json(trace_id, span_id),
        headers={"authorization": f"Bearer {project.key}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {}  # full success leaves partial_success unset
    (span,) = stored_spans(store).values()
    assert span["span_id"] == span_id.lower()
    assert span["kind"] == "server" and span["status_code"] == "error"
    assert span["attributes"] == {
        "http.request.method": "GET",
        "http.route": "/json",
        "retries": 3,
    }
    assert span["duration"] == pytest.approx(0.25)
    record = store.collection("performance_records").find_one({})
    assert record["trace_id"] == trace_id.lower() and record["is_error"] is True


def test_json_partial_success_reports_rejected_spans(store, http_receiver, project):
    payload = _otlp_json("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    bad = dict(payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0], spanId="zz")
    payload["resourceSpans"][0]["scopeSpans"][0]["spans"].append(bad)
    response = httpx.post(
        http_receiver.traces_url, json=payload, headers={"x-pystrument-project-key": project.key}
    )
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "span_id" in partial["errorMessage"]
    assert span_counts(store) == (1, 1)


def test_protobuf_partial_success_and_response_encoding(store, http_receiver, project):
    request = export_request(make_spans(n_traces=2, children=0))
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00" * 16
    response = httpx.post(
        http_receiver.traces_url,
        content=gzip.compress(request.SerializeToString()),
        headers={
            "content-type": "application/x-protobuf",
            "content-encoding": "gzip",
            "authorization": f"Bearer {project.key}",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    body = ExportTraceServiceResponse.FromString(response.content)
    assert body.partial_success.rejected_spans == 1
    assert "trace_id" in body.partial_success.error_message
    assert span_counts(store) == (1, 1)


def test_error_body_is_a_status_in_the_request_encoding(http_receiver):
    proto = httpx.post(
        http_receiver.traces_url,
        content=export_request(make_spans()).SerializeToString(),
        headers={"content-type": "application/x-protobuf", "authorization": "Bearer nope"},
    )
    assert proto.status_code == 401
    assert proto.headers["content-type"] == "application/x-protobuf"
    status = status_pb2.Status.FromString(proto.content)
    assert status.code == 16 and "project key" in status.message  # UNAUTHENTICATED
    as_json = httpx.post(http_receiver.traces_url, json={"resourceSpans": []})
    assert as_json.status_code == 401
    assert as_json.json()["code"] == 16
    refused = http_receiver.ingestor.metrics.spans_refused
    assert refused.value(transport="http", reason="UNAUTHENTICATED") == 3  # the spans sent


def test_empty_request_succeeds_and_get_is_405(store, http_receiver, project):
    response = httpx.post(
        http_receiver.traces_url,
        content=b"",
        headers={
            "content-type": "application/x-protobuf",
            "authorization": f"Bearer {project.key}",
        },
    )
    assert response.status_code == 200
    assert httpx.get(http_receiver.traces_url).status_code == 405
    assert span_counts(store) == (0, 0)


def test_metrics_count_accepted_rejected_and_refused_spans(store, http_receiver, project):
    headers = {"authorization": f"Bearer {project.key}"}
    payload = _otlp_json("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    payload["resourceSpans"][0]["scopeSpans"][0]["spans"].append(
        dict(payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0], traceId="")
    )
    assert httpx.post(http_receiver.traces_url, json=payload, headers=headers).status_code == 200
    assert httpx.post(http_receiver.traces_url, content=b"{", headers={
        "content-type": "application/json", **headers}).status_code == 400  # fmt: skip
    response = httpx.get(f"{http_receiver.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'pystrument_receiver_accepted_spans_total{transport="http"} 1' in text
    assert 'pystrument_receiver_rejected_spans_total{transport="http"} 1' in text
    assert 'pystrument_receiver_requests_total{outcome="INVALID_ARGUMENT",transport="http"} 1' in (
        text
    )
    assert 'pystrument_receiver_export_duration_seconds_count{transport="http"} 1' in text
    assert "pystrument_receiver_write_batch_spans_count 1" in text
    assert "# TYPE pystrument_receiver_write_batch_spans histogram" in text
    json.dumps(text)  # plain text, nothing binary


def test_cors_preflight_only_for_allowed_origins(store):
    from fastapi.testclient import TestClient

    from collector_receiver.http_app import create_app

    client = TestClient(create_app(store, cors_allowed_origins=["https://shop.example.com"]))
    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "content-type,authorization"}  # fmt: skip
    allowed = client.options("/v1/traces", headers={"origin": "https://shop.example.com",
                                                     **preflight})  # fmt: skip
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
    other = client.options("/v1/traces", headers={"origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    plain = TestClient(create_app(store))
    no_cors = plain.options("/v1/traces", headers={"origin": "https://shop.example.com",
                                                    **preflight})  # fmt: skip
    assert "access-control-allow-origin" not in no_cors.headers
