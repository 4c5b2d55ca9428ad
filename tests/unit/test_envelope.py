"""The REST envelope: success and every failure path answer {code, msg, data} under /api/."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from collector_receiver.api.envelope import ApiError, ErrorCode, install_error_handlers, success
from storage_backend import ProjectNotFoundError, StoreUnavailableError


def _client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/v1/ok")
    def ok() -> dict:
        return success({"x": 1})

    @app.get("/api/v1/busy")
    def busy() -> dict:
        raise ApiError(ErrorCode.ANALYSIS_IN_PROGRESS, "already running")

    @app.get("/api/v1/missing")
    def missing() -> dict:
        raise ProjectNotFoundError("no project 'x'")

    @app.get("/api/v1/down")
    def down() -> dict:
        raise StoreUnavailableError("connection refused")

    @app.get("/api/v1/typed")
    def typed(n: int) -> dict:
        return success(n)

    @app.get("/api/v1/bug")
    def bug() -> dict:
        raise RuntimeError("boom")

    return TestClient(app, raise_server_exceptions=False)


def test_envelopes():
    c = _client()
    assert c.get("/api/v1/ok").json() == {"code": 0, "msg": "success", "data": {"x": 1}}
    cases = {
        "/api/v1/busy": (409, 20006),
        "/api/v1/missing": (404, 20001),
        "/api/v1/down": (503, 10005),
        "/api/v1/typed?n=abc": (400, 10001),
        "/api/v1/nope": (404, 10001),
        "/api/v1/bug": (500, 10000),
    }
    for path, (status, code) in cases.items():
        r = c.get(path)
        assert (r.status_code, r.json()["code"]) == (status, code), path
        assert set(r.json()) == {"code", "msg", "data"}
    assert "connection refused" not in c.get("/api/v1/down").text  # no internals leak
