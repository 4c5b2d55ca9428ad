"""How long each UI page takes to build on a store holding a year of data.

Fills the embedded store with synthetic records (`storage_backend.synthetic`: a dozen
routes, three versions, call trees on a share of them) spread over 365 days, then runs
every page with Streamlit's AppTest (the page's Python and its queries, not the browser's
drawing) over the 30-day range: cold (Streamlit's caches cleared: every query goes to the
store) and warm (a rerun within the cache TTL, as when someone clicks around). Prints both
and their ratio to the 2 s target, and the storage queries a cold overview makes, timed
alone, so a slow page can be told from a slow query.

    PYTHONPATH=. .venv/bin/python benchmarks/ui_pages.py [--records 5000]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from storage_backend import Store  # noqa: E402
from storage_backend import queries as q  # noqa: E402
from storage_backend.embedded import EmbeddedServer  # noqa: E402
from storage_backend.synthetic import insert_synthetic  # noqa: E402

APP = str(ROOT / "ui" / "app.py")
PAGES = [
    "views/overview.py",
    "views/endpoints.py",
    "views/requests.py",
    "views/request.py",
    "views/versions.py",
    "views/analyses.py",
    "views/projects.py",
]
TARGET_S = 2.0


def _page_time(
    project_id: str, page: str, record_id: str, *, cold: bool, endpoint: str | None = None
) -> float:
    """Seconds for one run of `page` (the app's shared part included); with `endpoint`, the
    run that opens that endpoint on the endpoints page (its trend and merged call tree)."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["project"] = project_id
    at.query_params["range"] = "30d"
    if page.endswith("request.py"):
        at.query_params["record"] = record_id
    at.run()
    at.switch_page(page)
    if endpoint is not None:
        at.run()
        at.selectbox(key="endpoint_pick").set_value(endpoint)
    if cold:
        st.cache_data.clear()
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception or at.error:
        raise SystemExit(f"{page} failed: {[e.value for e in at.error] or at.exception}")
    return elapsed


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def query_times(store: Store, project_id: str) -> dict[str, float]:
    """The overview's storage queries, each timed alone."""
    db = store.db
    trends = q.trends(db, project_id, "30d")
    return {
        "trends 30d": _timed(lambda: q.trends(db, project_id, "30d")),
        "endpoint_summary 30d": _timed(lambda: q.endpoint_summary(db, project_id, "30d")),
        "list_requests (slowest of the range, 8)": _timed(
            lambda: q.list_requests(db, project_id, q.RequestFilter(since=trends.since),
                                    sort="-duration", size=8)),
        "list_requests (newest, 50)": _timed(
            lambda: q.list_requests(db, project_id, q.RequestFilter(since=trends.since),
                                    size=50)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    # Stopped early (SIGTERM), still stop the embedded server below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "mongo")
        server.start()
        try:
            store = Store.connect(server.url, "bench_ui")
            store.ensure_schema()
            os.environ.update(
                PYSTRUMENT_MONGODB_URL=server.url,
                PYSTRUMENT_MONGODB_DATABASE="bench_ui",
                PYSTRUMENT_UI_ADDRESS="127.0.0.1",
            )
            project, _key = store.projects.create("year")
            started = time.perf_counter()
            insert_synthetic(store, project.id, args.records, span=timedelta(days=365),
                             retention=timedelta(days=400))  # fmt: skip
            print(
                f"{args.records:,} records over 365 days in {time.perf_counter() - started:.0f} s"
            )
            record = q.list_requests(store.db, project.id, q.RequestFilter(), size=1).items[0]
            for page in PAGES:
                cold = _page_time(project.id, page, record.id, cold=True)
                warm = _page_time(project.id, page, record.id, cold=False)
                results[page] = (cold, warm)
                print(f"  {page}: cold {cold:.2f} s, warm {warm:.2f} s", flush=True)
            # The endpoints page opens nothing until an endpoint is picked: time that apart.
            top = q.endpoint_summary(store.db, project.id, "30d").endpoints[0].endpoint
            label = "  + top endpoint opened"
            cold = _page_time(project.id, "views/endpoints.py", record.id, cold=True, endpoint=top)
            warm = _page_time(project.id, "views/endpoints.py", record.id, cold=False, endpoint=top)
            results[label] = (cold, warm)
            print(f"  {label}: cold {cold:.2f} s, warm {warm:.2f} s", flush=True)
            queries = query_times(store, project.id)
        finally:
            server.stop()
    print(f"\n{'page (30-day range)':<28}{'cold':>9}{'warm':>9}{'cold/2s':>9}{'warm/2s':>9}")
    for page, (cold, warm) in results.items():
        print(f"{page:<28}{cold:>8.2f}s{warm:>8.2f}s{cold / TARGET_S:>9.2f}{warm / TARGET_S:>9.2f}")
    print("\nstorage queries of a cold overview, alone:")
    for name, seconds in queries.items():
        print(f"  {name:<34}{seconds:>7.2f} s")


if __name__ == "__main__":
    main()
