"""The OTLP/JSON mapping: hex ids, integer enums, int64 as strings, unknown fields."""

from __future__ import annotations

import json

import pytest

from collector_receiver.errors import InvalidRequestError
from collector_receiver.otlp import decode_request
from collector_receiver.otlp_json import parse_json_request


def _body(span: dict) -> bytes:
    return json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [span]}], "schemaUrl": "x"}], "extra": 1}
    ).encode()


def test_hex_ids_in_either_case_and_links():
    request = parse_json_request(
        _body(
            {
                "traceId": "0AF7651916CD43DD8448EB211C80319C",
                "spanId": "b7ad6b7169203331",
                "parentSpanId": "00f067aa0ba902b7",
                "startTimeUnixNano": "1",
                "endTimeUnixNano": 2,
                "kind": 3,
                "links": [{"traceId": "0af7651916cd43dd8448eb211c80319d", "spanId": "1" * 16}],
            }
        )
    )
    span = decode_request(request).batch[0].spans[0]
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == "00f067aa0ba902b7"
    assert span.kind == "client"
    assert (span.start_time_ns, span.end_time_ns) == (1, 2)
    assert span.links[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319d"


def test_a_non_hex_id_rejects_only_that_span():
    request = parse_json_request(
        _body(
            {
                "traceId": "not-hex",
                "spanId": "b7ad6b7169203331",
                "startTimeUnixNano": "1",
                "endTimeUnixNano": "2",
            }
        )
    )
    decoded = decode_request(request)
    assert decoded.rejected == 1 and "trace_id" in decoded.error_message


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"\xff\xfe",
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": {"a": 1}}]}]}]}',
    ],
    ids=["truncated", "array", "not-utf8", "name-not-a-string"],
)
def test_invalid_json_is_an_invalid_request(body):
    with pytest.raises(InvalidRequestError):
        parse_json_request(body)
