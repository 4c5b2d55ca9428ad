"""Running the platform's parts in one process: store, receiver, default project."""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from collector_receiver import GrpcOptions, TraceIngestor, build_server
from collector_receiver.batcher import BatchOptions
from collector_receiver.http_app import HttpServer, create_app
from pystrument.settings import ServerSettings
from storage_backend import Project, Store

logger = logging.getLogger(__name__)

DEFAULT_PROJECT = "default"
KEY_FILE = "default-project.key"
ADMIN_TOKEN_FILE = "admin.token"
RUNTIME_FILE = "runtime.json"


@dataclass(slots=True)
class DefaultProject:
    project: Project
    key: str | None  # None when it cannot be shown again (created elsewhere, no key file)
    created: bool


def ensure_default_project(store: Store, data_dir: Path, *, keep_key_file: bool) -> DefaultProject:
    """Create the `default` project on first start. On the embedded default, its key is kept
    in a 0600 file in the data directory so that each start can print it again."""
    key_file = data_dir / KEY_FILE
    existing = store.projects.find_by_name(DEFAULT_PROJECT)
    if existing is not None:
        key = None
        if keep_key_file and key_file.exists():
            candidate = key_file.read_text().strip()
            found = store.projects.find_by_key(candidate)
            if found is not None and found.id == existing.id:
                key = candidate
        return DefaultProject(existing, key, created=False)
    project, key = store.projects.create(
        DEFAULT_PROJECT, description="Created by `pystrument up` on first start."
    )
    if keep_key_file:
        _write_secret(key_file, key)
    return DefaultProject(project, key, created=True)


@dataclass(slots=True)
class AdminToken:
    token: str | None
    source: str  # "configured" | "generated" | "file" | "none"


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def read_admin_token(data_dir: Path) -> str | None:
    """The token `pystrument up` generated in this data directory, if any."""
    try:
        return (data_dir / ADMIN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def ensure_admin_token(settings: ServerSettings, *, generate: bool) -> AdminToken:
    """The REST API's admin token: `admin_token` from the configuration; else (with
    `generate`, i.e. `pystrument up`) the one kept 0600 in the data directory, created with
    256 random bits on first start. Without either, management endpoints refuse everyone."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return AdminToken(settings.admin_token.get_secret_value(), "configured")
    if not generate:
        return AdminToken(None, "none")
    existing = read_admin_token(settings.data_dir)
    if existing:
        return AdminToken(existing, "file")
    token = "pat_" + secrets.token_urlsafe(32)
    _write_secret(settings.data_dir / ADMIN_TOKEN_FILE, token)
    return AdminToken(token, "generated")


def open_admin_store(settings: ServerSettings) -> Store:
    """The store for one-off commands (`projects ...`): the configured URL; else the store of
    a `pystrument up` running on this data directory; else the embedded store, started for
    the duration of the command."""
    from storage_backend import StoreError

    if not settings.mongodb_url:
        running_url = read_runtime_info(settings.data_dir).get("mongodb_url")
        if running_url:
            store = Store.connect(
                running_url, settings.mongodb_database, server_selection_timeout_ms=1000
            )
            try:
                store.ping()
                return store
            except StoreError:
                store.close()  # a stale file from a `pystrument up` that did not stop cleanly
    return Store.open(settings.store_settings())


def write_runtime_info(data_dir: Path, info: dict[str, Any]) -> Path:
    """Where a running `pystrument up` can be reached (read by the demo and the UI)."""
    path = data_dir / RUNTIME_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    return path


def remove_runtime_info(data_dir: Path) -> None:
    (data_dir / RUNTIME_FILE).unlink(missing_ok=True)


def read_runtime_info(data_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((data_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return {}


class Receiver:
    """The receiver's transports on one store: OTLP/gRPC, and the HTTP app (OTLP/HTTP, REST
    API, health). `start()`, then `stop()` drains in-flight exports."""

    def __init__(self, store: Store, settings: ServerSettings, *, admin_token: str | None = None):
        self.ingestor = TraceIngestor(
            store,
            batch_options=BatchOptions(
                max_inflight_spans=settings.ingest_max_inflight_spans,
                max_batch_spans=settings.ingest_max_batch_spans,
                writers=settings.ingest_writers,
                retry_after_seconds=settings.ingest_retry_after_seconds,
                admission_wait_seconds=settings.ingest_admission_wait_seconds,
            ),
            max_span_attributes=settings.max_span_attributes,
        )
        options = GrpcOptions(
            host=settings.grpc_host,
            port=settings.grpc_port,
            max_workers=settings.grpc_max_workers,
            max_message_bytes=settings.grpc_max_message_bytes,
            max_concurrent_streams=settings.grpc_max_concurrent_streams,
            keepalive_seconds=settings.grpc_keepalive_seconds,
            tls_cert_file=settings.tls_cert_file,
            tls_key_file=settings.tls_key_file,
        )
        self._grpc: grpc.Server
        self._grpc, self.grpc_port = build_server(self.ingestor, options)
        self.http = HttpServer(
            create_app(
                store,
                self.ingestor,
                http_max_body_bytes=settings.http_max_body_bytes,
                cors_allowed_origins=settings.http_cors_allowed_origins,
                http_max_inflight_body_bytes=settings.http_max_inflight_body_bytes,
                admin_token=admin_token,
                api_rate_limit_per_second=settings.api_rate_limit_per_second,
                api_rate_limit_burst=settings.api_rate_limit_burst,
            ),
            host=settings.http_host,
            port=settings.http_port,
            ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
            ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        )
        self.tls = bool(settings.tls_cert_file)

    @property
    def http_port(self) -> int:
        return self.http.port

    def start(self) -> None:
        self._grpc.start()
        logger.info("OTLP/gRPC receiver listening on port %d", self.grpc_port)
        self.http.start()
        logger.info("HTTP (OTLP/HTTP, REST API, /health) listening on port %d", self.http_port)

    def stop(self, grace: float = 10.0) -> None:
        """Refuse new requests, let running ones finish (up to `grace` seconds), then write
        what the group-commit writer still holds. Nothing is acknowledged unless stored: a
        request still waiting when its write fails gets a retryable status."""
        done: threading.Event = self._grpc.stop(grace)
        self.http.stop(grace)
        done.wait(grace + 1)
        self.ingestor.close(grace)
