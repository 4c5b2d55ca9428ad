"""An analysis (the brief's `ai_analysis_results`) rendered for people, and a live job view."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui import data
from ui.settings import StoreLocation

SEVERITY = {"critical": "red", "high": "orange", "medium": "violet", "low": "gray"}
PRIORITY = {
    "high": ":red-badge[high]",
    "medium": ":orange-badge[medium]",
    "low": ":gray-badge[low]",
}
STATE_BADGE = {
    "pending": ":orange-badge[:material/hourglass_top: waiting for a worker]",
    "running": ":blue-badge[:material/autorenew: running]",
    "completed": ":green-badge[:material/check: done]",
    "failed": ":red-badge[:material/error: failed]",
}


def render_analysis(doc: dict[str, Any]) -> None:
    """Score, bottlenecks, suggestions (with their code), risks; or why it failed."""
    service = doc.get("ai_service") or {}
    when = doc.get("created_at")
    st.caption(
        f"{doc.get('endpoint') or ''} · analyzer **{service.get('name', '?')}**"
        + (f" ({service.get('model')})" if service.get("model") else "")
        + (f" · {when:%Y-%m-%d %H:%M:%S}" if when else "")
    )
    if doc.get("status") == "failed":
        error = doc.get("error") or {}
        st.error(f"The analysis failed: {error.get('message', 'no reason given')}")
        return
    results = doc.get("analysis_results") or {}
    score = results.get("performance_score")
    meta = doc.get("analysis_metadata") or {}
    cols = st.columns(3)
    cols[0].metric("Performance score", f"{score:.0f}/100" if score is not None else "—")
    cols[1].metric("Bottlenecks", len(results.get("bottleneck_analysis") or []))
    if meta.get("tokens_used"):
        cols[2].metric("Tokens", f"{meta['tokens_used']:,}")
    elif meta.get("duration") is not None:
        cols[2].metric("Took", f"{meta['duration'] * 1000:.0f} ms")

    bottlenecks = sorted(
        results.get("bottleneck_analysis") or [], key=lambda b: b.get("impact", 0), reverse=True
    )
    if bottlenecks:
        st.markdown("##### Bottlenecks")
        for b in bottlenecks:
            st.markdown(
                f":{SEVERITY.get(b.get('severity'), 'gray')}-badge[{b.get('severity', '?')}] "
                f"**{b.get('function', '?')}** · "
                f"{b.get('type', '')} · {b.get('impact', 0):.0%} of the time  \n"
                f"{b.get('description', '')}"
            )
    suggestions = results.get("optimization_suggestions") or []
    if suggestions:
        st.markdown("##### Suggestions")
        for s in suggestions:
            title = f"{PRIORITY.get(s.get('priority'), '')} {s.get('title', 'Suggestion')}"
            with st.expander(title, expanded=s.get("priority") == "high"):
                st.markdown(s.get("description", ""))
                if s.get("expected_improvement"):
                    st.caption(f"Expected: {s['expected_improvement']}")
                if s.get("code_example"):
                    st.code(s["code_example"], language="python")
    risks = results.get("risk_assessment") or {}
    lines = [
        ("Risks", risks.get("current_risks")),
        ("Could go wrong", risks.get("potential_issues")),
        ("Recommended", risks.get("recommendations")),
    ]
    if any(items for _, items in lines):
        st.markdown("##### Risk assessment")
        for label, items in lines:
            for item in items or []:
                st.markdown(f"- **{label}:** {item}")


def job_status(location: StoreLocation, job_id: str) -> None:
    """A job's state, refreshed every 2 s until it finishes, then its analyses."""

    @st.fragment(run_every=2)
    def live() -> None:
        job = data.job(location, job_id)
        if job is None:
            st.warning(f"Job {job_id} is gone (finished jobs are cleaned up after a while).")
            return
        state = job.get("state", "?")
        attempts = f" · attempt {job.get('attempts', 0)}/{job.get('max_attempts', '?')}"
        st.markdown(
            f"Job `{job_id}` ({job.get('type')}): {STATE_BADGE.get(state, state)}"
            + (attempts if job.get("attempts") else "")
        )
        if state == "pending":
            st.caption(
                "No worker has claimed it yet: `pystrument up` runs one, or start "
                "`pystrument analyzer`."
            )
        if state == "failed":
            st.error(job.get("error") or "failed without a reason")
        if state == "completed":
            for doc in data.analyses_for_job(location, job_id):
                render_analysis(doc)

    live()
