"""A small shop API in Flask, instrumented with OpenTelemetry and pystrument.

Run it against `pystrument up`:

    export PYSTRUMENT_PROJECT_KEY=<key printed by pystrument up>
    python examples/flask_app/app.py          # serves on http://127.0.0.1:5000

`/api/reports/sales` is deliberately slow: a CPU-heavy helper (`compute_sales_statistics`)
and a blocking wait on a pretend upstream service (`fetch_exchange_rates`).
`/api/orders` runs one query per order (an N+1 pattern).
`/api/reports/inventory` re-parses the price list in every helper that needs it
(`load_price_list`, repeated identical work instead of once per request).
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import sqlite3
import threading
import time
from collections import defaultdict

from flask import Flask, abort, g, jsonify, request

_SEED_LOCK = threading.Lock()
DB_PATH = "file:pystrument-demo-shop?mode=memory&cache=shared"
_KEEPALIVE: sqlite3.Connection | None = None  # holds the shared in-memory DB open


def _connect() -> sqlite3.Connection:
    return sqlite3.connect(DB_PATH, uri=True, check_same_thread=False)


def _seed() -> None:
    global _KEEPALIVE
    with _SEED_LOCK:
        if _KEEPALIVE is not None:
            return
        conn = _connect()
        rng = random.Random(7)
        conn.executescript(
            """
            CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL);
            CREATE TABLE items (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT, qty INTEGER);
            """
        )
        conn.executemany(
            "INSERT INTO users VALUES (?, ?, ?)",
            [(i, f"user{i}", f"user{i}@example.com") for i in range(1, 201)],
        )
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            [(i, rng.randint(1, 200), round(rng.uniform(5, 500), 2)) for i in range(1, 501)],
        )
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(i, rng.randint(1, 500), f"SKU-{rng.randint(1, 90)}", rng.randint(1, 4))
             for i in range(1, 2001)],
        )  # fmt: skip
        conn.commit()
        _KEEPALIVE = conn


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = _connect()
    return g.db


def query(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one query through a cursor: OpenTelemetry's sqlite3 instrumentation traces cursor
    calls (`Connection.execute` shortcuts would go unseen)."""
    cursor = conn.cursor()
    try:
        return cursor.execute(sql, params).fetchall()
    finally:
        cursor.close()


def compute_sales_statistics(values: list[float]) -> dict[str, float]:
    """Deliberately CPU-heavy: a naive O(n^2) statistic over the order totals."""
    n = len(values)
    mean = sum(values) / n
    gini_sum = 0.0
    for a in values:
        for b in values:
            gini_sum += abs(a - b)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return {"mean": mean, "stddev": spread, "gini": gini_sum / (2 * n * n * mean)}


def fetch_exchange_rates() -> dict[str, float]:
    """Deliberately blocking: stands in for a slow upstream HTTP call."""
    time.sleep(float(os.environ.get("DEMO_UPSTREAM_DELAY", "0.12")))
    return {"EUR": 0.92, "GBP": 0.79}


# The catalogue's price list as the pricing service exports it (5,000 SKUs).
PRICE_LIST_CSV = "\n".join(f"SKU-{i},{(i * 37) % 500 / 10 + 1:.2f},EUR" for i in range(1, 5001))


def load_price_list() -> dict[str, float]:
    """Parse the price list. Deliberately not shared: each helper of the inventory report
    calls it again (repeated identical work, once per order)."""
    return {sku: float(price) for sku, price, _cur in csv.reader(io.StringIO(PRICE_LIST_CSV))}


def order_value(items: list[tuple[str, int]]) -> float:
    prices = load_price_list()
    return round(sum(prices[sku] * qty for sku, qty in items), 2)


def most_valuable_skus(items: list[tuple[str, int]], limit: int = 5) -> list[str]:
    prices = load_price_list()
    value: dict[str, float] = defaultdict(float)
    for sku, qty in items:
        value[sku] += prices[sku] * qty
    return sorted(value, key=lambda sku: (-value[sku], sku))[:limit]


def load_items(conn: sqlite3.Connection, order_id: int) -> list[dict[str, object]]:
    rows = query(conn, "SELECT sku, qty FROM items WHERE order_id = ?", (order_id,))
    return [{"sku": sku, "qty": qty} for sku, qty in rows]


def create_app() -> Flask:
    _seed()
    app = Flask(__name__)

    @app.teardown_appcontext
    def _close_db(_exc: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.get("/")
    def index():
        return jsonify(service="shop", endpoints=[str(r) for r in app.url_map.iter_rules()])

    @app.get("/api/users")
    def list_users():
        limit = min(int(request.args.get("limit", 20)), 100)
        rows = query(get_db(), "SELECT id, name, email FROM users LIMIT ?", (limit,))
        return jsonify([{"id": i, "name": n, "email": e} for i, n, e in rows])

    @app.get("/api/users/<int:user_id>")
    def get_user(user_id: int):
        rows = query(get_db(), "SELECT id, name, email FROM users WHERE id = ?", (user_id,))
        if not rows:
            abort(404)
        row = rows[0]
        return jsonify(id=row[0], name=row[1], email=row[2])

    @app.get("/api/orders")
    def list_orders():
        conn = get_db()
        orders = query(conn, "SELECT id, user_id, total FROM orders LIMIT 40")
        # N+1: one items query per order instead of one join.
        return jsonify(
            [
                {"id": oid, "user_id": uid, "total": total, "items": load_items(conn, oid)}
                for oid, uid, total in orders
            ]
        )

    @app.get("/api/reports/sales")
    def sales_report():
        totals = [t for (t,) in query(get_db(), "SELECT total FROM orders")]
        stats = compute_sales_statistics(totals)
        rates = fetch_exchange_rates()
        return jsonify(stats=stats, rates=rates)

    @app.get("/api/reports/inventory")
    def inventory_report():
        rows = query(get_db(), "SELECT order_id, sku, qty FROM items WHERE order_id <= 40")
        by_order: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for order_id, sku, qty in rows:
            by_order[order_id].append((sku, qty))
        values = {order_id: order_value(items) for order_id, items in sorted(by_order.items())}
        top = most_valuable_skus([(sku, qty) for _o, sku, qty in rows])
        return jsonify(order_values=values, top_skus=top)

    @app.get("/api/fail")
    def fail():
        raise RuntimeError("demo failure")

    return app


def instrumented_app() -> tuple[Flask, object]:
    """The app with OpenTelemetry's Flask and sqlite3 instrumentation and pystrument's
    processor (the sqlite3 queries become CLIENT spans with db.* attributes, so the
    analyzer can see `/api/orders`' N+1 pattern).

    Configuration comes from the environment: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME,
    PYSTRUMENT_PROJECT_KEY, PYSTRUMENT_SAMPLING_RATE, ...
    """
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    from otel_pyinstrument_processor import configure

    provider = configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "shop-flask"))
    SQLite3Instrumentor().instrument(tracer_provider=provider)
    app = create_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app, provider


if __name__ == "__main__":
    application, _provider = instrumented_app()
    application.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
