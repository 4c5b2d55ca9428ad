"""A small catalogue API in FastAPI, instrumented with OpenTelemetry and pystrument.

Run it against `pystrument up`:

    export PYSTRUMENT_PROJECT_KEY=<key printed by pystrument up>
    python examples/fastapi_app/app.py        # serves on http://127.0.0.1:8000

Async endpoints are profiled in pyinstrument's async mode, so time a request spends awaiting
(`fetch_price_from_upstream`) is attributed to that request, never to the others the event
loop ran meanwhile. `/api/report` is a `def` endpoint: FastAPI runs it in its thread pool,
and `profile_sync_endpoints` puts that thread's frames into the request's tree.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

from fastapi import FastAPI, HTTPException


def crunch_even(rounds: int) -> int:
    """CPU work that only even-numbered items do (tests tell requests apart by it)."""
    total = 0
    for i in range(rounds):
        total += (i * i) % 7
    return total


def crunch_odd(rounds: int) -> int:
    """CPU work that only odd-numbered items do."""
    total = 0
    for i in range(rounds):
        total += (i * 3) % 11
    return total


async def fetch_price_from_upstream(item_id: int) -> float:
    """Stands in for an awaited upstream call."""
    await asyncio.sleep(float(os.environ.get("DEMO_UPSTREAM_DELAY", "0.05")))
    return round(item_id * 1.25, 2)


def read_stock_level(item_id: int) -> int:
    """A synchronous lookup (stands in for a sync HTTP or DB client) called from async code:
    it blocks the event loop while it waits, a mistake the analyzer must point out."""
    time.sleep(float(os.environ.get("DEMO_STOCK_DELAY", "0.15")))
    return item_id * 3 % 17


def build_sales_report() -> dict[str, float]:
    """Blocking work (SQLite + Python), run by FastAPI in its thread pool."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, amount REAL)")
    conn.executemany("INSERT INTO sales (amount) VALUES (?)", [(i % 97,) for i in range(3000)])
    (total,) = conn.execute("SELECT SUM(amount) FROM sales").fetchone()
    conn.close()
    time.sleep(0.03)
    return {"total": total, "score": crunch_even(60_000)}


def create_app() -> FastAPI:
    """The app without instrumentation (tests and `instrumented_app` add it)."""
    app = FastAPI(title="catalogue")

    @app.get("/api/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, object]:
        if item_id < 0:
            raise HTTPException(status_code=404, detail="no such item")
        crunch = crunch_even if item_id % 2 == 0 else crunch_odd
        score = 0
        for _ in range(4):  # interleave CPU and awaits so concurrent requests overlap
            score += crunch(15_000)
            await asyncio.sleep(0)
        price = await fetch_price_from_upstream(item_id)
        return {"id": item_id, "price": price, "score": score}

    @app.get("/api/items/{item_id}/stock")
    async def get_stock(item_id: int) -> dict[str, int]:
        # Deliberately wrong: a blocking call inside `async def` (use an async client, or
        # `await asyncio.to_thread(read_stock_level, item_id)`).
        return {"id": item_id, "stock": read_stock_level(item_id)}

    @app.get("/api/report")
    def report() -> dict[str, float]:
        return build_sales_report()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def instrumented_app() -> tuple[FastAPI, object]:
    """The app with OpenTelemetry's FastAPI instrumentation and pystrument's processor.

    Configuration comes from the environment: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME,
    PYSTRUMENT_PROJECT_KEY, PYSTRUMENT_SAMPLING_RATE, PYSTRUMENT_SDK_CONFIG, ...
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from otel_pyinstrument_processor import configure
    from otel_pyinstrument_processor.threadwork import profile_sync_endpoints

    provider = configure(
        service_name=os.environ.get("OTEL_SERVICE_NAME", "catalogue-fastapi"),
        excluded_paths=["/health"],
    )
    app = create_app()
    profile_sync_endpoints(app)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app, provider


if __name__ == "__main__":
    import uvicorn

    application, _provider = instrumented_app()
    uvicorn.run(application, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
