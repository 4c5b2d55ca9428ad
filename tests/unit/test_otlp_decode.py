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
