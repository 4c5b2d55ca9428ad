"""`service.version`s of a project and the comparison of two of them.

Latency per endpoint comes from the rollups (which are keyed by version), so it costs
O(buckets x endpoints). The function-level diff rests on the most recent profiled requests
of each version (bounded by `profile_limit`): mean self time per request of each function.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from pymongo.database import Database

from otel_pyinstrument_processor import CallTreeNode, iter_nodes
from storage_backend.calltree_merge import recent_call_trees
from storage_backend.dashboard_queries import resolve_window
from storage_backend.query_models import (
    EndpointVersionDelta,
    FunctionDelta,
    LatencyStats,
    TimeRange,
    VersionComparison,
    VersionInfo,
)
from storage_backend.rollups import (
    LEVELS,
    RollupRow,
    as_utc,
    bucket_start,
    read_rollups,
    read_window,
    stats_of,
)

DEFAULT_FUNCTION_LIMIT = 20
DEFAULT_COMPARE_PROFILES = 50
"""Call trees per version behind the function diff: the most recent profiled requests."""


def list_versions(
    db: Database,
    project_id: str,
    time_range: TimeRange | None = "30d",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[VersionInfo]:
    """The versions seen in the window with their request counts, most recently seen first.
    Records without `service.version` appear as version ""."""
    since, until = resolve_window(time_range, since, until)
    rows = read_rollups(
        db, project_id, "1d", bucket_start(since, LEVELS["1d"]), until + LEVELS["1d"]
    )
    by_version: dict[str, list[RollupRow]] = defaultdict(list)
    for row in rows:
        by_version[row.version].append(row)
    versions = [
        VersionInfo(
            version=version,
            count=sum(r.count for r in group),
            first_seen=min(r.bucket for r in group),
            last_seen=max(r.bucket for r in group) + LEVELS["1d"],
        )
        for version, group in by_version.items()
    ]
    versions.sort(key=lambda v: (v.last_seen, v.count), reverse=True)
    return versions


def _mean_self_times(trees: list[CallTreeNode]) -> dict[tuple[str, str, int], float]:
    totals: dict[tuple[str, str, int], float] = defaultdict(float)
    for tree in trees:
        for node, _depth in iter_nodes(tree):
            totals[node.key] += node.self_time
    return {key: value / len(trees) for key, value in totals.items()} if trees else {}


def _last_seen(
    db: Database, project_id: str, endpoint: str | None, rows: list[RollupRow]
) -> dict[str, datetime]:
    """The end of the last hour each version of `rows` has requests in. Where a version's
    last row is a whole day, that day's hourly rows (no histograms) narrow it down: the
    trees are searched back from there, and from a day's end a retired version's search
    would read every request of its last hours."""
    last: dict[str, RollupRow] = {}
    for row in rows:
        if row.version not in last or row.bucket > last[row.version].bucket:
            last[row.version] = row
    ends = {}
    for version, row in last.items():
        start = as_utc(row.bucket)
        ends[version] = start + row.width
        if row.width > LEVELS["1h"]:
            hours = read_rollups(
                db,
                project_id,
                "1h",
                start,
                start + row.width,
                endpoint=endpoint,
                per_endpoint=False,
                versions=[version],
                with_histogram=False,
            )
            if hours:
                ends[version] = max(as_utc(h.bucket) for h in hours) + LEVELS["1h"]
    return ends


def _delta(target: float | None, base: float | None) -> float | None:
    return None if target is None or base is None else target - base


def compare_versions(
    db: Database,
    project_id: str,
    base_version: str,
    target_version: str,
    time_range: TimeRange | None = "7d",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    endpoint: str | None = None,
    profile_limit: int = DEFAULT_COMPARE_PROFILES,
    function_limit: int = DEFAULT_FUNCTION_LIMIT,
) -> VersionComparison:
    """Each endpoint's latency under `base_version` and `target_version` (deltas are
    target - base, endpoints with the largest |p95 delta| first), and the functions whose
    mean self time per profiled request changed most (of one endpoint, when given)."""
    since, until = resolve_window(time_range, since, until)
    rows, _width = read_window(
        db,
        project_id,
        since,
        until,
        endpoint=endpoint,
        per_endpoint=endpoint is None,
        versions=[base_version, target_version],
    )
    grouped: dict[tuple[str, str], list[RollupRow]] = defaultdict(list)
    for row in rows:
        grouped[(row.endpoint or "", row.version)].append(row)
    endpoints = []
    for name in sorted({name for name, _version in grouped}):
        base: LatencyStats | None = None
        target: LatencyStats | None = None
        if (name, base_version) in grouped:
            base = stats_of(grouped[(name, base_version)])
        if (name, target_version) in grouped:
            target = stats_of(grouped[(name, target_version)])
        p95_delta = _delta(target and target.p95, base and base.p95)
        endpoints.append(
            EndpointVersionDelta(
                endpoint=name,
                base=base,
                target=target,
                p50_delta=_delta(target and target.p50, base and base.p50),
                p95_delta=p95_delta,
                p95_change=(
                    p95_delta / base.p95 if p95_delta is not None and base and base.p95 else None
                ),
            )
        )
    endpoints.sort(key=lambda e: abs(e.p95_delta) if e.p95_delta is not None else -1, reverse=True)

    # Each version's trees are searched back from its last bucket: a retired version's
    # requests are old, and searching back from now would read everything since.
    last_seen = _last_seen(db, project_id, endpoint, rows)
    base_trees, target_trees = (
        recent_call_trees(
            db,
            project_id,
            endpoint=endpoint,
            version=version,
            limit=profile_limit,
            until=min(last_seen.get(version, until), until),
        )[0]
        for version in (base_version, target_version)
    )
    base_self = _mean_self_times(base_trees)
    target_self = _mean_self_times(target_trees)
    functions = [
        FunctionDelta(
            function=key[0],
            file=key[1],
            line=key[2],
            base_self_time=base_self.get(key, 0.0),
            target_self_time=target_self.get(key, 0.0),
            delta=target_self.get(key, 0.0) - base_self.get(key, 0.0),
        )
        for key in set(base_self) | set(target_self)
    ]
    functions.sort(key=lambda f: abs(f.delta), reverse=True)
    return VersionComparison(
        project_id=project_id,
        base_version=base_version,
        target_version=target_version,
        since=since,
        until=until,
        endpoints=endpoints,
        functions=functions[:function_limit],
        base_profiles=len(base_trees),
        target_profiles=len(target_trees),
    )
