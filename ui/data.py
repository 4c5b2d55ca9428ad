"""The UI's only door to the data: small functions over `storage_backend`, cached.

Reads are wrapped in `st.cache_data` with a short TTL (a dashboard may be a few seconds
stale; it must not hammer the store on every widget click); the `Store` is one
`st.cache_resource` per database. Every function takes the `StoreLocation` first so that the
caches are keyed by database. Writes (projects, analyses) clear the caches they affect.
Pages never build MongoDB queries: everything here calls `storage_backend`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import streamlit as st

from storage_backend import Project, ProjectConfig, Store, StoreSettings
from storage_backend import queries as q
from ui.settings import StoreLocation

logger = logging.getLogger(__name__)

QUERY_TTL = 30  # seconds: dashboards
LIVE_TTL = 2  # seconds: job status while someone watches it


@st.cache_resource(show_spinner=False)
def get_store(location: StoreLocation) -> Store:
    """One connected store per database for the whole UI process (pymongo pools
    connections and is thread-safe). With no URL the embedded server is started on the
    data directory, as `pystrument up` would."""
    if location.mongodb_url:
        store = Store.connect(location.mongodb_url, location.database)
        store.ensure_schema()
        return store
    settings = StoreSettings(database=location.database)
    if location.data_dir:
        settings.data_dir = Path(location.data_dir)
    return Store.open(settings)  # the embedded server stops with this process


# -- projects -----------------------------------------------------------------------------


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def list_projects(location: StoreLocation) -> list[Project]:
    return get_store(location).projects.list(limit=500)


def create_project(
    location: StoreLocation, name: str, *, description: str = "", framework: str = "other"
) -> tuple[Project, str]:
    """Create a project; return it and its key (shown once by the caller)."""
    project, key = get_store(location).projects.create(
        name, description=description, framework=framework
    )
    list_projects.clear()
    return project, key


def rotate_key(location: StoreLocation, project_id: str) -> str:
    key = get_store(location).projects.rotate_key(project_id)
    list_projects.clear()
    return key


def update_project_config(
    location: StoreLocation, project_id: str, config: ProjectConfig
) -> Project:
    """Save sampling rate, thresholds, auto-analysis and retention of a project."""
    project = get_store(location).projects.update(project_id, config=config)
    list_projects.clear()
    return project


# -- dashboards ---------------------------------------------------------------------------


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def trends(
    location: StoreLocation, project_id: str, time_range: str, endpoint: str | None = None
) -> q.Trends:
    return q.trends(get_store(location).db, project_id, time_range, endpoint=endpoint)


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def endpoint_summary(
    location: StoreLocation, project_id: str, time_range: str, version: str | None = None
) -> q.EndpointSummary:
    return q.endpoint_summary(get_store(location).db, project_id, time_range, version=version)


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def endpoint_sparklines(
    location: StoreLocation, project_id: str, time_range: str, endpoints: tuple[str, ...]
) -> dict[str, list[float]]:
    """Per endpoint, its request count per bucket over the range (for the table's sparkline),
    from one storage query for all of them; an endpoint without requests in it gets []."""
    found = q.endpoint_trends(
        get_store(location).db, project_id, time_range, endpoints=endpoints, percentiles=False
    )
    return {
        name: [float(p.stats.count) for p in found[name].points] if name in found else []
        for name in endpoints
    }


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def aggregated_call_tree(
    location: StoreLocation, project_id: str, endpoint: str, version: str | None = None
) -> q.AggregatedCallTree:
    return q.aggregated_call_tree(get_store(location).db, project_id, endpoint, version=version)


# -- requests -----------------------------------------------------------------------------


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def list_requests(
    location: StoreLocation,
    project_id: str,
    flt: q.RequestFilter,
    *,
    sort: str = "-timestamp",
    page: int = 1,
    size: int = 50,
) -> q.RequestPage:
    """A page of the requests list (the filter's fields key the cache)."""
    return q.list_requests(
        get_store(location).db,
        project_id,
        flt,
        sort=sort,
        page=page,
        size=size,  # type: ignore[arg-type]
    )


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def request_detail(
    location: StoreLocation, record_id: str, project_id: str | None = None
) -> q.RequestDetail | None:
    return q.get_request(get_store(location).db, record_id, project_id)


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def requests_of_trace(
    location: StoreLocation, project_ids: tuple[str, ...], trace_id: str
) -> list[q.RequestSummary]:
    """A trace's requests in `project_ids` (ValueError for a malformed id)."""
    return q.requests_of_trace(get_store(location).db, project_ids, trace_id)


# -- versions -----------------------------------------------------------------------------


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def list_versions(location: StoreLocation, project_id: str, time_range: str) -> list[q.VersionInfo]:
    return q.list_versions(get_store(location).db, project_id, time_range)


@st.cache_data(ttl=QUERY_TTL, show_spinner=False)
def compare_versions(
    location: StoreLocation, project_id: str, base: str, target: str, time_range: str
) -> q.VersionComparison:
    return q.compare_versions(get_store(location).db, project_id, base, target, time_range)


# -- analyses -----------------------------------------------------------------------------


def enqueue_analysis(location: StoreLocation, project_id: str, record_id: str) -> str:
    """Queue the analysis of one request; returns the job id (the running job's id when that
    request is already being analysed)."""
    from storage_backend.jobs import JobAlreadyActiveError

    try:
        job_id = get_store(location).jobs.enqueue(
            "analyze",
            {"record_id": record_id, "analysis_type": "manual"},
            project_id=project_id,
            priority=10,
            dedupe_key=f"analyze:{record_id}",
        )
    except JobAlreadyActiveError as exc:
        if exc.job_id is None:
            raise
        job_id = exc.job_id
    queue_stats.clear()
    return job_id


def enqueue_batch(location: StoreLocation, project_id: str, record_ids: list[str]) -> str:
    """Queue one batch analysis of several requests; returns the job id."""
    job_id = get_store(location).jobs.enqueue(
        "batch_analyze",
        {"record_ids": list(record_ids), "analysis_type": "manual"},
        project_id=project_id,
        priority=5,
    )
    queue_stats.clear()
    return job_id


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def job(location: StoreLocation, job_id: str) -> dict[str, Any] | None:
    return get_store(location).jobs.get(job_id)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def queue_stats(location: StoreLocation) -> dict[str, Any]:
    return get_store(location).jobs.stats()


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def analysis_history(
    location: StoreLocation, project_id: str, limit: int = 50
) -> list[dict[str, Any]]:
    return get_store(location).analyses.history(project_id, limit=limit)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def analyses_for_job(location: StoreLocation, job_id: str) -> list[dict[str, Any]]:
    return get_store(location).analyses.for_job(job_id)
