"""A store filled by the real pipeline for the UI's tests: the example Flask shop, profiled
by our processor, exported over OTLP/gRPC to the real receiver, in two `service.version`s."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storage_backend import Project, Store
from storage_backend.embedded import EmbeddedServer
from tests.shop_server import running_shop

# Each version's traffic: every route once or more, a 404 and a 500 among them.
TRAFFIC = [
    "/api/users",
    "/api/users",
    "/api/users/3",
    "/api/users/9999",
    "/api/orders",
    "/api/orders",
    "/api/reports/sales",
    "/api/reports/sales",
    "/api/fail",
]
VERSIONS = ("1.0.0", "1.1.0")
APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")


@dataclass
class ShopData:
    store: Store
    url: str
    database: str
    project: Project
    key: str
    empty_project: Project

    def env(self) -> dict[str, str]:
        return {
            "PYSTRUMENT_MONGODB_URL": self.url,
            "PYSTRUMENT_MONGODB_DATABASE": self.database,
            "PYSTRUMENT_UI_ADDRESS": "127.0.0.1",
        }


def _send_traffic(receiver_endpoint: str, key: str, version: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        # Read by configure() when the shop starts: the records carry this version.
        mp.setenv("OTEL_RESOURCE_ATTRIBUTES", f"service.version={version}")
        # The sales report's upstream wait (0.12 s by default) made 0.3 s: the pages' tests
        # expect it to be the slowest endpoint, and on a loaded machine the N+1 /api/orders,
        # profiled by pyinstrument's hook, once took longer than 0.12 s (seen in CI).
        mp.setenv("DEMO_UPSTREAM_DELAY", "0.3")
        with running_shop(receiver_endpoint, key, "shop-ui") as (base, provider):
            for path in TRAFFIC:
                # the 404 and the 500 are part of the traffic
                with contextlib.suppress(urllib.error.HTTPError):
                    urllib.request.urlopen(base + path, timeout=30).read()
            assert provider.force_flush(30_000)
    return len(TRAFFIC)


@pytest.fixture(scope="module")
def shop_data(embedded_server: EmbeddedServer) -> Iterator[ShopData]:
    from collector_receiver import GrpcOptions, TraceIngestor, build_server

    database = f"test_ui_{uuid.uuid4().hex[:10]}"
    store = Store.connect(embedded_server.url, database)
    store.ensure_schema()
    project, key = store.projects.create("shop")
    empty, _ = store.projects.create("brand-new")
    server, port = build_server(TraceIngestor(store), GrpcOptions(host="127.0.0.1", port=0))
    server.start()
    try:
        for version in VERSIONS:
            _send_traffic(f"http://127.0.0.1:{port}", key, version)
    finally:
        server.stop(2).wait(5)
    yield ShopData(store, embedded_server.url, database, project, key, empty)
    store.client.drop_database(database)
    store.client.close()


@pytest.fixture
def app(shop_data: ShopData, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The UI on `shop_data`'s store, on loopback (no admin gate), the shop project picked."""
    for name, value in shop_data.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PYSTRUMENT_ADMIN_TOKEN", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_id"] = shop_data.project.id
    return at
