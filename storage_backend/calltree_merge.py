"""Many requests' call trees merged into one: the flame graph of an endpoint as a whole.

Nodes merge by call path (the chain of (function, file, line) from the root), so the same
function reached along two paths stays two nodes, as in each request's own tree. The roots
of all trees merge into one root even when their frames differ (different entry functions
of one endpoint are then its children), so the result is always a single tree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pymongo.database import Database

from otel_pyinstrument_processor import CallTreeNode
from storage_backend.errors import translate_errors
from storage_backend.query_models import AggregatedCallNode, AggregatedCallTree
from storage_backend.request_queries import decode_record_tree
from storage_backend.schema import PERFORMANCE_RECORDS
from storage_backend.windowed_scan import time_bounds, top_descending

DEFAULT_PROFILE_LIMIT = 200
MAX_PROFILE_LIMIT = 2000


def _new_node(source: CallTreeNode) -> AggregatedCallNode:
    return AggregatedCallNode(source.function, source.file, source.line, 0.0, 0.0, 0, 0)


def _absorb(target: AggregatedCallNode, source: CallTreeNode) -> None:
    target.total_time += source.total_time
    target.self_time += source.self_time
    target.sample_count += source.sample_count
    target.request_count += 1


def merge_call_trees(trees: Iterable[CallTreeNode]) -> AggregatedCallNode | None:
    """Merge decoded trees by call path; None when there are none. Children are ordered by
    total time, largest first. Iterative: real trees can be as deep as the recursion limit."""
    root: AggregatedCallNode | None = None
    index: dict[int, dict[tuple[str, str, int], AggregatedCallNode]] = {}
    for tree in trees:
        if root is None:
            # Trees with another entry frame still merge into this root (a merged tree has
            # one root); their children keep their own frames.
            root = _new_node(tree)
        _absorb(root, tree)
        stack: list[tuple[CallTreeNode, AggregatedCallNode]] = [(tree, root)]
        while stack:
            source, target = stack.pop()
            children = index.setdefault(id(target), {})
            for child in source.children:
                node = children.get(child.key)
                if node is None:
                    node = children[child.key] = _new_node(child)
                    target.children.append(node)
                _absorb(node, child)
                stack.append((child, node))
    if root is not None:
        stack2 = [root]
        while stack2:
            node = stack2.pop()
            node.children.sort(key=lambda n: n.total_time, reverse=True)
            stack2.extend(node.children)
    return root


def profiled_records_query(
    project_id: str, endpoint: str | None = None, version: str | None = None
) -> dict[str, Any]:
    """The server-side part of "profiled records of an endpoint and/or version": only
    fields of one index (see `request_queries.split_query` for why); `_has_tree` and, with
    both an endpoint and a version, `_of_version` check the rest."""
    query: dict[str, Any] = {"project_id": project_id}
    if endpoint is not None:
        query["endpoint"] = endpoint
    elif version is not None:
        query["version_info.app_version"] = version or None
    return query


def _has_tree(doc: dict[str, Any]) -> bool:
    return bool((doc.get("profile") or {}).get("tree"))


def recent_call_trees(
    db: Database,
    project_id: str,
    *,
    endpoint: str | None = None,
    version: str | None = None,
    limit: int = DEFAULT_PROFILE_LIMIT,
    until: datetime | None = None,
) -> tuple[list[CallTreeNode], int]:
    """The decoded trees of the `limit` most recent profiled requests (of an endpoint and/or
    version) and how many stored trees could not be decoded. `until` is where the search
    starts looking back from (default now; a retired version's last bucket is cheaper)."""
    limit = max(1, min(limit, MAX_PROFILE_LIMIT))
    keep = _has_tree
    if endpoint is not None and version is not None:
        wanted = version or None

        def keep(doc: dict[str, Any]) -> bool:
            return _has_tree(doc) and (doc.get("version_info") or {}).get("app_version") == wanted

    with translate_errors():
        docs, _window = top_descending(
            db[PERFORMANCE_RECORDS],
            profiled_records_query(project_id, endpoint, version),
            "timestamp",
            time_bounds(until or datetime.now(timezone.utc), None),
            needed=limit,
            projection={"profile": 1, "version_info.app_version": 1},
            keep=keep,
        )
    trees, skipped = [], 0
    for doc in docs:
        tree, error = decode_record_tree(doc)
        if tree is not None:
            trees.append(tree)
        elif error:
            skipped += 1
    return trees, skipped


def aggregated_call_tree(
    db: Database,
    project_id: str,
    endpoint: str,
    *,
    version: str | None = None,
    limit: int = DEFAULT_PROFILE_LIMIT,
) -> AggregatedCallTree:
    """The merged call tree of an endpoint's `limit` most recent profiled requests (optionally
    of one `service.version`). Cost is bounded by `limit`, not by the number of records."""
    trees, skipped = recent_call_trees(
        db, project_id, endpoint=endpoint, version=version, limit=limit
    )
    return AggregatedCallTree(
        project_id=project_id,
        endpoint=endpoint,
        version=version,
        profiles=len(trees),
        skipped=skipped,
        root=merge_call_trees(trees),
    )
