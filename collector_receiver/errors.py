"""The one place that classifies ingest failures and maps them to gRPC and HTTP statuses.

OTLP clients retry only UNAVAILABLE (and RESOURCE_EXHAUSTED with RetryInfo) / HTTP 429, 502,
503, 504, and drop data on anything else; so a transient fault must never get a permanent
code. Handlers raise these errors and never pick a status themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from storage_backend import InvalidDocumentError, StoreError, StoreUnavailableError


class IngestError(Exception):
    """A request that cannot be accepted; subclasses say whether a retry can help."""


class AuthenticationError(IngestError):
    """Missing or unknown project key."""


class InvalidRequestError(IngestError):
    """The payload cannot be decoded or is not valid OTLP."""


class PayloadTooLargeError(IngestError):
    """The payload exceeds the configured maximum size (after decompression)."""


class UnsupportedMediaTypeError(IngestError):
    """OTLP/HTTP with a Content-Type other than protobuf or JSON."""


class OverloadedError(IngestError):
    """The receiver holds as many spans in flight as its memory bound allows; retrying after
    `retry_after` seconds can succeed."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDownError(IngestError):
    """The receiver is stopping and takes no new writes; another replica (or this one after a
    restart) can take the request."""


@dataclass(frozen=True, slots=True)
class Status:
    grpc_code: grpc.StatusCode
    http_status: int
    retryable: bool
    message: str
    # Seconds the client should wait before retrying: gRPC RetryInfo / HTTP Retry-After.
    retry_after: float | None = None


def classify(exc: BaseException) -> Status:
    """The status an exporter should get for this failure."""
    if isinstance(exc, AuthenticationError):
        return Status(grpc.StatusCode.UNAUTHENTICATED, 401, False, str(exc))
    if isinstance(exc, PayloadTooLargeError):
        # RESOURCE_EXHAUSTED without RetryInfo: OTLP clients do not retry it.
        return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 413, False, str(exc))
    if isinstance(exc, OverloadedError):
        return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, True, str(exc), exc.retry_after)
    if isinstance(exc, ShuttingDownError):
        return Status(grpc.StatusCode.UNAVAILABLE, 503, True, str(exc), 1.0)
    if isinstance(exc, UnsupportedMediaTypeError):
        return Status(grpc.StatusCode.INVALID_ARGUMENT, 415, False, str(exc))
    if isinstance(exc, (InvalidRequestError, InvalidDocumentError)):
        return Status(grpc.StatusCode.INVALID_ARGUMENT, 400, False, str(exc))
    if isinstance(exc, StoreUnavailableError):
        return Status(grpc.StatusCode.UNAVAILABLE, 503, True, "store unavailable, retry later", 2.0)
    if isinstance(exc, StoreError):
        # Unknown store failures may well be transient: let the exporter retry rather than drop.
        return Status(grpc.StatusCode.UNAVAILABLE, 503, True, "store error, retry later", 2.0)
    return Status(grpc.StatusCode.INTERNAL, 500, False, "internal error")
