"""Synthetic performance records for benchmarks, tests and UI development.

Realistic enough to exercise every query: a dozen routes with their own log-normal latency,
three `service.version`s rolling out over time (the newest makes one route slower through
one function), 4xx/5xx responses, and a call tree on a fraction of the records. Each record
is built from a synthetic server span by `records.build_performance_record`, the builder
ingest uses, so documents have exactly the stored shape. Deterministic per seed.

`insert_synthetic` writes them the way a bulk load should: large `insert_many` batches, and
the rollups of the whole load combined in memory by `rollups.rollup_changes` (the function
ingest uses) into one upsert per rollup document, instead of one bulk write per batch.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from otel_pyinstrument_processor import CallTreeNode, attributes, encode_profile
from storage_backend.errors import translate_errors
from storage_backend.models import SpanData
from storage_backend.records import build_performance_record
from storage_backend.rollups import rollup_changes
from storage_backend.schema import PERFORMANCE_RECORDS, ROLLUPS
from storage_backend.store import DUPLICATE_KEY, Store

# (method, route, median seconds, log-normal sigma)
ROUTES: tuple[tuple[str, str, float, float], ...] = (
    ("GET", "/users/<id>", 0.020, 0.5),
    ("GET", "/users", 0.080, 0.6),
    ("POST", "/users", 0.120, 0.5),
    ("GET", "/orders/<id>", 0.035, 0.5),
    ("GET", "/orders", 0.150, 0.7),
    ("POST", "/orders", 0.250, 0.6),
    ("GET", "/search", 0.400, 0.8),
    ("GET", "/reports/<id>", 1.200, 0.7),
    ("POST", "/login", 0.090, 0.4),
    ("GET", "/health", 0.002, 0.3),
    ("PUT", "/users/<id>", 0.060, 0.5),
    ("DELETE", "/orders/<id>", 0.045, 0.5),
)
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
SLOW_ROUTE = "/search"
"""In version 1.2.0 this route spends twice as long in `rank_results`."""
ROLLUP_WRITE_BATCH = 5000
"""Rollup writes per bulk write (bounds the size of one request)."""


def _tree(route: str, duration: float, version: str) -> CallTreeNode:
    slow = version == VERSIONS[-1] and route == SLOW_ROUTE
    db_share, work_share = (0.3, 0.6) if slow else (0.5, 0.3)
    db = CallTreeNode(
        "execute", "sqlalchemy/engine.py", 1800, duration * db_share, duration * db_share, 10
    )
    work = CallTreeNode(
        "rank_results" if route == SLOW_ROUTE else "render",
        "app/views.py",
        42,
        duration * work_share,
        duration * work_share,
        6,
    )
    handler = CallTreeNode(
        "handle",
        "app/views.py",
        10,
        duration * 0.95,
        duration * (0.95 - db_share - work_share),
        19,
        [db, work],
    )
    return CallTreeNode("wsgi_app", "flask/app.py", 1500, duration, duration * 0.05, 20, [handler])


def _resource(version: str) -> dict[str, Any]:
    return {
        "service.name": "synthetic-shop",
        "service.version": version,
        "process.runtime.name": "cpython",
        "process.runtime.version": "3.11.9",
        "telemetry.sdk.language": "python",
        "host.name": "synthetic-host",
    }


def synthetic_spans(
    count: int,
    *,
    seed: int = 1,
    end: datetime | None = None,
    span: timedelta = timedelta(days=7),
    profile_share: float = 0.2,
) -> Iterator[tuple[dict[str, Any], SpanData]]:
    """`count` (resource, server span) pairs as a Flask app instrumented by OpenTelemetry and
    the pyinstrument processor would export them, starting evenly over `[end - span, end)`,
    oldest first."""
    rng = random.Random(seed)
    end = end or datetime.now(timezone.utc)
    start_ns = int((end - span).timestamp() * 1e9)
    step_ns = int(span.total_seconds() * 1e9) // max(count, 1)
    resources = {v: _resource(v) for v in VERSIONS}
    encoded: dict[tuple[str, str], tuple[str, str]] = {}
    for i in range(count):
        method, route, median, sigma = rng.choice(ROUTES)
        # Versions roll out over the span: the first third runs 1.0.0, and so on.
        version = VERSIONS[min(len(VERSIONS) - 1, i * len(VERSIONS) // max(count, 1))]
        duration = median * rng.lognormvariate(0, sigma)
        if version == VERSIONS[-1] and route == SLOW_ROUTE:
            duration *= 1.6
        roll = rng.random()
        status = 500 if roll < 0.01 else 404 if roll < 0.04 else 201 if method == "POST" else 200
        began = start_ns + step_ns * i
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "http.route": route,
            "url.path": route.replace("<id>", str(i % 997)),
            "url.scheme": "http",
            "server.address": "shop.internal",
            "http.response.status_code": status,
            "http.response.body.size": 512,
            attributes.CPU_TIME: duration * 0.4,
        }
        if rng.random() < profile_share:
            # Encoding is costly; the tree's shape per route and version is what matters.
            key = (route, version)
            if key not in encoded:
                enc = encode_profile(_tree(route, median, version))
                encoded[key] = (enc.tree, enc.format)
            attrs[attributes.PROFILE_TREE], attrs[attributes.PROFILE_FORMAT] = encoded[key]
            attrs[attributes.PROFILE_SAMPLE_COUNT] = 20
            attrs[attributes.PROFILE_TRUNCATED] = False
        yield (
            resources[version],
            SpanData(
                trace_id=f"{rng.getrandbits(128):032x}",
                span_id=f"{rng.getrandbits(64):016x}",
                parent_span_id=None,
                name=f"{method} {route}",
                kind="server",
                start_time_ns=began,
                end_time_ns=began + int(duration * 1e9),
                attributes=attrs,
                status_code="error" if status >= 500 else "unset",
                scope_name="opentelemetry.instrumentation.flask",
                scope_version="0.66b1",
            ),
        )


def synthetic_records(
    project_id: str,
    count: int,
    *,
    retention: timedelta = timedelta(days=30),
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """The `performance_records` documents of `synthetic_spans(count, **options)`, each as
    ingest builds it when it receives the span as the request ends."""
    for resource, span in synthetic_spans(count, **options):
        received = datetime.fromtimestamp(span.end_time_ns / 1e9, tz=timezone.utc)
        yield build_performance_record(
            project_id, span, resource, retention=retention, received_at=received
        )


def insert_synthetic(
    store: Store,
    project_id: str,
    count: int,
    *,
    batch_size: int = 5000,
    writers: int = 1,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> int:
    """Insert `count` synthetic records in batches of `batch_size`, then their rollups (one
    upsert per rollup document the whole load touches); `progress(done)` is called after
    each stored batch. Building the records overlaps with the inserts: `writers` threads
    insert batches while this one builds and aggregates the next. Returns the number
    inserted; raises the first write error (the load then stops)."""
    batches: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=2 * writers)
    done = 0
    failures: list[BaseException] = []
    lock = threading.Lock()

    def write() -> None:
        nonlocal done
        while (batch := batches.get()) is not None:
            if failures:
                continue  # drain, so the producer never blocks on a full queue
            try:
                stored = _insert(store, batch)
            except BaseException as exc:  # handed to the caller below
                failures.append(exc)
                continue
            with lock:
                done += stored
                if progress:
                    progress(done)

    def produced() -> Iterator[dict[str, Any]]:
        # Records flow through here into rollup_changes, which keeps only its per-document
        # accumulators: a 1M-record load holds a few batches of records at a time.
        batch: list[dict[str, Any]] = []
        for record in synthetic_records(project_id, count, **options):
            batch.append(record)
            if len(batch) >= batch_size:
                batches.put(batch)
                yield from batch
                batch = []
                if failures:
                    return
        if batch:
            batches.put(batch)
            yield from batch

    threads = [threading.Thread(target=write, daemon=True) for _ in range(max(1, writers))]
    for thread in threads:
        thread.start()
    try:
        changes = rollup_changes(produced())
    finally:
        for _ in threads:
            batches.put(None)
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    for first in range(0, len(changes), ROLLUP_WRITE_BATCH):
        write_rollups(store, changes[first : first + ROLLUP_WRITE_BATCH])
    return done


def _as_new_document(key: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The document a `rollup_changes` upsert creates when none exists yet."""
    doc: dict[str, Any] = {**key, **change["$setOnInsert"]}
    for path, value in {**change["$inc"], **change["$max"]}.items():
        target = doc
        *parents, leaf = path.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    for path, value in change.get("$push", {}).items():
        doc[path] = [value]
    return doc


def write_rollups(store: Store, changes: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Apply `rollup_changes` output: the documents that do not exist yet in one
    `insert_many` (a bulk load's rollups are new, and the embedded server inserts a
    document for a fraction of the cost of a many-field upsert: ~80 upserts/s at 1M-record
    density, measured), the others upserted as ingest does. The stored documents are the
    same either way."""
    if not changes:
        return
    with translate_errors():
        try:
            store.collection(ROLLUPS).insert_many(
                [_as_new_document(key, change) for key, change in changes], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            existing = [changes[e["index"]] for e in errors]
            store.collection(ROLLUPS).bulk_write(
                [UpdateOne(key, change, upsert=True) for key, change in existing], ordered=False
            )


def _insert(store: Store, batch: list[dict[str, Any]]) -> int:
    with translate_errors():
        store.collection(PERFORMANCE_RECORDS).insert_many(batch, ordered=False)
    return len(batch)
