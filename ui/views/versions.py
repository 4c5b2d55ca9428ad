"""Versions: what changed between two `service.version`s, per endpoint and per function."""

from __future__ import annotations

import pandas as pd  # streamlit's own dependency
import plotly.graph_objects as go
import streamlit as st

from ui import context, data
from ui.components.flamegraph import short_location
from ui.components.version_diff import diff_icicle_figure, version_key

REGRESSION = 0.10  # p95 10 % slower: worth a look

ctx, project = context.page_with_project("Versions")

versions = [v for v in data.list_versions(ctx.location, project.id, "30d") if v.version]
if len(versions) < 2:
    st.info(
        "Comparing needs requests from two versions. Set `service.version` on your app's "
        "resource, e.g. `OTEL_RESOURCE_ATTRIBUTES=service.version=1.4.2`, and deploy twice."
        + (f" Seen so far: {', '.join(v.version for v in versions)}." if versions else "")
    )
    st.stop()

# Newest last-seen first: by default compare the previous release with the latest.
ordered = sorted(versions, key=lambda v: (v.last_seen, version_key(v.version)), reverse=True)
labels = {v.version: f"{v.version}  ({v.count:,} requests)" for v in ordered}
c1, c2 = st.columns(2)
base = c1.selectbox("Base version", list(labels), index=1, format_func=labels.get, key="ver_base")
target = c2.selectbox(
    "Compared version", list(labels), index=0, format_func=labels.get, key="ver_target"
)
if base == target:
    st.warning("Pick two different versions.")
    st.stop()

with st.spinner(f"Comparing {base} with {target}: latencies and call trees…"):
    comparison = data.compare_versions(ctx.location, project.id, base, target, "30d")
rows = []
for e in comparison.endpoints:
    rows.append(
        {
            "endpoint": e.endpoint,
            f"p95 {base} (ms)": round(e.base.p95 * 1000, 1) if e.base and e.base.p95 else None,
            f"p95 {target} (ms)": round(e.target.p95 * 1000, 1)
            if e.target and e.target.p95
            else None,
            "Δ p95 (ms)": round(e.p95_delta * 1000, 1) if e.p95_delta is not None else None,
            "change": e.p95_change,
            "requests": (e.base.count if e.base else 0, e.target.count if e.target else 0),
        }
    )
regressions = [r for r in rows if (r["change"] or 0) >= REGRESSION]
faster = [r for r in rows if (r["change"] or 0) <= -REGRESSION]
m1, m2, m3 = st.columns(3)
m1.metric("Endpoints compared", len(rows))
m2.metric(
    "Slower by ≥10 %", len(regressions), delta=len(regressions) or None, delta_color="inverse"
)
m3.metric("Faster by ≥10 %", len(faster))


def _highlight(row):  # red for regressions, green for improvements
    change = row["change"] or 0
    color = "#fee2e2" if change >= REGRESSION else "#dcfce7" if change <= -REGRESSION else ""
    return [f"background-color: {color}" if color else "" for _ in row]


frame = pd.DataFrame(
    [{**r, "requests": f"{r['requests'][0]:,} → {r['requests'][1]:,}"} for r in rows]
)
st.subheader("Per endpoint")
if frame.empty:
    st.info("No endpoint has requests under both versions.")
else:
    st.dataframe(
        frame.style.apply(_highlight, axis=1),
        hide_index=True,
        width="stretch",
        column_config={"change": st.column_config.NumberColumn(format="percent")},
        key="ver_endpoints",
    )

st.subheader("Functions whose time changed")
st.caption(
    f"Mean self time per profiled request ({comparison.base_profiles} profiles of "
    f"{base}, {comparison.target_profiles} of {target})."
)
functions = comparison.functions[:20]
if not functions:
    st.info("No profiled requests under both versions to compare call trees.")
else:
    figure = go.Figure(
        go.Bar(
            y=[f"{f.function}  {short_location(f.file, f.line)}" for f in functions],
            x=[f.delta * 1000 for f in functions],
            orientation="h",
            marker_color=["#dc2626" if f.delta > 0 else "#16a34a" for f in functions],
            hovertemplate="%{y}<br>%{x:+.2f} ms per request<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed", tickfont={"family": "monospace"})
    figure.update_xaxes(title=f"self time change per request, ms ({target} minus {base})")
    figure.update_layout(
        height=max(200, 26 * len(functions) + 60), margin={"t": 10, "l": 10, "r": 10, "b": 40}
    )
    st.plotly_chart(figure, width="stretch", key="ver_functions")

st.subheader("Differential flame graph")
endpoints = [e.endpoint for e in comparison.endpoints if e.base and e.target]
if not endpoints:
    st.caption("Needs an endpoint with requests under both versions.")
    st.stop()
endpoint = st.selectbox("Endpoint", endpoints, key="ver_diff_endpoint")
with st.spinner("Merging the call trees of both versions…"):
    base_tree = data.aggregated_call_tree(ctx.location, project.id, endpoint, base)
    target_tree = data.aggregated_call_tree(ctx.location, project.id, endpoint, target)
if base_tree.root is None or target_tree.root is None:
    st.info("This endpoint has no profiled requests under one of the versions.")
else:
    st.caption(
        f"Shape: {target}'s call tree (mean per request). Colour: change against {base} "
        "— red got slower, green got faster, grey unchanged."
    )
    st.plotly_chart(
        diff_icicle_figure(base_tree, target_tree), width="stretch", key="ver_diff_flame"
    )
