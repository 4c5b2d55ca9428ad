"""Performance records made through the store's real ingest path from hand-built spans:
a SERVER span carrying an encoded call tree, and CLIENT db spans below it."""

from __future__ import annotations

import secrets
import time

from otel_pyinstrument_processor import CallTreeNode, encode_profile
from otel_pyinstrument_processor import attributes as profile_attrs
from storage_backend import Project, ResourceSpans, SpanData, Store
from storage_backend.records import record_id

APP = "/srv/shop/app.py"


def slow_tree(duration: float) -> CallTreeNode:
    """handler -> crunch (90% CPU in app code) and a little library time."""
    crunch = CallTreeNode("crunch_numbers", APP, 40, duration * 0.9, duration * 0.9, 90)
    lib = CallTreeNode("dumps", "/usr/lib/python3.11/json/__init__.py", 231, duration * 0.05,
                       duration * 0.05, 5)  # fmt: skip
    return CallTreeNode("handler", APP, 10, duration, duration * 0.05, 100, [crunch, lib])


def ingest_request(
    store: Store,
    project: Project,
    *,
    endpoint: str = "/api/report",
    duration: float = 1.5,
    db_calls: int = 0,
) -> str:
    """Store one request (its record and spans) through `Store.ingest`; return the record id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    start = time.time_ns() - int(duration * 1e9)
    end = start + int(duration * 1e9)
    encoded = encode_profile(slow_tree(duration))
    server = SpanData(
        trace_id, span_id, None, f"GET {endpoint}", "server", start, end,
        attributes={
            "http.request.method": "GET",
            "http.route": endpoint,
            "http.response.status_code": 200,
            profile_attrs.PROFILE_TREE: encoded.tree,
            profile_attrs.PROFILE_FORMAT: encoded.format,
        },
    )  # fmt: skip
    spans = [server]
    for i in range(db_calls):
        s = start + i * 1000
        spans.append(
            SpanData(
                trace_id, secrets.token_hex(8), span_id, "SELECT", "client", s, s + 500_000,
                attributes={"db.system": "postgresql",
                            "db.statement": f"SELECT * FROM items WHERE order_id = {i}"},
            )
        )  # fmt: skip
    store.ingest(project, [ResourceSpans({"service.name": "shop"}, spans)])
    return record_id(project.id, trace_id, span_id)
