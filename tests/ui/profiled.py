"""A real call tree for the UI's tests: real code profiled by the real processor, exported
in memory and decoded with the public decoder."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_pyinstrument_processor import CallTreeNode, PyinstrumentSpanProcessor, decode_profile
from otel_pyinstrument_processor import attributes as attrs


def crunch_numbers(seconds: float) -> int:
    count = 0
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        count += 1
    return count


def load_rows() -> None:
    time.sleep(0.03)


def build_report() -> int:
    load_rows()
    return crunch_numbers(0.05)


def profiled_request() -> tuple[CallTreeNode, list[dict[str, Any]]]:
    """Profile one SERVER span running `build_report`; return its decoded tree and the
    trace's spans in the stored shape (start_ns, end_ns, parent, kind...)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(PyinstrumentSpanProcessor())
    tracer = provider.get_tracer("ui-tests")
    with tracer.start_as_current_span("GET /report", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("SELECT rows", kind=SpanKind.CLIENT):
            time.sleep(0.005)
        build_report()
    provider.shutdown()
    finished = exporter.get_finished_spans()
    server = next(s for s in finished if s.name == "GET /report")
    tree = decode_profile(
        server.attributes[attrs.PROFILE_TREE], server.attributes[attrs.PROFILE_FORMAT]
    )
    spans = [
        {
            "span_id": format(s.context.span_id, "016x"),
            "parent_span_id": format(s.parent.span_id, "016x") if s.parent else None,
            "name": s.name,
            "kind": s.kind.name.lower(),
            "start_ns": s.start_time,
            "end_ns": s.end_time,
            "status_code": "unset",
        }
        for s in finished
    ]
    return tree, spans
