"""Shared fixtures: a real embedded MongoDB-wire server (SecantusDB as a separate process),
a fresh database per test, and a real OTLP/gRPC receiver on a free port."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from storage_backend import Project, Store
from storage_backend.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def store(embedded_server: EmbeddedServer) -> Iterator[Store]:
    """A store on its own database, dropped afterwards."""
    db_name = f"test_{uuid.uuid4().hex[:12]}"
    store = Store.connect(embedded_server.url, db_name)
    store.ensure_schema()
    yield store
    store.client.drop_database(db_name)
    store.client.close()


@dataclass
class ProjectWithKey:
    project: Project
    key: str


@pytest.fixture
def project(store: Store) -> ProjectWithKey:
    project, key = store.projects.create(f"proj-{uuid.uuid4().hex[:6]}")
    return ProjectWithKey(project, key)


@dataclass
class RunningReceiver:
    port: int
    ingestor: object

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_receiver(store: Store):
    from collector_receiver import GrpcOptions, TraceIngestor, build_server

    ingestor = TraceIngestor(store)
    server, port = build_server(ingestor, GrpcOptions(host="127.0.0.1", port=0))
    server.start()
    return server, RunningReceiver(port, ingestor)


@pytest.fixture
def receiver(store: Store) -> Iterator[RunningReceiver]:
    server, running = start_receiver(store)
    yield running
    server.stop(2).wait(5)


@dataclass
class RunningHttpReceiver:
    port: int
    ingestor: object

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"


@pytest.fixture
def http_receiver(store: Store) -> Iterator[RunningHttpReceiver]:
    """The real HTTP app (OTLP/HTTP, /metrics) under uvicorn on a free port."""
    from collector_receiver import TraceIngestor
    from collector_receiver.http_app import HttpServer, create_app

    ingestor = TraceIngestor(store)
    server = HttpServer(
        create_app(store, ingestor, http_max_body_bytes=1024 * 1024), host="127.0.0.1", port=0
    )
    server.start()
    yield RunningHttpReceiver(server.port, ingestor)
    server.stop(2)
    ingestor.close(5)
