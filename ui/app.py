"""pystrument's UI: `pystrument ui` (or `streamlit run ui/app.py`).

Navigation and shared state live here (admin gate, project picker, time range,
auto-refresh); each page is one file in `views/`. Not `pages/`: Streamlit runs a `pages/`
folder as a v1 multipage app, so a direct link (/request?record=...) would bypass this
script. Data comes through `ui.data` only.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import streamlit as st

# `streamlit run ui/app.py` puts ui/ on sys.path, not the project root: make `ui.*` importable
# the same way whether the package is installed or run from a checkout.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ui import context  # noqa: E402
from ui.components.feedback import show_failure  # noqa: E402

logger = logging.getLogger("ui")

st.set_page_config(
    page_title="pystrument", page_icon=":material/local_fire_department:", layout="wide"
)

PAGES = {
    "Performance": [
        st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page("views/endpoints.py", title="Endpoints", icon=":material/route:"),
        st.Page("views/requests.py", title="Requests", icon=":material/list_alt:"),
        st.Page(
            "views/request.py",
            title="Request detail",
            icon=":material/local_fire_department:",
            url_path="request",
        ),
        st.Page("views/versions.py", title="Versions", icon=":material/compare_arrows:"),
    ],
    "Analysis": [st.Page("views/analyses.py", title="Analyses", icon=":material/troubleshoot:")],
    "Settings": [st.Page("views/projects.py", title="Projects", icon=":material/folder_managed:")],
}

if context.admin_gate():
    page = st.navigation(PAGES)
    if context.sidebar() is not None:
        try:
            page.run()
        except Exception as exc:  # a page's failure is a message, never a traceback
            show_failure(exc)
