"""Projects: create one (its key is shown once), rotate keys, tune sampling, thresholds and
auto-analysis. Reads and writes through `storage_backend`."""

from __future__ import annotations

import dataclasses

import streamlit as st

from storage_backend import AlertThreshold, ProjectNameExistsError
from ui import context, data
from ui.components.feedback import setup_snippet

FRAMEWORKS = ["flask", "django", "fastapi", "other"]

ctx = context.current()
st.title("Projects")
new_keys: dict[str, str] = st.session_state.setdefault("pystrument_new_keys", {})


def show_key_once(project_id: str, name: str, key: str) -> None:
    st.success(f"Key for **{name}** — copy it now, it is not shown again once you leave this page:")
    st.code(key, language=None)
    st.markdown("Point an app at the receiver with it:")
    st.code(setup_snippet(key, name), language="bash")


with st.expander("New project", expanded=not ctx.projects):
    with st.form("create_project", clear_on_submit=True):
        name = st.text_input("Name", placeholder="checkout-service")
        description = st.text_input("Description (optional)")
        framework = st.selectbox("Framework", FRAMEWORKS, index=0)
        created = st.form_submit_button("Create project", type="primary")
    if created:
        try:
            project, key = data.create_project(
                ctx.location, name, description=description, framework=framework
            )
        except ProjectNameExistsError:
            st.error(f"A project named {name.strip()!r} already exists.")
        except ValueError as exc:
            st.error(str(exc))
        else:
            new_keys[project.id] = key
            st.session_state["project_id"] = project.id
            st.session_state["pystrument_just_created"] = project.id
            st.rerun()

just = st.session_state.get("pystrument_just_created")
if just and just in new_keys:
    names = {p.id: p.name for p in ctx.projects}
    show_key_once(just, names.get(just, just), new_keys[just])

if not ctx.projects:
    st.info("No projects yet: create the first one above.")
    st.stop()

st.dataframe(
    [
        {
            "name": p.name,
            "id": p.id,
            "key": p.key_prefix + "…",
            "framework": p.framework,
            "sampling": p.config.sampling_rate,
            "slow after (s)": p.config.alert_threshold.response_time,
            "auto-analysis": p.config.auto_analysis,
            "last data": p.last_activity,
            "created": p.created_at,
        }
        for p in ctx.projects
    ],
    hide_index=True,
    width="stretch",
    column_config={"sampling": st.column_config.NumberColumn(format="percent")},
    key="projects_table",
)

project = ctx.project
if project is None:
    st.stop()
st.subheader(f"Settings of {project.name}")
with st.form(f"config_{project.id}"):
    cfg = project.config
    c1, c2 = st.columns(2)
    sampling = c1.slider(
        "Sampling rate",
        0.0,
        1.0,
        float(cfg.sampling_rate),
        0.01,
        help="Share of requests to profile (the app's processor applies it)",
    )
    slow_after = c2.number_input(
        "Slow request threshold (s)",
        min_value=0.01,
        value=float(cfg.alert_threshold.response_time),
        step=0.05,
        help="Requests slower than this are analysed automatically (if on)",
    )
    c3, c4 = st.columns(2)
    error_rate = c3.number_input(
        "Error-rate alert",
        min_value=0.0,
        max_value=1.0,
        value=float(cfg.alert_threshold.error_rate),
        step=0.01,
    )
    retention = c4.number_input(
        "Retention (days, 0 = server default)",
        min_value=0,
        value=int(cfg.retention_days or 0),
        step=1,
    )
    auto = st.toggle("Analyse slow requests automatically", value=cfg.auto_analysis)
    enabled = st.toggle("Accept data for this project", value=cfg.enabled)
    saved = st.form_submit_button("Save settings", type="primary")
if saved:
    new_config = dataclasses.replace(
        cfg,
        sampling_rate=sampling,
        auto_analysis=auto,
        enabled=enabled,
        retention_days=int(retention) or None,
        alert_threshold=AlertThreshold(
            response_time=float(slow_after),
            error_rate=float(error_rate),
            memory_usage=cfg.alert_threshold.memory_usage,
        ),
    )
    data.update_project_config(ctx.location, project.id, new_config)
    st.toast("Settings saved")
    st.rerun()

with st.container(border=True):
    st.markdown("##### Project key")
    st.caption(
        f"Current key starts with `{project.key_prefix}…`. Rotating makes a new key and "
        "the old one stops working at once: apps still using it are refused (401)."
    )
    confirm = st.checkbox(
        "I understand that apps using the old key stop sending data", key=f"rotate_ok_{project.id}"
    )
    if st.button("Rotate key", disabled=not confirm, key=f"rotate_{project.id}"):
        new_keys[project.id] = data.rotate_key(ctx.location, project.id)
        st.session_state["pystrument_just_created"] = project.id
        st.rerun()
