"""Shared state of the multipage app: the admin-token gate, the sidebar's project picker,
time range and auto-refresh, and the `Context` every page reads."""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass

import streamlit as st

from storage_backend import Project, StoreError
from ui import data
from ui.components.feedback import show_failure
from ui.settings import StoreLocation, admin_token, is_loopback, store_location

logger = logging.getLogger(__name__)

TIME_RANGES = {
    "1h": "Last hour",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
}
REFRESH_CHOICES = {0: "Off", 10: "10 s", 30: "30 s", 60: "1 min", 300: "5 min"}
_CONTEXT = "pystrument_context"


@dataclass(frozen=True, slots=True)
class Context:
    """What the sidebar chose: the store, the project (None when there is none yet), the
    time range of the dashboards."""

    location: StoreLocation
    projects: tuple[Project, ...]
    project: Project | None
    time_range: str


def ui_address() -> str | None:
    """The address the UI is bound to (PYSTRUMENT_UI_ADDRESS, set by `pystrument ui`;
    else Streamlit's server.address, where unset means every interface)."""
    return os.environ.get("PYSTRUMENT_UI_ADDRESS") or st.get_option("server.address")


def admin_gate() -> bool:
    """On loopback, everyone who can connect is on this machine: no gate. Elsewhere the UI
    asks for PYSTRUMENT_ADMIN_TOKEN once per session; without a configured token it refuses
    to show anything rather than expose every project's data."""
    if is_loopback(ui_address()):
        return True
    if st.session_state.get("pystrument_admin_ok"):
        return True
    expected = admin_token()
    st.title("pystrument")
    if not expected:
        st.error(
            "This UI is reachable from other machines, so it needs an admin token. "
            "Set `PYSTRUMENT_ADMIN_TOKEN` for `pystrument ui`, or bind it to 127.0.0.1 "
            "(the default)."
        )
        return False
    with st.form("admin_login"):
        token = st.text_input("Admin token", type="password", help="PYSTRUMENT_ADMIN_TOKEN")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if hmac.compare_digest(token.encode(), expected.encode()):
            st.session_state["pystrument_admin_ok"] = True
            st.rerun()
        st.error("That token is not right.")
    return False


def sidebar() -> Context | None:
    """Draw the shared controls and remember the choice for the pages. Returns None (after
    showing why) when the store cannot be reached."""
    location = store_location()
    try:
        projects = tuple(data.list_projects(location))
    except StoreError as exc:
        st.error(
            f"Cannot reach the store ({exc}). Is `pystrument up` running, or "
            "PYSTRUMENT_MONGODB_URL set for the UI?"
        )
        return None
    except Exception as exc:  # e.g. the embedded server cannot start: a message, not a trace
        show_failure(exc)
        return None
    with st.sidebar:
        project = None
        if projects:
            ids = [p.id for p in projects]
            names = {p.id: p.name for p in projects}
            wanted = st.query_params.get("project") or st.session_state.get("project_id")
            index = ids.index(wanted) if wanted in ids else 0
            chosen = st.selectbox(
                "Project", ids, index=index, format_func=lambda i: names[i], key="project_pick"
            )
            st.session_state["project_id"] = chosen
            project = next(p for p in projects if p.id == chosen)
        linked = st.query_params.get("range")
        time_range = st.segmented_control(
            "Time range",
            list(TIME_RANGES),
            default=linked if linked in TIME_RANGES else "24h",
            format_func=lambda r: r,
            key="time_range",
            help="The window of the overview, endpoints and versions pages",
        )
        time_range = time_range or "24h"
        refresh = st.selectbox(
            "Auto-refresh",
            list(REFRESH_CHOICES),
            format_func=lambda s: REFRESH_CHOICES[s],
            key="refresh_every",
        )
        if refresh:
            _auto_refresh(refresh)
    context = Context(location, projects, project, time_range)
    st.session_state[_CONTEXT] = context
    return context


def _auto_refresh(seconds: int) -> None:
    """Rerun the whole page every `seconds`: a fragment ticks, and on each tick (not on the
    run that draws it) asks for a full rerun. Cached queries expire on their own TTL."""
    st.session_state["pystrument_refresh_armed"] = False

    @st.fragment(run_every=seconds)
    def tick() -> None:
        if st.session_state.get("pystrument_refresh_armed"):
            data.trends.clear()
            data.endpoint_summary.clear()
            data.list_requests.clear()
            st.rerun(scope="app")
        st.session_state["pystrument_refresh_armed"] = True
        st.caption(f"Refreshing every {REFRESH_CHOICES[seconds]}")

    tick()


def current() -> Context:
    """The context `app.py` set up for this run."""
    return st.session_state[_CONTEXT]


def page_with_project(title: str) -> tuple[Context, Project]:
    """Start a page that shows one project's data: its title, and when there is no project
    yet, what to do about it (then the page stops there)."""
    from ui.components.feedback import empty_state

    ctx = current()
    st.title(title)
    if ctx.project is None:
        empty_state(None)
        st.stop()
    return ctx, ctx.project
