"""How the UI tells people things: failures as messages, empty states that say what to do."""

from __future__ import annotations

import logging

import streamlit as st

from storage_backend import Project, StoreError, StoreUnavailableError
from ui.settings import otlp_endpoint

logger = logging.getLogger(__name__)


def show_failure(exc: Exception) -> None:
    """An error as a sentence (the traceback goes to the log, not the page)."""
    if isinstance(exc, StoreUnavailableError):
        st.error(f"The store is not answering: {exc}. Is `pystrument up` still running?")
    elif isinstance(exc, StoreError):
        st.error(f"The store refused the request: {exc}")
    elif isinstance(exc, ValueError):
        st.error(f"That did not work: {exc}")
    else:
        st.error(
            f"Something went wrong on this page ({type(exc).__name__}: {exc}). "
            "The details are in the UI's log."
        )
    logger.exception("page failed")


def setup_snippet(key: str | None = None, service_name: str = "my-service") -> str:
    """Python that points an app at this receiver with pystrument's processor."""
    shown = key or "<your project key>"
    return f"""pip install pystrument
export OTEL_EXPORTER_OTLP_ENDPOINT={otlp_endpoint()}
export PYSTRUMENT_PROJECT_KEY={shown}

# in your app, before the framework is instrumented:
from otel_pyinstrument_processor import configure
configure(service_name="{service_name}")"""


def empty_state(project: Project | None, what: str = "requests") -> None:
    """No data yet: tell a newcomer how to send some, with their key when we know it."""
    if project is None:
        st.info(
            "No projects yet. Create one on the **Projects** page (or run `pystrument up`, "
            "which creates `default`), then point your app at the receiver."
        )
        st.page_link(
            "views/projects.py", label="Create a project", icon=":material/folder_managed:"
        )
        return
    st.info(
        f"No {what} for **{project.name}** in this time range yet. Point an app at the "
        "receiver and send it some traffic:"
    )
    keys = st.session_state.get("pystrument_new_keys", {})
    key = keys.get(project.id)
    st.code(setup_snippet(key, project.name), language="bash")
    if key is None:
        st.caption(
            f"Your key starts with `{project.key_prefix}…`; it was shown once when the "
            "project was created. Lost it? Rotate it on the Projects page. "
            "To try it out: `pystrument demo` sends traffic from the example shop app."
        )
