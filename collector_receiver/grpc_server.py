"""OTLP/gRPC: the TraceService/Export endpoint (port 4317 by default).

A thin transport: it reads the key from metadata, hands the request to the shared
`TraceIngestor` and maps failures through `errors.classify`.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector_receiver.auth import key_from_headers
from collector_receiver.errors import InvalidRequestError, Status, classify
from collector_receiver.ingest import TraceIngestor
from collector_receiver.otlp_values import parse_fast_request

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass(slots=True)
class GrpcOptions:
    host: str = "0.0.0.0"
    port: int = 4317
    max_workers: int = 16
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_streams: int = 100
    # Seconds between server keepalive pings on idle connections (0 = gRPC's default).
    keepalive_seconds: float = 0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class UndecodableRequest:
    """What the deserializer hands over for bytes that are not a trace request: grpcio would
    answer a deserializer exception with INTERNAL, OTLP wants INVALID_ARGUMENT."""

    reason: str


def deserialize_request(data: bytes) -> object:
    """The request parsed with the faster decoding schema, or an UndecodableRequest."""
    try:
        return parse_fast_request(data)
    except DecodeError as exc:
        return UndecodableRequest(str(exc) or "not a protobuf ExportTraceServiceRequest")


class TraceService:
    """The TraceService servicer: Export only, as OTLP defines."""

    def __init__(self, ingestor: TraceIngestor):
        self._ingestor = ingestor

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        key = key_from_headers(context.invocation_metadata())
        try:
            if isinstance(request, UndecodableRequest):
                exc = InvalidRequestError(f"invalid protobuf message: {request.reason}")
                self._ingestor.count_refused(exc, "grpc")
                raise exc
            outcome = self._ingestor.export(key, request, transport="grpc")
        except Exception as exc:
            status = classify(exc)
            if status.grpc_code == grpc.StatusCode.INTERNAL:
                logger.exception("export failed")
            else:
                logger.info("export refused (%s): %s", status.grpc_code.name, exc)
            if status.retry_after is not None:
                context.set_trailing_metadata(retry_info_metadata(status))
            context.abort(status.grpc_code, status.message)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if outcome.rejected:
            response.partial_success.rejected_spans = outcome.rejected
            response.partial_success.error_message = outcome.error_message
        return response


def retry_info_metadata(status: Status) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a `google.rpc.RetryInfo`: in `grpc-status-details-bin` (a
    google.rpc.Status with the RetryInfo in its details, as the Go Collector's clients read it)
    and in `google.rpc.retryinfo-bin` (read by the Python OTLP exporter)."""
    retry_info = RetryInfo()
    retry_info.retry_delay.FromTimedelta(timedelta(seconds=status.retry_after or 0))
    detail = AnyProto()
    detail.Pack(retry_info)
    rpc_status = status_pb2.Status(
        code=status.grpc_code.value[0], message=status.message, details=[detail]
    )
    return (
        ("grpc-status-details-bin", rpc_status.SerializeToString()),
        ("google.rpc.retryinfo-bin", retry_info.SerializeToString()),
    )


def build_server(ingestor: TraceIngestor, options: GrpcOptions) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) gRPC server and the port it bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.max_workers, thread_name_prefix="otlp-grpc"),
        options=[
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_concurrent_streams", options.max_concurrent_streams),
            *(
                [("grpc.keepalive_time_ms", int(options.keepalive_seconds * 1000))]
                if options.keepalive_seconds
                else []
            ),
        ],
    )
    # Registered by hand rather than with add_TraceServiceServicer_to_server, to parse
    # requests with the faster decoding schema (same wire format, see otlp_values).
    export = grpc.unary_unary_rpc_method_handler(
        TraceService(ingestor).Export,
        request_deserializer=deserialize_request,
        response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Export": export}),)
    )
    address = f"{options.host}:{options.port}"
    if options.tls_cert_file and options.tls_key_file:
        credentials = grpc.ssl_server_credentials(
            [(Path(options.tls_key_file).read_bytes(), Path(options.tls_cert_file).read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    elif options.tls_cert_file or options.tls_key_file:
        raise ValueError("TLS needs both a certificate file and a key file")
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the OTLP/gRPC receiver to {address}")
    return server, port
