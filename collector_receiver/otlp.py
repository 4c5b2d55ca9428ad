"""OTLP trace requests (protobuf messages) into the store's transport-neutral `ResourceSpans`.

Both transports hand their parsed request here: protobuf bodies parsed as the faster
`FastExportTraceServiceRequest` (same wire format, see `otlp_values`), JSON bodies as the
stock `ExportTraceServiceRequest`. Invalid spans (bad id lengths, zero ids, missing
timestamps, too many attributes) are counted and described, never stored; the valid spans of
the same request still are (OTLP partial success).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_receiver.otlp_values import (
    FastExportTraceServiceRequest,
    any_value,
    attribute_values,
    attributes_dict,
)
from storage_backend import ResourceSpans, SpanData

_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
# Far above what SDKs send (their default limit is 128) and far below what breaks a document.
DEFAULT_MAX_SPAN_ATTRIBUTES = 1024


@dataclass(slots=True)
class DecodedRequest:
    """The valid spans of a request, and what was rejected and why (first reason only)."""

    batch: list[ResourceSpans]
    accepted: int
    rejected: int
    error_message: str


def count_spans(request: ExportTraceServiceRequest) -> int:
    """How many spans a request carries (cheap: no span is decoded)."""
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _span_problem(span: Any, max_attributes: int) -> str | None:
    if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE:
        return f"span {span.name!r}: trace_id must be 16 non-zero bytes, got {len(span.trace_id)}"
    if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN:
        return f"span {span.name!r}: span_id must be 8 non-zero bytes, got {len(span.span_id)}"
    if len(span.parent_span_id) not in (0, 8):
        return f"span {span.name!r}: parent_span_id must be empty or 8 bytes"
    if span.start_time_unix_nano == 0 or span.end_time_unix_nano == 0:
        return f"span {span.name!r}: start_time_unix_nano and end_time_unix_nano are required"
    if len(span.attributes) > max_attributes:
        return (
            f"span {span.name!r}: {len(span.attributes)} attributes, more than the limit of "
            f"{max_attributes} (max_span_attributes)"
        )
    return None


def _events(span: Any) -> list[dict[str, Any]]:
    return [
        {"time_ns": e.time_unix_nano, "name": e.name, "attributes": attributes_dict(e.attributes)}
        for e in span.events
    ]


def _links(span: Any) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "attributes": attributes_dict(link.attributes),
        }
        for link in span.links
    ]


def decode_request(
    request: ExportTraceServiceRequest, *, max_attributes: int = DEFAULT_MAX_SPAN_ATTRIBUTES
) -> DecodedRequest:
    """Split a request into valid spans (grouped by resource) and a rejection count.

    `request` is an ExportTraceServiceRequest or, faster, the same bytes parsed as a
    `FastExportTraceServiceRequest` (what both transports use for protobuf)."""
    span_attributes = (
        attribute_values if type(request) is FastExportTraceServiceRequest else attributes_dict
    )
    batch: list[ResourceSpans] = []
    accepted = rejected = 0
    first_problem = ""
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        spans: list[SpanData] = []
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            scope_version = scope_spans.scope.version
            for span in scope_spans.spans:
                # Each field access builds a Python object: read every field once, check the
                # common valid case inline, and only call _span_problem to explain a failure.
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                attrs = span.attributes
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or trace_id == _ZERO_TRACE
                    or span_id == _ZERO_SPAN
                    or (parent and len(parent) != 8)
                    or not start
                    or not end
                    or len(attrs) > max_attributes
                ):
                    rejected += 1
                    first_problem = first_problem or _span_problem(span, max_attributes) or ""
                    continue
                try:
                    attributes = span_attributes(attrs)
                except (DecodeError, UnicodeDecodeError):
                    # The fast schema reads attributes only now: a malformed one rejects this
                    # span, as a parse error would have rejected the request.
                    rejected += 1
                    first_problem = first_problem or (
                        f"span {span.name!r}: attributes are not valid OTLP KeyValues"
                    )
                    continue
                kind = span.kind
                status = span.status
                code = status.code
                spans.append(
                    SpanData(
                        trace_id.hex(),
                        span_id.hex(),
                        parent.hex() if parent else None,
                        span.name,
                        _KINDS[kind] if 0 <= kind < 6 else "unspecified",
                        start,
                        end,
                        attributes,
                        _STATUS[code] if 0 <= code < 3 else "unset",
                        status.message,
                        _events(span) if span.events else [],
                        _links(span) if span.links else [],
                        scope_name,
                        scope_version,
                    )
                )
        if spans:
            accepted += len(spans)
            batch.append(ResourceSpans(resource=resource, spans=spans))
    message = ""
    if rejected:
        message = f"{rejected} span(s) rejected as invalid; first: {first_problem}"
    return DecodedRequest(batch=batch, accepted=accepted, rejected=rejected, error_message=message)


__all__ = [
    "DEFAULT_MAX_SPAN_ATTRIBUTES",
    "DecodedRequest",
    "any_value",
    "attributes_dict",
    "count_spans",
    "decode_request",
]
