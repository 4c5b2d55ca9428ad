"""Analyses: queue work for the analysis workers, watch it, read what they found."""

from __future__ import annotations

import streamlit as st

from storage_backend import queries as q
from ui import context, data
from ui.components.analysis_report import job_status, render_analysis
from ui.components.feedback import empty_state
from ui.components.tables import analysis_row

ctx, project = context.page_with_project("Analyses")

stats = data.queue_stats(ctx.location)
by_state = stats.get("by_state", {})
c = st.columns(5)
c[0].metric("Waiting", by_state.get("pending", 0))
c[1].metric("Running", by_state.get("running", 0))
c[2].metric("Done", by_state.get("completed", 0))
c[3].metric("Failed", by_state.get("failed", 0))
age = stats.get("oldest_pending_age_seconds")
c[4].metric(
    "Oldest waiting",
    f"{age:,.0f} s" if age is not None else "—",
    help="If this grows, no worker is running: `pystrument analyzer`",
)

jobs = st.session_state.setdefault("pystrument_batch_jobs", [])
with st.container(border=True):
    st.markdown("##### Analyze the slowest requests")
    summary = data.endpoint_summary(ctx.location, project.id, ctx.time_range)
    if not summary.endpoints:
        empty_state(project)
        st.stop()
    left, mid, right = st.columns([3, 1, 1])
    choices = ["all endpoints"] + [e.endpoint for e in summary.endpoints]
    endpoint = left.selectbox("Endpoint", choices, key="batch_endpoint")
    count = mid.number_input("How many", min_value=1, max_value=50, value=5, key="batch_count")
    right.write("")
    if right.button("Analyze", type="primary", key="batch_go", width="stretch"):
        page = data.list_requests(
            ctx.location,
            project.id,
            q.RequestFilter(endpoint=None if endpoint == choices[0] else endpoint),
            sort="-duration",
            size=int(count),
        )
        ids = [r.id for r in page.items]
        if ids:
            jobs.insert(0, data.enqueue_batch(ctx.location, project.id, ids))
            st.toast(f"Queued the analysis of {len(ids)} requests")
        else:
            st.warning("No request to analyse for that endpoint.")
    st.caption("One request at a time: open it (Requests page) and use its Analysis tab.")

for job_id in jobs[:3]:
    with st.container(border=True):
        job_status(ctx.location, job_id)

st.subheader("Results")
history = data.analysis_history(ctx.location, project.id, 50)
if not history:
    st.caption("No analyses yet for this project.")
    st.stop()
rows = [analysis_row(a) for a in history]
selection = st.dataframe(
    rows,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    column_config={
        "score": st.column_config.ProgressColumn(min_value=0, max_value=100, format="%d")
    },
    key="analyses_table",
)
picked = selection.selection.rows[0] if selection and selection.selection.rows else 0
with st.container(border=True):
    render_analysis(history[picked])
    record_id = history[picked].get("record_id")
    if record_id:
        st.page_link(
            "views/request.py", label="Open the request →", query_params={"record": record_id}
        )
