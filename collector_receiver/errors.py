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
    """The payload exceeds the configured maximum size."""


@dataclass(frozen=True, slots=True)
class Status:
    grpc_code: grpc.StatusCode
    http_status: int
    retryable: bool
    message: str


def classify(exc: BaseException) -> Status:
    """The status an exporter should get for this failure."""
    if isinstance(exc, AuthenticationError):
        return Status(grpc.StatusCode.UNAUTHENTICATED, 401, False, str(exc))
    if isinstance(exc, PayloadTooLargeError):
        return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 413, False, str(exc))
    if isinstance(exc, (InvalidRequestError, InvalidDocumentError)):
        return Status(grpc.StatusCode.INVALID_ARGUMENT, 400, False, str(exc))
    if isinstance(exc, StoreUnavailableError):
        return Status(grpc.StatusCode.UNAVAILABLE, 503, True, "store unavailable, retry later")
    if isinstance(exc, StoreError):
        # Unknown store failures may well be transient: let the exporter retry rather than drop.
        return Status(grpc.StatusCode.UNAVAILABLE, 503, True, "store error, retry later")
    return Status(grpc.StatusCode.INTERNAL, 500, False, "internal error")
