"""The OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding).

It is protobuf's JSON mapping with three differences that `json_format` alone gets wrong:
trace and span ids are (case-insensitive) hex, not base64; enums must be integers; keys are
lowerCamelCase (json_format accepts those and the original names). Unknown fields are
ignored, int64 values may be strings or numbers (json_format accepts both).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_receiver.errors import InvalidRequestError

_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(obj: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        value = obj.get(name)
        if isinstance(value, str) and value:
            try:
                obj[name] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError:
                # Not hex: leave the id empty so the span is rejected by the same per-span
                # validation as a protobuf span with a bad id (partial success), not the
                # whole request.
                obj[name] = ""


def _dicts(obj: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    # Wrong shapes are left for json_format to reject with a message; here they are skipped.
    for name in names:
        value = obj.get(name)
        if isinstance(value, list):
            return [item for item in value if isinstance(item, dict)]
    return []


def _spans_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        span
        for rs in _dicts(payload, "resourceSpans", "resource_spans")
        for ss in _dicts(rs, "scopeSpans", "scope_spans")
        for span in _dicts(ss, "spans")
    ]


def parse_json_request(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON body as an ExportTraceServiceRequest; InvalidRequestError if it is not
    JSON or does not follow the OTLP schema."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError(f"invalid JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequestError("an OTLP/JSON body must be an object with resourceSpans")
    for span in _spans_of(payload):
        _hex_ids_to_base64(span)
        for link in _dicts(span, "links"):
            _hex_ids_to_base64(link)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(payload, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise InvalidRequestError(f"not an OTLP/JSON trace request: {exc}") from None
    return request


def message_to_json(message: Message) -> bytes:
    """A response message (ExportTraceServiceResponse, google.rpc.Status) as OTLP/JSON."""
    return json.dumps(
        json_format.MessageToDict(message, preserving_proto_field_name=False),
        separators=(",", ":"),
    ).encode()


__all__ = ["message_to_json", "parse_json_request"]
