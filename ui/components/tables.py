"""Tables the pages share: requests rows (click one to open it) and analyses rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from storage_backend.queries import RequestSummary
from ui import data
from ui.settings import StoreLocation

REQUEST_PAGE = "views/request.py"
REQUEST_COLUMNS = {
    "id": None,
    "time": st.column_config.DatetimeColumn(format="MMM D, HH:mm:ss"),
    "duration (ms)": st.column_config.NumberColumn(format="%.1f"),
    "cpu (ms)": st.column_config.NumberColumn(format="%.1f"),
    "profiled": st.column_config.CheckboxColumn(help="has a call tree"),
}
"""Column settings of every requests table (the id is kept for selection, not shown)."""
HOT_FRAME_COLUMNS = {
    "self_ms": st.column_config.NumberColumn("self (ms)", format="%.1f"),
    "self_share": st.column_config.ProgressColumn(
        "share of time", min_value=0, max_value=1, format="percent"
    ),
    "calls_in_tree": st.column_config.NumberColumn("frames", help="places in the call tree"),
}
"""Column settings of the "hottest functions" tables (`flamegraph.hottest_frames` rows)."""


def requests_frame(items: Sequence[RequestSummary]) -> list[dict[str, Any]]:
    """Rows for st.dataframe: when, what, how long, how it ended."""
    return [
        {
            "id": r.id,
            "time": r.timestamp,
            "endpoint": r.endpoint,
            "status": r.status_code,
            "duration (ms)": round(r.duration * 1000, 1),
            "cpu (ms)": round(r.cpu_time * 1000, 1) if r.cpu_time is not None else None,
            "version": r.version or "",
            "profiled": r.has_profile,
        }
        for r in items
    ]


def requests_table(items: Sequence[RequestSummary], *, key: str) -> None:
    """A requests table; selecting a row opens that request's page."""
    selection = st.dataframe(
        requests_frame(items),
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        column_config=REQUEST_COLUMNS,
        key=key,
    )
    open_request_on_select(selection, items)


def open_request_on_select(selection: Any, items: Sequence[RequestSummary]) -> None:
    """When a row of a requests table is selected, open that request's page."""
    rows = getattr(getattr(selection, "selection", None), "rows", None) or []
    if rows and rows[0] < len(items):
        item = items[rows[0]]
        st.switch_page(REQUEST_PAGE, query_params={"record": item.id, "project": item.project_id})


def analyses_table(location: StoreLocation, project_id: str, *, limit: int, key: str) -> None:
    """The project's latest analyses (score, what they found), or how to get one."""
    history = data.analysis_history(location, project_id, limit)
    if not history:
        st.caption(
            "No analyses yet. Open a slow request and press **Analyze**, or turn on "
            "auto-analysis for the project on the Projects page."
        )
        return
    st.dataframe(
        [analysis_row(a) for a in history],
        hide_index=True,
        width="stretch",
        column_config={
            "score": st.column_config.ProgressColumn(min_value=0, max_value=100, format="%d"),
        },
        key=key,
    )


def analysis_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One stored analysis (the brief's `ai_analysis_results`) as a table row."""
    results = doc.get("analysis_results") or {}
    bottlenecks = results.get("bottleneck_analysis") or []
    top = max(bottlenecks, key=lambda b: b.get("impact", 0), default=None)
    return {
        "when": doc.get("created_at"),
        "endpoint": doc.get("endpoint") or "",
        "status": doc.get("status", ""),
        "score": results.get("performance_score"),
        "top bottleneck": f"{top['function']} ({top.get('impact', 0):.0%})" if top else "",
        "suggestions": len(results.get("optimization_suggestions") or []),
        "analyzer": (doc.get("ai_service") or {}).get("name", ""),
    }
