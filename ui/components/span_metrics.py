"""Where a trace's time went outside the process: database, cache and outgoing HTTP calls,
read from its spans' semantic-convention attributes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CACHE_SYSTEMS = frozenset({"redis", "memcached", "valkey"})
CATEGORIES = ("database", "cache", "external")


def category_of(span: Mapping[str, Any]) -> str | None:
    """'database', 'cache' or 'external' for a call out of the process, else None. Stable
    semantic conventions first (db.system.name, http.request.method), then the old names."""
    attrs = span.get("attributes") or {}
    system = attrs.get("db.system.name") or attrs.get("db.system")
    if system:
        return "cache" if str(system).lower() in CACHE_SYSTEMS else "database"
    if attrs.get("db.query.text") or attrs.get("db.statement"):
        return "database"
    if span.get("kind") == "client" and (
        attrs.get("http.request.method") or attrs.get("http.method")
    ):
        return "external"
    return None


def time_by_category(spans: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds of wall time the trace spent in each category. Overlapping spans of one
    category (concurrent queries, or a driver span inside an ORM span) count once."""
    intervals: dict[str, list[tuple[int, int]]] = {c: [] for c in CATEGORIES}
    for span in spans:
        category = category_of(span)
        if category:
            intervals[category].append((int(span["start_ns"]), int(span["end_ns"])))
    return {c: _union_ns(intervals[c]) / 1e9 for c in CATEGORIES if intervals[c]}


def _union_ns(intervals: list[tuple[int, int]]) -> int:
    total, current_start, current_end = 0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total
