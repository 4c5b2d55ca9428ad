"""Overview: is the service healthy, and where does the time go?"""

from __future__ import annotations

import streamlit as st

from storage_backend import queries as q
from ui import context, data
from ui.components.charts import format_ms, trends_figure
from ui.components.feedback import empty_state
from ui.components.tables import (
    analyses_table,
    requests_table,
)

ctx = context.current()
project = ctx.project
st.title(f"{project.name} · overview" if project else "pystrument")
if project is None:
    empty_state(None)
    st.stop()

trends = data.trends(ctx.location, project.id, ctx.time_range)
overall = trends.overall
if overall.count == 0:
    empty_state(project)
    st.stop()

cols = st.columns(5)
cols[0].metric("Requests", f"{overall.count:,}")
cols[1].metric("Error rate", f"{overall.error_rate:.1%}")
cols[2].metric("p50", format_ms(overall.p50))
cols[3].metric("p95", format_ms(overall.p95))
cols[4].metric("p99", format_ms(overall.p99))

st.plotly_chart(trends_figure(trends), width="stretch", key="overview_trends")

left, right = st.columns([1, 1])
with left:
    st.subheader("Slowest endpoints")
    summary = data.endpoint_summary(ctx.location, project.id, ctx.time_range)
    slowest = sorted(summary.endpoints, key=lambda e: e.stats.p95 or 0, reverse=True)[:8]
    st.dataframe(
        [
            {
                "endpoint": e.endpoint,
                "p95 (ms)": round((e.stats.p95 or 0) * 1000, 1),
                "requests": e.stats.count,
                "errors": e.stats.error_rate,
                "share of time": e.share_of_total_time,
            }
            for e in slowest
        ],
        hide_index=True,
        width="stretch",
        column_config={
            "errors": st.column_config.NumberColumn(format="percent"),
            "share of time": st.column_config.ProgressColumn(
                min_value=0, max_value=1, format="percent"
            ),
        },
        key="overview_slowest_endpoints",
    )
    st.page_link("views/endpoints.py", label="All endpoints →")
with right:
    st.subheader("Slowest requests")
    st.caption(f"The slowest of the time range (its p95 is {format_ms(overall.p95)})")
    page = data.list_requests(
        ctx.location, project.id, q.RequestFilter(since=trends.since), sort="-duration", size=8
    )
    requests_table(page.items, key="overview_slow_requests")
    st.page_link("views/requests.py", label="All requests →")

st.subheader("Latest analyses")
analyses_table(ctx.location, project.id, limit=5, key="overview_analyses")
