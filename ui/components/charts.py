"""Time-series charts of the dashboards (plotly): latency percentiles, throughput and errors."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from storage_backend.queries import Trends

P_COLORS = {"p50": "#2563eb", "p95": "#f97316", "p99": "#dc2626"}


def format_ms(seconds: float | None) -> str:
    """A duration for people: '850 ms', '1.24 s', '—' when unknown."""
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.1f} ms"


def trends_figure(trends: Trends, *, height: int = 420) -> go.Figure:
    """Latency percentiles (ms) above, throughput and errors per bucket below, sharing the
    time axis so a spike in one lines up with the other."""
    xs = [p.bucket_start for p in trends.points]
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.62, 0.38],
        subplot_titles=("Latency", f"Requests per {_bucket_name(trends.bucket_seconds)}"),
    )
    for name in ("p50", "p95", "p99"):
        ys = [_ms(getattr(p.stats, name)) for p in trends.points]
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                name=name,
                mode="lines+markers",
                line={"color": P_COLORS[name], "width": 2, "shape": "spline", "smoothing": 0.5},
                marker={"size": 4},
                connectgaps=False,
                hovertemplate=f"{name} %{{y:.1f}} ms<extra></extra>",
            ),
            row=1,
            col=1,
        )
    ok = [p.stats.count - p.stats.errors for p in trends.points]
    errors = [p.stats.errors for p in trends.points]
    figure.add_trace(
        go.Bar(
            x=xs, y=ok, name="ok", marker_color="#93c5fd", hovertemplate="%{y} ok<extra></extra>"
        ),
        row=2,
        col=1,
    )
    figure.add_trace(
        go.Bar(
            x=xs,
            y=errors,
            name="errors",
            marker_color="#dc2626",
            hovertemplate="%{y} errors<extra></extra>",
        ),
        row=2,
        col=1,
    )
    figure.update_layout(
        barmode="stack",
        height=height,
        margin={"t": 30, "l": 10, "r": 10, "b": 30},
        legend={"orientation": "h", "y": -0.12, "x": 0, "xanchor": "left"},
        hovermode="x unified",
    )
    figure.update_yaxes(title_text="ms", row=1, col=1, rangemode="tozero")
    figure.update_yaxes(rangemode="tozero", row=2, col=1)
    return figure


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _bucket_name(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds // 60} min" if seconds != 60 else "minute"
    if seconds < 86400:
        return "hour" if seconds == 3600 else f"{seconds // 3600} h"
    return "day"
