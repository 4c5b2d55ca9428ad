"""OTLP ingestion (gRPC and HTTP) and the REST API, over `storage_backend`."""

from collector_receiver.grpc_server import GrpcOptions, build_server
from collector_receiver.ingest import ExportOutcome, TraceIngestor

__all__ = ["ExportOutcome", "GrpcOptions", "TraceIngestor", "build_server"]
