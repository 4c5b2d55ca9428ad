"""One request: its trace as a waterfall, its metrics, and its call tree (flame graph, text
tree, downloads), with an Analyze button."""

from __future__ import annotations

import streamlit as st

from storage_backend import queries as q
from ui import context, data
from ui.components.analysis_report import job_status, render_analysis
from ui.components.charts import format_ms
from ui.components.flamegraph import hottest_frames, icicle_figure
from ui.components.profile_export import profile_html, speedscope_json
from ui.components.span_metrics import time_by_category
from ui.components.tables import (
    HOT_FRAME_COLUMNS,
    requests_table,
)
from ui.components.text_tree import TREE_CSS, collapsible_html, console_text
from ui.components.waterfall import waterfall_figure

METRIC_LABELS = {
    "total_duration": "Duration",
    "cpu_time": "CPU",
}

ctx = context.current()
record_id = st.query_params.get("record")
trace_id = st.query_params.get("trace")
if trace_id and not record_id:
    # A deep link from a trace viewer (Jaeger, Tempo, Grafana): `?trace=<trace id>`. The
    # sidebar's project first, then every project.
    ids = [ctx.project.id] if ctx.project else []
    ids += [p.id for p in ctx.projects if p.id not in ids]
    try:
        found = data.requests_of_trace(ctx.location, tuple(ids[:1]), trace_id)
        if not found and len(ids) > 1:
            found = data.requests_of_trace(ctx.location, tuple(ids[1:]), trace_id)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    if not found:
        st.warning(
            f"No profiled request of trace `{trace_id}`: it was not sampled by the span "
            "processor, or it expired (retention), or it belongs to a project you cannot see."
        )
        st.stop()
    if len(found) > 1:
        st.title("Requests of a trace")
        st.caption(f"Trace `{trace_id}` entered {len(found)} profiled services: pick one.")
        requests_table(found, key="trace_pick")
        st.stop()
    record_id = found[0].id
if not record_id:
    ctx, project = context.page_with_project("Request detail")
    overall = data.trends(ctx.location, project.id, ctx.time_range)
    st.caption(
        "Pick a request (or select one on the Requests page): the slowest of the time "
        "range are below."
    )
    slow = data.list_requests(
        ctx.location, project.id, q.RequestFilter(since=overall.since), sort="-duration", size=15
    )
    requests_table(slow.items, key="detail_pick")
    st.stop()

detail = data.request_detail(ctx.location, record_id)
if detail is None:
    st.error(f"No request {record_id!r}: it may have expired (retention) or the link is wrong.")
    st.stop()
s = detail.summary
status_badge = f":{'red' if s.is_error else 'green'}-badge[{s.status_code or '—'}]"
st.title(s.endpoint)
st.caption(
    f"{status_badge} {s.method or ''} `{s.path or ''}` · "
    f"{s.timestamp:%Y-%m-%d %H:%M:%S} UTC · version `{s.version or '—'}` · "
    f"service `{s.service_name or '—'}` · trace `{s.trace_id}`"
)

spans = [
    {
        "span_id": v.span_id,
        "parent_span_id": v.parent_span_id,
        "name": v.name,
        "kind": v.kind,
        "start_ns": int(v.start_time.timestamp() * 1e9),
        "end_ns": int(v.start_time.timestamp() * 1e9 + v.duration * 1e9),
        "status_code": v.status_code,
        "attributes": v.attributes,
    }
    for v in detail.spans
]
metrics = detail.record.get("performance_metrics") or {}
# The record's own figures (duration, CPU, whatever else the processor measured), then
# where the trace's time went outside the process, from its client spans.
shown = [
    (METRIC_LABELS.get(k, k.replace("_", " ")), format_ms(float(v)), None)
    for k, v in metrics.items()
    if isinstance(v, (int, float)) and not k.startswith("memory")
]
outside = time_by_category(spans)
for category, label in (("database", "Database"), ("cache", "Cache"), ("external", "HTTP calls")):
    shown.append((label, format_ms(outside.get(category)),
                  f"time in {category} spans of the trace (overlaps counted once)"))  # fmt: skip
