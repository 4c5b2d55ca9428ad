"""A differential flame graph: the newer version's merged call tree, each frame coloured by
how its mean time per request changed against the base version (matched by call path)."""

from __future__ import annotations

from typing import Any, Protocol

import plotly.graph_objects as go

from ui.components.flamegraph import short_location


def version_key(version: str) -> tuple:
    """Orders '1.10.0' after '1.9.2' (numbers as numbers, the rest as text)."""
    import re

    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"[.\-+_]", version)
    )


class MergedTree(Protocol):
    """What the diff needs of `storage_backend.queries.AggregatedCallTree`."""

    profiles: int
    root: Any


def _path_totals(root: Any, profiles: int) -> dict[tuple, float]:
    """Mean total time per request of every call path (a tuple of frames) in a merged tree."""
    out: dict[tuple, float] = {}
    stack = [(root, ((root.function, root.file, root.line),))]
    while stack:
        node, path = stack.pop()
        out[path] = out.get(path, 0.0) + node.total_time / max(profiles, 1)
        for child in node.children:
            stack.append((child, (*path, (child.function, child.file, child.line))))
    return out


def diff_rows(base: MergedTree, target: MergedTree) -> list[dict[str, Any]]:
    """One row per node of the target tree (parents first): id, parent, label, mean time per
    request in target and base (0 when the path did not exist), and the difference."""
    base_totals = _path_totals(base.root, base.profiles)
    rows: list[dict[str, Any]] = []
    stack: list[tuple[Any, tuple, str]] = [
        (target.root, ((target.root.function, target.root.file, target.root.line),), "")
    ]
    while stack:
        node, path, parent_id = stack.pop()
        node_id = f"d{len(rows)}"
        mean = node.total_time / max(target.profiles, 1)
        before = base_totals.get(path, 0.0)
        rows.append(
            {
                "id": node_id,
                "parent": parent_id,
                "label": node.function or "?",
                "location": short_location(node.file, node.line),
                "target": mean,
                "base": before,
                "delta": mean - before,
            }
        )
        for child in reversed(node.children):
            stack.append((child, (*path, (child.function, child.file, child.line)), node_id))
    # plotly's "total" branch mode hides a node whose children outweigh it (rounding), so a
    # parent's value is at least its children's sum. Rows are parents first: go backwards.
    kids: dict[str, float] = {}
    for row in reversed(rows):
        row["value"] = max(row["target"] * 1000, kids.get(row["id"], 0.0))
        if row["parent"]:
            kids[row["parent"]] = kids.get(row["parent"], 0.0) + row["value"]
    return rows


def diff_icicle_figure(base: MergedTree, target: MergedTree, *, height: int = 480) -> go.Figure:
    rows = diff_rows(base, target)
    scale = max((abs(r["delta"]) for r in rows), default=0.0) or 1.0
    figure = go.Figure(
        go.Icicle(
            ids=[r["id"] for r in rows],
            parents=[r["parent"] for r in rows],
            labels=[r["label"] for r in rows],
            values=[r["value"] for r in rows],
            branchvalues="total",
            customdata=[
                [r["location"], r["base"] * 1000, r["target"] * 1000, r["delta"] * 1000]
                for r in rows
            ],
            marker={
                "colors": [r["delta"] / scale for r in rows],
                "colorscale": [[0, "#16a34a"], [0.5, "#e5e7eb"], [1, "#dc2626"]],
                "cmin": -1,
                "cmax": 1,
                "line": {"width": 0.5, "color": "#ffffff"},
            },
            tiling={"orientation": "v"},
            maxdepth=12,
            hovertemplate=(
                "<b>%{label}</b><br>%{customdata[0]}<br>"
                "before %{customdata[1]:.2f} ms → now %{customdata[2]:.2f} ms per request<br>"
                "change %{customdata[3]:+.2f} ms<extra></extra>"
            ),
        )
    )
    figure.update_layout(margin={"t": 30, "l": 0, "r": 0, "b": 0}, height=height)
    return figure
