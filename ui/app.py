"""pystrument's UI: `pystrument ui` (or `streamlit run ui/app.py`).

Navigation and shared state live here (admin gate, project picker, time range,
auto-refresh); each page is one file in `pages/`. Data comes through `ui.data` only.
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

st.set_page_config(page_title="pystrument", page_icon="🔥", layout="wide")

PAGES = {
    "Performance": [
        st.Page("pages/overview.py", title="Overview", icon="📈", default=True),
        st.Page("pages/endpoints.py", title="Endpoints", icon="🧭"),
        st.Page("pages/requests.py", title="Requests", icon="🧾"),
        st.Page("pages/request.py", title="Request detail", icon="🔥", url_path="request"),
        st.Page("pages/versions.py", title="Versions", icon="🔀"),
    ],
    "Analysis": [st.Page("pages/analyses.py", title="Analyses", icon="🩺")],
    "Settings": [st.Page("pages/projects.py", title="Projects", icon="🗂️")],
}

if context.admin_gate():
    page = st.navigation(PAGES)
    if context.sidebar() is not None:
        try:
            page.run()
        except Exception as exc:  # a page's failure is a message, never a traceback
            show_failure(exc)
