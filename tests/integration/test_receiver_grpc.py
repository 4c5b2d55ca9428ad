"""The OTLP/gRPC receiver against the real embedded store, with real OTLP exporters."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from storage_backend import Store, trace_spans
from storage_backend.embedded import EmbeddedServer
from storage_backend.span_codec import SPANS_FORMAT, document_spans
from tests.conftest import start_receiver
from tests.otlp_helpers import exporter, make_spans, raw_export


def _counts(store: Store) -> tuple[int, int]:
    spans = sum(d["span_count"] for d in store.collection("spans").find({}, {"span_count": 1}))
    return spans, store.collection("performance_records").count_documents({})


def test_exporter_spans_are_stored_with_records_for_entry_spans(store, receiver, project):
    spans = make_spans(n_traces=3, children=2)
    result = exporter(receiver.endpoint, project.key).export(spans)
    assert result is SpanExportResult.SUCCESS
    assert _counts(store) == (9, 3)
    record = store.collection("performance_records").find_one({"project_id": project.project.id})
    assert record["endpoint"] == "GET /items/{id}"
    assert record["request_info"]["method"] == "GET"
    assert record["response_info"]["status_code"] == 200
    assert record["version_info"]["app_version"] == "2.1.0"
    assert record["service"]["name"] == "svc"
    assert record["performance_metrics"]["total_duration"] > 0
    assert record["profile"] is None  # no processor in this test
    # One document carries the export's spans (one resource): all three traces.
    group = store.collection("spans").find_one({"trace_ids": record["trace_id"]})
    assert group["span_count"] == 9 and len(group["trace_ids"]) == 3
    assert group["spans_format"] == SPANS_FORMAT
    assert {s["kind"] for s in document_spans(group)} == {"server", "client"}
    trace = trace_spans(store.db, project.project.id, record["trace_id"])
    assert len(trace) == 3 and {s["trace_id"] for s in trace} == {record["trace_id"]}


def test_resending_the_same_spans_stores_nothing_twice(store, receiver, project):
    spans = make_spans(n_traces=2, children=1)
    exp = exporter(receiver.endpoint, project.key)
    assert exp.export(spans) is SpanExportResult.SUCCESS
    assert exp.export(spans) is SpanExportResult.SUCCESS
    assert _counts(store) == (4, 2)


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer psk_not-a-real-key"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("x-pystrument-project-key", "psk_wrong"),),
    ],
    ids=["missing", "unknown-bearer", "wrong-scheme", "unknown-header"],
)
def test_missing_or_unknown_key_is_unauthenticated_and_stores_nothing(store, receiver, metadata):
    with pytest.raises(grpc.RpcError) as err:
        raw_export(receiver.target, make_spans(), metadata)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _counts(store) == (0, 0)


def test_key_in_x_pystrument_header_is_accepted(store, receiver, project):
    raw_export(receiver.target, make_spans(), (("x-pystrument-project-key", project.key),))
    assert _counts(store) == (3, 1)


def test_exporter_with_wrong_key_fails_without_storing(store, receiver, project):
    result = exporter(receiver.endpoint, project.key + "x").export(make_spans())
    assert result is SpanExportResult.FAILURE
    assert _counts(store) == (0, 0)


def test_invalid_spans_are_rejected_as_partial_success(store, receiver, project):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    request = encode_spans(make_spans(n_traces=2, children=0))
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02"  # 2 bytes, not 8
    with grpc.insecure_channel(receiver.target) as channel:
        response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(
            request, metadata=(("authorization", f"Bearer {project.key}"),), timeout=20
        )
    assert response.partial_success.rejected_spans == 1
    assert "span_id" in response.partial_success.error_message
    assert _counts(store) == (1, 1)


def test_store_down_is_unavailable_and_the_exporters_retry_lands(tmp_path: Path):
    """Stop the store: UNAVAILABLE (retryable), nothing acked. Bring it back while the real
    exporter is retrying: its export succeeds and the spans are stored exactly once."""
    server = EmbeddedServer(tmp_path / "store")
    server.start()
    store = Store.connect(server.url, "outage", server_selection_timeout_ms=1000)
    try:
        store.ensure_schema()
        _, key = store.projects.create("outage")
        grpc_server, running = start_receiver(store)
        try:
            server.stop()
            with pytest.raises(grpc.RpcError) as err:
                raw_export(running.target, make_spans(), (("authorization", f"Bearer {key}"),))
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE

            spans = make_spans(n_traces=2, children=1)
            outcome: dict[str, object] = {}

            def export() -> None:
                outcome["result"] = exporter(running.endpoint, key, timeout=40).export(spans)

            thread = threading.Thread(target=export)
            thread.start()
            time.sleep(2.0)  # the exporter has been refused at least once by now
            assert "result" not in outcome
            server.start()  # same port, same data directory
            thread.join(60)
            assert outcome.get("result") is SpanExportResult.SUCCESS
            assert _counts(store) == (4, 2)
        finally:
            grpc_server.stop(1).wait(5)
    finally:
        store.client.close()
        server.stop()


def test_the_same_spans_fanned_out_to_two_projects_are_stored_in_both(store, receiver, project):
    """A collector fanning one pipeline out to two projects: neither copy is lost."""
    _, other_key = store.projects.create("fan-out-copy")
    spans = make_spans(n_traces=2, children=1)
    assert exporter(receiver.endpoint, project.key).export(spans) is SpanExportResult.SUCCESS
    assert exporter(receiver.endpoint, other_key).export(spans) is SpanExportResult.SUCCESS
    records = store.collection("performance_records")
    assert records.count_documents({"project_id": project.project.id}) == 2
    assert records.count_documents({"project_id": {"$ne": project.project.id}}) == 2
