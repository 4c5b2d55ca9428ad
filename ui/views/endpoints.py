"""Endpoints: one row per route; pick one for its trend and its requests' merged call tree."""

from __future__ import annotations

import streamlit as st

from ui import context, data
from ui.components.charts import format_ms, trends_figure
from ui.components.feedback import empty_state
from ui.components.flamegraph import hottest_frames, icicle_figure
from ui.components.tables import HOT_FRAME_COLUMNS

ctx, project = context.page_with_project("Endpoints")

summary = data.endpoint_summary(ctx.location, project.id, ctx.time_range)
if not summary.endpoints:
    empty_state(project)
    st.stop()

# Every endpoint's sparkline comes from one rollup read, so all rows get one.
names = tuple(e.endpoint for e in summary.endpoints)
sparks = data.endpoint_sparklines(ctx.location, project.id, ctx.time_range, names)
search = st.text_input("Filter", placeholder="route contains…", key="endpoint_filter")
shown = [e for e in summary.endpoints if search.lower() in e.endpoint.lower()]
selection = st.dataframe(
    [
        {
            "endpoint": e.endpoint,
            "requests": e.stats.count,
            "error rate": e.stats.error_rate,
            "p50 (ms)": round((e.stats.p50 or 0) * 1000, 1),
            "p95 (ms)": round((e.stats.p95 or 0) * 1000, 1),
            "p99 (ms)": round((e.stats.p99 or 0) * 1000, 1),
            "share of time": e.share_of_total_time,
            "traffic": sparks.get(e.endpoint, []),
        }
        for e in shown
    ],
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    column_config={
        "error rate": st.column_config.NumberColumn(format="percent"),
        "share of time": st.column_config.ProgressColumn(
            min_value=0, max_value=1, format="percent"
        ),
        "traffic": st.column_config.AreaChartColumn(y_min=0),
    },
    key="endpoints_table",
)
st.caption(
    "Share of time: the endpoint's summed duration over all endpoints' — where "
    "shaving milliseconds pays most. Select a row to see inside it."
)

rows = selection.selection.rows if selection is not None else []
options = [e.endpoint for e in shown]
if not options:
    st.stop()
# Nothing is opened until someone picks an endpoint: its trend and merged call tree are
# the page's costliest reads, and a cold page must not pay for one nobody looks at.
default = options.index(options[rows[0]]) if rows and rows[0] < len(options) else None
endpoint = st.selectbox(
    "Endpoint",
    options,
    index=default,
    placeholder="Select a row or pick an endpoint to open it",
    key="endpoint_pick",
)
if endpoint is None:
    st.stop()
stats = next(e.stats for e in shown if e.endpoint == endpoint)

st.header(endpoint)
cols = st.columns(4)
cols[0].metric("Requests", f"{stats.count:,}")
cols[1].metric("Error rate", f"{stats.error_rate:.1%}")
cols[2].metric("p95", format_ms(stats.p95))
cols[3].metric("p99", format_ms(stats.p99))
trend = data.trends(ctx.location, project.id, ctx.time_range, endpoint)
st.plotly_chart(trends_figure(trend, height=320), width="stretch", key="endpoint_trend")

with st.spinner(f"Merging the call trees of {endpoint}…"):
    merged = data.aggregated_call_tree(ctx.location, project.id, endpoint)
st.subheader("Where its time goes")
if merged.root is None:
    st.info(
        "No profiled request of this endpoint yet: the processor profiles requests "
        "chosen by its sampling rate (PYSTRUMENT_SAMPLING_RATE)."
    )
    st.stop()
st.caption(
    f"{merged.profiles} recent profiled requests merged by call path: width is the "
    "time summed over them. Click a frame to zoom in, the bar on top to zoom out."
)
st.plotly_chart(
    icicle_figure(merged.root, scope="these requests"),
    width="stretch",
    key="endpoint_flame",
)
st.subheader("Hottest functions")
st.dataframe(
    hottest_frames(merged.root),
    hide_index=True,
    width="stretch",
    column_config=HOT_FRAME_COLUMNS,
    key="endpoint_hot",
)
