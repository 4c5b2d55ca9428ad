"""The span list of a `spans` document as one versioned, compressed binary value.

Why: the embedded store's cost follows the number of BSON values it decodes and writes, and a
span brings ~37 of them (20 attributes plus its fields). Stored as one `spans_blob`, a trace's
spans are one value; the fields that queries filter and sort on stay plain fields of the
document (records.py). The blob is read only when someone opens a trace, so it is built for
cheap writes: compact JSON (orjson, C) compressed with zstandard level 1, measured ~5x
cheaper to produce than stdlib JSON + zlib level 1 and ~10 % smaller (docs/performance.md).

JSON, not pickle: span data comes from the network. What JSON cannot hold, the decoder gives
back as close as it can: non-finite doubles (NaN, +-Infinity) become null, as orjson writes them.
Integers beyond 64 bits (only the OTLP/JSON transport can send them) fall back to the stdlib
encoder and are read back exactly.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import orjson
import zstandard

logger = logging.getLogger(__name__)

SPANS_FORMAT = "spans/1;json+zstd"
"""`spans_format` of documents written now: a JSON array of span objects (the fields listed
in docs/data-model.md), zstandard-compressed."""

_ZSTD_LEVEL = 1
# zstandard contexts must not be used by two threads at once (the receiver has several
# writers); one pair per thread, reused, costs less than a new context per call.
_contexts = threading.local()
# Refuse to inflate a blob past this (a store can hold at most 16 MB per document; the span
# list compresses ~6x, so anything real fits with room to spare).
_MAX_DECODED_BYTES = 256 * 1024 * 1024


class SpanCodecError(ValueError):
    """A `spans_blob` that cannot be decoded: unknown format, corrupt or oversized data."""


def encode_spans(spans: list[dict[str, Any]]) -> bytes:
    """The `spans_blob` of a span list (format `SPANS_FORMAT`); `decode_spans` inverts it."""
    try:
        text = orjson.dumps(spans)
    except (TypeError, orjson.JSONEncodeError):
        # Integers past 64 bits (orjson refuses them); stdlib JSON writes them exactly.
        text = json.dumps(spans, separators=(",", ":"), default=str).encode()
    compressor = getattr(_contexts, "compressor", None)
    if compressor is None:
        compressor = _contexts.compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    return compressor.compress(text)


def decode_spans(blob: bytes, span_format: str | None) -> list[dict[str, Any]]:
    """The span list of a `spans_blob`; raises SpanCodecError for an unknown format or bad
    data (never returns a partial list)."""
    if span_format != SPANS_FORMAT:
        raise SpanCodecError(f"unknown spans_format {span_format!r} (this version reads "
                             f"{SPANS_FORMAT!r})")  # fmt: skip
    decompressor = getattr(_contexts, "decompressor", None)
    if decompressor is None:
        decompressor = _contexts.decompressor = zstandard.ZstdDecompressor()
    try:
        text = decompressor.decompress(bytes(blob), max_output_size=_MAX_DECODED_BYTES)
    except zstandard.ZstdError as exc:
        raise SpanCodecError(f"spans_blob is not valid zstandard data: {exc}") from None
    try:
        spans = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # what the stdlib fallback wrote (integers past 64 bits)
            spans = json.loads(text)
        except ValueError as exc:
            raise SpanCodecError(f"spans_blob is not a JSON span list: {exc}") from None
    if not isinstance(spans, list):
        raise SpanCodecError(f"spans_blob holds a {type(spans).__name__}, not a span list")
    return spans


def document_spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans of one stored `spans` document, whichever form it was written in: the
    compressed `spans_blob` (now) or the plain `spans` array (before `spans/1`). A blob that
    cannot be decoded is logged and yields no spans, so one bad document does not hide the
    rest of a trace."""
    blob = doc.get("spans_blob")
    if blob is None:
        return list(doc.get("spans") or [])
    try:
        return decode_spans(blob, doc.get("spans_format"))
    except SpanCodecError as exc:
        logger.warning("spans document %s unreadable: %s", doc.get("_id"), exc)
        return []
