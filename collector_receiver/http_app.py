"""The HTTP side of the receiver: one FastAPI app for OTLP/HTTP, the REST API and health.

Routers are added here, one per resource; each is thin and calls into `storage_backend`
or the shared `TraceIngestor`. The store reaches handlers through `get_store` (the one
dependency-injection point), never through a module-level client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from collector_receiver import metrics, otlp_http
from collector_receiver.api import analysis as analysis_api
from collector_receiver.api import performance, projects
from collector_receiver.api.envelope import install_error_handlers
from collector_receiver.api.rate_limit import ApiRateLimit
from collector_receiver.ingest import TraceIngestor
from storage_backend import Store, StoreError

logger = logging.getLogger(__name__)


def get_store(request: Request) -> Store:
    """FastAPI dependency: the app's store."""
    return request.app.state.store


def get_ingestor(request: Request) -> TraceIngestor:
    """FastAPI dependency: the shared ingest path (the same object the gRPC server uses)."""
    return request.app.state.ingestor


def create_app(
    store: Store,
    ingestor: TraceIngestor | None = None,
    *,
    http_max_body_bytes: int = otlp_http.DEFAULT_MAX_BODY_BYTES,
    cors_allowed_origins: Sequence[str] = (),
    http_max_inflight_body_bytes: int = otlp_http.DEFAULT_MAX_INFLIGHT_BODY_BYTES,
    admin_token: str | None = None,
    api_rate_limit_per_second: float = 0.0,
    api_rate_limit_burst: int = 0,
) -> FastAPI:
    """The HTTP app: OTLP/HTTP `/v1/traces`, `/metrics`, `/health` (liveness), `/ready` (store
    reachable), OpenAPI at `/docs`, the REST API under `/api/v1`. Without `admin_token`,
    management endpoints refuse everyone. `api_rate_limit_per_second` > 0 limits each caller
    of `/api/` to that rate with `api_rate_limit_burst` requests at once (429, code 10004);
    0 (the default here; `pystrument up` passes its settings) turns limiting off."""
    app = FastAPI(
        title="pystrument",
        description="OTLP/HTTP ingestion and the pystrument REST API.",
        version="0.1.0",
    )
    app.state.store = store
    app.state.ingestor = ingestor or TraceIngestor(store)
    app.state.http_max_body_bytes = http_max_body_bytes
    app.state.otlp_body_budget = otlp_http.BodyBudget(
        http_max_inflight_body_bytes, app.state.ingestor.writer.options.retry_after_seconds
    )
    app.state.admin_token = admin_token
    install_error_handlers(app)
    # Added before CORS so that CORS wraps it: browsers can read the 429.
    app.add_middleware(
        ApiRateLimit, per_second=api_rate_limit_per_second, burst=api_rate_limit_burst
    )
    app.include_router(otlp_http.router)
    app.include_router(metrics.router)
    if cors_allowed_origins:
        # Browser exporters (OpenTelemetry JS in web pages) need CORS; nobody else does.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_allowed_origins),
            allow_methods=["POST", "GET", "OPTIONS"],
            allow_headers=["*"],
            max_age=3600,
        )
    # Routers: app.include_router(...) one per resource (OTLP/HTTP, projects, performance,
    # analysis), each added by the change that builds it.
    app.include_router(projects.router)
    app.include_router(performance.router)
    app.include_router(analysis_api.router)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["health"])
    def ready() -> JSONResponse:
        """Readiness: the store answers a ping (503 otherwise, so load balancers route away)."""
        try:
            store.ping()
        except StoreError as exc:
            return JSONResponse({"status": "unavailable", "store": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "store": "ok"})

    return app


class HttpServer:
    """uvicorn in a background thread, stoppable from the main thread."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str,
        port: int,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ):
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", None) or []
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._server.config.port

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started and waited < timeout and self._thread.is_alive():
            deadline.wait(0.05)
            waited += 0.05
        if not self._server.started:
            raise OSError(
                f"the HTTP server did not start on {self._server.config.host}:"
                f"{self._server.config.port}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
