"""Making real spans and sending them with the real OTLP exporter (no hand-made protobuf)."""

from __future__ import annotations

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def make_spans(n_traces: int = 1, children: int = 2, service: str = "svc") -> list[ReadableSpan]:
    """Real SDK spans: per trace one SERVER span (HTTP attributes) with CLIENT children."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": "2.1.0"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for i in range(n_traces):
        with tracer.start_as_current_span(
            "GET /items/{id}",
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "GET",
                "http.route": "/items/{id}",
                "url.path": f"/items/{i}",
                "http.response.status_code": 200,
            },
        ):
            for c in range(children):
                with tracer.start_as_current_span(
                    f"SELECT items {c}", kind=SpanKind.CLIENT, attributes={"db.system": "sqlite"}
                ):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def exporter(endpoint: str, key: str | None, **kwargs) -> OTLPSpanExporter:
    headers = {"authorization": f"Bearer {key}"} if key else None
    return OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers, **kwargs)


def raw_export(target: str, spans: list[ReadableSpan], metadata=()):
    """One Export call with a plain gRPC stub, so tests see the exact status code."""
    with grpc.insecure_channel(target) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        return stub.Export(encode_spans(spans), metadata=metadata, timeout=20)


def export_request(spans: list[ReadableSpan]) -> trace_service_pb2.ExportTraceServiceRequest:
    return encode_spans(spans)
