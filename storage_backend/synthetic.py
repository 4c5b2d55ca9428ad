"""Synthetic performance records for benchmarks, tests and UI development.

Realistic enough to exercise every query: a dozen routes with their own log-normal latency,
three `service.version`s rolling out over time (the newest makes one route slower through
one function), 4xx/5xx responses, and a call tree on a fraction of the records. Documents
have exactly the shape `records.build_performance_record` stores. Deterministic per seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from otel_pyinstrument_processor import CallTreeNode, encode_profile
from storage_backend.errors import translate_errors
from storage_backend.records import record_id
from storage_backend.rollups import record_rollups
from storage_backend.schema import PERFORMANCE_RECORDS
from storage_backend.store import Store

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


def synthetic_records(
    project_id: str,
    count: int,
    *,
    seed: int = 1,
    end: datetime | None = None,
    span: timedelta = timedelta(days=7),
    profile_share: float = 0.2,
    retention: timedelta = timedelta(days=30),
) -> Iterator[dict[str, Any]]:
    """`count` records with timestamps spread evenly over `[end - span, end)`, oldest first."""
    rng = random.Random(seed)
    end = end or datetime.now(timezone.utc)
    start = end - span
    step = span / max(count, 1)
    encoded: dict[tuple[str, str], tuple[str, str]] = {}
    for i in range(count):
        when = start + step * i
        method, route, median, sigma = rng.choice(ROUTES)
        # Versions roll out over the span: the first third runs 1.0.0, and so on.
        version = VERSIONS[min(len(VERSIONS) - 1, i * len(VERSIONS) // max(count, 1))]
        duration = median * rng.lognormvariate(0, sigma)
        if version == VERSIONS[-1] and route == SLOW_ROUTE:
            duration *= 1.6
        roll = rng.random()
        status = 500 if roll < 0.01 else 404 if roll < 0.04 else 201 if method == "POST" else 200
        profile = None
        if rng.random() < profile_share:
            # Encoding is costly; the tree's shape per route and version is what matters.
            key = (route, version)
            if key not in encoded:
                enc = encode_profile(_tree(route, median, version))
                encoded[key] = (enc.tree, enc.format)
            tree, fmt = encoded[key]
            profile = {"tree": tree, "format": fmt, "sample_count": 20, "truncated": False}
        trace_id = f"{rng.getrandbits(128):032x}"
        span_id = f"{rng.getrandbits(64):016x}"
        yield {
            "_id": record_id(project_id, trace_id, span_id),
            "project_id": project_id,
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": None,
            "name": f"{method} {route}",
            "kind": "server",
            "endpoint": f"{method} {route}",
            "service": {"name": "synthetic-shop", "namespace": None, "instance_id": None},
            "request_info": {
                "method": method,
                "path": route.replace("<id>", str(i % 997)),
                "route": route,
                "query_params": {},
                "headers": {},
            },
            "response_info": {
                "status_code": status,
                "response_size": 512,
                "content_type": "application/json",
            },
            "status": {"code": "error" if status >= 500 else "unset", "message": ""},
            "is_error": status >= 500,
            "performance_metrics": {"total_duration": duration, "cpu_time": duration * 0.4},
            "profile": profile,
            "version_info": {"app_version": version, "git_commit": None, "deploy_time": None},
            "environment": {"python_version": "3.11.9", "framework": "flask"},
            "timestamp": when,
            "end_time": when + timedelta(seconds=duration),
            "created_at": when,
            "expire_at": end + retention,
        }


def insert_synthetic(
    store: Store,
    project_id: str,
    count: int,
    *,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> int:
    """Insert `count` synthetic records (and their rollups) in batches; `progress(done)` is
    called after each batch. Returns the number inserted."""
    done = 0
    batch: list[dict[str, Any]] = []
    for record in synthetic_records(project_id, count, **options):
        batch.append(record)
        if len(batch) >= batch_size:
            done += _write(store, batch)
            batch = []
            if progress:
                progress(done)
    if batch:
        done += _write(store, batch)
        if progress:
            progress(done)
    return done


def _write(store: Store, batch: list[dict[str, Any]]) -> int:
    with translate_errors():
        store.collection(PERFORMANCE_RECORDS).insert_many(batch, ordered=False)
    record_rollups(store.db, batch)
    return len(batch)
