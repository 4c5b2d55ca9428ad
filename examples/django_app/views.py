"""Views: an N+1 order listing, a slow report and a health check."""

from __future__ import annotations

import time

from django.db import connection
from django.http import HttpRequest, JsonResponse

from otel_pyinstrument_processor import monitor_view


def ensure_schema() -> None:
    """Create and fill the tables once (idempotent)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, total REAL)")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, order_id INT, qty INT)"
        )
        cursor.execute("SELECT COUNT(*) FROM orders")
        if cursor.fetchone()[0] == 0:
            cursor.executemany(
                "INSERT INTO orders (total) VALUES (%s)", [(i * 3.5,) for i in range(30)]
            )
            cursor.executemany(
                "INSERT INTO items (order_id, qty) VALUES (%s, %s)",
                [(i % 30 + 1, i % 4 + 1) for i in range(120)],
            )


def load_items(order_id: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT qty FROM items WHERE order_id = %s", [order_id])
        return [qty for (qty,) in cursor.fetchall()]


def orders(request: HttpRequest) -> JsonResponse:
    """N+1: one items query per order."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, total FROM orders ORDER BY id LIMIT 20")
        rows = cursor.fetchall()
    return JsonResponse(
        {"orders": [{"id": i, "total": t, "items": load_items(i)} for i, t in rows]}
    )


def rank_customers(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += (i * 7) % 13
    return total


@monitor_view(custom_tags={"api_version": "v1"})
def report(request: HttpRequest) -> JsonResponse:
    """Slow: Python work plus a blocking wait."""
    score = rank_customers(300_000)
    time.sleep(0.05)
    return JsonResponse({"score": score})


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
