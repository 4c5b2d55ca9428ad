"""Requests: every stored request, filtered, or the requests of one trace id; select one to
open it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import streamlit as st

from storage_backend import queries as q
from ui import context, data
from ui.components.feedback import empty_state
from ui.components.tables import requests_table

ANY = "any"
STATUS_CLASSES = [ANY, "2xx", "3xx", "4xx", "5xx"]
SORTS = {
    "-timestamp": "newest first",
    "-duration": "slowest first",
    "duration": "fastest first",
    "timestamp": "oldest first",
}
PAGE_SIZE = 50


def _range_start(until: datetime, span: timedelta) -> datetime:
    """Whole minutes, so reruns within a minute share the cached page; whole hours past two
    days, where the rollups keep no minutes, so the total stays exact (summed from them)."""
    start = (until - span).replace(second=0, microsecond=0)
    return start.replace(minute=0) if span > timedelta(days=2) else start


ctx, project = context.page_with_project("Requests")

summary = data.endpoint_summary(ctx.location, project.id, ctx.time_range)
versions = data.list_versions(ctx.location, project.id, "30d")

trace_id = st.text_input(
    "Find by trace id",
    placeholder="32 hex digits, or a traceparent header value",
    key="req_trace",
).strip()
if trace_id:
    try:
        traced = data.requests_of_trace(ctx.location, (project.id,), trace_id)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    if not traced:
        st.info(
            "No profiled request of this trace in this project (not sampled, expired, or "
            "another project's: pick it in the sidebar)."
        )
    else:
        st.caption(f"{len(traced)} request(s) of trace `{trace_id}` · select a row to open it")
        requests_table(traced, key="trace_table")
    st.stop()

with st.container(border=True):
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    endpoint = c1.selectbox(
        "Route", [ANY] + [e.endpoint for e in summary.endpoints], key="req_endpoint"
    )
    status = c2.selectbox("Status", STATUS_CLASSES, key="req_status")
    version = c3.selectbox(
        "Version", [ANY] + [v.version for v in versions if v.version], key="req_version"
    )
    sort = c4.selectbox("Order", list(SORTS), format_func=SORTS.get, key="req_sort")
    d1, d2, d3 = st.columns([1, 1, 2])
    min_ms = d1.number_input("Slower than (ms)", min_value=0.0, value=0.0, step=50.0, key="req_min")
    max_ms = d2.number_input(
        "Faster than (ms, 0 = any)", min_value=0.0, value=0.0, step=50.0, key="req_max"
    )
    errors_only = d3.toggle("Errors only", key="req_errors")


# A different filter starts again at the first page.
signature = (endpoint, status, version, sort, min_ms, max_ms, errors_only, ctx.time_range)
if st.session_state.get("req_signature") != signature:
    st.session_state["req_signature"] = signature
    st.session_state["req_page"] = 1
page_number = st.session_state.get("req_page", 1)
until = datetime.now(timezone.utc)
flt = q.RequestFilter(
    endpoint=None if endpoint == ANY else endpoint,
    status_class=None if status == ANY else status,
    min_duration=min_ms / 1000 if min_ms else None,
    max_duration=max_ms / 1000 if max_ms else None,
    version=None if version == ANY else version,
    since=_range_start(until, q.TIME_RANGES[ctx.time_range]),
    errors_only=errors_only,
)
result = data.list_requests(
    ctx.location, project.id, flt, sort=sort, page=page_number, size=PAGE_SIZE
)
if not result.items and page_number == 1:
    if not summary.endpoints:
        empty_state(project)
    else:
        st.info("No request matches these filters in this time range.")
    st.stop()

total = f"{result.total:,}{'+' if result.total_is_lower_bound else ''}"
st.caption(f"{total} requests match · page {result.page} · select a row to open it")
requests_table(result.items, key="requests_table")

prev_col, _, next_col = st.columns([1, 6, 1])
if prev_col.button("← Newer", disabled=page_number <= 1, key="req_prev"):
    st.session_state["req_page"] = page_number - 1
    st.rerun()
if next_col.button("Older →", disabled=len(result.items) < PAGE_SIZE, key="req_next"):
    st.session_state["req_page"] = page_number + 1
    st.rerun()
