"""Group commit, the bound on spans in flight, and graceful shutdown, on the real store.

To hold a write open at a chosen moment, the store is wrapped so its `ingest_many` waits
on a gate; the write itself is the real one.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.sdk.trace.export import SpanExportResult

from collector_receiver import GrpcOptions, TraceIngestor, build_server
from collector_receiver.batcher import BatchOptions
from collector_receiver.http_app import HttpServer, create_app
from storage_backend import Store
from tests.integration.test_receiver_http import span_counts
from tests.otlp_helpers import export_request, exporter, make_spans, raw_export


class GatedStore:
    """The real store, except that each group write first waits for `gate` (set = open)."""

    def __init__(self, store: Store):
        self._store = store
        self.gate = threading.Event()
        self.writes: list[int] = []  # requests per group write
        self.entered = threading.Semaphore(0)

    def ingest_many(self, items, **options):
        self.entered.release()
        assert self.gate.wait(30), "test gate never opened"
        self.writes.append(len(items))
        return self._store.ingest_many(items, **options)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def gated(store):
    gated = GatedStore(store)
    ingestor = TraceIngestor(
        gated,  # type: ignore[arg-type]
        batch_options=BatchOptions(max_inflight_spans=20, writers=1, retry_after_seconds=0.5),
    )
    server, port = build_server(ingestor, GrpcOptions(host="127.0.0.1", port=0))
    server.start()
    http = HttpServer(create_app(store, ingestor), host="127.0.0.1", port=0)
    http.start()
    yield gated, ingestor, f"127.0.0.1:{port}", f"http://127.0.0.1:{http.port}/v1/traces"
    gated.gate.set()
    server.stop(2).wait(5)
    http.stop(2)
    ingestor.close(5)


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def test_concurrent_exports_share_one_group_write(store, project, gated):
    gated_store, ingestor, target, _ = gated
    ingestor.writer.options.max_inflight_spans = 1000
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(raw_export, target, make_spans(1, 1), _auth(project.key))
        assert gated_store.entered.acquire(timeout=10)  # the first write is being made
        rest = [pool.submit(raw_export, target, make_spans(1, 1), _auth(project.key))
                for _ in range(6)]  # fmt: skip
        deadline = time.monotonic() + 10
        while ingestor.writer.queued_requests < 6 and time.monotonic() < deadline:
            time.sleep(0.02)  # the other six decoded and queued behind the held write
        gated_store.gate.set()
        for future in [first, *rest]:
            future.result(timeout=20)
    assert gated_store.writes == [1, 6]  # the six that queued during a write went in one
    assert span_counts(store) == (14, 7)
    assert ingestor.metrics.batch_requests.count() == 2


def test_over_the_bound_grpc_gets_resource_exhausted_with_retry_info(store, project, gated):
    gated_store, ingestor, target, _ = gated
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(raw_export, target, make_spans(3, 3), _auth(project.key))  # 12 spans
        assert gated_store.entered.acquire(timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            raw_export(target, make_spans(3, 3), _auth(project.key))  # 12 more > 20
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(err.value.trailing_metadata())
        retry = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert retry.retry_delay.ToTimedelta().total_seconds() == 0.5
        assert "grpc-status-details-bin" in trailers
        gated_store.gate.set()
        held.result(timeout=20)
    assert span_counts(store) == (12, 3)  # the refused request stored nothing
    assert ingestor.writer.inflight_spans == 0
    assert ingestor.metrics.spans_refused.value(transport="grpc", reason="RESOURCE_EXHAUSTED") == 12


def test_over_the_bound_an_export_waits_for_room_then_is_refused(store, project, gated):
    gated_store, ingestor, target, _ = gated
    ingestor.writer.options.admission_wait_seconds = 0.4
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(raw_export, target, make_spans(3, 3), _auth(project.key))  # 12 spans
        assert gated_store.entered.acquire(timeout=10)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            raw_export(target, make_spans(3, 3), _auth(project.key))  # no room within 0.4 s
        assert time.monotonic() - started >= 0.4
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The next one gets room while it waits: the held write ends, and it is admitted.
        ingestor.writer.options.admission_wait_seconds = 30
        waiting = pool.submit(raw_export, target, make_spans(3, 3), _auth(project.key))
        time.sleep(0.3)  # (it cannot be admitted before the gate opens: 12 + 12 > 20)
        gated_store.gate.set()
        held.result(timeout=20)
        waiting.result(timeout=20)
    assert span_counts(store) == (24, 6)
    assert ingestor.writer.inflight_spans == 0


def test_over_the_bound_http_gets_429_with_retry_after(store, project, gated):
    gated_store, _, _, http_url = gated
    body = export_request(make_spans(3, 3)).SerializeToString()
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {project.key}"}
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(httpx.post, http_url, content=body, headers=headers, timeout=30)
        assert gated_store.entered.acquire(timeout=10)
        refused = httpx.post(http_url, content=body, headers=headers)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        gated_store.gate.set()
        assert held.result(timeout=20).status_code == 200
    assert span_counts(store) == (12, 3)


def test_exporters_under_2x_overload_lose_nothing(store, project):
    """Eight real exporters at once against a bound of half their spans: the first write is
    held for a moment so the exports pile up; those over the bound are refused with
    RetryInfo, the exporters retry, and every span is stored exactly once."""
    gated = GatedStore(store)
    ingestor = TraceIngestor(
        gated,  # type: ignore[arg-type]
        batch_options=BatchOptions(max_inflight_spans=120, retry_after_seconds=0.5),
    )
    server, port = build_server(ingestor, GrpcOptions(host="127.0.0.1", port=0))
    server.start()
    opener = threading.Timer(1.0, gated.gate.set)
    opener.start()
    try:
        batches = [make_spans(n_traces=10, children=2, service=f"s{i}") for i in range(8)]

        def send(spans):
            return exporter(f"http://127.0.0.1:{port}", project.key, timeout=60).export(spans)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, batches))
        assert results == [SpanExportResult.SUCCESS] * 8
        assert span_counts(store) == (240, 80)
        refused = ingestor.metrics.spans_refused.value(
            transport="grpc", reason="RESOURCE_EXHAUSTED"
        )
        assert refused >= 120  # at least half the spans were pushed back once
        assert ingestor.writer.inflight_spans == 0
    finally:
        opener.cancel()
        gated.gate.set()
        server.stop(2).wait(5)
        ingestor.close(5)


def test_shutdown_finishes_queued_writes_then_refuses(store, project, gated):
    gated_store, ingestor, target, _ = gated
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(raw_export, target, make_spans(2, 1), _auth(project.key))
        assert gated_store.entered.acquire(timeout=10)
        closing = threading.Thread(target=ingestor.close, args=(20,))
        closing.start()
        deadline = time.monotonic() + 10
        while not ingestor.writer.closing and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as err:  # closing: new exports are told to retry
            raw_export(target, make_spans(1, 0), _auth(project.key))
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert closing.is_alive()  # close() waits for the write in progress
        gated_store.gate.set()
        held.result(timeout=20)  # acknowledged only now that it is stored
        closing.join(20)
    assert not closing.is_alive()
    assert span_counts(store) == (4, 2)


def test_http_body_bytes_in_flight_are_bounded(store, project):
    """Bodies held while their write waits count against http_max_inflight_body_bytes: a
    second body that does not fit gets 429 + Retry-After at once, and nothing of it is kept."""
    gated = GatedStore(store)
    ingestor = TraceIngestor(gated)  # type: ignore[arg-type]
    body = export_request(make_spans(3, 3)).SerializeToString()
    app = create_app(store, ingestor, http_max_inflight_body_bytes=int(len(body) * 1.5))
    http = HttpServer(app, host="127.0.0.1", port=0)
    http.start()
    url = f"http://127.0.0.1:{http.port}/v1/traces"
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {project.key}"}
    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.post, url, content=body, headers=headers, timeout=30)
            assert gated.entered.acquire(timeout=10)
            refused = httpx.post(url, content=body, headers=headers)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            message = status_pb2.Status.FromString(refused.content).message
            assert "bytes of OTLP/HTTP bodies in flight" in message
            gated.gate.set()
            assert held.result(timeout=20).status_code == 200
        assert app.state.otlp_body_budget.used == 0  # everything given back
        again = httpx.post(url, content=body, headers=headers)
        assert again.status_code == 200  # a duplicate of the first: stored once
        assert span_counts(store) == (12, 3)
    finally:
        gated.gate.set()
        http.stop(2)
        ingestor.close(5)


def test_a_document_too_large_fails_only_its_own_request(store, project):
    """Two exports share a group write; one holds a span too large for a MongoDB document.
    That one gets INVALID_ARGUMENT (permanent), the other is still stored and acknowledged."""
    from collector_receiver.otlp import decode_request
    from storage_backend import InvalidDocumentError

    gated = GatedStore(store)
    ingestor = TraceIngestor(gated, batch_options=BatchOptions(writers=1))  # type: ignore[arg-type]
    good = decode_request(export_request(make_spans(1, 1))).batch
    huge_request = export_request(make_spans(1, 0, service="huge"))
    kv = huge_request.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    # Random text: span lists are stored compressed, so it must stay over 16 MB compressed.
    kv.key, kv.value.string_value = "blob", base64.b64encode(os.urandom(18 * 1024 * 1024)).decode()
    huge = decode_request(huge_request).batch
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(ingestor.writer.write, project.project, good)
            assert gated.entered.acquire(timeout=10)  # the first write is held
            bad = pool.submit(ingestor.writer.write, project.project, huge)
            fine = pool.submit(ingestor.writer.write, project.project, good)
            deadline = time.monotonic() + 10
            while ingestor.writer.queued_requests < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            gated.gate.set()
            first.result(timeout=30)
            with pytest.raises(InvalidDocumentError):
                bad.result(timeout=30)
            assert fine.result(timeout=30).spans == 2
        assert gated.writes[:2] == [1, 2]  # the two queued requests were written together first
        assert span_counts(store) == (2, 1)  # the good spans, once; nothing of the huge one
    finally:
        gated.gate.set()
        ingestor.close(5)
