"""The compressed span list of `spans` documents: round trip, bad blobs, both stored forms."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
import zstandard

from storage_backend import Store, trace_spans
from storage_backend.models import ResourceSpans, SpanData
from storage_backend.records import build_span_documents
from storage_backend.schema import SPANS
from storage_backend.span_codec import (
    SPANS_FORMAT,
    SpanCodecError,
    decode_spans,
    document_spans,
    encode_spans,
)

SPAN = {
    "trace_id": "0" * 31 + "1",
    "span_id": "00000000000000aa",
    "parent_span_id": None,
    "name": "GET /caf\u00e9/{id}",
    "kind": "server",
    "start_ns": 1_700_000_000_000_000_123,
    "end_ns": 1_700_000_000_250_000_456,
    "duration": 0.250000333,
    "status_code": "error",
    "status_message": "boom \U0001f4a5",
    "attributes": {
        "http.route": "/caf\u00e9/{id}",
        "http.response.status_code": 500,
        "flag": True,
        "ratio": 0.1,
        "neg": -(2**63),
        "list": [1, "a", None, [2.5]],
        "kv": {"inner": {"deep": "x"}},
        "empty": "",
    },
    "events": [{"time_ns": 1_700_000_000_100_000_000, "name": "exception", "attributes": {}}],
    "links": [{"trace_id": "ab" * 16, "span_id": "cd" * 8, "attributes": {"n": 1}}],
    "scope": {"name": "opentelemetry.instrumentation.flask", "version": "0.66b1"},
}


def test_round_trip_keeps_every_field_and_type():
    spans = [SPAN, dict(SPAN, span_id="00000000000000bb", parent_span_id="00000000000000aa")]
    blob = encode_spans(spans)
    assert isinstance(blob, bytes)
    assert decode_spans(blob, SPANS_FORMAT) == spans
    assert decode_spans(encode_spans([]), SPANS_FORMAT) == []


def test_integers_past_64_bits_survive_through_the_fallback_encoder():
    span = dict(SPAN, attributes={"huge": 2**70, "small": 1})
    assert decode_spans(encode_spans([span]), SPANS_FORMAT)[0]["attributes"] == {
        "huge": 2**70,
        "small": 1,
    }


def test_non_finite_doubles_come_back_as_null():
    span = dict(SPAN, attributes={"nan": math.nan, "inf": math.inf, "ok": 1.5})
    attrs = decode_spans(encode_spans([span]), SPANS_FORMAT)[0]["attributes"]
    assert attrs == {"nan": None, "inf": None, "ok": 1.5}


def test_the_blob_is_compressed():
    spans = [dict(SPAN, span_id=f"{i:016x}") for i in range(10)]
    assert len(encode_spans(spans)) < len(repr(spans)) / 3


@pytest.mark.parametrize(
    ("blob", "fmt", "message"),
    [
        (encode_spans([SPAN]), "spans/9;json+zstd", "unknown spans_format"),
        (encode_spans([SPAN]), None, "unknown spans_format"),
        (b"not zstd at all", SPANS_FORMAT, "not valid zstandard"),
        (encode_spans([SPAN])[:-5], SPANS_FORMAT, "not valid zstandard"),
        (zstandard.ZstdCompressor().compress(b"{not json"), SPANS_FORMAT, "not a JSON span"),
        (zstandard.ZstdCompressor().compress(b'{"a": 1}'), SPANS_FORMAT, "not a span list"),
    ],
)
def test_bad_blobs_raise_a_clear_error(blob, fmt, message):
    with pytest.raises(SpanCodecError, match=message):
        decode_spans(blob, fmt)


def test_document_spans_reads_both_forms_and_skips_an_unreadable_blob(caplog):
    assert document_spans({"spans_blob": encode_spans([SPAN]), "spans_format": SPANS_FORMAT}) == [
        SPAN
    ]
    assert document_spans({"spans": [SPAN]}) == [SPAN]  # written before spans/1
    assert document_spans({"_id": "x", "spans_blob": b"junk", "spans_format": SPANS_FORMAT}) == []
    assert "spans document x unreadable" in caplog.text


def _span_data(span_id: str, trace_id: str = "0" * 31 + "1") -> SpanData:
    return SpanData(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=None,
        name="SELECT",
        kind="client",
        start_time_ns=1_700_000_000_000_000_000,
        end_time_ns=1_700_000_000_010_000_000,
        attributes={"db.system": "postgresql", "pystrument.profile.tree": "dropped"},
    )


def test_trace_spans_reads_a_trace_from_request_documents_and_older_ones(store: Store):
    trace, other_trace = "0" * 31 + "1", "f" * 32
    now = datetime.now(timezone.utc)
    spans = [_span_data("00000000000000cc"), _span_data("00000000000000dd", other_trace)]
    (doc,) = build_span_documents(
        "p1", [ResourceSpans({"service.name": "api"}, spans)],
        retention=timedelta(days=1), received_at=now,
    )  # fmt: skip
    assert doc["trace_ids"] == [trace, other_trace] and doc["span_count"] == 2
    assert set(doc) >= {"spans_blob", "spans_format"} and "spans" not in doc
    # A per-trace document in the array form earlier versions wrote, for the same trace.
    old = {
        "_id": "old", "project_id": "p1", "trace_id": trace, "service_name": "worker",
        "span_count": 1, "spans": [SPAN],
    }  # fmt: skip
    other_project = dict(doc, _id="other", project_id="p2")
    store.collection(SPANS).insert_many([doc, old, other_project])

    by_id = {s["span_id"]: s for s in trace_spans(store.db, "p1", trace)}
    assert set(by_id) == {"00000000000000cc", SPAN["span_id"]}
    assert by_id["00000000000000cc"]["service_name"] == "api"
    assert by_id["00000000000000cc"]["trace_id"] == trace
    assert by_id["00000000000000cc"]["attributes"] == {"db.system": "postgresql"}
    assert by_id["00000000000000cc"]["duration"] == 0.01
    assert by_id[SPAN["span_id"]]["service_name"] == "worker"
    assert by_id[SPAN["span_id"]]["trace_id"] == trace
    assert [s["span_id"] for s in trace_spans(store.db, "p1", other_trace)] == ["00000000000000dd"]
    assert trace_spans(store.db, "p1", "e" * 32) == []
