"""A call tree as an interactive icicle (a flame graph drawn top-down).

Plotly's icicle zooms into a frame on click and back out on the path bar; the hover shows
file:line, total and self time. The figure is built from a decoded
`otel_pyinstrument_processor.CallTreeNode` and knows nothing of Streamlit, so it is tested
(and could be exported) on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import plotly.graph_objects as go

from otel_pyinstrument_processor import CallTreeNode, iter_nodes

# Warm for hot self time, cool for frames that only pass time down: the eye goes to where
# the time is *spent*, as in pyinstrument's HTML renderer.
COLORSCALE = [
    [0.0, "#dbeafe"],
    [0.15, "#93c5fd"],
    [0.4, "#fbbf24"],
    [0.7, "#f97316"],
    [1.0, "#dc2626"],
]


@dataclass(slots=True)
class FlameRows:
    """The tree flattened for plotly: parallel lists, one entry per node, parents first."""

    ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    self_share: list[float] = field(default_factory=list)
    hover: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def short_location(file: str, line: int) -> str:
    """'app.py:42' from a full path: the last two path parts are enough to find a frame."""
    if not file:
        return "?"
    parts = file.replace("\\", "/").rstrip("/").split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else parts[-1]
    return f"{tail}:{line}" if line else tail


def flame_rows(tree: CallTreeNode, *, max_nodes: int = 4000) -> FlameRows:
    """Flatten `tree` for an icicle. Values are total times in milliseconds; a parent's value
    is never below the sum of its children's (plotly hides nodes that break that rule, and
    rounding in the wire format can make it happen by a microsecond). Beyond `max_nodes`
    nodes the smallest frames are left out: a browser cannot draw a million rectangles, and
    frames that small are invisible anyway."""
    rows = FlameRows()
    root_total = max(tree.total_time, 1e-9)
    nodes = list(iter_nodes(tree))
    keep: set[int] | None = None
    if len(nodes) > max_nodes:
        by_size = sorted(nodes, key=lambda nd: nd[0].total_time, reverse=True)[:max_nodes]
        keep = {id(n) for n, _ in by_size}
    ids: dict[int, str] = {}
    values: dict[int, float] = {}

    def value_of(node: CallTreeNode) -> float:
        if id(node) not in values:
            kids = sum(value_of(c) for c in node.children if keep is None or id(c) in keep)
            values[id(node)] = max(node.total_time * 1000.0, kids)
        return values[id(node)]

    parent_of: dict[int, CallTreeNode] = {}
    for node, _depth in nodes:
        for child in node.children:
            parent_of[id(child)] = node
    for index, (node, _depth) in enumerate(nodes):
        if keep is not None and id(node) not in keep:
            continue
        parent = parent_of.get(id(node))
        if parent is not None and id(parent) not in ids:
            continue  # its parent was left out
        node_id = f"n{index}"
        ids[id(node)] = node_id
        rows.ids.append(node_id)
        rows.labels.append(node.function or "?")
        rows.parents.append(ids[id(parent)] if parent is not None else "")
        rows.values.append(value_of(node))
        rows.self_share.append(node.self_time / root_total)
        rows.hover.append(
            [
                short_location(node.file, node.line),
                f"{node.total_time * 1000:.1f} ms",
                f"{node.self_time * 1000:.1f} ms",
                f"{node.total_time / root_total:.1%}",
                str(node.sample_count),
                os.path.basename(node.file) if node.file else "",
            ]
        )
    return rows


def icicle_figure(
    tree: CallTreeNode, *, height: int = 520, max_depth: int = 14, scope: str = "the request"
) -> go.Figure:
    """The call tree as a top-down icicle: width = total time, colour = self-time share.
    Click a frame to zoom into it; `max_depth` levels are drawn at a time. Works on any
    node with the CallTreeNode fields (a merged endpoint tree too; `scope` names the whole)."""
    rows = flame_rows(tree)
    top = max(rows.self_share, default=0.0) or 1.0
    depth = max((d for _n, d in iter_nodes(tree)), default=0) + 1
    height = min(height, 60 + 46 * min(depth, max_depth))  # shallow trees: no giant bars
    figure = go.Figure(
        go.Icicle(
            ids=rows.ids,
            labels=rows.labels,
            parents=rows.parents,
            values=rows.values,
            branchvalues="total",
            customdata=rows.hover,
            marker={
                "colors": [s / top for s in rows.self_share],
                "colorscale": COLORSCALE,
                "cmin": 0.0,
                "cmax": 1.0,
                "line": {"width": 0.5, "color": "#ffffff"},
            },
            tiling={"orientation": "v"},
            maxdepth=max_depth,
            texttemplate="%{label}<br><span style='font-size:10px'>%{customdata[1]}</span>",
            hovertemplate=(
                "<b>%{label}</b><br>%{customdata[0]}<br>"
                f"total %{{customdata[1]}} (%{{customdata[3]}} of {scope})<br>"
                "self %{customdata[2]} · %{customdata[4]} samples<extra></extra>"
            ),
            pathbar={"visible": True, "side": "top"},
        )
    )
    figure.update_layout(
        margin={"t": 30, "l": 0, "r": 0, "b": 0},
        height=height,
        font={"family": "ui-monospace, SFMono-Regular, Menlo, monospace", "size": 12},
    )
    return figure


def hottest_frames(tree: CallTreeNode, limit: int = 15) -> list[dict[str, object]]:
    """Functions by self time summed over the tree (where the time is actually spent)."""
    totals: dict[tuple[str, str, int], list[float]] = {}
    for node, _depth in iter_nodes(tree):
        entry = totals.setdefault((node.function, node.file, node.line), [0.0, 0.0, 0])
        entry[0] += node.self_time
        entry[1] += node.total_time
        entry[2] += 1
    root_total = max(tree.total_time, 1e-9)
    ranked = sorted(totals.items(), key=lambda kv: kv[1][0], reverse=True)[:limit]
    return [
        {
            "function": function,
            "location": short_location(file, line),
            "self_ms": round(self_t * 1000, 2),
            "self_share": self_t / root_total,
            "calls_in_tree": int(count),
        }
        for (function, file, line), (self_t, _total, count) in ranked
        if self_t > 0
    ]
