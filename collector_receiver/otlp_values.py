"""OTLP attribute values as plain Python/BSON values: the stock decoders (`any_value`,
`attributes_dict`), and a faster path for span attributes.

The fast path is a decoding-only variant of the OTLP trace schema in which
`Span.attributes` is a `repeated bytes`: upb hands over each KeyValue still serialized (a
message and a bytes field have the same wire format), and a whole (key, value) pair is looked
up by those bytes in a bounded cache. Why: turning span attributes into dicts is most of the
receiver's decode cost, and with the stock schema every attribute costs a KeyValue wrapper,
an AnyValue wrapper, `WhichOneof` and `getattr`. Attributes repeat a lot across spans (the
same key with the same method, route, statement, host, flag), so most are one dict lookup of
bytes that builds nothing; a miss decodes the pair inline when it is a short string (the most
common kind), else with the stock decoder. Measured in benchmarks/receiver_throughput.py.

Differences from the stock schema, all harmless here: a key sent twice keeps its last value
(as the SDKs do anyway), and an attribute that is not a valid KeyValue raises when the span's
attributes are decoded rather than when the request is parsed (decode_request rejects that
span alone).
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

_which = AnyValue.WhichOneof
_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python/BSON value (bytes become hex text)."""
    kind = _which(value, "value")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return value.bytes_value.hex()


def attributes_dict(kvs: Any) -> dict[str, Any]:
    """Repeated KeyValue as a dict; a later duplicate key wins, as in the SDKs."""
    # The hot loop of decoding (about 20 per span): scalars inline, no call per value.
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.value
        kind = _which(value, "value")
        if kind in _SCALARS:
            out[kv.key] = getattr(value, kind)
        else:
            out[kv.key] = any_value(value)
    return out


_FIELD = descriptor_pb2.FieldDescriptorProto
_CACHE_MAX_ENTRIES = 50_000
_CACHE_MAX_PAIR_BYTES = 256


class _PairCache(dict[bytes, tuple[str, Any]]):
    """Serialized KeyValue -> (key, value); a lookup that misses decodes (and maybe keeps)."""

    def __missing__(self, raw: bytes) -> tuple[str, Any]:
        return _decode_pair(raw)


_pair_cache = _PairCache()
# A hit is dict's own C lookup: `map` over it and `dict()` of the pairs run no bytecode.
_pair_of = _pair_cache.__getitem__
_NOT_INLINE = object()
_DOUBLE = struct.Struct("<d")


def _build_request_class() -> type:
    # A private pool: the stock classes stay untouched and keep their own descriptors.
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    trace = descriptor_pb2.FileDescriptorProto()
    trace_pb2.DESCRIPTOR.CopyToProto(trace)
    (span,) = [m for m in trace.message_type if m.name == "Span"]
    (attributes,) = [f for f in span.field if f.name == "attributes"]
    attributes.type = _FIELD.TYPE_BYTES
    attributes.ClearField("type_name")
    pool.Add(trace)
    service = descriptor_pb2.FileDescriptorProto()
    trace_service_pb2.DESCRIPTOR.CopyToProto(service)
    pool.Add(service)
    name = trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR.full_name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


FastExportTraceServiceRequest: Any = _build_request_class()
"""Parses the same bytes as ExportTraceServiceRequest; `span.attributes` is a list of
serialized KeyValues (decode with `attribute_values`)."""


def parse_fast_request(data: bytes) -> Any:
    """`FastExportTraceServiceRequest.FromString` (raises protobuf's DecodeError)."""
    return FastExportTraceServiceRequest.FromString(data)


def _inline_value(tag: int, body: bytes) -> Any:
    """An AnyValue's scalar from its one field (`tag`, `body` = the bytes after the tag), or
    _NOT_INLINE for anything the stock decoder must read."""
    if tag == 0x0A:  # string_value with a one-byte length
        if body and body[0] == len(body) - 1:
            return body[1:].decode()
    elif tag == 0x21:  # double_value: fixed64
        if len(body) == 8:
            return _DOUBLE.unpack(body)[0]
    elif tag == 0x18:  # int_value: a varint (10 bytes = negative: left to the stock decoder)
        if len(body) < 10 and body[-1] < 0x80:
            value = shift = 0
            for byte in body:
                value |= (byte & 0x7F) << shift
                shift += 7
            return value
    elif tag == 0x10 and len(body) == 1 and body[0] < 0x80:  # bool_value
        return body[0] != 0
    return _NOT_INLINE


def _decode_pair(raw: bytes) -> tuple[str, Any]:
    """One serialized KeyValue as (key, value); raises DecodeError when it is not one."""
    # Inline fast path for the usual layout: key = tag 0x0a, one-byte length, UTF-8;
    # value = tag 0x12, one-byte length, an AnyValue holding one scalar.
    value: Any = _NOT_INLINE
    size = len(raw)
    if size > 4 and raw[0] == 0x0A and raw[1] < 0x80:
        vpos = raw[1] + 2
        if size > vpos + 3 and raw[vpos] == 0x12 and raw[vpos + 1] == size - vpos - 2:
            try:
                value = _inline_value(raw[vpos + 2], raw[vpos + 3 :])
                key = raw[2:vpos].decode()
            except UnicodeDecodeError:
                value = _NOT_INLINE  # invalid UTF-8: the stock decoder raises DecodeError
    if value is _NOT_INLINE:
        kv = KeyValue.FromString(raw)
        key, value = kv.key, any_value(kv.value)
    pair = (key, value)
    if size <= _CACHE_MAX_PAIR_BYTES and not isinstance(value, (list, dict)):
        if len(_pair_cache) >= _CACHE_MAX_ENTRIES:
            _pair_cache.clear()  # bounded: the frequent pairs come back at once
        _pair_cache[raw] = pair
    return pair


def attribute_values(attributes: Any) -> dict[str, Any]:
    """A `FastExportTraceServiceRequest` span's attributes as a plain dict; raises
    DecodeError (or UnicodeDecodeError) when one is not a valid KeyValue."""
    return dict(map(_pair_of, attributes))


def clear_value_cache() -> None:
    """Forget cached attributes (benchmarks use it to measure cold decoding)."""
    _pair_cache.clear()
