"""Reading keys from headers, and the one mapping from failures to OTLP statuses."""

from __future__ import annotations

import grpc
import pytest

from collector_receiver.auth import key_from_headers
from collector_receiver.errors import (
    AuthenticationError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    ShuttingDownError,
    UnsupportedMediaTypeError,
    classify,
)
from storage_backend import InvalidDocumentError, StoreError, StoreUnavailableError


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([("authorization", "Bearer psk_abc")], "psk_abc"),
        ([("Authorization", "bearer   psk_abc  ")], "psk_abc"),
        ([("x-pystrument-project-key", "psk_x")], "psk_x"),
        ([("X-Pystrument-Project-Key", b"psk_bytes")], "psk_bytes"),
        ([("authorization", "Basic Zm9vOmJhcg==")], None),
        ([("authorization", "Bearer ")], None),
        ([("user-agent", "x")], None),
        ([], None),
    ],
)
def test_key_from_headers(headers, key):
    assert key_from_headers(headers) == key


@pytest.mark.parametrize(
    ("exc", "code", "http", "retryable"),
    [
        (AuthenticationError("x"), grpc.StatusCode.UNAUTHENTICATED, 401, False),
        (InvalidRequestError("x"), grpc.StatusCode.INVALID_ARGUMENT, 400, False),
        (InvalidDocumentError("x"), grpc.StatusCode.INVALID_ARGUMENT, 400, False),
        (PayloadTooLargeError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, 413, False),
        (StoreUnavailableError("x"), grpc.StatusCode.UNAVAILABLE, 503, True),
        (StoreError("x"), grpc.StatusCode.UNAVAILABLE, 503, True),
        (UnsupportedMediaTypeError("x"), grpc.StatusCode.INVALID_ARGUMENT, 415, False),
        (OverloadedError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, 429, True),
        (ShuttingDownError("x"), grpc.StatusCode.UNAVAILABLE, 503, True),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL, 500, False),
    ],
)
def test_classify(exc, code, http, retryable):
    status = classify(exc)
    assert (status.grpc_code, status.http_status, status.retryable) == (code, http, retryable)


def test_transient_faults_never_get_a_permanent_code():
    for exc in (StoreUnavailableError("down"), StoreError("odd")):
        assert classify(exc).retryable


def test_only_retryable_statuses_carry_a_retry_hint():
    # RESOURCE_EXHAUSTED is retried by clients only with RetryInfo: overload has it, an
    # oversize message must not.
    assert classify(OverloadedError("busy", retry_after=2.5)).retry_after == 2.5
    assert classify(PayloadTooLargeError("big")).retry_after is None
    for exc in (AuthenticationError("x"), InvalidRequestError("x"), RuntimeError("x")):
        assert classify(exc).retry_after is None