# The processor's request metrics are sub-documents: memory_usage {peak_memory, memory_delta}
# in bytes, database_metrics {query_count, query_time, slow_queries}.
database = metrics.get("database_metrics") or {}
if database.get("query_count") is not None:
    shown.append(("SQL queries", f"{database['query_count']:,}",
                  f"{format_ms(database.get('query_time'))} in SQL, "
                  f"{database.get('slow_queries') or 0} slow"))  # fmt: skip
memory = metrics.get("memory_usage") or {}
delta, peak = memory.get("memory_delta"), memory.get("peak_memory")
shown.append(("Memory Δ", f"{delta / 1e6:+,.1f} MB" if delta is not None else "—",
              f"process RSS change during the request; peak RSS {peak / 1e6:,.0f} MB"
              if peak else "Not measured unless the processor records memory"))  # fmt: skip
for col, (label, value, help_text) in zip(st.columns(len(shown)), shown, strict=True):
    col.metric(label, value, help=help_text)

tree = detail.call_tree
tab_flame, tab_text, tab_trace, tab_analysis, tab_raw = st.tabs(
    [
        ":material/local_fire_department: Call tree",
        ":material/account_tree: Text tree",
        ":material/view_timeline: Trace",
        ":material/troubleshoot: Analysis",
        ":material/data_object: Record",
    ]
)
with tab_flame:
    if tree is None:
        reason = detail.profile_error or (
            "this request was not profiled (the processor samples requests by "
            "PYSTRUMENT_SAMPLING_RATE, and profiles SERVER spans only)"
        )
        st.info(f"No call tree: {reason}.")
    else:
        st.caption(
            "Width is time. Click a frame to zoom into it; hover for file:line, total "
            "and self time. Red frames spend the time themselves."
        )
        st.plotly_chart(icicle_figure(tree), width="stretch", key="request_flame")
        left, right = st.columns([3, 1])
        with left:
            st.markdown("##### Hottest functions (self time)")
            st.dataframe(
                hottest_frames(tree, limit=10),
                hide_index=True,
                width="stretch",
                column_config=HOT_FRAME_COLUMNS,
                key="request_hot",
            )
        with right:
            st.markdown("##### Download")
            title = f"{s.endpoint} · {s.timestamp:%Y-%m-%d %H:%M:%S}"
            st.download_button(
                "Profile as HTML",
                profile_html(tree, title=title, subtitle=f"trace {s.trace_id}"),
                file_name=f"profile-{s.id}.html",
                mime="text/html",
                width="stretch",
            )
            st.download_button(
                "speedscope JSON",
                speedscope_json(tree, name=title),
                file_name=f"profile-{s.id}.speedscope.json",
                mime="application/json",
                width="stretch",
                help="Open at https://www.speedscope.app",
            )
with tab_text:
    if tree is None:
        st.info("No call tree for this request.")
    else:
        st.html(f"<style>{TREE_CSS}</style>{collapsible_html(tree)}")
        with st.expander("As plain text (pyinstrument console style)"):
            st.code(console_text(tree, min_share=0.005), language=None)
with tab_trace:
    if not detail.spans:
        st.info("The trace's spans are not stored (they may have expired).")
    else:
        st.plotly_chart(
            waterfall_figure(spans, highlight=s.span_id),
            width="stretch",
            key="request_waterfall",
        )
        st.caption(
            f"{len(spans)} spans · blue server, teal client (database, HTTP), purple "
            "internal, red errors. The outlined bar is this request."
        )
with tab_analysis:
    jobs = st.session_state.setdefault("pystrument_jobs", {})
    if st.button("Analyze this request", type="primary", key="analyze_one"):
        jobs[record_id] = data.enqueue_analysis(ctx.location, s.project_id, record_id)
    if record_id in jobs:
        job_status(ctx.location, jobs[record_id])
    past = [
        a
        for a in data.analysis_history(ctx.location, s.project_id, 50)
        if a.get("record_id") == record_id
    ]
    for doc in past[:3]:
        with st.container(border=True):
            render_analysis(doc)
    if not past and record_id not in jobs:
        st.caption(
            "Not analysed yet. The builtin analyzer finds hot functions, N+1 queries "
            "and blocking I/O in the call tree and spans."
        )
with tab_raw:
    st.json({k: v for k, v in detail.record.items() if k != "profile"}, expanded=1)
