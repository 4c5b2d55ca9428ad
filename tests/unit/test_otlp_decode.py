"""OTLP protobuf -> SpanData: values, ids, kinds, and invalid spans rejected one by one."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from collector_receiver.otlp import any_value, decode_request
from tests.otlp_helpers import export_request, make_spans


def test_any_value_maps_every_kind():
    assert any_value(AnyValue(string_value="a")) == "a"
    assert any_value(AnyValue(bool_value=True)) is True
    assert any_value(AnyValue(int_value=-7)) == -7
    assert any_value(AnyValue(double_value=1.5)) == 1.5
    assert any_value(AnyValue(bytes_value=b"\x01\xff")) == "01ff"
    assert any_value(AnyValue()) is None
    arr = AnyValue(
        array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="x")])
    )
    assert any_value(arr) == [1, "x"]
    kv = AnyValue(
        kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(double_value=2.0))])
    )
    assert any_value(kv) == {"k": 2.0}


def test_decode_keeps_ids_kinds_resource_and_scope():
    spans = make_spans(n_traces=1, children=1)
    decoded = decode_request(export_request(spans))
    assert decoded.accepted == 2 and decoded.rejected == 0 and decoded.error_message == ""
    [group] = decoded.batch
    assert group.resource["service.name"] == "svc"
    by_kind = {s.kind: s for s in group.spans}
    server, client = by_kind["server"], by_kind["client"]
    assert server.trace_id == format(spans[-1].context.trace_id, "032x")
    assert client.parent_span_id == server.span_id
    assert server.parent_span_id is None
    assert server.attributes["http.route"] == "/items/{id}"
    assert server.scope_name == "tests"
    assert server.end_time_ns >= server.start_time_ns > 0


def test_invalid_spans_are_counted_and_the_valid_ones_kept():
    request = export_request(make_spans(n_traces=3, children=0))
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x00" * 16
    spans[1].parent_span_id = b"\x01\x02\x03"
    decoded = decode_request(request)
    assert decoded.accepted == 1
    assert decoded.rejected == 2
    assert "trace_id" in decoded.error_message
    assert sum(len(g.spans) for g in decoded.batch) == 1


def test_empty_request_is_valid_and_empty():
    decoded = decode_request(export_request([]))
    assert (decoded.accepted, decoded.rejected, decoded.batch) == (0, 0, [])


def test_fast_attribute_decoding_matches_the_stock_decoder():
    """The repeated-bytes schema and its pair cache give the same dicts as the stock schema,
    for every kind of value, twice (cold cache, then warm)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from collector_receiver.otlp_values import clear_value_cache, parse_fast_request

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = b"\x01" * 16, b"\x02" * 8
    span.start_time_unix_nano, span.end_time_unix_nano = 1, 2
    values = {
        "s": AnyValue(string_value="GET"),
        "empty-string": AnyValue(string_value=""),
        "unicode": AnyValue(string_value="héllo ✓"),
        "long": AnyValue(string_value="x" * 300),  # two-byte length: not the inline path
        "i": AnyValue(int_value=-5),
        "zero": AnyValue(int_value=0),
        "int63": AnyValue(int_value=2**63 - 1),
        "int-min": AnyValue(int_value=-(2**63)),
        "small-int": AnyValue(int_value=300),
        "b": AnyValue(bool_value=False),
        "t": AnyValue(bool_value=True),
        "d": AnyValue(double_value=2.5),
        "neg-d": AnyValue(double_value=-1e-300),
        "k" * 200: AnyValue(string_value="long key: not the inline path"),
        "bytes": AnyValue(bytes_value=b"\x00\xff"),
        "unset": AnyValue(),
    }
    for key, value in values.items():
        kv = span.attributes.add()
        kv.key = key
        kv.value.CopyFrom(value)
    arr = span.attributes.add()
    arr.key = "arr"
    arr.value.array_value.values.add(int_value=1)
    arr.value.array_value.values.add(string_value="y")
    dup = span.attributes.add()
    dup.key, dup.value.string_value = "s", "POST"  # a later duplicate wins in both
    expected = decode_request(request).batch[0].spans[0].attributes
    assert expected["s"] == "POST" and expected["arr"] == [1, "y"]
    clear_value_cache()
    for _ in range(2):
        fast = decode_request(parse_fast_request(request.SerializeToString()))
        assert fast.batch[0].spans[0].attributes == expected
        assert type(fast.batch[0].spans[0].attributes["b"]) is bool
        assert type(fast.batch[0].spans[0].attributes["small-int"]) is int


def test_a_malformed_attribute_rejects_its_span_only():
    """The fast schema reads attributes after parsing: bytes that are no KeyValue (here,
    invalid UTF-8 in a key, and a truncated value) reject that span, the others are kept."""
    from collector_receiver.otlp_values import parse_fast_request

    request = export_request(make_spans(n_traces=1, children=1))
    body = request.SerializeToString()
    good = decode_request(parse_fast_request(body))
    assert good.accepted == 2
    route = b"http.route\x12\r\n\x0b/items/{id}"  # key, then AnyValue{string_value}
    assert body.count(route) == 1
    # Same lengths, so the request still parses: a key that is not UTF-8, and a string
    # value claiming more bytes than its AnyValue holds.
    for broken in (route.replace(b"route", b"rout\xff"), route.replace(b"\n\x0b", b"\n\x7f")):
        bad = decode_request(parse_fast_request(body.replace(route, broken)))
        assert (bad.accepted, bad.rejected) == (1, 1)
        assert "attributes are not valid OTLP KeyValues" in bad.error_message
