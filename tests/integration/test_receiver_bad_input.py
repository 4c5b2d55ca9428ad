"""Bad input on both transports: a clear status, nothing stored from the refused request,
and the next good request from the same client succeeds."""

from __future__ import annotations

import gzip
import io

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import Compression
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.integration.test_receiver_http import span_counts
from tests.otlp_helpers import export_request, exporter, make_spans

PROTOBUF = {"content-type": "application/x-protobuf"}
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def good_body() -> bytes:
    return export_request(make_spans(n_traces=1, children=1)).SerializeToString()


def wide_span_body(attributes: int = 10_000) -> bytes:
    """A valid CLIENT span and a SERVER span with `attributes` more attributes."""
    request = export_request(make_spans(n_traces=1, children=1))
    (wide,) = [s for s in request.resource_spans[0].scope_spans[0].spans if s.kind == 2]
    for i in range(attributes):
        kv = wide.attributes.add()
        kv.key = f"attr.{i}"
        kv.value.string_value = "x" * 10
    return request.SerializeToString()


def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes, gzip-compressed (about 1000:1), streamed so the test stays small."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        block = bytes(1024 * 1024)
        for _ in range(size // len(block)):
            gz.write(block)
    return out.getvalue()


def _truncated() -> bytes:
    body = good_body()
    return body[: len(body) - 7]


HTTP_CASES = {
    "garbage": (b"\xff\xfe\x00garbage\x17" * 20, PROTOBUF, 400),
    "truncated-protobuf": (_truncated(), PROTOBUF, 400),
    "wrong-content-type": (b"hello", {"content-type": "text/plain"}, 415),
    "invalid-json": (b'{"resourceSpans": [', {"content-type": "application/json"}, 400),
    "json-not-otlp": (b'{"resourceSpans": 7}', {"content-type": "application/json"}, 400),
    "oversize": (bytes(2 * 1024 * 1024), PROTOBUF, 413),
    "gzip-bomb": (gzip_bomb(64 * 1024 * 1024), {**PROTOBUF, "content-encoding": "gzip"}, 413),
    "broken-gzip": (b"\x1f\x8b\x08\x00garbage", {**PROTOBUF, "content-encoding": "gzip"}, 400),
    "unknown-encoding": (good_body(), {**PROTOBUF, "content-encoding": "br"}, 400),
}


@pytest.mark.parametrize("case", list(HTTP_CASES), ids=list(HTTP_CASES))
def test_http_bad_input_is_refused_and_the_next_request_succeeds(
    store, http_receiver, project, case
):
    body, headers, expected = HTTP_CASES[case]
    auth = {"authorization": f"Bearer {project.key}"}
    response = httpx.post(http_receiver.traces_url, content=body, headers={**headers, **auth})
    assert response.status_code == expected, response.text
    assert "retry-after" not in response.headers  # permanent: the client must not retry
    assert span_counts(store) == (0, 0)
    good = httpx.post(http_receiver.traces_url, content=good_body(), headers={**PROTOBUF, **auth})
    assert good.status_code == 200
    assert span_counts(store) == (2, 1)


def test_http_wrong_key_is_401_and_stores_nothing(store, http_receiver, project):
    response = httpx.post(
        http_receiver.traces_url,
        content=good_body(),
        headers={**PROTOBUF, "authorization": f"Bearer {project.key}x"},
    )
    assert response.status_code == 401
    assert span_counts(store) == (0, 0)


def test_http_span_with_10000_attributes_is_rejected_alone(store, http_receiver, project):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    auth = {"authorization": f"Bearer {project.key}"}
    response = httpx.post(
        http_receiver.traces_url, content=wide_span_body(), headers={**PROTOBUF, **auth}
    )
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "'GET /items/{id}': 10004 attributes, more than the limit" in partial.error_message
    assert span_counts(store) == (1, 0)  # the CLIENT child; the wide SERVER span is not stored
    good = httpx.post(http_receiver.traces_url, content=good_body(), headers={**PROTOBUF, **auth})
    assert good.status_code == 200


def _raw_grpc(target: str, payload: bytes, key: str, compression=None) -> None:
    """An Export call with arbitrary bytes as the message (what a broken client sends)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            EXPORT_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        call(
            payload,
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=20,
            compression=compression,
        )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xfe\x00garbage\x17" * 20, grpc.StatusCode.INVALID_ARGUMENT),
        (_truncated(), grpc.StatusCode.INVALID_ARGUMENT),
        (bytes(17 * 1024 * 1024), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=["garbage", "truncated-protobuf", "oversize"],
)
def test_grpc_bad_input_is_refused_and_the_next_request_succeeds(
    store, receiver, project, payload, code
):
    # Undecodable: INVALID_ARGUMENT; oversize: grpcio's RESOURCE_EXHAUSTED without RetryInfo.
    # Neither is retried by OTLP clients.
    with pytest.raises(grpc.RpcError) as err:
        _raw_grpc(receiver.target, payload, project.key)
    assert err.value.code() is code
    assert "google.rpc.retryinfo-bin" not in dict(err.value.trailing_metadata() or ())
    assert span_counts(store) == (0, 0)
    _raw_grpc(receiver.target, good_body(), project.key)
    assert span_counts(store) == (2, 1)


def test_grpc_span_with_10000_attributes_is_rejected_alone(store, receiver, project):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    with grpc.insecure_channel(receiver.target) as channel:
        call = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=lambda b: b,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        response = call(
            wide_span_body(), metadata=(("authorization", f"Bearer {project.key}"),), timeout=20
        )
    assert response.partial_success.rejected_spans == 1
    assert span_counts(store) == (1, 0)


def test_grpc_limit_applies_after_gzip_decompression(store, receiver, project):
    # 17 MiB of zeros compress to ~17 KiB on the wire: still refused, as over the 16 MiB limit.
    with pytest.raises(grpc.RpcError) as err:
        _raw_grpc(receiver.target, bytes(17 * 1024 * 1024), project.key, grpc.Compression.Gzip)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    _raw_grpc(receiver.target, good_body(), project.key, grpc.Compression.Gzip)
    assert span_counts(store) == (2, 1)


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_python_grpc_exporter_with_and_without_gzip(store, receiver, project, compression):
    spans = make_spans(n_traces=4, children=3)
    result = exporter(receiver.endpoint, project.key, compression=compression).export(spans)
    assert result is SpanExportResult.SUCCESS
    assert span_counts(store) == (16, 4)
