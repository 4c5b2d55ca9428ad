"""The HTTP app's liveness and readiness, on the real store and on a store that is down."""

from __future__ import annotations

from fastapi.testclient import TestClient

from collector_receiver.http_app import create_app
from storage_backend import Store
from storage_backend.embedded import free_port


def test_health_and_ready_with_the_store_up(store):
    client = TestClient(create_app(store))
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["store"] == "ok"
    assert client.get("/openapi.json").status_code == 200


def test_ready_is_503_when_the_store_is_down():
    down = Store.connect(f"mongodb://127.0.0.1:{free_port()}/", server_selection_timeout_ms=300)
    try:
        client = TestClient(create_app(down))
        assert client.get("/health").status_code == 200  # alive, but not ready
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
    finally:
        down.close()
