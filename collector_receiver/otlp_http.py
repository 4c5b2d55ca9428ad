"""OTLP/HTTP: `POST /v1/traces` (port 4318 by default), binary protobuf or JSON.

A thin transport over the shared `TraceIngestor`, answering as the OTLP spec says: the
response's Content-Type matches the request's; errors carry a `google.rpc.Status` in the
request's encoding, with the status from `errors.classify` (Retry-After on retryable ones);
gzip bodies are inflated with a cap, and the body limit applies after decompression.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.concurrency import run_in_threadpool

from collector_receiver.auth import key_from_headers
from collector_receiver.errors import (
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    classify,
)
from collector_receiver.ingest import ExportOutcome, TraceIngestor
from collector_receiver.otlp_json import message_to_json, parse_json_request
from collector_receiver.otlp_values import parse_fast_request

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024  # the OTLP spec's recommendation
DEFAULT_MAX_INFLIGHT_BODY_BYTES = 100 * 1024 * 1024

router = APIRouter(tags=["otlp"])


def _media_type(content_type: str | None) -> str | None:
    """PROTOBUF, JSON, or None for anything else (parameters like charset are ignored)."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if base == JSON:
        return JSON
    return None


class BodyBudget:
    """Bytes of OTLP/HTTP bodies held at once (being read, parsed, or waiting for their
    write): the HTTP side's memory bound, beside the span bound of the group-commit writer.
    A request that would pass it is refused at once with OverloadedError (429 +
    Retry-After). Used from the event loop only, so a plain counter is safe."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_INFLIGHT_BODY_BYTES, retry_after: float = 1.0):
        self.max_bytes = max_bytes
        self.retry_after = retry_after
        self.used = 0

    def take(self, n: int) -> None:
        # A lone request is always let through (up to the body limit), so none starves.
        if self.used and self.used + n > self.max_bytes:
            raise OverloadedError(
                f"receiver busy: {self.used} bytes of OTLP/HTTP bodies in flight "
                f"(limit {self.max_bytes}); retry later",
                self.retry_after,
            )
        self.used += n

    def give_back(self, n: int) -> None:
        self.used -= n


async def read_body(
    chunks: AsyncIterator[bytes], encoding: str, limit: int, budget: BodyBudget, held: list[int]
) -> bytes:
    """The request body, inflated if gzip, refused with PayloadTooLargeError as soon as it
    passes `limit` bytes (compressed or not): a gzip bomb is never inflated past the limit.
    Every byte kept is taken from `budget` as it arrives and added to `held[0]`, for the
    caller to give back when the request is answered."""
    encoding = encoding.strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise InvalidRequestError(f"unsupported Content-Encoding {encoding!r} (use gzip)")
    inflater = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    body = bytearray()
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLargeError(f"request body over the limit of {limit} bytes")
        if inflater is None:
            budget.take(len(chunk))
            held[0] += len(chunk)
            body += chunk
            continue
        pending = chunk
        while pending:
            try:
                # max_length keeps one step from inflating more than the limit allows.
                inflated = inflater.decompress(pending, limit + 1 - len(body))
            except zlib.error as exc:
                raise InvalidRequestError(f"invalid gzip body: {exc}") from None
            budget.take(len(inflated))
            held[0] += len(inflated)
            body += inflated
            if len(body) > limit:
                raise PayloadTooLargeError(
                    f"request body over the limit of {limit} bytes after decompression"
                )
            pending = inflater.unconsumed_tail
    if inflater is not None and not inflater.eof:
        raise InvalidRequestError("invalid gzip body: truncated")
    return bytes(body)


def parse_request(body: bytes, media_type: str) -> ExportTraceServiceRequest:
    """The body as a trace request (protobuf: the faster decoding schema, same fields);
    InvalidRequestError when it cannot be decoded."""
    if media_type == JSON:
        return parse_json_request(body)
    try:
        return parse_fast_request(body)
    except DecodeError as exc:
        raise InvalidRequestError(f"invalid protobuf body: {exc}") from None


def _encode(message: object, media_type: str) -> bytes:
    if media_type == JSON:
        return message_to_json(message)  # type: ignore[arg-type]
    return message.SerializeToString()  # type: ignore[attr-defined]


def _success(outcome: ExportOutcome, media_type: str) -> Response:
    response = ExportTraceServiceResponse()
    if outcome.rejected:
        response.partial_success.rejected_spans = outcome.rejected
        response.partial_success.error_message = outcome.error_message
    return Response(_encode(response, media_type), status_code=200, media_type=media_type)


def _failure(exc: Exception, media_type: str) -> Response:
    status = classify(exc)
    if status.http_status >= 500 and not status.retryable:
        logger.exception("OTLP/HTTP export failed", exc_info=exc)
    else:
        logger.info("OTLP/HTTP export refused (%d): %s", status.http_status, exc)
    body = status_pb2.Status(code=status.grpc_code.value[0], message=status.message)
    headers = {}
    if status.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(status.retry_after)))
    return Response(
        _encode(body, media_type),
        status_code=status.http_status,
        media_type=media_type,
        headers=headers,
    )


@router.post("/v1/traces", summary="OTLP/HTTP trace export (protobuf or JSON)")
async def export_traces(request: Request) -> Response:
    """Store the spans of an OTLP/HTTP request; 200 means stored (with `partial_success` if
    some spans were invalid). Errors: 400, 401, 413, 415 (permanent); 429, 503 (retry)."""
    ingestor: TraceIngestor = request.app.state.ingestor
    media_type = _media_type(request.headers.get("content-type"))
    budget: BodyBudget = request.app.state.otlp_body_budget
    held = [0]
    try:
        return await _export(request, ingestor, media_type, budget, held)
    finally:
        budget.give_back(held[0])


async def _export(
    request: Request,
    ingestor: TraceIngestor,
    media_type: str | None,
    budget: BodyBudget,
    held: list[int],
) -> Response:
    # An unknown Content-Type is answered in JSON: it is the encoding any client can read.
    answer_as = media_type or JSON
    try:
        if media_type is None:
            raise UnsupportedMediaTypeError(
                f"unsupported Content-Type {request.headers.get('content-type')!r}: "
                f"use {PROTOBUF} or {JSON}"
            )
        limit = getattr(request.app.state, "http_max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        encoding = request.headers.get("content-encoding", "")
        body = await read_body(request.stream(), encoding, limit, budget, held)
        # Decoding a large body must not block the event loop: a worker thread does it.
        message = await run_in_threadpool(parse_request, body, media_type)
    except Exception as exc:
        ingestor.count_refused(exc, "http")  # `export` counts its own refusals, not these
        return _failure(exc, answer_as)
    key = key_from_headers(request.headers.items())
    try:
        outcome = await run_in_threadpool(ingestor.export, key, message, transport="http")
    except Exception as exc:
        return _failure(exc, media_type)
    return _success(outcome, media_type)
