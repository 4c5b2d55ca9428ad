"""A trace's spans as a waterfall: one bar per span, indented under its parent, placed on
the trace's time axis. Input is the stored span shape (span_id, parent_span_id, name, kind,
start_ns, end_ns, status_code); spans whose parent is not in the trace hang off the top."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

KIND_COLORS = {
    "server": "#2563eb",
    "client": "#0d9488",
    "internal": "#7c3aed",
    "producer": "#ca8a04",
    "consumer": "#ca8a04",
}
ERROR_COLOR = "#dc2626"


def waterfall_rows(spans: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Spans in tree order (parent, then its children by start time) with their depth and
    their start/duration in milliseconds from the trace's first span."""
    if not spans:
        return []
    t0 = min(int(s["start_ns"]) for s in spans)
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in ids else None, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: int(s["start_ns"]))
    rows: list[dict[str, Any]] = []
    stack = [(s, 0) for s in reversed(children.get(None, []))]
    seen: set[str] = set()
    while stack:
        span, depth = stack.pop()
        if span["span_id"] in seen:  # a malformed trace with a cycle must not loop forever
            continue
        seen.add(span["span_id"])
        start, end = int(span["start_ns"]), int(span["end_ns"])
        rows.append(
            {
                "span_id": span["span_id"],
                "name": span.get("name", "?"),
                "kind": span.get("kind", "internal"),
                "depth": depth,
                "start_ms": (start - t0) / 1e6,
                "duration_ms": max(end - start, 0) / 1e6,
                "error": span.get("status_code") == "error",
            }
        )
        stack.extend((c, depth + 1) for c in reversed(children.get(span["span_id"], [])))
    return rows


def waterfall_figure(
    spans: Sequence[Mapping[str, Any]], *, highlight: str | None = None
) -> go.Figure:
    """The waterfall as a horizontal bar chart; `highlight` (a span id) is outlined."""
    rows = waterfall_rows(spans)
    labels = [f"{'  ' * r['depth']}{r['name']}" for r in rows]
    # Unique y keys: two spans may share a name.
    keys = [f"{i:03d} {label}" for i, label in enumerate(labels)]
    colors = [ERROR_COLOR if r["error"] else KIND_COLORS.get(r["kind"], "#64748b") for r in rows]
    figure = go.Figure(
        go.Bar(
            y=keys,
            x=[max(r["duration_ms"], 0.05) for r in rows],
            base=[r["start_ms"] for r in rows],
            orientation="h",
            marker={
                "color": colors,
                "line": {
                    "width": [2 if r["span_id"] == highlight else 0 for r in rows],
                    "color": "#0f172a",
                },
            },
            text=[f"{r['duration_ms']:.1f} ms" for r in rows],
            textposition="outside",
            customdata=[[r["name"], r["kind"], r["start_ms"]] for r in rows],
            hovertemplate=(
                "<b>%{customdata[0]}</b> (%{customdata[1]})<br>"
                "starts at %{customdata[2]:.1f} ms · lasts %{x:.2f} ms<extra></extra>"
            ),
        )
    )
    figure.update_yaxes(
        autorange="reversed", tickvals=keys, ticktext=labels, tickfont={"family": "monospace"}
    )
    figure.update_xaxes(title="ms since the trace started", zeroline=True)
    figure.update_layout(
        height=max(160, 28 * len(rows) + 70),
        margin={"t": 10, "l": 10, "r": 40, "b": 40},
        showlegend=False,
        bargap=0.25,
    )
    return figure
